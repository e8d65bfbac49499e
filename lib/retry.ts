/**
 * Retry policy: which failed attempts may be tried again on another backend, and which
 * failures take a backend out of rotation at once. Pure decisions, no I/O.
 *
 * @module
 */

import type { UpstreamError } from "./errors.ts";

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
 * import { UpstreamError } from "./errors.ts";
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
 * Whether a failure proves the backend is down, so it is marked dead in shared memory at once
 * (the next active probe brings it back). A connection that could not be opened, or a fresh one
 * that broke before any response, counts; a pooled connection that went stale does not (the
 * backend may just have closed an idle connection), nor does a slow or malformed response.
 *
 * @param error How the attempt failed.
 * @returns `true` when the backend should leave the rotation.
 */
export function marksDown(error: UpstreamError): boolean {
  return error.kind === "connect" || (error.kind === "reset" && !error.reused);
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
