import { deepEqual, equal, notEqual } from "node:assert/strict";
import {
  COUNTER_WRAP,
  createPool,
  type Pool,
  setAdminState,
  setAlive,
  setCounter,
  setMembers,
} from "../../lib/balance/pool.ts";
import { type Algorithm, ALGORITHMS } from "../../lib/config/config.ts";
import { roundRobin, type SelectionContext } from "../../lib/balance/selection.ts";

function ctx(avoid: number[] = [], extra: Partial<SelectionContext> = {}): SelectionContext {
  return { avoid, key: "", maxConns: 0, slowStart: 0, ...extra };
}

function poolOf(size: number): Pool {
  const pool = createPool(16);
  setMembers(pool, Array.from({ length: size }, (_, i) => i));
  return pool;
}

function picks(pool: Pool, n: number): number[] {
  return Array.from({ length: n }, () => roundRobin(pool, ctx([])));
}

Deno.test("roundRobin()", async (t) => {
  await t.step("cycles 0, 1, 2, 0 like the brief's 8081, 8082, 8083, 8081", () => {
    deepEqual(picks(poolOf(3), 7), [0, 1, 2, 0, 1, 2, 0]);
  });

  await t.step("skips a dead backend", () => {
    const pool = poolOf(3);
    setAlive(pool, 1, false);
    const seen = picks(pool, 12);
    equal(seen.includes(1), false);
  });

  await t.step(
    "stays fair after a skip: strict alternation, never the same neighbour twice",
    () => {
      for (let start = 0; start < 6; start++) {
        const pool = poolOf(3);
        setCounter(pool, start);
        setAlive(pool, 1, false);
        const seen = picks(pool, 20);
        for (let i = 1; i < seen.length; i++) {
          notEqual(
            seen[i],
            seen[i - 1],
            `start ${start}: ${seen}`,
          );
        }
      }
    },
  );

  await t.step("spreads evenly over the live ones with two of five dead", () => {
    const pool = poolOf(5);
    setAlive(pool, 1, false);
    setAlive(pool, 3, false);
    const counts = [0, 0, 0, 0, 0];
    for (const slot of picks(pool, 300)) counts[slot]!++;
    deepEqual(counts, [100, 0, 100, 0, 100]);
  });

  await t.step("returns -1 when every backend is dead", () => {
    const pool = poolOf(3);
    for (const slot of [0, 1, 2]) setAlive(pool, slot, false);
    deepEqual(picks(pool, 3), [-1, -1, -1]);
  });

  await t.step("returns -1 for an empty pool", () => {
    equal(roundRobin(poolOf(0), ctx()), -1);
  });

  await t.step("skips draining backends", () => {
    const pool = poolOf(3);
    setAdminState(pool, 2, "draining");
    deepEqual(picks(pool, 4), [0, 1, 0, 1]);
  });

  await t.step("skips the backends a request already failed on", () => {
    const pool = poolOf(3);
    deepEqual(Array.from({ length: 4 }, () => roundRobin(pool, ctx([0]))), [1, 2, 1, 2]);
    equal(roundRobin(pool, ctx([0, 1, 2])), -1);
  });

  await t.step("stays a clean cycle across the counter's wrap-around", () => {
    for (const size of [2, 3, 5]) {
      const pool = poolOf(size);
      setCounter(pool, COUNTER_WRAP - 2 * size);
      const seen = picks(pool, 4 * size);
      for (let i = 1; i < seen.length; i++) {
        equal(seen[i], (seen[i - 1]! + 1) % size, `size ${size}: ${seen}`);
      }
    }
  });

  await t.step("stays alternating across the wrap-around with a dead backend", () => {
    const pool = poolOf(3);
    setCounter(pool, COUNTER_WRAP - 5);
    setAlive(pool, 1, false);
    const seen = picks(pool, 12);
    for (let i = 1; i < seen.length; i++) notEqual(seen[i], seen[i - 1], `${seen}`);
  });
});

/** Runs `each` picks of `algorithm` in each of `threads` workers sharing `pool`; sums them. */
async function pickInThreads(
  pool: Pool,
  threads: number,
  each: number,
  algorithm: Algorithm = "round-robin",
): Promise<Record<number, number>> {
  const results = await Promise.all(Array.from({ length: threads }, () => {
    const worker = new Worker(new URL("../fixtures/select_worker.ts", import.meta.url), {
      type: "module",
    });
    return new Promise<Record<number, number>>((resolve, reject) => {
      worker.onmessage = (event) => {
        worker.terminate();
        resolve(event.data);
      };
      worker.onerror = (event) => {
        worker.terminate();
        reject(event.message);
      };
      worker.postMessage({ buffer: pool.buffer, count: each, algorithm });
    });
  }));
  const total: Record<number, number> = {};
  for (const counts of results) {
    for (const [slot, n] of Object.entries(counts)) {
      total[Number(slot)] = (total[Number(slot)] ?? 0) + n;
    }
  }
  return total;
}

Deno.test("roundRobin() splits exactly evenly across worker threads sharing the pool", async () => {
  deepEqual(await pickInThreads(poolOf(3), 4, 30_000), { 0: 40_000, 1: 40_000, 2: 40_000 });
});

// Other threads take tickets between one thread's tries, so `size` tries can all miss the live
// backend; this once answered 503 under the chaos load test.
for (const algorithm of ALGORITHMS) {
  Deno.test(`[${algorithm}] finds the one live backend of five while 4 threads share the cursor`, async () => {
    const pool = poolOf(5);
    for (const slot of [0, 1, 3, 4]) setAlive(pool, slot, false);
    deepEqual(await pickInThreads(pool, 4, 50_000, algorithm), { 2: 200_000 });
  });
}
