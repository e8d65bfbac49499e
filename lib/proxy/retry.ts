/**
 * Retry policy: which failed attempts may be tried again on another backend, which failures
 * take a backend out of rotation at once, which count toward its passive ejection, and when a
 * request that keeps failing is the cause rather than the backends. Pure decisions, no I/O.
 *
 * @module
 */

import type { UpstreamError } from "../errors.ts";

/** Methods whose repetition has the same effect as one request (RFC 9110 §9.2.2). */
const IDEMPOTENT: ReadonlySet<string> = new Set([
  "GET",
  "HEAD",
  "OPTIONS",
  "TRACE",
  "PUT",
  "DELETE",
]);

/**
 * Whether a method is idempotent (RFC 9110 §9.2.2).
 *
 * @param method The request method.
 * @returns `true` for GET, HEAD, OPTIONS, TRACE, PUT and DELETE.
 */
export function isIdempotent(method: string): boolean {
  return IDEMPOTENT.has(method);
}

/**
 * Whether a failed attempt may be retried (on another backend, or on a fresh connection).
 * Always when nothing was sent (the connection never opened); otherwise only when the body can
 * be sent again (none, or buffered) and the method is idempotent, since the backend may have
 * acted on the request before it failed.
 *
 * @param error How the attempt failed.
 * @param method The request method.
 * @param replayable Whether the request body (if any) is still available in full.
 * @returns `true` when a retry is safe.
 * @example
 * ```ts
 * import { UpstreamError } from "../errors.ts";
 * const refused = new UpstreamError("connect", "connection refused", { sent: false, reused: false });
 * canRetry(refused, "POST", false); // true: the backend never saw it
 * ```
 */
export function canRetry(error: UpstreamError, method: string, replayable: boolean): boolean {
  if (error.kind === "client") return false; // the body is gone: there is nothing to send again
  if (!error.sent) return true;
  return replayable && isIdempotent(method);
}

/**
 * Whether a request that got a retryable error status (`--retry-statuses`, e.g. 503) may be
 * sent to another backend: only when repeating it is harmless (an idempotent method) and its
 * body, if any, is still available in full.
 *
 * @param method The request method.
 * @param replayable Whether the request body (if any) is still available in full.
 * @returns `true` when a retry is safe.
 */
export function canRetryStatus(method: string, replayable: boolean): boolean {
  return replayable && isIdempotent(method);
}

/**
 * Whether a failure proves the backend is down, so the health view marks it dead at once (the
 * next active probe that passes brings it back): a connection that could not be opened (refused,
 * unreachable, connect timeout). Nothing was sent, so it says nothing about the request. A
 * failure after the request went out is evidence about the request as much as the backend: see
 * {@linkcode countsAgainst}.
 *
 * @param error How the attempt failed.
 * @returns `true` when the backend should leave the rotation now.
 */
export function marksDown(error: UpstreamError): boolean {
  return error.kind === "connect";
}

/**
 * Whether a failure counts toward the backend's passive ejection (`--max-fails` within
 * `--fail-window`): a connection that broke before a response head (unless it was a pooled one,
 * which the backend may have closed as idle), a response timeout, or a malformed response. A
 * client's broken upload and a refused connection do not count (the latter marks it down).
 *
 * @param error How the attempt failed.
 * @returns `true` when it is a passive failure.
 */
export function countsAgainst(error: UpstreamError): boolean {
  return error.kind === "timeout" || error.kind === "protocol" ||
    (error.kind === "reset" && !error.reused);
}

/** A failure's signature for {@linkcode failedAlike}: a status, or one of these for errors. */
const SIGNATURES: Readonly<Record<string, number>> = { reset: -1, timeout: -2, protocol: -3 };

/**
 * How an attempt failed, as a number: the backend's status, or a negative number per kind of
 * error after the request was sent (reset, timeout, malformed response); 0 for failures that
 * say nothing about the request (a refused connection, a stale pooled one, the client's body).
 *
 * @param failure The status the backend answered, or the error.
 * @returns The signature.
 */
export function failureSignature(failure: number | UpstreamError): number {
  if (typeof failure === "number") return failure;
  if (failure.kind === "reset" && failure.reused) return 0;
  return SIGNATURES[failure.kind] ?? 0;
}

/**
 * Whether a request has now failed the same way on two backends (the same status, two resets,
 * two timeouts): then the request itself is the likely cause (a poison request) and it is not
 * retried further, so it cannot walk the whole pool and take every backend down with it.
 *
 * @param earlier Signatures of the request's earlier failures.
 * @param signature This failure's signature.
 * @returns `true` when this failure repeats an earlier one.
 * @example
 * ```ts
 * failedAlike([500], 500); // true: stop, answer the 500
 * failedAlike([-1], 500); // false: a reset, then a 500
 * ```
 */
export function failedAlike(earlier: readonly number[] | null, signature: number): boolean {
  return signature !== 0 && earlier !== null && earlier.includes(signature);
}

/**
 * Whether a failure on a pooled connection deserves one more try on the same backend with a
 * fresh connection (the backend closed the idle connection as the request went out).
 *
 * @param error How the attempt failed.
 * @param method The request method.
 * @param replayable Whether the request body (if any) is still available in full.
 * @returns `true` when a fresh connection should be tried.
 */
export function retryFresh(error: UpstreamError, method: string, replayable: boolean): boolean {
  return error.reused && error.kind === "reset" && canRetry(error, method, replayable);
}

/** Where a request stands when an attempt has failed or answered. */
export interface AttemptState {
  /** The request's method. */
  readonly method: string;
  /** Whether its body can be sent again. */
  readonly replayable: boolean;
  /** Retries on other backends so far. */
  readonly retries: number;
  /** How many retries are allowed (`--retries`, or the pool size - 1). */
  readonly limit: number;
  /** Signatures of its failures so far (see {@linkcode failureSignature}). */
  readonly seen: readonly number[] | null;
}

/**
 * What to do after an attempt failed: try the same backend on a new connection (its pooled
 * one had been closed, which is nobody's fault), stop because two backends failed alike (a
 * poison request), retry on another backend, or give up.
 *
 * @param error The failure.
 * @param state The request's state.
 * @param freshTried Whether a new connection was tried already.
 * @returns The decision.
 * @example
 * ```ts ignore
 * afterFailure(error, { method: "GET", replayable: true, retries: 0, limit: 2, seen: null }, false);
 * ```
 */
export function afterFailure(
  error: UpstreamError,
  state: AttemptState,
  freshTried: boolean,
): "fresh" | "alike" | "retry" | "give-up" {
  if (!freshTried && retryFresh(error, state.method, state.replayable)) return "fresh";
  if (failedAlike(state.seen, failureSignature(error))) return "alike";
  if (state.retries < state.limit && canRetry(error, state.method, state.replayable)) {
    return "retry";
  }
  return "give-up";
}

/**
 * What to do with a response whose status is in `--retry-statuses`: retry it elsewhere (safe
 * for an idempotent request whose body can be sent again), stop because two backends answered
 * it alike, or pass it on.
 *
 * @param status The status.
 * @param retryStatuses `--retry-statuses`.
 * @param state The request's state.
 * @returns The decision.
 */
export function afterStatus(
  status: number,
  retryStatuses: readonly number[],
  state: AttemptState,
): "retry" | "alike" | "pass" {
  if (!retryStatuses.includes(status) || state.retries >= state.limit) return "pass";
  if (!canRetryStatus(state.method, state.replayable)) return "pass";
  return failedAlike(state.seen, status) ? "alike" : "retry";
}
