/**
 * Entry point of a serving worker thread. The main thread posts a {@linkcode StartMessage}
 * (the settings, each pool's shared memory, settings and the backend of each of its slots, the
 * process memory and the port); the worker maps the memory and serves the port with
 * `reusePort` (the kernel spreads connections over the workers). With routes, each request is
 * routed to its pool (`proxy/routed.ts`); without, it goes to the one pool straight away. An {@linkcode UpdateMessage} swaps settings and backends in place (a
 * reload), and for a new certificate or engine starts a second front end on the port before the
 * old one shuts down; a {@linkcode StopMessage} drains the worker. Each message gets a
 * {@linkcode WorkerReply}.
 *
 * @module
 */

import { type AccessLog, createAccessLog, writeStdout } from "../front/access_log.ts";
import type { Backend, Config } from "../config/config.ts";
import { BodyBrokeOff, ClientStalled } from "../errors.ts";
import { flushRepeats, logLine, REPEAT_WINDOW_MS, setLogFormat } from "../log.ts";
import { attachPool, countClient, countRefusal, type Pool, type Refusal } from "../balance/pool.ts";
import { createRouted, type PoolCore } from "../proxy/routed.ts";
import {
  createForwarder,
  type Forwarder,
  type Incoming,
  type ProxyContext,
  type Reply,
} from "../proxy/forward.ts";
import { createServeHandler, serveRestarting } from "../front/serve_handler.ts";
import { needsNewFront } from "../config/reload_plan.ts";
import { type BufferBudget, poolBudget } from "../front/request_buffer.ts";
import type { BodyLimits } from "../front/serve_body.ts";
import { IDLE_GRACE, serveHttp1, type ServerOptions } from "../front/server.ts";
import {
  closeUpstreams,
  createUpstreams,
  retainHosts,
  setUpstreamOptions,
  type UpstreamOptions,
  type Upstreams,
} from "../upstream/client.ts";
import { readAheadFor } from "../http/streaming.ts";
import {
  createUpgrader,
  relayWebSocket,
  type SessionEnded,
  type Upgrader,
} from "../proxy/websocket.ts";
import { GOING_AWAY_GRACE } from "../proxy/ws_bridge.ts";
import { viaEntry } from "../proxy/via.ts";

/** The worker's own scope (typed here rather than with a global `deno.worker` lib directive,
 * which a published module may not carry). */
const scope = self as unknown as {
  postMessage(message: unknown): void;
  onmessage: ((event: MessageEvent<WorkerMessage>) => void) | null;
};

/** The backend in each pool slot (`null` for an empty slot). */
export type SlotTable = readonly (Backend | null)[];

/** One pool as a worker is told it. */
export interface PoolWire {
  /** Its name. */
  readonly name: string;
  /** Its shared memory. */
  readonly buffer: SharedArrayBuffer;
  /** The settings it runs with. */
  readonly config: Config;
  /** The backend of each slot. */
  readonly table: SlotTable;
  /** Each slot's tenant as of `table` (see `tenantOf`). */
  readonly tenants: readonly number[];
}

/** Tells a worker to start serving. */
export interface StartMessage {
  /** Message kind. */
  readonly type: "start";
  /** This worker's index (0-based): the row of each pool it counts its requests in. */
  readonly worker: number;
  /** The process memory (process-wide counters, route hits). */
  readonly process: SharedArrayBuffer;
  /** Settings (the top level, with the routes). */
  readonly config: Config;
  /** The pools. */
  readonly pools: readonly PoolWire[];
  /** Each route's slot in the process memory. */
  readonly routeSlots: readonly number[];
  /** The port to serve (already chosen when the configured one is 0). */
  readonly port: number;
}

/** Swaps the settings, pools and routes (a reload); connections and counters stay. */
export interface UpdateMessage {
  /** Message kind. */
  readonly type: "update";
  /** The new settings. */
  readonly config: Config;
  /** The pools. */
  readonly pools: readonly PoolWire[];
  /** Each route's slot in the process memory. */
  readonly routeSlots: readonly number[];
}

/** Tells a worker to stop accepting and finish what it has. */
export interface StopMessage {
  /** Message kind. */
  readonly type: "stop";
  /** Longest wait for in-flight requests, ms. */
  readonly drainTimeout: number;
}

/** Tells a worker to close its listener and nothing else. Every worker does so before any
 * drains: a client told to reconnect must not land on a listener that is about to close. */
