/**
 * The proxy core, independent of the front end that accepted the request: pick a backend,
 * forward the request, retry where safe, and hand back the backend's response or a local
 * error reply. Both fronts (goround's own HTTP/1.1 server in `server.ts` and the `Deno.serve`
 * adapter in `serve_handler.ts`) turn client requests into an {@linkcode Incoming} and write
 * the {@linkcode Reply}.
 *
 * @module
 */

import { ipInCidrs } from "../config/cidr.ts";
import type { Backend, Config } from "../config/config.ts";
import { STATUS_NO_BACKEND, statusForFailure, UpstreamError } from "../errors.ts";
import { type ForwardContext, forwardRequestFields } from "../http/headers.ts";
import { logLine } from "../log.ts";
import { TAKEOVER_PROBE_PATH, viaEntry } from "./via.ts";
import { createPicker, type Earlier, type Picker, Retired, type Selection } from "./pick.ts";
import { createPassiveJudge, type PassiveJudge } from "./passive.ts";
import {
  beginRequest,
  endRequest,
  type Pool,
  poolSize,
  recordBytes,
  recordNoBackend,
  recordResponse,
  setAlive,
} from "../balance/pool.ts";
import {
  afterFailure,
  afterStatus,
  type AttemptState,
  countsAgainst,
  failureSignature,
  marksDown,
} from "./retry.ts";
import { authorityEnd } from "../http/request_target.ts";
import {
  type OutgoingRequest,
  type RequestBody,
  roundTrip,
  type UpstreamResponse,
  type Upstreams,
} from "../upstream/client.ts";

/** What the proxy works with; one per worker thread. */
export interface ProxyContext {
  /** Shared pool state. */
  readonly pool: Pool;
  /** Settings. */
  readonly config: Config;
  /** Backend of each slot. */
  readonly backends: readonly (Backend | undefined)[];
  /** Each slot's tenant when `backends` was made (see `tenantOf`). @default {the tenants now} */
  readonly tenants?: readonly number[];
  /** Whether a change replaced this core (its table is an old one). @default {never} */
  readonly retired?: () => boolean;
  /** Forwards with the cores in force now: where a request waiting in a retired core's
   * `--max-conns` queue goes, routed again, since its table knows no member. */
  readonly redispatch?: Forwarder;
  /** The thread's upstream client. */
  readonly upstreams: Upstreams;
  /** Told when this thread takes a backend down (passive detection). @default {logs it} */
  readonly onDown?: (slot: number, backend: Backend, reason: string) => void;
  /** Told when this thread ejects a backend (passive verdict). @default {logs it} */
  readonly onEject?: (slot: number, backend: Backend, reason: string) => void;
}

/** A client request as a front end hands it over. */
export interface Incoming {
  /** The method. */
  readonly method: string;
  /** The origin-form target (`/path?query`), or `*`. */
  readonly target: string;
  /** The authority the client addressed (its `Host`, or the absolute-form target's). */
  readonly authority: string;
  /** The client's fields, names lowercased. */
  readonly headers: Iterable<readonly [string, string]>;
  /** The body: whole bytes or parts (buffered, so replayable: see `request_buffer.ts`), a
   * stream, or none. */
  readonly body: RequestBody;
  /** The body's length (sent as `Content-Length`), -1 when it streams chunked, 0 when there is
   * none. */
  readonly bodyLength: number;
  /** The TCP peer. */
  readonly clientIp: string;
  /** How the client reached goround. */
  readonly proto: "http" | "https";
  /** When the request arrived (`performance.now()`), if the front took the time already. */
  readonly arrived?: number;
  /** Whether a field name may have a `_` (`false`: the front's scan saw none, so the forwarder
   * need not look). @default {true} */
  readonly underscores?: boolean;
  /** The route and pool it was routed to (with routes), for the trace. */
  readonly routed?: { readonly route: string; readonly pool: string };
  /** The request as the front end handed it over, before a route rewrote it. */
  readonly origin?: Incoming;
  /** Set when it is forwarded again by the cores in force (see `ProxyContext.redispatch`): the
   * retries it has used (they count against the new limit), the backends it was tried on, and
   * when its wait for room ends. */
  readonly rerouted?: Earlier & { readonly retries: number };
}

/** A reply goround makes itself (a refusal, no backend, a loop). */
export type LocalReply = Extract<Reply, { readonly kind: "local" }>;

