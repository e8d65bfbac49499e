/**
 * The `Deno.serve` front end: adapts a `Request` to the proxy core and its reply to a
 * `Response`. Used with `--engine deno` (and wherever Deno's own server is needed). hyper, under
 * `Deno.serve`, has already refused malformed requests (obs-fold, `Content-Length` with
 * `Transfer-Encoding`, a target neither origin-form, absolute-form nor `*`, bytes outside ASCII
 * in it) with 400 and decoded chunked bodies. Request bodies are read ahead and streamed
 * responses watched for a stalled client in `serve_body.ts`.
 *
 * @module
 */

import {
  acceptBackoff,
  acceptFailed,
  acceptWorked,
  backoffBegins,
  backoffEnds,
} from "./accept_backoff.ts";
import { type AccessEntry, type AccessLog, type ReplyFacts, replyFacts } from "./access_log.ts";
import { drainingRefusal, type SessionEnded } from "../proxy/websocket.ts";
import { forwardResponseHeaders } from "../http/headers.ts";
import { formatDuration } from "../config/duration.ts";
import { logLine } from "../log.ts";
import {
  connectRefused,
  type Forwarder,
  type Incoming,
  type LocalReply,
  localReply,
  type Reply,
  splitTarget,
} from "../proxy/forward.ts";
import { isHostPort, targetProblem } from "../http/request_target.ts";
import {
  type BodyLimits,
  type BufferedBody,
  bufferRequestBody,
  sendWatched,
} from "./serve_body.ts";
import type { RequestBody } from "../upstream/client.ts";

/** A `Deno.serve` handler. */
export type Handler = (
  request: Request,
  info: Deno.ServeHandlerInfo<Deno.NetAddr>,
) => Promise<Response>;

/** Statuses that must not carry content (Fetch "null body status"); `Response` rejects one. */
const NULL_BODY = new Set([101, 103, 204, 205, 304]);

/** The flags' defaults, for a handler made without them. */
const DEFAULT_LIMITS: BodyLimits = {
  requestBuffer: 1024 * 1024,
  sendTimeout: 60_000,
  bodyTimeout: 60_000,
  bodyMinRate: 500,
};

/** What a refused body gets; the connection is not kept (hyper still reads the body out). */
function refusalReply(status: 400 | 408, text: string): LocalReply {
  return localReply(status, text, [["connection", "close"]]);
}

/** The send timeout of one streamed response, and its log line. */
function stallWatch(limits: BodyLimits, client: string, req: Request, target: string): {
  readonly sendTimeout: () => number;
  readonly onStall: () => string;
} {
  return {
    sendTimeout: () => limits.sendTimeout,
    onStall: () => {
      const line = `client ${client} stopped reading the response for ${
        formatDuration(limits.sendTimeout)
      } (--send-timeout): connection closed (${req.method} ${target})`;
      logLine(line);
      return line;
    },
  };
}

/** Parses a `Content-Length` the front accepted (a list of identical values is one value). */
function contentLength(value: string): number {
  const comma = value.indexOf(",");
  return Number(comma < 0 ? value : value.slice(0, comma));
}

/**
 * Why `Deno.serve`'s request is refused with 400, or `null`: a `Host` that is not a valid
 * host[:port], or (in `req.url`, which is the absolute-form target as sent, or the origin-form
 * one joined to `Host`) a scheme other than http(s) or an invalid authority.
 *
 * @param req The request.
 * @returns The reason, or `null`.
 */
export function requestProblem(req: Request): string | null {
  const host = req.headers.get("host");
  // Deno builds req.url from Host only when Host is valid UTF-8 and not empty; check it here.
  if (host !== null && !isHostPort(host)) return "invalid Host";
  return targetProblem(req.method, req.url);
}

/**
 * Turns a reply into a `Response`. `Content-Length` stays when it describes what the client
 * gets: a length-framed body, or the representation a HEAD or 304 response talks about
 * (RFC 9110 §8.6).
 *
 * @param reply The proxy's reply.
 * @returns The response.
 */
