/**
 * The backend pool's shared state: one `SharedArrayBuffer` per pool that every serving worker
 * and the main thread (health checker, admin) map, touched only through `Atomics`. One more of
 * the same layout, the process memory, holds the process-wide counters of the header (clients,
 * buffered bytes, refusals) and, in its slots' totals, the requests each route matched.
 *
 * This is the only module that knows the memory layout. Everything else calls the functions
 * below with a slot number (a backend's stable id, `0 <= slot < capacity`).
 *
 * ```text
 * Uint32 words                                   BigUint64 words (after the 32-bit area)
 * ┌──────────── header: 16 words (one cache line) ───────────┐
 * │ 0 COUNTER   round-robin cursor, only ever Atomics.add    │
 * │ 1 SIZE      number of members (the pool size)            │
 * │ 2 VERSION   bumped on every membership change            │
 * │ 3 CAPACITY  number of slots                              │
 * │ 4 NO_BACKEND requests answered 503: no backend usable    │
 * │ 5 PANIC     1 while every backend looks down (--panic)   │
 * │ 6 WAKE      capacity wake-ups: count | 2^31 while waited │
 * │ 7 BUFFERED  request body bytes held in memory, all       │
 * │             workers together (--request-buffer-total)    │
 * │ 8 CLIENTS   client connections open (goround's front)    │
 * │ 9 QUEUED    requests waiting for --max-conns room        │
 * │ 10..15 REFUSED requests goround refused, by reason       │
 * │             (bad request, method, timeout, too large,    │
 * │             loop, no route; no backend is NO_BACKEND)    │
 * ├──────────── members: CAPACITY words ─────────────────────┤
 * │ slot id of member 0, 1, … SIZE-1, in selection order     │
 * ├──────────── slots: CAPACITY × 16 words (a line each) ────┤
 * │ +0 ALIVE    1 = health view says up, 0 = down            │
 * │ +1 ADMIN    0 = enabled, 1 = draining, 2 = removed       │
 * │ +2 INFLIGHT requests being forwarded right now           │
 * │ +3 CHANGED  unix seconds of the last ALIVE transition    │
 * │ +4 FAILS    passive failures in the current window       │
 * │ +5 PASSES   consecutive passed health probes             │
 * │ +6 MISSES   consecutive failed health probes             │
 * │ +7 PROBE_US duration of the last probe, microseconds     │
 * │ +8 WEIGHT   relative share for weighted policies (≥ 1)   │
 * │ +9 EJECT    passive ejection: generation << 2 | state    │
 * │             (state 0 = in, 1 = being ejected, 2 = out)   │
 * │ +10 STREAK  ejections in a row (lengthens the next one)  │
 * │ +11 PENDING 1 = joined at run time, no check passed yet  │
 * │ +12..15     reserved                                     │
 * ├──────────── totals: CAPACITY × 48 BigUint64 ─────────────┤
 * │ +0 REQUESTS +1 FAILURES +2 RETRIES +3 WINDOW (epoch ms)  │
 * │    (in the process memory: a route's requests, by slot)  │
 * │ +4 EJECTIONS (passive)  +5 PROBES_OK +6 PROBES_FAILED    │
 * │ +7..11 responses to clients by class: 1xx … 5xx          │
 * │ +12..28 response-time histogram buckets (cumulative: no) │
 * │ +29 response-time sum, µs   +30 response count           │
 * │ +31 UP_SINCE epoch ms of the last down→up transition     │
 * │ +32 EJECT_UNTIL epoch ms the (last) ejection ends        │
 * │ +33 BYTES_IN request body bytes sent to the backend      │
 * │ +34 BYTES_OUT response body bytes it sent (when known)   │
 * │ +35..47     reserved                                     │
 * ├──────────── shares: WORKERS × ROW Uint32 (after totals) ─┤
 * │ row w, word s: requests worker w has in flight on slot s │
 * │ (ROW = CAPACITY rounded up to 16 words: each worker's    │
 * │ row is its own cache lines); Σ rows = slot +2 INFLIGHT   │
 * └──────────────────────────────────────────────────────────┘
 * ```
 *
 * The round-robin cursor wraps at {@linkcode COUNTER_WRAP}: the one request whose ticket is
 * exactly that value subtracts the largest multiple of the pool size below it, so the cycle
 * `ticket % size` never jumps (a plain 2^32 wrap would repeat a backend, since 2^32 is not a
 * multiple of 3).
 *
 * Two views decide whether a backend takes requests, kept apart: the health view (`ALIVE`:
 * active probes, and connections that could not be opened) and passive ejection (`EJECT`:
 * failures that requests met, for a while that `EJECT_UNTIL` bounds). An ejection ends by
 * itself: the first reader that finds its time passed moves the word back to "in".
 *
 * In-flight counts are kept twice: the total per slot (`INFLIGHT`, one load on the hot path for
 * least-conn, p2c, `--max-conns` and sticky) and each worker's share of it (its row). A worker
 * that dies takes its requests with it; {@linkcode reclaimShare} subtracts its row from the
 * totals before its replacement serves, so no count leaks. Every change adds the same amount to
 * both words, so `Σ rows = INFLIGHT` holds modulo 2^32 whatever the interleaving.
 *
 * Requests waiting for room under `--max-conns` sleep on `WAKE` ({@linkcode watchCapacity},
 * {@linkcode waitForCapacity}): a waiter sets its top bit, and a request that ends while it is
 * set bumps the count below it, clears the bit and notifies. With nobody waiting, ending a
 * request costs one more load.
 *
 * @module
 */

/** Round-robin cursor. */
const H_COUNTER = 0;
/** Number of members. */
const H_SIZE = 1;
/** Membership version. */
const H_VERSION = 2;
/** Number of slots. */
const H_CAPACITY = 3;
/** Requests answered 503 because no backend was usable. */
const H_NO_BACKEND = 4;
/** 1 while panic mode is on. */
const H_PANIC = 5;
/** Capacity wake-ups: a count in the low 31 bits, {@linkcode WAKE_WAITED} while someone waits. */
const H_WAKE = 6;
/** Top bit of `H_WAKE`: a thread waits for room and wants to be notified. */
const WAKE_WAITED = 0x8000_0000;
/** Request body bytes held in memory by every worker together. */
const H_BUFFERED = 7;
/** Client connections open on goround's own front, all workers. */
const H_CLIENTS = 8;
/** Requests waiting for --max-conns room, all workers. */
const H_QUEUED = 9;
/** The first of the refusal counters, one per {@linkcode REFUSALS} entry. */
const H_REFUSED = 10;

