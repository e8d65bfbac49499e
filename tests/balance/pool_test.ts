import { deepEqual, equal, ok as assert, throws } from "node:assert/strict";
import {
  adminState,
  attachPool,
  beginRequest,
  COUNTER_WRAP,
  createPool,
  eject,
  ejectedUntil,
  endRequest,
  failureCount,
  inFlight,
  isAlive,
  isUsable,
  lastChange,
  members,
  nextTicket,
  poolSize,
  probeStreak,
  reclaimShare,
  recordFailure,
  recordProbe,
  setAdminState,
  setAlive,
  setCounter,
  setMembers,
  tenantOf,
  totals,
  waitForCapacity,
  watchCapacity,
  workerInFlight,
} from "../../lib/balance/pool.ts";
import {
  countClient,
  countQueued,
  countRefusal,
  gauges,
  recordBytes,
} from "../../lib/balance/pool.ts";
import type { ShareRequest } from "../fixtures/share_worker.ts";

Deno.test("createPool() starts empty; setMembers() makes members alive and enabled", () => {
  const pool = createPool(8);
  equal(poolSize(pool), 0);
  setMembers(pool, [2, 0, 5]);
  equal(poolSize(pool), 3);
  deepEqual(members(pool), [2, 0, 5]);
  for (const slot of [2, 0, 5]) {
    assert(isAlive(pool, slot));
    equal(adminState(pool, slot), "enabled");
  }
  equal(adminState(pool, 1), "removed");
  assert(!isUsable(pool, 1));
});

Deno.test("setMembers() with alive: false: new members join down, members that stay keep their state", () => {
  const pool = createPool(8);
  setMembers(pool, [0, 1]);
  setAlive(pool, 1, false);
  setAdminState(pool, 0, "draining");
  setMembers(pool, [0, 1, 2], [1, 1, 1], { alive: false });
  deepEqual([isAlive(pool, 0), isAlive(pool, 1), isAlive(pool, 2)], [true, false, false]);
  deepEqual([adminState(pool, 0), adminState(pool, 2)], ["draining", "enabled"]);
  equal(lastChange(pool, 2), 0, "no transition yet");
  assert(!isUsable(pool, 2), "no request before a health check brings it up");
  setAlive(pool, 2, true);
  assert(isUsable(pool, 2));
});

Deno.test("a slot that takes another backend starts over with a new tenant; its requests in flight still end on it", () => {
  const pool = createPool(4);
  setMembers(pool, [0, 1]);
  beginRequest(pool, 0, false);
  setAdminState(pool, 0, "draining");
  const [first, other] = [tenantOf(pool, 0), tenantOf(pool, 1)];
  setMembers(pool, [0, 1], [1, 1], { alive: false, renew: new Set([0]) });
  assert(tenantOf(pool, 0) !== first, "a new tenant");
  equal(tenantOf(pool, 1), other, "a member that stays keeps its tenant");
  deepEqual([adminState(pool, 0), isAlive(pool, 0), isUsable(pool, 0)], ["enabled", false, false]);
  equal(totals(pool, 0).requests, 0n, "no counts from the former tenant");
  equal(inFlight(pool, 0), 1, "the former tenant's request is still in flight");
  endRequest(pool, 0, false);
  equal(inFlight(pool, 0), 0);
  setMembers(pool, [1]);
  setMembers(pool, [1, 0]);
  assert(tenantOf(pool, 0) !== first + 1, "a slot that left and joined again has another tenant");
});

Deno.test("setMembers() rejects slots outside the capacity", () => {
  const pool = createPool(2);
  throws(() => setMembers(pool, [0, 2]), /slot 2 is outside 0..1/);
  throws(() => setMembers(pool, [0, 1, 0]), /exceed the pool capacity/);
});

Deno.test("setAlive() reports only the call that made the transition", () => {
  const pool = createPool(4);
  setMembers(pool, [0]);
  equal(setAlive(pool, 0, true), false, "already alive");
  equal(setAlive(pool, 0, false), true);
  equal(setAlive(pool, 0, false), false, "second DOWN is not a transition");
  assert(!isAlive(pool, 0));
  equal(setAlive(pool, 0, true), true);
  assert(isAlive(pool, 0));
});

