/**
 * IP addresses and CIDR ranges, for deciding which peers are trusted proxies.
 *
 * @module
 */

import { ValidationError } from "../errors.ts";

/** A parsed CIDR range; a plain record, so it can be posted to workers. */
export interface Cidr {
  /** The range as written, normalised (e.g. `10.0.0.0/8`). */
  readonly text: string;
  /** 4 bytes for IPv4, 16 for IPv6. */
  readonly bytes: readonly number[];
  /** Prefix length in bits. */
  readonly bits: number;
}

function parseIPv4(text: string): number[] | null {
  const parts = text.split(".");
  if (parts.length !== 4) return null;
  const out: number[] = [];
  for (const part of parts) {
    if (!/^\d{1,3}$/.test(part) || Number(part) > 255) return null;
    out.push(Number(part));
  }
  return out;
}

function parseIPv6(text: string): number[] | null {
  const halves = text.split("::");
  if (halves.length > 2) return null;
  const groups = (half: string): number[] | null => {
    if (half === "") return [];
    const out: number[] = [];
    const parts = half.split(":");
    for (const [i, part] of parts.entries()) {
      if (i === parts.length - 1 && part.includes(".")) {
        const v4 = parseIPv4(part);
        if (!v4) return null;
        out.push((v4[0]! << 8) | v4[1]!, (v4[2]! << 8) | v4[3]!);
      } else if (/^[0-9a-fA-F]{1,4}$/.test(part)) {
        out.push(parseInt(part, 16));
      } else {
        return null;
      }
    }
    return out;
  };
  const head = groups(halves[0]!);
  const tail = halves.length === 2 ? groups(halves[1]!) : [];
  if (!head || !tail) return null;
  const missing = 8 - head.length - tail.length;
  if (halves.length === 2 ? missing < 1 : missing !== 0) return null;
  const all = [...head, ...new Array(halves.length === 2 ? missing : 0).fill(0), ...tail];
  return all.flatMap((g) => [g >> 8, g & 0xff]);
}

/**
 * Parses an IPv4 or IPv6 address (brackets and an IPv6 zone are accepted and ignored).
 * IPv4-mapped IPv6 addresses (`::ffff:1.2.3.4`) come back as their 4 IPv4 bytes.
 *
 * @param text The address.
 * @returns Its bytes, or `null` when it is not an address.
 */
export function parseIp(text: string): number[] | null {
  const bare = text.replace(/^\[|\]$/g, "").replace(/%.*$/, "");
  if (!bare.includes(":")) return parseIPv4(bare);
  const v6 = parseIPv6(bare);
  if (v6 && v6.slice(0, 10).every((b) => b === 0) && v6[10] === 0xff && v6[11] === 0xff) {
    return v6.slice(12);
  }
  return v6;
}

/**
 * Parses a CIDR range such as `10.0.0.0/8`, `::1/128` or a bare address (a single host).
 *
 * @param text The range.
 * @returns The parsed range.
 * @throws {ValidationError} When it is not a valid range.
 * @example
 * ```ts
 * const lan = parseCidr("192.168.0.0/16");
 * ipInCidrs("192.168.1.9", [lan]); // true
 * ```
 */
export function parseCidr(text: string): Cidr {
  const [addr = "", prefix, extra] = text.trim().split("/");
  const bytes = parseIp(addr);
  const max = bytes ? bytes.length * 8 : 0;
  const bits = prefix === undefined ? max : /^\d{1,3}$/.test(prefix) ? Number(prefix) : -1;
  if (!bytes || extra !== undefined || bits < 0 || bits > max) {
    throw new ValidationError(
      `"${text}" is not a CIDR range: expected an address with an optional prefix, like 10.0.0.0/8 or ::1/128`,
    );
  }
  const masked = bytes.map((b, i) => {
    const keep = Math.max(0, Math.min(8, bits - i * 8));
    return b & (0xff << (8 - keep)) & 0xff;
  });
  const shown = masked.length === 4 ? masked.join(".") : addr.toLowerCase();
  return { text: `${shown}/${bits}`, bytes: masked, bits };
}

/**
 * Whether `ip` falls inside any of `ranges`.
 *
 * @param ip An address, as `Deno.serve` reports the peer.
 * @param ranges Parsed ranges.
 * @returns `true` when inside one of them.
 */
export function ipInCidrs(ip: string, ranges: readonly Cidr[]): boolean {
  if (ranges.length === 0) return false;
  const bytes = parseIp(ip);
  if (!bytes) return false;
  return ranges.some((range) => {
    if (range.bytes.length !== bytes.length) return false;
    for (let bit = 0; bit < range.bits; bit += 8) {
      const keep = Math.min(8, range.bits - bit);
      const mask = (0xff << (8 - keep)) & 0xff;
      if ((bytes[bit / 8]! & mask) !== range.bytes[bit / 8]) return false;
    }
    return true;
  });
}
