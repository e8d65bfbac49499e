/**
 * Selection policies: which backend takes the next request. Every policy implements one
 * function over the shared {@linkcode Pool} and a small per-request context, and returns a
 * slot id, or `-1` when no backend can take the request. All of them skip backends that are
 * down, draining, already tried by this request, or at `--max-conns`, and all pass the same
 * conformance tests (`tests/balance/selection_test.ts`).
 *
 * - `round-robin`: `ticket % size` over one shared cursor (the brief's algorithm).
 * - `weighted`: smooth weighted round-robin, as nginx does it (weights 5,1,1 give
 *   a a b a c a a, never a burst), indexed by the same shared cursor, so it is lock-free.
 * - `least-conn`: the fewest requests in flight (counted in shared memory across all workers),
 *   relative to weight; ties go round-robin.
 * - `p2c`: power of two random choices on in-flight requests.
 * - `hash`: consistent hashing with Maglev (Eisenbud et al., NSDI 2016) on a request key; when
 *   a backend leaves, only its share of the keys (about 1/N) moves.
 *
 * @module
 */

import type { Algorithm } from "../config/config.ts";
import {
  inFlight,
  isUsable,
  memberAt,
  membershipVersion,
  nextTicket,
  type Pool,
  poolSize,
  upSince,
  weightOf,
} from "./pool.ts";

/** Slot ids a policy must not return (backends this request already failed on). */
export type Avoid = readonly number[];

/** What a policy may look at for one request. */
export interface SelectionContext {
  /** Slots this request already failed on. */
  readonly avoid: Avoid;
  /** The request's hash key (client address, a field or a cookie), or `""` for none. */
  readonly key: string;
  /** Requests in flight at which a backend is skipped (0: no limit). */
  readonly maxConns: number;
  /** Ramp-up time after a backend comes back up, ms (0: none). */
  readonly slowStart: number;
}

/** A selection policy. */
export type Selector = (pool: Pool, context: SelectionContext) => number;

/**
 * Whether a slot may take this request: usable (up, enabled), not tried yet, below
 * `--max-conns`, and, during slow start, admitted with probability growing with its time up.
 */
function eligible(pool: Pool, slot: number, context: SelectionContext, now: number): boolean {
  return available(pool, slot, context) &&
    (context.slowStart <= 0 || Math.random() < rampShare(pool, slot, context.slowStart, now));
}

/** Whether a slot can take this request at all: usable, not tried yet, below `--max-conns`. */
function available(pool: Pool, slot: number, context: SelectionContext): boolean {
  if (!isUsable(pool, slot) || context.avoid.includes(slot)) return false;
  return context.maxConns <= 0 || inFlight(pool, slot) < context.maxConns;
}

/**
 * The last resort of the ticket-driven policies: every member in order from `start`, the first
 * one that can take the request (slow start aside). Their tries take fresh tickets from the
 * shared cursor, and other threads take tickets in between, so `size` tries can all land on
 * dead slots while a live one exists (one live backend of three, two workers: tickets 0, 3, 4
 * miss slot 2). This sweep makes "-1" mean what it says: no backend could take the request.
 *
 * @param pool The shared pool.
 * @param start Member index to start from.
 * @param context What to avoid and the limits.
 * @returns The slot, or `-1`.
 */
function sweep(pool: Pool, start: number, context: SelectionContext): number {
  const size = poolSize(pool);
  for (let i = 0; i < size; i++) {
    const slot = memberAt(pool, (start + i) % size);
    if (available(pool, slot, context)) return slot;
  }
  return -1;
}

/**
 * A backend's share during slow start: from 10% just after it came back up to 100% after
 * `slowStart` ms (HAProxy's `slowstart`). Backends up since goround started are at 100%.
 *
 * @param pool The pool.
 * @param slot The backend.
 * @param slowStart Ramp length, ms.
 * @param now Epoch ms.
 * @returns The share, 0.1 to 1.
 */
export function rampShare(pool: Pool, slot: number, slowStart: number, now: number): number {
  const since = upSince(pool, slot);
  if (since === 0 || slowStart <= 0) return 1;
  return Math.min(1, 0.1 + 0.9 * Math.max(0, now - since) / slowStart);
}

/**
 * Round-robin over the members: `ticket % size`, where every try takes a fresh ticket from the
 * shared cursor (`Atomics.add`). Skipping a dead backend therefore also advances the cursor, so
 * with the middle one of three down, consecutive requests alternate between the other two
 * instead of landing twice on the dead one's neighbour. After `size` tries (and a few more when
 * slow start may have turned one down by chance) it sweeps the members in order, because other
 * threads' tickets may have made every try miss the live ones.
 *
 * @param pool The shared pool.
 * @param context What to avoid and the limits.
 * @returns The chosen slot, or `-1`.
 * @example
 * ```ts
 * import { createPool, setMembers } from "./pool.ts";
 * const pool = createPool(4);
 * setMembers(pool, [0, 1, 2]);
 * roundRobin(pool, { avoid: [], key: "", maxConns: 0, slowStart: 0 }); // 0, then 1, 2, 0, …
 * ```
 */
