/**
 * Recycled body buffers, one pool per thread.
 *
 * Streaming a body reads it into buffers of {@linkcode BODY_BUFFER} bytes. A fresh buffer per
 * read costs V8 a zeroing `memset` of the whole buffer and, a little later, the garbage
 * collector's time and the process's memory (`docs/performance.md` has the figures). So the
 * readers {@linkcode borrow} buffers here, and the writers {@linkcode giveBack} each one once its
 * bytes are written; buffered request bodies borrow them too, given back when the exchange is
 * over. A buffer that is never given back (a consumer outside goround's own writers kept it) is
 * simply collected.
 *
 * A buffer comes back only once, only if it was lent by {@linkcode borrow}, and only while the
 * pool holds fewer than {@linkcode POOL_LIMIT}, so the pool's memory is bounded.
 *
 * @module
 */

/** Size of each body buffer: a 1 MiB body takes 8 reads (larger moved bodies no faster,
 * smaller cost CPU). */
export const BODY_BUFFER = 128 * 1024;

/** Most buffers kept for reuse per thread (32 MiB): enough for 64 connections streaming at once,
 * so loans rarely fall back to fresh allocations. */
export const POOL_LIMIT = 256;

const free: ArrayBuffer[] = [];
/** The buffers out on loan; a buffer given back is taken off, so a second return is a no-op. */
const lent = new WeakSet<ArrayBuffer>();

/**
 * Lends a buffer of {@linkcode BODY_BUFFER} bytes, reused when one is free. Its old contents
 * are not cleared: read into it before reading from it.
 *
 * @returns The buffer; hand it (or a view of it) to {@linkcode giveBack} when done.
 * @example
 * ```ts
 * const buffer = borrow();
 * const n = 3; // e.g. what `conn.read(buffer)` returned
 * const piece = buffer.subarray(0, n);
 * giveBack(piece);
 * ```
 */
export function borrow(): Uint8Array<ArrayBuffer> {
  const buffer = free.pop() ?? new ArrayBuffer(BODY_BUFFER);
  lent.add(buffer);
  return new Uint8Array(buffer);
}

/**
 * Returns a buffer lent by {@linkcode borrow}, through any view of it, once its bytes are no
 * longer needed. Anything else (a view of another buffer, a buffer already returned) is left
 * alone, so callers need not know where a piece came from.
 *
 * @param bytes The piece whose buffer is done with.
 */
export function giveBack(bytes: Uint8Array): void {
  const buffer = bytes.buffer;
  if (!(buffer instanceof ArrayBuffer) || !lent.has(buffer)) return;
  lent.delete(buffer);
  if (free.length < POOL_LIMIT) free.push(buffer);
}

/**
 * The memory a piece holds on to: a whole buffer for a view of a lent one, else its length.
 * Queues of pieces count this, so that small pieces of lent buffers cannot pile up.
 *
 * @param bytes A piece of a body.
 * @returns Bytes of memory it keeps alive.
 */
export function footprint(bytes: Uint8Array): number {
  const buffer = bytes.buffer;
  return buffer instanceof ArrayBuffer && lent.has(buffer) ? buffer.byteLength : bytes.length;
}

/**
 * Number of buffers waiting for reuse (for tests).
 *
 * @returns The pool's size.
 */
export function pooled(): number {
  return free.length;
}
