/**
 * Deadlines for the `Deno.serve` front, which has no connection of its own to sweep: one sweep
 * per thread (every 100 ms, running only while something is watched) fires each entry past its
 * deadline once. goround's own front checks its deadlines in its connection sweep instead.
 *
 * @module
 */

import { isPast, startSweep, stopSweep, type Sweep, type SweepOptions } from "../http/deadlines.ts";

/** Something with a deadline. */
export interface Watched {
  /** Epoch ms after which {@linkcode Watched.expire} is called (0: none for now). */
  deadline: number;
  /** Called once, from the sweep, when the deadline has passed; the entry is unwatched first. */
  readonly expire: () => void;
}

const entries = new Set<Watched>();
const SWEEP: SweepOptions<Watched> = {
  every: 100,
  check: (entry, now) => {
    if (!isPast(entry.deadline, now)) return;
    unwatch(entry);
    entry.expire();
  },
};
let sweep: Sweep | null = null;

/**
 * Starts watching an entry (again: watching a watched entry is a no-op).
 *
 * @param entry The entry; set its `deadline` as it changes.
 */
export function watch(entry: Watched): void {
  entries.add(entry);
  sweep ??= startSweep(entries, SWEEP);
}

/**
 * Stops watching an entry; the sweep stops when nothing is watched.
 *
 * @param entry The entry.
 */
export function unwatch(entry: Watched): void {
  entries.delete(entry);
  if (entries.size === 0 && sweep !== null) {
    stopSweep(sweep);
    sweep = null;
  }
}
