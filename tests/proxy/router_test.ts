import { deepEqual, equal } from "node:assert/strict";
import { NO_RULES, type Route, type RouteAction } from "../../lib/config/routes.ts";
import {
  applyRequestRules,
  applyResponseRules,
  compileRoutes,
  hostOf,
  redirectLocation,
  rewritePath,
} from "../../lib/proxy/router.ts";

let next = 0;
function route(match: Partial<Route>, action: RouteAction = pool("p")): Route {
  const index = next++;
  return {
    index,
    name: match.name ?? `r${index}`,
    host: null,
    path: "/",
    method: null,
    header: null,
    action,
    requestHeaders: NO_RULES,
    responseHeaders: NO_RULES,
    ...match,
  };
}

function pool(
  name: string,
  stripPrefix = "",
  addPrefix = "",
): Extract<RouteAction, { kind: "pool" }> {
  return { kind: "pool", pool: name, stripPrefix, addPrefix };
}

const none = () => null;

Deno.test("hostOf(): lowercase, without the port and one trailing dot", () => {
  deepEqual(
    [
      "Example.COM",
      "example.com:8080",
      "example.com.",
      "example.com.:80",
      "[::1]:8080",
      "[::1]",
      "",
    ]
      .map(hostOf),
    ["example.com", "example.com", "example.com", "example.com", "[::1]", "[::1]", ""],
  );
});

Deno.test("compileRoutes(): exact host, then wildcards (longest suffix first), then host-less", () => {
  const exact = route({ name: "exact", host: "api.example.com" });
  const wild = route({ name: "wild", host: "*.example.com" });
  const deeper = route({ name: "deeper", host: "*.eu.example.com" });
  const any = route({ name: "any" });
  const router = compileRoutes([any, wild, deeper, exact]);
  const at = (host: string) => router.match(host, "/x", "GET", none)?.name;
  equal(at("api.example.com"), "exact");
  equal(at("API.example.com.:443"), "exact");
  equal(at("shop.example.com"), "wild");
  equal(at("a.b.example.com"), "wild", "any depth");
  equal(at("x.eu.example.com"), "deeper", "the longest suffix first");
  equal(at("example.com"), "any", "a wildcard does not match its own suffix");
  equal(at("other.test"), "any");
});

Deno.test("compileRoutes(): the longest prefix wins, conditions before none, then file order", () => {
  // A small group is scanned, a large one looked up by prefix: the same answers.
  for (const extra of [0, 12]) {
    const root = route({ name: "root" });
    const api = route({ name: "api", path: "/api/" });
    const apiV2 = route({ name: "v2", path: "/api/v2/" });
    const post = route({ name: "post", path: "/api/", method: "POST" });
    const canary = route({ name: "canary", path: "/api/", header: ["x-canary", "1"] });
    const plain = route({ name: "plain", path: "/apix" });
    const fillers = Array.from({ length: extra }, (_, i) => route({ path: `/f${i}/` }));
    const router = compileRoutes([root, api, apiV2, post, canary, plain, ...fillers]);
    const at = (path: string, method = "GET", field: (n: string) => string | null = none) =>
      router.match("h", path, method, field)?.name;
    equal(at("/api/v2/users"), "v2", `${extra}`);
    equal(at("/api/v2/"), "v2", "the whole path is the prefix");
    equal(at("/api/users"), "api");
    equal(at("/api/users", "POST"), "post");
    equal(at("/api/users", "GET", (n) => (n === "x-canary" ? "1" : null)), "canary");
    equal(at("/api/users", "GET", (n) => (n === "x-canary" ? "2" : null)), "api", "exact value");
    equal(at("/apix"), "plain", "a plain string prefix, as nginx's");
    equal(at("/"), "root");
  }
});

Deno.test("compileRoutes(): hosts that alternate each get their own routes", () => {
  const router = compileRoutes([
    route({ name: "a", host: "a.test" }),
    route({ name: "b", host: "*.b.test" }),
    route({ name: "rest" }),
  ]);
  const at = (authority: string) => router.match(authority, "/", "GET", none)?.name;
  for (let i = 0; i < 3; i++) {
    equal(at("a.test:8080"), "a");
    equal(at("x.b.test"), "b");
    equal(at("A.TEST."), "a");
    equal(at("b.test"), "rest", "a wildcard does not take its own name");
  }
});