/** What the front end writes back. */
export type Reply =
  & (
    | { readonly kind: "upstream"; readonly response: UpstreamResponse }
    | {
      readonly kind: "local";
      readonly status: number;
      readonly text: string;
      readonly headers: readonly [string, string][];
    }
  )
  & {
    /** Fields goround adds to the response (`X-Request-Id`, `X-Goround-Backend`). */
    readonly extra?: readonly [string, string][];
    /** What the access log says about the request. */
    readonly trace?: Trace;
    /** Answered through the cores in force, after a change retired the ones it began in: the
     * route it met first adds nothing to it. */
    readonly rerouted?: boolean;
  };

/** The proxy's side of an access log line. */
export interface Trace {
  /** The backend that answered (or failed last), or `null` when none was tried. */
  readonly backend: string | null;
  /** Retries on other backends. */
  readonly retries: number;
  /** The request id sent to the backend and the client. */
  readonly requestId: string;
  /** The route that matched, when there are routes (`null`: none matched). */
  readonly route?: string | null;
  /** The pool it went to, when there are routes (`null`: none). */
  readonly pool?: string | null;
  /** Whether the route answered itself (a redirect or a fixed response: not a refusal). */
  readonly byRoute?: boolean;
}

/** This thread's request ids: a random prefix (so threads and restarts differ) and a counter. */
const ID_PREFIX = crypto.randomUUID().slice(0, 13);
let idCounter = 0;

/**
 * A new request id, unique per goround run (a random prefix per thread and a counter), cheaper
 * than a UUID per request.
 *
 * @returns For example `5f0c3a9e-1b2c-2s`.
 */
export function nextRequestId(): string {
  return `${ID_PREFIX}-${(++idCounter).toString(36)}`;
}

/** A client's `X-Request-Id` is kept when it looks like an id, so it cannot smuggle text into
 * logs or other systems: at most 128 letters, digits and `._:-`. */
const REQUEST_ID = /^[A-Za-z0-9._:-]{1,128}$/;

/** Forwards one request. */
export type Forwarder = (incoming: Incoming) => Promise<Reply>;

/**
 * A local reply: a short plain-text body.
 *
 * @param status The status.
 * @param text The body (a newline is added).
 * @param headers Extra fields.
 * @returns The reply.
 */
export function localReply(
  status: number,
  text: string,
  headers: [string, string][] = [],
): LocalReply {
  return {
    kind: "local",
    status,
    text: `${text}\n`,
    headers: [["content-type", "text/plain; charset=utf-8"], ...headers],
  };
}

/** Methods a reverse proxy forwards; `CONNECT` would ask it to open a tunnel. */
export const ALLOW = "GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS, TRACE";

/**
 * The answer to `CONNECT` (405): goround is a reverse proxy, not a forward proxy, and never
 * opens tunnels (RFC 9110 §9.3.6). Both front ends send it before reading anything else.
 *
 * @returns The reply.
 */
export function connectRefused(): LocalReply {
  return localReply(405, "CONNECT is not supported", [["allow", ALLOW]]);
}

/** RFC 5842 §7.2: the server detected an infinite loop while processing the request. */
export const STATUS_LOOP = 508;

/**
 * The answer to a request that has been through this goround before (its `Via` names this
 * goround's entry): 508, logged with one line that is the same for every such request, so a
 * loop's requests are counted, not each written (`log.ts`).
 *
 * @param via This goround's `Via` entry.
 * @param requestId The request's id.
 * @param target The request target (a takeover's probe is not logged).
 * @returns The reply.
 */
export function loopDetected(via: string, requestId: string, target = ""): Reply {
  // A takeover's probe (`proxy/via.ts`) names this goround on purpose: no loop to report.
  if (target !== TAKEOVER_PROBE_PATH) {
    logLine(
      `loop detected: a request came back to this goround (its Via has "${via}"), answered ` +
        `${STATUS_LOOP}: is goround in its own pool under another address or name?`,
    );
  }
  const reply = localReply(
    STATUS_LOOP,
    "loop detected: this request has been through this goround before",
  );
  return {
    ...reply,
    // Says which goround answered (RFC 9110 §7.6.3), which a takeover's probe looks for.
    extra: [["x-request-id", requestId], ["via", via]],
    trace: { backend: null, retries: 0, requestId },
  };
}

