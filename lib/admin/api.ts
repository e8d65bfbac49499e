/**
 * The admin listener (`--admin`, loopback by default): status, metrics, the dashboard, and
 * actions on backends. It is a separate listener from the proxy port, so proxied requests can
 * never reach it. Every request first passes {@linkcode refusalOf} (its own `Host` names only;
 * changes only from its own pages, as `application/json`), so no web page the operator opens
 * can read or steer it. Off loopback it requires `--admin-token`, checked in constant time on
 * every request (`Authorization: Bearer <token>`); the dashboard page itself holds no data and
 * is served without it (its script sends the token it is given in the URL fragment), and so are
 * the probes, as Kubernetes and Envoy do: a probe carries no secret, and they tell only whether
 * goround serves and how many backends are out.
 *
 * Routes: `GET /` (dashboard), `GET /status` (JSON), `GET /metrics` (Prometheus),
 * `GET /healthz` (liveness: 200 `ok`), `GET /readyz` (readiness: 503 while no backend is usable),
 * `POST /pools/{name}/backends` (`{"url": …}`), `POST /pools/{name}/backends/{id}/drain`,
 * `POST /pools/{name}/backends/{id}/enable`, `DELETE /pools/{name}/backends/{id}` (and the same
 * without `/pools/{name}` for the first pool, the only one of the flags-only form), `POST /takeover` (`{"pid": …, "instance": …}`: a new goround serving
 * the same port asks this one to hand over: once a probe of the port reached it, this one
 * answers 202, then drains and exits as on SIGTERM; else 409).
 *
 * @module
 */

import { adminNames, refusalOf } from "./guard.ts";
import { viaEntry } from "../proxy/via.ts";
import type { Listen } from "../config/config.ts";
import { DASHBOARD_HTML } from "./dashboard.ts";
import { renderMetrics } from "./metrics.ts";
import { type Readiness, readiness } from "./readiness.ts";
import {
  bufferedBytes,
  ejectedUntil,
  gauges,
  inFlight,
  isAlive,
  isPanicking,
  isUsable,
  noBackendCount,
  probeStreak,
  routeHits,
  totals,
} from "../balance/pool.ts";
import {
  addBackend,
  type BackendState,
  backendState,
  changedAt,
  poolNamed,
  type PoolRun,
  removeBackend,
  setDraining,
  type Supervisor,
} from "../control/supervisor.ts";
import type { Route } from "../config/routes.ts";
import { VERSION } from "../version.ts";
import { type History, startHistory, takeSample } from "./history.ts";
import { ValidationError } from "../errors.ts";

/** One backend in `GET /status`. */
export interface BackendStatus {
  /** Its pool. */
  readonly pool: string;
  /** Its id (slot in its pool), for the action routes. */
  readonly id: number;
  /** Its URL. */
  readonly url: string;
  /** `up`, `down`, `ejected` (by passive verdict), `draining` or `drained`. */
  readonly state: BackendState;
  /** While its health view is down (drained or not) or it is ejected, why: its last error, or
   * that it waits for its first check; otherwise `null`. */
  readonly why: string | null;
  /** Its last failed check or passive failure and when (ISO 8601), or `null`: kept after it
   * comes back up. */
  readonly lastError: { readonly reason: string; readonly at: string } | null;
  /** Consecutive passed health checks. */
  readonly checkPasses: number;
  /** Consecutive failed health checks. */
  readonly checkFails: number;
  /** Duration of the last health check, ms. */
  readonly checkLatencyMs: number | null;
  /** When it last went up or down (ISO 8601), or `null`. */
  readonly lastTransition: string | null;
  /** Requests being forwarded to it now. */
  readonly inFlight: number;
  /** Attempts to forward a request to it, retries included. */
  readonly requests: number;
  /** Attempts that failed. */
  readonly failures: number;
  /** Attempts that retried a request another backend failed. */
  readonly retries: number;
  /** Times passive failures took it out. */
  readonly ejections: number;
  /** When its passive ejection ends (ISO 8601), while it is ejected; else `null`. */
  readonly ejectedUntil: string | null;
}