Deno.test("compileRoutes(): a host group with no matching path falls through; nothing matches: null", () => {
  const hostOnly = route({ name: "admin", host: "admin.test", path: "/admin/" });
  const fallback = route({ name: "fallback", path: "/static/" });
  const router = compileRoutes([hostOnly, fallback]);
  equal(router.match("admin.test", "/static/a.css", "GET", none)?.name, "fallback");
  equal(router.match("admin.test", "/other", "GET", none), null);
  equal(compileRoutes([]).match("a", "/", "GET", none), null);
});

Deno.test("compileRoutes(): a header condition is read only for routes that have one", () => {
  let asked = 0;
  const router = compileRoutes([
    route({ path: "/a/" }),
    route({ path: "/b/", header: ["x", "1"] }),
  ]);
  router.match("h", "/a/1", "GET", () => (asked++, null));
  equal(asked, 0);
  router.match("h", "/b/1", "GET", () => (asked++, "1"));
  equal(asked, 1);
});

Deno.test("rewritePath(): strip, then add; the query kept; a leading / always", () => {
  equal(rewritePath("/api/users?page=2", pool("a", "/api")), "/users?page=2");
  equal(rewritePath("/api", pool("a", "/api")), "/");
  equal(rewritePath("/api?x=1", pool("a", "/api")), "/?x=1");
  equal(rewritePath("/apix/y", pool("a", "/api")), "/x/y");
  equal(rewritePath("/v2/items?q=1", pool("a", "", "/legacy")), "/legacy/v2/items?q=1");
  equal(rewritePath("/v2/items", pool("a", "", "/legacy/")), "/legacy/v2/items");
  equal(rewritePath("/api/x?y", pool("a", "/api", "/v1")), "/v1/x?y");
  equal(rewritePath("*", pool("a", "/api", "/v1")), "*", "OPTIONS * is left alone");
  equal(rewritePath("/other", pool("a", "/api")), "/other");
});

Deno.test("applyRequestRules(): remove and set replace every field of the name; add appends", () => {
  const rules = { set: [["x-env", "prod"]], add: [["x-tag", "b"]], remove: ["cookie"] } as const;
  deepEqual(
    applyRequestRules(
      [["host", "h"], ["x-env", "dev"], ["x-env", "qa"], ["cookie", "c"], ["x-tag", "a"]],
      { set: [...rules.set], add: [...rules.add], remove: [...rules.remove] },
    ),
    [["host", "h"], ["x-tag", "a"], ["x-env", "prod"], ["x-tag", "b"]],
  );
  const headers = new Headers({ "x-a": "1" });
  deepEqual(applyRequestRules(headers, NO_RULES), [["x-a", "1"]], "a Headers object reads too");
});

Deno.test("applyResponseRules(): remove and set", () => {
  deepEqual(
    applyResponseRules(
      [["server", "app"], ["x-powered-by", "php"], ["cache-control", "no-store"]],
      { set: [["cache-control", "max-age=60"]], add: [], remove: ["server", "x-powered-by"] },
    ),
    [["cache-control", "max-age=60"]],
  );
});

Deno.test("redirectLocation(): {host} with its port, {uri} with its query", () => {
  equal(
    redirectLocation("https://{host}{uri}", "example.com:8080", "/a/b?c=1"),
    "https://example.com:8080/a/b?c=1",
  );
  equal(redirectLocation("https://www.example.com/", "x", "/y"), "https://www.example.com/");
});

Deno.test("normalPath(): dot segments, %2e and empty segments resolved, as nginx does", async () => {
  const { normalPath } = await import("../../lib/proxy/router.ts");
  const cases: [string, string][] = [
    ["/a/b", "/a/b"],
    ["/x/../internal/secret", "/internal/secret"],
    ["/./internal/secret", "/internal/secret"],
    ["/%2e%2e/internal/secret", "/internal/secret"],
    ["/%2E/a", "/a"],
    ["//internal//secret", "/internal/secret"],
    ["/api/../admin", "/admin"],
    ["/../../etc", "/etc"],
    ["/a/b/..", "/a/"],
    ["/a/.", "/a/"],
    ["/api/", "/api/"],
    ["/", "/"],
    ["/a%20b", "/a%20b"],
  ];
  for (const [path, expected] of cases) equal(normalPath(path), expected, path);
});
