/**
 * The request handler: pick a backend, forward the request, retry where safe, and turn the
 * backend's answer (or failure) into the client's response.
 *
 * @module
 */

import { ipInCidrs } from "./cidr.ts";
import type { Backend, Config } from "./config.ts";
import { STATUS_NO_BACKEND, statusForFailure, UpstreamError } from "./errors.ts";
import { forwardRequestHeaders, forwardResponseHeaders } from "./headers.ts";
import { encodeLatin1, requestHead } from "./http1.ts";
import { logLine } from "./log.ts";
import { beginRequest, endRequest, type Pool, poolSize, setAlive } from "./pool.ts";
import { canRetry, marksDown, retryFresh } from "./retry.ts";
import { selectorFor } from "./selection.ts";
import {
  type Bytes,
  type OutgoingRequest,
  roundTrip,
  type UpstreamResponse,
  type Upstreams,
} from "./upstream.ts";

/** Request bodies up to this size (with a `Content-Length`) are read whole before forwarding,
 * so an idempotent request can be replayed on another backend. Larger ones are streamed. */
export const REPLAY_LIMIT = 64 * 1024;

/** What the handler works with; one per worker thread. */
export interface ProxyContext {
  /** Shared pool state. */
  readonly pool: Pool;
  /** Settings. */
  readonly config: Config;
  /** Backend of each slot. */
  readonly backends: readonly (Backend | undefined)[];
  /** The thread's upstream client. */
  readonly upstreams: Upstreams;
}

/** A `Deno.serve` handler. */
export type Handler = (
  request: Request,
  info: Deno.ServeHandlerInfo<Deno.NetAddr>,
) => Promise<Response>;

function plain(status: number, text: string, extra: [string, string][] = []): Response {
  return new Response(`${text}\n`, {
    status,
    headers: [["content-type", "text/plain; charset=utf-8"], ...extra],
  });
}

/** Splits `Deno.serve`'s absolute `req.url` into authority and origin-form target. */
function splitUrl(url: string): { authority: string; target: string } {
  const schemeEnd = url.indexOf("://") + 3;
  const slash = url.indexOf("/", schemeEnd);
  const authority = slash < 0 ? url.slice(schemeEnd) : url.slice(schemeEnd, slash);
  let target = slash < 0 ? "/" : url.slice(slash);
  // A fragment is never part of a request target (RFC 9112 §3.2); do not pass one on.
  const hash = target.indexOf("#");
  if (hash >= 0) target = target.slice(0, hash);
  return { authority, target };
}

/** Parses a `Content-Length` the front accepted (a list of identical values is one value). */
function contentLength(value: string): number {
  const comma = value.indexOf(",");
  return Number(comma < 0 ? value : value.slice(0, comma));
}

/**
 * Builds the handler for one worker.
 *
 * @param context Pool, settings, backends and upstream client.
 * @returns The handler.
 * @example
 * ```ts ignore
 * Deno.serve({ port: 8000 }, createHandler(context));
 * ```
 */
export function createHandler(context: ProxyContext): Handler {
  const { pool, config, backends, upstreams } = context;
  const select = selectorFor(config.algorithm);
  const retryAfter = String(Math.max(1, Math.ceil(config.healthInterval / 1000)));

  return async (req, info) => {
    if (req.method === "CONNECT") {
      // goround is a reverse proxy, not a forward proxy: it never opens tunnels.
      return plain(405, "CONNECT is not supported", [[
        "allow",
        "GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS",
      ]]);
    }
    const { authority, target } = splitUrl(req.url);
    const clientIp = info.remoteAddr.hostname;
    // The authority of req.url is the client's Host (origin-form), or the request target's own
    // authority for absolute-form, which RFC 9112 §3.2.2 says takes precedence over Host.
    const fields = forwardRequestHeaders(req.headers, {
      clientIp,
      trusted: ipInCidrs(clientIp, config.trustedProxies),
      proto: "http",
      host: authority,
    });

    let body: Bytes | ReadableStream<Bytes> | null = null;
    let chunked = false;
    const length = req.headers.get("content-length");
    if (length !== null) {
      const size = contentLength(length);
      fields.push(["content-length", String(size)]);
      if (size > 0 && size <= REPLAY_LIMIT) {
        try {
          body = new Uint8Array(await req.arrayBuffer());
        } catch {
          return plain(400, "request body ended early");
        }
      } else if (size > 0) {
        body = req.body;
      }
    } else if (req.body !== null) {
      // No length: the front decoded a chunked body; it goes on chunked (RFC 9112 §7.1).
      fields.push(["transfer-encoding", "chunked"]);
      body = req.body;
      chunked = true;
    }
    const replayable = !(body instanceof ReadableStream);
    const head = encodeLatin1(requestHead(req.method, target, fields));

    const limit = config.retries < 0 ? poolSize(pool) - 1 : config.retries;
    const avoid: number[] = [];
    let retries = 0;
    let freshTried = false;
    let failure: UpstreamError | null = null;
    while (true) {
      const slot = select(pool, avoid);
      const backend = slot < 0 ? undefined : backends[slot];
      if (backend === undefined) {
        if (failure) {
          return plain(statusForFailure(failure.kind), "bad gateway: no backend could answer");
        }
        return plain(STATUS_NO_BACKEND, "no backend available", [["retry-after", retryAfter]]);
      }
      let ended = false;
      const end = (failed: boolean) => {
        if (ended) return;
        ended = true;
        endRequest(pool, slot, failed);
      };
      const outgoing: OutgoingRequest = {
        method: req.method,
        head,
        body,
        chunked,
        onBodyEnd: (error) => {
          if (error !== undefined) {
            logLine(`backend ${backend.url} ${error} (${req.method} ${target})`);
          }
          end(error !== undefined);
        },
      };
      beginRequest(pool, slot, retries > 0);
      let response: UpstreamResponse;
      try {
        response = await roundTrip(upstreams, backend, outgoing);
      } catch (error) {
        end(true);
        if (!(error instanceof UpstreamError)) throw error;
        failure = error;
        if (!freshTried && retryFresh(error, req.method, replayable)) {
          freshTried = true;
          continue; // same backend, new connection: the idle one was closed under us
        }
        if (marksDown(error) && setAlive(pool, slot, false)) {
          logLine(`backend ${backend.url} DOWN: ${error.message}`);
        }
        if (retries < limit && canRetry(error, req.method, replayable)) {
          retries++;
          avoid.push(slot);
          continue;
        }
        logLine(
          `backend ${backend.url} ${error.kind} error: ${error.message} (${req.method} ${target})`,
        );
        return plain(
          statusForFailure(error.kind),
          statusForFailure(error.kind) === 504 ? "gateway timeout" : "bad gateway",
        );
      }
      if (!(response.body instanceof ReadableStream)) end(false);
      return toClient(response);
    }
  };
}

/** Statuses that must not carry content (Fetch "null body status"); `Response` rejects one. */
const NULL_BODY = new Set([101, 103, 204, 205, 304]);

function toClient(response: UpstreamResponse): Response {
  const { framing } = response;
  // Content-Length stays when it describes what the client gets: a length-framed body, or the
  // representation a HEAD or 304 response talks about (RFC 9110 §8.6).
  const keepLength = framing.kind === "length" || framing.kind === "none";
  const headers = forwardResponseHeaders(response.headers, keepLength);
  let body = response.body;
  if (NULL_BODY.has(response.status) && body !== null) {
    if (body instanceof ReadableStream) body.cancel().catch(() => {});
    body = null;
  }
  return new Response(body, { status: response.status, headers });
}
