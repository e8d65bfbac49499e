/**
 * Streaming request bodies to a backend.
 *
 * The body a client uploads is read *ahead* of the writes to the backend, into a bounded queue,
 * and everything queued goes out in one write. Reading in lock-step with the writes (read a
 * chunk, await its write, read the next) lets the front connection's buffer fill up while a
 * write is pending, and Deno's HTTP server then spends milliseconds of CPU per chunk of a
 * chunked upload. The queue is bounded, so memory stays flat whatever the body size.
 *
 * Writes go out in batches ({@linkcode batches}): parts are joined, and chunk-framed where
 * the body is sent chunked, into recycled buffers (`buffers.ts`), so a body costs no fresh
 * allocation per write; a large part sent as is goes out without a copy.
 *
 * @module
 */

import { BODY_BUFFER, borrow, footprint } from "./buffers.ts";
import type { Engine } from "../config/config.ts";

/** Bytes read ahead before reading pauses for the writer to catch up (counting whole recycled
 * buffers, see `footprint`), for a body that comes in small pieces (Deno's HTTP server). */
export const READ_AHEAD_BYTES = 1024 * 1024;

/**
 * How far to read a front end's request bodies ahead of the writes to the backend. Deno's HTTP
 * server (`--engine deno`) hands a body over in small pieces and needs the deep queue
 * ({@linkcode READ_AHEAD_BYTES}); goround's own front reads each piece as a whole recycled
 * buffer, so one buffer ahead keeps the backend's writes busy and more would only hold memory
 * (the runs behind both choices are in `docs/performance.md`).
 *
 * @param engine The front end.
 * @returns Bytes to read ahead.
 * @example
 * ```ts
 * readAheadFor("goround"); // 131072
 * ```
 */
export function readAheadFor(engine: Engine): number {
  return engine === "deno" ? READ_AHEAD_BYTES : BODY_BUFFER;
}

/** A reader that runs ahead of its consumer. */
export interface ReadAhead {
  /** Everything read since the last call (at least one chunk), or `null` at the end. Throws
   * what the body's stream threw (the client went away). */
  readonly next: () => Promise<Uint8Array[] | null>;
  /** Stops reading (the writer failed); the stream is cancelled with `reason`. */
  readonly cancel: (reason: unknown) => void;
}

/**
 * Starts reading `body` at once, queueing up to `limit` bytes ahead of {@linkcode ReadAhead.next}.
 *
 * @param body The stream to read.
 * @param limit Bytes to queue before pausing.
 * @returns The reader.
 * @example
 * ```ts
 * const ahead = readAhead(new Blob(["abc"]).stream(), 1024);
 * for (let parts; (parts = await ahead.next()) !== null;) console.log(parts.length);
 * ```
 */
export function readAhead(
  body: ReadableStream<Uint8Array>,
  limit: number = READ_AHEAD_BYTES,
): ReadAhead {
  const reader = body.getReader();
  let queue: Uint8Array[] = [];
  let queued = 0;
  let ended = false;
  let failure: { error: unknown } | null = null;
  let stopped = false;
  let wakeConsumer: (() => void) | null = null;
  let wakeReader: (() => void) | null = null;

  const wake = (which: "consumer" | "reader") => {
    const fn = which === "consumer" ? wakeConsumer : wakeReader;
    if (which === "consumer") wakeConsumer = null;
    else wakeReader = null;
    fn?.();
  };

  (async () => {
    try {
      while (!stopped) {
        const { done, value } = await reader.read();
        if (done) break;
        if (value.length === 0) continue;
        queue.push(value);
        queued += footprint(value);
        wake("consumer");
        while (queued >= limit && !stopped) {
          await new Promise<void>((resolve) => (wakeReader = resolve));
        }
      }
    } catch (error) {
      failure = { error };
    } finally {
      ended = true;
      reader.releaseLock();
      wake("consumer");
    }
  })();

  return {
    next: async () => {
      while (queue.length === 0) {
        if (failure) throw failure.error;
        if (ended) return null;
        await new Promise<void>((resolve) => (wakeConsumer = resolve));
      }
      const parts = queue;
      queue = [];
      queued = 0;
      wake("reader");
      return parts;
    },
    cancel: (reason) => {
      if (stopped) return;
      stopped = true;
      wake("reader");
      if (!ended) reader.cancel(reason).catch(() => {});
    },
  };
}

const CRLF = [13, 10];

/** Room for one chunk's framing: up to 13 hex digits (what the decoder accepts), CRLF, CRLF. */
export const FRAME_ROOM = 17;

/**
 * Groups body parts into the buffers to write, in order: consecutive parts are joined (and
 * framed as one chunk each group, when `chunked`) into buffers from {@linkcode borrow} of at
 * most {@linkcode BODY_BUFFER} bytes; without chunk framing, a group of one part goes out as
 * it is, without a copy. Give each returned buffer back (`giveBack`) once written, and the
 * parts too.
 *
 * @param parts The payload pieces, in order.
 * @param chunked Whether to frame each group as one HTTP/1.1 chunk (RFC 9112 §7.1).
 * @returns The buffers to write, in order.
 * @example
 * ```ts
 * const text = (bytes: Uint8Array) => new TextDecoder().decode(bytes);
 * const parts = [new TextEncoder().encode("ab"), new TextEncoder().encode("c")];
 * console.log(batches(parts, true).map(text)); // ["3\r\nabc\r\n"]
 * ```
 */
export function batches(parts: readonly Uint8Array[], chunked: boolean): Uint8Array[] {
  const room = BODY_BUFFER - (chunked ? FRAME_ROOM : 0);
  const out: Uint8Array[] = [];
  let group: Uint8Array[] = [];
  let size = 0;
  const flush = () => {
    if (group.length === 0) return;
    if (!chunked && group.length === 1) out.push(group[0]!);
    else if (size > room) out.push(joinParts(group, chunked)); // a part larger than a buffer
    else out.push(joinInto(borrow(), group, size, chunked));
    group = [];
    size = 0;
  };
  for (const part of parts) {
    if (part.length === 0) continue;
    if (size > 0 && size + part.length > room) flush();
    group.push(part);
    size += part.length;
  }
  flush();
  return out;
}

/**
 * Joins parts into one buffer, optionally framed as one HTTP/1.1 chunk (RFC 9112 §7.1:
 * `size-in-hex CRLF data CRLF`).
 *
 * @param parts The payload pieces.
 * @param chunked Whether to add chunk framing.
 * @returns The bytes to write.
 */
export function joinParts(parts: readonly Uint8Array[], chunked: boolean): Uint8Array<ArrayBuffer> {
  let size = 0;
  for (const part of parts) size += part.length;
  const framing = chunked ? size.toString(16).length + 4 : 0;
  return joinInto(new Uint8Array(size + framing), parts, size, chunked);
}

/** Writes `parts` (of `size` bytes in all), framed as one chunk when asked, at the start of
 * `out`; returns the bytes written. */
function joinInto(
  out: Uint8Array<ArrayBuffer>,
  parts: readonly Uint8Array[],
  size: number,
  chunked: boolean,
): Uint8Array<ArrayBuffer> {
  const prefix = chunked ? `${size.toString(16)}\r\n` : "";
  for (let i = 0; i < prefix.length; i++) out[i] = prefix.charCodeAt(i);
  let at = prefix.length;
  for (const part of parts) {
    out.set(part, at);
    at += part.length;
  }
  if (chunked) {
    out.set(CRLF, at);
    at += 2;
  }
  return at === out.length ? out : out.subarray(0, at);
}