Deno.test("draining takes a backend out of selection but not out of the health view", () => {
  const pool = createPool(4);
  setMembers(pool, [0, 1]);
  setAdminState(pool, 1, "draining");
  assert(isAlive(pool, 1));
  assert(!isUsable(pool, 1));
  setAdminState(pool, 1, "enabled");
  assert(isUsable(pool, 1));
});

Deno.test("attachPool() sees the same memory", () => {
  const pool = createPool(4);
  setMembers(pool, [0, 1, 2]);
  const other = attachPool(pool.buffer);
  equal(other.capacity, 4);
  setAlive(other, 1, false);
  assert(!isAlive(pool, 1));
  equal(nextTicket(other, 3), 0);
  equal(nextTicket(pool, 3), 1);
});

Deno.test("request accounting: in-flight goes up and down, totals only up", () => {
  const pool = createPool(4);
  setMembers(pool, [0]);
  beginRequest(pool, 0, false);
  beginRequest(pool, 0, true);
  equal(inFlight(pool, 0), 2);
  endRequest(pool, 0, false);
  endRequest(pool, 0, true);
  equal(inFlight(pool, 0), 0);
  deepEqual(totals(pool, 0), {
    requests: 2n,
    failures: 1n,
    retries: 1n,
    ejections: 0n,
    probesOk: 0n,
    probesFailed: 0n,
    bytesIn: 0n,
    bytesOut: 0n,
  });
  recordBytes(pool, 0, 100, 2048);
  deepEqual([totals(pool, 0).bytesIn, totals(pool, 0).bytesOut], [100n, 2048n]);
});

Deno.test("the header counters: client connections, queued requests, refusals by reason", () => {
  const pool = createPool(8);
  countClient(pool, 1);
  countClient(pool, 1);
  countClient(pool, -1);
  countQueued(pool, 1);
  countRefusal(pool, "bad_request");
  countRefusal(pool, "loop");
  countRefusal(pool, "loop");
  const now = gauges(pool);
  equal(now.clients, 1);
  equal(now.queued, 1);
  deepEqual(now.refused, {
    bad_request: 1,
    method: 0,
    timeout: 0,
    too_large: 0,
    loop: 2,
    no_route: 0,
  });
  countClient(pool, -1);
  equal(gauges(pool).clients, 0);
});

Deno.test("nextTicket() folds at COUNTER_WRAP by a multiple of the size, keeping the cycle", async (t) => {
  for (const size of [1, 2, 3, 5, 7, 64]) {
    await t.step(`size ${size}`, () => {
      const pool = createPool(64);
      setCounter(pool, COUNTER_WRAP - 2 * size - 1);
      let previous = nextTicket(pool, size) % size;
      for (let i = 0; i < 6 * size; i++) {
        const ticket = nextTicket(pool, size);
        assert(ticket <= COUNTER_WRAP, `ticket ${ticket} never passes the wrap point`);
        equal(ticket % size, (previous + 1) % size, `step ${i} continues the cycle`);
        previous = ticket % size;
      }
    });
  }
  throws(() => setCounter(createPool(1), COUNTER_WRAP + 1), /must be an integer/);
});

Deno.test("recordFailure() counts within a window; a failure after it starts a new one", async () => {
  const pool = createPool(4);
  setMembers(pool, [0]);
  deepEqual([1, 2, 3].map(() => recordFailure(pool, 0, 200)), [1, 2, 3]);
  equal(failureCount(pool, 0), 3);
  await new Promise((resolve) => setTimeout(resolve, 250));
  equal(recordFailure(pool, 0, 200), 1, "a new window starts from 1");
  equal(totals(pool, 0).ejections, 0n, "counting alone ejects nothing");
});

/** An ejection plan of a fixed length that grows with the streak, as the proxy's does. */
function planOf(ms: number) {
  return (streak: number) => ({ streak: streak + 1, ms: ms * (streak + 1) });
}