/** Lets go of a response that will not be forwarded. */
function discard(response: UpstreamResponse): void {
  if (response.body instanceof ReadableStream) response.body.cancel().catch(() => {});
  response.release();
}

function failureReply(error: UpstreamError): Reply {
  const status = statusForFailure(error.kind);
  const text = status === 504
    ? "gateway timeout"
    : status === 400
    ? "bad request body"
    : "bad gateway";
  return localReply(status, text);
}

/**
 * Splits a request-target (one that `targetProblem` in request_target.ts accepted) into the
 * origin-form target and, for an absolute-form target, its authority (RFC 9112 §3.2.2: it takes
 * precedence over `Host`). An empty path becomes `/` (§3.2.1). A fragment is dropped: it is
 * never part of a target.
 *
 * @param target The request-target as received.
 * @returns The origin-form target and the authority (`null` unless absolute-form).
 * @example
 * ```ts
 * splitTarget("http://a.example/x?y"); // { target: "/x?y", authority: "a.example" }
 * splitTarget("http://a.example?y"); // { target: "/?y", authority: "a.example" }
 * ```
 */
export function splitTarget(target: string): { target: string; authority: string | null } {
  let out = target;
  let authority: string | null = null;
  if (out.charCodeAt(0) !== 47 && out !== "*") {
    const scheme = out.indexOf("://");
    if (scheme > 0) {
      const end = authorityEnd(out, scheme + 3);
      authority = out.slice(scheme + 3, end);
      out = out.charCodeAt(end) === 47 ? out.slice(end) : `/${out.slice(end)}`;
    }
  }
  const hash = out.indexOf("#");
  return { target: hash < 0 ? out : out.slice(0, hash), authority };
}

/**
 * What the header rules need to know about a request's client (see `forwardRequestFields`).
 *
 * @param config Settings (trusted proxies, `--underscore-headers`).
 * @param incoming The request.
 * @param via goround's own `Via` entry (see `proxy/via.ts`).
 * @returns The context.
 */
export function forwardContext(
  config: Config,
  incoming: Incoming,
  via: string,
): ForwardContext {
  return {
    clientIp: incoming.clientIp,
    trusted: ipInCidrs(incoming.clientIp, config.trustedProxies),
    proto: incoming.proto,
    host: incoming.authority,
    dropUnderscores: config.underscoreHeaders === "drop" && incoming.underscores !== false,
    via,
  };
}

/** The response body bytes a reply will carry, where known before it is sent (0 otherwise). */
function bodyBytes(reply: Reply): number {
  if (reply.kind === "local") return 0;
  const { body, framing } = reply.response;
  if (body instanceof Uint8Array) return body.length;
  return framing.kind === "length" ? framing.length : 0;
}

/** The request's id: the client's `X-Request-Id` when it is well formed, else a new one. */
function requestIdOf(incoming: Incoming): string {
  let requestId = "";
  for (const [name, value] of incoming.headers) if (name === "x-request-id") requestId = value;
  return requestId === "" || !REQUEST_ID.test(requestId) ? nextRequestId() : requestId;
}

/**
 * The request head sent to every backend tried, or `null` for a request that came round a loop
 * (its `Via` names this goround). Written as it is built: no list of pairs in between.
 */
function requestHeadOf(
  incoming: Incoming,
  context: ForwardContext,
  requestId: string,
): string | null {
  let head = `${incoming.method} ${incoming.target} HTTP/1.1\r\n`;
  const looped = forwardRequestFields(incoming.headers, context, (name, value) => {
    head += `${name}: ${value}\r\n`;
  });
  if (looped) return null;
  head += `x-request-id: ${requestId}\r\n`;
  // Framing is re-derived from what the front read (RFC 9112 §6.3), never copied.
  if (incoming.bodyLength > 0 || (incoming.bodyLength === 0 && incoming.body !== null)) {
    head += `content-length: ${incoming.bodyLength}\r\n`;
  } else if (incoming.bodyLength < 0) {
    head += "transfer-encoding: chunked\r\n";
  }
  return head + "\r\n";
}

/** The reply with goround's own fields and its trace; built field by field rather than spread,
 * so the reply path stays monomorphic. */
function withTrace(reply: Reply, extra: [string, string][], trace: Trace): Reply {
  return reply.kind === "upstream"
    ? { kind: "upstream", response: reply.response, extra, trace }
    : {
      kind: "local",
      status: reply.status,
      text: reply.text,
      headers: reply.headers,
      extra,
      trace,
    };
}