/** Why goround refused a request itself, as the metrics label them (no backend has its own
 * counter, `NO_BACKEND`). */
export const REFUSALS = [
  "bad_request",
  "method",
  "timeout",
  "too_large",
  "loop",
  "no_route",
] as const;

/** One of {@linkcode REFUSALS}. */
export type Refusal = typeof REFUSALS[number];
/** Words in the header. */
const HEADER_WORDS = 16;

/** Slot word: health view, 1 = alive. */
const S_ALIVE = 0;
/** Slot word: administrative state ({@linkcode AdminState}). */
const S_ADMIN = 1;
/** Slot word: requests in flight. */
const S_INFLIGHT = 2;
/** Slot word: unix seconds of the last ALIVE transition. */
const S_CHANGED = 3;
/** Slot word: passive failures counted in the current window. */
const S_FAILS = 4;
/** Slot word: consecutive passed health probes. */
const S_PASSES = 5;
/** Slot word: consecutive failed health probes. */
const S_MISSES = 6;
/** Slot word: duration of the last health probe, microseconds. */
const S_PROBE_US = 7;
/** Slot word: weight. */
const S_WEIGHT = 8;
/** Slot word: passive ejection, `generation << 2 | state` (see {@linkcode EJECT_OUT}). */
const S_EJECT = 9;
/** Slot word: ejections in a row. */
const S_STREAK = 10;
/** Slot word: 1 while a backend that joined at run time has not passed a health check. */
const S_PENDING = 11;
/** Slot word: its tenant, counted up each time the slot takes another backend, so a thread
 * holding an older table can tell its entry for the slot is stale. */
const S_TENANT = 12;
/** Ejection state (low two bits of `S_EJECT`): in rotation. */
const EJECT_IN = 0;
/** Ejection state: one thread is ejecting it (claimed, `EJECT_UNTIL` being written). */
const EJECT_CLAIMED = 1;
/** Ejection state: out until `EJECT_UNTIL`. Every transition adds 1 to 3 to the word, so the
 * generation above the state grows and a stale compare-and-swap never undoes a newer ejection. */
const EJECT_OUT = 2;
/** Words per slot: 16 × 4 bytes = one 64-byte cache line, so slots never share a line. */
const SLOT_WORDS = 16;

/** Total: requests forwarded to the backend (each attempt counts). */
const T_REQUESTS = 0;
/** Total: attempts that failed (connect error, reset, timeout, bad response). */
const T_FAILURES = 1;
/** Total: attempts that were a retry after another backend failed. */
const T_RETRIES = 2;
/** Epoch ms at which the current passive-failure window started. */
const T_WINDOW = 3;
/** Total: times passive verdicts ejected the backend. */
const T_EJECTIONS = 4;
/** Total: health probes passed. */
const T_PROBES_OK = 5;
/** Total: health probes failed. */
const T_PROBES_FAILED = 6;
/** Total: client responses by status class, 1xx at this word through 5xx four words on. */
const T_CLASSES = 7;
/** Response-time histogram: one count per bucket of {@linkcode DURATION_BUCKETS} and +Inf. */
const T_HISTOGRAM = 12;
/** Sum of response times, microseconds. */
const T_DURATION_SUM = 29;
/** Number of response times recorded. */
const T_DURATION_COUNT = 30;
/** Epoch ms of the last down→up transition (0: up since it joined). */
const T_UP_SINCE = 31;
/** Epoch ms at which the current (or the last) passive ejection ends; 0: never ejected. */
const T_EJECT_UNTIL = 32;
/** Request body bytes sent to the backend. */
const T_BYTES_IN = 33;
/** Response body bytes the backend sent, where their number was known. */
const T_BYTES_OUT = 34;
/** 64-bit words per slot in the totals area. */
const TOTAL_WORDS = 48;

/** Upper bounds (seconds) of the response-time histogram buckets: Prometheus' defaults, with
 * four more below them, since a proxy's answers often take well under 5 ms. */
export const DURATION_BUCKETS: readonly number[] = [
  0.0001,
  0.00025,
  0.0005,
  0.001,
  0.0025,
  0.005,
  0.01,
  0.025,
  0.05,
  0.1,
  0.25,
  0.5,
  1,
  2.5,
  5,
  10,
];

/**
 * The cursor value at which the round-robin counter folds back (2^31). Every ticket below it
 * is unique, so exactly one request sees it and does the fold.
 */
export const COUNTER_WRAP = 0x8000_0000;

/** The default and largest number of backend slots. */
export const DEFAULT_CAPACITY = 64;

/** The most serving workers a pool keeps shares for (as `--workers` allows). */
export const MAX_WORKERS = 1024;

/** Administrative state of a backend slot. */
export type AdminState = "enabled" | "draining" | "removed";
const ADMIN_STATES: readonly AdminState[] = ["enabled", "draining", "removed"];

/** A view of the shared pool memory; cheap to create in every thread. */
export interface Pool {
  /** The shared memory; post it to a worker and call {@linkcode attachPool} there. */
  readonly buffer: SharedArrayBuffer;
  /** Number of slots. */
  readonly capacity: number;
  /** 32-bit view of the header, members and slots. */
  readonly u32: Uint32Array;
  /** 64-bit view of the totals. */
  readonly totals: BigUint64Array;
  /** Word index where the slots start. */
  readonly slotBase: number;
  /** 32-bit signed view of the header (`Atomics.waitAsync` takes no unsigned array). */
  readonly header: Int32Array;
  /** Each worker's in-flight share, one row per worker. */
  readonly shares: Uint32Array;
  /** Number of worker rows. */
  readonly workers: number;
  /** Where this thread's row starts in `shares` (its requests are counted there). */
  readonly row: number;
}

/** Per-backend totals, read from shared memory. */
export interface Totals {
  /** Attempts forwarded to the backend. */
  readonly requests: bigint;
  /** Attempts that failed. */
  readonly failures: bigint;
  /** Attempts that were retries. */
  readonly retries: bigint;
  /** Times passive verdicts ejected the backend. */
  readonly ejections: bigint;
  /** Health probes passed. */
  readonly probesOk: bigint;
  /** Health probes failed. */
  readonly probesFailed: bigint;
  /** Request body bytes sent to the backend. */
  readonly bytesIn: bigint;
  /** Response body bytes it sent, where their number was known. */
  readonly bytesOut: bigint;
}