/** Why a backend that joined the pool (admin API, reload, DNS) and was never probed is down. */
const WAITING = "waiting for its first health check";

/** `GET /status`. */
export interface Status {
  /** goround's version. */
  readonly version: string;
  /** The process id (after a takeover, the new process's). */
  readonly pid: number;
  /** Seconds since start. */
  readonly uptimeSeconds: number;
  /** The proxy's address. */
  readonly listen: string;
  /** Serving threads. */
  readonly workers: number;
  /** Selection policy. */
  readonly algorithm: string;
  /** Front end. */
  readonly engine: string;
  /** Requests answered 503 because no backend was usable. */
  readonly noBackend: number;
  /** Whether panic mode is on (every backend looks down; all are tried). */
  readonly panic: boolean;
  /** The backends of every pool, pool by pool, each in round-robin order. */
  readonly backends: readonly BackendStatus[];
  /** Request body bytes all workers hold in memory now (`--request-buffer-total` bounds it). */
  readonly bufferedBytes: number;
  /** Each pool: its settings that matter most and its counters. */
  readonly pools: readonly PoolStatus[];
  /** Each route, in file order, with the requests it matched (none without routes). */
  readonly routes: readonly RouteStatus[];
  /** Requests no route matched (answered 404). */
  readonly noRoute: number;
}

/** One pool in `GET /status`. */
export interface PoolStatus {
  /** Its name. */
  readonly name: string;
  /** Its selection policy. */
  readonly algorithm: string;
  /** Its health check path, or `""` for a TCP check. */
  readonly healthPath: string;
  /** Its requests answered 503 because no backend was usable. */
  readonly noBackend: number;
  /** Whether its panic mode is on. */
  readonly panic: boolean;
  /** Its readiness: `ready: 2 of 3 backends usable`, or why not. */
  readonly ready: string;
  /** The ids of its backends, in round-robin order. */
  readonly backends: readonly number[];
}

/** One route in `GET /status`. */
export interface RouteStatus {
  /** Its name (`routes[i]` unless named). */
  readonly name: string;
  /** Its host pattern, or `null`: any. */
  readonly host: string | null;
  /** Its path prefix. */
  readonly path: string;
  /** Its method, or `null`: any. */
  readonly method: string | null;
  /** What it does: `pool web`, `redirect 308 https://{host}{uri}` or `respond 404`. */
  readonly action: string;
  /** Requests it matched since start. */
  readonly hits: number;
}

function actionText(route: Route): string {
  const { action } = route;
  if (action.kind === "pool") return `pool ${action.pool}`;
  if (action.kind === "redirect") return `redirect ${action.status} ${action.location}`;
  return `respond ${action.status}`;
}

function backendStatus(run: PoolRun, slot: number): BackendStatus {
  const { pool } = run;
  const t = totals(pool, slot);
  const streak = probeStreak(pool, slot);
  const changed = changedAt(run, slot);
  const probed = run.probeMs.get(slot);
  const state = backendState(run, slot);
  const error = run.lastError.get(slot);
  const until = ejectedUntil(pool, slot);
  return {
    pool: run.name,
    id: slot,
    url: run.table[slot]!.url,
    state,
    why: !isAlive(pool, slot) || state === "ejected" ? (error?.reason ?? WAITING) : null,
    lastError: error ? { reason: error.reason, at: new Date(error.at).toISOString() } : null,
    checkPasses: streak.passes,
    checkFails: streak.misses,
    checkLatencyMs: probed === undefined ? null : Math.round(probed * 100) / 100,
    lastTransition: changed === 0 ? null : new Date(changed * 1000).toISOString(),
    inFlight: inFlight(pool, slot),
    requests: Number(t.requests),
    failures: Number(t.failures),
    retries: Number(t.retries),
    ejections: Number(t.ejections),
    ejectedUntil: until === 0 ? null : new Date(until).toISOString(),
  };
}

/**
 * The status report, from shared memory and the supervisor.
 *
 * @param sup The supervisor.
 * @returns The report.
 */
