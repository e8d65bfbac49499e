/**
 * Recycled connection buffers in power-of-two sizes, one set of lists per thread.
 *
 * A client connection reads request heads and frames whole replies in buffers it borrows here,
 * sized to what its traffic needs: an idle keep-alive connection waits with a buffer as small as
 * its last request (its pending read holds that buffer until bytes arrive), a busy one keeps its
 * buffer from one request to the next. Buffers of {@linkcode MIN_SIZE} to {@linkcode MAX_SIZE}
 * bytes come in power-of-two sizes, so a buffer given back fits the next connection that needs
 * that size; the lists together hold at most {@linkcode SPARE_LIMIT} bytes, so what they keep
 * is bounded whatever the number of connections. Anything larger is allocated to size and left
 * to the garbage collector. (Fixed 16 KiB and 4 KiB buffers per connection tripled the memory of
 * an idle one: `docs/performance.md`.)
 *
 * @module
 */

/** Smallest buffer size handed out, bytes. */
export const MIN_SIZE = 128;
/** Largest buffer size kept for reuse, bytes. */
export const MAX_SIZE = 64 * 1024;
/** Most bytes kept in the spare lists per thread. */
export const SPARE_LIMIT = 4 * 1024 * 1024;

const MIN_SHIFT = 7; // log2(MIN_SIZE)
const MAX_SHIFT = 16; // log2(MAX_SIZE)

/** Spare buffers by size: `lists[i]` holds buffers of `MIN_SIZE << i` bytes. */
const lists: Uint8Array<ArrayBuffer>[][] = Array.from(
  { length: MAX_SHIFT - MIN_SHIFT + 1 },
  () => [],
);
let spareBytes = 0;

/**
 * The size of the buffer {@linkcode takeBuffer} hands out for `size` bytes: the next power of
 * two, at least {@linkcode MIN_SIZE} (and `size` itself above {@linkcode MAX_SIZE}).
 *
 * @param size Bytes needed.
 * @returns The buffer size.
 * @example
 * ```ts
 * import { bufferSize } from "./spare_buffers.ts";
 * bufferSize(100); // 128
 * bufferSize(5000); // 8192
 * ```
 */
export function bufferSize(size: number): number {
  if (size <= MIN_SIZE) return MIN_SIZE;
  if (size > MAX_SIZE) return size;
  return 1 << (32 - Math.clz32(size - 1));
}

/**
 * A buffer of {@linkcode bufferSize}`(size)` bytes: a spare one when there is one. Its old
 * contents are not cleared: read into it before reading from it.
 *
 * @param size Bytes needed.
 * @returns The buffer; hand it to {@linkcode keepBuffer} once nothing refers to it.
 */
export function takeBuffer(size: number): Uint8Array<ArrayBuffer> {
  const length = bufferSize(size);
  if (length > MAX_SIZE) return new Uint8Array(length);
  const list = lists[31 - Math.clz32(length) - MIN_SHIFT]!;
  const buffer = list.pop();
  if (buffer === undefined) return new Uint8Array(length);
  spareBytes -= length;
  return buffer;
}

/**
 * Keeps a buffer for reuse once nothing refers to it (no read or write pending into it, no view
 * of it handed on), if it is of a kept size and the lists have room; otherwise leaves it to the
 * garbage collector. Give a buffer back once, and drop the reference to it as you do: a buffer
 * kept twice would be handed to two connections. (Not checked here: this is on the path of
 * every request, where a `WeakSet` check would cost more than the rest.)
 *
 * @param buffer A buffer from {@linkcode takeBuffer} (anything else is ignored).
 */
export function keepBuffer(buffer: Uint8Array<ArrayBuffer>): void {
  const length = buffer.length;
  if (length < MIN_SIZE || length > MAX_SIZE || (length & (length - 1)) !== 0) return;
  if (buffer.byteOffset !== 0 || buffer.buffer.byteLength !== length) return; // a view
  if (spareBytes + length > SPARE_LIMIT) return;
  spareBytes += length;
  lists[31 - Math.clz32(length) - MIN_SHIFT]!.push(buffer);
}

/**
 * Bytes held in the spare lists (for tests).
 *
 * @returns The total.
 */
export function sparedBytes(): number {
  return spareBytes;
}
