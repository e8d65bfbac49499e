/**
 * Reads the `pools` and `routes` of a JSON config file into {@linkcode PoolSpec}s and
 * {@linkcode Route}s, checking every key. A pool's settings are read by the same parsers as the
 * top-level ones (`values.ts`); each mistake is a {@linkcode ConfigError} naming the file, the key
 * path (`routes[1].pool`), the value and what was expected.
 *
 * @module
 */

import { FLAGS } from "./config.ts";
import {
  type HeaderRules,
  NO_RULES,
  POOL_FLAGS,
  type PoolSpec,
  type Route,
  type RouteAction,
} from "./routes.ts";
import { parseValue } from "./values.ts";
import { ConfigError, ValidationError } from "../errors.ts";

type Json = Record<string, unknown>;

/** The keys a route may have. */
const ROUTE_KEYS = [
  "name",
  "host",
  "path",
  "method",
  "header",
  "pool",
  "strip-prefix",
  "add-prefix",
  "redirect",
  "respond",
  "request-headers",
  "response-headers",
] as const;

/** The most routes a file may have (the process memory keeps a counter for each). */
export const MAX_ROUTES = 256;

/** The actions, one of which each route has. */
const ACTIONS = ["pool", "redirect", "respond"] as const;

/** Statuses whose responses never carry content (RFC 9110 §15.3.5, §15.3.6, §15.4.5). */
const NO_CONTENT: readonly number[] = [204, 205, 304];

/** Statuses a redirect may have (RFC 9110 §15.4). */
const REDIRECTS = [301, 302, 303, 307, 308];

/** Fields the rules may not touch: framing and connection fields goround manages itself
 * (RFC 9112 §6, RFC 9110 §7.6.1), and `host`, which routing reads. */
const MANAGED_FIELDS = [
  "connection",
  "content-length",
  "transfer-encoding",
  "keep-alive",
  "proxy-connection",
  "te",
  "trailer",
  "upgrade",
  "host",
];

/** A field name: an RFC 9110 §5.6.2 token. */
const TOKEN = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/;

/** A DNS label (RFC 1123): letters, digits and `-`, not at either end. */
const LABEL = /^(?!-)[a-z0-9-]{1,63}(?<!-)$/;

/** A pool's name. */
const POOL_NAME = /^[A-Za-z0-9_-]{1,64}$/;

