/**
 * Sticky sessions by cookie: a response names its backend in a cookie, and later requests
 * carrying it go back to that backend while it is usable. The cookie holds a hash of the
 * backend's URL and an HMAC-SHA256 of it under a key, so clients can neither read the pool nor
 * pick a backend by forging the cookie.
 *
 * @module
 */

import { createHmac } from "node:crypto";
import { fnv1a } from "./selection.ts";

/** The cookie's name. */
export const STICKY_COOKIE = "goround_sticky";

/** Signs and checks sticky cookies. */
export interface Sticky {
  /** The cookie value naming `url`. */
  readonly token: (url: string) => string;
  /** The backend id a cookie value names, or `null` when it is not a valid token. */
  readonly verify: (value: string) => string | null;
  /** The id of `url`, as tokens carry it. */
  readonly idOf: (url: string) => string;
}

/**
 * Creates the signer.
 *
 * @param key The signing key (all workers must share it).
 * @returns The signer.
 * @example
 * ```ts
 * const sticky = createSticky("secret");
 * sticky.verify(sticky.token("http://a:1")) === sticky.idOf("http://a:1"); // true
 * ```
 */
export function createSticky(key: string): Sticky {
  const idOf = (url: string) => fnv1a(url).toString(16).padStart(8, "0");
  const mac = (id: string) => createHmac("sha256", key).update(id).digest("hex").slice(0, 32);
  return {
    idOf,
    token: (url) => {
      const id = idOf(url);
      return `${id}.${mac(id)}`;
    },
    verify: (value) => {
      const match = /^([0-9a-f]{8})\.([0-9a-f]{32})$/.exec(value);
      if (!match) return null;
      const expected = mac(match[1]!);
      let diff = 0;
      for (let i = 0; i < expected.length; i++) {
        diff |= expected.charCodeAt(i) ^ match[2]!.charCodeAt(i);
      }
      return diff === 0 ? match[1]! : null;
    },
  };
}

/**
 * The value of cookie `name` in a request's `Cookie` fields (RFC 6265 §5.4), or `null`.
 *
 * @param headers The request's fields, names lowercased.
 * @param name The cookie's name.
 * @returns The value.
 */
export function cookieValue(
  headers: Iterable<readonly [string, string]>,
  name: string,
): string | null {
  for (const [field, value] of headers) {
    if (field !== "cookie") continue;
    for (const pair of value.split(";")) {
      const eq = pair.indexOf("=");
      if (eq > 0 && pair.slice(0, eq).trim() === name) return pair.slice(eq + 1).trim();
    }
  }
  return null;
}
