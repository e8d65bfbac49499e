/**
 * Routes, end to end: several pools behind one goround, chosen by host and path, on both front
 * ends. Real backends, the real proxy process, a config file on disk, real signals.
 *
 * @module
 */

import { deepEqual, equal, match, ok as assert } from "node:assert/strict";
import { ENGINES } from "../../lib/config/config.ts";
import {
  type Goround,
  rawBackend,
  type RecordingBackend,
  recordingBackend,
  runGoround,
  sendSignal,
  startGoround,
  waitFor,
} from "../support/helpers.ts";
import { field, rawRequest } from "../support/raw_client.ts";

// deno-lint-ignore no-explicit-any
type Json = any;

/** A backend that answers with its name, the path and query it got, and `X-Env`. */
function named(name: string): RecordingBackend {
  return recordingBackend((req) => {
    const url = new URL(req.url);
    return new Response(`${name} ${url.pathname}${url.search} env=${req.headers.get("x-env")}`, {
      headers: { server: `app-${name}`, "x-internal": "secret" },
    });
  });
}

/** Writes `config` to a new file and returns its path. */
async function configFile(config: unknown): Promise<string> {
  const dir = await Deno.makeTempDir({ prefix: "goround-routes-" });
  const path = `${dir}/goround.json`;
  await Deno.writeTextFile(path, JSON.stringify(config, null, 2));
  return path;
}

/** One request with a `Host` of our choosing: status, fields and body text. */
async function ask(
  proxy: Goround,
  host: string,
  target: string,
  extra = "",
): Promise<{ status: number; headers: [string, string][]; text: string }> {
  const response = await rawRequest(
    proxy.port,
    `GET ${target} HTTP/1.1\r\nHost: ${host}\r\n${extra}Connection: close\r\n\r\n`,
  );
  return {
    status: response.status,
    headers: response.headers,
    text: new TextDecoder().decode(response.body),
  };
}

async function status(proxy: Goround): Promise<Json> {
  const res = await fetch(`${proxy.adminUrl}/status`);
  return await res.json();
}

/** Writes `config` to `path`, sends SIGHUP, and waits for goround's `reloaded` line. */
async function reloadWith(proxy: Goround, path: string, config: unknown): Promise<void> {
  await Deno.writeTextFile(path, JSON.stringify(config));
  const reloads = proxy.stderr.filter((l) => l.includes("reloaded")).length;
  await sendSignal(proxy.pid, "HUP");
  await waitFor(() => proxy.stderr.filter((l) => l.includes("reloaded")).length > reloads, {
    what: "the reload",
  });
}

/** Kept-alive clients asking goround without pause until stopped (30 s at most). */
interface Load {
  /** Requests answered so far. */
  served: () => number;
  /** Each failed request, as `check` or the error said. */
  readonly failures: string[];
  /** Stops the clients and waits for them. */
  stop: () => Promise<void>;
}

/**
 * Starts one client per target, each asking its target in a loop.
 *
 * @param check What was wrong with an answer, or `null` when nothing was.
 */
function startLoad(
  proxy: Goround,
  targets: readonly string[],
  check: (target: string, status: number, text: string) => string | null,
): Load {
  let stopped = false;
  let served = 0;
  const failures: string[] = [];
  const loop = async (target: string) => {
    const client = Deno.createHttpClient({});
    const deadline = Date.now() + 30_000;
    while (!stopped && Date.now() < deadline) {
      try {
        const res = await fetch(`${proxy.url}${target}`, { client });
        const wrong = check(target, res.status, await res.text());
        if (wrong !== null) failures.push(wrong);
        served++;
      } catch (error) {
        failures.push(String(error));
      }
    }
    client.close();
  };
  const loops = targets.map(loop);
  return {
    served: () => served,
    failures,
    stop: async () => {
      stopped = true;
      await Promise.all(loops);
    },
  };
}

/** An answer other than 200 is a failure. */
function only200(_target: string, status: number, text: string): string | null {
  return status === 200 ? null : `${status} ${text}`;
}

function siteConfig(web: RecordingBackend[], api: RecordingBackend, extra: object = {}): Json {
  return {
    "health-interval": "200ms",
    pools: {
      web: { backends: web.map((b) => b.url) },
      api: { backends: [api.url], "health-interval": "100ms" },
    },
    routes: [
      { name: "api-host", host: "api.example.com", pool: "api" },
      {
        name: "api-path",
        path: "/api/",
        "strip-prefix": "/api",
        pool: "api",
        "request-headers": { set: { "X-Env": "prod" } },
        "response-headers": { remove: ["Server", "X-Internal"] },
      },
      { name: "v2", path: "/v2/", "add-prefix": "/legacy", pool: "web" },
      {
        name: "static",
        host: "*.example.com",
        path: "/static/",
        respond: { status: 200, body: "static here" },
      },
      { name: "old", path: "/old", redirect: { status: 308, location: "https://{host}/new" } },
      { name: "web", pool: "web" },
    ],
    ...extra,
  };
}

