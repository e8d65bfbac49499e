import { deepEqual, equal, match, ok as assert } from "node:assert/strict";
import {
  bannerAt,
  get,
  recordingBackend,
  ROOT,
  runGoround,
  sendSignal,
  startGoround,
  waitFor,
} from "../support/helpers.ts";

// deno-lint-ignore no-explicit-any
type Json = any;

async function status(adminUrl: string): Promise<Json> {
  const res = await fetch(`${adminUrl}/status`);
  equal(res.status, 200);
  return await res.json();
}

async function call(
  url: string,
  method: string,
  body?: unknown,
): Promise<{ status: number; json: Json }> {
  // Every change to the admin API is sent as JSON, with a body or not.
  const res = await fetch(url, {
    method,
    headers: { "content-type": "application/json" },
    ...(body === undefined ? {} : { body: JSON.stringify(body) }),
  });
  const text = await res.text();
  let json: Json = null;
  try {
    json = JSON.parse(text);
  } catch {
    json = text;
  }
  return { status: res.status, json };
}

Deno.test("GET /status reports the proxy and each backend from shared memory", async () => {
  const a = recordingBackend(() => new Response("a"));
  const b = recordingBackend(() => new Response("b"));
  const proxy = await startGoround([
    "--backend",
    a.url,
    "--backend",
    b.url,
    "--workers",
    "2",
    "--health-interval",
    "200ms",
  ]);
  try {
    for (let i = 0; i < 10; i++) await get(proxy.url);
    const report = await status(proxy.adminUrl);
    deepEqual(
      report.backends.map((x: Json) => [x.why, x.lastError]),
      [[null, null], [null, null]],
      "no reason and no error while up",
    );
    equal(report.workers, 2);
    equal(report.algorithm, "round-robin");
    equal(report.engine, "goround");
    match(report.version, /^\d+\.\d+\.\d+$/);
    assert(report.uptimeSeconds >= 0);
    equal(report.listen, `127.0.0.1:${proxy.port}`);
    deepEqual(report.backends.map((x: Json) => [x.id, x.url, x.state, x.requests, x.inFlight]), [
      [0, a.url, "up", 5, 0],
      [1, b.url, "up", 5, 0],
    ]);
    await waitFor(async () => (await status(proxy.adminUrl)).backends[0].checkPasses >= 2, {
      what: "probe streaks",
    });
    const backend = (await status(proxy.adminUrl)).backends[0];
    assert(backend.checkLatencyMs !== null && backend.checkLatencyMs >= 0);
    await b.close();
    await waitFor(async () => (await status(proxy.adminUrl)).backends[1].state === "down", {
      what: "b down",
    });
    const down = (await status(proxy.adminUrl)).backends[1];
    equal(down.why, "connection refused");
    equal(down.lastError.reason, "connection refused");
    assert(Date.parse(down.lastError.at) > Date.now() - 60_000, down.lastError.at);
    assert(down.checkFails >= 1);
    assert(Date.parse(down.lastTransition) > Date.now() - 60_000);
    // Back on the same port: up, no reason shown, and the last error kept with its time.
    const again = Deno.serve(
      { hostname: "127.0.0.1", port: b.port, onListen: () => {} },
      () => new Response("b"),
    );
    try {
      await waitFor(async () => (await status(proxy.adminUrl)).backends[1].state === "up", {
        what: "b up again",
      });
      const up = (await status(proxy.adminUrl)).backends[1];
      equal(up.why, null, "why only while down");
      // Later failed probes may renew the error's time before the port listens again.
      equal(up.lastError.reason, down.lastError.reason);
      assert(Date.parse(up.lastError.at) >= Date.parse(down.lastError.at), up.lastError.at);
    } finally {
      await again.shutdown();
    }
  } finally {
    await proxy.stop();
    await a.close();
  }
});

