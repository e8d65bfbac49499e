/**
 * Operational log lines (health transitions, errors) on stderr, one line each, timestamped.
 *
 * @module
 */

/**
 * Writes one timestamped line to stderr.
 *
 * @param message The line, without a trailing newline.
 * @example
 * ```ts
 * logLine("backend http://localhost:8082 DOWN: connection refused");
 * // 2026-01-01T00:00:00.000Z backend http://localhost:8082 DOWN: connection refused
 * ```
 */
export function logLine(message: string): void {
  console.error(`${new Date().toISOString()} ${message}`);
}