function words32(capacity: number): number {
  // Rounded up to a multiple of 16 words so the 64-bit area starts on a cache line.
  const raw = HEADER_WORDS + capacity + capacity * SLOT_WORDS;
  return Math.ceil(raw / 16) * 16;
}

/** Words in one worker's row of shares: a whole number of cache lines, so rows share none. */
function rowWords(capacity: number): number {
  return Math.ceil(capacity / 16) * 16;
}

/** Bytes before the shares area: the 32-bit area, then the totals. */
function sharesOffset(capacity: number): number {
  return words32(capacity) * 4 + capacity * TOTAL_WORDS * 8;
}

/** How a pool is made. */
export interface PoolOptions {
  /** Serving workers that will count requests in it, each in its own row. @default {1} */
  readonly workers?: number;
}

/**
 * Allocates the shared pool memory for up to `capacity` backends, all slots empty, with a row
 * of in-flight shares for each of `options.workers` workers. The view it returns counts its own
 * requests as worker 0's (the main thread forwards none).
 *
 * @param capacity How many backend slots to reserve.
 * @param options How many workers share it.
 * @returns A view of the new memory.
 * @example
 * ```ts
 * const pool = createPool(8, { workers: 2 });
 * setMembers(pool, [0, 1, 2]);
 * ```
 */
export function createPool(capacity: number = DEFAULT_CAPACITY, options: PoolOptions = {}): Pool {
  if (!Number.isInteger(capacity) || capacity < 1 || capacity > 4096) {
    throw new RangeError(`pool capacity ${capacity} must be an integer from 1 to 4096`);
  }
  const workers = options.workers ?? 1;
  if (!Number.isInteger(workers) || workers < 1 || workers > MAX_WORKERS) {
    throw new RangeError(`pool workers ${workers} must be an integer from 1 to ${MAX_WORKERS}`);
  }
  const bytes = sharesOffset(capacity) + workers * rowWords(capacity) * 4;
  const buffer = new SharedArrayBuffer(bytes);
  Atomics.store(new Uint32Array(buffer, 0, HEADER_WORDS), H_CAPACITY, capacity);
  const pool = attachPool(buffer);
  for (let slot = 0; slot < capacity; slot++) {
    Atomics.store(pool.u32, pool.slotBase + slot * SLOT_WORDS + S_ADMIN, 2);
  }
  return pool;
}

/**
 * Maps memory made by {@linkcode createPool} (in a worker, after `postMessage`). Capacity and
 * the number of worker rows are read from the memory itself.
 *
 * @param buffer The shared memory.
 * @param options `worker`: the index of the worker whose row this thread counts its requests
 *   in (from its start message). @default {0}
 * @returns A view of the same memory.
 * @throws {RangeError} When the worker has no row.
 */
export function attachPool(
  buffer: SharedArrayBuffer,
  options: { readonly worker?: number } = {},
): Pool {
  const cap = Atomics.load(new Uint32Array(buffer, 0, HEADER_WORDS), H_CAPACITY);
  const w32 = words32(cap);
  const row = rowWords(cap);
  const workers = (buffer.byteLength - sharesOffset(cap)) / (row * 4);
  const worker = options.worker ?? 0;
  if (!Number.isInteger(worker) || worker < 0 || worker >= workers) {
    throw new RangeError(`worker ${worker} is outside 0..${workers - 1}`);
  }
  return {
    buffer,
    capacity: cap,
    u32: new Uint32Array(buffer, 0, w32),
    totals: new BigUint64Array(buffer, w32 * 4, cap * TOTAL_WORDS),
    slotBase: HEADER_WORDS + cap,
    header: new Int32Array(buffer, 0, HEADER_WORDS),
    shares: new Uint32Array(buffer, sharesOffset(cap), workers * row),
    workers,
    row: worker * row,
  };
}

function slotWord(pool: Pool, slot: number, field: number): number {
  return pool.slotBase + slot * SLOT_WORDS + field;
}

/**
 * Replaces the pool's members (the backends selection cycles over) with `slots`, in order.
 * New members start enabled, and alive unless `options.alive` is `false` (then down, waiting
 * for a health check to bring them up); members that stay keep their state. Call from one
 * thread only (the main thread).
 *
 * @param pool The pool.
 * @param slots Slot ids, each below the capacity.
 * @param weights Each member's weight. @default {all 1}
 * @param options `alive`: the health view new members start with. @default {true} `up`: new
 *   members that start up even so (known healthy in another pool a moment ago). `renew`:
 *   members that take another backend (a full pool's change), started from zero as new ones.
 */
export function setMembers(
  pool: Pool,
  slots: readonly number[],
  weights: readonly number[] = slots.map(() => 1),
  options: {
    readonly alive?: boolean;
    readonly up?: ReadonlySet<number>;
    readonly renew?: ReadonlySet<number>;
  } = {},
): void {
  if (slots.length > pool.capacity) {
    throw new RangeError(`${slots.length} backends exceed the pool capacity ${pool.capacity}`);
  }
  const { u32 } = pool;
  for (const slot of slots) {
    if (!Number.isInteger(slot) || slot < 0 || slot >= pool.capacity) {
      throw new RangeError(`slot ${slot} is outside 0..${pool.capacity - 1}`);
    }
  }
  const previous = members(pool);
  for (const slot of slots) {
    // A slot joining the pool starts from zero: enabled, no counts from a former tenant.
    if (Atomics.load(u32, slotWord(pool, slot, S_ADMIN)) === 2 || options.renew?.has(slot)) {
      newTenant(pool, slot);
      for (let word = 0; word < TOTAL_WORDS; word++) {
        Atomics.store(pool.totals, slot * TOTAL_WORDS + word, 0n);
      }
      if (options.alive === false && !options.up?.has(slot)) {
        // Down, never changed: no transition yet, and not even panic mode may pick it.
        Atomics.store(u32, slotWord(pool, slot, S_PENDING), 1);
        continue;
      }
      Atomics.store(u32, slotWord(pool, slot, S_ALIVE), 1);
      Atomics.store(u32, slotWord(pool, slot, S_CHANGED), Math.floor(Date.now() / 1000));
    }
  }
  slots.forEach((slot, i) => {
    const weight = weights[i] ?? 1;
    if (!Number.isInteger(weight) || weight < 1) {
      throw new RangeError(`weight ${weight} must be a whole number ≥ 1`);
    }
    Atomics.store(u32, slotWord(pool, slot, S_WEIGHT), weight);
  });
  // Shrinking: lower SIZE before rewriting the list; growing: write the list first. A reader
  // that races the change then sees either list, never an index past the members written.
  const next = slots.length;
  if (next < Atomics.load(u32, H_SIZE)) Atomics.store(u32, H_SIZE, next);
  slots.forEach((slot, i) => Atomics.store(u32, HEADER_WORDS + i, slot));
  Atomics.store(u32, H_SIZE, next);
  // Members that left take no new requests; their requests in flight finish.
  for (const slot of previous) {
    if (!slots.includes(slot)) Atomics.store(u32, slotWord(pool, slot, S_ADMIN), 2);
  }
  Atomics.add(u32, H_VERSION, 1);
  wakeWaiters(pool); // new members may have room
}

