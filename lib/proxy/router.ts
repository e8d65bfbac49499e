/**
 * Matching requests to routes, and what a route does to a request on its way: the path
 * rewrite, the header rules, the redirect's location. Pure functions; `routed.ts` uses them.
 *
 * The order a request is matched in (nginx's server names, then its prefix locations):
 * 1. routes whose `host` is exactly the request's host;
 * 2. then routes with a wildcard host (`*.example.com`: any name under it, at any depth, not
 *    `example.com` itself), the longest suffix first;
 * 3. then routes without a host.
 *
 * Within a group the longest path prefix wins (a plain string prefix, as nginx's prefix
 * locations: `/api` matches `/apix` too); among equal prefixes a route with a method or header
 * condition comes first; then the file's order. A group whose routes none match falls through to
 * the next. The groups are built once, when the routes are loaded.
 *
 * @module
 */

import type { HeaderRules, Route, RouteAction } from "../config/routes.ts";

/** The routes, compiled for matching. */
export interface Router {
  /**
   * The route for a request, or `null` when none matches.
   *
   * @param authority The request's host as the client wrote it (its `Host`, port and all).
   * @param path The request's path, without its query.
   * @param method The method.
   * @param field Reads a request field by lowercase name (only asked when a route has a
   *   header condition).
   * @returns The route.
   */
  match(
    authority: string,
    path: string,
    method: string,
    field: (name: string) => string | null,
  ): Route | null;
  /** Whether any route has a header condition (else `match` never reads a field). */
  readonly usesFields: boolean;
}

/** The host of an authority: lowercase, without its port and one trailing dot. */
export function hostOf(authority: string): string {
  let host = authority;
  if (host.startsWith("[")) {
    const end = host.indexOf("]");
    host = end < 0 ? host : host.slice(0, end + 1);
  } else {
    const colon = host.lastIndexOf(":");
    if (colon >= 0) host = host.slice(0, colon);
  }
  if (host.endsWith(".")) host = host.slice(0, -1);
  return host.toLowerCase();
}

/** Longest prefix first; with a condition before without; then file order. */
function byPrecedence(a: Route, b: Route): number {
  const conditions = (r: Route) => (r.method !== null ? 1 : 0) + (r.header !== null ? 1 : 0);
  return b.path.length - a.path.length || conditions(b) - conditions(a) || a.index - b.index;
}

/** A group's routes, found by prefix: one map lookup per distinct prefix length, the longest
 * first, rather than a test of every route. */
interface Prefixes {
  /** The distinct prefix lengths, longest first. */
  readonly lengths: readonly number[];
  /** The routes of each prefix, in precedence order. */
  readonly byPrefix: ReadonlyMap<string, readonly Route[]>;
}

/** A group with more routes than this is looked up by prefix; a shorter one is scanned. */
const SCAN_AT_MOST = 6;

function prefixesOf(sorted: readonly Route[]): Prefixes {
  const byPrefix = new Map<string, Route[]>();
  for (const route of sorted) {
    byPrefix.set(route.path, [...(byPrefix.get(route.path) ?? []), route]);
  }
  const lengths = [...new Set(sorted.map((route) => route.path.length))].sort((a, b) => b - a);
  return { lengths, byPrefix };
}

function allowed(route: Route, method: string, field: (name: string) => string | null): boolean {
  return (route.method === null || route.method === method) &&
    (route.header === null || field(route.header[0]) === route.header[1]);
}

/** The first route of a group (in precedence order) that matches. */
function first(
  group: Group,
  path: string,
  method: string,
  field: (name: string) => string | null,
): Route | null {
  if (group.prefixes === null) {
    for (const route of group.routes) {
      if (path.startsWith(route.path) && allowed(route, method, field)) return route;
    }
    return null;
  }
  const { lengths, byPrefix } = group.prefixes;
  for (const length of lengths) {
    if (length > path.length) continue;
    const list = byPrefix.get(length === path.length ? path : path.slice(0, length));
    if (list === undefined) continue;
    for (const route of list) if (allowed(route, method, field)) return route;
  }
  return null;
}

