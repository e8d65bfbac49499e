/**
 * Passive ejection policy: how many backends passive verdicts (failures seen by requests, not by
 * health probes) may keep out of rotation at once, and for how long. Pure decisions; the state
 * they apply to lives in `pool.ts`.
 *
 * The model is Envoy's outlier detection: an ejected backend stays out for `base × n`, where `n`
 * counts its ejections in a row (capped), and `n` falls back while the backend behaves; at most
 * a share of the pool is out at once (`max_ejection_percent`).
 *
 * @module
 */

/** The longest ejection, as a multiple of the base time (Envoy: 30 s base, 300 s at most). */
export const MAX_EJECTION_FACTOR = 10;

/**
 * How many members passive verdicts may keep out at once: `percent` of the pool, rounded down,
 * but at least one of a pool of two or more (as Envoy does, so 50% of 3 is 1 and 10% of 3 is 1),
 * and none of a pool of one (nginx ignores `max_fails` for a lone server: taking it out would only
 * turn the errors of some requests into 503 for all).
 *
 * @param size Members in the pool.
 * @param percent `--max-ejection-percent`, 0 to 100 (0: passive verdicts never eject).
 * @returns The number of members that may be ejected at once.
 * @example
 * ```ts
 * ejectionLimit(2, 50); // 1
 * ejectionLimit(3, 50); // 1
 * ejectionLimit(1, 100); // 0
 * ```
 */
export function ejectionLimit(size: number, percent: number): number {
  if (size <= 1 || percent <= 0) return 0;
  return Math.max(1, Math.floor(size * percent / 100));
}

/** A backend's next ejection: its place in the streak and its length. */
export interface NextEjection {
  /** Ejections in a row, this one included (at least 1). */
  readonly streak: number;
  /** How long it stays out, ms. */
  readonly ms: number;
}

/**
 * The length of a backend's next ejection. The streak first falls by one for every `base` the
 * backend has spent back in rotation since its last ejection ended (Envoy lowers its multiplier
 * while the host behaves), then grows by one; the backend is out for `base × streak`, at most
 * {@linkcode MAX_EJECTION_FACTOR} × `base`.
 *
 * @param streak The streak after the last ejection (0: never ejected).
 * @param lastEnd When the last ejection ended, epoch ms (0: never ejected).
 * @param now Epoch ms.
 * @param base `--ejection-time`, ms.
 * @returns The streak and the length.
 * @example
 * ```ts
 * nextEjection(0, 0, Date.now(), 30_000); // { streak: 1, ms: 30000 }
 * nextEjection(1, Date.now(), Date.now(), 30_000); // { streak: 2, ms: 60000 }: again at once
 * ```
 */
export function nextEjection(
  streak: number,
  lastEnd: number,
  now: number,
  base: number,
): NextEjection {
  const behaved = lastEnd === 0 ? Infinity : Math.max(0, now - lastEnd);
  const decayed = Math.max(0, streak - Math.floor(behaved / base));
  const next = Math.min(decayed + 1, MAX_EJECTION_FACTOR);
  return { streak: next, ms: base * next };
}
