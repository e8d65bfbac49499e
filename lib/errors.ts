/**
 * goround's domain errors and the one place that maps them to HTTP statuses.
 *
 * @module
 */

/**
 * A value from outside goround (a flag, a file, an admin request's body) that is not what was
 * expected: the message is one line quoting the value and saying what was expected. Only these
 * become exit status 2 or a 400; any other error is a bug and is reported as one.
 */
export class ValidationError extends Error {
  /**
   * Creates the error.
   *
   * @param message The one-line explanation.
   */
  constructor(message: string) {
    super(message);
    this.name = "ValidationError";
  }
}

/** A bad setting: the message also names the flag (or variable, or file and key). */
export class ConfigError extends ValidationError {
  /**
   * Creates the error.
   *
   * @param message The one-line explanation.
   */
  constructor(message: string) {
    super(message);
    this.name = "ConfigError";
  }
}

/**
 * How an attempt to reach a backend failed.
 *
 * - `connect`: no connection (refused, unreachable, connect timeout). Nothing was sent.
 * - `reset`: the connection broke before a complete response head arrived.
 * - `timeout`: no response head within the response timeout.
 * - `protocol`: the backend answered with something that is not HTTP/1.x.
 * - `client`: the client's request body broke off while it was being sent on (the client went
 *   away, or sent a malformed chunk). Not the backend's fault: never retried, never counted
 *   against the backend.
 */
export type FailureKind = "connect" | "reset" | "timeout" | "protocol" | "client";

/** A failed attempt to get a response head from a backend. */
export class UpstreamError extends Error {
  /** What went wrong. */
  readonly kind: FailureKind;
  /** Whether any byte of the request may have reached the backend. */
  readonly sent: boolean;
  /** Whether the connection came from the keep-alive pool (a stale one is not the backend's fault). */
  readonly reused: boolean;

  /**
   * Creates the error.
   *
   * @param kind What went wrong.
   * @param message Human-readable detail (used in logs and the `DOWN:` reason).
   * @param options Whether bytes were sent and whether the connection was reused.
   */
  constructor(kind: FailureKind, message: string, options: { sent: boolean; reused: boolean }) {
    super(message);
    this.name = "UpstreamError";
    this.kind = kind;
    this.sent = options.sent;
    this.reused = options.reused;
  }
}

/** A response body that broke off mid-way, already logged where it happened: the front end
 * cuts the client's response short and need not report it again. */
export class BodyBrokeOff extends Error {
  /**
   * Creates the error.
   *
   * @param message What broke, e.g. `backend http://… closed the connection 986 bytes short`.
   */
  constructor(message: string) {
    super(message);
    this.name = "BodyBrokeOff";
  }
}

/** A client that stopped reading its response for longer than `--send-timeout`, already logged
 * where it was noticed: the front end closes the connection and need not report it again. */
export class ClientStalled extends Error {
  /**
   * Creates the error.
   *
   * @param message What stalled, e.g. `client 127.0.0.1 stopped reading … (GET /x)`.
   */
  constructor(message: string) {
    super(message);
    this.name = "ClientStalled";
  }
}

/** Status for a request no backend could take (all down or draining). */
export const STATUS_NO_BACKEND = 503;

/**
 * The status a client gets when its request failed and was not retried: 504 for a timeout,
 * 400 when its own body broke off (RFC 9110 §15.5.1; mostly nobody is left to read it), 502 for
 * everything else (RFC 9110 §15.6.3, §15.6.5).
 *
 * @param kind How the last attempt failed.
 * @returns 400, 502 or 504.
 */
export function statusForFailure(kind: FailureKind): 400 | 502 | 504 {
  return kind === "timeout" ? 504 : kind === "client" ? 400 : 502;
}

/**
 * A short lowercase reason for logs, e.g. `connection refused`.
 *
 * @param error Anything thrown while talking to a backend.
 * @returns The reason.
 */
export function describeError(error: unknown): string {
  if (error instanceof Deno.errors.ConnectionRefused) return "connection refused";
  if (error instanceof Deno.errors.ConnectionReset) return "connection reset";
  if (error instanceof Deno.errors.TimedOut) return "timed out";
  if (error instanceof DOMException && error.name === "TimeoutError") return "timed out";
  if (error instanceof Error) {
    const text = error.message.split("\n")[0]!;
    return /refused/i.test(text) ? "connection refused" : text.replace(/\s*\(os error \d+\)$/, "");
  }
  return String(error);
}
