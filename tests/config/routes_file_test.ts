import { deepEqual, equal, match, throws } from "node:assert/strict";
import { readPoolsAndRoutes } from "../../lib/config/routes_file.ts";
import { ConfigError } from "../../lib/errors.ts";

const FILE = "goround.json";
const WEB = { backends: ["http://127.0.0.1:8081"] };

function read(data: Record<string, unknown>, text = JSON.stringify(data)) {
  return readPoolsAndRoutes(data, FILE, text);
}

function refused(data: Record<string, unknown>, expected: RegExp, text?: string): void {
  throws(() => read(data, text), (error: unknown) => {
    if (!(error instanceof ConfigError)) throw error;
    equal(error.message.split("\n").length, 1, "one line");
    match(error.message, /^goround\.json: /);
    match(error.message, expected);
    return true;
  });
}

Deno.test("readPoolsAndRoutes(): the issue's example", () => {
  const { pools, routes } = read({
    pools: {
      web: { backends: ["http://127.0.0.1:8081", { url: "http://127.0.0.1:8082", weight: 3 }] },
      api: {
        backends: ["http://127.0.0.1:8083"],
        "health-path": "/healthz",
        algorithm: "least-conn",
      },
    },
    routes: [
      { host: "api.example.com", pool: "api" },
      {
        path: "/api/",
        "strip-prefix": "/api",
        pool: "api",
        "request-headers": { set: { "X-Env": "prod" } },
      },
      { pool: "web" },
    ],
  });
  deepEqual(pools.map((p) => p.name), ["web", "api"]);
  deepEqual(
    (pools[0]!.settings.backends ?? []).map((b) => [b.url, b.weight]),
    [["http://127.0.0.1:8081", 1], ["http://127.0.0.1:8082", 3]],
  );
  deepEqual([pools[1]!.settings.healthPath, pools[1]!.settings.algorithm], [
    "/healthz",
    "least-conn",
  ]);
  deepEqual(routes.map((r) => [r.name, r.host, r.path]), [
    ["routes[0]", "api.example.com", "/"],
    ["routes[1]", null, "/api/"],
    ["routes[2]", null, "/"],
  ]);
  deepEqual(routes[1]!.action, { kind: "pool", pool: "api", stripPrefix: "/api", addPrefix: "" });
  deepEqual(routes[1]!.requestHeaders.set, [["x-env", "prod"]]);
});

Deno.test("readPoolsAndRoutes(): a file without pools or routes has neither", () => {
  deepEqual(read({}), { pools: [], routes: [] });
});

Deno.test("readPoolsAndRoutes(): redirects, fixed answers, conditions, names", () => {
  const { routes } = read({
    pools: { web: WEB },
    routes: [
      { name: "to-https", path: "/old", redirect: "https://{host}{uri}" },
      { path: "/gone", redirect: { status: 301, location: "/new" } },
      { path: "/robots.txt", respond: { status: 200, body: "User-agent: *" } },
      { path: "/teapot", respond: 418 },
      { host: "*.Example.COM.", method: "post", header: { "X-Canary": "1" }, pool: "web" },
      {
        pool: "web",
        "response-headers": { remove: ["Server"], set: { "Cache-Control": "no-store" } },
      },
    ],
  });
  deepEqual(routes.map((r) => r.action.kind), [
    "redirect",
    "redirect",
    "respond",
    "respond",
    "pool",
    "pool",
  ]);
  deepEqual(routes[0]!.action, { kind: "redirect", status: 308, location: "https://{host}{uri}" });
  equal(routes[0]!.name, "to-https");
  deepEqual(routes[3]!.action, { kind: "respond", status: 418, body: "" });
  deepEqual([routes[4]!.host, routes[4]!.method, routes[4]!.header], ["*.example.com", "POST", [
    "x-canary",
    "1",
  ]]);
  deepEqual(routes[5]!.responseHeaders, {
    set: [["cache-control", "no-store"]],
    add: [],
    remove: ["server"],
  });
});

