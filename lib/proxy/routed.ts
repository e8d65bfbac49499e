/**
 * The proxy core with routes: each request is matched against the routes (`router.ts`) and
 * then forwarded to its route's pool (its path rewritten, its header rules applied both ways),
 * redirected, or answered by goround. A request no route matches gets 404. WebSocket handshakes
 * follow the same routes. Without routes, a worker calls its one pool's forwarder directly and
 * none of this runs.
 *
 * @module
 */

import type { HeaderRules, Route } from "../config/routes.ts";
import { countRefusal, countRouteHit, type Pool } from "../balance/pool.ts";
import {
  type Forwarder,
  type Incoming,
  localReply,
  loopDetected,
  nextRequestId,
  type Reply,
} from "./forward.ts";
import { TAKEOVER_PROBE_PATH } from "./via.ts";
import type { Upgrader } from "./websocket.ts";
import {
  applyRequestRules,
  applyResponseRules,
  compileRoutes,
  normalPath,
  noRules,
  redirectLocation,
  rewritePath,
} from "./router.ts";
import type { UpstreamResponse } from "../upstream/client.ts";

/** What one pool offers the routes: its forwarder and its upgraders. */
export interface PoolCore {
  /** Forwards a request to the pool. */
  readonly forward: Forwarder;
  /** Upgrades a WebSocket handshake on goround's own front. */
  readonly upgrade: Upgrader;
  /** Upgrades one for `Deno.serve`'s relay. */
  readonly bridged: Upgrader;
}

/** Where the routes count what they did. */
export interface RoutedOptions {
  /** The process memory (route hits, refusals). */
  readonly process: Pool;
  /** Each route's slot in the process memory, in route order. */
  readonly routeSlots: readonly number[];
  /** This goround's `Via` entry (`proxy/via.ts`). */
  readonly via: string;
}

/** The proxy core with routes in front of the pools. */
export type Routed = PoolCore;

/** What a route decided for a request. */
type Decision =
  | {
    readonly kind: "pool";
    readonly core: PoolCore;
    readonly incoming: Incoming;
    readonly route: Route;
  }
  | { readonly kind: "reply"; readonly reply: Reply };

/** The value of a request field (the first one of that name), or `null`. */
function fieldOf(headers: Iterable<readonly [string, string]>, name: string): string | null {
  if (headers instanceof Headers) return headers.get(name);
  for (const [field, value] of headers) if (field === name) return value;
  return null;
}

/** Whether the request names this goround in `Via`, as a takeover's probe does. */
function isProbe(incoming: Incoming, via: string): boolean {
  for (const [name, value] of incoming.headers) {
    if (name === "via" && value.includes(via)) return true;
  }
  return false;
}

function noField(): null {
  return null;
}

/** The request with its path resolved (`normalPath`), so routes match what the backend will
 * read; the same object when there was nothing to resolve. */
function normalised(incoming: Incoming): Incoming {
  const path = pathOf(incoming.target);
  if (!path.startsWith("/")) return incoming;
  const normal = normalPath(path);
  if (normal === path) return incoming;
  return { ...incoming, target: normal + incoming.target.slice(path.length) };
}

/** The path of an origin-form target, without its query. */
function pathOf(target: string): string {
  if (target === "*") return "/"; // OPTIONS * (RFC 9112 §3.2.4): where the root goes
  const query = target.indexOf("?");
  return query < 0 ? target : target.slice(0, query);
}

function withTrace(reply: Reply, route: Route | null, pool: string | null, byRoute = false): Reply {
  const trace = reply.trace ?? { backend: null, retries: 0, requestId: nextRequestId() };
  return { ...reply, trace: { ...trace, route: route?.name ?? null, pool, byRoute } };
}

/** The reply with the route's response rules applied (its field lines no longer copied as
 * bytes: they are made again from the rewritten fields). */
function withResponseRules(reply: Reply, rules: HeaderRules): Reply {
  if (noRules(rules)) return reply;
  if (reply.kind === "local") {
    return { ...reply, headers: applyResponseRules([...reply.headers], rules) };
  }
  const r = reply.response;
  const response: UpstreamResponse = {
    status: r.status,
    reason: r.reason,
    headers: applyResponseRules(r.headers, rules),
    framing: r.framing,
    body: r.body,
    reused: r.reused,
    release: () => r.release(),
  };
  return { ...reply, response };
}

