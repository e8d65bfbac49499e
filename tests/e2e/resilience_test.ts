import { deepEqual, equal, match, ok as assert } from "node:assert/strict";
import { ENGINES } from "../../lib/config/config.ts";
import {
  get,
  type Goround,
  goroundFor,
  rawBackend,
  recordingBackend,
  sendSignal,
  startGoround,
  waitFor,
} from "../support/helpers.ts";
import { rawRequest } from "../support/raw_client.ts";

/** A backend that accepts requests and never answers them (until released). */
function hangingBackend() {
  const releases: (() => void)[] = [];
  const backend = rawBackend((request) =>
    request === "" ? undefined : new Promise((resolve) => releases.push(resolve))
  );
  return {
    ...backend,
    close: async () => {
      for (const release of releases) release();
      await backend.close();
    },
  };
}

async function post(url: string, body: string): Promise<{ status: number; text: string }> {
  return await get(url, { method: "POST", body });
}

Deno.test("--response-timeout: a hanging backend costs a GET the timeout, then it is retried", async () => {
  const hang = hangingBackend();
  const ok = recordingBackend(() => new Response("ok"));
  const proxy = await startGoround([
    "--backend",
    hang.url,
    "--backend",
    ok.url,
    "--workers",
    "1",
    "--response-timeout",
    "300ms",
    "--max-fails",
    "0",
  ]);
  try {
    const started = Date.now();
    const res = await get(proxy.url); // the first request goes to the hanging backend
    const took = Date.now() - started;
    deepEqual([res.status, res.text], [200, "ok"]);
    assert(took >= 280 && took < 1500, `took ${took} ms`);
    await t_post(proxy.url);
  } finally {
    await proxy.stop();
    await Promise.all([hang.close(), ok.close()]);
  }

  async function t_post(url: string) {
    // A POST cannot be replayed after it was sent: the client gets 504 after the timeout.
    let status = 0;
    for (let i = 0; i < 2 && status !== 504; i++) status = (await post(url, "x")).status;
    equal(status, 504);
  }
});

Deno.test("--retries bounds the retries; 0 turns them off", async () => {
  const dead = rawBackend(() => {});
  const deadPort = dead.port;
  await dead.close();
  const ok = recordingBackend(() => new Response("ok"));
  const proxy = await startGoround([
    "--backend",
    `http://127.0.0.1:${deadPort}`,
    "--backend",
    ok.url,
    "--workers",
    "1",
    "--retries",
    "0",
    "--health-fall",
    "99", // keep the dead one in rotation, so every other request meets it
    "--health-interval",
    "1m",
  ]);
  try {
    const first = await get(proxy.url);
    // Not one attempt reached a backend: "no backend available", as when all are down.
    deepEqual([first.status, first.text], [503, "no backend available\n"], "no retry");
    equal(ok.requests.length, 0, "the other backend was not tried");
  } finally {
    await proxy.stop();
    await ok.close();
  }
});

Deno.test("a retryable status (500) from one backend is retried on another for GET, not for POST", async () => {
  const failing = recordingBackend(() => new Response("oops", { status: 500 }));
  const ok = recordingBackend(() => new Response("ok"));
  const proxy = await startGoround([
    "--backend",
    failing.url,
    "--backend",
    ok.url,
    "--workers",
    "1",
    "--max-fails",
    "0",
  ]);
  try {
    const gets = [];
    for (let i = 0; i < 4; i++) gets.push(await get(proxy.url));
    deepEqual(gets.map((r) => [r.status, r.text]), [[200, "ok"], [200, "ok"], [200, "ok"], [
      200,
      "ok",
    ]]);
    equal(
      failing.requests.length,
      4,
      "every GET met the failing backend first (the retry takes the next ticket)",
    );
    const posts = [];
    for (let i = 0; i < 2; i++) posts.push((await post(proxy.url, "x")).status);
    deepEqual(posts.sort(), [200, 500], "a POST gets the 500 as it is");
  } finally {
    await proxy.stop();
    await Promise.all([failing.close(), ok.close()]);
  }
});