function isObject(value: unknown): value is Json {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

function show(value: unknown): string {
  return JSON.stringify(value) ?? String(value);
}

/** The names of the `pools` object as the file spells them, in order, with repeats (a JSON
 * object keeps only the last of two keys of one name). */
function poolNamesInText(text: string): string[] {
  const start = text.search(/"pools"\s*:\s*\{/);
  if (start < 0) return [];
  const names: string[] = [];
  let depth = 0;
  let i = text.indexOf("{", start);
  for (; i < text.length; i++) {
    const c = text[i];
    if (c === '"') {
      const end = stringEnd(text, i);
      if (depth === 1 && /^\s*:/.test(text.slice(end + 1))) {
        names.push(JSON.parse(text.slice(i, end + 1)));
      }
      i = end;
    } else if (c === "{" || c === "[") depth++;
    else if (c === "}" || c === "]") {
      depth--;
      if (depth === 0) break;
    }
  }
  return names;
}

function stringEnd(text: string, open: number): number {
  for (let i = open + 1; i < text.length; i++) {
    if (text[i] === "\\") i++;
    else if (text[i] === '"') return i;
  }
  return text.length - 1;
}

/** One setting of a pool, parsed as the top-level one is. */
function poolSetting(at: string, key: string, value: unknown): [string, unknown] {
  const flag = FLAGS.find((f) => f.name === key);
  if (!flag || flag.key === undefined || !(POOL_FLAGS as readonly string[]).includes(key)) {
    throw new ConfigError(
      `${at}.${key}: not a pool setting: expected one of ${POOL_FLAGS.join(", ")}`,
    );
  }
  const items = (Array.isArray(value) ? value : [value]).map((item) => {
    // A backend may be an object: {"url": "http://a:1", "weight": 3}.
    if (flag.kind === "urls" && isObject(item) && typeof item.url === "string") {
      const { url, ...options } = item;
      return [url, ...Object.entries(options).map(([k, v]) => `${k}=${v}`)].join(",");
    }
    return item;
  });
  if (!items.every((item) => typeof item === "string" || typeof item === "number")) {
    throw new ConfigError(`${at}.${key}: expected a string, a number or a list of them`);
  }
  try {
    return [flag.key, parseValue(flag.kind, items.map(String).join(","))];
  } catch (error) {
    if (error instanceof ValidationError) throw new ConfigError(`${at}.${key}: ${error.message}`);
    throw error;
  }
}

function readPool(path: string, name: string, body: unknown): PoolSpec {
  const at = `${path}: pools.${name}`;
  if (!POOL_NAME.test(name)) {
    throw new ConfigError(
      `${at}: ${show(name)} is not a pool name: expected letters, digits, "-" and "_"`,
    );
  }
  if (!isObject(body)) {
    throw new ConfigError(`${at}: expected an object of settings, like {"backends": [...]}`);
  }
  const settings = Object.fromEntries(
    Object.entries(body).map(([key, value]) => poolSetting(at, key, value)),
  );
  const backends = settings.backends as unknown[] | undefined;
  if (settings.discover !== undefined && backends !== undefined) {
    throw new ConfigError(`${at}: both backends and discover: expected one source of backends`);
  }
  if (settings.discover === undefined && (backends === undefined || backends.length === 0)) {
    throw new ConfigError(`${at}: no backends: expected "backends" (or "discover")`);
  }
  const urls = (backends ?? []).map((b) => (b as { url: string }).url);
  const twice = urls.find((url, i) => urls.indexOf(url) !== i);
  if (twice) {
    throw new ConfigError(`${at}.backends: "${twice}" is listed twice: expected each once`);
  }
  return { name, settings };
}

/** Reads the `pools` object. */
function readPools(path: string, data: unknown, text: string): PoolSpec[] {
  if (data === undefined) return [];
  if (!isObject(data) || Object.keys(data).length === 0) {
    throw new ConfigError(
      `${path}: pools: expected an object of named pools, like {"web": {"backends": [...]}}`,
    );
  }
  const spelled = poolNamesInText(text);
  const twice = spelled.find((name, i) => spelled.indexOf(name) !== i);
  if (twice !== undefined) {
    throw new ConfigError(`${path}: pools.${twice}: two pools named "${twice}": expected one`);
  }
  return Object.entries(data).map(([name, body]) => readPool(path, name, body));
}

function text(at: string, value: unknown, what: string): string {
  if (typeof value !== "string") throw new ConfigError(`${at}: ${show(value)}: expected ${what}`);
  return value;
}

function readHost(at: string, value: unknown): string | null {
  if (value === undefined) return null;
  const given = text(at, value, "a host name such as api.example.com or *.example.com");
  let host = given.toLowerCase();
  if (host.endsWith(".")) host = host.slice(0, -1);
  const name = host.startsWith("*.") ? host.slice(2) : host;
  if (name.split(".").every((label) => LABEL.test(label)) || /^\d+(\.\d+){3}$/.test(name)) {
    return host;
  }
  throw new ConfigError(
    `${at}: ${show(given)} is not a host pattern: expected a DNS name (a.example.com) or ` +
      `*. before one (*.example.com), without a port`,
  );
}

function readPrefix(at: string, value: unknown, fallback: string): string {
  if (value === undefined) return fallback;
  const prefix = text(at, value, "a path prefix starting with /");
  if (!prefix.startsWith("/") || /[\s?#]/.test(prefix)) {
    throw new ConfigError(
      `${at}: ${show(prefix)}: expected a path prefix starting with / (no spaces, ? or #)`,
    );
  }
  return prefix;
}

function fieldName(at: string, name: string): string {
  if (!TOKEN.test(name)) {
    throw new ConfigError(`${at}: ${show(name)} is not a field name: expected a token`);
  }
  const lower = name.toLowerCase();
  // The WebSocket handshake's fields too (RFC 6455 §4): a rule must not break a 101.
  if (MANAGED_FIELDS.includes(lower) || lower.startsWith("sec-websocket-")) {
    throw new ConfigError(
      `${at}: ${show(name)} is managed by goround: expected another field than ${
        MANAGED_FIELDS.join(", ")
      }, sec-websocket-*`,
    );
  }
  return lower;
}

function fieldValue(at: string, value: unknown): string {
  const given = typeof value === "number" ? String(value) : value;
  // deno-lint-ignore no-control-regex
  if (typeof given !== "string" || /[\r\n\x00]/.test(given)) {
    throw new ConfigError(`${at}: ${show(value)}: expected a text without CR, LF or NUL`);
  }
  // Field values are bytes (RFC 9110 section 5.5); a URL's other characters are %-encoded.
  if (/[\u0080-\uffff]/.test(given)) {
    throw new ConfigError(`${at}: ${show(value)}: expected ASCII text (percent-encode the rest)`);
  }
  return given.trim();
}

function readPairs(at: string, value: unknown): [string, string][] {
  if (value === undefined) return [];
  if (!isObject(value)) throw new ConfigError(`${at}: expected an object like {"X-Env": "prod"}`);
  return Object.entries(value).map((
    [name, v],
  ) => [fieldName(`${at}.${name}`, name), fieldValue(`${at}.${name}`, v)]);
}

function readRules(at: string, value: unknown, kinds: readonly string[]): HeaderRules {
  if (value === undefined) return NO_RULES;
  if (!isObject(value)) {
    throw new ConfigError(`${at}: expected {${kinds.map((k) => `"${k}": ...`).join(", ")}}`);
  }
  for (const key of Object.keys(value)) {
    if (!kinds.includes(key)) {
      throw new ConfigError(`${at}.${key}: not a rule: expected ${kinds.join(", ")}`);
    }
  }
  const remove = value.remove === undefined ? [] : value.remove;
  if (!Array.isArray(remove) || !remove.every((n) => typeof n === "string")) {
    throw new ConfigError(`${at}.remove: expected a list of field names`);
  }
  return {
    set: readPairs(`${at}.set`, value.set),
    add: readPairs(`${at}.add`, value.add),
    remove: remove.map((name) => fieldName(`${at}.remove`, name)),
  };
}

function readAction(
  at: string,
  route: Json,
  path: string,
  pools: readonly PoolSpec[],
): RouteAction {
  const given = ACTIONS.filter((key) => route[key] !== undefined);
  if (given.length !== 1) {
    throw new ConfigError(
      `${at}: ${
        given.length === 0 ? "no action" : `two actions (${given.join(", ")})`
      }: expected exactly one of "pool", "redirect", "respond"`,
    );
  }
  if (given[0] !== "pool") {
    for (const key of ["strip-prefix", "add-prefix", "request-headers"]) {
      if (route[key] !== undefined) {
        throw new ConfigError(`${at}.${key}: only with "pool": this route does not forward`);
      }
    }
  }
  if (given[0] === "pool") {
    const pool = text(`${at}.pool`, route.pool, "the name of a pool");
    if (!pools.some((p) => p.name === pool)) {
      const names = pools.map((p) => `"${p.name}"`).join(", ");
      throw new ConfigError(`${at}.pool: "${pool}" is not a pool: expected one of ${names}`);
    }
    const stripPrefix = route["strip-prefix"] === undefined
      ? ""
      : readPrefix(`${at}.strip-prefix`, route["strip-prefix"], "");
    if (stripPrefix !== "" && !path.startsWith(stripPrefix)) {
      throw new ConfigError(
        `${at}.strip-prefix: "${stripPrefix}" does not begin the route's path "${path}": ` +
          "expected a prefix of it",
      );
    }
    const addPrefix = route["add-prefix"] === undefined
      ? ""
      : readPrefix(`${at}.add-prefix`, route["add-prefix"], "");
    return { kind: "pool", pool, stripPrefix, addPrefix };
  }
  if (given[0] === "redirect") {
    const redirect = route.redirect;
    const spec = typeof redirect === "string" ? { status: 308, location: redirect } : redirect;
    if (!isObject(spec) || typeof spec.location !== "string" || spec.location === "") {
      throw new ConfigError(
        `${at}.redirect: ${
          show(redirect)
        }: expected a location, or {"status": 308, "location": "https://{host}{uri}"}`,
      );
    }
    const status = spec.status ?? 308;
    if (typeof status !== "number" || !REDIRECTS.includes(status)) {
      throw new ConfigError(
        `${at}.redirect.status: ${show(status)}: expected one of ${REDIRECTS.join(", ")}`,
      );
    }
    return {
      kind: "redirect",
      status,
      location: fieldValue(`${at}.redirect.location`, spec.location),
    };
  }
  const respond = route.respond;
  const spec = typeof respond === "number" ? { status: respond } : respond;
  if (!isObject(spec)) {
    throw new ConfigError(
      `${at}.respond: ${show(respond)}: expected {"status": 404, "body": "..."}`,
    );
  }
  const status = spec.status;
  if (typeof status !== "number" || !Number.isInteger(status) || status < 200 || status > 599) {
    throw new ConfigError(
      `${at}.respond.status: ${show(status)}: expected a status from 200 to 599`,
    );
  }
  const body = spec.body === undefined ? "" : text(`${at}.respond.body`, spec.body, "a text");
  if (body !== "" && NO_CONTENT.includes(status)) {
    throw new ConfigError(
      `${at}.respond.body: a ${status} response has no body (RFC 9110 section 15): ` +
        "expected none, or another status",
    );
  }
  return { kind: "respond", status, body };
}

function readHeaderCondition(at: string, value: unknown): readonly [string, string] | null {
  if (value === undefined) return null;
  if (!isObject(value) || Object.keys(value).length !== 1) {
    throw new ConfigError(
      `${at}: ${show(value)}: expected one field and its value, like {"X-Canary": "1"}`,
    );
  }
  const [name, v] = Object.entries(value)[0]!;
  if (!TOKEN.test(name)) throw new ConfigError(`${at}: ${show(name)} is not a field name`);
  return [name.toLowerCase(), fieldValue(`${at}.${name}`, v)];
}

function readRoute(path: string, index: number, data: unknown, pools: readonly PoolSpec[]): Route {
  const at = `${path}: routes[${index}]`;
  if (!isObject(data)) throw new ConfigError(`${at}: expected an object, like {"pool": "web"}`);
  for (const key of Object.keys(data)) {
    if (!(ROUTE_KEYS as readonly string[]).includes(key)) {
      throw new ConfigError(`${at}.${key}: not a route key: expected ${ROUTE_KEYS.join(", ")}`);
    }
  }
  const name = data.name === undefined
    ? `routes[${index}]`
    : text(`${at}.name`, data.name, "a name of letters, digits, -, _ and .");
  if (!/^[\w.\-\[\]]{1,64}$/.test(name)) {
    throw new ConfigError(`${at}.name: ${show(name)}: expected letters, digits, -, _ and .`);
  }
  const prefix = readPrefix(`${at}.path`, data.path, "/");
  // Paths are matched once normalised (RFC 3986 §5.2.4): no request path holds these.
  if (/\/\.{0,2}\/|%2e/i.test(prefix)) {
    throw new ConfigError(
      `${at}.path: ${show(prefix)}: no request reaches it (paths are matched with // merged, ` +
        ". and .. resolved, %2e decoded): expected a path without //, /./, /../ or %2e",
    );
  }
  const method = data.method === undefined
    ? null
    : text(`${at}.method`, data.method, "a method such as GET").toUpperCase();
  if (method !== null && !TOKEN.test(method)) {
    throw new ConfigError(`${at}.method: ${show(data.method)}: expected a method such as GET`);
  }
  if (method === "CONNECT") {
    throw new ConfigError(
      `${at}.method: "CONNECT": goround answers CONNECT itself (405, it is no forward proxy): ` +
        "expected another method",
    );
  }
  const action = readAction(at, data, prefix, pools);
  return {
    index,
    name,
    host: readHost(`${at}.host`, data.host),
    path: prefix,
    method,
    header: readHeaderCondition(`${at}.header`, data.header),
    action,
    requestHeaders: readRules(`${at}.request-headers`, data["request-headers"], [
      "set",
      "add",
      "remove",
    ]),
    responseHeaders: readRules(`${at}.response-headers`, data["response-headers"], [
      "set",
      "remove",
    ]),
  };
}

/** What makes two routes the same match. */
function matchOf(route: Route): string {
  return JSON.stringify([route.host, route.path, route.method, route.header]);
}

/** Reads the `routes` list. */
function readRoutes(path: string, data: unknown, pools: readonly PoolSpec[]): Route[] {
  if (data === undefined) return [];
  if (!Array.isArray(data)) {
    throw new ConfigError(`${path}: routes: expected a list of routes, like [{"pool": "web"}]`);
  }
  if (pools.length === 0) {
    throw new ConfigError(`${path}: routes: no pools: expected "pools" beside "routes"`);
  }
  if (data.length > MAX_ROUTES) {
    throw new ConfigError(
      `${path}: routes: ${data.length} routes: expected at most ${MAX_ROUTES} (goround keeps a counter for each)`,
    );
  }
  const routes = data.map((route, index) => readRoute(path, index, route, pools));
  const seen = new Map<string, Route>();
  const names = new Map<string, Route>();
  for (const route of routes) {
    const earlier = seen.get(matchOf(route));
    if (earlier) {
      throw new ConfigError(
        `${path}: routes[${route.index}]: matches the same requests as routes[${earlier.index}], ` +
          "so it could never be used: expected a different host, path, method or header",
      );
    }
    seen.set(matchOf(route), route);
    const named = names.get(route.name);
    if (named) {
      throw new ConfigError(
        `${path}: routes[${route.index}].name: "${route.name}" is also routes[${named.index}]'s: expected each name once`,
      );
    }
    names.set(route.name, route);
  }
  return routes;
}

/**
 * Reads the `pools` and `routes` of a config file.
 *
 * @param data The file's `pools` and `routes` values, as parsed (either may be absent).
 * @param path The file, for the messages.
 * @param source The file's text (two pools of one name are found there: a parsed object keeps
 *   only the last).
 * @returns The pools and routes; both empty when the file has neither.
 * @throws {ConfigError} Naming the file, the key, the value and what was expected.
 * @example
 * ```ts
 * import { readPoolsAndRoutes } from "./routes_file.ts";
 * const data = {
 *   pools: { web: { backends: ["http://127.0.0.1:8081"] } },
 *   routes: [{ pool: "web" }],
 * };
 * readPoolsAndRoutes(data, "goround.json", JSON.stringify(data)).routes[0]!.name; // "routes[0]"
 * ```
 */
export function readPoolsAndRoutes(
  data: { pools?: unknown; routes?: unknown },
  path: string,
  source: string,
): { pools: PoolSpec[]; routes: Route[] } {
  const pools = readPools(path, data.pools, source);
  const routes = readRoutes(path, data.routes, pools);
  if (pools.length > 0 && routes.length === 0) {
    throw new ConfigError(
      `${path}: routes: missing: expected routes that send requests to the pools, like [{"pool": "${
        pools[0]!.name
      }"}]`,
    );
  }
  return { pools, routes };
}
