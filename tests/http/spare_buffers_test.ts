import { equal, ok as assert } from "node:assert/strict";
import {
  bufferSize,
  keepBuffer,
  MAX_SIZE,
  MIN_SIZE,
  SPARE_LIMIT,
  sparedBytes,
  takeBuffer,
} from "../../lib/http/spare_buffers.ts";

Deno.test("bufferSize() rounds up to a power of two between MIN_SIZE and MAX_SIZE", () => {
  equal(bufferSize(0), MIN_SIZE);
  equal(bufferSize(1), MIN_SIZE);
  equal(bufferSize(MIN_SIZE), MIN_SIZE);
  equal(bufferSize(MIN_SIZE + 1), MIN_SIZE * 2);
  equal(bufferSize(1000), 1024);
  equal(bufferSize(1024), 1024);
  equal(bufferSize(16 * 1024 + 1), 32 * 1024);
  equal(bufferSize(MAX_SIZE), MAX_SIZE);
  equal(bufferSize(MAX_SIZE + 1), MAX_SIZE + 1, "above the largest size: exactly what is asked");
});

Deno.test("takeBuffer() hands out a buffer kept before, of the same size only", () => {
  const first = takeBuffer(3000);
  equal(first.length, 4096);
  const before = sparedBytes();
  keepBuffer(first);
  equal(sparedBytes(), before + 4096);
  assert(takeBuffer(8000) !== first, "a buffer of another size is not handed out");
  const again = takeBuffer(4096);
  assert(again === first, "the kept buffer is handed out again");
  equal(sparedBytes(), before);
});

Deno.test("keepBuffer() ignores views, odd sizes and sizes it does not keep", () => {
  const before = sparedBytes();
  keepBuffer(takeBuffer(2048).subarray(0, 1024)); // a view: its buffer may be in use
  keepBuffer(new Uint8Array(new ArrayBuffer(4096), 0, 2048));
  keepBuffer(new Uint8Array(1000));
  keepBuffer(new Uint8Array(MIN_SIZE / 2));
  keepBuffer(new Uint8Array(MAX_SIZE * 2));
  keepBuffer(new Uint8Array(0));
  equal(sparedBytes(), before);
});

Deno.test("the spare lists hold at most SPARE_LIMIT bytes", () => {
  const buffers = Array.from({ length: SPARE_LIMIT / MAX_SIZE + 4 }, () => takeBuffer(MAX_SIZE));
  for (const buffer of buffers) keepBuffer(buffer);
  assert(sparedBytes() <= SPARE_LIMIT, `${sparedBytes()} bytes kept`);
  assert(sparedBytes() > SPARE_LIMIT - MAX_SIZE, "the lists fill up to the limit");
  // Empty them again for the other tests of this file.
  for (let i = 0; i < buffers.length; i++) takeBuffer(MAX_SIZE);
});
