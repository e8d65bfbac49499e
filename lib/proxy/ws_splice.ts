/**
 * The tunnel of a WebSocket on goround's own front: the client's connection and the backend's,
 * spliced byte for byte (RFC 6455 frames pass untouched: messages, pings, close codes), with a
 * frame tracker on each direction that sees the close frames go by, and finds the end of the
 * frame under way when a drain's deadline sends both sides a close frame 1001.
 *
 * @module
 */

import { writeAll } from "../http/conn_io.ts";
import { borrow, giveBack } from "../http/buffers.ts";
import { logLine } from "../log.ts";
import {
  CLOSE_BACKEND_GONE,
  CLOSE_GOING_AWAY,
  closePayload,
  GOING_AWAY,
  GOING_AWAY_GRACE,
  goingAwayLine,
  maskedFrame,
  OP_CLOSE,
  type SessionEnd,
} from "./ws_bridge.ts";

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
  /**
   * Reads the next bytes of the stream.
   *
   * @param bytes The bytes.
   * @param toBoundary Stop at the end of the frame under way (at once when between frames).
   * @returns How many bytes were read: all of them, unless it stopped at a boundary.
   */
  readonly feed: (bytes: Uint8Array, toBoundary?: boolean) => number;
  /** Whether a close frame has gone by. */
  readonly closed: () => boolean;
  /** The first close frame's code: 1005 when it had none, 0 before one passed. */
  readonly closeCode: () => number;
  /** Bytes read so far. */
  readonly bytes: () => number;
  /** Whether the bytes read so far end with a whole frame. */
  readonly atBoundary: () => boolean;
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
  const atBoundary = () => skip === 0 && header.length === 0;
  return {
    feed: (bytes, toBoundary = false) => {
      let i = 0;
      while (i < bytes.length) {
        if (toBoundary && atBoundary()) break;
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
      total += i;
      return i;
    },
    closed: () => code !== 0,
    closeCode: () => code,
    bytes: () => total,
    atBoundary,
  };
}

/** One direction of a tunnel: what `from` sends, on its way to `to`. */
interface Direction {
  readonly from: Deno.Conn;
  readonly to: Deno.Conn;
  /** The frames forwarded. */
  readonly frames: FrameTracker;
  /** The close frame `to` gets when the session goes away (masked toward the backend). */
  readonly farewell: Uint8Array;
  /** Told when the direction got nearer its end (a close seen, a farewell sent, its end). */
  readonly changed: () => void;
  /** Going away: forward to the end of the frame under way, then send the farewell. */
  away: boolean;
  /** A write to `to` is pending. */
  writing: boolean;
  /** `to` has a close frame (passed on or sent): what `from` sends now is dropped. */
  shut: boolean;
  /** The farewell's write, once begun. */
  sent: Promise<void>;
  /** The frames dropped after `shut` (whether `from` answered with its close). */
  readonly after: FrameTracker;
  /** `from` ended its stream. */
  ended: boolean;
}

function direction(
  from: Deno.Conn,
  to: Deno.Conn,
  options: { farewell: Uint8Array; changed: () => void },
): Direction {
  return {
    from,
    to,
    frames: frameTracker(),
    farewell: options.farewell,
    changed: options.changed,
    away: false,
    writing: false,
    shut: false,
    sent: Promise.resolve(),
    after: frameTracker(),
    ended: false,
  };
}

/** Whether `from` has said its close (or ended). */
function saidClose(d: Direction): boolean {
  return d.ended || d.frames.closed() || d.after.closed();
}

/** Sends the farewell once the direction is going away, between frames and not writing. */
function sendFarewell(d: Direction): void {
  if (d.shut || !d.away || d.writing || !d.frames.atBoundary()) return;
  d.shut = true;
  if (d.frames.closed()) return; // `to` has a close already
  d.sent = writeAll(d.to, d.farewell).catch(() => {});
  void d.sent.then(d.changed);
}

/** Passes one chunk on (or, once `to` has a close, drops it, watching for `from`'s close). */
async function forward(d: Direction, chunk: Uint8Array): Promise<void> {
  if (d.shut) {
    d.after.feed(chunk);
    d.changed();
    return;
  }
  const used = d.frames.feed(chunk, d.away);
  if (used > 0) {
    d.writing = true;
    try {
      await writeAll(d.to, used === chunk.length ? chunk : chunk.subarray(0, used));
    } finally {
      d.writing = false;
    }
  }
  if (!d.away) return;
  sendFarewell(d);
  if (used < chunk.length) d.after.feed(chunk.subarray(used));
  d.changed();
}

