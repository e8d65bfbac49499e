/**
 * Durations as operators write them: `500ms`, `10s`, `1.5m`, `1h`.
 *
 * @module
 */

const UNITS: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000 };
const PATTERN = /^(\d+(?:\.\d+)?)(ms|s|m|h)$/;

/**
 * Parses a duration into milliseconds.
 *
 * @param text A number followed by `ms`, `s`, `m` or `h`, e.g. `500ms` or `10s`.
 * @returns Whole milliseconds (rounded).
 * @throws {SyntaxError} When the text is not a non-negative number with a unit.
 * @example
 * ```ts
 * parseDuration("1.5s"); // 1500
 * ```
 */
export function parseDuration(text: string): number {
  const match = PATTERN.exec(text.trim());
  if (!match) {
    throw new SyntaxError(
      `"${text}" is not a duration: expected a non-negative number and a unit, like 500ms, 10s or 1m`,
    );
  }
  return Math.round(Number(match[1]) * UNITS[match[2]!]!);
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