export function toResponse(
  reply: Reply,
  watched?: { readonly sendTimeout: () => number; readonly onStall: () => string },
): Response {
  const extra = reply.extra ?? [];
  if (reply.kind === "local") {
    return new Response(NULL_BODY.has(reply.status) ? null : reply.text, {
      status: reply.status,
      headers: [...reply.headers, ...extra],
    });
  }
  const { response } = reply;
  const keepLength = response.framing.kind === "length" || response.framing.kind === "none";
  const headers = forwardResponseHeaders(response.headers, keepLength);
  headers.push(...extra);
  let body = response.body;
  if (NULL_BODY.has(response.status) && body !== null) {
    if (body instanceof ReadableStream) body.cancel().catch(() => {});
    body = null;
  }
  // A whole body may be a view into the backend connection's buffer: copy it, then let the
  // connection go back to the pool.
  if (body instanceof Uint8Array) body = body.slice();
  else if (body !== null && watched) body = sendWatched(body, watched);
  response.release();
  return new Response(body, { status: response.status, headers });
}

/** The request side of an access-log line under `Deno.serve`, read while the request is open
 * (its fields cannot be read once it is over, as a WebSocket session's is when it is logged). */
type Served =
  & Pick<
    AccessEntry,
    "time" | "client" | "method" | "target" | "protocol" | "referer" | "userAgent"
  >
  & {
    /** `performance.now()` when the request arrived. */
    readonly started: number;
  };

/**
 * The request side of an access-log line. hyper does not say which HTTP version a request used;
 * an HTTP/2 request has no `Host` field (its authority is a pseudo-header, which `Deno.serve`
 * folds into the URL), while HTTP/1.1 requires one.
 */
function servedOf(
  req: Request,
  info: Deno.ServeHandlerInfo<Deno.NetAddr>,
  target: string,
  times: { readonly started: number; readonly arrived: number },
): Served {
  return {
    time: times.arrived,
    started: times.started,
    client: info.remoteAddr.hostname,
    method: req.method,
    target,
    protocol: req.headers.has("host") ? "HTTP/1.1" : "HTTP/2.0",
    referer: req.headers.get("referer"),
    userAgent: req.headers.get("user-agent"),
  };
}

/** Writes the access-log line of one request served through `Deno.serve`. */
function logServed(
  log: AccessLog | null | undefined,
  served: Served,
  sent: Pick<AccessEntry, "status" | "bytes">,
  facts: ReplyFacts & Pick<AccessEntry, "session">,
): void {
  if (!log) return;
  log.log({
    time: served.time,
    client: served.client,
    method: served.method,
    target: served.target,
    protocol: served.protocol,
    status: sent.status,
    bytes: served.method === "HEAD" ? 0 : sent.bytes,
    durationMs: performance.now() - served.started,
    backend: facts.backend,
    retries: facts.retries,
    requestId: facts.requestId,
    referer: served.referer,
    userAgent: served.userAgent,
    reason: facts.reason,
    ...(facts.session ? { session: facts.session } : {}),
    ...(facts.route === undefined ? {} : { route: facts.route, pool: facts.pool ?? null }),
  });
}

/**
 * Builds the `Deno.serve` handler.
 *
 * @param forward The proxy core.
 * @param options `proto`: `https` when `Deno.serve` terminates TLS; `accessLog`: where each
 *   request is logged (read at each request, so the caller may change it); `closing`: whether
 *   the server is shutting down (each reply then says `Connection: close`, so an HTTP/1.1
 *   client sends no further request on its connection, and a WebSocket handshake gets 503).
 * @returns The handler.
 * @example
 * ```ts ignore
 * Deno.serve({ port: 8000 }, createServeHandler(createForwarder(context)));
 * ```
 */