for (const engine of ENGINES) {
  Deno.test(`[${engine}] routes: host before path, longest prefix, wildcards, rewrites, header rules, redirects, fixed answers`, async () => {
    const web = [named("web1"), named("web2")];
    const api = named("api");
    const path = await configFile(siteConfig(web, api));
    const proxy = await startGoround([
      "--engine",
      engine,
      "--config",
      path,
      "--workers",
      "1",
      "--access-log",
      "json",
    ]);
    try {
      // An exact host wins over every path route.
      const byHost = await ask(proxy, "api.example.com", "/api/users?page=2");
      equal(byHost.text, "api /api/users?page=2 env=null");
      // The prefix route strips /api, keeps the query, sets X-Env, and removes fields.
      const byPath = await ask(proxy, "shop.test", "/api/users?page=2");
      equal(byPath.status, 200);
      equal(byPath.text, "api /users?page=2 env=prod");
      equal(field(byPath, "server"), undefined, "Server removed");
      equal(field(byPath, "x-internal"), undefined, "X-Internal removed");
      // A client's X-Env is replaced, not added to.
      const forged = await ask(proxy, "shop.test", "/api/x", "X-Env: dev\r\n");
      equal(forged.text, "api /x env=prod");
      // add-prefix.
      const v2 = await ask(proxy, "shop.test", "/v2/items?q=1");
      match(v2.text, /^web\d \/legacy\/v2\/items\?q=1 env=null$/);
      // A wildcard host with a path answers itself; another host on that path falls through.
      const fixed = await ask(proxy, "cdn.example.com:8080", "/static/app.js");
      deepEqual([fixed.status, fixed.text.trim()], [200, "static here"]);
      const notWild = await ask(proxy, "example.com", "/static/app.js");
      match(notWild.text, /^web\d \/static\/app\.js/);
      // Dot segments and empty ones are resolved before matching (and forwarding), so a prefix
      // cannot be walked around or out of.
      const walked = await ask(proxy, "shop.test", "/x/../api/users?page=3");
      equal(walked.text, "api /users?page=3 env=prod", "matched as /api/users");
      const escaped = await ask(proxy, "shop.test", "/api/%2e%2e/v2/items");
      match(escaped.text, /^web\d \/legacy\/v2\/items env=null$/, "not the api pool");
      const doubled = await ask(proxy, "shop.test", "//api//x");
      equal(doubled.text, "api /x env=prod");
      // A redirect.
      const moved = await ask(proxy, "shop.test", "/old");
      equal(moved.status, 308);
      equal(field(moved, "location"), "https://shop.test/new");
      // The catch-all takes the rest, round robin over web's two backends.
      const rest = [await ask(proxy, "shop.test", "/"), await ask(proxy, "shop.test", "/")];
      deepEqual(rest.map((r) => r.text.split(" ")[0]).sort(), ["web1", "web2"]);
      equal(field(rest[0]!, "server"), `app-${rest[0]!.text.split(" ")[0]}`, "kept elsewhere");

      const report = await status(proxy);
      const hits = Object.fromEntries(
        (report.routes as { name: string; hits: number }[]).map((r) => [r.name, r.hits]),
      );
      deepEqual(hits, { "api-host": 1, "api-path": 4, v2: 2, static: 1, old: 1, web: 3 });
      deepEqual(
        (report.pools as { name: string }[]).map((p) => p.name),
        ["web", "api"],
      );
      deepEqual(
        (report.backends as { pool: string; url: string }[]).map((b) => [b.pool, b.url]),
        [["web", web[0]!.url], ["web", web[1]!.url], ["api", api.url]],
      );
      await waitFor(() => proxy.stdout.length >= 9, { what: "the access log" });
      const entries = proxy.stdout.map((line) => JSON.parse(line));
      const apiEntry = entries.find((e) =>
        e.path === "/api/users?page=2" && e.route === "api-path"
      );
      deepEqual([apiEntry?.pool, apiEntry?.backend], ["api", api.url], proxy.stdout.join("\n"));
      const fixedEntry = entries.find((e) => e.route === "static");
      deepEqual([fixedEntry?.pool, fixedEntry?.reason], [null, null], "an answer, not a refusal");
    } finally {
      await proxy.stop();
      await Promise.all([...web, api].map((b) => b.close()));
    }
  });
}

Deno.test("routes: a request no route matches gets 404 from goround, logged and counted", async () => {
  const api = named("api");
  const path = await configFile({
    pools: { api: { backends: [api.url] } },
    routes: [{ host: "api.example.com", pool: "api" }],
  });
  const proxy = await startGoround(["--config", path, "--workers", "1", "--access-log", "json"]);
  try {
    const missed = await ask(proxy, "www.example.com", "/");
    equal(missed.status, 404);
    match(missed.text, /no route/);
    equal(api.requests.length, 0);
    equal((await ask(proxy, "API.Example.com.", "/")).status, 200, "case and a trailing dot");
    equal((await ask(proxy, "a b", "/")).status, 400, "a malformed Host is refused before routing");
    await waitFor(() => proxy.stdout.length >= 2, { what: "the access log" });
    const entry = JSON.parse(proxy.stdout[0]!);
    deepEqual([entry.status, entry.route, entry.reason], [404, null, "no route for this request"]);
    equal((await status(proxy)).noRoute, 1);
    const metrics = await (await fetch(`${proxy.adminUrl}/metrics`)).text();
    match(metrics, /goround_requests_refused_total\{reason="no_route"\} 1/);
    match(metrics, /goround_route_requests_total\{route="routes\[0\]"\} 1/);
    match(metrics, new RegExp(`goround_backend_up\\{pool="api",backend="${api.url}"\\} 1`));
  } finally {
    await proxy.stop();
    await api.close();
  }
});