Deno.test("eject() takes a backend out until its time, apart from the health view", async (t) => {
  const pool = createPool(4);
  setMembers(pool, [0, 1, 2]);
  await t.step("out: not usable, still alive, counted, its failures cleared", () => {
    recordFailure(pool, 0, 10_000);
    const now = Date.now();
    const outcome = eject(pool, 0, { limit: 1, now, plan: planOf(150) });
    deepEqual(outcome, { kind: "ejected", until: now + 150, streak: 1 });
    assert(!isUsable(pool, 0));
    assert(isAlive(pool, 0), "the health view is untouched");
    equal(ejectedUntil(pool, 0), now + 150);
    equal(totals(pool, 0).ejections, 1n);
    equal(failureCount(pool, 0), 0);
    deepEqual(eject(pool, 0, { limit: 1, now, plan: planOf(150) }), { kind: "already" });
  });
  await t.step("a passed probe does not end it", () => {
    setAlive(pool, 0, false);
    setAlive(pool, 0, true);
    assert(!isUsable(pool, 0));
  });
  await t.step("it ends by itself when the time has passed", async () => {
    await new Promise((resolve) => setTimeout(resolve, 170));
    assert(isUsable(pool, 0));
    equal(ejectedUntil(pool, 0), 0);
  });
  await t.step("the next ejection knows the streak and when the last one ended", () => {
    const seen: [number, number][] = [];
    const now = Date.now();
    const outcome = eject(pool, 0, {
      limit: 1,
      now,
      plan: (streak, lastEnd) => {
        seen.push([streak, lastEnd]);
        return { streak: 2, ms: 300 };
      },
    });
    equal(seen.length, 1);
    const [streak, lastEnd] = seen[0]!;
    equal(streak, 1);
    assert(lastEnd > 0 && lastEnd <= now, "the last ejection's end");
    deepEqual(outcome, { kind: "ejected", until: now + 300, streak: 2 });
  });
  await t.step("a backend down by health checks stays unusable when its ejection ends", () => {
    setAlive(pool, 1, false);
    deepEqual(
      eject(pool, 1, { limit: 2, now: Date.now() - 1000, plan: planOf(10) }).kind,
      "ejected",
    );
    assert(!isUsable(pool, 1));
    setAlive(pool, 1, true);
    assert(isUsable(pool, 1));
  });
});

Deno.test("eject() keeps to the limit; an ejection that has ended does not count", () => {
  const pool = createPool(4);
  setMembers(pool, [0, 1, 2]);
  const now = Date.now();
  equal(eject(pool, 0, { limit: 1, now, plan: planOf(60_000) }).kind, "ejected");
  deepEqual(eject(pool, 1, { limit: 1, now, plan: planOf(60_000) }), { kind: "refused", out: 1 });
  assert(isUsable(pool, 1), "refused: still in");
  equal(eject(pool, 1, { limit: 2, now, plan: planOf(60_000) }).kind, "ejected");
  deepEqual(eject(pool, 2, { limit: 0, now, plan: planOf(60_000) }), { kind: "refused", out: 2 });
  const other = createPool(4);
  setMembers(other, [0, 1]);
  equal(eject(other, 0, { limit: 1, now: now - 10_000, plan: planOf(1) }).kind, "ejected");
  equal(eject(other, 1, { limit: 1, now, plan: planOf(60_000) }).kind, "ejected", "0's is over");
});

Deno.test("eject() in threads at once never passes the limit together", async () => {
  const threads = 2;
  const rounds = 200;
  const pool = createPool(threads * (rounds + 1));
  const sync = new SharedArrayBuffer(8);
  const gate = new Int32Array(sync);
  const workers = Array.from({ length: threads }, (_, index) => {
    const worker = new Worker(new URL("../fixtures/eject_worker.ts", import.meta.url), {
      type: "module",
    });
    const finished = new Promise<void>((resolve, reject) => {
      worker.onmessage = () => resolve();
      worker.onerror = (event) => reject(new Error(event.message));
    });
    worker.postMessage({ buffer: pool.buffer, sync, index, threads, rounds, limit: 1 });
    return { worker, finished };
  });
  const over: number[] = [];
  try {
    for (let round = 1; round <= rounds; round++) {
      const slots = Array.from({ length: threads }, (_, i) => round * threads + i);
      setMembers(pool, slots);
      Atomics.store(gate, 0, round);
      Atomics.notify(gate, 0);
      const deadline = Date.now() + 10_000;
      while (Atomics.load(gate, 1) < round * threads && Date.now() < deadline) {
        await new Promise((resolve) => setTimeout(resolve, 1));
      }
      const out = slots.filter((slot) => ejectedUntil(pool, slot) > 0).length;
      if (out > 1) over.push(round);
    }
    await Promise.all(workers.map((w) => w.finished));
  } finally {
    for (const { worker } of workers) worker.terminate();
  }
  deepEqual(over, [], "rounds in which both were ejected");
});

