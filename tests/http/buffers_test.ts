import { equal, ok as assert } from "node:assert/strict";
import {
  BODY_BUFFER,
  borrow,
  footprint,
  giveBack,
  POOL_LIMIT,
  pooled,
} from "../../lib/http/buffers.ts";

Deno.test("borrow() lends body-sized buffers, and reuses one given back", () => {
  const first = borrow();
  equal(first.length, BODY_BUFFER);
  first[0] = 42;
  const before = pooled();
  giveBack(first.subarray(0, 10)); // any view of it returns the whole buffer
  equal(pooled(), before + 1);
  const again = borrow();
  assert(again.buffer === first.buffer, "the buffer given back is lent again");
  equal(again.length, BODY_BUFFER);
  giveBack(again);
});

Deno.test("giveBack() takes a buffer back once, and only one it lent", () => {
  const buffer = borrow();
  const before = pooled();
  giveBack(buffer);
  giveBack(buffer); // a second return is ignored: the buffer must not be lent twice at once
  equal(pooled(), before + 1);
  giveBack(new Uint8Array(BODY_BUFFER)); // not lent by the pool
  giveBack(new Uint8Array(new SharedArrayBuffer(16)));
  equal(pooled(), before + 1);
  const a = borrow();
  const b = borrow();
  assert(a.buffer !== b.buffer, "two loans never share a buffer");
  giveBack(a);
  giveBack(b);
});

Deno.test("the pool keeps at most POOL_LIMIT buffers", () => {
  const loans = Array.from({ length: POOL_LIMIT + 8 }, () => borrow());
  for (const loan of loans) giveBack(loan);
  equal(pooled(), POOL_LIMIT);
});

Deno.test("footprint() counts a whole lent buffer, and other pieces by their length", () => {
  const loan = borrow();
  equal(footprint(loan.subarray(0, 3)), BODY_BUFFER);
  giveBack(loan);
  equal(footprint(loan.subarray(0, 3)), 3); // returned: no longer the piece's to hold
  equal(footprint(new Uint8Array(new ArrayBuffer(100), 10, 5)), 5);
});
