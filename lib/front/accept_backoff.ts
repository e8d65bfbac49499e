/**
 * What a front end does when `accept` fails. A connection the client reset before it was
 * accepted (`NotConnected`, `ConnectionReset`, `ConnectionAborted`) is routine: skip it, say
 * nothing. Anything else (`EMFILE`, too many open files, above all) fails again at once if
 * retried at once, so the front waits, 10 ms doubling to 1 s, back to 10 ms after each accept
 * that works. One line says the episode began and one that it ended, once accepts have worked
 * for a second: at the limit, each closed connection lets one accept through before the next
 * fails, and that is still the same episode. HAProxy pauses a listener the same way; nginx
 * disables accepting for a while (`accept_mutex_delay`).
 *
 * @module
 */

/** First wait after a failed accept, ms. */
export const FIRST_DELAY_MS = 10;
/** Longest wait between two accepts while they fail, ms. */
export const MAX_DELAY_MS = 1000;
/** How long accepts must work, after the last failure, for an episode to be over, ms. */
export const QUIET_MS = 1000;

/** One front end's failed accepts since the last one that worked. */
export interface AcceptBackoff {
  /** Failed accepts in this episode (0: accepting normally). */
  failures: number;
  /** The next wait, ms. */
  delay: number;
  /** When the episode began (epoch ms). */
  since: number;
  /** When the last accept failed (epoch ms). */
  last: number;
}

/**
 * A front end's backoff state, accepting normally.
 *
 * @returns The state.
 */
export function acceptBackoff(): AcceptBackoff {
  return { failures: 0, delay: FIRST_DELAY_MS, since: 0, last: 0 };
}

/**
 * Whether an accept failed only for the connection it would have returned: its peer reset or
 * aborted it while it waited in the backlog. Nothing to report, nothing to wait for.
 *
 * @param error What `accept` threw.
 * @returns `true` for a connection that is gone.
 */
export function isPeerGone(error: unknown): boolean {
  return error instanceof Deno.errors.NotConnected ||
    error instanceof Deno.errors.ConnectionReset ||
    error instanceof Deno.errors.ConnectionAborted;
}

/**
 * Records a failed accept.
 *
 * @param state The front end's state.
 * @param now The time (epoch ms).
 * @returns How long to wait before accepting again, ms.
 */
export function acceptFailed(state: AcceptBackoff, now: number = Date.now()): number {
  if (state.failures === 0) state.since = now;
  state.failures++;
  state.last = now;
  const delay = state.delay;
  state.delay = Math.min(MAX_DELAY_MS, delay * 2);
  return delay;
}

/**
 * Records an accept that worked: the next wait starts from 10 ms again, and an episode of
 * failures ends if none came for {@linkcode QUIET_MS}.
 *
 * @param state The front end's state.
 * @param now The time (epoch ms).
 * @returns The failed accepts of the episode that ended (0 when none ended).
 */
export function acceptWorked(state: AcceptBackoff, now: number = Date.now()): number {
  state.delay = FIRST_DELAY_MS;
  const failures = state.failures;
  if (failures === 0 || now - state.last < QUIET_MS) return 0;
  state.failures = 0;
  return failures;
}

/**
 * The line that begins an episode.
 *
 * @param error What `accept` threw.
 * @returns The line.
 */
export function backoffBegins(error: unknown): string {
  const reason = error instanceof Error ? error.message : String(error);
  const hint = (error as { code?: string } | null)?.code === "EMFILE"
    ? " (every file descriptor is in use: raise ulimit -n)"
    : "";
  return `accept failed: ${reason}${hint}; trying again after ${FIRST_DELAY_MS} ms, doubling to ` +
    `${MAX_DELAY_MS} ms, until it works`;
}

/**
 * The line that ends an episode.
 *
 * @param failures Failed accepts in the episode.
 * @param state The front end's state (when the episode began and last failed).
 * @returns The line.
 */
export function backoffEnds(failures: number, state: AcceptBackoff): string {
  return `accepting again: ${failures} accepts failed in ${
    ((state.last - state.since) / 1000).toFixed(1)
  } s`;
}
