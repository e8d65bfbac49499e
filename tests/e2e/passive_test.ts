// Passive health: what requests see of a backend must not let a client empty the pool, and an
// ejected backend stays out for a while that a bare TCP probe cannot cut short.
import { deepEqual, equal, match, ok as assert } from "node:assert/strict";
import { spawnBackend } from "../../dummy_servers.ts";
import {
  get,
  type Goround,
  rawBackend,
  recordingBackend,
  startGoround,
  waitFor,
} from "../support/helpers.ts";
import { rawRequest } from "../support/raw_client.ts";

interface BackendStatus {
  readonly url: string;
  readonly state: string;
  readonly ejectedUntil: string | null;
  readonly checkPasses: number;
}

async function states(proxy: Goround): Promise<BackendStatus[]> {
  const res = await fetch(`${proxy.adminUrl}/status`);
  return (await res.json()).backends;
}

function logged(proxy: Goround, pattern: RegExp): boolean {
  return proxy.stderr.some((line) => pattern.test(line));
}

/** A backend that answers 500 on `/bad` (or everywhere while `broken()`), 200 elsewhere. */
function appBackend(name: string, broken: () => boolean = () => false) {
  const hits: number[] = [];
  const backend = recordingBackend((req) => {
    const path = new URL(req.url).pathname;
    if (path === "/bad" || broken()) {
      hits.push(Date.now());
      return new Response(`${name} failed`, { status: 500 });
    }
    return new Response(name);
  });
  return { ...backend, hits };
}

/** A raw backend that closes the connection without answering while `drop(request)`. */
function droppingBackend(drop: (request: string) => boolean) {
  let dropped = 0;
  const backend = rawBackend(async (request, conn) => {
    if (request === "") return; // a TCP health probe
    if (drop(request)) {
      dropped++;
      return; // closed without a response: the application crashed on it
    }
    await conn.write(
      new TextEncoder().encode(
        "HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok",
      ),
    );
  });
  return { ...backend, dropped: () => dropped };
}

Deno.test("three GETs that every backend answers 500 leave the pool up; the next GET gets 200", async (t) => {
  await t.step("a URL the application answers 500", async () => {
    const backends = ["a", "b", "c"].map((name) => appBackend(name));
    const proxy = await startGoround([
      "--backends",
      backends.map((b) => b.url).join(","),
      "--access-log",
      "off",
    ]);
    try {
      for (let i = 0; i < 3; i++) {
        const res = await get(`${proxy.url}/bad`);
        equal(res.status, 500, "the application's answer, as it was");
      }
      equal(
        backends.reduce((n, b) => n + b.hits.length, 0),
        6,
        "each bad GET met two backends, not the whole pool",
      );
      deepEqual((await states(proxy)).map((b) => b.state), ["up", "up", "up"]);
      equal((await get(proxy.url)).status, 200);
      assert(!logged(proxy, /DOWN|EJECTED/), proxy.stderr.join("\n"));
    } finally {
      await proxy.stop();
      await Promise.all(backends.map((b) => b.close()));
    }
  });
  await t.step("`Host: a b`, which the dummy backends answer 500", async () => {
    const backends = await Promise.all([0, 0, 0].map((port) => spawnBackend(port)));
    const proxy = await startGoround([
      "--backends",
      backends.map((b) => `http://127.0.0.1:${b.port}`).join(","),
      "--access-log",
      "off",
    ]);
    try {
      for (let i = 0; i < 3; i++) {
        const res = await rawRequest(
          proxy.port,
          "GET / HTTP/1.1\r\nHost: a b\r\nConnection: close\r\n\r\n",
        );
        // 500 from the backends; 400 if goround refuses such a Host itself.
        assert([400, 500].includes(res.status), res.statusLine);
      }
      deepEqual((await states(proxy)).map((b) => b.state), ["up", "up", "up"]);
      match((await get(proxy.url)).text, /^Hello from Server \d+/);
    } finally {
      await proxy.stop();
      for (const backend of backends) backend.child.kill("SIGTERM");
      await Promise.all(backends.map((b) => b.exited));
    }
  });
});