export function statusOf(sup: Supervisor): Status {
  const { config } = sup;
  const host = config.listen.hostname === "0.0.0.0" ? "" : config.listen.hostname;
  return {
    version: VERSION,
    pid: Deno.pid,
    uptimeSeconds: Math.floor((Date.now() - sup.started) / 1000),
    listen: `${host.includes(":") ? `[${host}]` : host}:${sup.port}`,
    workers: config.workers,
    algorithm: sup.pools[0]!.config.algorithm,
    engine: config.engine,
    noBackend: sup.pools.reduce((sum, run) => sum + noBackendCount(run.pool), 0),
    panic: sup.pools.some((run) => isPanicking(run.pool)),
    backends: sup.pools.flatMap((run) => run.slots.map((slot) => backendStatus(run, slot))),
    bufferedBytes: bufferedBytes(sup.process),
    pools: sup.pools.map((run) => ({
      name: run.name,
      algorithm: run.config.algorithm,
      healthPath: run.config.healthPath,
      noBackend: noBackendCount(run.pool),
      panic: isPanicking(run.pool),
      ready: poolReadiness(run).reason,
      backends: [...run.slots],
    })),
    routes: config.routes.map((route) => ({
      name: route.name,
      host: route.host,
      path: route.path,
      method: route.method,
      action: actionText(route),
      hits: routeHits(sup.process, sup.routeSlots.get(route.name) ?? 0),
    })),
    noRoute: gauges(sup.process).refused.no_route,
  };
}

/** Compares two strings in time that depends only on their lengths. */
export function constantTimeEqual(a: string, b: string): boolean {
  const x = new TextEncoder().encode(a);
  const y = new TextEncoder().encode(b);
  let diff = x.length ^ y.length;
  for (let i = 0; i < Math.max(x.length, y.length); i++) diff |= (x[i] ?? 0) ^ (y[i] ?? 0);
  return diff === 0;
}

function json(status: number, body: unknown): Response {
  return new Response(JSON.stringify(body, null, 2) + "\n", {
    status,
    headers: { "content-type": "application/json; charset=utf-8", "cache-control": "no-store" },
  });
}

function problem(status: number, message: string, headers: Record<string, string> = {}): Response {
  return new Response(`${message}\n`, {
    status,
    headers: { "content-type": "text/plain; charset=utf-8", ...headers },
  });
}

/** Methods that only read (RFC 9110 §9.3.2: HEAD answers as GET would, without the body). */
function isRead(method: string): boolean {
  return method === "GET" || method === "HEAD";
}

function useGet(): Response {
  return problem(405, "use GET or HEAD", { allow: "GET, HEAD" });
}

/**
 * Whether the pool has a usable backend now, and why (`GET /readyz`; a takeover waits for it).
 *
 * @param sup The supervisor.
 * @returns The verdict.
 */
export function readinessOf(sup: Supervisor): Readiness {
  if (sup.pools.length === 1) return poolReadiness(sup.pools[0]!);
  const verdicts = sup.pools.map((run) => ({ name: run.name, verdict: poolReadiness(run) }));
  const unready = verdicts.filter(({ verdict }) => !verdict.ready);
  if (unready.length > 0) {
    const reasons = unready.map(({ name, verdict }) =>
      `pool ${name}: ${verdict.reason.replace(/^not ready: /, "")}`
    );
    return { ready: false, reason: `not ready: ${reasons.join("; ")}` };
  }
  return { ready: true, reason: `ready: ${sup.pools.length} pools, each with a usable backend` };
}

/** One pool's readiness. */
function poolReadiness(run: PoolRun): Readiness {
  return readiness(
    run.slots.map((slot) => ({ usable: isUsable(run.pool, slot), state: backendState(run, slot) })),
    { panic: isPanicking(run.pool) },
  );
}

