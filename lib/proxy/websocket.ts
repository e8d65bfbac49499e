/**
 * WebSocket proxying (RFC 6455). The upgrade request goes through the same backend selection
 * as any request, on a fresh backend connection. goround's own front then splices the two TCP
 * connections byte for byte (`ws_splice.ts`: messages, pings and close frames pass untouched); under
 * `Deno.serve` (`--engine deno`, TLS), the same handshake is made, and messages are relayed
 * between the client's WebSocket and the backend's frames (`ws_bridge.ts`). Either way, a
 * refused handshake reaches the client as the backend answered it, and a backend that dies
 * without a close frame closes the client's socket with 1011. A drain lets sessions run until
 * its deadline, which sends both sides 1001 (going away).
 *
 * @module
 */

import type { Backend } from "../config/config.ts";
import { UpstreamError } from "../errors.ts";
import { connectionTokens, forwardRequestFields } from "../http/headers.ts";
import { requestHead } from "../http/http1.ts";
import { logLine } from "../log.ts";
import { viaEntry } from "./via.ts";
import { beginRequest, endRequest, setAlive } from "../balance/pool.ts";
import {
  forwardContext,
  type Incoming,
  type LocalReply,
  localReply,
  loopDetected,
  nextRequestId,
  type ProxyContext,
  type Reply,
} from "./forward.ts";
import { marksDown } from "./retry.ts";
import { createPicker, type Picker, Retired } from "./pick.ts";
import { type Switched, upgrade } from "../upstream/client.ts";
import { bridge, CLOSE_BACKEND_GONE, goingAwayLine, type SessionEnd } from "./ws_bridge.ts";

export { CLOSE_BACKEND_GONE };

/**
 * Whether a request asks to switch to WebSocket: `GET` with `Upgrade: websocket` and
 * `Connection: upgrade` (RFC 6455 §4.1).
 *
 * @param method The method.
 * @param headers The request's fields, names lowercased.
 * @returns `true` for a WebSocket handshake.
 */
export function isWebSocketUpgrade(
  method: string,
  headers: Iterable<readonly [string, string]>,
): boolean {
  if (method !== "GET") return false;
  let upgrades = false;
  let connection = false;
  for (const [name, value] of headers) {
    if (name === "upgrade" && connectionTokens(value).includes("websocket")) upgrades = true;
    if (name === "connection" && connectionTokens(value).includes("upgrade")) connection = true;
  }
  return upgrades && connection;
}

/**
 * The answer to a WebSocket handshake while draining (503, `Retry-After: 1`): a session would
 * be cut at the drain's deadline, and the client's retry reaches a process that stays.
 *
 * @returns The reply.
 */
export function drainingRefusal(): LocalReply {
  return localReply(503, "shutting down", [["retry-after", "1"]]);
}

/** What an upgrade attempt came to. */
export type UpgradeOutcome =
  | {
    readonly kind: "switched";
    readonly switched: Switched;
    readonly backend: Backend;
    readonly requestId: string;
    /** Call when the tunnel is over (ends the in-flight count). */
    readonly done: () => void;
    /** The route and pool it was routed to (with routes), for the session's log line. */
    readonly routed?: Incoming["routed"];
  }
  | { readonly kind: "reply"; readonly reply: Reply };

/** Told how a relayed session ended, with its backend, request id and route. */
export type SessionEnded = (
  end: SessionEnd,
  backend: Backend,
  requestId: string,
  routed?: Incoming["routed"],
) => void;

/** Opens the backend side of a WebSocket. */
export type Upgrader = (incoming: Incoming) => Promise<UpgradeOutcome>;

/**
 * The request fields to send upstream for a WebSocket handshake: the usual forwarding rules
 * (underscore names dropped as for any request), plus `Upgrade` and `Connection`, which are
 * hop-by-hop but must reach the backend here.
 *
 * @returns The fields, or `null` for a handshake that came round a loop (see `proxy/via.ts`).
 */
function handshakeFields(
  context: ProxyContext,
  incoming: Incoming,
  requestId: string,
  bridged: boolean,
): [string, string][] | null {
  const fields: [string, string][] = [];
  const via = viaEntry(context.config.instanceId);
  const looped = forwardRequestFields(
    incoming.headers,
    forwardContext(context.config, incoming, via),
    (name, value) => {
      // A bridge relays messages, not frames: it could not undo a compression (RFC 7692).
      if (!(bridged && name === "sec-websocket-extensions")) fields.push([name, value]);
    },
  );
  if (looped) return null;
  fields.push(["x-request-id", requestId], ["upgrade", "websocket"], ["connection", "upgrade"]);
  return fields;
}

/**
 * The backends to try a WebSocket handshake on, in order, through the same picker as any
 * request (sticky pin, `--hash-key`, the `--max-conns` queue, panic), moving on when one cannot
 * be reached (a handshake has no body, so that is always safe).
 *
 * @param context The worker's proxy context.
 * @param picker The worker's picker.
 * @param incoming The handshake request.
 * @returns Each slot and backend, already counted as in flight.
 */