export interface CloseMessage {
  /** Message kind. */
  readonly type: "close";
}

/** What a worker reports back. */
export type WorkerReply =
  | { readonly type: "listening"; readonly port: number }
  | { readonly type: "error"; readonly name: string; readonly message: string }
  | { readonly type: "updated"; readonly problem?: string }
  | { readonly type: "stopped"; readonly drained: boolean }
  | { readonly type: "closed" };

/** What a worker tells the main thread unasked: a backend of a pool it took down or ejected. */
export type WorkerEvent =
  | { readonly type: "down"; readonly pool: string; readonly slot: number; readonly reason: string }
  | {
    readonly type: "ejected";
    readonly pool: string;
    readonly slot: number;
    readonly reason: string;
  };

/** The messages a worker accepts. */
export type WorkerMessage = StartMessage | UpdateMessage | StopMessage | CloseMessage;

function reply(message: WorkerReply): void {
  scope.postMessage(message);
}

/** A running front end, whichever engine. */
interface Front {
  readonly port: number;
  /** Stops accepting and resolves once in-flight requests are answered; a connection waiting
   * for its next request may send it within `idleGrace` ms (it is answered with
   * `Connection: close`), then is closed. */
  readonly shutdown: (idleGrace: number) => Promise<void>;
  /** Closes the listener, if the engine can without closing idle connections too. */
  readonly stopAccepting: () => void;
  /** Whether its listener accepts until the end of `shutdown`'s grace (`Deno.serve`). */
  readonly acceptsInGrace: boolean;
  /** The drain's deadline: sends every WebSocket session 1001 (going away); returns how many
   * were open. */
  readonly goAway: () => number;
}

function internalError(error: unknown): void {
  logLine(`internal error: ${error instanceof Error ? error.stack : String(error)}`);
}

/** How the front ends reach the proxy core (through indirections an update can swap). */
interface Core {
  readonly forward: Forwarder;
  readonly upgrade: Upgrader;
  readonly relay: (
    req: Request,
    incoming: Incoming,
    ended?: SessionEnded,
    goAway?: AbortSignal,
  ) => Promise<Response | Reply>;
}

/** What the front ends read at each use, so an update changes it in place. */
interface FrontSettings {
  readonly http1: { -readonly [K in keyof ServerOptions]: ServerOptions[K] };
  readonly serve: { -readonly [K in keyof ServeOptions]: ServeOptions[K] };
  readonly limits: { -readonly [K in keyof BodyLimits]: BodyLimits[K] };
  /** The `Deno.serve` front's WebSocket relay. */
  readonly relay: Core["relay"];
}

type ServeOptions = NonNullable<Parameters<typeof createServeHandler>[1]>;

function frontSettings(
  config: Config,
  core: Core,
  options: { accessLog: AccessLog | null; budget: BufferBudget; pool: Pool },
): FrontSettings {
  const { accessLog, budget, pool } = options;
  const limits = { ...bodyLimits(config), budget };
  const onRefused = (status: number) => {
    const reason = refusalOf(status);
    if (reason !== null) countRefusal(pool, reason);
  };
  return {
    http1: {
      forward: core.forward,
      upgrade: core.upgrade,
      headerTimeout: config.headerTimeout,
      keepAliveTimeout: config.keepAliveTimeout,
      ...limits,
      onError: internalError,
      accessLog,
      onClient: (change) => countClient(pool, change),
      onRefused,
    },
    // TLS is on or off for the life of the process (turning it on or off waits for a restart).
    serve: {
      accessLog,
      webSocket: core.relay,
      proto: config.tlsCert ? "https" : "http",
      limits,
      onRefused,
    },
    limits,
    relay: core.relay,
  };
}

/** The metrics' name for a status goround answered itself; `null` for those counted elsewhere
 * (503: no backend) or not refusals (502, 504: a backend failed). */
function refusalOf(status: number): Refusal | null {
  if (status === 400) return "bad_request";
  if (status === 405 || status === 501) return "method";
  if (status === 408) return "timeout";
  if (status === 413 || status === 414 || status === 431) return "too_large";
  if (status === 508) return "loop";
  return null;
}

/** The body limits of the settings (both fronts take them). */
function bodyLimits(config: Config): Omit<BodyLimits, "budget"> {
  return {
    sendTimeout: config.sendTimeout,
    requestBuffer: config.requestBuffer,
    bodyTimeout: config.bodyTimeout,
    bodyMinRate: config.bodyMinRate,
  };
}