/** What a worker's forwarder is made of: its context, and what is derived from it once. */
interface Core {
  readonly pool: Pool;
  readonly config: Config;
  readonly backends: readonly (Backend | undefined)[];
  readonly upstreams: Upstreams;
  readonly picker: Picker;
  /** See `ProxyContext.redispatch`. */
  readonly redispatch: Forwarder | null;
  /** The answer when no backend can take a request (503, with `Retry-After`). */
  readonly noBackend: LocalReply;
  /** This goround's `Via` entry. */
  readonly via: string;
  readonly onDown: (slot: number, backend: Backend, reason: string) => void;
  readonly passiveFailure: PassiveJudge;
}

/** One request on its way through its attempts: what each attempt leaves for the next. The
 * retry policy (`retry.ts`) reads it as its {@linkcode AttemptState}. */
interface RequestState extends AttemptState {
  /** The worker's forwarder it goes through. */
  readonly core: Core;
  readonly incoming: Incoming;
  /** The head sent to every backend tried. */
  readonly head: string;
  readonly requestId: string;
  /** When the request arrived (`performance.now()`). */
  readonly started: number;
  /** Its selection key, and the backends not to pick again. */
  readonly selection: Selection;
  retries: number;
  seen: number[] | null;
  /** The latest attempt, or `null` before the first. */
  last: Attempt | null;
  /** The slot to try again on a new connection (its pooled one was found closed), or -1. */
  again: number;
  /** Whether a new connection was tried already after a pooled one was found closed. */
  freshTried: boolean;
  /** The latest attempt's failure, if it failed. */
  failure: UpstreamError | null;
  /** A retryable error status, kept in case no other backend can take the request. */
  held: UpstreamResponse | null;
  /** Whether any attempt got past opening a connection (else "no backend" is the answer). */
  reached: boolean;
}

/**
 * One attempt of a request on one backend: the request as it goes to that backend, and how the
 * attempt ends: its in-flight count is taken back once, whichever comes first of the exchange's
 * end and a request body that broke off. A class, so that both are methods rather than closures
 * made per attempt.
 */
class Attempt implements OutgoingRequest {
  readonly method: string;
  readonly head: string;
  readonly body: RequestBody;
  readonly chunked: boolean;
  #ended = false;

  constructor(readonly state: RequestState, readonly slot: number, readonly backend: Backend) {
    const { incoming } = state;
    this.method = incoming.method;
    this.head = state.head;
    this.body = incoming.body;
    this.chunked = incoming.bodyLength < 0;
  }

