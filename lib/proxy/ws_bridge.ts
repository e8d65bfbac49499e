/**
 * Joins a client's WebSocket, as `Deno.serve` upgrades it (messages), to a backend connection
 * that switched protocols on goround's own handshake (RFC 6455 frames). `Deno.serve` hands no
 * raw connection over, so the frames are read and written here: goround is the backend's
 * client, and masks what it sends (§5.3).
 *
 * @module
 */

import { writeAll } from "../http/conn_io.ts";
import { joinParts } from "../http/streaming.ts";
import { describeError } from "../errors.ts";
import { logLine } from "../log.ts";

/** Close code for a backend that went away without closing properly (RFC 6455 §7.4.1). */
export const CLOSE_BACKEND_GONE = 1011;
/** Close code for a server going away: a drain's deadline (§7.4.1). */
export const CLOSE_GOING_AWAY = 1001;
/** The reason sent with {@linkcode CLOSE_GOING_AWAY}. */
export const GOING_AWAY = "going away";
/** How long, after a drain's deadline sent both sides a close, they have to answer with theirs
 * before their connections are closed, ms. */
export const GOING_AWAY_GRACE = 1000;
/** Close code for a message too big to process (§7.4.1). */
const CLOSE_TOO_BIG = 1009;
/** Close code for a text message that is not UTF-8 (§7.4.1). */
const CLOSE_BAD_DATA = 1007;
/** Close code for a frame that breaks the protocol (§7.4.1). */
const CLOSE_PROTOCOL = 1002;
/** The longest message relayed; a longer one ends the session with 1009. */
export const MAX_MESSAGE = 64 * 1024 * 1024;

const OP_CONTINUATION = 0x0;
const OP_TEXT = 0x1;
const OP_BINARY = 0x2;
/** The opcode of a close frame (§5.5.1). */
export const OP_CLOSE = 0x8;
const OP_PING = 0x9;
const OP_PONG = 0xa;

/**
 * A frame as a client sends it: FIN, `opcode`, masked with a fresh key (RFC 6455 §5.2, §5.3).
 *
 * @param opcode The frame's opcode.
 * @param payload Its payload.
 * @returns The frame's bytes.
 * @example
 * ```ts
 * import { maskedFrame } from "./ws_bridge.ts";
 * maskedFrame(0x1, new TextEncoder().encode("hi")).length; // 2 + 4 + 2
 * ```
 */
export function maskedFrame(opcode: number, payload: Uint8Array): Uint8Array {
  const n = payload.length;
  const extra = n < 126 ? 0 : n < 65536 ? 2 : 8;
  const frame = new Uint8Array(2 + extra + 4 + n);
  frame[0] = 0x80 | opcode;
  if (extra === 0) frame[1] = 0x80 | n;
  else if (extra === 2) {
    frame[1] = 0x80 | 126;
    frame[2] = n >> 8;
    frame[3] = n & 0xff;
  } else {
    frame[1] = 0x80 | 127;
    new DataView(frame.buffer).setBigUint64(2, BigInt(n));
  }
  const at = 2 + extra;
  const key = crypto.getRandomValues(frame.subarray(at, at + 4));
  for (let i = 0; i < n; i++) frame[at + 4 + i] = payload[i]! ^ key[i & 3]!;
  return frame;
}

/** One frame read from the backend. */
export interface Frame {
  /** Whether it ends its message. */
  readonly fin: boolean;
  /** Its opcode (RFC 6455 §5.2). */
  readonly opcode: number;
  /** Its payload, unmasked. */
  readonly payload: Uint8Array;
}

/**
 * Takes the complete frames at the start of `bytes`.
 *
 * @param bytes What has arrived and is not yet taken.
 * @returns The frames and how many bytes they used; `null` for a frame longer than
 *   {@linkcode MAX_MESSAGE}.
 * @example
 * ```ts
 * import { takeFrames } from "./ws_bridge.ts";
 * takeFrames(new Uint8Array([0x81, 2, 104, 105]))?.frames[0]?.opcode; // 1
 * ```
 */