/** Clears a slot for its next backend. Its requests in flight are kept, as they still end on
 * it; its tenant counts up. */
function newTenant(pool: Pool, slot: number): void {
  const { u32 } = pool;
  const tenant = Atomics.load(u32, slotWord(pool, slot, S_TENANT));
  for (let word = 0; word < SLOT_WORDS; word++) {
    if (word !== S_INFLIGHT) Atomics.store(u32, slotWord(pool, slot, word), 0);
  }
  for (let word = 0; word < TOTAL_WORDS; word++) {
    Atomics.store(pool.totals, slot * TOTAL_WORDS + word, 0n);
  }
  Atomics.store(u32, slotWord(pool, slot, S_TENANT), (tenant + 1) >>> 0);
}

/**
 * The slot's tenant: it changes each time the slot takes another backend.
 *
 * @param pool The pool.
 * @param slot The slot.
 * @returns The tenant number.
 */
export function tenantOf(pool: Pool, slot: number): number {
  return Atomics.load(pool.u32, slotWord(pool, slot, S_TENANT));
}

/**
 * A slot that can take a new backend: not a member, and with nothing in flight (a backend
 * removed a moment ago may still be finishing requests).
 *
 * @param pool The pool.
 * @param taken Slots already promised to other backends.
 * @returns The slot, or -1 when every slot is busy.
 */
export function freeSlot(pool: Pool, taken: ReadonlySet<number>): number {
  const current = new Set(members(pool));
  for (let slot = 0; slot < pool.capacity; slot++) {
    if (taken.has(slot) || current.has(slot)) continue;
    if (Atomics.load(pool.u32, slotWord(pool, slot, S_ADMIN)) !== 2) continue;
    if (Atomics.load(pool.u32, slotWord(pool, slot, S_INFLIGHT)) !== 0) continue;
    return slot;
  }
  return -1;
}

/**
 * The membership version: it changes whenever the members or their weights do, so a thread can
 * tell when what it derived from them (a weighted cycle, a hash table) is stale.
 *
 * @param pool The pool.
 * @returns The version.
 */
export function membershipVersion(pool: Pool): number {
  return Atomics.load(pool.u32, H_VERSION);
}

/**
 * The backend's weight (1 unless configured).
 *
 * @param pool The pool.
 * @param slot The backend's slot.
 * @returns The weight, at least 1.
 */
export function weightOf(pool: Pool, slot: number): number {
  return Atomics.load(pool.u32, slotWord(pool, slot, S_WEIGHT)) || 1;
}

/**
 * When the backend last came back up, for slow start.
 *
 * @param pool The pool.
 * @param slot The backend's slot.
 * @returns Epoch ms, or 0 when it has been up since it joined.
 */
export function upSince(pool: Pool, slot: number): number {
  return Number(Atomics.load(pool.totals, slot * TOTAL_WORDS + T_UP_SINCE));
}

/**
 * Number of members in the pool.
 *
 * @param pool The pool.
 * @returns The pool size.
 */
export function poolSize(pool: Pool): number {
  return Atomics.load(pool.u32, H_SIZE);
}

/**
 * The slot id of member `index` (0-based, below {@linkcode poolSize}).
 *
 * @param pool The pool.
 * @param index The member's position.
 * @returns Its slot id.
 */
export function memberAt(pool: Pool, index: number): number {
  return Atomics.load(pool.u32, HEADER_WORDS + index);
}

/**
 * The member slot ids in selection order.
 *
 * @param pool The pool.
 * @returns A fresh array of slot ids.
 */
export function members(pool: Pool): number[] {
  const n = poolSize(pool);
  const out: number[] = [];
  for (let i = 0; i < n; i++) out.push(memberAt(pool, i));
  return out;
}

/**
 * Takes the next round-robin ticket: one `Atomics.add` on the shared cursor. Tickets are
 * consecutive across every thread; the one ticket equal to {@linkcode COUNTER_WRAP} folds the
 * cursor back by a multiple of `size`, so `ticket % size` stays a clean cycle.
 *
 * @param pool The pool.
 * @param size The pool size the caller will take the ticket modulo.
 * @returns The ticket (below 2^32).
 */
export function nextTicket(pool: Pool, size: number): number {
  const ticket = Atomics.add(pool.u32, H_COUNTER, 1);
  if (ticket === COUNTER_WRAP) Atomics.sub(pool.u32, H_COUNTER, COUNTER_WRAP - COUNTER_WRAP % size);
  return ticket;
}

/**
 * Sets the round-robin cursor (tests use it to start near {@linkcode COUNTER_WRAP}).
 *
 * @param pool The pool.
 * @param value The new cursor value, at most `COUNTER_WRAP`.
 */
export function setCounter(pool: Pool, value: number): void {
  if (!Number.isInteger(value) || value < 0 || value > COUNTER_WRAP) {
    throw new RangeError(`counter ${value} must be an integer from 0 to ${COUNTER_WRAP}`);
  }
  Atomics.store(pool.u32, H_COUNTER, value);
}

/**
 * Whether the health view says the backend is up.
 *
 * @param pool The pool.
 * @param slot The backend's slot.
 * @returns `true` when alive.
 */
export function isAlive(pool: Pool, slot: number): boolean {
  return Atomics.load(pool.u32, slotWord(pool, slot, S_ALIVE)) === 1;
}

/**
 * Whether new requests may go to the backend: alive, enabled (not draining or removed) and not
 * ejected. One load per view while the backend is in; an ejected one costs one more load and the
 * clock.
 *
 * @param pool The pool.
 * @param slot The backend's slot.
 * @returns `true` when selectable.
 */