/** Routes matched together (one host, one wildcard suffix, or any host). */
interface Group {
  /** In precedence order. */
  readonly routes: readonly Route[];
  /** For a large group, its routes by prefix; `null`: scan `routes`. */
  readonly prefixes: Prefixes | null;
}

function groupOf(routes: Route[]): Group {
  const sorted = routes.sort(byPrecedence);
  return { routes: sorted, prefixes: sorted.length > SCAN_AT_MOST ? prefixesOf(sorted) : null };
}

/**
 * Compiles the routes into the groups they are matched in.
 *
 * @param routes The routes, in file order.
 * @returns The router.
 * @example
 * ```ts
 * import { compileRoutes } from "./router.ts";
 * const router = compileRoutes([]);
 * router.match("example.com", "/", "GET", () => null); // null
 * ```
 */
export function compileRoutes(routes: readonly Route[]): Router {
  const exactLists = new Map<string, Route[]>();
  const wildLists = new Map<string, Route[]>();
  const anyHost: Route[] = [];
  for (const route of routes) {
    if (route.host === null) anyHost.push(route);
    else if (route.host.startsWith("*.")) {
      const suffix = route.host.slice(1); // ".example.com"
      wildLists.set(suffix, [...(wildLists.get(suffix) ?? []), route]);
    } else exactLists.set(route.host, [...(exactLists.get(route.host) ?? []), route]);
  }
  const exact = new Map([...exactLists].map(([host, list]) => [host, groupOf(list)]));
  const wildcards = new Map([...wildLists].map(([suffix, list]) => [suffix, groupOf(list)]));
  // The suffix lengths some wildcard has: a host's other suffixes are not even cut out.
  const suffixLengths = new Set([...wildcards.keys()].map((suffix) => suffix.length));
  const hostless = anyHost.length > 0 ? groupOf(anyHost) : null;
  const byHost = exact.size > 0 || wildcards.size > 0;
  // Clients send the same Host again and again: the last one's host is kept.
  let lastAuthority = "";
  let lastHost = "";
  return {
    usesFields: routes.some((route) => route.header !== null),
    match(authority, path, method, field) {
      let host = "";
      if (byHost) {
        if (authority !== lastAuthority) {
          lastHost = hostOf(authority);
          lastAuthority = authority;
        }
        host = lastHost;
      }
      const named = exact.get(host);
      if (named) {
        const found = first(named, path, method, field);
        if (found) return found;
      }
      if (wildcards.size > 0) {
        // The host's suffixes from the longest (".b.example.com" of "a.b.example.com"): one
        // lookup per label whose suffix length some wildcard has.
        for (let dot = host.indexOf("."); dot > 0; dot = host.indexOf(".", dot + 1)) {
          if (!suffixLengths.has(host.length - dot)) continue;
          const group = wildcards.get(host.slice(dot));
          if (!group) continue;
          const found = first(group, path, method, field);
          if (found) return found;
        }
      }
      return hostless ? first(hostless, path, method, field) : null;
    },
  };
}

/**
 * The request target after a route's `strip-prefix` and `add-prefix`; the query is kept. A path
 * left empty (or without a leading `/`) by the strip gets one.
 *
 * @param target The origin-form target (`/api/users?page=2`), or `*`.
 * @param action The route's forwarding action.
 * @returns The target to send, e.g. `/users?page=2`.
 * @example
 * ```ts
 * import { rewritePath } from "./router.ts";
 * rewritePath("/api/users?page=2", { kind: "pool", pool: "api", stripPrefix: "/api", addPrefix: "" });
 * // "/users?page=2"
 * ```
 */
