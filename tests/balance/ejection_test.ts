import { deepEqual, equal } from "node:assert/strict";
import { ejectionLimit, MAX_EJECTION_FACTOR, nextEjection } from "../../lib/balance/ejection.ts";

Deno.test("ejectionLimit(): a share of the pool, at least one of two or more, none of one", () => {
  const table: [size: number, percent: number, limit: number][] = [
    [1, 50, 0],
    [1, 100, 0],
    [2, 50, 1],
    [3, 50, 1],
    [4, 50, 2],
    [5, 50, 2],
    [3, 10, 1],
    [3, 0, 0],
    [3, 100, 3],
    [0, 50, 0],
  ];
  for (const [size, percent, limit] of table) {
    equal(ejectionLimit(size, percent), limit, `${percent}% of ${size}`);
  }
});

Deno.test("nextEjection(): base × ejections in a row, capped, the streak falling while it behaves", () => {
  const base = 30_000;
  const now = 1_000_000_000;
  deepEqual(nextEjection(0, 0, now, base), { streak: 1, ms: base }, "the first");
  deepEqual(nextEjection(1, now - 1000, now, base), { streak: 2, ms: 2 * base }, "again soon");
  deepEqual(nextEjection(2, now - base, now, base), { streak: 2, ms: 2 * base }, "one base back");
  deepEqual(nextEjection(3, now - 10 * base, now, base), { streak: 1, ms: base }, "long back");
  deepEqual(
    nextEjection(MAX_EJECTION_FACTOR, now, now, base),
    { streak: MAX_EJECTION_FACTOR, ms: MAX_EJECTION_FACTOR * base },
    "capped",
  );
});