export function isUsable(pool: Pool, slot: number): boolean {
  const base = pool.slotBase + slot * SLOT_WORDS;
  return Atomics.load(pool.u32, base + S_ALIVE) === 1 &&
    Atomics.load(pool.u32, base + S_ADMIN) === 0 &&
    ((Atomics.load(pool.u32, base + S_EJECT) & 3) !== EJECT_OUT || ejectionOver(pool, slot));
}

/**
 * Whether the backend is in rotation as far as passive ejection goes; an ejection whose time has
 * passed is ended here (by whichever thread looks first).
 */
function ejectionOver(pool: Pool, slot: number): boolean {
  const word = slotWord(pool, slot, S_EJECT);
  const seen = Atomics.load(pool.u32, word);
  if ((seen & 3) !== EJECT_OUT) return true;
  const until = Number(Atomics.load(pool.totals, slot * TOTAL_WORDS + T_EJECT_UNTIL));
  if (Date.now() < until) return false;
  Atomics.compareExchange(pool.u32, word, seen, seen + 2); // out → in, next generation
  return true;
}

/**
 * When the backend's passive ejection ends, if it is ejected now.
 *
 * @param pool The pool.
 * @param slot The backend's slot.
 * @returns Epoch ms, or 0 when it is not ejected.
 */
export function ejectedUntil(pool: Pool, slot: number): number {
  if ((Atomics.load(pool.u32, slotWord(pool, slot, S_EJECT)) & 3) !== EJECT_OUT) return 0;
  const until = Number(Atomics.load(pool.totals, slot * TOTAL_WORDS + T_EJECT_UNTIL));
  return Date.now() < until ? until : 0;
}

/** Members other than `except` that are ejected now, or being ejected by another thread. */
function ejectedCount(pool: Pool, except: number, now: number): number {
  let out = 0;
  const size = poolSize(pool);
  for (let i = 0; i < size; i++) {
    const slot = memberAt(pool, i);
    if (slot === except) continue;
    const state = Atomics.load(pool.u32, slotWord(pool, slot, S_EJECT)) & 3;
    if (state === EJECT_CLAIMED) out++;
    else if (state === EJECT_OUT) {
      if (now < Number(Atomics.load(pool.totals, slot * TOTAL_WORDS + T_EJECT_UNTIL))) out++;
    }
  }
  return out;
}

/** The outcome of {@linkcode eject}. */
export type Ejection =
  /** Out until `until` (epoch ms); `streak` is its ejections in a row. */
  | { readonly kind: "ejected"; readonly until: number; readonly streak: number }
  /** Kept in: `out` other members are out already, and that is the limit. */
  | { readonly kind: "refused"; readonly out: number }
  /** Already out, or another thread is ejecting it this moment. */
  | { readonly kind: "already" };

/** Settings of one {@linkcode eject} call. */
export interface EjectOptions {
  /** How many members may be out at once (see `ejectionLimit` in `ejection.ts`). */
  readonly limit: number;
  /** Epoch ms. */
  readonly now: number;
  /** The next streak and length, from the backend's streak and when its last ejection ended. */
  readonly plan: (streak: number, lastEnd: number, now: number) => { streak: number; ms: number };
}

/**
 * Ejects the backend from rotation by passive verdict, unless `limit` members are out already.
 * The backend's slot is claimed first (one compare-and-swap, so one thread wins), then the other
 * members are counted, claims included: of two threads ejecting two backends at once, at least
 * one sees the other's claim, so together they never pass the limit. Its passive failure count
 * starts again from 0.
 *
 * @param pool The pool.
 * @param slot The backend's slot.
 * @param options The limit, the time and the length of the ejection.
 * @returns What happened.
 */
export function eject(pool: Pool, slot: number, options: EjectOptions): Ejection {
  const { u32, totals } = pool;
  const word = slotWord(pool, slot, S_EJECT);
  if (!ejectionOver(pool, slot)) return { kind: "already" };
  const seen = Atomics.load(u32, word);
  if ((seen & 3) !== EJECT_IN || Atomics.compareExchange(u32, word, seen, seen + 1) !== seen) {
    return { kind: "already" };
  }
  // The claim is this thread's alone: only it moves the word on from here (plain stores).
  const out = ejectedCount(pool, slot, options.now);
  if (out >= options.limit) {
    Atomics.store(u32, word, seen + 4); // claimed → in, next generation
    return { kind: "refused", out };
  }
  const untilAt = slot * TOTAL_WORDS + T_EJECT_UNTIL;
  const streakAt = slotWord(pool, slot, S_STREAK);
  const next = options.plan(
    Atomics.load(u32, streakAt),
    Number(Atomics.load(totals, untilAt)),
    options.now,
  );
  const until = options.now + next.ms;
  Atomics.store(u32, streakAt, next.streak);
  Atomics.store(totals, untilAt, BigInt(until));
  Atomics.store(u32, slotWord(pool, slot, S_FAILS), 0);
  Atomics.add(totals, slot * TOTAL_WORDS + T_EJECTIONS, 1n);
  Atomics.store(u32, word, seen + 2); // claimed → out, once its end is written
  return { kind: "ejected", until, streak: next.streak };
}

/**
 * Moves the backend's health view to `alive`, atomically. Only the caller that actually
 * changed the flag gets `true`, so exactly one thread logs each transition.
 *
 * @param pool The pool.
 * @param slot The backend's slot.
 * @param alive The new state.
 * @returns `true` when this call made the transition.
 */
export function setAlive(pool: Pool, slot: number, alive: boolean): boolean {
  const want = alive ? 1 : 0;
  const changed = Atomics.compareExchange(
    pool.u32,
    slotWord(pool, slot, S_ALIVE),
    1 - want,
    want,
  ) === 1 - want;
  if (changed) {
    Atomics.store(pool.u32, slotWord(pool, slot, S_CHANGED), Math.floor(Date.now() / 1000));
    // A fresh start either way: coming back up, earlier passive failures and failed probes no
    // longer count (and slow start begins); going down, only passes after this moment count.
    if (alive) {
      Atomics.store(pool.u32, slotWord(pool, slot, S_PENDING), 0);
      Atomics.store(pool.u32, slotWord(pool, slot, S_FAILS), 0);
      Atomics.store(pool.u32, slotWord(pool, slot, S_MISSES), 0);
      Atomics.store(pool.totals, slot * TOTAL_WORDS + T_UP_SINCE, BigInt(Date.now()));
      wakeWaiters(pool);
    } else {
      Atomics.store(pool.u32, slotWord(pool, slot, S_PASSES), 0);
    }
  }
  return changed;
}

