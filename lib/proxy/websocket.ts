/**
 * WebSocket proxying (RFC 6455). The upgrade request goes through the same backend selection
 * as any request, on a fresh backend connection. goround's own front then splices the two TCP
 * connections byte for byte (messages, pings and close frames pass untouched); under
 * `Deno.serve` (`--engine deno`, TLS), the same handshake is made, and messages are relayed
 * between the client's WebSocket and the backend's frames (`ws_bridge.ts`). Either way, a
 * refused handshake reaches the client as the backend answered it, and a backend that dies
 * without a close frame closes the client's socket with 1011.
 *
 * @module
 */

import { writeAll } from "../http/conn_io.ts";
import { borrow, giveBack } from "../http/buffers.ts";
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
  localReply,
  loopDetected,
  nextRequestId,
  type ProxyContext,
  type Reply,
} from "./forward.ts";
import { marksDown } from "./retry.ts";
import { createPicker, type Picker } from "./pick.ts";
import { type Switched, upgrade } from "../upstream/client.ts";
import { bridge, CLOSE_BACKEND_GONE, type SessionEnd } from "./ws_bridge.ts";

export { CLOSE_BACKEND_GONE };

/** What each direction of an idle tunnel reads with, bytes (a message of a chat or a game fits;
 * a longer burst is read with body buffers). */
const IDLE_READ = 1024;

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
 * A close frame as a server sends it (unmasked): FIN, opcode 8, the code, the reason.
 *
 * @param code The close code.
 * @param reason A short reason (at most 123 bytes of UTF-8).
 * @returns The frame's bytes.
 */
export function closeFrame(code: number, reason: string): Uint8Array {
  const text = new TextEncoder().encode(reason).subarray(0, 123);
  const frame = new Uint8Array(4 + text.length);
  frame[0] = 0x88;
  frame[1] = 2 + text.length;
  frame[2] = code >> 8;
  frame[3] = code & 0xff;
  frame.set(text, 4);
  return frame;
}

/** Follows the frames in one direction of a WebSocket: whether a close frame passed, with
 * which code, and how many bytes went by. */
export interface FrameTracker {
  /** Reads the next bytes of the stream. */
  readonly feed: (bytes: Uint8Array) => void;
  /** Whether a close frame has gone by. */
  readonly closed: () => boolean;
  /** The first close frame's code: 1005 when it had none, 0 before one passed. */
  readonly closeCode: () => number;
  /** Bytes fed so far. */
  readonly bytes: () => number;
}

/**
 * Creates a frame tracker (RFC 6455 §5.2 framing: a 2-byte header, an extended length of 2 or
 * 8 bytes, a 4-byte mask when masked, then the payload; a close frame's payload starts with its
 * code, masked like the rest from a client).
 *
 * @returns The tracker.
 */
export function frameTracker(): FrameTracker {
  let header: number[] = [];
  let skip = 0;
  let total = 0;
  let code = 0;
  // Payload bytes of the first close frame still to read for its code, its mask, what is read.
  let codeLeft = 0;
  let mask: number[] = [];
  let codeBytes: number[] = [];
  const needed = (): number => {
    if (header.length < 2) return 2;
    const len = header[1]! & 0x7f;
    const masked = (header[1]! & 0x80) !== 0;
    return 2 + (len === 126 ? 2 : len === 127 ? 8 : 0) + (masked ? 4 : 0);
  };
  return {
    feed: (bytes) => {
      total += bytes.length;
      let i = 0;
      while (i < bytes.length) {
        if (skip > 0) {
          while (codeLeft > 0 && i < bytes.length) {
            codeBytes.push(bytes[i++]! ^ (mask[codeBytes.length] ?? 0));
            codeLeft--;
            skip--;
            if (codeLeft === 0) code = (codeBytes[0]! << 8) | codeBytes[1]!;
          }
          const take = Math.min(skip, bytes.length - i);
          skip -= take;
          i += take;
          continue;
        }
        header.push(bytes[i++]!);
        if (header.length < needed()) continue;
        const len7 = header[1]! & 0x7f;
        let length = len7;
        if (len7 === 126) length = (header[2]! << 8) | header[3]!;
        if (len7 === 127) {
          length = 0;
          for (let b = 2; b < 10; b++) length = length * 256 + header[b]!;
        }
        if ((header[0]! & 0x0f) === 0x8 && code === 0) {
          code = 1005;
          if (length >= 2) {
            codeLeft = 2;
            codeBytes = [];
            mask = (header[1]! & 0x80) !== 0 ? header.slice(-4) : [];
          }
        }
        skip = length;
        header = [];
      }
    },
    closed: () => code !== 0,
    closeCode: () => code,
    bytes: () => total,
  };
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
  }
  | { readonly kind: "reply"; readonly reply: Reply };

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
    const slot = queued ? await next : next;
    if (slot < 0) return;
    const backend = context.backends[slot];
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
  const picker = createPicker(context.pool, context.config, context.backends);
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

