/**
 * goround's version, read from `deno.json` (one place to change it), and the runtime it runs on.
 *
 * @module
 */

import manifest from "../deno.json" with { type: "json" };

/** The version `goround --version` prints. */
export const VERSION: string = manifest.version;

/**
 * What `goround --version` prints: goround's version, then the Deno, V8 and TypeScript versions
 * it runs on (what a bug report needs).
 *
 * @returns Lines without trailing newline.
 * @example
 * ```ts
 * versionLines()[0]; // "goround 0.1.0"
 * ```
 */
export function versionLines(): string[] {
  return [
    `goround ${VERSION}`,
    `deno ${Deno.version.deno}`,
    `v8 ${Deno.version.v8}`,
    `typescript ${Deno.version.typescript}`,
  ];
}