/**
 * Unix seconds of the backend's last up/down transition (0 if none yet).
 *
 * @param pool The pool.
 * @param slot The backend's slot.
 * @returns Seconds since the epoch.
 */
export function lastChange(pool: Pool, slot: number): number {
  return Atomics.load(pool.u32, slotWord(pool, slot, S_CHANGED));
}

/**
 * The backend's administrative state.
 *
 * @param pool The pool.
 * @param slot The backend's slot.
 * @returns `"enabled"`, `"draining"` or `"removed"`.
 */
export function adminState(pool: Pool, slot: number): AdminState {
  return ADMIN_STATES[Atomics.load(pool.u32, slotWord(pool, slot, S_ADMIN))] ?? "removed";
}

/**
 * Sets the backend's administrative state (draining stops new requests; in-flight ones finish).
 *
 * @param pool The pool.
 * @param slot The backend's slot.
 * @param state The new state.
 */
export function setAdminState(pool: Pool, slot: number, state: AdminState): void {
  Atomics.store(pool.u32, slotWord(pool, slot, S_ADMIN), ADMIN_STATES.indexOf(state));
  if (state === "enabled") wakeWaiters(pool);
}

/**
 * Counts a request attempt starting on the backend: in-flight +1 and requests +1 (and retries
 * +1 when `retry`).
 *
 * @param pool The pool.
 * @param slot The backend's slot.
 * @param retry Whether the attempt retries a failed one.
 */
export function beginRequest(pool: Pool, slot: number, retry: boolean): void {
  Atomics.add(pool.u32, slotWord(pool, slot, S_INFLIGHT), 1);
  Atomics.add(pool.shares, pool.row + slot, 1);
  Atomics.add(pool.totals, slot * TOTAL_WORDS + T_REQUESTS, 1n);
  if (retry) Atomics.add(pool.totals, slot * TOTAL_WORDS + T_RETRIES, 1n);
}

/**
 * Counts a request attempt ending on the backend: in-flight -1 (and failures +1 when `failed`),
 * and wakes the requests waiting for room, if any.
 *
 * @param pool The pool.
 * @param slot The backend's slot.
 * @param failed Whether the attempt failed.
 */
export function endRequest(pool: Pool, slot: number, failed: boolean): void {
  Atomics.sub(pool.u32, slotWord(pool, slot, S_INFLIGHT), 1);
  Atomics.sub(pool.shares, pool.row + slot, 1);
  if (failed) Atomics.add(pool.totals, slot * TOTAL_WORDS + T_FAILURES, 1n);
  // After the count went down (sequentially consistent): a waiter that armed before this load
  // is notified, one that arms after it sees the room.
  if (Atomics.load(pool.u32, H_WAKE) >= WAKE_WAITED) wakeWaiters(pool);
}

/**
 * Requests currently in flight to the backend, across all workers.
 *
 * @param pool The pool.
 * @param slot The backend's slot.
 * @returns The in-flight count.
 */
export function inFlight(pool: Pool, slot: number): number {
  const count = Atomics.load(pool.u32, slotWord(pool, slot, S_INFLIGHT));
  // Never negative: a dead worker's late decrement after its share was taken back reads as 0.
  return count < 0x8000_0000 ? count : 0;
}

/**
 * Requests worker `worker` has in flight, over all backends (its row of shares).
 *
 * @param pool The pool.
 * @param worker The worker's index.
 * @returns The count.
 */
export function workerInFlight(pool: Pool, worker: number): number {
  const base = workerRow(pool, worker);
  let count = 0;
  for (let slot = 0; slot < pool.capacity; slot++) {
    count += Atomics.load(pool.shares, base + slot) | 0;
  }
  return count;
}

/**
 * Takes back a dead worker's share of every backend's in-flight count: its row is zeroed and
 * subtracted from the totals, and waiters for room are woken. Call once the worker has stopped
 * (its requests died with it) and before its replacement serves from the same row.
 *
 * @param pool The pool.
 * @param worker The dead worker's index.
 * @returns How many requests it had in flight.
 */
export function reclaimShare(pool: Pool, worker: number): number {
  const base = workerRow(pool, worker);
  let count = 0;
  for (let slot = 0; slot < pool.capacity; slot++) {
    const share = Atomics.exchange(pool.shares, base + slot, 0);
    if (share === 0) continue;
    Atomics.sub(pool.u32, slotWord(pool, slot, S_INFLIGHT), share);
    count += share | 0;
  }
  if (count !== 0) wakeWaiters(pool);
  return count;
}

function workerRow(pool: Pool, worker: number): number {
  if (!Number.isInteger(worker) || worker < 0 || worker >= pool.workers) {
    throw new RangeError(`worker ${worker} is outside 0..${pool.workers - 1}`);
  }
  return worker * rowWords(pool.capacity);
}

/**
 * Announces a thread waiting for room under `--max-conns`: from now on the next request to end
 * (anywhere in the pool) notifies. Look for room after this call, then sleep with
 * {@linkcode waitForCapacity} on the token: room freed in between wakes it at once.
 *
 * @param pool The pool.
 * @returns The token to wait on.
 */
export function watchCapacity(pool: Pool): number {
  return Atomics.or(pool.header, H_WAKE, WAKE_WAITED | 0) | WAKE_WAITED;
}

/**
 * Sleeps until room may have been freed since {@linkcode watchCapacity} gave `token`, or
 * `timeoutMs` pass. No CPU is spent meanwhile (`Atomics.waitAsync`). A pending wait does not
 * keep a thread's event loop alive by itself.
 *
 * @param pool The pool.
 * @param token What `watchCapacity` returned.
 * @param timeoutMs Longest sleep, ms.
 * @returns `"ok"` when woken, `"not-equal"` when room was freed before the call, or
 *   `"timed-out"`.
 */
export function waitForCapacity(
  pool: Pool,
  token: number,
  timeoutMs: number,
): Promise<"ok" | "not-equal" | "timed-out"> {
  const result = Atomics.waitAsync(pool.header, H_WAKE, token, timeoutMs);
  return result.async ? result.value : Promise.resolve(result.value);
}

/** Counts a wake-up (the waited bit cleared) and notifies every waiting thread. */
function wakeWaiters(pool: Pool): void {
  let seen = Atomics.load(pool.u32, H_WAKE);
  while (seen >= WAKE_WAITED) {
    const next = (seen + 1) & (WAKE_WAITED - 1);
    const found = Atomics.compareExchange(pool.u32, H_WAKE, seen, next);
    if (found === seen) {
      Atomics.notify(pool.header, H_WAKE);
      return;
    }
    seen = found;
  }
}

