import { deepEqual, equal, ok as assert } from "node:assert/strict";
import type { Backend } from "../../lib/config/config.ts";
import {
  jittered,
  probeHttp,
  probeTcp,
  startHealthChecks,
  type Target,
} from "../../lib/control/health.ts";
import {
  createPool,
  isAlive,
  probeStreak,
  recordProbe,
  setAlive,
  setMembers,
} from "../../lib/balance/pool.ts";
import { connectSourcePorts } from "../support/ephemeral.ts";
import { rawBackend, recordingBackend, waitFor } from "../support/helpers.ts";

function backendAt(port: number): Backend {
  return { url: `http://127.0.0.1:${port}`, hostname: "127.0.0.1", port, weight: 1, tls: false };
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
  const result = await probeTcp(backendAt(freePort()), 1000);
  deepEqual([result.ok, !result.ok && result.reason], [false, "connection refused"]);
});

Deno.test("probeTcp() fails a self-connect as refused (a storm of probes to dead ephemeral ports)", async () => {
  const ports = await connectSourcePorts(16);
  // connectTcp() logs each self-connect it refuses: that is how the test knows one happened.
  const lines: string[] = [];
  const write = console.error;
  console.error = (...args: unknown[]) => lines.push(args.join(" "));
  let probes = 0;
  try {
    for (let round = 0; round < 4000 && lines.length === 0; round++) {
      for (const port of ports) {
        probes++;
        const result = await probeTcp(backendAt(port), 1000);
        deepEqual([result.ok, !result.ok && result.reason], [false, "connection refused"]);
      }
    }
  } finally {
    console.error = write;
  }
  if (!lines.some((line) => line.includes("self-connect:"))) {
    console.log(`skipped: no self-connect in ${probes} probes over ${ports.length} ports`);
  }
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

Deno.test("probeHttp() is healthy on 2xx/3xx, not on 4xx/5xx, garbage or silence", async (t) => {
  let status = 200;
  const backend = recordingBackend(() => new Response(status === 204 ? null : "ok", { status }));
  const port = backend.port;
  try {
    for (
      const [code, ok] of [[200, true], [204, true], [302, true], [404, false], [
        503,
        false,
      ]] as const
    ) {
      await t.step(`HTTP ${code}`, async () => {
        status = code;
        const result = await probeHttp(backendAt(port), "/healthz", 1000);
        equal(result.ok, ok);
        if (!result.ok) equal(result.reason, `health check got HTTP ${code}`);
      });
    }
    await t.step("sends GET path with the backend's Host and closes", () => {
      const seen = backend.requests.at(-1)!;
      equal(new URL(seen.url).pathname, "/healthz");
      equal(seen.headers.get("host"), `127.0.0.1:${port}`);
      equal(seen.headers.get("connection"), "close");
    });
  } finally {
    await backend.close();
  }
  const garbage = rawBackend(async (_r, conn) => {
    await conn.write(new TextEncoder().encode("SSH-2.0\r\n\r\n"));
  });
  const releases: (() => void)[] = [];
  const silent = rawBackend(() => new Promise((resolve) => releases.push(resolve)));
  try {
    await t.step("garbage", async () => {
      const result = await probeHttp(backendAt(garbage.port), "/", 1000);
      deepEqual([result.ok, !result.ok && result.reason], [
        false,
        "health check: invalid HTTP version",
      ]);
    });
    await t.step("an accepted connection that never answers times out", async () => {
      const started = Date.now();
      const result = await probeHttp(backendAt(silent.port), "/", 200);
      deepEqual([result.ok, !result.ok && result.reason], [false, "health check timed out"]);
      assert(Date.now() - started < 1000);
    });
  } finally {
    for (const release of releases) release();
    await Promise.all([garbage.close(), silent.close()]);
  }
});

Deno.test("checkNow(slots) probes only those; a backend that joined down comes up on its first passed probe, whatever rise", async () => {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const pool = createPool(4);
  setMembers(pool, [0]);
  setMembers(pool, [0, 1, 2], [1, 1, 1], { alive: false });
  recordProbe(pool, 0, false, 1000); // an old member, probed before, that went down:
  setAlive(pool, 0, false); // it needs `rise` passes in a row
  const probed: number[] = [];
  const checker = startHealthChecks(pool, [
    { slot: 0, backend: backendAt(listener.addr.port) },
    { slot: 1, backend: backendAt(listener.addr.port) },
    { slot: 2, backend: backendAt(freePort()) },
  ], { interval: 60_000, timeout: 500, rise: 3, onProbe: (t) => probed.push(t.slot) });
  try {
    await checker.checkNow([1, 2]);
    deepEqual(probed.sort(), [1, 2]);
    deepEqual([isAlive(pool, 0), isAlive(pool, 1), isAlive(pool, 2)], [false, true, false]);
    await checker.checkNow([0]);
    equal(isAlive(pool, 0), false, "one pass of three");
  } finally {
    await checker.stop();
    listener.close();
  }
});

Deno.test("--health-rise and --health-fall need that many probes in a row", async () => {
  let healthy = true;
  const backend = recordingBackend(() => new Response("", { status: healthy ? 200 : 500 }));
  const pool = createPool(4);
  setMembers(pool, [0]);
  // Every probe result and transition, in order: a transition follows the probe that made it.
  const events: string[] = [];
  const checker = startHealthChecks(pool, [{ slot: 0, backend: backendAt(backend.port) }], {
    interval: 20,
    timeout: 500,
    path: "/",
    rise: 3,
    fall: 2,
    onProbe: (_t, result) => events.push(result.ok ? "pass" : "fail"),
    onTransition: (_t, up) => events.push(up ? "UP" : "DOWN"),
  });
  /** How many of `kind` come right before `at` in a row. */
  const run = (at: number, kind: string) => {
    let n = 0;
    while (events[at - 1 - n] === kind) n++;
    return n;
  };
  try {
    await waitFor(() => events.includes("pass"), { what: "a passed probe" });
    healthy = false;
    await waitFor(() => !isAlive(pool, 0), { what: "DOWN" });
    equal(run(events.indexOf("DOWN"), "fail"), 2, "DOWN at the second failure in a row");
    assert(probeStreak(pool, 0).misses >= 2, "the streak counts the misses");
    healthy = true;
    await waitFor(() => isAlive(pool, 0), { what: "UP" });
    equal(run(events.indexOf("UP"), "pass"), 3, "UP at the third pass in a row");
    deepEqual(events.filter((e) => e === "UP" || e === "DOWN"), ["DOWN", "UP"]);
  } finally {
    await checker.stop();
    await backend.close();
  }
});

Deno.test("a backend whose check hangs does not delay the others' checks", async () => {
  const releases: (() => void)[] = [];
  const hanging = rawBackend(() => new Promise((resolve) => releases.push(resolve)));
  const pool = createPool(4);
  setMembers(pool, [0, 1]);
  const dead = freePort();
  const checker = startHealthChecks(pool, [
    { slot: 0, backend: backendAt(hanging.port) },
    { slot: 1, backend: backendAt(dead) },
  ], { interval: 20, timeout: 5_000, path: "/" });
  try {
    const started = Date.now();
    await waitFor(() => !isAlive(pool, 1), { what: "the dead backend DOWN" });
    assert(Date.now() - started < 1_000, "well within the 5 s the hanging check may take");
    equal(isAlive(pool, 0), true, "the hanging check has not finished");
  } finally {
    await checker.stop();
    for (const release of releases) release();
    await hanging.close();
  }
});

Deno.test("update() adds and drops targets without restarting the ones that stay", async () => {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const pool = createPool(4);
  setMembers(pool, [0, 1]);
  const probed: number[] = [];
  const options = { interval: 20, timeout: 500, onProbe: (t: Target) => probed.push(t.slot) };
  const checker = startHealthChecks(
    pool,
    [{ slot: 0, backend: backendAt(listener.addr.port) }],
    options,
  );
  try {
    await waitFor(() => probed.includes(0), { what: "slot 0 probed" });
    checker.update([{ slot: 1, backend: backendAt(freePort()) }], options);
    await waitFor(() => !isAlive(pool, 1), { what: "slot 1 probed and DOWN" });
    const count = probed.filter((s) => s === 0).length;
    await new Promise((resolve) => setTimeout(resolve, 100));
    equal(probed.filter((s) => s === 0).length, count, "slot 0 no longer probed");
  } finally {
    await checker.stop();
    listener.close();
  }
});

Deno.test("jittered() spreads probe intervals by ±10%", () => {
  equal(jittered(1000, 0), 900);
  equal(jittered(1000, 0.5), 1000);
  assert(jittered(1000, 0.999) < 1100);
  const samples = Array.from({ length: 200 }, () => jittered(1000));
  assert(samples.every((ms) => ms >= 900 && ms < 1100));
  assert(new Set(samples).size > 150, "not in step");
});

Deno.test("a probe of a removed backend, still under way, never lands on the backend that reuses its slot", async () => {
  // A accepts and never answers, so its HTTP probe hangs until the timeout. While it hangs, A is
  // removed and C takes slot 0: A's late result must not mark C down, nor keep a loop for A.
  const hangs: Deno.Conn[] = [];
  const a = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const accepting = (async () => {
    for await (const conn of a) hangs.push(conn);
  })();
  const c = recordingBackend(() => new Response("ok"));
  const pool = createPool(4);
  setMembers(pool, [0]);
  const transitions: string[] = [];
  const options = {
    interval: 50,
    timeout: 300,
    path: "/h",
    onTransition: (t: Target, up: boolean) =>
      transitions.push(`${t.backend.port} ${up ? "UP" : "DOWN"}`),
  };
  const checker = startHealthChecks(pool, [{ slot: 0, backend: backendAt(a.addr.port) }], options);
  try {
    await waitFor(() => hangs.length > 0, { what: "A's probe to connect" });
    const cPort = Number(new URL(c.url).port);
    checker.update([{ slot: 0, backend: backendAt(cPort) }], options);
    // A's probe times out 300 ms after it began; C is probed every 50 ms meanwhile.
    await waitFor(() => c.requests.length >= 10, { what: "C to be probed for a while" });
    assert(isAlive(pool, 0), transitions.join(", "));
    deepEqual(transitions.filter((t) => t.startsWith(`${a.addr.port}`)), []);
    const probesOfA = hangs.length;
    await waitFor(() => c.requests.length >= 16, { what: "C to be probed some more" });
    equal(hangs.length, probesOfA, "no loop is left probing A");
  } finally {
    await checker.stop();
    for (const conn of hangs) conn.close();
    a.close();
    await accepting;
    await c.close();
  }
});