export function rewritePath(
  target: string,
  action: Extract<RouteAction, { kind: "pool" }>,
): string {
  if (!target.startsWith("/")) return target;
  const q = target.indexOf("?");
  let path = q < 0 ? target : target.slice(0, q);
  const query = q < 0 ? "" : target.slice(q);
  if (action.stripPrefix !== "" && path.startsWith(action.stripPrefix)) {
    path = path.slice(action.stripPrefix.length);
    if (!path.startsWith("/")) path = `/${path}`;
  }
  if (action.addPrefix !== "") {
    const prefix = action.addPrefix.endsWith("/")
      ? action.addPrefix.slice(0, -1)
      : action.addPrefix;
    path = prefix + path;
  }
  return path + query;
}

/**
 * A path as routes see it (and as the pool then gets it), so a prefix cannot be walked around:
 * `%2e` decoded, `.` and `..` segments resolved (RFC 3986 §5.2.4), empty segments merged, as
 * nginx normalises before matching its locations.
 *
 * @param path An origin-form path, without its query.
 * @returns The same string when nothing needs resolving.
 * @example
 * ```ts
 * import { normalPath } from "./router.ts";
 * normalPath("/x/../internal//a"); // "/internal/a"
 * ```
 */
export function normalPath(path: string): string {
  if (!path.includes("/.") && !path.includes("//") && !path.includes("%")) return path;
  const decoded = path.replace(/%2e/gi, ".");
  if (!decoded.includes("/.") && !decoded.includes("//")) return decoded;
  const kept: string[] = [];
  const segments = decoded.split("/");
  for (const segment of segments) {
    if (segment === "" || segment === ".") continue;
    if (segment === "..") kept.pop();
    else kept.push(segment);
  }
  const last = segments[segments.length - 1]!;
  const folder = kept.length > 0 && (last === "" || last === "." || last === "..");
  return `/${kept.join("/")}${folder ? "/" : ""}`;
}

/** Whether the rules change nothing. */
export function noRules(rules: HeaderRules): boolean {
  return rules.set.length === 0 && rules.add.length === 0 && rules.remove.length === 0;
}

/**
 * A request's fields after a route's rules: `remove` and `set` take out every field of their
 * names, then `set` and `add` put theirs in.
 *
 * @param headers The fields, names lowercased.
 * @param rules The rules (names lowercased).
 * @returns The fields to forward.
 */
export function applyRequestRules(
  headers: Iterable<readonly [string, string]>,
  rules: HeaderRules,
): [string, string][] {
  const out: [string, string][] = [];
  for (const [name, value] of headers) {
    if (rules.remove.includes(name) || rules.set.some(([set]) => set === name)) continue;
    out.push([name, value]);
  }
  for (const [name, value] of rules.set) out.push([name, value]);
  for (const [name, value] of rules.add) out.push([name, value]);
  return out;
}

/**
 * A response's fields after a route's rules: `remove` and `set` take out every field of their
 * names, then `set` puts its own in.
 *
 * @param headers The fields, names lowercased.
 * @param rules The rules (names lowercased; `add` is not used on responses).
 * @returns The fields to send to the client.
 */
export function applyResponseRules(
  headers: readonly [string, string][],
  rules: HeaderRules,
): [string, string][] {
  const out = headers.filter(([name]) =>
    !rules.remove.includes(name) && !rules.set.some(([set]) => set === name)
  );
  for (const [name, value] of rules.set) out.push([name, value]);
  return out;
}

/**
 * A redirect's `Location`: `{host}` becomes the request's host as given (port included), and
 * `{uri}` its origin-form target (path and query).
 *
 * @param template The route's location.
 * @param authority The request's `Host`.
 * @param target The request's target.
 * @returns The location.
 * @example
 * ```ts
 * import { redirectLocation } from "./router.ts";
 * redirectLocation("https://{host}{uri}", "example.com", "/a?b=1"); // "https://example.com/a?b=1"
 * ```
 */
export function redirectLocation(template: string, authority: string, target: string): string {
  return template.replaceAll("{host}", authority).replaceAll("{uri}", target);
}