async function pipe(d: Direction, first: Uint8Array): Promise<void> {
  if (first.length > 0) await forward(d, first);
  // An idle tunnel waits with a small buffer (its pending read holds it); a read that fills it
  // means a burst, read on with a recycled body buffer until the reads are small again.
  const small = new Uint8Array(IDLE_READ);
  let buf = small;
  try {
    while (true) {
      const n = await d.from.read(buf);
      if (n === null) return;
      await forward(d, buf.subarray(0, n));
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

/** Who a tunnel joins, for its log lines, and when it must go away. */
export interface SpliceOptions {
  /** The client's address. */
  readonly client: string;
  /** The backend's URL. */
  readonly backend: string;
  /** The session's request id. */
  readonly requestId: string;
  /** Aborted at the drain's deadline: both sides are then sent 1001 (going away). */
  readonly goAway?: AbortSignal;
}

/**
 * Splices a client connection and a switched backend connection until either side ends. If
 * the backend's side ends without a close frame having passed to the client, the client gets
 * a close frame with 1011 (and it is logged). When `goAway` is aborted, each direction is
 * passed on to the end of the frame under way, then both sides get a close frame 1001 (one log
 * line); the session ends once both have answered with theirs, or after
 * {@linkcode GOING_AWAY_GRACE}.
 *
 * @param client The client connection and the bytes it sent after its handshake.
 * @param backend The backend connection and what it sent after its 101.
 * @param options Who the session joins, and the signal to go away.
 * @returns How the session ended: bytes each way and the close code.
 */
export async function splice(
  client: { conn: Deno.Conn; leftover: Uint8Array },
  backend: { conn: Deno.Conn; leftover: Uint8Array },
  options: SpliceOptions,
): Promise<SessionEnd> {
  let resolve!: (why: "client" | "backend" | "away") => void;
  const finished = new Promise<"client" | "backend" | "away">((done) => resolve = done);
  let over = false;
  const finish = (why: "client" | "backend" | "away") => {
    over = true;
    resolve(why);
  };
  let away = false;
  // In going away, the session is over once both sides said their close and got ours.
  const settle = () => {
    if (!away || !saidClose(up) || !saidClose(down)) return;
    void Promise.all([up.sent, down.sent]).then(() => finish("away"));
  };
  const up = direction(client.conn, backend.conn, {
    farewell: maskedFrame(OP_CLOSE, closePayload(CLOSE_GOING_AWAY, GOING_AWAY)),
    changed: settle,
  });
  const down = direction(backend.conn, client.conn, {
    farewell: closeFrame(CLOSE_GOING_AWAY, GOING_AWAY),
    changed: settle,
  });
  const ended = (d: Direction, why: "client" | "backend") => () => {
    d.ended = true;
    if (away) settle();
    else finish(why);
  };
  const upRun = pipe(up, client.leftover).catch(() => {}).finally(ended(up, "client"));
  const downRun = pipe(down, backend.leftover).catch(() => {}).finally(ended(down, "backend"));
  let grace: ReturnType<typeof setTimeout> | undefined;
  const goAway = () => {
    if (over || (up.frames.closed() && down.frames.closed())) return; // closing already
    away = true;
    logLine(goingAwayLine(options));
    grace = setTimeout(() => finish("away"), GOING_AWAY_GRACE);
    up.away = down.away = true;
    sendFarewell(up);
    sendFarewell(down);
    settle();
  };
  if (options.goAway?.aborted) goAway();
  else options.goAway?.addEventListener("abort", goAway, { once: true });
  const first = await finished;
  options.goAway?.removeEventListener("abort", goAway);
  clearTimeout(grace);
  let gone = false;
  if (first === "backend" && !down.frames.closed()) {
    gone = true;
    logLine(
      `websocket: backend ${options.backend} went away without closing; closing the client with ${CLOSE_BACKEND_GONE}`,
    );
    await writeAll(client.conn, closeFrame(CLOSE_BACKEND_GONE, "backend went away")).catch(
      () => {},
    );
  }
  closeQuietly(backend.conn);
  closeQuietly(client.conn);
  await Promise.all([upRun, downRun]);
  // The code of whichever side closed first; 1006 when neither closed properly.
  const code = gone
    ? CLOSE_BACKEND_GONE
    : up.frames.closeCode() || down.frames.closeCode() || (away ? CLOSE_GOING_AWAY : 1006);
  return { bytesIn: up.frames.bytes(), bytesOut: down.frames.bytes(), closeCode: code };
}