/**
 * The backend's cumulative totals.
 *
 * @param pool The pool.
 * @param slot The backend's slot.
 * @returns Requests, failures and retries since start.
 */
export function totals(pool: Pool, slot: number): Totals {
  const base = slot * TOTAL_WORDS;
  return {
    requests: Atomics.load(pool.totals, base + T_REQUESTS),
    failures: Atomics.load(pool.totals, base + T_FAILURES),
    retries: Atomics.load(pool.totals, base + T_RETRIES),
    ejections: Atomics.load(pool.totals, base + T_EJECTIONS),
    probesOk: Atomics.load(pool.totals, base + T_PROBES_OK),
    probesFailed: Atomics.load(pool.totals, base + T_PROBES_FAILED),
    bytesIn: Atomics.load(pool.totals, base + T_BYTES_IN),
    bytesOut: Atomics.load(pool.totals, base + T_BYTES_OUT),
  };
}

/**
 * Records the response a client got from the backend: its status class and how long it took
 * (until the response head was ready).
 *
 * @param pool The pool.
 * @param slot The backend that answered.
 * @param status The status code.
 * @param micros Time since the request arrived, microseconds.
 */
export function recordResponse(pool: Pool, slot: number, status: number, micros: number): void {
  const base = slot * TOTAL_WORDS;
  const statusClass = Math.min(5, Math.max(1, Math.floor(status / 100)));
  Atomics.add(pool.totals, base + T_CLASSES + statusClass - 1, 1n);
  const seconds = micros / 1e6;
  let bucket = 0;
  while (bucket < DURATION_BUCKETS.length && seconds > DURATION_BUCKETS[bucket]!) bucket++;
  Atomics.add(pool.totals, base + T_HISTOGRAM + bucket, 1n);
  Atomics.add(pool.totals, base + T_DURATION_SUM, BigInt(Math.round(micros)));
  Atomics.add(pool.totals, base + T_DURATION_COUNT, 1n);
}

/**
 * Counts body bytes that went to a backend and came from it.
 *
 * @param pool The pool.
 * @param slot The backend.
 * @param sent Request body bytes sent to it (0: none, or unknown).
 * @param received Response body bytes it sent (0: none, or unknown).
 */
export function recordBytes(pool: Pool, slot: number, sent: number, received: number): void {
  const base = slot * TOTAL_WORDS;
  if (sent > 0) Atomics.add(pool.totals, base + T_BYTES_IN, BigInt(sent));
  if (received > 0) Atomics.add(pool.totals, base + T_BYTES_OUT, BigInt(received));
}

/**
 * Counts a client connection opened (`1`) or closed (`-1`) on goround's own front.
 *
 * @param pool The pool.
 * @param change `1` or `-1`.
 */
export function countClient(pool: Pool, change: 1 | -1): void {
  Atomics.add(pool.u32, H_CLIENTS, change);
}

/**
 * Counts a request starting (`1`) or ending (`-1`) a wait for --max-conns room.
 *
 * @param pool The pool.
 * @param change `1` or `-1`.
 */
export function countQueued(pool: Pool, change: 1 | -1): void {
  Atomics.add(pool.u32, H_QUEUED, change);
}

/**
 * Counts a request a route matched, in the process memory (whose slots are routes).
 *
 * @param pool The process memory.
 * @param slot The route's slot.
 */
export function countRouteHit(pool: Pool, slot: number): void {
  Atomics.add(pool.totals, slot * TOTAL_WORDS + T_REQUESTS, 1n);
}

/**
 * The requests a route matched, from the process memory.
 *
 * @param pool The process memory.
 * @param slot The route's slot.
 * @returns The count since start.
 */
export function routeHits(pool: Pool, slot: number): number {
  return Number(Atomics.load(pool.totals, slot * TOTAL_WORDS + T_REQUESTS));
}

/**
 * Zeroes a route's count in the process memory, for a slot given to a new route.
 *
 * @param pool The process memory.
 * @param slot The route's slot.
 */
export function resetRouteHits(pool: Pool, slot: number): void {
  Atomics.store(pool.totals, slot * TOTAL_WORDS + T_REQUESTS, 0n);
}

/**
 * Counts a request goround refused itself.
 *
 * @param pool The pool.
 * @param reason Why.
 */
export function countRefusal(pool: Pool, reason: Refusal): void {
  Atomics.add(pool.u32, H_REFUSED + REFUSALS.indexOf(reason), 1);
}

/** What the process-wide counters of the header say. */
export interface Gauges {
  /** Client connections open on goround's own front. */
  readonly clients: number;
  /** Requests waiting for --max-conns room. */
  readonly queued: number;
  /** Requests refused, by reason. */
  readonly refused: Readonly<Record<Refusal, number>>;
}

/**
 * Reads the process-wide counters.
 *
 * @param pool The pool.
 * @returns Them.
 */
export function gauges(pool: Pool): Gauges {
  const refused = Object.fromEntries(
    REFUSALS.map((reason, i) => [reason, Atomics.load(pool.u32, H_REFUSED + i)]),
  ) as Record<Refusal, number>;
  return {
    clients: Atomics.load(pool.header, H_CLIENTS),
    queued: Atomics.load(pool.header, H_QUEUED),
    refused,
  };
}

/**
 * Counts a request answered 503 because no backend was usable.
 *
 * @param pool The pool.
 */
export function recordNoBackend(pool: Pool): void {
  Atomics.add(pool.u32, H_NO_BACKEND, 1);
}

/**
 * Turns panic mode (every backend looks down, so all are tried) on or off.
 *
 * @param pool The pool.
 * @param on Whether it is on.
 * @returns Whether this call changed it (so one thread logs each change).
 */
export function setPanic(pool: Pool, on: boolean): boolean {
  const want = on ? 1 : 0;
  return Atomics.compareExchange(pool.u32, H_PANIC, 1 - want, want) === 1 - want;
}

/**
 * Whether panic mode is on.
 *
 * @param pool The pool.
 * @returns `true` while every backend looks down and `--panic` is set.
 */
export function isPanicking(pool: Pool): boolean {
  return Atomics.load(pool.u32, H_PANIC) === 1;
}

/**
 * Whether the backend is enabled (not draining or removed), whatever its health.
 *
 * @param pool The pool.
 * @param slot The backend's slot.
 * @returns `true` when enabled.
 */