Deno.test("3 bad requests every 200 ms: a legitimate client gets 200 every time", async () => {
  const backends = ["a", "b", "c"].map((name) => appBackend(name));
  const proxy = await startGoround([
    "--backends",
    backends.map((b) => b.url).join(","),
    "--access-log",
    "off",
  ]);
  try {
    const until = Date.now() + 3000;
    const attack = (async () => {
      let sent = 0;
      while (Date.now() < until) {
        await Promise.all([0, 1, 2].map(() => get(`${proxy.url}/bad`)));
        sent += 3;
        await new Promise((resolve) => setTimeout(resolve, 200));
      }
      return sent;
    })();
    const statuses: number[] = [];
    while (Date.now() < until) statuses.push((await get(proxy.url)).status);
    const sent = await attack;
    assert(sent >= 30, `${sent} bad requests`);
    assert(statuses.length > 50, `${statuses.length} legitimate requests`);
    deepEqual(statuses.filter((s) => s !== 200), [], "every legitimate request got 200");
    deepEqual((await states(proxy)).map((b) => b.state), ["up", "up", "up"]);
  } finally {
    await proxy.stop();
    await Promise.all(backends.map((b) => b.close()));
  }
});

Deno.test("a request that makes every backend drop the connection stops at two and leaves them up", async () => {
  const backends = [0, 1, 2].map(() =>
    droppingBackend((request) => request.startsWith("GET /crash "))
  );
  const proxy = await startGoround([
    "--backends",
    backends.map((b) => b.url).join(","),
    "--access-log",
    "off",
  ]);
  try {
    const res = await get(`${proxy.url}/crash`);
    equal(res.status, 502);
    equal(backends.reduce((n, b) => n + b.dropped(), 0), 2, "tried on two backends, not three");
    await waitFor(
      () =>
        logged(
          proxy,
          / not retried: GET \/crash failed the same way on two backends \(connection closed before a response; the last was http:\/\/127\.0\.0\.1:\d+\)$/,
        ),
      { what: "the log line" },
    );
    deepEqual((await states(proxy)).map((b) => b.state), ["up", "up", "up"]);
    const before = backends.map((b) => b.connections());
    for (let i = 0; i < 6; i++) equal((await get(proxy.url)).text, "ok");
    assert(backends.every((b, i) => b.connections() > before[i]!), "all three still take requests");
  } finally {
    await proxy.stop();
    await Promise.all(backends.map((b) => b.close()));
  }
});

Deno.test("--fail-statuses 500 opts in: 500s eject one backend, and only up to the bounded share", async () => {
  let aBroken = true;
  let bBroken = false;
  const a = appBackend("a", () => aBroken);
  const b = appBackend("b", () => bBroken);
  const c = appBackend("c");
  const proxy = await startGoround([
    "--backends",
    [a, b, c].map((x) => x.url).join(","),
    "--fail-statuses",
    "500",
    "--workers",
    "1",
    "--access-log",
    "off",
  ]);
  try {
    while (a.hits.length < 3) equal((await get(proxy.url)).status, 200, "retried elsewhere");
    await waitFor(
      () =>
        logged(
          proxy,
          new RegExp(`backend ${a.url} EJECTED for 30s: 3 failures in 10s \\(last: HTTP 500\\)`),
        ),
      { what: "a's ejection" },
    );
    const state = await states(proxy);
    deepEqual(state.map((x) => x.state), ["ejected", "up", "up"]);
    assert(Date.parse(state[0]!.ejectedUntil!) > Date.now() + 25_000, state[0]!.ejectedUntil!);
    for (let i = 0; i < 6; i++) equal((await get(proxy.url)).status, 200);
    equal(a.hits.length, 3, "an ejected backend gets nothing");
    aBroken = false;
    bBroken = true;
    while (b.hits.length < 3) equal((await get(proxy.url)).status, 200);
    await waitFor(
      () =>
        logged(
          proxy,
          new RegExp(
            `backend ${b.url} not ejected: 1 of 3 backends are out already \\(--max-ejection-percent 50\\)`,
          ),
        ),
      { what: "b kept in" },
    );
    deepEqual((await states(proxy)).map((x) => x.state), ["ejected", "up", "up"]);
  } finally {
    await proxy.stop();
    await Promise.all([a, b, c].map((x) => x.close()));
  }
});