  /** Takes the attempt's in-flight count back (once: later calls do nothing). */
  end(failed: boolean): void {
    if (this.#ended) return;
    this.#ended = true;
    endRequest(this.state.core.pool, this.slot, failed);
  }

  onBodyEnd(error?: string): void {
    // The first report wins: a body the client cancelled also fails the read under way,
    // and that is not the backend breaking off.
    if (this.#ended) return;
    if (error !== undefined) {
      const { method, target } = this.state.incoming;
      logLine(`backend ${this.backend.url} ${error} (${method} ${target})`);
    }
    this.end(error !== undefined);
  }
}

/**
 * Builds the forwarder for one worker.
 *
 * @param context Pool, settings, backends and upstream client.
 * @returns The forwarder.
 */
export function createForwarder(context: ProxyContext): Forwarder {
  const { pool, config, backends } = context;
  const retryAfter = String(Math.max(1, Math.ceil(config.healthInterval / 1000)));
  const core: Core = {
    pool,
    config,
    backends,
    upstreams: context.upstreams,
    picker: createPicker(pool, config, backends, context.tenants, context.retired),
    redispatch: context.redispatch ?? null,
    noBackend: localReply(STATUS_NO_BACKEND, "no backend available", [
      ["retry-after", retryAfter],
    ]),
    via: viaEntry(config.instanceId),
    onDown: context.onDown ??
      ((_slot, backend, reason) => logLine(`backend ${backend.url} DOWN: ${reason}`)),
    passiveFailure: createPassiveJudge(pool, config, context),
  };
  return (incoming) => forward(core, incoming);
}

/** Forwards one request: attempts, each on the backend the picker names, until one answers or
 * the retry policy says stop. */
async function forward(core: Core, incoming: Incoming): Promise<Reply> {
  const started = incoming.arrived ?? performance.now();
  const requestId = requestIdOf(incoming);
  const head = requestHeadOf(incoming, forwardContext(core.config, incoming, core.via), requestId);
  if (head === null) return loopDetected(core.via, requestId, incoming.target);
  const state = startRequest(core, incoming, { head, requestId, started });
  while (true) {
    const fresh = state.again >= 0;
    let slot = fresh ? state.again : core.picker.next(state.selection, state.retries > 0);
    state.again = -1;
    // A slot from the queue is counted already (its waiters are served in one pass).
    let counted = false;
    if (typeof slot !== "number") {
      try {
        slot = await slot;
      } catch (error) {
        if (!(error instanceof Retired)) throw error;
        return redispatch(state);
      }
      counted = true;
    }
    const backend = slot < 0 ? undefined : core.picker.backendOf(slot);
    if (backend === undefined) {
      if (slot < 0) return exhausted(state);
      // A member this worker has not been told about, or one that took another backend since
      // this request began (a change under way): pick again.
      if (counted) endRequest(core.pool, slot, false);
      state.selection.avoid.push(slot);
      continue;
    }
    const attempt = beginAttempt(state, slot, backend);
    if (!counted) beginRequest(core.pool, slot, state.retries > 0);
    let response: UpstreamResponse;
    try {
      response = await roundTrip(core.upstreams, backend, attempt, fresh);
    } catch (error) {
      // A body the client broke off is not held against the backend.
      attempt.end(!(error instanceof UpstreamError && error.kind === "client"));
      if (!(error instanceof UpstreamError)) throw error;
      const reply = afterError(attempt, error);
      if (reply === null) continue;
      return reply;
    }
    const reply = afterResponse(attempt, response);
    if (reply !== null) return reply;
  }
}

/** A request whose core was replaced while it waited for room: routed again with the cores in
 * force (its body is untouched or replayable, as a retry's), its retries carried over. Each time
 * takes another change, so it cannot go round. */
async function redispatch(state: RequestState): Promise<Reply> {
  const { redispatch } = state.core;
  if (redispatch === null) return exhausted(state);
  if (state.held) {
    discard(state.held);
    state.held = null;
  }
  const incoming = state.incoming.origin ?? state.incoming;
  const { avoid, queueUntil } = state.selection;
  const tried = avoid.flatMap((slot) => state.core.backends[slot]?.url ?? []);
  const rerouted = { retries: state.retries, tried, queueUntil };
  const reply = await redispatch({ ...incoming, rerouted });
  return { ...reply, rerouted: true };
}

/** A request's state before its first attempt. */
function startRequest(
  core: Core,
  incoming: Incoming,
  known: Pick<RequestState, "head" | "requestId" | "started">,
): RequestState {
  const { config } = core;
  return {
    core,
    incoming,
    head: known.head,
    requestId: known.requestId,
    started: known.started,
    selection: core.picker.start(incoming),
    method: incoming.method,
    replayable: !(incoming.body instanceof ReadableStream),
    retries: incoming.rerouted?.retries ?? 0,
    limit: config.retries < 0 ? poolSize(core.pool) - 1 : config.retries,
    seen: null,
    last: null,
    again: -1,
    freshTried: false,
    failure: null,
    held: null,
    reached: false,
  };
}

/** Begins an attempt on `backend`; the response held from the one before is let go. */
function beginAttempt(state: RequestState, slot: number, backend: Backend): Attempt {
  if (state.held) {
    discard(state.held);
    state.held = null;
  }
  const attempt = new Attempt(state, slot, backend);
  state.last = attempt;
  return attempt;
}

/** After a failed attempt: the reply, or `null` to go round again (on the same backend with a
 * new connection, or on another). */
function afterError(attempt: Attempt, error: UpstreamError): Reply | null {
  const { state } = attempt;
  state.failure = error;
  const decision = afterFailure(error, state, state.freshTried);
  if (decision === "fresh") {
    // Same backend, new connection: the idle one was closed under us (not the backend's
    // fault, and not a retry on another backend, so --retries is not spent).
    state.freshTried = true;
    state.again = attempt.slot;
    return null;
  }
  holdAgainst(attempt, error);
  if (decision === "alike") {
    logLine(sameFailure(attempt, error.message));
    return finish(state, failureReply(error));
  }
  if (decision === "retry") {
    const signature = failureSignature(error);
    if (signature !== 0) (state.seen ??= []).push(signature);
    elsewhere(attempt);
    return null;
  }
  logLine(gaveUp(attempt, error));
  // Not one attempt reached a backend: the request was not processed anywhere.
  return finish(state, state.reached ? failureReply(error) : state.core.noBackend);
}

/** What a failure says about its backend: down at once when it could not be reached, else
 * perhaps one passive failure more. */
function holdAgainst(attempt: Attempt, error: UpstreamError): void {
  const { state, slot, backend } = attempt;
  const { core } = state;
  if (marksDown(error)) {
    if (setAlive(core.pool, slot, false)) core.onDown(slot, backend, error.message);
    return;
  }
  state.reached = true;
  if (countsAgainst(error)) core.passiveFailure(slot, backend, error.message);
}

/** After a response: the reply, or `null` to retry its retryable status on another backend. */
function afterResponse(attempt: Attempt, response: UpstreamResponse): Reply | null {
  const { state } = attempt;
  const { config } = state.core;
  state.reached = true;
  const status = response.status;
  // An application's status is the backend's failure only when the operator says so.
  if (config.failStatuses.length > 0 && config.failStatuses.includes(status)) {
    state.core.passiveFailure(attempt.slot, attempt.backend, `HTTP ${status}`);
  }
  const verdict = afterStatus(status, config.retryStatuses, state);
  if (verdict === "retry") {
    (state.seen ??= []).push(status);
    attempt.end(true);
    state.held = response;
    elsewhere(attempt);
    return null;
  }
  if (verdict === "alike") logLine(sameFailure(attempt, `HTTP ${status}`));
  if (!(response.body instanceof ReadableStream)) attempt.end(false);
  return finish(state, { kind: "upstream", response });
}

/** The next attempt goes to another backend: one retry more. */
function elsewhere(attempt: Attempt): void {
  attempt.state.retries++;
  attempt.state.selection.avoid.push(attempt.slot);
}

/** Every backend is down or was tried: the held 5xx, 502/504 if this request failed on one,
 * 503 when none could even be connected to. */
function exhausted(state: RequestState): Reply {
  if (state.held) return finish(state, { kind: "upstream", response: state.held });
  if (state.failure && state.reached) return finish(state, failureReply(state.failure));
  return finish(state, state.core.noBackend);
}

/**
 * The reply as the client gets it, with goround's own fields and its trace, and the answer
 * recorded in shared memory: against the latest attempt's backend, or, for the 503, against
 * none (even after attempts that could not connect).
 */
function finish(state: RequestState, reply: Reply): Reply {
  const { pool, config, picker, noBackend } = state.core;
  const by = reply === noBackend ? null : state.last;
  if (by !== null) {
    const status = reply.kind === "local" ? reply.status : reply.response.status;
    recordResponse(pool, by.slot, status, (performance.now() - state.started) * 1000);
    recordBytes(pool, by.slot, Math.max(0, state.incoming.bodyLength), bodyBytes(reply));
  } else recordNoBackend(pool);
  const { requestId } = state;
  const extra: [string, string][] = [["x-request-id", requestId]];
  if (config.exposeBackend && by) extra.push(["x-goround-backend", by.backend.url]);
  // (Re-)issue the sticky cookie whenever the answer came from another backend than it named.
  const cookie = by ? picker.cookie(state.selection, by.slot, by.backend) : null;
  if (cookie !== null) extra.push(["set-cookie", cookie]);
  const backend = by?.backend.url ?? null;
  const routed = state.incoming.routed;
  const trace: Trace = routed === undefined
    ? { backend, retries: state.retries, requestId }
    : { backend, retries: state.retries, requestId, route: routed.route, pool: routed.pool };
  return withTrace(reply, extra, trace);
}

/** The log line of a request not retried because it failed the same way on two backends. */
function sameFailure(attempt: Attempt, what: string): string {
  const { method, target } = attempt.state.incoming;
  return `not retried: ${method} ${target} failed the same way on two backends (${what}; the last was ${attempt.backend.url})`;
}

/** The log line of a request given up on after a failure. */
function gaveUp(attempt: Attempt, error: UpstreamError): string {
  const { method, target, clientIp } = attempt.state.incoming;
  const { url } = attempt.backend;
  return error.kind === "client"
    ? `client ${clientIp}: ${error.message} (${method} ${target} to ${url})`
    : `backend ${url} ${error.kind} error: ${error.message} (${method} ${target})`;
}
