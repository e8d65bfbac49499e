// Health of goround itself: /healthz (liveness) and /readyz (readiness) on the admin listener,
// probed as Kubernetes does, while real backend processes die and come back.
import { deepEqual, equal, match, ok as assert } from "node:assert/strict";
import { type BackendProcess, spawnBackend } from "../../dummy_servers.ts";
import { readiness } from "../../lib/admin/readiness.ts";
import { get, type Goround, recordingBackend, startGoround, waitFor } from "../support/helpers.ts";
import { field, rawRequest } from "../support/raw_client.ts";

Deno.test("readiness() is ready while one backend is usable, else says what is out", async (t) => {
  const up = { usable: true, state: "up" } as const;
  const down = { usable: false, state: "down" } as const;
  await t.step("one usable backend is enough", () => {
    deepEqual(readiness([down, up, down], { panic: false }), {
      ready: true,
      reason: "ready: 1 of 3 backends usable",
    });
    equal(readiness([up], { panic: false }).reason, "ready: 1 of 1 backend usable");
  });
  await t.step("none usable: 503 material, counted by state", () => {
    deepEqual(readiness([down, down, down], { panic: false }), {
      ready: false,
      reason: "not ready: no usable backend (3 down)",
    });
    const mixed = readiness([
      { usable: false, state: "drained" },
      down,
      { usable: false, state: "draining" },
    ], { panic: false });
    equal(mixed.reason, "not ready: no usable backend (1 down, 1 draining, 1 drained)");
  });
  await t.step("a backend out by passive verdict alone still serves: ready", () => {
    // Selection falls back to it (a passive verdict never empties the pool), so clients get
    // answers: an orchestrator must not take goround out for it.
    deepEqual(readiness([down, down, { usable: false, state: "ejected" }], { panic: false }), {
      ready: true,
      reason:
        "ready: 0 of 3 backends usable; 1 ejected still takes requests (a passive verdict never empties the pool)",
    });
  });
  await t.step("panic mode does not make it ready", () => {
    deepEqual(readiness([down, down], { panic: true }), {
      ready: false,
      reason: "not ready: no usable backend (2 down, panic mode on)",
    });
  });
  await t.step("an empty pool is not ready", () => {
    deepEqual(readiness([], { panic: false }), {
      ready: false,
      reason: "not ready: no backend in the pool",
    });
  });
});

/** A raw request on a fresh connection, as a probe sends it. */
async function raw(proxy: Goround, method: string, path: string) {
  const port = Number(new URL(proxy.adminUrl).port);
  return await rawRequest(
    port,
    `${method} ${path} HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\nConnection: close\r\n\r\n`,
  );
}

/** `GET` and `HEAD` of `path` agree on status and headers; HEAD has no body. */
async function headMatchesGet(proxy: Goround, path: string): Promise<string> {
  const full = await raw(proxy, "GET", path);
  const head = await raw(proxy, "HEAD", path);
  equal(head.status, full.status, `HEAD ${path} status`);
  equal(head.body.length, 0, `HEAD ${path} sends no body`);
  const names = (r: typeof full) => r.headers.map(([n]) => n).filter((n) => n !== "date").sort();
  deepEqual(names(head), names(full), `HEAD ${path} has GET's fields`);
  equal(field(head, "content-length"), String(full.body.length), `HEAD ${path} Content-Length`);
  return new TextDecoder().decode(full.body);
}