Deno.test("coming back up clears the passive failure count", () => {
  const pool = createPool(4);
  setMembers(pool, [0]);
  recordFailure(pool, 0, 10_000);
  recordFailure(pool, 0, 10_000);
  setAlive(pool, 0, false);
  setAlive(pool, 0, true);
  equal(failureCount(pool, 0), 0);
});

Deno.test("recordProbe() keeps consecutive streaks and the last duration", () => {
  const pool = createPool(4);
  setMembers(pool, [0]);
  recordProbe(pool, 0, true, 120);
  deepEqual(recordProbe(pool, 0, true, 80), { passes: 2, misses: 0, micros: 80 });
  deepEqual(recordProbe(pool, 0, false, 2_000_000), { passes: 0, misses: 1, micros: 2_000_000 });
  deepEqual(probeStreak(pool, 0), { passes: 0, misses: 1, micros: 2_000_000 });
  equal(totals(pool, 0).probesOk, 2n);
  equal(totals(pool, 0).probesFailed, 1n);
});

Deno.test("in-flight counts are kept per worker; reclaimShare() takes back one worker's share", () => {
  const pool = createPool(20, { workers: 3 });
  setMembers(pool, [0, 17]);
  const [a, b] = [0, 1].map((worker) => attachPool(pool.buffer, { worker }));
  for (let i = 0; i < 3; i++) beginRequest(a!, 0, false);
  beginRequest(a!, 17, true);
  beginRequest(b!, 0, false);
  beginRequest(b!, 17, false);
  deepEqual([inFlight(pool, 0), inFlight(pool, 17)], [4, 2]);
  deepEqual([workerInFlight(pool, 0), workerInFlight(pool, 1), workerInFlight(pool, 2)], [4, 2, 0]);
  equal(reclaimShare(pool, 0), 4, "worker 0 died with 4 requests");
  deepEqual([inFlight(pool, 0), inFlight(pool, 17)], [1, 1], "worker 1's stay");
  equal(reclaimShare(pool, 0), 0, "taken back once");
  endRequest(b!, 0, false);
  endRequest(b!, 17, false);
  deepEqual([inFlight(pool, 0), inFlight(pool, 17), workerInFlight(pool, 1)], [0, 0, 0]);
  equal(totals(pool, 0).requests, 4n, "the attempts still count");
});

Deno.test("a dead worker's late decrement never makes inFlight() read as a huge count", () => {
  const pool = createPool(4, { workers: 2 });
  setMembers(pool, [0]);
  const dead = attachPool(pool.buffer, { worker: 1 });
  beginRequest(dead, 0, false);
  reclaimShare(pool, 1);
  endRequest(dead, 0, false);
  equal(inFlight(pool, 0), 0);
  beginRequest(pool, 0, false);
  equal(inFlight(pool, 0), 0, "one below the truth, never 2^32 - 1");
  equal(reclaimShare(pool, 1), -1, "the next reclaim sets it right");
  equal(inFlight(pool, 0), 1);
});

Deno.test("createPool() and attachPool() refuse a worker without a row", () => {
  throws(() => createPool(4, { workers: 0 }), /pool workers 0 must be an integer from 1 to 1024/);
  throws(() => createPool(4, { workers: 1025 }), /from 1 to 1024/);
  const pool = createPool(4, { workers: 2 });
  equal(attachPool(pool.buffer, { worker: 1 }).workers, 2);
  throws(() => attachPool(pool.buffer, { worker: 2 }), /worker 2 is outside 0\.\.1/);
  throws(() => reclaimShare(pool, -1), /worker -1 is outside 0\.\.1/);
});