function listen(message: StartMessage, settings: FrontSettings): Front {
  const { config } = message;
  const address = { hostname: config.listen.hostname, port: message.port, reusePort: true };
  // TLS is terminated by Deno.serve, whose ALPN offers HTTP/2 and HTTP/1.1.
  const tls = config.pems && config.tlsCert
    ? { cert: config.pems.cert, key: config.pems.key }
    : null;
  if (config.engine === "deno" || tls) {
    let closing = false;
    const sessions = webSocketSessions(settings.relay);
    const server = serveRestarting(
      {
        ...address,
        ...(tls ?? {}),
        onListen: () => {},
        onError: (error) => {
          // A backend breaking off mid-body, or a client that stopped reading, was logged where it
          // happened; anything else is a bug.
          if (!(error instanceof BodyBrokeOff || error instanceof ClientStalled)) {
            internalError(error);
          }
          return new Response("bad gateway\n", { status: 502 });
        },
      },
      // This server's own `closing`; the rest is read live from the settings (a reload may
      // switch the access log).
      createServeHandler(settings.http1.forward, {
        get accessLog() {
          return settings.serve.accessLog ?? null;
        },
        webSocket: sessions.relay,
        proto: tls ? "https" : "http",
        limits: settings.limits,
        ...(settings.serve.onRefused ? { onRefused: settings.serve.onRefused } : {}),
        closing: () => closing,
      }),
    );
    return {
      port: server.port,
      // Deno.serve closes its listener only with its idle connections (at once), and its
      // WebSocket sessions too: so first, for the grace, every reply says close, and the
      // sessions run until they end or the deadline; then the listener and the rest close.
      stopAccepting: () => {},
      acceptsInGrace: true,
      shutdown: async (idleGrace) => {
        closing = true;
        await new Promise((resolve) => setTimeout(resolve, idleGrace));
        await sessions.over();
        // A drain lets uploads under way finish; a replaced front (a new certificate) closes its
        // listener at once, so that new connections get the new one.
        await server.shutdown(idleGrace > 0);
      },
      goAway: sessions.goAway,
    };
  }
  const server = serveHttp1(Deno.listen(address), settings.http1);
  return {
    port: server.addr.port,
    stopAccepting: () => server.stopAccepting(),
    acceptsInGrace: false,
    shutdown: (idleGrace) => server.shutdown(idleGrace),
    goAway: () => server.goAway(),
  };
}

/** The WebSocket sessions of a `Deno.serve` front: counted, and told to go away together. */
function webSocketSessions(relay: Core["relay"]): {
  readonly relay: NonNullable<ServeOptions["webSocket"]>;
  readonly over: () => Promise<void>;
  readonly goAway: () => number;
} {
  const away = new AbortController();
  let open = 0;
  let idle: (() => void) | null = null;
  const ended = () => {
    if (--open === 0) idle?.();
  };
  return {
    relay: async (req, incoming, done) => {
      open++; // from the handshake on: a session may begin after the drain has
      let answer: Response | Reply;
      try {
        answer = await relay(req, incoming, (end, backend, requestId, routed) => {
          ended();
          done?.(end, backend, requestId, routed);
        }, away.signal);
      } catch (error) {
        ended();
        throw error;
      }
      if (!(answer instanceof Response)) ended();
      return answer;
    },
    over: () => open === 0 ? Promise.resolve() : new Promise((resolve) => idle = resolve),
    goAway: () => {
      away.abort();
      return open;
    },
  };
}

/** Time for a front to close once its last session has, after a going-away grace, ms. */
const SETTLE_MS = 500;

/** Resolves `true` when `done` settles within `ms`, else `false`. */
async function within(done: Promise<unknown>, ms: number): Promise<boolean> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const late = new Promise<boolean>((resolve) => timer = setTimeout(() => resolve(false), ms));
  try {
    return await Promise.race([done.then(() => true), late]);
  } finally {
    clearTimeout(timer);
  }
}

/** The worker's state once started. */
interface Running {
  readonly front: Front;
  /** Applies a reload; returns what could not be applied, if anything. */
  readonly update: (message: UpdateMessage) => string | undefined;
  readonly stop: (drainTimeout: number) => Promise<boolean>;
}

let running: Running | null = null;