Deno.test("drain: no new requests, in-flight counts down to 0 and the state becomes drained; enable undoes it", async () => {
  let release = () => {};
  const gate = new Promise<void>((resolve) => (release = resolve));
  const slow = recordingBackend(async () => {
    await gate;
    return new Response("slow");
  });
  const fast = recordingBackend(() => new Response("fast"));
  const proxy = await startGoround([
    "--backend",
    slow.url,
    "--backend",
    fast.url,
    "--workers",
    "1",
  ]);
  try {
    const pending = get(proxy.url); // held by the slow backend
    await waitFor(() => slow.requests.length === 1, { what: "the request to arrive" });
    const drained = await call(`${proxy.adminUrl}/backends/0/drain`, "POST");
    equal(drained.status, 200);
    equal(drained.json.state, "draining");
    equal(drained.json.inFlight, 1);
    for (let i = 0; i < 4; i++) equal((await get(proxy.url)).text, "fast");
    equal(slow.requests.length, 1, "no new request reached the draining backend");
    release();
    equal((await pending).text, "slow", "the in-flight request finished");
    await waitFor(async () => (await status(proxy.adminUrl)).backends[0].state === "drained", {
      what: "drained",
    });
    equal((await call(`${proxy.adminUrl}/backends/0/enable`, "POST")).json.state, "up");
    const replies = [];
    for (let i = 0; i < 2; i++) replies.push((await get(proxy.url)).text);
    assert(replies.includes("slow"));
    equal((await call(`${proxy.adminUrl}/backends/7/drain`, "POST")).status, 404);
    equal((await call(`${proxy.adminUrl}/backends/0/drain`, "GET")).status, 405);
  } finally {
    release();
    await proxy.stop();
    await Promise.all([slow.close(), fast.close()]);
  }
});

Deno.test("POST /backends and DELETE /backends/{id}: the pool changes without dropping connections or counters", async () => {
  const a = recordingBackend(() => new Response("a"));
  const b = recordingBackend(() => new Response("b"));
  const proxy = await startGoround(["--backend", a.url, "--workers", "2"]);
  const client = Deno.createHttpClient({}); // one kept-alive client connection throughout
  const ask = async () => await (await fetch(proxy.url, { client })).text();
  try {
    for (let i = 0; i < 4; i++) equal(await ask(), "a");
    const added = await call(`${proxy.adminUrl}/backends`, "POST", { url: b.url });
    equal(added.status, 201);
    equal(added.json.url, b.url);
    const mixed = [await ask(), await ask(), await ask(), await ask()].sort();
    deepEqual(mixed, ["a", "a", "b", "b"]);
    equal((await status(proxy.adminUrl)).backends[0].requests, 6, "a kept its counts");
    equal(
      (await call(`${proxy.adminUrl}/backends`, "POST", { url: b.url })).status,
      400,
      "no duplicates",
    );
    equal((await call(`${proxy.adminUrl}/backends`, "POST", { url: "ftp://x" })).status, 400);
    equal((await call(`${proxy.adminUrl}/backends/0`, "DELETE")).status, 204);
    for (let i = 0; i < 4; i++) equal(await ask(), "b");
    equal(
      (await call(`${proxy.adminUrl}/backends/${added.json.id}`, "DELETE")).status,
      400,
      "not the last one",
    );
    assert(proxy.stderr.every((l) => !/internal error/.test(l)));
  } finally {
    client.close();
    await proxy.stop();
    await Promise.all([a.close(), b.close()]);
  }
});

/** A port where nothing listens and nothing can (below 1024, and goround's own ports are
 * picked from the ephemeral range): a freed port of that range may be given to goround
 * itself, which refuses its own address as a backend. */
function deadPort(): number {
  return 1;
}

Deno.test("POST /backends: a backend that is not listening joins down and gets no traffic", async () => {
  const a = recordingBackend(() => new Response("a"));
  const dead = `http://127.0.0.1:${deadPort()}`;
  const proxy = await startGoround(["--backend", a.url, "--workers", "2"]);
  try {
    const added = await call(`${proxy.adminUrl}/backends`, "POST", { url: dead });
    equal(added.status, 201);
    deepEqual(
      [added.json.url, added.json.state, added.json.why],
      [dead, "down", "connection refused"],
      "the 201 shows its first health check",
    );
    for (let i = 0; i < 8; i++) equal((await get(proxy.url)).status, 200);
    const report = (await status(proxy.adminUrl)).backends.find((b: Json) => b.url === dead);
    deepEqual([report.state, report.requests, report.failures], ["down", 0, 0], "no request");
    equal(a.requests.length, 8);
  } finally {
    await proxy.stop();
    await a.close();
  }
});

