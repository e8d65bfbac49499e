/**
 * Coarse deadlines, checked by a sweep: one interval timer per owner (a front end's client
 * connections, an upstream client's backend connections, the `Deno.serve` front's watched
 * bodies) looks at each member every so many milliseconds, instead of a timer per request.
 * Arming a deadline is then a field write (`member.deadline = now + timeout`) and disarming it
 * another (`0`), which a request does several times; the price is that a deadline is acted on
 * up to one sweep period late.
 *
 * The sweep walks the owner's own set of members, so it keeps no list of its own, and what it
 * does with a member past its deadline (close it, answer 408) is the owner's: the sweep only
 * calls {@linkcode SweepOptions.check} with the time. Its timer never keeps a process alive.
 *
 * @module
 */

/**
 * Whether a deadline has passed.
 *
 * @param deadline Epoch ms after which it has passed; 0 for none.
 * @param now Epoch ms.
 * @returns `true` once `now` is past a set deadline.
 * @example
 * ```ts
 * import { isPast } from "./deadlines.ts";
 * isPast(0, Date.now()); // false: no deadline
 * isPast(1_000, 1_001); // true
 * ```
 */
export function isPast(deadline: number, now: number): boolean {
  return deadline !== 0 && now > deadline;
}

/** How a sweep looks at its members. */
export interface SweepOptions<T> {
  /** How often the members are looked at, ms: a deadline is acted on up to this late. */
  readonly every: number;
  /** Looks at one member, with the sweep's time (see {@linkcode isPast}); it may take the
   * member out of the set. */
  readonly check: (member: T, now: number) => void;
  /** Called after the members each time, with the same time. @default {nothing} */
  readonly after?: (now: number) => void;
}

/** A running sweep (stop it with {@linkcode stopSweep}). */
export interface Sweep {
  /** The interval timer. */
  readonly timer: ReturnType<typeof setInterval>;
}

/**
 * Starts a sweep over `members`, a set its owner keeps (it is walked as it is at each sweep).
 *
 * @param members The members, with their deadlines.
 * @param options The period and what to do with each member.
 * @returns The running sweep.
 * @example
 * ```ts
 * import { isPast, startSweep, stopSweep } from "./deadlines.ts";
 * const conns = new Set([{ deadline: Date.now() + 5_000, closed: false }]);
 * const sweep = startSweep(conns, {
 *   every: 100,
 *   check: (conn, now) => {
 *     if (isPast(conn.deadline, now)) conn.closed = true;
 *   },
 * });
 * stopSweep(sweep);
 * ```
 */
export function startSweep<T>(members: Iterable<T>, options: SweepOptions<T>): Sweep {
  const { check, after } = options;
  const timer = setInterval(() => {
    const now = Date.now();
    for (const member of members) check(member, now);
    after?.(now);
  }, options.every);
  Deno.unrefTimer(timer);
  return { timer };
}

/**
 * Stops a sweep: no deadline of its members is acted on any more.
 *
 * @param sweep The sweep.
 */
export function stopSweep(sweep: Sweep): void {
  clearInterval(sweep.timer);
}
