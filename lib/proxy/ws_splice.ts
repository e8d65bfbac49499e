/**
 * The tunnel of a WebSocket on goround's own front: the client's connection and the backend's,
 * spliced byte for byte (RFC 6455 frames pass untouched: messages, pings, close codes), with a
 * frame tracker on each direction that sees the close frames go by.
 *
 * @module
 */

import { writeAll } from "../http/conn_io.ts";
import { borrow, giveBack } from "../http/buffers.ts";
import { logLine } from "../log.ts";
import { CLOSE_BACKEND_GONE, type SessionEnd } from "./ws_bridge.ts";

/** What each direction of an idle tunnel reads with, bytes (a message of a chat or a game fits;
 * a longer burst is read with body buffers). */
const IDLE_READ = 1024;

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