export function takeFrames(bytes: Uint8Array): { frames: Frame[]; used: number } | null {
  const frames: Frame[] = [];
  let at = 0;
  while (bytes.length - at >= 2) {
    const b0 = bytes[at]!;
    const b1 = bytes[at + 1]!;
    const len7 = b1 & 0x7f;
    const masked = (b1 & 0x80) !== 0;
    let head = 2 + (len7 === 126 ? 2 : len7 === 127 ? 8 : 0);
    if (bytes.length - at < head) break;
    let length = len7;
    const view = new DataView(bytes.buffer, bytes.byteOffset + at);
    if (len7 === 126) length = view.getUint16(2);
    if (len7 === 127) length = Number(view.getBigUint64(2));
    if (length > MAX_MESSAGE) return null;
    const keyAt = at + head;
    if (masked) head += 4;
    if (bytes.length - at < head + length) break;
    const payload = bytes.slice(at + head, at + head + length);
    if (masked) {
      for (let i = 0; i < payload.length; i++) payload[i]! ^= bytes[keyAt + (i & 3)]!;
    }
    frames.push({ fin: (b0 & 0x80) !== 0, opcode: b0 & 0x0f, payload });
    at += head + length;
  }
  return { frames, used: at };
}

/** A close code the client side may be sent (1005, 1006 and 1015 are never sent; §7.4.1). */
export function sendable(code: number): number {
  if (code === 1000 || (code >= 1001 && code <= 1003) || (code >= 1007 && code <= 1014)) {
    return code;
  }
  return code >= 3000 && code <= 4999 ? code : 1000;
}

/** How a WebSocket session ended. */
export interface SessionEnd {
  /** Bytes from the client to the backend (frames, as they crossed goround). */
  readonly bytesIn: number;
  /** Bytes from the backend to the client. */
  readonly bytesOut: number;
  /** The close code of the side that closed first (1005: none given; 1006: no close). */
  readonly closeCode: number;
}

/**
 * The one line a session logs when a drain's deadline ends it.
 *
 * @param session The client's address, the backend's URL and the session's request id.
 * @returns The line.
 */
export function goingAwayLine(
  session: { readonly client: string; readonly backend: string; readonly requestId: string },
): string {
  return `websocket: drain deadline: closing the session of client ${session.client} with backend ${session.backend} (id ${session.requestId}): ${CLOSE_GOING_AWAY} ${GOING_AWAY} to the client and the backend`;
}

/** What the bridge tells its owner. */
export interface BridgeHooks {
  /** The session is over (both sides closed), and how it ended. */
  readonly done: (end: SessionEnd) => void;
  /** The backend ended the stream without a close frame. */
  readonly gone: () => void;
  /** A drain's deadline closes the session: both sides are being sent 1001. */
  readonly goingAway?: () => void;
}

/**
 * Relays messages both ways between `front` and the backend connection `back` until either
 * closes; close codes and reasons are passed on, and a backend that just goes away closes the
 * client with {@linkcode CLOSE_BACKEND_GONE}. When `goAway` is aborted, both sides are sent
 * 1001 (going away); the session ends once both have answered, or after
 * {@linkcode GOING_AWAY_GRACE}.
 *
 * @param front The client's socket, from `Deno.upgradeWebSocket`.
 * @param back The switched backend connection, and bytes it sent after its 101.
 * @param hooks Told of the end.
 * @param options `goAway`: aborted at a drain's deadline.
 */