Deno.test("--max-ejection-percent: of three failing backends one is out; at 100% all, and all are still tried", async (t) => {
  let broken = true;
  const backends = [0, 1, 2].map(() => droppingBackend(() => broken));
  const start = (percent: string) =>
    startGoround([
      "--backends",
      backends.map((b) => b.url).join(","),
      "--max-fails",
      "2",
      "--ejection-time",
      "1m",
      "--max-ejection-percent",
      percent,
      "--workers",
      "1",
      "--access-log",
      "off",
    ]);
  try {
    await t.step("the default 50%: one of three", async () => {
      broken = true;
      const proxy = await start("50");
      try {
        await waitFor(async () => {
          equal((await get(proxy.url)).status, 502);
          return logged(proxy, /not ejected: 1 of 3 backends are out already/);
        }, { what: "an ejection refused" });
        for (let i = 0; i < 6; i++) equal((await get(proxy.url)).status, 502);
        const state = (await states(proxy)).map((b) => b.state).sort();
        deepEqual(state, ["ejected", "up", "up"]);
        equal(proxy.stderr.filter((l) => / EJECTED /.test(l)).length, 1);
      } finally {
        await proxy.stop();
      }
    });
    await t.step("100%: every one of them, and then every one is still tried", async () => {
      broken = true;
      const proxy = await start("100");
      try {
        await waitFor(async () => {
          await get(proxy.url);
          return (await states(proxy)).every((b) => b.state === "ejected");
        }, { what: "all three ejected" });
        broken = false;
        const res = await get(proxy.url);
        deepEqual([res.status, res.text], [200, "ok"], "out by passive verdict alone: tried");
        deepEqual((await states(proxy)).map((b) => b.state), ["ejected", "ejected", "ejected"]);
      } finally {
        await proxy.stop();
      }
    });
  } finally {
    await Promise.all(backends.map((b) => b.close()));
  }
});

Deno.test("an ejected backend stays out for --ejection-time though TCP probes pass, longer the second time", async () => {
  let broken = true;
  const flaky = appBackend("flaky", () => broken);
  const ok = appBackend("ok");
  const proxy = await startGoround([
    "--backends",
    `${flaky.url},${ok.url}`,
    "--fail-statuses",
    "500",
    "--max-fails",
    "2",
    "--ejection-time",
    "1s",
    "--health-interval",
    "100ms",
    "--workers",
    "1",
    "--access-log",
    "off",
  ]);
  /** Ejects `flaky` (2 failures), then measures how long it gets no request once it is fine. */
  const outFor = async (length: string): Promise<number> => {
    broken = true;
    const failed = flaky.hits.length;
    while (flaky.hits.length < failed + 2) equal((await get(proxy.url)).status, 200);
    const ejectedAt = flaky.hits.at(-1)!;
    await waitFor(
      () => logged(proxy, new RegExp(`${flaky.url} EJECTED for ${length}: 2 failures`)),
      {
        what: `an ejection for ${length}`,
      },
    );
    const state = (await states(proxy))[0]!;
    equal(state.state, "ejected");
    broken = false;
    const served = flaky.requests.length;
    const passes = state.checkPasses;
    await waitFor(async () => {
      await get(proxy.url);
      return flaky.requests.length > served;
    }, { what: "flaky back in rotation", timeout: 5000 });
    const back = Date.now();
    assert((await states(proxy))[0]!.checkPasses > passes, "TCP probes passed meanwhile");
    return back - ejectedAt;
  };
  try {
    const first = await outFor("1s");
    assert(first >= 1000 && first < 2500, `out for ${first} ms`);
    await waitFor(() => logged(proxy, new RegExp(`${flaky.url} back from ejection$`)), {
      what: "the end of the ejection in the log",
    });
    const second = await outFor("2s");
    assert(second >= 2000 && second < 3500, `out for ${second} ms the second time`);
  } finally {
    await proxy.stop();
    await Promise.all([flaky.close(), ok.close()]);
  }
});

/** A port nothing listens on (yet). */
function freePort(): number {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (listener.addr as Deno.NetAddr).port;
  listener.close();
  return port;
}

Deno.test("goround started before its backends serves within about 1 s of one listening", async (t) => {
  for (const extra of [[], ["--panic", "false"]]) {
    await t.step(
      extra.length === 0 ? "default flags" : "--panic false: by fast probes",
      async () => {
        const ports = [freePort(), freePort()];
        const proxy = await startGoround([
          "--backends",
          ports.map((port) => `http://127.0.0.1:${port}`).join(","),
          "--access-log",
          "off",
          ...extra,
        ]);
        let server: Deno.HttpServer | null = null;
        try {
          await waitFor(() => proxy.stderr.filter((l) => l.includes("DOWN")).length === 2, {
            what: "both DOWN",
          });
          const refused = await get(proxy.url);
          equal(refused.status, 503);
          equal(refused.text, "no backend available\n");
          equal(refused.headers.get("retry-after"), "10");
          let listening = 0;
          server = Deno.serve({
            hostname: "127.0.0.1",
            port: ports[1]!,
            onListen: () => (listening = Date.now()),
          }, () => new Response("late"));
          await waitFor(async () => (await get(proxy.url)).status === 200, {
            what: "the first 200",
            timeout: 1500,
          });
          const took = Date.now() - listening;
          assert(took < 1500, `first 200 ${took} ms after the backend listened`);
          equal((await get(proxy.url)).text, "late");
        } finally {
          await proxy.stop();
          await server?.shutdown();
        }
      },
    );
  }
});