Deno.test("POST /backends: a new backend waits for its first health check, then takes traffic", async () => {
  let pass = () => {};
  const checked = new Promise<void>((resolve) => (pass = resolve));
  const a = recordingBackend(() => new Response("a"));
  const b = recordingBackend(async (req) => {
    if (new URL(req.url).pathname === "/healthz") await checked; // the check hangs until told
    return new Response("b");
  });
  const proxy = await startGoround([
    "--backend",
    a.url,
    "--workers",
    "1",
    "--health-path",
    "/healthz",
    "--health-timeout",
    "10s",
  ]);
  try {
    const adding = call(`${proxy.adminUrl}/backends`, "POST", { url: b.url });
    await waitFor(() => b.requests.some((r) => new URL(r.url).pathname === "/healthz"), {
      what: "b's first health check (at once, not after an interval)",
    });
    const waiting = (await status(proxy.adminUrl)).backends.find((x: Json) => x.url === b.url);
    deepEqual(
      [waiting.state, waiting.why, waiting.lastTransition],
      ["down", "waiting for its first health check", null],
    );
    for (let i = 0; i < 4; i++) equal((await get(proxy.url)).text, "a");
    pass();
    const added = await adding;
    equal(added.status, 201);
    deepEqual([added.json.state, added.json.why], ["up", null], "the 201 shows it up");
    const replies = [];
    for (let i = 0; i < 4; i++) replies.push((await get(proxy.url)).text);
    deepEqual(replies.sort(), ["a", "a", "b", "b"]);
  } finally {
    pass();
    await proxy.stop();
    await Promise.all([a.close(), b.close()]);
  }
});