export function bridge(
  front: WebSocket,
  back: { readonly conn: Deno.Conn; readonly leftover: Uint8Array },
  hooks: BridgeHooks,
  options: { readonly goAway?: AbortSignal } = {},
): void {
  const { conn } = back;
  let writing: Promise<unknown> = Promise.resolve();
  let closeSent = false;
  let ended = false;
  const counts = { bytesIn: 0, bytesOut: back.leftover.length };
  // The code of the side that closed first.
  let closeCode = 0;
  // Going away: the session ends once both sides have answered our close (or at the grace).
  let away = false;
  let frontClosed = false;
  let backClosed = false;
  let grace: ReturnType<typeof setTimeout> | undefined;
  const end = (code: number) => {
    if (ended) return;
    ended = true;
    closeCode = away ? CLOSE_GOING_AWAY : code;
    clearTimeout(grace);
    options.goAway?.removeEventListener("abort", goAway);
    writing.finally(() => {
      try {
        conn.close();
      } catch { /* already closed */ }
      try {
        hooks.done({ bytesIn: counts.bytesIn, bytesOut: counts.bytesOut, closeCode });
      } catch (error) {
        // A hook's bug must not end the worker (this runs outside any request).
        logLine(`internal error after a WebSocket session: ${describeError(error)}`);
      }
    });
  };
  const send = (opcode: number, payload: Uint8Array) => {
    if (closeSent) return;
    if (opcode === OP_CLOSE) closeSent = true;
    const frame = maskedFrame(opcode, payload);
    counts.bytesIn += frame.length;
    writing = writing.then(() => writeAll(conn, frame)).catch(() => {});
  };
  const closeFront = (code: number, reason: string) => {
    if (front.readyState <= WebSocket.OPEN) front.close(sendable(code), reason);
  };
  const closeBoth = (code: number, reason: string) => {
    send(OP_CLOSE, closePayload(code, reason));
    closeFront(code, reason);
    end(code);
  };
  const answered = (side: "front" | "back") => {
    if (side === "front") frontClosed = true;
    else backClosed = true;
    if (frontClosed && backClosed) end(CLOSE_GOING_AWAY);
  };
  function goAway() {
    if (ended) return;
    away = true;
    hooks.goingAway?.();
    send(OP_CLOSE, closePayload(CLOSE_GOING_AWAY, GOING_AWAY));
    closeFront(CLOSE_GOING_AWAY, GOING_AWAY);
    grace = setTimeout(() => end(CLOSE_GOING_AWAY), GOING_AWAY_GRACE);
  }
  if (options.goAway?.aborted) queueMicrotask(goAway);
  else options.goAway?.addEventListener("abort", goAway, { once: true });
  front.binaryType = "arraybuffer";
  const queued: (string | ArrayBuffer)[] = [];
  const forward = (data: string | ArrayBuffer) =>
    typeof data === "string"
      ? send(OP_TEXT, new TextEncoder().encode(data))
      : send(OP_BINARY, new Uint8Array(data));
  // Until the client's side is open, its messages cannot come; the backend's wait for it.
  const toFront = (data: string | ArrayBuffer) => {
    if (front.readyState === WebSocket.OPEN) front.send(data);
    else if (front.readyState === WebSocket.CONNECTING) queued.push(data);
  };
  front.onopen = () => {
    for (const data of queued.splice(0)) front.send(data);
  };
  front.onmessage = (event) => forward(event.data);
  front.onclose = (event) => {
    if (away) return answered("front");
    send(OP_CLOSE, closePayload(sendable(event.code), event.reason));
    end(event.code);
  };
  front.onerror = () => {};
  readBackend(conn, back.leftover, counts, {
    message: toFront,
    ping: (payload) => send(OP_PONG, payload),
    close: (code, reason) => {
      if (away) return answered("back");
      send(OP_CLOSE, closePayload(code === 1005 ? 1000 : code, reason));
      closeFront(code, reason);
      end(code);
    },
    broken: (code, reason) => away ? answered("back") : closeBoth(code, reason),
    gone: () => {
      if (away) return answered("back");
      if (!ended && front.readyState <= WebSocket.OPEN) {
        hooks.gone();
        closeFront(CLOSE_BACKEND_GONE, "backend went away");
      }
      end(CLOSE_BACKEND_GONE);
    },
  });
}

/** What the backend's frames come to. */
interface BackendEvents {
  readonly message: (data: string | ArrayBuffer) => void;
  readonly ping: (payload: Uint8Array) => void;
  readonly close: (code: number, reason: string) => void;
  readonly broken: (code: number, reason: string) => void;
  readonly gone: () => void;
}