Deno.test("when every backend answers 500, the client gets the last 500 (not a made-up 502)", async () => {
  const a = recordingBackend(() => new Response("a broke", { status: 500 }));
  const b = recordingBackend(() => new Response("b broke", { status: 500 }));
  const proxy = await startGoround([
    "--backend",
    a.url,
    "--backend",
    b.url,
    "--workers",
    "1",
    "--max-fails",
    "0",
  ]);
  try {
    const res = await get(proxy.url);
    equal(res.status, 500);
    equal(res.text, "b broke");
    equal(a.requests.length + b.requests.length, 2, "each backend tried once");
  } finally {
    await proxy.stop();
    await Promise.all([a.close(), b.close()]);
  }
});

Deno.test("--max-fails in --fail-window ejects a backend, for every worker, for --ejection-time", async () => {
  let broken = true;
  const flaky = recordingBackend((req) => {
    if (new URL(req.url).pathname === "/healthz") {
      return new Response(broken ? "no" : "yes", { status: broken ? 503 : 200 });
    }
    return new Response("flaky", { status: broken ? 503 : 200 });
  });
  const ok = recordingBackend(() => new Response("ok"));
  const proxy = await startGoround([
    "--backend",
    flaky.url,
    "--backend",
    ok.url,
    "--workers",
    "2",
    "--max-fails",
    "2",
    "--fail-window",
    "10s",
    "--fail-statuses",
    "503", // an application's status counts only when asked to
    "--ejection-time",
    "1s",
    "--health-path",
    "/healthz",
    "--health-interval",
    "200ms",
    "--health-fall",
    "99", // only passive failures take it out in this test
  ]);
  try {
    for (let i = 0; i < 6; i++) equal((await get(proxy.url)).status, 200);
    await waitFor(
      () =>
        proxy.stderr.some((l) =>
          l.includes(`backend ${flaky.url} EJECTED for 1s: 2 failures in 10s (last: HTTP 503)`)
        ),
      {
        what: "the passive ejection",
      },
    );
    const before = flaky.requests.filter((r) => new URL(r.url).pathname !== "/healthz").length;
    for (let i = 0; i < 10; i++) equal((await get(proxy.url)).text, "ok");
    equal(
      flaky.requests.filter((r) => new URL(r.url).pathname !== "/healthz").length,
      before,
      "no worker sends it more",
    );
    broken = false;
    await waitFor(
      () => proxy.stderr.some((l) => l.includes(`backend ${flaky.url} back from ejection`)),
      {
        what: "the end of the ejection",
      },
    );
    const replies = [];
    for (let i = 0; i < 4; i++) replies.push((await get(proxy.url)).text);
    assert(replies.includes("flaky"), replies.join());
  } finally {
    await proxy.stop();
    await Promise.all([flaky.close(), ok.close()]);
  }
});

Deno.test("--health-path: an HTTP check that fails takes a backend out even though it accepts connections", async () => {
  const sick = recordingBackend((req) =>
    new Response("", { status: new URL(req.url).pathname === "/healthz" ? 500 : 200 })
  );
  const ok = recordingBackend(() => new Response("ok"));
  const proxy = await startGoround([
    "--backend",
    sick.url,
    "--backend",
    ok.url,
    "--workers",
    "1",
    "--health-path",
    "/healthz",
    "--health-interval",
    "100ms",
  ]);
  try {
    await waitFor(
      () =>
        proxy.stderr.some((l) => l.includes(`backend ${sick.url} DOWN: health check got HTTP 500`)),
      {
        what: "the DOWN log",
      },
    );
    for (let i = 0; i < 4; i++) equal((await get(proxy.url)).text, "ok");
    match(proxy.stderr.join("\n"), /health: HTTP GET \/healthz every 100ms/);
  } finally {
    await proxy.stop();
    await Promise.all([sick.close(), ok.close()]);
  }
});

