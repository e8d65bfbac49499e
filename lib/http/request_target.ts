/**
 * What a request may name: the forms of request-target (RFC 9112 §3.2) and a valid `Host`
 * (RFC 9110 §7.2: `uri-host [ ":" port ]`, with RFC 3986 §3.2.2's host). Pure checks on what
 * the front has already read: the target string, and `Host` as bytes (goround's parser) or as
 * text (`Deno.serve`); both fronts answer 400 to what they refuse, as nginx does.
 *
 * @module
 */

/** Characters of a reg-name besides pct-encoded ones (RFC 3986 §3.2.2): unreserved
 * (`A-Z a-z 0-9 - . _ ~`) and sub-delims (`! $ & ' ( ) * + , ; =`), by char code. */
const REG_NAME = new Uint8Array(128);
for (const c of "-._~!$&'()*+,;=0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ") {
  REG_NAME[c.charCodeAt(0)] = 1;
}

/** Longest IP-literal taken between the brackets. */
const MAX_IP_LITERAL = 64;

const IPV4 = /^(?:(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)\.){3}(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)$/;
const H16 = /^[0-9A-Fa-f]{1,4}$/;
const IPV_FUTURE = /^[vV][0-9A-Fa-f]+\.[-._~!$&'()*+,;=:0-9A-Za-z]+$/;

function isHex(c: number): boolean {
  return (c >= 48 && c <= 57) || ((c | 0x20) >= 97 && (c | 0x20) <= 102);
}

/** Whether `text` is an IPv6address (RFC 3986 §3.2.2): eight pieces of 1-4 hex digits, the last
 * two of which may be written as an IPv4 address, with at most one `::` for a run of zeros. */
function isIpv6(text: string): boolean {
  const gap = text.indexOf("::");
  if (gap >= 0 && text.indexOf("::", gap + 1) >= 0) return false;
  const halves = gap < 0 ? [text] : [text.slice(0, gap), text.slice(gap + 2)];
  let pieces = 0;
  for (let h = 0; h < halves.length; h++) {
    if (halves[h] === "") continue;
    const parts = halves[h]!.split(":");
    for (let i = 0; i < parts.length; i++) {
      const part = parts[i]!;
      if (h === halves.length - 1 && i === parts.length - 1 && part.includes(".")) {
        if (!IPV4.test(part)) return false;
        pieces += 2;
      } else if (H16.test(part)) {
        pieces++;
      } else {
        return false;
      }
    }
  }
  return gap < 0 ? pieces === 8 : pieces <= 7;
}

/**
 * Whether `text` is `host [ ":" port ]` as `Host` and an absolute-form target carry it: see
 * {@linkcode isHostPortAt}, which this runs on the text's bytes.
 *
 * @param text A `Host` value, or the authority of an absolute-form target.
 * @returns `true` when it is valid.
 * @example
 * ```ts
 * isHostPort("example.com:8080"); // true
 * isHostPort("a b"); // false
 * ```
 */
export function isHostPort(text: string): boolean {
  const bytes = new Uint8Array(text.length);
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    bytes[i] = c < 128 ? c : 0; // nothing outside ASCII is valid; 0 never is either
  }
  return isHostPortAt(bytes, 0, bytes.length);
}

/**
 * Whether `bytes[start, end)` is `host [ ":" port ]` (RFC 9110 §7.2, §4.2.1; RFC 3986
 * §3.2.2-3.2.3): an IP-literal in brackets (IPv6 or IPvFuture), or a reg-name (which covers IPv4
 * addresses), not empty (RFC 9110 §4.2.1: an http URI with an empty host is invalid), then an
 * optional port of up to five digits. No userinfo (`@` is not a reg-name character; RFC 9110
 * §4.2.4), no spaces, slashes or anything else. On bytes, so the request parser checks `Host`
 * where it lies in the read buffer, without the cost of reading a sliced string.
 *
 * @param bytes The buffer.
 * @param start Where the value starts.
 * @param end One past its end.
 * @returns `true` when it is valid.
 */
export function isHostPortAt(bytes: Uint8Array, start: number, end: number): boolean {
  let at = start;
  if (bytes[at] === 91) {
    const close = bytes.indexOf(93, at);
    // An IPv6 address is at most 45 characters; an IPvFuture address is given as much room.
    if (close < 0 || close >= end || close - at > MAX_IP_LITERAL) return false;
    let literal = "";
    for (let i = at + 1; i < close; i++) literal += String.fromCharCode(bytes[i]!);
    if (!isIpv6(literal) && !IPV_FUTURE.test(literal)) return false;
    at = close + 1;
  } else {
    while (at < end) {
      const c = bytes[at]!;
      if (c < 128 && REG_NAME[c] === 1) {
        at++;
      } else if (c === 37 && at + 2 < end && isHex(bytes[at + 1]!) && isHex(bytes[at + 2]!)) {
        at += 3;
      } else {
        break;
      }
    }
    if (at === start) return false;
  }
  if (at === end) return true;
  if (bytes[at] !== 58 || end - at - 1 > 5) return false;
  for (let i = at + 1; i < end; i++) {
    const c = bytes[i]!;
    if (c < 48 || c > 57) return false;
  }
  return true;
}

/**
 * Why a request-target is refused, or `null` when it has a form a reverse proxy serves
 * (RFC 9112 §3.2): origin-form (`/path?query`), absolute-form with an `http` or `https` scheme
 * and a valid authority (§3.2.2; RFC 9110 §4.2), `*` for OPTIONS only (§3.2.4), and, for
 * CONNECT, anything (authority-form, §3.2.3: CONNECT is refused with 405 on its own). The
 * characters are checked where the request line is read.
 *
 * @param method The request method.
 * @param target The request-target as received (or, under `Deno.serve`, the request's URL).
 * @returns The reason to answer 400 with, or `null`.
 * @example
 * ```ts
 * targetProblem("GET", "file:///etc/passwd"); // 'scheme "file" in the request target: expected http or https'
 * targetProblem("OPTIONS", "*"); // null
 * ```
 */
export function targetProblem(method: string, target: string): string | null {
  if (target.charCodeAt(0) === 47) return null; // origin-form: the usual case
  if (target === "*") return method === "OPTIONS" ? null : "* is a request target only for OPTIONS";
  if (method === "CONNECT") return null;
  const slashes = target.indexOf("://");
  if (slashes < 0) return "the request target is neither origin-form nor absolute-form";
  const scheme = target.slice(0, slashes).toLowerCase();
  if (scheme !== "http" && scheme !== "https") {
    return `scheme "${scheme.slice(0, 20)}" in the request target: expected http or https`;
  }
  if (!isHostPort(target.slice(slashes + 3, authorityEnd(target, slashes + 3)))) {
    return "invalid host in the request target";
  }
  return null;
}

/**
 * Where the authority of an absolute URI ends: at the first `/`, `?` or `#` after `from`, or at
 * the end (RFC 3986 §3.2).
 *
 * @param uri The URI.
 * @param from Where the authority starts (after `://`).
 * @returns The offset one past the authority.
 */
export function authorityEnd(uri: string, from: number): number {
  for (let i = from; i < uri.length; i++) {
    const c = uri.charCodeAt(i);
    if (c === 47 || c === 63 || c === 35) return i;
  }
  return uri.length;
}
