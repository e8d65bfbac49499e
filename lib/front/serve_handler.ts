/**
 * The `Deno.serve` front end: adapts a `Request` to the proxy core and its reply to a
 * `Response`. Used with `--engine deno` (and wherever Deno's own server is needed). hyper, under
 * `Deno.serve`, has already refused malformed requests (obs-fold, `Content-Length` with
 * `Transfer-Encoding`, a target neither origin-form, absolute-form nor `*`, bytes outside ASCII
 * in it) with 400 and decoded chunked bodies.
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
import type { AccessLog } from "./access_log.ts";
import { forwardResponseHeaders } from "../http/headers.ts";
import { logLine } from "../log.ts";
import {
  type Forwarder,
  type Incoming,
  localReply,
  REPLAY_LIMIT,
  type Reply,
  splitTarget,
} from "../proxy/forward.ts";
import { isHostPort, targetProblem } from "../http/request_target.ts";
import type { Bytes } from "../upstream/client.ts";

/** A `Deno.serve` handler. */
export type Handler = (
  request: Request,
  info: Deno.ServeHandlerInfo<Deno.NetAddr>,
) => Promise<Response>;

/** Statuses that must not carry content (Fetch "null body status"); `Response` rejects one. */
const NULL_BODY = new Set([101, 103, 204, 205, 304]);

/** Methods a reverse proxy forwards; `CONNECT` would ask it to open a tunnel. */
const ALLOW = "GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS, TRACE";

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
export function toResponse(reply: Reply): Response {
  const extra = reply.extra ?? [];
  if (reply.kind === "local") {
    return new Response(reply.text, {
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
  response.release();
  return new Response(body, { status: response.status, headers });
}

/**
 * Builds the `Deno.serve` handler.
 *
 * @param forward The proxy core.
 * @param options `proto`: `https` when `Deno.serve` terminates TLS; `accessLog`: where each
 *   request is logged (read at each request, so the caller may change it); `closing`: whether
 *   the server is shutting down (each reply then says `Connection: close`, so an HTTP/1.1
 *   client sends no further request on its connection).
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
    webSocket?: (req: Request, incoming: Incoming) => Promise<Response>;
    closing?: () => boolean;
  } = {},
): Handler {
  const proto = options.proto ?? "http";
  return async (req, info) => {
    const arrived = Date.now();
    const started = performance.now();
    if (req.method === "CONNECT") {
      // goround is a reverse proxy, not a forward proxy: it never opens tunnels.
      return toResponse(localReply(405, "CONNECT is not supported", [["allow", ALLOW]]));
    }
    // hyper refused other target forms and bytes outside ASCII; the Host value, the scheme and
    // the authority of an absolute-form target are left to goround (see request_target.ts).
    const refused = requestProblem(req);
    if (refused !== null) return toResponse(localReply(400, refused));
    // req.url is absolute: its authority is the client's Host (origin-form), or the request
    // target's own authority for absolute-form, which RFC 9112 §3.2.2 prefers over Host.
    const { target, authority } = splitTarget(req.url);
    let body: Bytes | ReadableStream<Bytes> | null = null;
    let bodyLength = 0;
    const length = req.headers.get("content-length");
    if (length !== null) {
      bodyLength = contentLength(length);
      if (bodyLength > 0 && bodyLength <= REPLAY_LIMIT) {
        try {
          body = new Uint8Array(await req.arrayBuffer());
        } catch {
          return toResponse(localReply(400, "request body ended early"));
        }
      } else {
        body = bodyLength > 0 ? req.body : new Uint8Array(0);
      }
    } else if (req.body !== null) {
      bodyLength = -1; // the front decoded a chunked body; it goes on chunked
      body = req.body;
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
    if (options.webSocket && req.headers.get("upgrade")?.toLowerCase() === "websocket") {
      return await options.webSocket(req, incoming);
    }
    const reply = await forward(incoming);
    const response = toResponse(reply);
    // RFC 9112 §9.6; over HTTP/2 the server drops the field and its shutdown sends GOAWAY.
    if (options.closing?.()) response.headers.set("connection", "close");
    // Read at each request: a reload may switch the log (the options object is the worker's).
    const accessLog = options.accessLog;
    if (accessLog) {
      const known = reply.kind === "local"
        ? reply.text.length
        : reply.response.body instanceof ReadableStream
        ? (reply.response.framing.kind === "length" ? reply.response.framing.length : null)
        : reply.response.body?.length ?? 0;
      accessLog.log({
        time: arrived,
        client: info.remoteAddr.hostname,
        method: req.method,
        target,
        protocol: "HTTP/1.1",
        status: response.status,
        bytes: req.method === "HEAD" ? 0 : known,
        durationMs: performance.now() - started,
        backend: reply.trace?.backend ?? null,
        retries: reply.trace?.retries ?? 0,
        requestId: reply.trace?.requestId ?? "-",
        referer: req.headers.get("referer"),
        userAgent: req.headers.get("user-agent"),
      });
    }
    return response;
  };
}

/** A `Deno.serve` front that outlives a failed accept (see {@linkcode serveRestarting}). */
export interface RestartingServer {
  /** The bound port. */
  readonly port: number;
  /** Stops accepting and resolves once the requests in progress are answered. */
  readonly shutdown: () => Promise<void>;
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
  const serving: Handler = (req, info) => {
    if (backoff.failures > 0) {
      const failures = acceptWorked(backoff);
      if (failures > 0) logLine(backoffEnds(failures, backoff));
    }
    return handler(req, info);
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
    shutdown: async () => {
      stopping = true;
      wake?.();
      await server.shutdown().catch(() => {});
    },
  };
}