/**
 * The routed proxy core of a worker.
 *
 * @param routes The routes, in file order.
 * @param pools Each pool's core, by name (every route's pool is there: the config was checked).
 * @param options Where to count.
 * @returns A forwarder and upgraders that route first.
 */
export function createRouted(
  routes: readonly Route[],
  pools: ReadonlyMap<string, PoolCore>,
  options: RoutedOptions,
): Routed {
  const router = compileRoutes(routes);
  const { process, routeSlots } = options;
  // What each forwarding route tells the trace, made once rather than per request.
  const routedOf = new Map(
    routes.flatMap((route) =>
      route.action.kind === "pool" ? [[route, { route: route.name, pool: route.action.pool }]] : []
    ),
  );
  const decide = (given: Incoming): Decision => {
    // A takeover's probe gets this goround's 508 whatever the routes say (a route could answer it).
    if (given.target === TAKEOVER_PROBE_PATH && isProbe(given, options.via)) {
      return { kind: "reply", reply: loopDetected(options.via, nextRequestId(), given.target) };
    }
    const incoming = normalised(given);
    // A closure per request only when some route reads a field.
    const field = router.usesFields ? (name: string) => fieldOf(incoming.headers, name) : noField;
    const route = router.match(incoming.authority, pathOf(incoming.target), incoming.method, field);
    if (route === null) {
      countRefusal(process, "no_route");
      return {
        kind: "reply",
        reply: withTrace(localReply(404, "no route for this request"), null, null),
      };
    }
    // One hit per request: one routed again after a change was counted where it met first.
    if (given.rerouted === undefined) countRouteHit(process, routeSlots[route.index]!);
    const action = route.action;
    if (action.kind === "redirect") {
      const location = redirectLocation(action.location, incoming.authority, incoming.target);
      const reply = localReply(action.status, `see ${location}`, [["location", location]]);
      return {
        kind: "reply",
        reply: withTrace(withResponseRules(reply, route.responseHeaders), route, null, true),
      };
    }
    if (action.kind === "respond") {
      const reply: Reply = {
        kind: "local",
        status: action.status,
        text: action.body,
        headers: [["content-type", "text/plain; charset=utf-8"]],
      };
      return {
        kind: "reply",
        reply: withTrace(withResponseRules(reply, route.responseHeaders), route, null, true),
      };
    }
    const core = pools.get(action.pool)!;
    const rules = route.requestHeaders;
    const plain = noRules(rules);
    const target = action.stripPrefix === "" && action.addPrefix === ""
      ? incoming.target
      : rewritePath(incoming.target, action);
    const rewritten: Incoming = {
      ...incoming,
      target,
      headers: plain ? incoming.headers : applyRequestRules(incoming.headers, rules),
      routed: routedOf.get(route)!,
      origin: given,
    };
    return { kind: "pool", core, incoming: rewritten, route };
  };
  const upgradeWith = (pick: (core: PoolCore) => Upgrader): Upgrader => async (incoming) => {
    const decision = decide(incoming);
    if (decision.kind === "reply") return { kind: "reply", reply: decision.reply };
    const { route } = decision;
    const routed = decision.incoming.routed!;
    const outcome = await pick(decision.core)(decision.incoming);
    const rules = route.responseHeaders;
    if (outcome.kind === "reply") {
      const reply = withTrace(withResponseRules(outcome.reply, rules), route, routed.pool);
      return { kind: "reply", reply };
    }
    // The 101 gets the route's response rules too (nginx's proxy_hide_header does the same).
    const headers = noRules(rules)
      ? outcome.switched.headers
      : applyResponseRules(outcome.switched.headers, rules);
    return { ...outcome, routed, switched: { ...outcome.switched, headers } };
  };
  return {
    forward: (incoming) => {
      const decision = decide(incoming);
      if (decision.kind === "reply") return Promise.resolve(decision.reply);
      const { core, route } = decision;
      // The trace names the route and pool already (`Incoming.routed`); only response rules
      // need the reply again.
      const reply = core.forward(decision.incoming);
      if (noRules(route.responseHeaders)) return reply;
      return reply.then((r) => r.rerouted ? r : withResponseRules(r, route.responseHeaders));
    },
    upgrade: upgradeWith((core) => core.upgrade),
    bridged: upgradeWith((core) => core.bridged),
  };
}
