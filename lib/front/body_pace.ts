/**
 * How slowly a client may send a request body (`--body-timeout`, `--body-min-rate`). Two rules,
 * checked on the time goround spends waiting for the client's bytes (not the time a backend
 * takes to read them):
 *
 * - no single wait for more of the body lasts longer than the timeout (nginx's
 *   `client_body_timeout`, which measures between two reads);
 * - in each stretch of waiting as long as the timeout, at least `minRate` × timeout bytes
 *   arrive. A pause rule alone lets a client that sends one byte every few seconds hold its
 *   request for ever (Apache's `mod_reqtimeout` `MinRate` answers the same attack).
 *
 * A body that breaks a rule gets `408`. Pure arithmetic over a small record the front keeps per
 * connection; no I/O, no allocation.
 *
 * @module
 */

/** The pace of the body being read: the current window's bytes and waiting time. */
export interface Pace {
  /** Body bytes that arrived in the current window. */
  paceBytes: number;
  /** Time spent waiting for the client in the current window, ms. */
  paceWait: number;
}

/** The limits, as configured. */
export interface PaceLimits {
  /** Longest wait for more of the body, and the length of a window, ms. */
  readonly bodyTimeout: number;
  /** Least bytes per second over a window (0: no minimum). */
  readonly bodyMinRate: number;
}

/**
 * Starts the pace of a new body.
 *
 * @param pace The record to reset.
 */
export function resetPace(pace: Pace): void {
  pace.paceBytes = 0;
  pace.paceWait = 0;
}

/** Bytes a window must bring. */
function windowBytes(limits: PaceLimits): number {
  return limits.bodyMinRate * limits.bodyTimeout / 1000;
}

/**
 * How long the next wait for the client's body may last, ms: the whole timeout once the window
 * has its bytes, otherwise what is left of the window.
 *
 * @param pace The body's pace.
 * @param limits The limits.
 * @returns Milliseconds, more than 0.
 * @example
 * ```ts
 * readAllowance({ paceBytes: 0, paceWait: 400 }, { bodyTimeout: 1000, bodyMinRate: 500 }); // 600
 * ```
 */
export function readAllowance(pace: Pace, limits: PaceLimits): number {
  if (pace.paceBytes >= windowBytes(limits)) return limits.bodyTimeout;
  return limits.bodyTimeout - pace.paceWait;
}

/**
 * Counts a read of the body; a window that has been waited out starts the next.
 *
 * @param pace The body's pace (updated).
 * @param bytes Bytes the read brought.
 * @param waited Time the read waited for the client, ms.
 * @param limits The limits.
 * @returns `false` when the window that just ended brought too few bytes (answer 408).
 * @example
 * ```ts
 * const pace = { paceBytes: 0, paceWait: 0 };
 * const limits = { bodyTimeout: 1000, bodyMinRate: 500 };
 * noteRead(pace, 1, 300, limits); // true: the window is not over
 * noteRead(pace, 1, 800, limits); // false: 2 bytes in a second, 500 needed
 * ```
 */
export function noteRead(pace: Pace, bytes: number, waited: number, limits: PaceLimits): boolean {
  pace.paceBytes += bytes;
  pace.paceWait += waited;
  if (pace.paceWait < limits.bodyTimeout) return true;
  const enough = pace.paceBytes >= windowBytes(limits);
  resetPace(pace);
  return enough;
}