/** `GET /healthz` and `GET /readyz`, or `null` for any other path. */
function probe(sup: Supervisor, req: Request, pathname: string): Response | null {
  if (pathname !== "/healthz" && pathname !== "/readyz") return null;
  if (!isRead(req.method)) return useGet();
  // Liveness: this thread answers, so the process serves (Kubernetes restarts it otherwise).
  if (pathname === "/healthz") return problem(200, "ok", { "cache-control": "no-store" });
  const { ready, reason } = readinessOf(sup);
  return problem(ready ? 200 : 503, reason, { "cache-control": "no-store" });
}

/** What `POST /takeover` answers (202): who hands over, and how long its drain may take. */
export interface Handover {
  /** The process id of the goround handing over. */
  readonly pid: number;
  /** Its drain timeout, ms: it has exited by then. */
  readonly drainTimeout: number;
}

/** Who asks to take over (`POST /takeover`'s body). */
export interface Successor {
  /** Its process id, or `null` when not given. */
  readonly pid: number | null;
  /** Its instance id (`proxy/via.ts`): a goround that serves the port answers to it. */
  readonly instance: string;
}

/** Admin options beyond the supervisor and the address. */
export interface AdminOptions {
  /** Checks that `successor` serves the port and starts the handover, or says why not (an
   * HTTP status and a line). Without it, `POST /takeover` is 404. */
  readonly onTakeover?: (
    successor: Successor,
  ) => Promise<Handover | { readonly status: number; readonly message: string }>;
  /** The traffic of the last minutes, for `GET /history`. Without it, that is 404. */
  readonly history?: History;
}

/** An instance id: eight hex digits (`newInstanceId`). */
const INSTANCE = /^[0-9a-f]{8}$/;

/** `POST /takeover`: a successor already serves the port; this goround drains and exits. */
async function takeover(req: Request, options: AdminOptions): Promise<Response> {
  if (req.method !== "POST") return problem(405, "use POST", { allow: "POST" });
  if (!options.onTakeover) return problem(404, "not found: this listener cannot hand over");
  let body: unknown;
  try {
    body = await req.json();
  } catch {
    return problem(400, 'expected a JSON body like {"pid": 1234, "instance": "3f9a1c2e"}');
  }
  const { pid, instance } = (body ?? {}) as { pid?: unknown; instance?: unknown };
  if (
    typeof body !== "object" || body === null ||
    (pid !== undefined && !Number.isInteger(pid)) ||
    typeof instance !== "string" || !INSTANCE.test(instance)
  ) {
    return problem(
      400,
      'expected {"pid": N, "instance": "ID"}: the process id and the instance id (8 hex digits) of the new goround',
    );
  }
  const handover = await options.onTakeover({ pid: (pid as number | undefined) ?? null, instance });
  if ("status" in handover) return problem(handover.status, handover.message);
  return json(202, handover);
}

/** The largest request body the admin API reads: its JSON bodies are a few hundred bytes, and
 * a huge one would hold the main thread, which runs the health checks. */
export const ADMIN_BODY_LIMIT = 64 * 1024;

/** The request with its body read up to {@linkcode ADMIN_BODY_LIMIT}, or a 413. */
async function withBoundedBody(req: Request): Promise<Request | Response> {
  if (req.body === null) return req;
  const tooLarge = () =>
    problem(413, `request body over ${ADMIN_BODY_LIMIT} bytes: the admin API takes small JSON`);
  const declared = Number(req.headers.get("content-length") ?? "0");
  if (declared > ADMIN_BODY_LIMIT) {
    await req.body.cancel().catch(() => {});
    return tooLarge();
  }
  const parts: Uint8Array[] = [];
  let size = 0;
  const reader = req.body.getReader();
  while (true) {
    const { done, value } = await reader.read().catch(() => ({ done: true, value: undefined }));
    if (done || value === undefined) break;
    size += value.byteLength;
    if (size > ADMIN_BODY_LIMIT) {
      await reader.cancel().catch(() => {});
      return tooLarge();
    }
    parts.push(value);
  }
  const body = new Uint8Array(size);
  let at = 0;
  for (const part of parts) {
    body.set(part, at);
    at += part.byteLength;
  }
  return new Request(req.url, { method: req.method, headers: req.headers, body });
}

