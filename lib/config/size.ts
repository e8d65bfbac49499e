/**
 * Sizes as operators write them: `0`, `512`, `64KiB`, `1MiB`, or nginx's `64k`, `1m`, `1g`.
 *
 * @module
 */

import { ValidationError } from "../errors.ts";

/** Multipliers by unit (powers of 1024, as nginx reads `k` and `m`). */
const UNITS: Record<string, number> = {
  "": 1,
  b: 1,
  k: 1024,
  kb: 1024,
  kib: 1024,
  m: 1024 ** 2,
  mb: 1024 ** 2,
  mib: 1024 ** 2,
  g: 1024 ** 3,
  gb: 1024 ** 3,
  gib: 1024 ** 3,
};
const PATTERN = /^(\d{1,10})\s*([a-z]*)$/;

/** The largest size accepted: what one 32-bit word of shared memory can count. */
export const MAX_SIZE = 2 * 1024 ** 3;

/**
 * Parses a size into bytes.
 *
 * @param text A whole number, optionally followed by a unit: `B`, `k`/`KiB`, `m`/`MiB` or
 *   `g`/`GiB` (any case; each a power of 1024).
 * @returns Bytes, at most {@linkcode MAX_SIZE}.
 * @throws {ValidationError} When the text is not a whole number with a known unit.
 * @throws {ValidationError} When it is above {@linkcode MAX_SIZE}.
 * @example
 * ```ts
 * parseSize("1MiB"); // 1048576
 * parseSize("64k"); // 65536
 * ```
 */
export function parseSize(text: string): number {
  const match = PATTERN.exec(text.trim().toLowerCase());
  const unit = match ? UNITS[match[2]!] : undefined;
  if (!match || unit === undefined) {
    throw new ValidationError(
      `"${text}" is not a size: expected a whole number of bytes, optionally with a unit, like 0, 512KiB, 1MiB or 64m`,
    );
  }
  const bytes = Number(match[1]) * unit;
  if (bytes > MAX_SIZE) throw new ValidationError(`"${text}" is too large: expected at most 2GiB`);
  return bytes;
}

/**
 * Formats bytes the way {@linkcode parseSize} reads them, in the largest exact unit.
 *
 * @param bytes A size.
 * @returns For example `1MiB`, `64KiB` or `500`.
 */
export function formatSize(bytes: number): string {
  for (const [unit, size] of [["GiB", 1024 ** 3], ["MiB", 1024 ** 2], ["KiB", 1024]] as const) {
    if (bytes >= size && bytes % size === 0) return `${bytes / size}${unit}`;
  }
  return `${bytes}`;
}
