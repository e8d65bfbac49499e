import { deepEqual, equal, ok as assert, throws } from "node:assert/strict";
import {
  adminState,
  attachPool,
  beginRequest,
  COUNTER_WRAP,
  createPool,
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
  recordFailure,
  recordProbe,
  setAdminState,
  setAlive,
  setCounter,
  setMembers,
  totals,
} from "../lib/pool.ts";

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
  });
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

Deno.test("recordFailure() counts within a window and reports reaching the limit once", async () => {
  const pool = createPool(4);
  setMembers(pool, [0]);
  equal(recordFailure(pool, 0, 200, 3), false);
  equal(recordFailure(pool, 0, 200, 3), false);
  equal(recordFailure(pool, 0, 200, 3), true, "the third failure reaches 3");
  equal(recordFailure(pool, 0, 200, 3), false, "only once");
  equal(totals(pool, 0).ejections, 1n);
  await new Promise((resolve) => setTimeout(resolve, 250));
  equal(recordFailure(pool, 0, 200, 3), false, "a new window starts from 1");
  equal(failureCount(pool, 0), 1);
  equal(recordFailure(pool, 0, 200, 0), false, "0 disables ejection");
});

Deno.test("coming back up clears the passive failure count", () => {
  const pool = createPool(4);
  setMembers(pool, [0]);
  recordFailure(pool, 0, 10_000, 5);
  recordFailure(pool, 0, 10_000, 5);
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