async function pipe(
  from: Deno.Conn,
  to: Deno.Conn,
  first: Uint8Array,
  watch: FrameTracker,
): Promise<void> {
  if (first.length > 0) {
    watch.feed(first);
    await writeAll(to, first);
  }
  // An idle tunnel waits with a small buffer (its pending read holds it); a read that fills it
  // means a burst, read on with a recycled body buffer until the reads are small again.
  const small = new Uint8Array(IDLE_READ);
  let buf = small;
  try {
    while (true) {
      const n = await from.read(buf);
      if (n === null) return;
      const chunk = buf.subarray(0, n);
      watch.feed(chunk);
      await writeAll(to, chunk);
      if (buf === small && n === small.length) {
        buf = borrow();
      } else if (buf !== small && n < small.length) {
        giveBack(buf);
        buf = small;
      }
    }
  } finally {
    if (buf !== small) giveBack(buf); // no read or write is pending into it any more
  }
}

function closeQuietly(conn: Deno.Conn): void {
  try {
    conn.close();
  } catch {
    // Closed already.
  }
}

/**
 * Splices a client connection and a switched backend connection until either side ends. If
 * the backend's side ends without a close frame having passed to the client, the client gets
 * a close frame with 1011 (and it is logged).
 *
 * @param client The client connection and the bytes it sent after its handshake.
 * @param backend The backend connection and what it sent after its 101.
 * @param name The backend's URL, for the log.
 * @returns How the session ended: bytes each way and the close code.
 */
export async function splice(
  client: { conn: Deno.Conn; leftover: Uint8Array },
  backend: { conn: Deno.Conn; leftover: Uint8Array },
  name: string,
): Promise<SessionEnd> {
  const fromClient = frameTracker();
  const fromBackend = frameTracker();
  const up = pipe(client.conn, backend.conn, client.leftover, fromClient).catch(() => {});
  const down = pipe(backend.conn, client.conn, backend.leftover, fromBackend).then(
    () => "ended" as const,
    () => "broke" as const,
  );
  const first = await Promise.race([up.then(() => "client" as const), down]);
  let gone = false;
  if (first !== "client" && !fromBackend.closed()) {
    gone = true;
    logLine(
      `websocket: backend ${name} went away without closing; closing the client with ${CLOSE_BACKEND_GONE}`,
    );
    await writeAll(client.conn, closeFrame(CLOSE_BACKEND_GONE, "backend went away")).catch(
      () => {},
    );
  }
  closeQuietly(backend.conn);
  closeQuietly(client.conn);
  await Promise.all([up, down]);
  // The code of whichever side closed first; 1006 when neither closed properly.
  const code = gone
    ? CLOSE_BACKEND_GONE
    : fromClient.closeCode() || fromBackend.closeCode() || 1006;
  return { bytesIn: fromClient.bytes(), bytesOut: fromBackend.bytes(), closeCode: code };
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
 * @returns The response that completes the client's handshake, or the reply to send instead.
 */
export async function relayWebSocket(
  upgrader: Upgrader,
  req: Request,
  incoming: Incoming,
  ended?: (end: SessionEnd, backend: Backend, requestId: string) => void,
): Promise<Response | Reply> {
  const outcome = await upgrader(incoming);
  if (outcome.kind === "reply") return outcome.reply;
  const { switched, backend, requestId, done } = outcome;
  const protocol = switched.headers.find(([name]) => name === "sec-websocket-protocol")?.[1];
  const { socket, response } = Deno.upgradeWebSocket(req, protocol ? { protocol } : {});
  bridge(socket, switched, {
    done: (end) => {
      done();
      ended?.(end, backend, requestId);
    },
    gone: () =>
      logLine(
        `websocket: backend ${backend.url} went away without closing; closing the client with ${CLOSE_BACKEND_GONE}`,
      ),
  });
  response.headers.set("x-request-id", requestId);
  return response;
}
