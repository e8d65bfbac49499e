import { deepEqual, equal } from "node:assert/strict";
import { DURATION_BUCKETS } from "../../lib/balance/pool.ts";
import { pointBetween, quantile, type Sample, startHistory } from "../../lib/admin/history.ts";

const NO_BUCKETS = new Array(DURATION_BUCKETS.length + 1).fill(0);

function sample(at: number, url: string, classes: number[], buckets: number[], noBackend = 0) {
  return { at, backends: new Map([[url, { classes, buckets }]]), noBackend } satisfies Sample;
}

Deno.test("quantile() interpolates within its bucket, as histogram_quantile does", () => {
  equal(quantile([0, 10, 0], [0.001, 0.002], 0.5), 0.0015);
  equal(quantile([10, 0, 0], [0.001, 0.002], 0.99), 0.00099);
  equal(quantile([0, 0, 5], [0.001, 0.002], 0.5), 0.002, "+Inf answers the last bound");
  equal(quantile([0, 0, 0], [0.001, 0.002], 0.5), null, "nothing counted");
});

Deno.test("pointBetween(): rates per second by backend and class, refusals, latency", () => {
  const url = "http://a:1";
  const fast = [...NO_BUCKETS];
  fast[3] = 200; // ≤ 1 ms
  const before = sample(1000, url, [0, 100, 0, 0, 0], NO_BUCKETS, 4);
  const after = sample(3000, url, [0, 280, 0, 10, 10], fast, 10);
  const point = pointBetween(before, after);
  equal(point.at, 3000);
  deepEqual(point.classes, [90, 5, 5]);
  equal(point.refused, 3);
  equal(point.backends[url]!.rps, 100);
  equal(point.backends[url]!.errors, 5);
  equal(point.backends[url]!.p50, 0.00075);
});

Deno.test("a backend added between two samples counts from zero", () => {
  const before: Sample = { at: 0, backends: new Map(), noBackend: 0 };
  const after = sample(1000, "http://new:1", [0, 7, 0, 0, 0], NO_BUCKETS);
  equal(pointBetween(before, after).backends["http://new:1"]!.rps, 7);
});

Deno.test("startHistory() keeps the last samples and stops", async () => {
  let n = 0;
  const history = startHistory(
    () => sample(Date.now(), "http://a:1", [0, n++ * 10, 0, 0, 0], NO_BUCKETS),
    { intervalMs: 10, size: 3 },
  );
  await new Promise((resolve) => setTimeout(resolve, 100));
  history.stop();
  equal(history.points().length, 3, "a ring of 3 samples: 3 points after the first");
});