Deno.test("readPoolsAndRoutes(): every mistake is one line naming the file and key", async (t) => {
  const cases: [string, Record<string, unknown>, RegExp, string?][] = [
    [
      "unknown pool",
      { pools: { web: WEB }, routes: [{ pool: "wbe" }] },
      /routes\[0\]\.pool: "wbe" is not a pool: expected one of "web"/,
    ],
    [
      "two pools of one name",
      { pools: { web: WEB }, routes: [{ pool: "web" }] },
      /pools\.web: two pools named "web"/,
      `{"pools": {"web": {"backends": ["http://127.0.0.1:1"]}, "web": {"backends": ["http://127.0.0.1:2"]}}, "routes": [{"pool": "web"}]}`,
    ],
    [
      "bad pool name",
      { pools: { "we b": WEB }, routes: [{ pool: "we b" }] },
      /pools\.we b: "we b" is not a pool name/,
    ],
    [
      "no action",
      { pools: { web: WEB }, routes: [{ path: "/a/" }] },
      /routes\[0\]: no action: expected exactly one of/,
    ],
    [
      "two actions",
      { pools: { web: WEB }, routes: [{ pool: "web", respond: 404 }] },
      /routes\[0\]: two actions \(pool, respond\)/,
    ],
    [
      "wildcard inside",
      { pools: { web: WEB }, routes: [{ host: "a.*.com", pool: "web" }] },
      /routes\[0\]\.host: "a\.\*\.com" is not a host pattern/,
    ],
    [
      "host with a port",
      { pools: { web: WEB }, routes: [{ host: "a.com:80", pool: "web" }] },
      /routes\[0\]\.host: "a\.com:80"/,
    ],
    [
      "prefix without /",
      { pools: { web: WEB }, routes: [{ path: "api", pool: "web" }] },
      /routes\[0\]\.path: "api": expected a path prefix starting with \//,
    ],
    ["strip not a prefix", {
      pools: { web: WEB },
      routes: [{ path: "/api/", "strip-prefix": "/v1", pool: "web" }],
    }, /routes\[0\]\.strip-prefix: "\/v1" does not begin the route's path/],
    ["same match twice", {
      pools: { web: WEB },
      routes: [{ path: "/a/", pool: "web" }, { path: "/a/", pool: "web" }],
    }, /routes\[1\]: matches the same requests as routes\[0\], so it could never be used/],
    ["backend with a path", {
      pools: { web: { backends: ["http://127.0.0.1:1/app"] } },
      routes: [{ pool: "web" }],
    }, /pools\.web\.backends: .*path/],
    [
      "pool without backends",
      { pools: { web: {} }, routes: [{ pool: "web" }] },
      /pools\.web: no backends/,
    ],
    ["both backends and discover", {
      pools: { web: { ...WEB, discover: "dns:a.test:80" } },
      routes: [{ pool: "web" }],
    }, /pools\.web: both backends and discover/],
    ["a process-wide setting in a pool", {
      pools: { web: { ...WEB, workers: 2 } },
      routes: [{ pool: "web" }],
    }, /pools\.web\.workers: not a pool setting/],
    ["a bad value in a pool", {
      pools: { web: { ...WEB, "health-interval": "soon" } },
      routes: [{ pool: "web" }],
    }, /pools\.web\.health-interval: /],
    [
      "an unknown route key",
      { pools: { web: WEB }, routes: [{ pool: "web", hosts: "a" }] },
      /routes\[0\]\.hosts: not a route key/,
    ],
    ["a bad redirect status", {
      pools: { web: WEB },
      routes: [{ redirect: { status: 200, location: "/" } }],
    }, /routes\[0\]\.redirect\.status: 200: expected one of 301/],
    ["a respond status out of range", {
      pools: { web: WEB },
      routes: [{ respond: { status: 99 } }],
    }, /routes\[0\]\.respond\.status: 99: expected a status from 200 to 599/],
    ["a field name that is not a token", {
      pools: { web: WEB },
      routes: [{ pool: "web", "request-headers": { set: { "X Env": "1" } } }],
    }, /request-headers\.set\.X Env: "X Env" is not a field name/],
    ["a value with CR LF", {
      pools: { web: WEB },
      routes: [{ pool: "web", "request-headers": { set: { "X-Env": "a\r\nB: c" } } }],
    }, /expected a text without CR, LF or NUL/],
    ["a framing field", {
      pools: { web: WEB },
      routes: [{ pool: "web", "response-headers": { remove: ["Content-Length"] } }],
    }, /"Content-Length" is managed by goround/],
    ["a WebSocket handshake field", {
      pools: { web: WEB },
      routes: [{ pool: "web", "response-headers": { set: { "Sec-WebSocket-Accept": "x" } } }],
    }, /"Sec-WebSocket-Accept" is managed by goround/],
    ["a header value that is not ASCII", {
      pools: { web: WEB },
      routes: [{ pool: "web", "response-headers": { set: { "X-Team": "Équipe" } } }],
    }, /response-headers\.set\.X-Team: "Équipe": expected ASCII text/],
    ["a redirect location that is not ASCII", {
      pools: { web: WEB },
      routes: [{ redirect: "https://exämple.com{uri}" }],
    }, /routes\[0\]\.redirect\.location: .*expected ASCII text/],
    ["a body on a 204", {
      pools: { web: WEB },
      routes: [{ respond: { status: 204, body: "gone" } }],
    }, /routes\[0\]\.respond\.body: a 204 response has no body/],
    ["a body on a 304", {
      pools: { web: WEB },
      routes: [{ respond: { status: 304, body: "x" } }],
    }, /routes\[0\]\.respond\.body: a 304 response has no body/],
    ...["/a//b", "/a/../b", "/a/./b", "/%2e%2e/", "/x%2E/"].map((path) =>
      [`a path no request reaches: ${path}`, {
        pools: { web: WEB },
        routes: [{ path, pool: "web" }],
      }, /routes\[0\]\.path: .*no request reaches it/] as [string, Record<string, unknown>, RegExp]
    ),
    ["a CONNECT route", {
      pools: { web: WEB },
      routes: [{ method: "connect", pool: "web" }],
    }, /routes\[0\]\.method: "CONNECT": goround answers CONNECT itself/],
    ["request rules without a pool", {
      pools: { web: WEB },
      routes: [{ respond: 404, "request-headers": { set: { A: "1" } } }],
    }, /routes\[0\]\.request-headers: only with "pool"/],
    [
      "pools without routes",
      { pools: { web: WEB } },
      /routes: missing: expected routes that send requests to the pools/,
    ],
    ["routes without pools", { routes: [{ respond: 404 }] }, /routes: no pools/],
    [
      "more routes than goround keeps counters for",
      {
        pools: { web: WEB },
        routes: Array.from({ length: 257 }, (_, i) => ({ path: `/r${i}/`, pool: "web" })),
      },
      /routes: 257 routes: expected at most 256/,
    ],
    ["two routes of one name", {
      pools: { web: WEB },
      routes: [{ name: "a", path: "/a/", pool: "web" }, { name: "a", pool: "web" }],
    }, /routes\[1\]\.name: "a" is also routes\[0\]'s/],
  ];
  for (const [name, data, expected, text] of cases) {
    await t.step(name, () => refused(data, expected, text));
  }
});