/** How a worker is run. */
export interface WorkerOptions {
  /** Wraps the proxy core's forwarder for every request (a test fixture injects faults this
   * way); none by default. */
  readonly wrapForward?: (forward: Forwarder) => Forwarder;
}

function upstreamOptions(config: Config): UpstreamOptions {
  return {
    connectTimeout: config.connectTimeout,
    responseTimeout: config.responseTimeout,
    caCerts: config.pems?.ca ? [config.pems.ca] : [],
    readAhead: readAheadFor(config.engine),
  };
}

/** Each pool's proxy core in this worker, and the core the fronts call (routed or not). */
function buildCores(
  config: Config,
  wires: readonly PoolWire[],
  options: {
    worker: number;
    upstreams: Upstreams;
    process: Pool;
    routeSlots: readonly number[];
    /** Whether a change replaced these cores. */
    retired: () => boolean;
    /** Forwards with the cores in force now. */
    redispatch: Forwarder;
  },
): Core {
  const pools = new Map<string, PoolCore>();
  for (const wire of wires) {
    const pool = attachPool(wire.buffer, { worker: options.worker });
    // Passive DOWN transitions go to the main thread, which logs them and keeps the reason.
    const onDown = (slot: number, _backend: Backend, reason: string) =>
      scope.postMessage({ type: "down", pool: wire.name, slot, reason } satisfies WorkerEvent);
    const onEject = (slot: number, _backend: Backend, reason: string) =>
      scope.postMessage({ type: "ejected", pool: wire.name, slot, reason } satisfies WorkerEvent);
    const context: ProxyContext = {
      pool,
      config: wire.config,
      backends: wire.table.map((b) => b ?? undefined),
      tenants: wire.tenants,
      retired: options.retired,
      redispatch: options.redispatch,
      upstreams: options.upstreams,
      onDown,
      onEject,
    };
    pools.set(wire.name, {
      forward: createForwarder(context),
      upgrade: createUpgrader(context),
      bridged: createUpgrader(context, { bridged: true }),
    });
  }
  const core = config.routes.length === 0
    ? pools.get(wires[0]!.name)!
    : createRouted(config.routes, pools, {
      process: options.process,
      routeSlots: options.routeSlots,
      via: viaEntry(config.instanceId),
    });
  return {
    forward: core.forward,
    upgrade: core.upgrade,
    relay: (req, incoming, ended, goAway) =>
      relayWebSocket(core.bridged, req, incoming, ended, goAway),
  };
}

/** Every backend URL of the pools (the upstream client keeps connections to these). */
function urlsOf(wires: readonly PoolWire[], keep: (backend: Backend) => boolean): string[] {
  return wires.flatMap((wire) => wire.table.flatMap((b) => (b && keep(b) ? [b.url] : [])));
}