/** Reads the backend's frames and reassembles its messages (§5.4) until the stream ends. */
async function readBackend(
  conn: Deno.Conn,
  leftover: Uint8Array,
  counts: { bytesOut: number },
  on: BackendEvents,
): Promise<void> {
  let pending: Uint8Array = leftover.slice();
  const parts: Uint8Array[] = [];
  let partsLength = 0;
  let messageOp = 0;
  const text = new TextDecoder("utf-8", { fatal: true });
  const buf = new Uint8Array(16 * 1024);
  while (true) {
    const taken = takeFrames(pending);
    if (taken === null) return on.broken(CLOSE_TOO_BIG, "message too big");
    pending = pending.subarray(taken.used);
    for (const frame of taken.frames) {
      if (frame.opcode === OP_CLOSE) {
        const code = frame.payload.length >= 2
          ? (frame.payload[0]! << 8) | frame.payload[1]!
          : 1005;
        const reason = frame.payload.length > 2 ? safeText(frame.payload.subarray(2)) : "";
        return on.close(code, reason);
      }
      if (frame.opcode === OP_PING) on.ping(frame.payload);
      if (frame.opcode === OP_PONG || frame.opcode >= OP_CLOSE) continue;
      if (frame.opcode !== OP_CONTINUATION) messageOp = frame.opcode;
      if (messageOp !== OP_TEXT && messageOp !== OP_BINARY) {
        return on.broken(CLOSE_PROTOCOL, "unexpected frame");
      }
      parts.push(frame.payload);
      partsLength += frame.payload.length;
      if (partsLength > MAX_MESSAGE) return on.broken(CLOSE_TOO_BIG, "message too big");
      if (!frame.fin) continue;
      // A buffer of its own, even for one part: a binary message hands on its `.buffer`.
      const whole = joinParts(parts.splice(0), false);
      partsLength = 0;
      if (messageOp === OP_BINARY) on.message(whole.buffer as ArrayBuffer);
      else {
        try {
          on.message(text.decode(whole));
        } catch {
          return on.broken(CLOSE_BAD_DATA, "text message is not UTF-8");
        }
      }
    }
    // Read until the next frame is whole, then join once (a large message is not copied at
    // every read).
    const need = frameNeed(pending);
    const more: Uint8Array[] = [pending];
    let have = pending.length;
    while (have < need) {
      let n: number | null;
      try {
        n = await conn.read(buf);
      } catch {
        n = null;
      }
      if (n === null) return on.gone();
      counts.bytesOut += n;
      more.push(buf.slice(0, n));
      have += n;
    }
    pending = joinParts(more, false);
  }
}

/** Bytes the frame at the start of `bytes` needs in all (its head first, when incomplete). */
function frameNeed(bytes: Uint8Array): number {
  if (bytes.length < 2) return 2;
  const len7 = bytes[1]! & 0x7f;
  const head = 2 + (len7 === 126 ? 2 : len7 === 127 ? 8 : 0) + ((bytes[1]! & 0x80) ? 4 : 0);
  if (bytes.length < head - ((bytes[1]! & 0x80) ? 4 : 0)) return head;
  const view = new DataView(bytes.buffer, bytes.byteOffset);
  const length = len7 === 126
    ? view.getUint16(2)
    : len7 === 127
    ? Number(view.getBigUint64(2))
    : len7;
  return head + (length > MAX_MESSAGE ? 0 : length);
}

function safeText(bytes: Uint8Array): string {
  return new TextDecoder().decode(bytes);
}

/**
 * A close frame's payload: the code, then the reason (at most 123 bytes of UTF-8; §5.5.1).
 *
 * @param code The close code.
 * @param reason The reason.
 * @returns The payload.
 */
export function closePayload(code: number, reason: string): Uint8Array {
  const text = new TextEncoder().encode(reason).subarray(0, 123);
  const payload = new Uint8Array(2 + text.length);
  payload[0] = code >> 8;
  payload[1] = code & 0xff;
  payload.set(text, 2);
  return payload;
}
