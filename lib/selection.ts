/**
 * Selection policies: which backend takes the next request. A policy is one function over the
 * shared {@linkcode Pool}; it returns a slot id, or `-1` when no backend can take the request.
 *
 * @module
 */

import { isUsable, memberAt, nextTicket, type Pool, poolSize } from "./pool.ts";

/** Slot ids a policy must not return (backends this request already failed on). */
export type Avoid = readonly number[];

/**
 * A selection policy.
 *
 * @param pool The shared pool.
 * @param avoid Slots already tried for this request.
 * @returns The chosen slot, or `-1` when none is usable.
 */
export type Selector = (pool: Pool, avoid: Avoid) => number;

/** The names accepted by `--algorithm`. */
export const ALGORITHMS = ["round-robin"] as const;

/** A policy name. */
export type Algorithm = typeof ALGORITHMS[number];

/**
 * Round-robin over the members: `ticket % size`, where every try takes a fresh ticket from the
 * shared cursor (`Atomics.add`). Skipping a dead backend therefore also advances the cursor, so
 * with the middle one of three down, consecutive requests alternate between the other two
 * instead of landing twice on the dead one's neighbour. Gives up after `size` tries.
 *
 * @param pool The shared pool.
 * @param avoid Slots already tried for this request.
 * @returns The chosen slot, or `-1`.
 * @example
 * ```ts
 * import { createPool, setMembers } from "./pool.ts";
 * const pool = createPool(4);
 * setMembers(pool, [0, 1, 2]);
 * roundRobin(pool, []); // 0, then 1, 2, 0, …
 * ```
 */
export function roundRobin(pool: Pool, avoid: Avoid): number {
  const size = poolSize(pool);
  for (let tries = 0; tries < size; tries++) {
    const slot = memberAt(pool, nextTicket(pool, size) % size);
    if (isUsable(pool, slot) && !avoid.includes(slot)) return slot;
  }
  return -1;
}

const POLICIES: Record<Algorithm, Selector> = {
  "round-robin": roundRobin,
};

/**
 * The policy registered under `name`.
 *
 * @param name An entry of {@linkcode ALGORITHMS}.
 * @returns The selector.
 */
export function selectorFor(name: Algorithm): Selector {
  return POLICIES[name];
}
