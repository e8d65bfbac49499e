/**
 * Gives memory back to the system after many client connections have closed.
 *
 * What a closed connection held (its JavaScript objects, its buffers) is garbage until V8
 * collects it, and an idle process makes no garbage, so V8 never does: its memory reducer acts
 * only in the first minute of a process and after a collection that grew the heap, so memory
 * stayed at its peak after many connections closed (`docs/performance.md`). So a front end that sees many of its connections gone asks for one
 * such collection, if `gc` is exposed (`--v8-flags=--expose-gc`, as `deno task start` runs
 * goround). It pauses the thread for a few tens of milliseconds, hence the bounds below.
 *
 * @module
 */

/** Connections that must have closed since the most that were open. */
export const RECLAIM_AFTER = 500;
/** Least time between two collections asked for, ms. */
export const RECLAIM_INTERVAL_MS = 10_000;

/** The tracking state of one front end. */
export interface ReclaimState {
  /** Most connections open since the last collection. */
  peak: number;
  /** When the last collection was asked for (epoch ms; 0: never). */
  last: number;
}

/**
 * Whether to collect now: at least {@linkcode RECLAIM_AFTER} connections closed since the peak,
 * at most half of the peak still open, and none asked for in the last
 * {@linkcode RECLAIM_INTERVAL_MS}.
 *
 * @param state The front end's state (its peak is raised to `open` as a side effect).
 * @param open Connections open now.
 * @param now Epoch ms.
 * @returns `true` to collect (then call {@linkcode reclaimed}).
 * @example
 * ```ts
 * import { shouldReclaim } from "./reclaim.ts";
 * const state = { peak: 0, last: 0 };
 * shouldReclaim(state, 5000, 1_000_000); // false: the peak is now 5000
 * shouldReclaim(state, 100, 1_000_100); // true
 * ```
 */
export function shouldReclaim(state: ReclaimState, open: number, now: number): boolean {
  if (open >= state.peak) {
    state.peak = open;
    return false;
  }
  return state.peak - open >= RECLAIM_AFTER && open * 2 <= state.peak &&
    now - state.last >= RECLAIM_INTERVAL_MS;
}

/**
 * Records a collection: the peak starts again from what is open now.
 *
 * @param state The front end's state.
 * @param open Connections open now.
 * @param now Epoch ms.
 */
export function reclaimed(state: ReclaimState, open: number, now: number): void {
  state.peak = open;
  state.last = now;
}

/**
 * Asks V8 for a full collection that also gives freed pages back to the system, when `gc` is
 * exposed; otherwise does nothing (V8 collects on its own schedule).
 *
 * @returns Whether a collection ran.
 */
export function reclaimMemory(): boolean {
  const gc = (globalThis as { gc?: (options: object) => unknown }).gc;
  if (typeof gc !== "function") return false;
  gc({ type: "major", execution: "sync", flavor: "last-resort" });
  return true;
}
