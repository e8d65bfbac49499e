import { deepEqual, equal, ok as assert } from "node:assert/strict";
import {
  acceptBackoff,
  acceptFailed,
  acceptWorked,
  backoffBegins,
  backoffEnds,
  isPeerGone,
  MAX_DELAY_MS,
} from "../../lib/front/accept_backoff.ts";

Deno.test("acceptFailed() waits 10 ms doubling to 1 s; acceptWorked() starts over", () => {
  const state = acceptBackoff();
  const waits = Array.from({ length: 9 }, (_, i) => acceptFailed(state, 5000 + i));
  deepEqual(waits, [10, 20, 40, 80, 160, 320, 640, 1000, 1000]);
  equal(state.since, 5000, "the episode began with the first failure");
  equal(acceptWorked(state, 5100), 0, "an accept that works soon after: the same episode");
  equal(acceptFailed(state, 5200), 10, "the waits start over");
  equal(acceptWorked(state, 6200), 10, "quiet for a second: the episode's failures");
  equal(acceptWorked(state, 7000), 0, "no episode now");
  equal(acceptFailed(state, 8000), 10);
  equal(state.since, 8000, "a new episode");
  equal(MAX_DELAY_MS, 1000);
});

Deno.test("isPeerGone() is a connection reset in the backlog, not a shortage", () => {
  assert(isPeerGone(new Deno.errors.NotConnected("Transport endpoint is not connected")));
  assert(isPeerGone(new Deno.errors.ConnectionReset("reset")));
  assert(isPeerGone(new Deno.errors.ConnectionAborted("aborted")));
  const emfile = Object.assign(new Error("Too many open files (os error 24)"), { code: "EMFILE" });
  assert(!isPeerGone(emfile));
});

Deno.test("the episode's lines say what failed, what goround does, and for how long", () => {
  const emfile = Object.assign(new Error("Too many open files (os error 24)"), { code: "EMFILE" });
  equal(
    backoffBegins(emfile),
    "accept failed: Too many open files (os error 24) (every file descriptor is in use: raise " +
      "ulimit -n); trying again after 10 ms, doubling to 1000 ms, until it works",
  );
  const state = { ...acceptBackoff(), since: 1000, last: 3500 };
  equal(backoffEnds(42, state), "accepting again: 42 accepts failed in 2.5 s");
});