Deno.test("SIGTERM: in-flight requests complete, new connections are refused, exit 0", async () => {
  const slow = recordingBackend(async () => {
    await new Promise((resolve) => setTimeout(resolve, 400));
    return new Response("finished");
  });
  const proxy = await startGoround(["--backend", slow.url, "--workers", "2"]);
  try {
    const inFlight = Array.from({ length: 4 }, () => get(proxy.url));
    await waitFor(() => slow.requests.length === 4, { what: "the requests to arrive" });
    const status = proxy.stop();
    const results = await Promise.all(inFlight);
    deepEqual(results.map((r) => r.text), ["finished", "finished", "finished", "finished"]);
    equal((await status).code, 0);
    let refused = false;
    try {
      await get(proxy.url);
    } catch {
      refused = true;
    }
    assert(refused, "nothing listens after the drain");
    assert(proxy.stderr.some((l) => /SIGTERM: draining 2 workers/.test(l)));
    assert(proxy.stderr.some((l) => /stopped$/.test(l)));
  } finally {
    await proxy.stop();
    await slow.close();
  }
});

Deno.test("--drain-timeout bounds the wait for a request that does not finish", async () => {
  const hang = hangingBackend();
  const proxy = await startGoround([
    "--backend",
    hang.url,
    "--workers",
    "1",
    "--drain-timeout",
    "300ms",
  ]);
  try {
    const stuck = get(proxy.url).catch(() => null);
    await waitFor(() => hang.connections() > 1, { what: "the request to reach the backend" });
    const started = Date.now();
    const status = await proxy.stop();
    equal(status.code, 0);
    assert(Date.now() - started < 3000, `exited after ${Date.now() - started} ms`);
    assert(proxy.stderr.some((l) => l.includes("drain timeout")));
    await stuck;
  } finally {
    await hang.close();
  }
});