export function roundRobin(pool: Pool, context: SelectionContext): number {
  const size = poolSize(pool);
  const tries = context.slowStart > 0 ? size * 3 : size;
  const now = context.slowStart > 0 ? Date.now() : 0;
  let ticket = 0;
  for (let i = 0; i < tries; i++) {
    ticket = nextTicket(pool, size);
    const slot = memberAt(pool, ticket % size);
    if (eligible(pool, slot, context, now)) return slot;
  }
  return size === 0 ? -1 : sweep(pool, ticket + 1, context);
}

/** Per-thread caches of what a policy derives from the membership (rebuilt when it changes). */
interface Derived<T> {
  version: number;
  value: T;
}

function derive<T>(cache: Derived<T> | null, pool: Pool, build: () => T): Derived<T> {
  const version = membershipVersion(pool);
  if (cache && cache.version === version) return cache;
  return { version, value: build() };
}

/**
 * The smooth weighted round-robin cycle (nginx's `ngx_http_upstream_get_peer`): each step, every
 * member gains its weight, the one with the most is chosen and loses the total. Weights 5,1,1
 * give the cycle a a b a c a a.
 *
 * @param weights The members' weights, in order.
 * @returns Member indexes, one cycle (length = the sum of the weights).
 */
export function smoothCycle(weights: readonly number[]): number[] {
  const total = weights.reduce((sum, w) => sum + w, 0);
  const current = weights.map(() => 0);
  const cycle: number[] = [];
  for (let step = 0; step < total; step++) {
    let best = 0;
    for (let i = 0; i < weights.length; i++) {
      current[i]! += weights[i]!;
      if (current[i]! > current[best]!) best = i;
    }
    current[best]! -= total;
    cycle.push(best);
  }
  return cycle;
}

function weightedSelector(): Selector {
  let cache: Derived<{ cycle: number[]; slots: number[] }> | null = null;
  return (pool, context) => {
    cache = derive(cache, pool, () => {
      const slots = Array.from({ length: poolSize(pool) }, (_, i) => memberAt(pool, i));
      return { slots, cycle: smoothCycle(slots.map((slot) => weightOf(pool, slot))) };
    });
    const { cycle, slots } = cache.value;
    if (cycle.length === 0) return -1;
    const now = context.slowStart > 0 ? Date.now() : 0;
    // Each try takes a ticket, as round-robin does, so skips stay fair across threads.
    for (let i = 0; i < cycle.length + slots.length; i++) {
      const slot = slots[cycle[nextTicket(pool, cycle.length) % cycle.length]!]!;
      if (eligible(pool, slot, context, now)) return slot;
    }
    return sweep(pool, 0, context);
  };
}

/** In-flight requests per unit of weight: the load least-conn and p2c compare. */
function load(pool: Pool, slot: number): number {
  return inFlight(pool, slot) / weightOf(pool, slot);
}

/**
 * Least connections: the eligible member with the fewest requests in flight per unit of
 * weight; among equals, the first after a rotating start, so ties spread round-robin.
 *
 * @param pool The shared pool.
 * @param context What to avoid and the limits.
 * @returns The chosen slot, or `-1`.
 */
export function leastConn(pool: Pool, context: SelectionContext): number {
  const size = poolSize(pool);
  if (size === 0) return -1;
  const start = nextTicket(pool, size) % size;
  const now = context.slowStart > 0 ? Date.now() : 0;
  let best = -1;
  let bestLoad = Infinity;
  for (let i = 0; i < size; i++) {
    const slot = memberAt(pool, (start + i) % size);
    if (!eligible(pool, slot, context, now)) continue;
    const l = load(pool, slot);
    if (l < bestLoad) {
      best = slot;
      bestLoad = l;
    }
  }
  return best >= 0 ? best : sweep(pool, start, context); // slow start may have turned all down
}

/**
 * Power of two random choices: two distinct random eligible members, the less loaded wins
 * (Mitzenmacher); nearly as even as least-conn without reading every member.
 *
 * @param pool The shared pool.
 * @param context What to avoid and the limits.
 * @returns The chosen slot, or `-1`.
 */
export function p2c(pool: Pool, context: SelectionContext): number {
  const size = poolSize(pool);
  const now = context.slowStart > 0 ? Date.now() : 0;
  const candidates: number[] = [];
  for (let i = 0; i < size; i++) {
    const slot = memberAt(pool, i);
    if (eligible(pool, slot, context, now)) candidates.push(slot);
  }
  if (candidates.length === 0) return sweep(pool, 0, context); // slow start turned all down?
  if (candidates.length === 1) return candidates[0]!;
  const a = Math.floor(Math.random() * candidates.length);
  let b = Math.floor(Math.random() * (candidates.length - 1));
  if (b >= a) b++;
  const x = candidates[a]!;
  const y = candidates[b]!;
  return load(pool, y) < load(pool, x) ? y : x;
}

