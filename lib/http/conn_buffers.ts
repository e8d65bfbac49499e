/**
 * The buffers of one HTTP/1.1 connection, the same on both sides (goround's front and its
 * upstream client): a read buffer whose `buf[start..end)` is unread, and a write buffer that
 * a head and a whole body are framed into for one write. Buffers come from and go back to the
 * per-thread spare lists (`spare_buffers.ts`).
 *
 * @module
 */

import { writeLatin1 } from "./http1.ts";
import { keepBuffer, takeBuffer } from "./spare_buffers.ts";

/** A connection's read and write buffers. */
export interface ConnBuffers {
  /** Read buffer; `buf[start..end)` is unread. */
  buf: Uint8Array<ArrayBuffer>;
  /** Start of the unread bytes. */
  start: number;
  /** End of the unread bytes. */
  end: number;
  /** Write buffer for heads and whole bodies. */
  wbuf: Uint8Array<ArrayBuffer>;
}

/**
 * Makes room after `end` for the next read: moves the unread bytes to the front, or, when
 * they fill the buffer, swaps it for one twice as large (at most `limit` bytes).
 *
 * @param b The buffers.
 * @param limit The largest read buffer.
 */
export function makeRoom(b: ConnBuffers, limit: number): void {
  if (b.end !== b.buf.length) return;
  if (b.start > 0) {
    b.buf.copyWithin(0, b.start, b.end);
    b.end -= b.start;
    b.start = 0;
    return;
  }
  const bigger = takeBuffer(Math.min(b.buf.length * 2, limit));
  bigger.set(b.buf);
  keepBuffer(b.buf);
  b.buf = bigger;
}

/**
 * Frames a head, and a whole body after it, into the write buffer (a larger one when it does
 * not fit, at least `least` bytes).
 *
 * @param b The buffers.
 * @param head The head, as Latin-1 text.
 * @param body A whole body, or `null`.
 * @param least The smallest write buffer to take.
 * @returns The framed bytes (a view of the write buffer).
 */
export function frameInto(
  b: ConnBuffers,
  head: string,
  body: Uint8Array | null,
  least: number,
): Uint8Array<ArrayBuffer> {
  const size = head.length + (body === null ? 0 : body.length);
  if (b.wbuf.length < size) {
    keepBuffer(b.wbuf);
    b.wbuf = takeBuffer(Math.max(size, least));
  }
  const at = writeLatin1(head, b.wbuf, 0);
  if (body !== null) b.wbuf.set(body, at);
  return b.wbuf.subarray(0, size);
}