Deno.test("a worker that crashes is restarted and logged; goround keeps serving", async () => {
  const backend = recordingBackend(() => new Response("ok"));
  // The fixture is goround with a worker that throws an uncaught error on GET /__crash.
  const proxy = await startGoround(["--backend", backend.url, "--workers", "2"], {
    entry: "tests/fixtures/crash_main.ts",
  });
  try {
    await get(`${proxy.url}/__crash`).catch(() => null);
    await waitFor(
      () => proxy.stderr.some((l) => /worker \d crashed \(Uncaught Error: crash requested/.test(l)),
      {
        what: "the crash log",
      },
    );
    for (let i = 0; i < 6; i++) equal((await get(proxy.url)).text, "ok");
    assert(proxy.stderr.every((l) => !l.includes("failed to restart")));
  } finally {
    const status = await proxy.stop();
    equal(status.code, 0);
    await backend.close();
  }
});

/** A backend that holds requests for `/hold` until released, and answers the others at once. */
function holdingBackend() {
  let release = () => {};
  const gate = new Promise<void>((resolve) => (release = resolve));
  const backend = recordingBackend(async (req) => {
    if (new URL(req.url).pathname === "/hold") await gate;
    return new Response("ok");
  });
  return { ...backend, release };
}

/** The first backend's line of `GET /status`. */
async function firstBackend(adminUrl: string): Promise<{ inFlight: number; state: string }> {
  const report = await (await fetch(`${adminUrl}/status`)).json();
  return report.backends[0];
}

/** Crashes goround's one worker through the fixture and waits until it has been restarted. */
async function crashWorker(proxy: Goround, crashes: number): Promise<void> {
  await get(`${proxy.url}/__crash`).catch(() => null);
  await waitFor(() => proxy.stderr.filter((l) => /worker 0 crashed/.test(l)).length === crashes, {
    what: `crash ${crashes} in the log`,
  });
}

Deno.test("a worker that crashes with requests in flight gives their counts back: in-flight 0, drain completes", async () => {
  const backend = holdingBackend();
  const proxy = await startGoround(["--backend", backend.url, "--workers", "1"], {
    entry: "tests/fixtures/crash_main.ts",
  });
  const lost: Promise<unknown>[] = [];
  try {
    for (let i = 0; i < 5; i++) lost.push(get(`${proxy.url}/hold`).catch(() => null));
    await waitFor(async () => (await firstBackend(proxy.adminUrl)).inFlight === 5, {
      what: "5 requests in flight",
    });
    await crashWorker(proxy, 1);
    await waitFor(async () => (await firstBackend(proxy.adminUrl)).inFlight === 0, {
      what: "the dead worker's in-flight count taken back",
    });
    match(proxy.stderr.find((l) => /worker 0 crashed/.test(l))!, /in flight lost/);
    const drain = await fetch(`${proxy.adminUrl}/backends/0/drain`, {
      method: "POST",
      headers: { "content-type": "application/json" },
    });
    equal(drain.status, 200);
    await drain.body?.cancel();
    await waitFor(async () => (await firstBackend(proxy.adminUrl)).state === "drained", {
      what: "the drain to complete",
    });
  } finally {
    backend.release();
    await Promise.all(lost);
    equal((await proxy.stop()).code, 0);
    await backend.close();
  }
});

Deno.test("--max-conns: requests keep succeeding after crashes with requests in flight", async () => {
  const backend = holdingBackend();
  const proxy = await startGoround([
    "--backend",
    backend.url,
    "--workers",
    "1",
    "--max-conns",
    "3",
    "--queue-timeout",
    "100ms",
  ], { entry: "tests/fixtures/crash_main.ts" });
  const lost: Promise<unknown>[] = [];
  try {
    for (let crash = 1; crash <= 3; crash++) {
      for (let i = 0; i < 2; i++) lost.push(get(`${proxy.url}/hold`).catch(() => null));
      await waitFor(async () => (await firstBackend(proxy.adminUrl)).inFlight === 2, {
        what: `2 requests in flight before crash ${crash}`,
      });
      await crashWorker(proxy, crash);
      // Leaked counts would add up to the limit by the second crash: every request 503.
      await waitFor(async () => (await get(proxy.url).catch(() => null))?.status === 200, {
        what: `a 200 after crash ${crash}`,
      });
    }
    equal((await firstBackend(proxy.adminUrl)).inFlight, 0);
  } finally {
    backend.release();
    await Promise.all(lost);
    equal((await proxy.stop()).code, 0);
    await backend.close();
  }
});

Deno.test("goround itself has no crash hook: GOROUND_TEST_CRASH_PATH is just a path", async () => {
  const backend = recordingBackend(() => new Response("ok"));
  const proxy = await startGoround(["--backend", backend.url, "--workers", "1"], {
    env: { GOROUND_TEST_CRASH_PATH: "/__crash" },
  });
  try {
    equal((await get(`${proxy.url}/__crash`)).text, "ok");
    equal(backend.requests.at(-1)?.url.endsWith("/__crash"), true, "the backend got it");
  } finally {
    equal((await proxy.stop()).code, 0);
    await backend.close();
  }
  // A crash would be logged within milliseconds; goround drained and exited long after.
  assert(proxy.stderr.every((l) => !/crashed/.test(l)), proxy.stderr.join("\n"));
});

Deno.test("SIGHUP reloads --config: backends swap without dropping connections; a bad file keeps the old config", async () => {
  const [a, b, c] = ["a", "b", "c"].map((name) => recordingBackend(() => new Response(name)));
  const dir = await Deno.makeTempDir();
  const file = `${dir}/goround.json`;
  await Deno.writeTextFile(file, JSON.stringify({ backends: [a!.url, b!.url] }));
  const proxy = await startGoround(["--config", file, "--workers", "2"], { readable: dir });
  const client = Deno.createHttpClient({}); // one kept-alive client connection across the reload
  const ask = async () => (await (await fetch(proxy.url, { client })).text());
  try {
    const before = [await ask(), await ask(), await ask(), await ask()];
    deepEqual(before.sort(), ["a", "a", "b", "b"]);
    await Deno.writeTextFile(file, JSON.stringify({ backends: [b!.url, c!.url] }));
    await sendSignal(proxy.pid, "HUP");
    await waitFor(() => proxy.stderr.some((l) => l.includes("reloaded")), {
      what: "the reload log",
    });
    match(
      proxy.stderr.find((l) => l.includes("reloaded"))!,
      new RegExp(`added ${c!.url}, removed ${a!.url}`),
    );
    const after = [await ask(), await ask(), await ask(), await ask()];
    deepEqual(after.sort(), ["b", "b", "c", "c"]);
    // b stayed: same id, and its counts went on from 2 (before the reload) to 4.
    const report = await (await fetch(`${proxy.adminUrl}/status`)).json();
    const kept = report.backends.find((x: { url: string }) => x.url === b!.url);
    deepEqual([kept.id, kept.requests], [1, 4]);

    await Deno.writeTextFile(file, '{"backends": ["ftp://nope"]}');
    await sendSignal(proxy.pid, "HUP");
    await waitFor(() => proxy.stderr.some((l) => l.includes("reload failed")), {
      what: "the failed reload log",
    });
    match(
      proxy.stderr.find((l) => l.includes("reload failed"))!,
      /reload failed, keeping the running config: .*goround\.json: backends: "ftp:\/\/nope" has scheme ftp/,
    );
    const still = [await ask(), await ask()];
    deepEqual(still.sort(), ["b", "c"]);
  } finally {
    client.close();
    await proxy.stop();
    await Promise.all([a!.close(), b!.close(), c!.close()]);
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("a backend closing at once, or sending an invalid status line, gives 502; goround keeps serving", async (t) => {
  for (
    const [name, script] of [
      ["closing at once", (_r: string, conn: Deno.Conn) => conn.close()],
      ["an invalid status line", async (_r: string, conn: Deno.Conn) => {
        await conn.write(new TextEncoder().encode("HTTP/1.1 2xx Weird\r\n\r\n"));
      }],
    ] as const
  ) {
    await t.step(name, async () => {
      const bad = rawBackend(script);
      const proxy = await startGoround([
        "--backend",
        bad.url,
        "--workers",
        "1",
        "--health-interval",
        "1m",
      ]);
      try {
        const res = await rawRequest(
          proxy.port,
          "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nConnection: close\r\n\r\nx",
        );
        equal(res.status, 502);
        // goround's own answer still says which request it was, and is counted for the backend.
        match(res.headers.find(([name]) => name === "x-request-id")?.[1] ?? "", /^[\w-]+$/);
        const metrics = await (await fetch(`${proxy.adminUrl}/metrics`)).text();
        match(
          metrics,
          new RegExp(
            `goround_requests_total\\{pool="default",backend="${bad.url}",code="5xx"\\} 1`,
          ),
        );
        const again = await rawRequest(
          proxy.port,
          "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nConnection: close\r\n\r\nx",
        );
        assert(again.status === 502 || again.status === 503, `then ${again.status}`);
      } finally {
        await proxy.stop();
        await bad.close();
      }
    });
  }
});

Deno.test("--connect-timeout: a backend that never accepts costs the timeout, then the request goes elsewhere", async () => {
  // A listener that never accepts, with its backlog full: the kernel drops further SYNs, so a
  // connect hangs as it would to a machine that went away.
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const filler: Deno.Conn[] = [];
  while (true) {
    try {
      filler.push(
        await Deno.connect({
          hostname: "127.0.0.1",
          port: listener.addr.port,
          signal: AbortSignal.timeout(300),
        }),
      );
    } catch {
      break; // the backlog is full
    }
  }
  const ok = recordingBackend(() => new Response("ok"));
  const proxy = await startGoround([
    "--backend",
    `http://127.0.0.1:${listener.addr.port}`,
    "--backend",
    ok.url,
    "--workers",
    "1",
    "--connect-timeout",
    "300ms",
    "--health-timeout",
    "300ms",
    "--health-fall",
    "99",
  ]);
  try {
    const started = Date.now();
    const res = await post(proxy.url, "a POST is safe to retry: nothing was sent");
    const took = Date.now() - started;
    equal(res.text, "ok");
    assert(took >= 250 && took < 2000, `took ${took} ms`);
    await waitFor(() => proxy.stderr.some((l) => /DOWN: timed out|DOWN: .*aborted/.test(l)), {
      what: "the DOWN log",
    });
  } finally {
    await proxy.stop();
    await ok.close();
    for (const conn of filler) conn.close();
    listener.close();
  }
});

for (const engine of ENGINES) {
  Deno.test(`[${engine}] a client that abandons its streamed upload does not take the backend down`, async (t) => {
    const backend = recordingBackend(async (req) => {
      await req.arrayBuffer().catch(() => {});
      return new Response("ok");
    });
    // Without request buffering, so the upload streams at once (a body past --request-buffer
    // streams the same way, after its buffered start).
    const proxy = await goroundFor(engine, backend.url, ["--request-buffer", "0"]);
    try {
      const heads = {
        chunked: "transfer-encoding: chunked\r\n\r\n5\r\nhello\r\n",
        "content-length": "content-length: 200000\r\n\r\nhello",
      };
      for (const [framing, rest] of Object.entries(heads)) {
        await t.step(framing, async () => {
          const before = proxy.stderr.length;
          const conn = await Deno.connect({ hostname: "127.0.0.1", port: proxy.port });
          await conn.write(new TextEncoder().encode(`POST /up HTTP/1.1\r\nhost: x\r\n${rest}`));
          await waitFor(() => backend.requests.length > 0, { what: "the upload to reach it" });
          conn.close(); // the client gives up mid-body
          // The failed exchange is logged, whoever is blamed for it.
          await waitFor(() => proxy.stderr.slice(before).some((l) => l.includes("POST /up")), {
            what: "goround to log the broken exchange",
          });
          const logged = proxy.stderr.slice(before).join("\n");
          match(logged, /client 127\.0\.0\.1: the client's body broke off/);
          assert(!/DOWN/.test(logged), logged);
          equal((await get(`${proxy.url}/after`)).status, 200, "the backend is still in use");
          backend.requests.length = 0;
        });
      }
    } finally {
      await proxy.stop();
      await backend.close();
    }
  });

  Deno.test(`[${engine}] SIGTERM: an upload still arriving after the drain's grace is received whole and answered`, async () => {
    const backend = recordingBackend(async (req) => {
      const body = await req.arrayBuffer();
      return new Response(`got ${body.byteLength}`);
    });
    const proxy = await goroundFor(engine, backend.url, ["--drain-timeout", "10s"]);
    const conn = await Deno.connect({ hostname: "127.0.0.1", port: proxy.port });
    try {
      const size = 16_000;
      const reply = (async () => {
        const chunks: Uint8Array[] = [];
        const buf = new Uint8Array(4096);
        while (true) {
          const n = await conn.read(buf);
          if (n === null) break;
          chunks.push(buf.slice(0, n));
        }
        return new TextDecoder().decode(new Uint8Array(chunks.flatMap((c) => [...c])));
      })();
      await conn.write(
        new TextEncoder().encode(`POST /up HTTP/1.1\r\nhost: x\r\ncontent-length: ${size}\r\n\r\n`),
      );
      const part = new Uint8Array(1000).fill(97);
      await conn.write(part);
      const stopped = proxy.stop();
      await waitFor(() => proxy.stderr.some((l) => l.includes("SIGTERM: draining")), {
        what: "the drain",
      });
      // The rest arrives over about 1.5 s: past the 1 s grace in which the listener stays open.
      for (let sent = part.length; sent < size; sent += part.length) {
        await new Promise((resolve) => setTimeout(resolve, 100));
        await conn.write(part);
      }
      const text = await reply;
      match(text, /^HTTP\/1\.1 200/, text);
      match(text, new RegExp(`got ${size}$`), text);
      equal((await stopped).code, 0);
    } finally {
      conn.close();
      await proxy.stop();
      await backend.close();
    }
  });

  Deno.test(`[${engine}] a response that begins before the upload ends is not cut at --response-timeout`, async () => {
    // The backend answers as soon as the head arrives, reads the upload, then streams its
    // response for longer than the response timeout: only the wait for the head is timed.
    const encode = (text: string) => new TextEncoder().encode(text);
    const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
    const served = (async () => {
      for await (const conn of listener) {
        (async () => {
          const buf = new Uint8Array(64 * 1024);
          let seen = "";
          const until = async (text: string) => {
            while (!seen.includes(text)) {
              const n = await conn.read(buf);
              if (n === null) throw new Error("closed");
              seen += new TextDecoder().decode(buf.subarray(0, n));
            }
          };
          await until("\r\n\r\n");
          await conn.write(encode("HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n"));
          await until("0\r\n\r\n");
          for (let i = 0; i < 8; i++) {
            await new Promise((resolve) => setTimeout(resolve, 100));
            await conn.write(encode("5\r\ntick\n\r\n"));
          }
          await conn.write(encode("0\r\n\r\n"));
        })().catch(() => {}).finally(() => conn.close());
      }
    })();
    const proxy = await goroundFor(
      engine,
      `http://127.0.0.1:${(listener.addr as Deno.NetAddr).port}`,
      ["--response-timeout", "300ms"],
    );
    try {
      const body = new ReadableStream<Uint8Array>({
        async start(controller) {
          controller.enqueue(encode("x".repeat(1000)));
          await new Promise((resolve) => setTimeout(resolve, 100));
          controller.close();
        },
      });
      const res = await fetch(`${proxy.url}/stream`, { method: "POST", body });
      equal(res.status, 200);
      equal(await res.text(), "tick\n".repeat(8), "all 8 ticks, over 800 ms");
    } finally {
      await proxy.stop();
      listener.close();
      await served;
    }
  });
}

Deno.test("a pooled connection found closed is retried on the same backend, fresh, without spending --retries", async () => {
  // Backend A answers the first request on each connection and drops the connection on the
  // second, as a backend whose keep-alive timeout just expired does; B answers everything.
  const seenA: string[] = [];
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const served = (async () => {
    for await (const conn of listener) {
      (async () => {
        const buf = new Uint8Array(4096);
        for (let n = 0;; n++) {
          const got = await conn.read(buf);
          if (got === null) break;
          const line = new TextDecoder().decode(buf.subarray(0, got)).split("\r\n")[0]!;
          if (line === "") break; // a health probe's connect
          seenA.push(line);
          if (n > 0) break; // the stale connection: dropped without an answer
          await conn.write(
            new TextEncoder().encode("HTTP/1.1 200 OK\r\ncontent-length: 1\r\n\r\nA"),
          );
        }
      })().catch(() => {}).finally(() => conn.close());
    }
  })();
  const b = recordingBackend(() => new Response("B"));
  const proxy = await startGoround([
    "--backend",
    `http://127.0.0.1:${(listener.addr as Deno.NetAddr).port}`,
    "--backend",
    b.url,
    "--workers",
    "1",
    "--retries",
    "0",
    "--health-interval",
    "1m",
  ]);
  try {
    const answers = [];
    for (const path of ["/1", "/2", "/3"]) answers.push((await get(`${proxy.url}${path}`)).text);
    deepEqual(answers, ["A", "B", "A"]);
    deepEqual(b.requests.map((r) => new URL(r.url).pathname), ["/2"], "B never saw /3");
    deepEqual(seenA, ["GET /1 HTTP/1.1", "GET /3 HTTP/1.1", "GET /3 HTTP/1.1"]);
  } finally {
    await proxy.stop();
    await b.close();
    listener.close();
    await served;
  }
});