/** The admin listener's names, recomputed when a reload changes `--admin-hosts`. */
function namesOf(
  sup: Supervisor,
  address: Listen,
): () => ReadonlySet<string> {
  let hosts = sup.config.adminHosts;
  let names = adminNames(address.hostname, address.port, hosts);
  return () => {
    if (sup.config.adminHosts !== hosts) {
      hosts = sup.config.adminHosts;
      names = adminNames(address.hostname, address.port, hosts);
    }
    return names;
  };
}

/**
 * The admin request handler. The bearer token it requires is the running config's
 * `adminToken` (none when `""`), read at each request so a reload can rotate it.
 *
 * @param sup The supervisor.
 * @param options `address`: where the listener is bound (its port resolved), whose names `Host`
 *   must carry; `onTakeover`, for `POST /takeover`.
 * @returns The handler.
 */
export function createAdminHandler(
  sup: Supervisor,
  options: { readonly address: Listen } & AdminOptions,
): (req: Request) => Promise<Response> {
  const names = namesOf(sup, options.address);
  const handle = route(sup, names, options);
  return async (req) => withGuards(await handle(req));
}

/** No other page may frame an admin page (a click on a bait would press its buttons), nor
 * read one as another type. */
function withGuards(response: Response): Response {
  response.headers.set("x-frame-options", "DENY");
  response.headers.set("content-security-policy", "frame-ancestors 'none'");
  response.headers.set("x-content-type-options", "nosniff");
  return response;
}

/** An admin path that addresses backends: `/backends…` (the first pool) or
 * `/pools/{name}/backends…`. */
interface BackendRoute {
  /** The pool, or `null` when no pool has the name. */
  readonly run: PoolRun | null;
  /** The pool's name as given. */
  readonly name: string;
  /** The backend's id, or `null` for the list itself. */
  readonly id: number | null;
  /** `drain`, `enable`, or `null`. */
  readonly verb: string | null;
}

const BACKEND_PATH = /^(?:\/pools\/([A-Za-z0-9_-]+))?\/backends(?:\/(\d+)(?:\/(drain|enable))?)?$/;

function backendRoute(sup: Supervisor, pathname: string): BackendRoute | null {
  const found = BACKEND_PATH.exec(pathname);
  if (!found) return null;
  const name = found[1] ?? sup.pools[0]!.name;
  return {
    run: poolNamed(sup, name) ?? null,
    name,
    id: found[2] === undefined ? null : Number(found[2]),
    verb: found[3] ?? null,
  };
}

/** `POST …/backends` (add), `POST …/backends/{id}/drain|enable`, `DELETE …/backends/{id}`. */
async function backendAction(sup: Supervisor, req: Request, to: BackendRoute): Promise<Response> {
  const { run, id, verb } = to;
  if (!run) return problem(404, `no pool "${to.name}": see GET /status for the pools`);
  const shown = (slot: number) => run.slots.includes(slot) ? backendStatus(run, slot) : null;
  if (id === null) {
    if (req.method !== "POST") return problem(405, "use POST", { allow: "POST" });
    let body: { url?: unknown };
    try {
      body = await req.json();
    } catch {
      return problem(400, 'expected a JSON body like {"url": "http://host:port"}');
    }
    if (typeof body?.url !== "string") return problem(400, 'expected {"url": "http://host:port"}');
    // Answered once its first health check is done (at most --health-timeout), so the body
    // shows whether it takes traffic.
    const slot = await addBackend(sup, run.name, body.url);
    const current = poolNamed(sup, run.name);
    const added = slot < 0 || !current
      ? null
      : current.slots.includes(slot)
      ? backendStatus(current, slot)
      : null;
    if (!added) return problem(409, `${body.url} was removed while its first check ran`);
    return json(201, added);
  }
  if (verb) {
    if (req.method !== "POST") return problem(405, "use POST", { allow: "POST" });
    if (!setDraining(run, id, verb === "drain")) return problem(404, `no backend ${id}`);
    return json(200, shown(id));
  }
  if (req.method !== "DELETE") return problem(405, "use DELETE", { allow: "DELETE" });
  if (!(await removeBackend(sup, run.name, id))) return problem(404, `no backend ${id}`);
  return new Response(null, { status: 204 });
}