Deno.test("routes: per-pool health: with the only api backend dead, /api/ gets 503 and web keeps answering", async () => {
  const web = [named("web1"), named("web2")];
  const api = named("api");
  const path = await configFile(siteConfig(web, api));
  const proxy = await startGoround(["--config", path, "--workers", "2"]);
  try {
    equal((await ask(proxy, "shop.test", "/api/x")).status, 200);
    await api.close();
    await waitFor(async () => (await ask(proxy, "shop.test", "/api/x")).status === 503, {
      what: "the api pool to have no backend",
    });
    for (let i = 0; i < 10; i++) equal((await ask(proxy, "shop.test", "/")).status, 200);
    const ready = await fetch(`${proxy.adminUrl}/readyz`);
    equal(ready.status, 503);
    match(await ready.text(), /^not ready: pool api: no usable backend \(1 down/);
    assert(
      proxy.stderr.some((l) => l.includes(`backend ${api.url} (pool api) DOWN`)),
      proxy.stderr.join("\n"),
    );
  } finally {
    await proxy.stop();
    await Promise.all(web.map((b) => b.close()));
  }
});

Deno.test("routes: each pool has its own exact cycle across workers, while another pool takes traffic", async () => {
  const three = [named("a"), named("b"), named("c")];
  const other = [named("x"), named("y")];
  const path = await configFile({
    pools: {
      three: { backends: three.map((b) => b.url) },
      other: { backends: other.map((b) => b.url) },
    },
    routes: [{ path: "/other/", pool: "other" }, { pool: "three" }],
  });
  const proxy = await startGoround(["--config", path, "--workers", "2", "--access-log", "off"]);
  try {
    const client = Deno.createHttpClient({ poolMaxIdlePerHost: 64 });
    const hit = async (target: string) => {
      const res = await fetch(`${proxy.url}${target}`, { client });
      return (await res.text()).split(" ")[0]!;
    };
    const [mine, theirs] = await Promise.all([
      Promise.all(Array.from({ length: 600 }, () => hit("/"))),
      Promise.all(Array.from({ length: 300 }, () => hit("/other/"))),
    ]);
    client.close();
    const count = (names: string[]) =>
      names.reduce((m, n) => ({ ...m, [n]: (m[n] ?? 0) + 1 }), {} as Record<string, number>);
    deepEqual(count(mine), { a: 200, b: 200, c: 200 });
    deepEqual(count(theirs), { x: 150, y: 150 });
  } finally {
    await proxy.stop();
    await Promise.all([...three, ...other].map((b) => b.close()));
  }
});

Deno.test("routes: a reload adds and removes pools and routes under load, with no failed request and the counters of what stayed", async () => {
  const web = [named("web1"), named("web2")];
  const api = named("api");
  const extra = named("extra");
  const path = await configFile(siteConfig(web, api));
  const proxy = await startGoround(["--config", path, "--workers", "2", "--access-log", "off"]);
  const load = startLoad(proxy, ["/", "/", "/", "/"], only200);
  try {
    await waitFor(() => load.served() > 50, { what: "traffic" });
    const before = (await status(proxy)).backends.find((b: { url: string }) =>
      b.url === web[0]!.url
    );
    const next = siteConfig(web, api);
    next.pools = { web: next.pools.web, extra: { backends: [extra.url] } };
    next.routes = [{ name: "extra", path: "/extra/", pool: "extra" }, { name: "web", pool: "web" }];
    await Deno.writeTextFile(path, JSON.stringify(next));
    await sendSignal(proxy.pid, "HUP");
    await waitFor(() => proxy.stderr.some((l) => l.includes("reloaded")), { what: "the reload" });
    const line = proxy.stderr.find((l) => l.includes("reloaded"))!;
    match(line, /changed: pools, routes/);
    await waitFor(async () => (await ask(proxy, "shop.test", "/extra/a")).status === 200, {
      what: "the new pool's first check",
    });
    equal((await ask(proxy, "shop.test", "/extra/a")).text, "extra /extra/a env=null");
    // The api routes are gone: /api/ now goes to web's catch-all.
    match((await ask(proxy, "shop.test", "/api/x")).text, /^web\d /);
    const served0 = load.served();
    await waitFor(() => load.served() > served0 + 50, { what: "more traffic after the reload" });
    await load.stop();
    deepEqual(load.failures, []);
    const after = (await status(proxy)).backends.find((b: { url: string }) =>
      b.url === web[0]!.url
    );
    assert(
      after.requests >= before.requests,
      `kept its counts: ${before.requests} then ${after.requests}`,
    );
    deepEqual((await status(proxy)).pools.map((p: { name: string }) => p.name), ["web", "extra"]);
  } finally {
    await load.stop();
    await proxy.stop();
    await Promise.all([...web, api, extra].map((b) => b.close()));
  }
});

Deno.test("routes: the admin API addresses backends within a pool", async () => {
  const web = [named("web1")];
  const api = named("api");
  const added = named("api2");
  const path = await configFile(siteConfig(web, api));
  const proxy = await startGoround(["--config", path, "--workers", "1"]);
  const post = (url: string, body?: unknown) =>
    fetch(url, {
      method: "POST",
      headers: { "content-type": "application/json" },
      ...(body === undefined ? {} : { body: JSON.stringify(body) }),
    });
  try {
    const res = await post(`${proxy.adminUrl}/pools/api/backends`, { url: added.url });
    equal(res.status, 201);
    const body = await res.json();
    deepEqual([body.pool, body.url, body.state], ["api", added.url, "up"]);
    const seen = new Set<string>();
    for (let i = 0; i < 4; i++) {
      seen.add((await ask(proxy, "api.example.com", "/")).text.split(" ")[0]!);
    }
    deepEqual([...seen].sort(), ["api", "api2"]);
    const drained = await post(`${proxy.adminUrl}/pools/api/backends/0/drain`);
    equal(drained.status, 200);
    equal((await drained.json()).pool, "api");
    for (let i = 0; i < 3; i++) {
      equal((await ask(proxy, "api.example.com", "/")).text.split(" ")[0], "api2");
    }
    const missing = await post(`${proxy.adminUrl}/pools/nope/backends`, { url: added.url });
    equal(missing.status, 404);
    match(await missing.text(), /no pool "nope"/);
    // The flags-only addresses are the first pool's.
    const first = await post(`${proxy.adminUrl}/backends/0/drain`);
    equal((await first.json()).pool, "web");
  } finally {
    await proxy.stop();
    await Promise.all([...web, api, added].map((b) => b.close()));
  }
});

/** A WebSocket handshake by hand: the status and fields of the answer's head. */
async function handshake(port: number, target: string): Promise<[number, Map<string, string>]> {
  const conn = await Deno.connect({ hostname: "127.0.0.1", port });
  try {
    await conn.write(new TextEncoder().encode(
      `GET ${target} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n` +
        "Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\n" +
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
    ));
    let text = "";
    const buf = new Uint8Array(4096);
    while (!text.includes("\r\n\r\n")) {
      const n = await conn.read(buf);
      if (n === null) break;
      text += new TextDecoder().decode(buf.subarray(0, n));
    }
    const [statusLine, ...lines] = text.slice(0, text.indexOf("\r\n\r\n")).split("\r\n");
    const fields = new Map(lines.map((line) => {
      const colon = line.indexOf(":");
      return [line.slice(0, colon).toLowerCase(), line.slice(colon + 1).trim()] as const;
    }));
    return [Number(statusLine!.split(" ")[1]), fields];
  } finally {
    conn.close();
  }
}

for (const engine of ENGINES) {
  Deno.test(`[${engine}] routes: a WebSocket handshake follows its route, with its response rules and log line`, async () => {
    const chat = recordingBackend((req) => {
      if (new URL(req.url).pathname.startsWith("/deny")) {
        return new Response("no", { status: 403 });
      }
      const { socket, response } = Deno.upgradeWebSocket(req);
      response.headers.set("server", "chat-app");
      response.headers.set("x-chat", "1");
      socket.onmessage = (event) => socket.send(`chat ${new URL(req.url).pathname} ${event.data}`);
      return response;
    });
    const web = named("web");
    const path = await configFile({
      pools: { web: { backends: [web.url] }, chat: { backends: [chat.url] } },
      routes: [
        {
          name: "chat",
          path: "/chat/",
          "strip-prefix": "/chat",
          pool: "chat",
          "response-headers": { set: { "X-Route": "chat" }, remove: ["Server"] },
        },
        { pool: "web" },
      ],
    });
    const proxy = await startGoround([
      "--engine",
      engine,
      "--config",
      path,
      "--workers",
      "1",
      "--access-log",
      "json",
    ]);
    try {
      const ws = new WebSocket(`ws://127.0.0.1:${proxy.port}/chat/room1`);
      const reply = new Promise<string>((resolve, reject) => {
        ws.onmessage = (event) => resolve(String(event.data));
        ws.onerror = () => reject(new Error("websocket error"));
      });
      await new Promise((resolve) => (ws.onopen = resolve));
      ws.send("hi");
      equal(await reply, "chat /room1 hi");
      const closed = new Promise((resolve) => (ws.onclose = resolve));
      ws.close();
      await closed;
      equal(web.requests.length, 0);
      // The route's response rules apply to the 101 as to any answer.
      const [switched, fields] = await handshake(proxy.port, "/chat/room2");
      equal(switched, 101);
      equal(fields.get("x-route"), "chat");
      equal(fields.get("x-chat"), "1", "the backend's own 101 fields reach the client");
      equal(fields.get("server"), undefined, "removed by the route");
      const [denied, deniedFields] = await handshake(proxy.port, "/chat/deny");
      equal(denied, 403, "a refused handshake reaches the client as it was");
      equal(deniedFields.get("x-route"), "chat");
      // Each session's line, and the refused handshake's, name the route and pool.
      await waitFor(
        () =>
          proxy.stdout.filter((line) => line.includes('"status":403')).length === 1 &&
          proxy.stdout.filter((line) => line.includes('"status":101')).length === 2,
        { what: "three access log lines" },
      );
      for (const line of proxy.stdout) {
        const entry = JSON.parse(line);
        deepEqual([entry.route, entry.pool], ["chat", "chat"], line);
      }
    } finally {
      await proxy.stop();
      await Promise.all([web.close(), chat.close()]);
    }
  });
}

Deno.test("routes: every mistake in pools and routes stops goround before it serves, naming the file and key", async (t) => {
  const cases: [string, unknown, RegExp][] = [
    [
      "a route naming an unknown pool",
      { pools: { web: { backends: ["http://127.0.0.1:1"] } }, routes: [{ pool: "wbe" }] },
      /routes\[0\]\.pool: "wbe" is not a pool/,
    ],
    [
      "a prefix without a leading /",
      {
        pools: { web: { backends: ["http://127.0.0.1:1"] } },
        routes: [{ path: "api", pool: "web" }],
      },
      /routes\[0\]\.path/,
    ],
    [
      "two routes with the same match",
      {
        pools: { web: { backends: ["http://127.0.0.1:1"] } },
        routes: [{ path: "/a/", pool: "web" }, { path: "/a/", pool: "web" }],
      },
      /routes\[1\]/,
    ],
    [
      "a backend URL with a path",
      { pools: { web: { backends: ["http://127.0.0.1:1/app"] } }, routes: [{ pool: "web" }] },
      /pools\.web\.backends/,
    ],
    [
      "a route with no action",
      { pools: { web: { backends: ["http://127.0.0.1:1"] } }, routes: [{ path: "/" }] },
      /routes\[0\]/,
    ],
    [
      "backends at the top level beside pools",
      {
        backends: ["http://127.0.0.1:1"],
        pools: { web: { backends: ["http://127.0.0.1:2"] } },
        routes: [{ pool: "web" }],
      },
      /backends: given beside the config file's pools: expected the backends inside a pool/,
    ],
    [
      "an invalid host pattern",
      {
        pools: { web: { backends: ["http://127.0.0.1:1"] } },
        routes: [{ host: "a.*.com", pool: "web" }],
      },
      /routes\[0\]\.host/,
    ],
  ];
  for (const [name, config, expected] of cases) {
    await t.step(name, async () => {
      const path = await configFile(config);
      const run = await runGoround(["--config", path, "--listen", "127.0.0.1:0"]);
      equal(run.code, 2, run.stderr);
      const lines = run.stderr.trim().split("\n");
      equal(lines.length, 1, run.stderr);
      assert(lines[0]!.includes(path), `names the file: ${lines[0]}`);
      match(lines[0]!, expected);
    });
  }
});

Deno.test("routes: a pool renamed by a reload keeps serving (its backends were up), and a new route counts from 0", async () => {
  const web = named("web");
  const path = await configFile({
    "health-interval": "10s", // no probe comes to the rescue within the test
    pools: { web: { backends: [web.url] } },
    routes: [{ name: "all", pool: "web" }],
  });
  const proxy = await startGoround(["--config", path, "--workers", "2", "--access-log", "off"]);
  const load = startLoad(proxy, ["/", "/"], only200);
  try {
    await waitFor(() => load.served() > 20, { what: "traffic" });
    await Deno.writeTextFile(
      path,
      JSON.stringify({
        "health-interval": "10s",
        pools: { site: { backends: [web.url] } },
        routes: [{ name: "new", path: "/new/", pool: "site" }, { name: "all", pool: "site" }],
      }),
    );
    await sendSignal(proxy.pid, "HUP");
    await waitFor(() => proxy.stderr.some((l) => l.includes("reloaded")), { what: "the reload" });
    const after = load.served();
    await waitFor(() => load.served() > after + 50, { what: "traffic after the reload" });
    await load.stop();
    deepEqual(load.failures, [], "the renamed pool's backend was known up");
    const routes = (await status(proxy)).routes as { name: string; hits: number }[];
    deepEqual(routes.find((r) => r.name === "new")?.hits, 0, "a new route starts from 0");
  } finally {
    await load.stop();
    await proxy.stop();
    await web.close();
  }
});

Deno.test("routes: reloads that move backends between pools and routes to other pools never answer from the wrong pool or 503", async () => {
  const x = named("x");
  const y = named("y");
  // A: /p to pool p (x), /q to pool q (y). B: p is gone, x moved into q, and both paths go to q.
  // Whichever config a request meets, /p is answered by x, and /q by y (A) or x (B).
  const configA = {
    "health-interval": "10s",
    pools: { p: { backends: [x.url] }, q: { backends: [y.url] } },
    routes: [{ name: "p", path: "/p", pool: "p" }, { name: "q", path: "/q", pool: "q" }],
  };
  const configB = {
    "health-interval": "10s",
    pools: { q: { backends: [x.url] } },
    routes: [{ name: "p", path: "/p", pool: "q" }, { name: "q", path: "/q", pool: "q" }],
  };
  const path = await configFile(configA);
  const proxy = await startGoround(["--config", path, "--workers", "2", "--access-log", "off"]);
  const allowed: Record<string, RegExp> = { "/p": /^x /, "/q": /^[xy] / };
  const load = startLoad(
    proxy,
    ["/p", "/p", "/q", "/q"],
    (target, status, text) =>
      status === 200 && allowed[target]!.test(text) ? null : `${target}: ${status} ${text}`,
  );
  try {
    await waitFor(() => load.served() > 50, { what: "traffic" });
    for (let round = 0; round < 8; round++) {
      await reloadWith(proxy, path, round % 2 === 0 ? configB : configA);
      const now = load.served();
      await waitFor(() => load.served() > now + 20, { what: "traffic after the reload" });
    }
    await load.stop();
    const { failures } = load;
    deepEqual(failures.slice(0, 10), [], `${failures.length} of ${load.served()} failed`);
  } finally {
    await load.stop();
    await proxy.stop();
    await Promise.all([x.close(), y.close()]);
  }
});

for (const engine of ENGINES) {
  Deno.test(`[${engine}] routes: a fixed 204 has no length or body, a fixed text is UTF-8, OPTIONS * takes the root route`, async () => {
    const web = rawBackend(async (request, conn) => {
      const line = request.split("\r\n")[0]!;
      const body = `web saw ${line}`;
      const reply =
        `HTTP/1.1 200 OK\r\nContent-Length: ${body.length}\r\nConnection: close\r\n\r\n${body}`;
      await conn.write(new TextEncoder().encode(reply));
    });
    const path = await configFile({
      pools: { web: { backends: [web.url] } },
      routes: [
        { name: "empty", path: "/empty", respond: 204 },
        { name: "reset", path: "/reset", respond: 205 },
        { name: "hello", path: "/hello", respond: { status: 200, body: "héllo ✓" } },
        { name: "all", pool: "web" },
      ],
    });
    const proxy = await startGoround(["--engine", engine, "--config", path, "--access-log", "off"]);
    try {
      const empty = await ask(proxy, "a.test", "/empty");
      equal(empty.status, 204);
      equal(field(empty, "content-length"), undefined, "no Content-Length on a 204");
      equal(empty.text, "");
      const reset = await ask(proxy, "a.test", "/reset");
      equal(reset.status, 205);
      equal(reset.text, "");
      const hello = await ask(proxy, "a.test", "/hello");
      equal(hello.text, "héllo ✓");
      equal(field(hello, "content-length"), String(new TextEncoder().encode("héllo ✓").length));
      // One keep-alive connection: the 204 leaves nothing behind for the next answer to trip on.
      const client = Deno.createHttpClient({});
      try {
        for (let i = 0; i < 3; i++) {
          const res = await fetch(`${proxy.url}/empty`, { client });
          equal(res.status, 204);
          await res.body?.cancel();
          equal(await (await fetch(`${proxy.url}/hello`, { client })).text(), "héllo ✓");
        }
      } finally {
        client.close();
      }
      if (engine === "goround") {
        // Deno.serve reads an asterisk-form target its own way; goround's front passes it on.
        const star = await rawRequest(
          proxy.port,
          "OPTIONS * HTTP/1.1\r\nHost: a.test\r\nConnection: close\r\n\r\n",
        );
        equal(star.status, 200);
        equal(new TextDecoder().decode(star.body), "web saw OPTIONS * HTTP/1.1");
      }
    } finally {
      await proxy.stop();
      await web.close();
    }
  });
}

Deno.test("routes: a reload that replaces all 64 backends of a pool under load: no request fails, the new ones start from 0, down until checked", async () => {
  // Started with one, the pool holds 64: all of them replaced, the old ones serve beside the new
  // until the new ones' first checks (200 ms each here) have passed.
  const checkedSlowly = (name: string) =>
    recordingBackend(async (req) => {
      if (new URL(req.url).pathname === "/healthz") {
        await new Promise((resolve) => setTimeout(resolve, 200));
      }
      return new Response(`${name} ok`);
    });
  const sets = ["a", "b", "c"].map((set) =>
    Array.from({ length: 64 }, (_, i) => checkedSlowly(`${set}${i}`))
  );
  const [first, second, last] = sets as [
    RecordingBackend[],
    RecordingBackend[],
    RecordingBackend[],
  ];
  const config = (set: RecordingBackend[]) => ({
    "health-interval": "10s",
    "health-path": "/healthz",
    pools: { g: { backends: set.map((b) => b.url), retries: 0 } },
    routes: [{ name: "all", pool: "g" }],
  });
  const path = await configFile(config(first.slice(0, 1)));
  const proxy = await startGoround(["--config", path, "--workers", "2", "--access-log", "off"]);
  const seen = new Set<string>();
  const load = startLoad(proxy, ["/x", "/x", "/x", "/x"], (target, status, text) => {
    if (status === 200) seen.add(text.split(" ")[0]!);
    return only200(target, status, text);
  });
  // One of the last set is dead: it must join down and take nothing (no retries to hide it).
  const dead = last[0]!;
  await dead.close();
  try {
    await waitFor(() => load.served() > 50, { what: "traffic" });
    for (const [round, set] of [first, second, first, second, last].entries()) {
      await Deno.writeTextFile(path, JSON.stringify(config(set)));
      const reloads = proxy.stderr.filter((l) => l.includes("reloaded")).length;
      await sendSignal(proxy.pid, "HUP");
      await waitFor(
        () =>
          proxy.stderr.filter((l) => l.includes("reloaded")).length > reloads ||
          proxy.stderr.some((l) => l.includes("reload failed")),
        { what: `reload ${round + 1}` },
      );
      deepEqual(proxy.stderr.filter((l) => l.includes("reload failed")), []);
      const now = load.served();
      await waitFor(() => load.served() > now + 100, { what: "traffic after the reload" });
    }
    seen.clear();
    const now = load.served();
    await waitFor(() => load.served() > now + 200, { what: "traffic on the last config" });
    await load.stop();
    const { failures } = load;
    deepEqual(failures.slice(0, 10), [], `${failures.length} of ${load.served()} failed`);
    assert([...seen].every((name) => name.startsWith("c")), `old ones answered: ${[...seen]}`);
    const shown = (await status(proxy)).backends as Json[];
    equal(shown.length, 64);
    // Each slot's counts are its new backend's own, not its former tenant's.
    for (const backend of last.slice(1)) {
      const row = shown.find((b) => b.url === backend.url);
      const served = backend.requests.filter((r) => !r.url.endsWith("/healthz")).length;
      equal(row?.requests, served, `${backend.url}: ${JSON.stringify(row)}`);
    }
    const down = shown.find((b) => b.url === dead.url);
    deepEqual([down?.state, down?.requests], ["down", 0], JSON.stringify(down));
  } finally {
    await load.stop();
    await proxy.stop();
    await Promise.all([...first, ...second, ...last.slice(1)].map((b) => b.close()));
  }
});

// Two reloads: the first frees a and b's slots, the second gives b's to d. A full pool: one
// reload gives a and b's slots to two of 64 new backends at once.
for (const full of [false, true]) {
  const name = full
    ? "routes: a retry begun before a full pool is replaced never goes to the backend its slot held"
    : "routes: a retry that outlives two reloads never goes to a backend its slot no longer holds";
  Deno.test(name, async () => {
    let release = () => {};
    const held = new Promise<void>((resolve) => (release = resolve));
    // a holds its first request until told, then answers 503: the request is retried elsewhere.
    const a = recordingBackend(async (req) => {
      if (new URL(req.url).pathname === "/slow") {
        await held;
        return new Response("a busy", { status: 503 });
      }
      return new Response("a");
    });
    const b = named("b");
    const others = Array.from({ length: full ? 64 : 2 }, (_, i) => named(`c${i}`));
    const steps = full ? [others] : [others.slice(0, 1), others];
    const config = (set: RecordingBackend[]) => ({
      "health-interval": "10s",
      pools: { p: { backends: set.map((x) => x.url), retries: 1 } },
      routes: [{ name: "all", pool: "p" }],
    });
    const path = await configFile(config([a, b]));
    const proxy = await startGoround(["--config", path, "--workers", "1", "--access-log", "off"]);
    const reload = (set: RecordingBackend[]) => reloadWith(proxy, path, config(set));
    try {
      const slow = fetch(`${proxy.url}/slow`);
      await waitFor(() => a.requests.length === 1, { what: "the slow request at a" });
      for (const set of steps) await reload(set);
      release();
      const res = await slow;
      const text = await res.text();
      equal(b.requests.length, 0, `b, out of the pool since the first reload, got the retry`);
      assert(res.status === 503 || /^c\d+ /.test(text), `${res.status} ${text}`);
    } finally {
      release();
      await proxy.stop();
      await Promise.all([a, b, ...others].map((x) => x.close()));
    }
  });
}

Deno.test("routes: requests queued at --max-conns when reloads replace their backends are served by the new ones, once, by the new route", async () => {
  let release = () => {};
  const held = new Promise<void>((resolve) => (release = resolve));
  const a = recordingBackend(async () => {
    await held;
    return new Response("a");
  });
  const [b, other] = [named("b"), named("other")];
  const config = (set: RecordingBackend[], version: string, extra = false) => ({
    "health-interval": "10s",
    "max-conns": 1,
    "queue-timeout": "20s",
    pools: {
      p: { backends: set.map((x) => x.url) },
      ...(extra ? { o: { backends: [other.url] } } : {}),
    },
    routes: [{ name: "all", pool: "p", "response-headers": { set: { "X-Ver": version } } }],
  });
  const path = await configFile(config([a], "old"));
  const proxy = await startGoround(["--config", path, "--workers", "1", "--access-log", "off"]);
  const reload = (settings: unknown) => reloadWith(proxy, path, settings);
  const answers = Array.from(
    { length: 5 },
    () =>
      fetch(`${proxy.url}/q`).then(async (res) =>
        `${res.status} ${(await res.text()).split(" ")[0]} ${res.headers.get("x-ver")}`
      ),
  );
  try {
    await waitFor(() => a.requests.length === 1, { what: "one request at a, four queued" });
    // A change that leaves their pool alone, then one that replaces its backend: their queue
    // belonged to the config before, so they are routed again, not left to time out.
    await reload(config([a], "old", true));
    await reload(config([b], "new", true));
    await waitFor(() => b.requests.length === 4, { timeout: 5000, what: "the queued four at b" });
    release();
    deepEqual((await Promise.all(answers)).sort(), [
      "200 a old",
      "200 b new",
      "200 b new",
      "200 b new",
      "200 b new",
    ]);
    equal(a.requests.length, 1);
    const hits = ((await status(proxy)).routes as { hits: number }[])[0]!.hits;
    equal(hits, 5, "one hit per request");
  } finally {
    release();
    await Promise.allSettled(answers);
    await proxy.stop();
    await Promise.all([a.close(), b.close(), other.close()]);
  }
});

Deno.test("routes: a request queued across reloads waits out its --queue-timeout once, not anew after each", async () => {
  let release = () => {};
  const held = new Promise<void>((resolve) => (release = resolve));
  const a = recordingBackend(async () => {
    await held;
    return new Response("a");
  });
  const other = named("other");
  const config = (extra: boolean) => ({
    "health-interval": "10s",
    "max-conns": 1,
    "queue-timeout": "1s",
    pools: {
      p: { backends: [a.url] },
      ...(extra ? { o: { backends: [other.url] } } : {}),
    },
    routes: [{ name: "all", pool: "p" }],
  });
  const path = await configFile(config(false));
  const proxy = await startGoround(["--config", path, "--workers", "1", "--access-log", "off"]);
  const first = fetch(`${proxy.url}/held`);
  let answered = 0;
  try {
    await waitFor(() => a.requests.length === 1, { what: "the held request at a" });
    const queued = fetch(`${proxy.url}/queued`).then(async (res) => {
      answered = Date.now();
      return [res.status, await res.text()];
    });
    const since = Date.now();
    // Changes to another pool keep coming, 4 s long, while it waits; each retires the cores it
    // waits in (spaced, so that a wait started anew at each would outlast them).
    for (let round = 0; answered === 0 && Date.now() - since < 4000; round++) {
      if (round > 0) await new Promise((resolve) => setTimeout(resolve, 250));
      await reloadWith(proxy, path, config(round % 2 === 0));
    }
    deepEqual((await queued)[0], 503);
    const waited = answered - since;
    assert(waited < 2500, `answered after ${waited} ms with a 1 s queue timeout`);
  } finally {
    release();
    await first.then((res) => res.text()).catch(() => {});
    await proxy.stop();
    await Promise.all([a.close(), other.close()]);
  }
});

Deno.test("routes: a backend removed and put back while its request runs keeps --max-conns", async () => {
  let release = () => {};
  const held = new Promise<void>((resolve) => (release = resolve));
  const a = recordingBackend(async (req) => {
    if (new URL(req.url).pathname === "/held") await held;
    return new Response("a");
  });
  const b = named("b");
  const config = (set: RecordingBackend[]) => ({
    "health-interval": "10s",
    "max-conns": 1,
    pools: { p: { backends: set.map((x) => x.url) } },
    routes: [{ name: "all", pool: "p" }],
  });
  const path = await configFile(config([a]));
  const proxy = await startGoround(["--config", path, "--workers", "1", "--access-log", "off"]);
  const reload = (set: RecordingBackend[]) => reloadWith(proxy, path, config(set));
  const first = fetch(`${proxy.url}/held`);
  try {
    await waitFor(() => a.requests.length === 1, { what: "the held request at a" });
    await reload([b]);
    await reload([a]);
    const row = async () => ((await status(proxy)).backends as Json[]).find((x) => x.url === a.url);
    await waitFor(async () => (await row())?.state === "up", { what: "a back up" });
    // Its request still runs there: it is at its one connection.
    equal((await row()).inFlight, 1, JSON.stringify(await row()));
    release();
    equal(await (await first).text(), "a");
    equal(await (await fetch(`${proxy.url}/next`)).text(), "a");
  } finally {
    release();
    await first.then((res) => res.text()).catch(() => {});
    await proxy.stop();
    await Promise.all([a.close(), b.close()]);
  }
});

Deno.test("routes: a retry waiting for room when a reload comes goes to a backend it has not tried", async () => {
  let release = () => {};
  const held = new Promise<void>((resolve) => (release = resolve));
  const f = recordingBackend(() => new Response("f fails", { status: 503 }));
  const g = recordingBackend(async () => {
    await held;
    return new Response("g");
  });
  const h = named("h");
  const config = (set: RecordingBackend[]) => ({
    "health-interval": "10s",
    "max-conns": 1,
    "queue-timeout": "20s",
    pools: { p: { backends: set.map((x) => x.url), retries: 1 } },
    routes: [{ name: "all", pool: "p" }],
  });
  const path = await configFile(config([f, g]));
  const proxy = await startGoround(["--config", path, "--workers", "1", "--access-log", "off"]);
  const first = fetch(`${proxy.url}/held`);
  try {
    await waitFor(() => g.requests.length === 1, { what: "g held" });
    // f answers 503; its retry waits for g's room.
    const retried = fetch(`${proxy.url}/r`).then(async (res) => [res.status, await res.text()]);
    const tries = () => f.requests.filter((r) => r.url.endsWith("/r")).length;
    await waitFor(() => tries() === 1, { what: "the first try at f" });
    await Deno.writeTextFile(path, JSON.stringify(config([f, h])));
    await sendSignal(proxy.pid, "HUP");
    deepEqual(await retried, [200, "h /r env=null"]);
    equal(tries(), 1, "f, tried already, was not tried again");
  } finally {
    release();
    await first.then((res) => res.text()).catch(() => {});
    await proxy.stop();
    await Promise.all([f.close(), g.close(), h.close()]);
  }
});

Deno.test("routes: a retry after a request's wait for room gets a --queue-timeout of its own", async () => {
  const gates = {
    a: Promise.withResolvers<void>(),
    r: Promise.withResolvers<void>(),
    b: Promise.withResolvers<void>(),
  };
  const a = recordingBackend(async (req) => {
    if (new URL(req.url).pathname === "/r") {
      await gates.r.promise;
      return new Response("a fails", { status: 503 });
    }
    await gates.a.promise;
    return new Response("a");
  });
  const b = recordingBackend(async (req) => {
    if (new URL(req.url).pathname !== "/r") await gates.b.promise;
    return new Response("b");
  });
  const path = await configFile({
    "health-interval": "10s",
    "max-conns": 1,
    "queue-timeout": "1s",
    pools: { p: { backends: [a.url, b.url], retries: 1 } },
    routes: [{ name: "all", pool: "p" }],
  });
  const proxy = await startGoround(["--config", path, "--workers", "1", "--access-log", "off"]);
  const holds = [fetch(`${proxy.url}/hold`), fetch(`${proxy.url}/hold`)];
  let settled = false;
  try {
    await waitFor(() => a.requests.length === 1 && b.requests.length === 1, { what: "both full" });
    const since = Date.now();
    const r = fetch(`${proxy.url}/r`).then(async (res) => [res.status, await res.text()]);
    r.finally(() => (settled = true));
    await waitFor(
      async () =>
        /goround_queue_depth\S* 1\b/.test(await (await fetch(`${proxy.adminUrl}/metrics`)).text()),
      { what: "r waiting for room" },
    );
    gates.a.resolve(); // a has room: r waited, then goes there
    await waitFor(() => a.requests.some((x) => x.url.endsWith("/r")), { what: "r at a" });
    // Past r's first wait's deadline, a answers 503; the retry must wait for b afresh.
    await waitFor(() => Date.now() - since > 1200, { what: "the first deadline to pass" });
    gates.r.resolve();
    await waitFor(() => settled || Date.now() - since > 1500, { what: "r or 300 ms" });
    gates.b.resolve();
    deepEqual(await r, [200, "b"]);
  } finally {
    for (const gate of Object.values(gates)) gate.resolve();
    await Promise.allSettled(holds.map((h) => h.then((res) => res.text())));
    await proxy.stop();
    await Promise.all([a.close(), b.close()]);
  }
});