Deno.test("/readyz: 200 with a live backend, 503 with the reason when all are killed, 200 when one returns; /healthz stays 200", async () => {
  let backends: BackendProcess[] = await Promise.all([spawnBackend(0), spawnBackend(0)]);
  const proxy = await startGoround([
    "--backends",
    backends.map((b) => `http://127.0.0.1:${b.port}`).join(","),
    "--workers",
    "1",
    "--health-interval",
    "100ms",
    "--health-fast-interval",
    "100ms",
    "--health-timeout",
    "500ms",
    "--access-log",
    "off",
  ]);
  // Liveness is polled the whole time, as a kubelet would; it must never fail.
  const live: number[] = [];
  let probing = true;
  const prober = (async () => {
    while (probing && live.length < 10_000) {
      live.push((await get(`${proxy.adminUrl}/healthz`)).status);
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
  })();
  const ready = async () => await get(`${proxy.adminUrl}/readyz`);
  try {
    await waitFor(async () => (await ready()).status === 200, {
      what: "ready",
      exited: proxy.exited,
    });
    const first = await ready();
    equal(first.text, "ready: 2 of 2 backends usable\n");
    match(first.headers.get("content-type") ?? "", /^text\/plain/);
    equal(first.headers.get("cache-control"), "no-store");
    equal(await headMatchesGet(proxy, "/readyz"), "ready: 2 of 2 backends usable\n");

    for (const b of backends) b.child.kill("SIGKILL");
    await Promise.all(backends.map((b) => b.exited));
    await waitFor(async () => (await ready()).status === 503, {
      what: "503 once the health checks see both dead",
      exited: proxy.exited,
    });
    equal((await ready()).text, "not ready: no usable backend (2 down)\n");
    equal(await headMatchesGet(proxy, "/readyz"), "not ready: no usable backend (2 down)\n");

    // Back on the same port: ready again.
    backends = [await spawnBackend(backends[1]!.port)];
    await waitFor(async () => (await ready()).status === 200, {
      what: "ready once a backend is back",
      exited: proxy.exited,
    });
    equal((await ready()).text, "ready: 1 of 2 backends usable\n");

    // Draining the only live one takes readiness away; enabling gives it back.
    const json = { method: "POST", headers: { "content-type": "application/json" } };
    equal((await get(`${proxy.adminUrl}/backends/1/drain`, json)).status, 200);
    const drained = await ready();
    equal(drained.status, 503);
    match(drained.text, /^not ready: no usable backend \(1 down, 1 drain(ing|ed)\)\n$/);
    equal((await get(`${proxy.adminUrl}/backends/1/enable`, json)).status, 200);
    equal((await ready()).status, 200);

    equal(await headMatchesGet(proxy, "/healthz"), "ok\n");
  } finally {
    probing = false;
    await prober;
    await proxy.stop();
    for (const b of backends) b.child.kill("SIGKILL");
    await Promise.all(backends.map((b) => b.exited));
  }
  assert(live.length > 0, "/healthz was polled");
  deepEqual([...new Set(live)], [200], "/healthz answered 200 every time");
});

Deno.test("HEAD /status answers as GET does, without a body", async () => {
  const backend = recordingBackend();
  const proxy = await startGoround(["--backend", backend.url, "--workers", "1"]);
  try {
    const head = await raw(proxy, "HEAD", "/status");
    equal(head.status, 200);
    equal(head.body.length, 0);
    match(field(head, "content-type") ?? "", /^application\/json/);
    assert(Number(field(head, "content-length")) > 100, "the length of the JSON report");
    const post = await get(`${proxy.adminUrl}/readyz`, {
      method: "POST",
      headers: { "content-type": "application/json" },
    });
    equal(post.status, 405);
    equal(post.headers.get("allow"), "GET, HEAD");
  } finally {
    await proxy.stop();
    await backend.close();
  }
});

Deno.test("with --admin-token, /healthz and /readyz need no token; /status still does", async () => {
  const backend = recordingBackend();
  const proxy = await startGoround([
    "--backend",
    backend.url,
    "--workers",
    "1",
    "--admin-token",
    "secret",
  ]);
  try {
    equal((await get(`${proxy.adminUrl}/healthz`)).status, 200);
    equal((await get(`${proxy.adminUrl}/readyz`)).status, 200);
    equal((await raw(proxy, "HEAD", "/readyz")).status, 200);
    equal((await get(`${proxy.adminUrl}/status`)).status, 401);
    equal((await raw(proxy, "HEAD", "/status")).status, 401);
    const auth = { headers: { authorization: "Bearer secret" } };
    equal((await get(`${proxy.adminUrl}/status`, auth)).status, 200);
    // The Host guard still applies: a rebound name gets nothing, probes included.
    const port = Number(new URL(proxy.adminUrl).port);
    const foreign = await rawRequest(
      port,
      `GET /readyz HTTP/1.1\r\nHost: evil.example:${port}\r\nConnection: close\r\n\r\n`,
    );
    equal(foreign.status, 403);
  } finally {
    await proxy.stop();
    await backend.close();
  }
});