function route(
  sup: Supervisor,
  names: ReturnType<typeof namesOf>,
  options: AdminOptions,
): (req: Request) => Promise<Response> {
  return async (req) => {
    const refused = refusalOf(req, names());
    if (refused) return problem(refused.status, refused.message);
    // A client of the proxy reaching the admin API through a backend that leads here.
    if ((req.headers.get("via") ?? "").includes(viaEntry(sup.config.instanceId))) {
      return problem(
        403,
        "refused: this request came through goround's proxy (its Via names this goround): " +
          "the admin API is not a backend",
      );
    }
    const bounded = await withBoundedBody(req);
    if (bounded instanceof Response) return bounded;
    req = bounded;
    const { pathname } = new URL(req.url);
    if (pathname === "/" && (req.method === "GET" || req.method === "HEAD")) {
      return new Response(DASHBOARD_HTML, {
        headers: { "content-type": "text/html; charset=utf-8", "cache-control": "no-store" },
      });
    }
    const probed = probe(sup, req, pathname);
    if (probed) return probed;
    const token = sup.config.adminToken;
    if (token !== "") {
      const given = /^Bearer (.+)$/.exec(req.headers.get("authorization") ?? "")?.[1] ?? "";
      if (!constantTimeEqual(given, token)) {
        return problem(401, "unauthorized: send Authorization: Bearer <token>", {
          "www-authenticate": 'Bearer realm="goround"',
        });
      }
    }
    try {
      if (pathname === "/status") {
        if (!isRead(req.method)) return useGet();
        return json(200, statusOf(sup));
      }
      if (pathname === "/history" && options.history) {
        if (!isRead(req.method)) return useGet();
        return json(200, { intervalMs: HISTORY_INTERVAL_MS, points: options.history.points() });
      }
      if (pathname === "/takeover") return await takeover(req, options);
      if (pathname === "/metrics") {
        if (req.method !== "GET") return problem(405, "use GET", { allow: "GET" });
        return new Response(renderMetrics(sup), {
          headers: { "content-type": "text/plain; version=0.0.4; charset=utf-8" },
        });
      }
      const addressed = backendRoute(sup, pathname);
      if (addressed) return await backendAction(sup, req, addressed);
    } catch (error) {
      if (error instanceof ValidationError) {
        return problem(400, error.message);
      }
      throw error;
    }
    return problem(404, "not found: see GET /status, /metrics, /healthz, /readyz, /");
  };
}

/** A running admin listener. */
export interface Admin {
  /** The bound port. */
  readonly port: number;
  /** Stops it. */
  readonly shutdown: () => Promise<void>;
}

/** How often the history is sampled, ms. */
const HISTORY_INTERVAL_MS = 1000;

/**
 * Starts the admin listener.
 *
 * @param sup The supervisor.
 * @param listen Where to listen.
 * @param options `onTakeover`, for `POST /takeover`.
 * @returns The listener.
 */
export function serveAdmin(sup: Supervisor, listen: Listen, options: AdminOptions = {}): Admin {
  // The names `Host` must carry include the bound port, known once bound; requests are served
  // only after this function returns.
  let handler: (req: Request) => Promise<Response> = () => {
    throw new Error("the admin listener is not ready");
  };
  const server = Deno.serve(
    { hostname: listen.hostname, port: listen.port, onListen: () => {} },
    (req) => handler(req),
  );
  const address = { hostname: listen.hostname, port: server.addr.port };
  const history = startHistory(() => takeSample(sup.pools, Date.now()), {
    intervalMs: HISTORY_INTERVAL_MS,
  });
  handler = createAdminHandler(sup, { address, history, ...options });
  return {
    port: server.addr.port,
    shutdown: () => {
      history.stop();
      return server.shutdown();
    },
  };
}
