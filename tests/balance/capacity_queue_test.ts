import { deepEqual, equal, ok as assert } from "node:assert/strict";
import { createCapacityQueue } from "../../lib/balance/capacity_queue.ts";
import {
  beginRequest,
  createPool,
  endRequest,
  inFlight,
  type Pool,
  setMembers,
} from "../../lib/balance/pool.ts";

/** A pool of one backend that takes `max` requests at once, and the attempt that claims it. */
function onePool(max: number): { pool: Pool; claim: (avoid?: number) => number } {
  const pool = createPool(2);
  setMembers(pool, [0]);
  const claim = (avoid = -1) => {
    if (avoid === 0 || inFlight(pool, 0) >= max) return -1;
    beginRequest(pool, 0, false);
    return 0;
  };
  return { pool, claim };
}

/** Runs `body` with a timer that keeps the event loop alive: a pending Atomics.waitAsync does
 * not (in a worker, its listener does). */
async function alive(body: () => Promise<void>): Promise<void> {
  const keepAlive = setInterval(() => {}, 60_000);
  try {
    await body();
  } finally {
    clearInterval(keepAlive);
  }
}

Deno.test("the queue serves waiters in arrival order as requests end, each already counted", () =>
  alive(async () => {
    const { pool, claim } = onePool(2);
    claim();
    claim();
    const queue = createCapacityQueue(pool);
    const served: number[] = [];
    const done = Array.from(
      { length: 6 },
      (_, i) =>
        queue.wait(claim, { timeoutMs: 20_000 }).then((slot) => {
          equal(slot, 0);
          served.push(i);
        }),
    );
    equal(queue.size(), 6);
    equal(inFlight(pool, 0), 2);
    for (let ended = 0; ended < 6; ended++) {
      endRequest(pool, 0, false);
      await done[ended];
      equal(inFlight(pool, 0), 2, "the waiter that got the room is counted on it");
    }
    deepEqual(served, [0, 1, 2, 3, 4, 5]);
    equal(queue.size(), 0);
  }));

Deno.test("a request that arrives while others wait goes behind them, even when room frees", () =>
  alive(async () => {
    const { pool, claim } = onePool(1);
    claim();
    const queue = createCapacityQueue(pool);
    const order: string[] = [];
    const first = queue.wait(claim, { timeoutMs: 20_000 }).then(() => order.push("first"));
    endRequest(pool, 0, false); // room, before the watcher has looked again
    const second = queue.wait(claim, { timeoutMs: 20_000 }).then(() => order.push("second"));
    await first;
    endRequest(pool, 0, false);
    await second;
    deepEqual(order, ["first", "second"]);
  }));

Deno.test("a waiter gives up with -1 at its deadline; the others keep waiting", () =>
  alive(async () => {
    const { pool, claim } = onePool(1);
    claim();
    const queue = createCapacityQueue(pool);
    const started = Date.now();
    const short = queue.wait(claim, { timeoutMs: 50 });
    const long = queue.wait(claim, { timeoutMs: 20_000 });
    equal(await short, -1);
    assert(Date.now() - started >= 50);
    equal(queue.size(), 1);
    endRequest(pool, 0, false);
    equal(await long, 0);
  }));

Deno.test("a retry that avoids the backend with room does not hold up the waiters behind it", () =>
  alive(async () => {
    const { pool, claim } = onePool(1);
    claim();
    const queue = createCapacityQueue(pool);
    const retry = queue.wait(() => claim(0), { timeoutMs: 80, restricted: true });
    const fresh = queue.wait(claim, { timeoutMs: 20_000 });
    endRequest(pool, 0, false);
    equal(await fresh, 0, "served past the retry");
    equal(await retry, -1, "the retry still finds nothing it may use");
  }));

Deno.test("an attempt that throws fails its own request only", () =>
  alive(async () => {
    const { pool, claim } = onePool(1);
    claim();
    const queue = createCapacityQueue(pool);
    const broken = queue.wait(() => {
      throw new Error("selection bug");
    }, { timeoutMs: 20_000 });
    const fine = queue.wait(claim, { timeoutMs: 20_000 });
    const error = await broken.catch((e: Error) => e);
    equal((error as Error).message, "selection bug");
    endRequest(pool, 0, false);
    equal(await fine, 0);
  }));
