/**
 * The goround version (kept equal to `deno.json`'s by a test).
 *
 * @module
 */

/** The version `goround --version` prints. */
export const VERSION = "0.1.0";
