import { equal } from "node:assert/strict";
import { UpstreamError } from "../../lib/errors.ts";
import {
  afterFailure,
  afterStatus,
  canRetry,
  countsAgainst,
  failedAlike,
  failureSignature,
  marksDown,
} from "../../lib/proxy/retry.ts";

const refused = new UpstreamError("connect", "connection refused", { sent: false, reused: false });
const reset = new UpstreamError("reset", "connection closed before a response", {
  sent: true,
  reused: false,
});
const stale = new UpstreamError("reset", "connection reset", { sent: true, reused: true });
const timeout = new UpstreamError("timeout", "timed out waiting for the response", {
  sent: true,
  reused: false,
});
const garbage = new UpstreamError("protocol", "invalid status line", { sent: true, reused: true });
const client = new UpstreamError("client", "the client's body broke off", {
  sent: true,
  reused: false,
});

Deno.test("marksDown(): only a connection that could not be opened", () => {
  equal(marksDown(refused), true);
  for (const error of [reset, stale, timeout, garbage, client]) equal(marksDown(error), false);
});

Deno.test("countsAgainst(): resets on a fresh connection, timeouts and bad responses", () => {
  for (const error of [reset, timeout, garbage]) equal(countsAgainst(error), true, error.message);
  for (const error of [refused, stale, client]) equal(countsAgainst(error), false, error.message);
});

Deno.test("failedAlike(): the same status, or the same kind of error, a second time", () => {
  equal(failureSignature(500), 500);
  equal(failedAlike(null, failureSignature(reset)), false, "the first failure");
  equal(failedAlike([failureSignature(reset)], failureSignature(reset)), true);
  equal(failedAlike([failureSignature(timeout)], failureSignature(timeout)), true);
  equal(failedAlike([failureSignature(reset)], failureSignature(timeout)), false);
  equal(failedAlike([500], 500), true);
  equal(failedAlike([500], 503), false);
  equal(failedAlike([502, -1], 502), true, "any earlier failure");
  equal(failureSignature(refused), 0, "a refused connection says nothing about the request");
  equal(failedAlike([0], failureSignature(refused)), false);
  equal(failedAlike([-1], failureSignature(stale)), false, "a stale pooled connection neither");
});

Deno.test("canRetry(): refused always; sent only when idempotent and replayable", () => {
  equal(canRetry(refused, "POST", false), true);
  equal(canRetry(reset, "GET", true), true);
  equal(canRetry(reset, "POST", true), false);
  equal(canRetry(reset, "PUT", false), false);
  equal(canRetry(client, "GET", true), false);
});

Deno.test("afterFailure() and afterStatus(): the retry decisions, one step each", () => {
  const get = { method: "GET", replayable: true, retries: 0, limit: 2, seen: null };
  const broke = new UpstreamError("reset", "connection reset", { sent: true, reused: false });
  const stale = new UpstreamError("reset", "closed", { sent: true, reused: true });
  equal(afterFailure(stale, get, false), "fresh", "a pooled connection found closed");
  equal(afterFailure(stale, get, true), "retry", "only once on a new connection");
  equal(afterFailure(broke, get, false), "retry");
  equal(afterFailure(broke, { ...get, seen: [failureSignature(broke)] }, false), "alike");
  equal(afterFailure(broke, { ...get, retries: 2 }, false), "give-up", "--retries spent");
  equal(afterFailure(broke, { ...get, method: "POST" }, false), "give-up", "sent, not idempotent");
  equal(afterStatus(503, [503], get), "retry");
  equal(afterStatus(503, [503], { ...get, seen: [503] }), "alike");
  equal(afterStatus(500, [503], get), "pass");
  equal(afterStatus(503, [503], { ...get, method: "POST" }), "pass");
});
