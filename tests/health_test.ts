import { deepEqual, equal, ok as assert } from "node:assert/strict";
import type { Backend } from "../lib/config.ts";
import { probeTcp, startHealthChecks, type Target } from "../lib/health.ts";
import { createPool, isAlive, setAlive, setMembers } from "../lib/pool.ts";
import { waitFor } from "./helpers.ts";

function backendAt(port: number): Backend {
  return { url: `http://127.0.0.1:${port}`, hostname: "127.0.0.1", port };
}

function freePort(): number {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = listener.addr.port;
  listener.close();
  return port;
}

Deno.test("probeTcp() succeeds on a listener and leaves no connection open", async () => {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  try {
    const accepted = listener.accept();
    const result = await probeTcp(backendAt(listener.addr.port), 1000);
    assert(result.ok);
    const conn = await accepted;
    // The probe closed its end: the server side reads end-of-stream.
    equal(await conn.read(new Uint8Array(1)), null);
    conn.close();
  } finally {
    listener.close();
  }
});

Deno.test("probeTcp() reports a refused connection", async () => {
  deepEqual(await probeTcp(backendAt(freePort()), 1000), {
    ok: false,
    reason: "connection refused",
  });
});

Deno.test("startHealthChecks() marks a dead backend DOWN and a recovered one UP, once each", async () => {
  const port = freePort();
  const pool = createPool(4);
  setMembers(pool, [0]);
  const transitions: string[] = [];
  const target: Target = { slot: 0, backend: backendAt(port) };
  const checker = startHealthChecks(pool, [target], {
    interval: 50,
    timeout: 500,
    onTransition: (_t, up, reason) => transitions.push(up ? "UP" : `DOWN: ${reason}`),
  });
  try {
    await waitFor(() => !isAlive(pool, 0), { what: "DOWN" });
    const server = Deno.serve(
      { hostname: "127.0.0.1", port, onListen: () => {} },
      () => new Response("ok"),
    );
    await waitFor(() => isAlive(pool, 0), { what: "UP" });
    await server.shutdown();
    await waitFor(() => !isAlive(pool, 0), { what: "DOWN again" });
    deepEqual(transitions, ["DOWN: connection refused", "UP", "DOWN: connection refused"]);
  } finally {
    await checker.stop();
  }
});

Deno.test("checkNow() probes every backend at once and revives one marked dead passively", async () => {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const pool = createPool(4);
  setMembers(pool, [0, 1]);
  setAlive(pool, 0, false); // as a worker does when a request fails
  const checker = startHealthChecks(pool, [
    { slot: 0, backend: backendAt(listener.addr.port) },
    { slot: 1, backend: backendAt(freePort()) },
  ], { interval: 60_000, timeout: 500 });
  try {
    await checker.checkNow();
    equal(isAlive(pool, 0), true);
    equal(isAlive(pool, 1), false);
  } finally {
    await checker.stop();
    listener.close();
  }
});