function start(message: StartMessage, options: WorkerOptions): void {
  const process = attachPool(message.process, { worker: message.worker });
  const upstreams = createUpstreams(upstreamOptions(message.config));
  // Each build of the cores is retired by the next (see `ProxyContext.retired`).
  let built = { retired: false };
  const coresOf = (config: Config, wires: readonly PoolWire[], routeSlots: readonly number[]) => {
    built.retired = true;
    const mine = (built = { retired: false });
    return buildCores(config, wires, {
      worker: message.worker,
      upstreams,
      process,
      routeSlots,
      retired: () => mine.retired,
      redispatch: (incoming) => core(incoming),
    });
  };
  let cores = coresOf(message.config, message.pools, message.routeSlots);
  let accessLog = createAccessLog(message.config.accessLog, writeStdout);
  // The front calls through `cores`, so an update swaps the proxy core under it.
  const core: Forwarder = (incoming) => cores.forward(incoming);
  // Read at each use, so a reload's --request-buffer-total applies to the next body.
  const budget = poolBudget(process, () => current.requestBufferTotal);
  const settings = frontSettings(message.config, {
    forward: options.wrapForward ? options.wrapForward(core) : core,
    upgrade: (incoming) => cores.upgrade(incoming),
    relay: (req, incoming, ended, goAway) => cores.relay(req, incoming, ended, goAway),
  }, { accessLog, budget, pool: process });
  let front: Front;
  try {
    front = listen(message, settings);
  } catch (error) {
    closeUpstreams(upstreams);
    const err = error instanceof Error ? error : new Error(String(error));
    reply({ type: "error", name: err.name, message: err.message });
    return;
  }
  /** The settings now in force, and those the front end was started with. */
  let current = message.config;
  let served = message.config;
  /** A second front end on the same port (`reusePort`) takes new connections; then the old one
   * stops accepting and finishes its requests in flight. Returns what went wrong, if anything. */
  const replaceFront = (config: Config): string | undefined => {
    let next: Front;
    try {
      next = listen({ ...message, config }, settings);
    } catch (error) {
      return `kept the old front end: ${error instanceof Error ? error.message : error}`;
    }
    // A Deno.serve front would take new connections through its grace, with the old
    // certificate: it goes at once (its idle connections and WebSocket sessions too; clients
    // open new ones). The other front's sessions run on, as in a drain, up to its timeout.
    const old = front;
    const retired = old.shutdown(old.acceptsInGrace ? 0 : IDLE_GRACE);
    const deadline = setTimeout(() => old.goAway(), old.acceptsInGrace ? 0 : config.drainTimeout);
    void retired.then(() => clearTimeout(deadline));
    front = {
      port: next.port,
      stopAccepting: () => next.stopAccepting(),
      acceptsInGrace: next.acceptsInGrace,
      shutdown: (idleGrace) => Promise.all([next.shutdown(idleGrace), retired]).then(() => {}),
      goAway: () => next.goAway() + old.goAway(),
    };
    served = config;
    return undefined;
  };
  // The count of a flood of repeated log lines is written once its second is over.
  const flusher = setInterval(() => flushRepeats(), REPEAT_WINDOW_MS);
  running = {
    get front() {
      return front;
    },
    update: ({ config, pools, routeSlots }) => {
      const caChanged = config.pems?.ca !== current.pems?.ca;
      setUpstreamOptions(upstreams, upstreamOptions(config));
      // Idle connections to backends no longer in a pool are closed; busy ones finish. A new
      // CA closes idle HTTPS connections too, so every new request is checked against it.
      retainHosts(upstreams, urlsOf(pools, (b) => !(caChanged && b.tls)));
      cores = coresOf(config, pools, routeSlots);
      settings.http1.headerTimeout = config.headerTimeout;
      settings.http1.keepAliveTimeout = config.keepAliveTimeout;
      Object.assign(settings.http1, bodyLimits(config));
      Object.assign(settings.limits, bodyLimits(config));
      if (config.accessLog !== current.accessLog) {
        const previous = accessLog;
        accessLog = createAccessLog(config.accessLog, writeStdout);
        settings.http1.accessLog = settings.serve.accessLog = accessLog;
        void previous?.flush();
      }
      current = config;
      return needsNewFront(served, config) ? replaceFront(config) : undefined;
    },
    stop: async (drainTimeout) => {
      // Half the drain timeout at most, so requests sent in the grace can still finish.
      const idleGrace = Math.min(IDLE_GRACE, drainTimeout / 2);
      const finished = front.shutdown(idleGrace);
      let drained = await within(finished, drainTimeout);
      // At the deadline, WebSocket sessions are closed with 1001: they have a grace to answer.
      if (!drained && front.goAway() > 0) {
        drained = await within(finished, GOING_AWAY_GRACE + SETTLE_MS);
      }
      closeUpstreams(upstreams);
      await accessLog?.flush();
      clearInterval(flusher);
      flushRepeats(Infinity);
      return drained;
    },
  };
  reply({ type: "listening", port: front.port });
}

/**
 * Makes this thread a serving worker: installs its message handler. The module does that for
 * itself when loaded; a fixture worker module that imports it calls this again with its
 * options (the last call wins, and no message arrives before the module has run).
 *
 * @param options How to run.
 */
export function serveMessages(options: WorkerOptions = {}): void {
  scope.onmessage = (event) => handle(event.data, options);
}

async function handle(message: WorkerMessage, options: WorkerOptions): Promise<void> {
  switch (message.type) {
    case "start":
      setLogFormat(message.config.logFormat);
      start(message, options);
      break;
    case "update": {
      setLogFormat(message.config.logFormat);
      const problem = running?.update(message);
      reply(problem ? { type: "updated", problem } : { type: "updated" });
      break;
    }
    case "close":
      running?.front.stopAccepting();
      reply({ type: "closed" });
      break;
    case "stop": {
      const drained = running ? await running.stop(message.drainTimeout) : true;
      reply({ type: "stopped", drained });
      break;
    }
  }
}

serveMessages();