export function createServeHandler(
  forward: Forwarder,
  options: {
    proto?: "http" | "https";
    accessLog?: AccessLog | null;
    webSocket?: (
      req: Request,
      incoming: Incoming,
      ended: SessionEnded,
    ) => Promise<Response | Reply>;
    closing?: () => boolean;
    /** Told of the status of each request goround answered itself, for the metrics. */
    onRefused?: (status: number) => void;
    /** Request buffering, body pace and send timeout (read at each request). @default {the
     * flags' defaults, no budget bound} */
    limits?: BodyLimits;
  } = {},
): Handler {
  const proto = options.proto ?? "http";
  return async (req, info) => {
    const arrived = Date.now();
    const started = performance.now();
    /** Logs a reply goround made itself before forwarding, and answers it. */
    const refuse = (reply: LocalReply): Response => {
      const response = toResponse(reply);
      options.onRefused?.(reply.status);
      if (options.accessLog) {
        const served = servedOf(req, info, req.url, { started, arrived });
        logServed(options.accessLog, served, {
          status: reply.status,
          bytes: reply.text.length,
        }, replyFacts(reply));
      }
      return response;
    };
    if (req.method === "CONNECT") {
      return refuse(connectRefused());
    }
    // hyper refused other target forms and bytes outside ASCII; the Host value, the scheme and
    // the authority of an absolute-form target are left to goround (see request_target.ts).
    const refused = requestProblem(req);
    if (refused !== null) return refuse(localReply(400, refused));
    // req.url is absolute: its authority is the client's Host (origin-form), or the request
    // target's own authority for absolute-form, which RFC 9112 §3.2.2 prefers over Host.
    const { target, authority } = splitTarget(req.url);
    const limits = options.limits ?? DEFAULT_LIMITS;
    let body: RequestBody = null;
    let bodyLength = 0;
    let buffered: BufferedBody | null = null;
    const length = req.headers.get("content-length");
    const declared = length === null ? -1 : contentLength(length);
    if (declared === 0) {
      body = new Uint8Array(0);
    } else if (req.body !== null) {
      buffered = await bufferRequestBody(req.body, limits);
      if (buffered.kind === "refused") {
        logLine(
          `client ${info.remoteAddr.hostname}: ${buffered.text}: ${buffered.status} (${req.method} ${target})`,
        );
        return refuse(refusalReply(buffered.status, buffered.text));
      }
      if (buffered.kind === "whole") {
        // A chunked body read whole goes on with a Content-Length, as nginx sends it.
        body = buffered.parts.length === 1 ? buffered.parts[0]! : buffered.parts;
        bodyLength = buffered.length;
      } else {
        body = buffered.body;
        bodyLength = declared; // the rest of a chunked body goes on chunked (-1)
      }
    }
    const incoming: Incoming = {
      method: req.method,
      target,
      authority: authority ?? req.headers.get("host") ?? "",
      headers: req.headers,
      body,
      bodyLength,
      clientIp: info.remoteAddr.hostname,
      proto,
    };
    let reply: Reply;
    try {
      if (options.webSocket && req.headers.get("upgrade")?.toLowerCase() === "websocket") {
        // The listener stays open while sessions drain: a new one would be cut at the deadline.
        if (options.closing?.()) {
          const response = refuse(drainingRefusal());
          response.headers.set("connection", "close");
          return response;
        }
        // A refused handshake (no 101) is answered and logged like any other reply.
        // One line per session, once it is over (its 101 is not logged on its own).
        const served = options.accessLog ? servedOf(req, info, target, { started, arrived }) : null;
        const answer = await options.webSocket(req, incoming, (session, backend, id, routed) => {
          if (!served) return;
          logServed(options.accessLog, served, { status: 101, bytes: null }, {
            backend: backend.url,
            retries: 0,
            requestId: id,
            reason: null,
            session,
            ...(routed ? { route: routed.route, pool: routed.pool } : {}),
          });
        });
        if (answer instanceof Response) return answer;
        reply = answer;
      } else {
        reply = await forward(incoming);
      }
    } finally {
      // The exchange with the backends is over: no retry is left to send the body again.
      buffered?.done();
    }
    if (buffered?.kind === "stream" && buffered.timedOut()) {
      if (reply.kind === "upstream") {
        if (reply.response.body instanceof ReadableStream) {
          reply.response.body.cancel().catch(() => {});
        }
        reply.response.release();
      }
      return refuse(refusalReply(408, "request body too slow"));
    }
    // Only a streamed body holds a backend while the client reads: only that one is watched.
    const response = reply.kind === "upstream" && reply.response.body instanceof ReadableStream
      ? toResponse(reply, stallWatch(limits, `${info.remoteAddr.hostname}`, req, target))
      : toResponse(reply);
    // RFC 9112 §9.6; over HTTP/2 the server drops the field and its shutdown sends GOAWAY.
    if (options.closing?.()) response.headers.set("connection", "close");
    if (reply.kind === "local") options.onRefused?.(reply.status);
    // Read at each request: a reload may switch the log (the options object is the worker's).
    if (options.accessLog) {
      const known = reply.kind === "local"
        ? reply.text.length
        : reply.response.body instanceof ReadableStream
        ? (reply.response.framing.kind === "length" ? reply.response.framing.length : null)
        : reply.response.body?.length ?? 0;
      logServed(options.accessLog, servedOf(req, info, target, { started, arrived }), {
        status: response.status,
        bytes: known,
      }, replyFacts(reply));
    }
    return response;
  };
}

