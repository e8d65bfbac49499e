/**
 * Requests waiting for room under `--max-conns`, first come first served, one queue per
 * forwarder (so per worker thread). Nothing runs while they wait: one watcher per queue sleeps on
 * the pool's wake word (`watchCapacity`/`waitForCapacity` in `pool.ts`, `Atomics.waitAsync`),
 * and each time a request ends anywhere in the pool it tries the waiters in arrival order, until
 * one finds no room. HAProxy serves its server queues the same way: on a released connection,
 * not on a timer.
 *
 * @module
 */

import { countQueued, type Pool, waitForCapacity, watchCapacity } from "./pool.ts";

/** Longest sleep between two looks at the pool, ms: room also appears without a request ending
 * (an ejection running out), and that sets no wake word. */
export const RECHECK_MS = 100;

/** One queued request. */
interface Waiter {
  /** Looks for room: a backend already counted as this request's (see {@linkcode Attempt}). */
  readonly attempt: Attempt;
  /** Epoch ms after which it gives up with -1. */
  readonly deadline: number;
  /** Whether it avoids some backends (a retry), so another waiter finding no room says nothing
   * about it. */
  readonly restricted: boolean;
  readonly resolve: (slot: number) => void;
  readonly reject: (error: unknown) => void;
}

/**
 * Looks for room for one request and, when it finds a backend, counts the request on it at once
 * (`beginRequest`), so the next waiter tried in the same pass sees it taken.
 *
 * @returns The slot, or -1 when no backend has room.
 */
export type Attempt = () => number;

/** How one request waits. */
export interface WaitOptions {
  /** Longest wait, ms (`--queue-timeout`). */
  readonly timeoutMs: number;
  /** The request avoids some backends (a retry): see `Waiter.restricted`. @default {false} */
  readonly restricted?: boolean;
}

/** A queue of requests waiting for room. */
export interface CapacityQueue {
  /**
   * Queues a request behind those already waiting and resolves with the slot its `attempt`
   * found (already counted), or -1 after `timeoutMs`.
   */
  readonly wait: (attempt: Attempt, options: WaitOptions) => Promise<number>;
  /** Requests waiting now. */
  readonly size: () => number;
}

/**
 * A new, empty queue over the pool.
 *
 * @param pool The shared pool.
 * @returns The queue.
 * @example
 * ```ts
 * const queue = createCapacityQueue(pool);
 * const slot = await queue.wait(() => claim(pool), { timeoutMs: 1000 });
 * ```
 */
export function createCapacityQueue(pool: Pool): CapacityQueue {
  const waiters: Waiter[] = [];
  let watching = false;

  /** Serves the waiters in order while there is room; drops those past their deadline. */
  const pass = (): void => {
    const now = Date.now();
    let kept = 0;
    let room = true;
    for (let i = 0; i < waiters.length; i++) {
      const waiter = waiters[i]!;
      let slot = -1;
      if (now < waiter.deadline) {
        // Every policy sweeps all members, so once a waiter that avoids none found no room,
        // no one behind it can find any.
        if (room) {
          try {
            slot = waiter.attempt();
          } catch (error) {
            waiter.reject(error);
            continue;
          }
        }
        if (slot < 0) {
          if (!waiter.restricted) room = false;
          waiters[kept++] = waiter;
          continue;
        }
      }
      waiter.resolve(slot);
    }
    waiters.length = kept;
  };

  const watch = async (): Promise<void> => {
    watching = true;
    try {
      while (waiters.length > 0) {
        // Armed before the look: a request that ends after it wakes the sleep below.
        const token = watchCapacity(pool);
        pass();
        if (waiters.length === 0) break;
        const left = waiters[0]!.deadline - Date.now();
        await waitForCapacity(pool, token, Math.max(1, Math.min(RECHECK_MS, left)));
      }
    } finally {
      watching = false;
    }
  };

  return {
    wait: (attempt, options) =>
      new Promise<number>((resolve, reject) => {
        // Counted while it waits, for the queue-depth gauge.
        countQueued(pool, 1);
        waiters.push({
          attempt,
          deadline: Date.now() + options.timeoutMs,
          restricted: options.restricted ?? false,
          resolve: (slot) => {
            countQueued(pool, -1);
            resolve(slot);
          },
          reject: (error) => {
            countQueued(pool, -1);
            reject(error);
          },
        });
        // A sleeping watcher stays armed; a look now serves this one if there is room already.
        if (watching) pass();
        else void watch();
      }),
    size: () => waiters.length,
  };
}
