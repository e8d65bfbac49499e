/**
 * Durations as operators write them: `500ms`, `10s`, `1.5m`, `1h`.
 *
 * @module
 */

import { ValidationError } from "../errors.ts";

const UNITS: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000 };

/** The longest duration a timer can wait: `setTimeout` and friends treat anything above
 * 2^31-1 ms (about 24.8 days) as 1 ms (HTML timers spec, "timer initialisation steps"). */
export const MAX_DURATION_MS = 2 ** 31 - 1;
const PATTERN = /^(\d+(?:\.\d+)?)(ms|s|m|h)$/;

/**
 * Parses a duration into milliseconds.
 *
 * @param text A number followed by `ms`, `s`, `m` or `h`, e.g. `500ms` or `10s`.
 * @returns Whole milliseconds (rounded), at most {@linkcode MAX_DURATION_MS}.
 * @throws {ValidationError} When the text is not a non-negative number with a unit.
 * @throws {ValidationError} When it is longer than a timer can wait.
 * @example
 * ```ts
 * parseDuration("1.5s"); // 1500
 * ```
 */
export function parseDuration(text: string): number {
  const match = PATTERN.exec(text.trim());
  if (!match) {
    throw new ValidationError(
      `"${text}" is not a duration: expected a non-negative number and a unit, like 500ms, 10s or 1m`,
    );
  }
  const ms = Math.round(Number(match[1]) * UNITS[match[2]!]!);
  if (ms > MAX_DURATION_MS) {
    throw new ValidationError(
      `"${text}" is longer than a timer can wait: expected at most ${MAX_DURATION_MS}ms (about 24.8 days)`,
    );
  }
  return ms;
}

/**
 * Formats milliseconds the way {@linkcode parseDuration} reads them, in the largest exact unit.
 *
 * @param ms Milliseconds.
 * @returns For example `10s` or `250ms`.
 */
export function formatDuration(ms: number): string {
  for (const unit of ["h", "m", "s"] as const) {
    const size = UNITS[unit]!;
    if (ms >= size && ms % size === 0) return `${ms / size}${unit}`;
  }
  return `${ms}ms`;
}