async function* candidates(
  context: ProxyContext,
  picker: Picker,
  incoming: Incoming,
): AsyncGenerator<{ slot: number; backend: Backend }> {
  const selection = picker.start(incoming);
  let retry = false;
  while (true) {
    const next = picker.next(selection, retry);
    const queued = typeof next !== "number";
    // A handshake queued in a core a change replaced gets no backend (a 503; the client retries).
    const slot = queued ? await next.catch(noneIfRetired) : next;
    if (slot < 0) return;
    const backend = picker.backendOf(slot);
    if (backend === undefined) {
      if (queued) endRequest(context.pool, slot, false);
      selection.avoid.push(slot); // a member this worker has not been told about yet
      continue;
    }
    // A slot from the queue is counted already.
    if (!queued) beginRequest(context.pool, slot, retry);
    selection.avoid.push(slot);
    retry = true;
    yield { slot, backend };
  }
}

function noneIfRetired(error: unknown): number {
  if (error instanceof Retired) return -1;
  throw error;
}

/**
 * The upgrader for goround's own front: the handshake goes to a backend on a fresh connection,
 * and a 101 hands that connection over for splicing.
 *
 * @param context The worker's proxy context.
 * @param options `bridged`: for `Deno.serve`'s relay, which needs a handshake without
 *   extensions.
 * @returns The upgrader.
 */
export function createUpgrader(
  context: ProxyContext,
  options: { readonly bridged?: boolean } = {},
): Upgrader {
  const bridged = options.bridged ?? false;
  const picker = createPicker(
    context.pool,
    context.config,
    context.backends,
    context.tenants,
    context.retired,
  );
  return async (incoming) => {
    const requestId = nextRequestId();
    const fields = handshakeFields(context, incoming, requestId, bridged);
    if (fields === null) {
      const reply = loopDetected(viaEntry(context.config.instanceId), requestId);
      return { kind: "reply", reply };
    }
    const head = requestHead("GET", incoming.target, fields);
    let failure: UpstreamError | null = null;
    for await (const { slot, backend } of candidates(context, picker, incoming)) {
      try {
        const result = await upgrade(context.upstreams, backend, {
          method: "GET",
          head,
          body: null,
          chunked: false,
        });
        if (result.kind === "response") {
          endRequest(context.pool, slot, false);
          return { kind: "reply", reply: { kind: "upstream", response: result.response } };
        }
        let ended = false;
        const done = () => {
          if (!ended) endRequest(context.pool, slot, false);
          ended = true;
        };
        return { kind: "switched", switched: result.switched, backend, requestId, done };
      } catch (error) {
        endRequest(context.pool, slot, true);
        if (!(error instanceof UpstreamError)) throw error;
        failure = error;
        if (marksDown(error) && setAlive(context.pool, slot, false)) {
          context.onDown?.(slot, backend, error.message);
        }
        if (error.sent) break; // the backend saw the handshake: do not send it twice
      }
    }
    if (failure) return { kind: "reply", reply: localReply(502, "bad gateway") };
    return { kind: "reply", reply: localReply(503, "no backend available") };
  };
}

/** The handshake's own fields, and framing, which `Deno.upgradeWebSocket` makes itself. */
const HANDSHAKE_FIELDS =
  /^(?:upgrade|connection|sec-websocket-.*|content-length|transfer-encoding|keep-alive)$/;

/** The backend's other 101 fields (`Set-Cookie`, a route's `set` rules) onto the client's 101,
 * as goround's own front sends them. */
function copyBackendFields(from: readonly [string, string][], to: Headers): void {
  for (const [name, value] of from) {
    if (HANDSHAKE_FIELDS.test(name)) continue;
    try {
      to.append(name, value);
    } catch {
      // A value Headers refuses is left out, as a field it cannot carry.
    }
  }
}

/**
 * The `Deno.serve` front's WebSocket relay: the handshake goes to a backend through the same
 * upgrader as on goround's own front (so a refusal such as 403 reaches the client as it was,
 * and only an unreachable backend counts against it); a 101 upgrades the client, and
 * `ws_bridge.ts` relays messages both ways, close codes included.
 *
 * @param upgrader An upgrader made with `bridged: true` (no extension is negotiated).
 * @param req The client's handshake request.
 * @param incoming The same request as the proxy core sees it.
 * @param ended Told how the session ended, once it has.
 * @param goAway Aborted at a drain's deadline: the session is then closed with 1001.
 * @returns The response that completes the client's handshake, or the reply to send instead.
 */
export async function relayWebSocket(
  upgrader: Upgrader,
  req: Request,
  incoming: Incoming,
  ended?: SessionEnded,
  goAway?: AbortSignal,
): Promise<Response | Reply> {
  const outcome = await upgrader(incoming);
  if (outcome.kind === "reply") return outcome.reply;
  const { switched, backend, requestId, done, routed } = outcome;
  const protocol = switched.headers.find(([name]) => name === "sec-websocket-protocol")?.[1];
  const { socket, response } = Deno.upgradeWebSocket(req, protocol ? { protocol } : {});
  copyBackendFields(switched.headers, response.headers);
  bridge(socket, switched, {
    done: (end) => {
      done();
      ended?.(end, backend, requestId, routed);
    },
    gone: () =>
      logLine(
        `websocket: backend ${backend.url} went away without closing; closing the client with ${CLOSE_BACKEND_GONE}`,
      ),
    goingAway: () =>
      logLine(goingAwayLine({ client: incoming.clientIp, backend: backend.url, requestId })),
  }, goAway ? { goAway } : {});
  response.headers.set("x-request-id", requestId);
  return response;
}