Deno.test("a reload that adds a backend that is not listening: it stays down, the others keep their state", async () => {
  const a = recordingBackend(() => new Response("a"));
  const b = recordingBackend(() => new Response("b"));
  const dead = `http://127.0.0.1:${deadPort()}`;
  const dir = await Deno.makeTempDir();
  const file = `${dir}/goround.json`;
  await Deno.writeTextFile(file, JSON.stringify({ backends: [a.url, b.url] }));
  const proxy = await startGoround(["--config", file, "--workers", "2"], { readable: dir });
  try {
    equal((await call(`${proxy.adminUrl}/backends/1/drain`, "POST")).status, 200);
    await Deno.writeTextFile(file, JSON.stringify({ backends: [a.url, b.url, dead] }));
    await sendSignal(proxy.pid, "HUP");
    await waitFor(() => proxy.stderr.some((l) => l.includes("reloaded")), { what: "the reload" });
    for (let i = 0; i < 6; i++) equal((await get(proxy.url)).text, "a");
    const report = (await status(proxy.adminUrl)).backends;
    deepEqual(
      report.map((x: Json) => [x.url, x.state, x.requests]),
      [[a.url, "up", 6], [b.url, "drained", 0], [dead, "down", 0]],
    );
  } finally {
    await proxy.stop();
    await Promise.all([a.close(), b.close()]);
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("access log: combined by default, json on request, off; one line per request on stdout", async (t) => {
  const backend = recordingBackend(() => new Response("hello"));
  for (const format of ["combined", "json", "off"] as const) {
    await t.step(format, async () => {
      const proxy = await startGoround([
        "--backend",
        backend.url,
        "--workers",
        "1",
        "--access-log",
        format,
      ]);
      try {
        await get(`${proxy.url}/path?q=1`, {
          headers: { "user-agent": "test-agent", "x-request-id": "abc-123" },
        });
        await get(`${proxy.url}/other`);
        if (format === "off") {
          await new Promise((resolve) => setTimeout(resolve, 200));
          equal(proxy.stdout.filter((l) => l.includes("/path")).length, 0);
          return;
        }
        await waitFor(() => proxy.stdout.some((l) => l.includes("/other")), {
          what: "the log lines",
        });
        const line = proxy.stdout.find((l) => l.includes("/path"))!;
        if (format === "combined") {
          match(
            line,
            new RegExp(
              `^127\\.0\\.0\\.1 - - \\[\\d{2}/\\w{3}/\\d{4}:\\d{2}:\\d{2}:\\d{2} \\+0000\\] "GET /path\\?q=1 HTTP/1\\.1" 200 5 "-" "test-agent" rt=\\d+\\.\\d{3} backend=${backend.url} retries=0 id=abc-123$`,
            ),
          );
        } else {
          const entry = JSON.parse(line);
          deepEqual(
            [
              entry.client,
              entry.method,
              entry.path,
              entry.status,
              entry.bytes,
              entry.backend,
              entry.retries,
              entry.request_id,
            ],
            ["127.0.0.1", "GET", "/path?q=1", 200, 5, backend.url, 0, "abc-123"],
          );
          assert(entry.duration_ms >= 0 && entry.user_agent === "test-agent");
        }
      } finally {
        await proxy.stop();
      }
    });
  }
  await backend.close();
});

Deno.test("X-Request-Id: a valid one is kept, otherwise one is made; both ways; --expose-backend", async () => {
  const backend = recordingBackend(() => new Response("ok"));
  const proxy = await startGoround([
    "--backend",
    backend.url,
    "--workers",
    "1",
    "--expose-backend",
  ]);
  try {
    const kept = await get(proxy.url, { headers: { "x-request-id": "client-id.42" } });
    equal(kept.headers.get("x-request-id"), "client-id.42");
    equal(backend.requests.at(-1)!.headers.get("x-request-id"), "client-id.42");
    equal(kept.headers.get("x-goround-backend"), backend.url);
    const forged = await get(proxy.url, { headers: { "x-request-id": "bad id with spaces" } });
    const made = forged.headers.get("x-request-id")!;
    match(made, /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-z]+$/, "a prefix per thread and a counter");
    equal(backend.requests.at(-1)!.headers.get("x-request-id"), made);
  } finally {
    await proxy.stop();
    await backend.close();
  }
  const plain = recordingBackend(() => new Response("ok"));
  const quiet = await startGoround(["--backend", plain.url, "--workers", "1"]);
  try {
    equal((await get(quiet.url)).headers.get("x-goround-backend"), null, "off by default");
  } finally {
    await quiet.stop();
    await plain.close();
  }
});

Deno.test("the banner lists each backend with its first probe result, the workers and the admin URL", async () => {
  const up = recordingBackend(() => new Response("ok"));
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const deadPort = listener.addr.port;
  listener.close();
  const proxy = await startGoround([
    "--backend",
    up.url,
    "--backend",
    `http://127.0.0.1:${deadPort}`,
    "--workers",
    "1",
  ]);
  try {
    match(proxy.stderr[bannerAt(proxy.stderr)]!, /^Load Balancer started at 127\.0\.0\.1:\d+$/);
    equal(
      proxy.stderr[bannerAt(proxy.stderr) + 1],
      `  backends: ${up.url} up, http://127.0.0.1:${deadPort} down (connection refused)`,
      "no colour codes when stderr is not a terminal",
    );
    match(proxy.stderr.join("\n"), /workers: 1/);
    match(proxy.stderr.join("\n"), /^ {2}admin: http:\/\/127\.0\.0\.1:\d+\/$/m);
  } finally {
    await proxy.stop();
    await up.close();
  }
});

Deno.test("goround check --config validates a file and prints the effective settings", async () => {
  const dir = await Deno.makeTempDir();
  try {
    await Deno.writeTextFile(
      `${dir}/good.json`,
      JSON.stringify({ backends: ["http://127.0.0.1:1"], "health-interval": "5s" }),
    );
    await Deno.writeTextFile(`${dir}/bad.json`, JSON.stringify({ "health-interval": "never" }));
    const run = (file: string) =>
      new Deno.Command(Deno.execPath(), {
        args: [
          "run",
          `--allow-read=${ROOT},${dir}`,
          "--allow-env=GOROUND_*",
          `${ROOT}main.ts`,
          "check",
          "--config",
          file,
        ],
        stdin: "null",
      }).output();
    const good = await run(`${dir}/good.json`);
    equal(good.code, 0);
    const text = new TextDecoder().decode(good.stdout);
    match(text, /good\.json: valid/);
    const printed = JSON.parse(text.slice(text.indexOf("{")));
    equal(printed.healthInterval, 5000);
    equal(printed.backends[0].url, "http://127.0.0.1:1");
    const bad = await run(`${dir}/bad.json`);
    equal(bad.code, 2);
    match(
      new TextDecoder().decode(bad.stderr),
      /bad\.json: health-interval: "never" is not a duration/,
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
  const { code } = await runGoround(["check", "--backend", "http://127.0.0.1:1"]);
  equal(code, 0, "flags alone work too");
});

Deno.test("POST /backends: a pool holds 64 backends (or twice those it started with); the next is refused with 400", async () => {
  const a = recordingBackend(() => new Response("a"));
  const proxy = await startGoround([
    "--backend",
    a.url,
    "--workers",
    "1",
    "--health-timeout",
    "200ms",
  ]);
  try {
    // Ports below 1024 where nothing listens: each joins down, after one refused probe.
    for (let port = 2; port <= 64; port++) {
      const added = await call(`${proxy.adminUrl}/backends`, "POST", {
        url: `http://127.0.0.1:${port}`,
      });
      equal(added.status, 201, `backend ${port}`);
    }
    const over = await call(`${proxy.adminUrl}/backends`, "POST", { url: "http://127.0.0.1:65" });
    equal(over.status, 400);
    match(String(over.json), /more backends than the 64 a pool holds/);
    equal((await status(proxy.adminUrl)).backends.length, 64);
    equal((await get(proxy.url)).status, 200, "the pool still serves");
  } finally {
    await proxy.stop();
    await a.close();
  }
});