/** A `Deno.serve` front that outlives a failed accept (see {@linkcode serveRestarting}). */
export interface RestartingServer {
  /** The bound port. */
  readonly port: number;
  /** Stops accepting and resolves once the requests in progress are answered. `wait`: first
   * let those being handled finish while still accepting (Deno.serve's shutdown cuts a request
   * body still arriving); without, the listener closes at once. @default {true} */
  readonly shutdown: (wait?: boolean) => Promise<void>;
}

/**
 * Runs `Deno.serve`, and serves again when it stops. When `accept` fails (too many open files,
 * say), `Deno.serve` closes its listener and rejects `finished`: every later connection would
 * be refused until the worker restarted. Here the server is started again on the same port
 * (`reusePort`), after a wait that grows while it keeps failing (`accept_backoff.ts`); one line
 * says the episode began, and one that it ended, with the first request served again.
 *
 * @param options `Deno.serve`'s options, with the port already chosen.
 * @param handler The request handler.
 * @returns The running front.
 */
export function serveRestarting(
  options: Deno.ServeTcpOptions & Partial<Deno.TlsCertifiedKeyPem>,
  handler: Handler,
): RestartingServer {
  const backoff = acceptBackoff();
  let stopping = false;
  let wake: (() => void) | null = null;
  // Requests being handled: Deno.serve's shutdown cuts a request body still arriving.
  const handling = new Set<Promise<Response>>();
  const serving: Handler = (req, info) => {
    if (backoff.failures > 0) {
      const failures = acceptWorked(backoff);
      if (failures > 0) logLine(backoffEnds(failures, backoff));
    }
    const answer = handler(req, info);
    if (answer instanceof Promise) {
      handling.add(answer);
      const done = () => void handling.delete(answer);
      answer.then(done, done);
    }
    return answer;
  };
  const start = (port: number): Deno.HttpServer<Deno.NetAddr> => {
    const server = Deno.serve({ ...options, port }, serving);
    server.finished.catch((error) => void restart(port, error));
    return server;
  };
  const restart = async (port: number, error: unknown): Promise<void> => {
    if (stopping) return;
    if (backoff.failures === 0) logLine(backoffBegins(error));
    while (!stopping) {
      await new Promise<void>((resolve) => {
        const done = () => {
          clearTimeout(timer);
          wake = null;
          resolve();
        };
        const timer = setTimeout(done, acceptFailed(backoff));
        wake = done;
      });
      if (stopping) return;
      try {
        server = start(port);
        return;
      } catch {
        // The listener itself could not be opened (no file descriptor yet): wait longer.
      }
    }
  };
  let server = start(options.port ?? 0);
  const port = server.addr.port;
  return {
    port,
    shutdown: async (wait = true) => {
      stopping = true;
      wake?.();
      // Those begun by now finish first (an upload that is still arriving among them).
      if (wait) await Promise.allSettled([...handling]);
      await server.shutdown().catch(() => {});
    },
  };
}