export function isEnabled(pool: Pool, slot: number): boolean {
  return Atomics.load(pool.u32, slotWord(pool, slot, S_ADMIN)) === 0;
}

/**
 * Whether the backend joined at run time (admin API, reload, DNS) and has not passed a health
 * check yet: no request goes to it, not even in panic mode.
 *
 * @param pool The pool.
 * @param slot The backend's slot.
 * @returns `true` while it waits for its first passed check.
 */
export function isPending(pool: Pool, slot: number): boolean {
  return Atomics.load(pool.u32, slotWord(pool, slot, S_PENDING)) === 1;
}

/**
 * Requests answered 503 because no backend was usable.
 *
 * @param pool The pool.
 * @returns The count.
 */
export function noBackendCount(pool: Pool): number {
  return Atomics.load(pool.u32, H_NO_BACKEND);
}

/**
 * Takes `bytes` of the process's request-buffer budget, unless that would hold more than
 * `limit` in all. A compare-and-swap loop, so concurrent takers never overshoot the limit.
 *
 * @param pool The pool.
 * @param bytes Bytes about to be held.
 * @param limit The most all workers may hold together (`--request-buffer-total`).
 * @returns Whether the bytes were taken (give them back with {@linkcode giveBuffered}).
 */
export function takeBuffered(pool: Pool, bytes: number, limit: number): boolean {
  let held = Atomics.load(pool.u32, H_BUFFERED);
  while (held + bytes <= limit) {
    const seen = Atomics.compareExchange(pool.u32, H_BUFFERED, held, held + bytes);
    if (seen === held) return true;
    held = seen;
  }
  return false;
}

/**
 * Gives back bytes taken with {@linkcode takeBuffered}.
 *
 * @param pool The pool.
 * @param bytes Bytes no longer held.
 */
export function giveBuffered(pool: Pool, bytes: number): void {
  Atomics.sub(pool.u32, H_BUFFERED, bytes);
}

/**
 * Request body bytes held in memory now, by every worker together.
 *
 * @param pool The pool.
 * @returns Bytes.
 */
export function bufferedBytes(pool: Pool): number {
  return Atomics.load(pool.u32, H_BUFFERED);
}

/** Client responses a backend gave, by class, and their response-time histogram. */
export interface ResponseStats {
  /** Responses by status class: index 0 is 1xx, 4 is 5xx. */
  readonly classes: readonly bigint[];
  /** Responses per bucket of {@linkcode DURATION_BUCKETS}, then +Inf (not cumulative). */
  readonly buckets: readonly bigint[];
  /** Sum of response times, microseconds. */
  readonly sumMicros: bigint;
  /** Responses timed. */
  readonly count: bigint;
}

/**
 * The backend's response counts and timings.
 *
 * @param pool The pool.
 * @param slot The backend's slot.
 * @returns The counts.
 */
export function responseStats(pool: Pool, slot: number): ResponseStats {
  const base = slot * TOTAL_WORDS;
  const read = (word: number) => Atomics.load(pool.totals, base + word);
  return {
    classes: [0, 1, 2, 3, 4].map((i) => read(T_CLASSES + i)),
    buckets: Array.from({ length: DURATION_BUCKETS.length + 1 }, (_, i) => read(T_HISTOGRAM + i)),
    sumMicros: read(T_DURATION_SUM),
    count: read(T_DURATION_COUNT),
  };
}

/**
 * Counts a passive failure (a request that met a reset, a timeout, a malformed response or one
 * of `--fail-statuses`) in the backend's current window of `windowMs`; a failure after the window
 * has passed starts a new one.
 *
 * @param pool The pool.
 * @param slot The backend's slot.
 * @param windowMs Window length, ms.
 * @returns The failures in the window, this one included.
 */
export function recordFailure(pool: Pool, slot: number, windowMs: number): number {
  const now = BigInt(Date.now());
  const at = slot * TOTAL_WORDS + T_WINDOW;
  const started = Atomics.load(pool.totals, at);
  if (now - started > BigInt(windowMs)) {
    // Whoever moves the window start also restarts the count; the others just add to it.
    if (Atomics.compareExchange(pool.totals, at, started, now) === started) {
      Atomics.store(pool.u32, slotWord(pool, slot, S_FAILS), 0);
    }
  }
  return Atomics.add(pool.u32, slotWord(pool, slot, S_FAILS), 1) + 1;
}

/**
 * Passive failures counted in the backend's current window.
 *
 * @param pool The pool.
 * @param slot The backend's slot.
 * @returns The count.
 */
export function failureCount(pool: Pool, slot: number): number {
  return Atomics.load(pool.u32, slotWord(pool, slot, S_FAILS));
}

/** Consecutive health probe results and the last probe's duration. */
export interface ProbeStreak {
  /** Consecutive passes (0 after a failure). */
  readonly passes: number;
  /** Consecutive failures (0 after a pass). */
  readonly misses: number;
  /** Duration of the last probe, microseconds. */
  readonly micros: number;
}

/**
 * Records a health probe result: one streak grows, the other resets (written by the health
 * checker only).
 *
 * @param pool The pool.
 * @param slot The backend's slot.
 * @param ok Whether the probe passed.
 * @param micros How long it took.
 * @returns The streaks after this result.
 */
export function recordProbe(pool: Pool, slot: number, ok: boolean, micros: number): ProbeStreak {
  const { u32, totals } = pool;
  Atomics.store(u32, slotWord(pool, slot, S_PROBE_US), Math.min(0xffff_ffff, Math.round(micros)));
  Atomics.store(u32, slotWord(pool, slot, ok ? S_MISSES : S_PASSES), 0);
  Atomics.add(u32, slotWord(pool, slot, ok ? S_PASSES : S_MISSES), 1);
  Atomics.add(totals, slot * TOTAL_WORDS + (ok ? T_PROBES_OK : T_PROBES_FAILED), 1n);
  return probeStreak(pool, slot);
}

/**
 * The backend's current probe streaks.
 *
 * @param pool The pool.
 * @param slot The backend's slot.
 * @returns Passes, misses and the last probe's duration.
 */
export function probeStreak(pool: Pool, slot: number): ProbeStreak {
  return {
    passes: Atomics.load(pool.u32, slotWord(pool, slot, S_PASSES)),
    misses: Atomics.load(pool.u32, slotWord(pool, slot, S_MISSES)),
    micros: Atomics.load(pool.u32, slotWord(pool, slot, S_PROBE_US)),
  };
}
