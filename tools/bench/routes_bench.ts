/**
 * What routing adds to a request, on one core, without the network: the routed core's
 * `forward` against a pool forwarder called directly, for the bench's config of N routes
 * (`configs.ts`), for a request that misses every host and prefix and one that takes an exact
 * host. The pool forwarder is a stub that resolves at once, so the figure is routing's own work.
 *
 * ```sh
 * deno bench --allow-read=tools tools/bench/routes_bench.ts
 * ```
 *
 * @module
 */

import { routesConfig } from "./configs.ts";
import { readPoolsAndRoutes } from "../../lib/config/routes_file.ts";
import { createPool } from "../../lib/balance/pool.ts";
import { createRouted, type PoolCore } from "../../lib/proxy/routed.ts";
import { type Incoming, localReply, type Reply } from "../../lib/proxy/forward.ts";

const ROUTES = 50;
const data = JSON.parse(routesConfig(ROUTES, ["http://127.0.0.1:1"]));
const { pools, routes } = readPoolsAndRoutes(data, "bench.json", JSON.stringify(data));
const done: Promise<Reply> = Promise.resolve(localReply(200, "ok"));
const stub: PoolCore = {
  forward: () => done,
  upgrade: () => Promise.resolve({ kind: "reply", reply: localReply(200, "ok") }),
  bridged: () => Promise.resolve({ kind: "reply", reply: localReply(200, "ok") }),
};
const process = createPool(256);
const routed = createRouted(routes, new Map(pools.map((pool) => [pool.name, stub])), {
  process,
  routeSlots: routes.map((_, index) => index),
  via: "1.1 goround-bench",
});

function request(authority: string, target: string): Incoming {
  return {
    method: "GET",
    target,
    authority,
    headers: [["host", authority], ["user-agent", "wrk"], ["accept", "*/*"]],
    body: null,
    bodyLength: 0,
    clientIp: "127.0.0.1",
    proto: "http",
  };
}

const missing = request("127.0.0.1:8080", "/");
const exact = request("h3.bench.test", "/index.html?x=1");
const walked = request("127.0.0.1:8080", "/p2/../a//b");

Deno.bench("flags-only: the pool's forwarder, called directly", { baseline: true }, () => {
  stub.forward(missing);
});
Deno.bench(`${ROUTES} routes: a request that only the catch-all takes`, () => {
  routed.forward(missing);
});
Deno.bench(`${ROUTES} routes: an exact host`, () => {
  routed.forward(exact);
});
Deno.bench(`${ROUTES} routes: a path with dot segments to resolve`, () => {
  routed.forward(walked);
});
