/**
 * Request buffering: how much of a request body a front end reads into memory before any
 * backend is contacted (`--request-buffer`, nginx's `client_body_buffer_size` with
 * `proxy_request_buffering on`), and the budget all workers share (`--request-buffer-total`).
 *
 * A body up to the buffer size is read whole first, so a client that sends it slowly holds
 * goround's memory, never a backend's worker, and the body can be sent again on a retry. A
 * larger body has its first buffer-size bytes read first, then streams. When the budget is spent,
 * a request streams at once instead of waiting: the budget bounds memory, and turning a full
 * budget into errors would let slow clients fail everyone else's uploads.
 *
 * @module
 */

import { giveBuffered, type Pool, takeBuffered } from "../balance/pool.ts";

/** The shared budget of buffered request body bytes. */
export interface BufferBudget {
  /** Takes bytes of the budget; `false` when that would exceed it. */
  readonly take: (bytes: number) => boolean;
  /** Gives back bytes taken. */
  readonly give: (bytes: number) => void;
}

/** A budget without a bound (for a front end run outside a worker, as in tests). */
export const UNBOUNDED: BufferBudget = { take: () => true, give: () => {} };

/**
 * The budget in the pool's shared memory, so that all workers together stay within `limit`.
 *
 * @param pool The shared pool.
 * @param limit Reads the bound (`--request-buffer-total`) at each use, so a reload changes it.
 * @returns The budget.
 */
export function poolBudget(pool: Pool, limit: () => number): BufferBudget {
  return {
    take: (bytes) => takeBuffered(pool, bytes, limit()),
    give: (bytes) => giveBuffered(pool, bytes),
  };
}