Deno.test("watchCapacity(): a request that ends after it wakes the waiter; none waiting, no write", async () => {
  // A pending Atomics.waitAsync does not keep the event loop alive; this timer does.
  const keepAlive = setInterval(() => {}, 60_000);
  try {
    const pool = createPool(4);
    setMembers(pool, [0]);
    beginRequest(pool, 0, false);
    beginRequest(pool, 0, false);
    const first = watchCapacity(pool);
    equal(watchCapacity(pool), first, "a second waiter shares the token");
    endRequest(pool, 0, false);
    equal(await waitForCapacity(pool, first, 10_000), "not-equal", "room freed after arming");
    const second = watchCapacity(pool);
    assert(second !== first);
    const woken = waitForCapacity(pool, second, 10_000);
    endRequest(pool, 0, false);
    equal(await woken, "ok");
    // Nobody armed since: ending a request leaves the word alone (one load, no write).
    beginRequest(pool, 0, false);
    endRequest(pool, 0, false);
    equal(watchCapacity(pool), (second + 1) | 0x8000_0000, "one wake-up counted since");
    equal(await waitForCapacity(pool, watchCapacity(pool), 20), "timed-out");
  } finally {
    clearInterval(keepAlive);
  }
});

/** Runs tests/fixtures/share_worker.ts with `request`; resolves with its messages as they come. */
function shareWorker(request: ShareRequest): {
  readonly worker: Worker;
  readonly next: () => Promise<unknown>;
} {
  const worker = new Worker(new URL("../fixtures/share_worker.ts", import.meta.url), {
    type: "module",
  });
  const inbox: unknown[] = [];
  const waiting: ((message: unknown) => void)[] = [];
  let failure: Error | null = null;
  worker.onmessage = (event) => {
    const waiter = waiting.shift();
    if (waiter) waiter(event.data);
    else inbox.push(event.data);
  };
  worker.onerror = (event) => {
    event.preventDefault();
    failure = new Error(event.message);
  };
  worker.postMessage(request);
  return {
    worker,
    next: () => {
      if (failure) return Promise.reject(failure);
      if (inbox.length > 0) return Promise.resolve(inbox.shift());
      return new Promise((resolve) => waiting.push(resolve));
    },
  };
}

Deno.test("across two real workers: one dies with requests in flight, its share is taken back", async () => {
  const pool = createPool(8, { workers: 2 });
  setMembers(pool, [0, 1]);
  const dying = shareWorker({ kind: "begin", buffer: pool.buffer, worker: 0, slot: 1, count: 7 });
  const living = shareWorker({ kind: "begin", buffer: pool.buffer, worker: 1, slot: 1, count: 2 });
  try {
    deepEqual(await Promise.all([dying.next(), living.next()]), ["counted", "counted"]);
    equal(inFlight(pool, 1), 9);
    dying.worker.terminate();
    equal(reclaimShare(pool, 0), 7);
    equal(inFlight(pool, 1), 2, "the living worker's requests still count");
    equal(workerInFlight(pool, 1), 2);
  } finally {
    dying.worker.terminate();
    living.worker.terminate();
  }
});

Deno.test("across threads: a request that ends in one thread wakes a waiter in another at once", async () => {
  const pool = createPool(4, { workers: 2 });
  setMembers(pool, [0]);
  beginRequest(pool, 0, false);
  const waiter = shareWorker({ kind: "wait", buffer: pool.buffer, worker: 1, timeoutMs: 20_000 });
  try {
    equal(await waiter.next(), "armed");
    endRequest(pool, 0, false);
    const { outcome, ms } = await waiter.next() as { outcome: string; ms: number };
    // "not-equal" when the end came before the worker's waitAsync call: woken all the same.
    assert(outcome === "ok" || outcome === "not-equal", outcome);
    assert(ms < 10_000, `woken after ${ms} ms, not by the timeout`);
  } finally {
    waiter.worker.terminate();
  }
});