/** 32-bit FNV-1a of a string (over its UTF-16 code units), with a seed. */
export function fnv1a(text: string, seed = 0x811c9dc5): number {
  let hash = seed >>> 0;
  for (let i = 0; i < text.length; i++) {
    hash ^= text.charCodeAt(i);
    hash = Math.imul(hash, 0x01000193) >>> 0;
  }
  return hash >>> 0;
}

/** Size of the Maglev lookup table: a prime well above 100 × the largest pool. */
export const MAGLEV_SIZE = 65537;

/**
 * Builds a Maglev lookup table (Eisenbud et al., "Maglev", NSDI 2016, §3.4): each backend gets
 * a permutation of the table positions from two hashes of its name, and backends take turns
 * claiming their next free position (a backend of weight w takes w turns a round) until the
 * table is full. Removing a backend moves only the positions it held. The turns go in the order
 * of the names, so the table depends on the set of names and weights, not on their order: two
 * goround instances whose lists are shuffled send each key to the same backend.
 *
 * @param names The backends' names: their URLs.
 * @param weights Their weights, in the same order.
 * @param size The table size (a prime).
 * @returns For each position, an index into `names`.
 * @example
 * ```ts
 * import { maglevTable } from "./selection.ts";
 * const table = maglevTable(["http://a:1", "http://b:1"], [1, 1], 7);
 * table.length; // 7
 * ```
 */
export function maglevTable(
  names: readonly string[],
  weights: readonly number[],
  size = MAGLEV_SIZE,
): Uint16Array {
  const table = new Uint16Array(size).fill(0xffff);
  if (names.length === 0) return table;
  // Turns in name order (§3.4 breaks ties by turn): the listing order must not matter.
  const order = names.map((_, i) => i).sort((a, b) =>
    names[a]! < names[b]! ? -1 : names[a]! > names[b]! ? 1 : 0
  );
  const offsets = names.map((name) => fnv1a(name, 0x9747b28c) % size);
  const skips = names.map((name) => (fnv1a(name, 0x1b873593) % (size - 1)) + 1);
  const next = names.map(() => 0);
  let filled = 0;
  while (true) {
    for (const i of order) {
      for (let turn = 0; turn < weights[i]!; turn++) {
        let position = (offsets[i]! + next[i]! * skips[i]!) % size;
        while (table[position] !== 0xffff) {
          next[i]!++;
          position = (offsets[i]! + next[i]! * skips[i]!) % size;
        }
        table[position] = i;
        next[i]!++;
        if (++filled === size) return table;
      }
    }
  }
}

function hashSelector(nameOf: (slot: number) => string): Selector {
  // Built once per change of the members (their names and weights), not per request.
  let cache: Derived<{ table: Uint16Array; slots: number[] }> | null = null;
  return (pool, context) => {
    if (context.key === "") return roundRobin(pool, context); // no key: nothing to be sticky to
    cache = derive(cache, pool, () => {
      const slots = Array.from({ length: poolSize(pool) }, (_, i) => memberAt(pool, i));
      const table = maglevTable(
        slots.map(nameOf),
        slots.map((slot) => weightOf(pool, slot)),
      );
      return { slots, table };
    });
    const { table, slots } = cache.value;
    if (slots.length === 0) return -1;
    const now = context.slowStart > 0 ? Date.now() : 0;
    // An ineligible backend's keys go to the next positions of the table, which belong to the
    // other backends in their table proportions.
    const start = fnv1a(context.key) % table.length;
    for (let i = 0; i < Math.min(table.length, 64 * slots.length); i++) {
      const slot = slots[table[(start + i) % table.length]!]!;
      if (eligible(pool, slot, context, now)) return slot;
    }
    return sweep(pool, 0, context);
  };
}

/**
 * A fresh instance of the policy registered under `name` (policies with derived state, such
 * as the weighted cycle or the Maglev table, keep it per instance).
 *
 * @param name An entry of {@linkcode ALGORITHMS}.
 * @param options `nameOf`: a slot's backend URL, which `hash` places by (the slot number when
 *   not given, as in tests of one pool).
 * @returns The selector.
 */
export function selectorFor(
  name: Algorithm,
  options: { readonly nameOf?: (slot: number) => string } = {},
): Selector {
  switch (name) {
    case "round-robin":
      return roundRobin;
    case "weighted":
      return weightedSelector();
    case "least-conn":
      return leastConn;
    case "p2c":
      return p2c;
    case "hash":
      return hashSelector(options.nameOf ?? String);
  }
}
