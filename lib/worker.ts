/**
 * Entry point of a serving worker thread. The main thread posts a {@linkcode StartMessage}
 * (the shared pool memory, the settings, the backend of each pool slot and the port); the
 * worker maps the pool and serves the port with `reusePort` (the kernel spreads connections
 * over the workers). An {@linkcode UpdateMessage} swaps settings and backends in place (a
 * reload); a {@linkcode StopMessage} drains the worker. Each message gets a
 * {@linkcode WorkerReply}.
 *
 * @module
 */

/// <reference lib="deno.worker" />

import { type AccessLog, createAccessLog, writeStdout } from "./access_log.ts";
import type { Backend, Config } from "./config.ts";
import { BodyBrokeOff } from "./errors.ts";
import { logLine } from "./log.ts";
import { attachPool } from "./pool.ts";
import { createForwarder, type Forwarder, type Incoming, type ProxyContext } from "./proxy.ts";
import { createServeHandler } from "./serve_handler.ts";
import { IDLE_GRACE, serveHttp1 } from "./server.ts";
import { closeUpstreams, createUpstreams, retainHosts, setUpstreamOptions } from "./upstream.ts";
import { readAheadFor } from "./streaming.ts";
import { createUpgrader, relayWebSocket, type Upgrader } from "./websocket.ts";

/** The backend in each pool slot (`null` for an empty slot). */
export type SlotTable = readonly (Backend | null)[];

/** Tells a worker to start serving. */
export interface StartMessage {
  /** Message kind. */
  readonly type: "start";
  /** The pool's shared memory. */
  readonly buffer: SharedArrayBuffer;
  /** Settings. */
  readonly config: Config;
  /** The backend of each slot. */
  readonly table: SlotTable;
  /** The port to serve (already chosen when the configured one is 0). */
  readonly port: number;
}

/** Swaps the settings and backends (a reload); connections and counters stay. */
export interface UpdateMessage {
  /** Message kind. */
  readonly type: "update";
  /** The new settings. */
  readonly config: Config;
  /** The backend of each slot. */
  readonly table: SlotTable;
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
  | { readonly type: "updated" }
  | { readonly type: "stopped"; readonly drained: boolean }
  | { readonly type: "closed" };

/** What a worker tells the main thread unasked. */
export type WorkerEvent = { readonly type: "down"; readonly slot: number; readonly reason: string };

/** The messages a worker accepts. */
export type WorkerMessage = StartMessage | UpdateMessage | StopMessage | CloseMessage;

function reply(message: WorkerReply): void {
  self.postMessage(message);
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
}

function internalError(error: unknown): void {
  logLine(`internal error: ${error instanceof Error ? error.stack : String(error)}`);
}

/** How the front ends reach the proxy core (through indirections an update can swap). */
interface Core {
  readonly forward: Forwarder;
  readonly upgrade: Upgrader;
  readonly relay: (req: Request, incoming: Incoming) => Promise<Response>;
}

function listen(message: StartMessage, core: Core, accessLog: AccessLog | null): Front {
  const { config } = message;
  const address = { hostname: config.listen.hostname, port: message.port, reusePort: true };
  // TLS is terminated by Deno.serve, whose ALPN offers HTTP/2 and HTTP/1.1.
  const tls = config.pems && config.tlsCert
    ? { cert: config.pems.cert, key: config.pems.key }
    : null;
  if (config.engine === "deno" || tls) {
    let closing = false;
    const server = Deno.serve(
      {
        ...address,
        ...(tls ?? {}),
        onListen: () => {},
        onError: (error) => {
          // A backend breaking off mid-body was logged where it happened; anything else is a bug.
          if (!(error instanceof BodyBrokeOff)) internalError(error);
          return new Response("bad gateway\n", { status: 502 });
        },
      },
      createServeHandler(core.forward, {
        accessLog,
        webSocket: core.relay,
        proto: tls ? "https" : "http",
        closing: () => closing,
      }),
    );
    return {
      port: server.addr.port,
      // Deno.serve closes its listener only with its idle connections (at once): so first,
      // for the grace, every reply says close, then the listener and the rest close.
      stopAccepting: () => {},
      shutdown: async (idleGrace) => {
        closing = true;
        await new Promise((resolve) => setTimeout(resolve, idleGrace));
        await server.shutdown();
      },
    };
  }
  const server = serveHttp1(Deno.listen(address), {
    forward: core.forward,
    upgrade: core.upgrade,
    headerTimeout: config.headerTimeout,
    keepAliveTimeout: config.keepAliveTimeout,
    onError: internalError,
    accessLog,
  });
  return {
    port: server.addr.port,
    stopAccepting: () => server.stopAccepting(),
    shutdown: (idleGrace) => server.shutdown(idleGrace),
  };
}

/** The worker's state once started. */
interface Running {
  readonly front: Front;
  readonly update: (message: UpdateMessage) => void;
  readonly stop: (drainTimeout: number) => Promise<boolean>;
}

let running: Running | null = null;

/** Test hook: a request for this path makes the worker throw an uncaught error (so tests can
 * check that a crashed worker is restarted). Unset, it does nothing. */
const CRASH_VARIABLE = "GOROUND_TEST_CRASH_PATH";

function testCrashPath(): string | null {
  try {
    return Deno.env.get(CRASH_VARIABLE) ?? null;
  } catch {
    return null; // no permission to read it: the hook is off
  }
}

function start(message: StartMessage): void {
  const pool = attachPool(message.buffer);
  const upstreams = createUpstreams({
    connectTimeout: message.config.connectTimeout,
    responseTimeout: message.config.responseTimeout,
    caCerts: message.config.pems?.ca ? [message.config.pems.ca] : [],
    readAhead: readAheadFor(message.config.engine),
  });
  // Passive DOWN transitions go to the main thread, which logs them and keeps the reason.
  const onDown = (slot: number, _backend: Backend, reason: string) =>
    self.postMessage({ type: "down", slot, reason } satisfies WorkerEvent);
  const contextOf = (config: Config, table: SlotTable): ProxyContext => ({
    pool,
    config,
    backends: table.map((b) => b ?? undefined),
    upstreams,
    onDown,
  });
  let context = contextOf(message.config, message.table);
  let forward = createForwarder(context);
  let upgrader = createUpgrader(context);
  const accessLog = createAccessLog(message.config.accessLog, writeStdout);
  const crashPath = testCrashPath();
  let front: Front;
  try {
    // The front calls through `forward`, so an update swaps the proxy core under it.
    front = listen(message, {
      forward: (incoming) => {
        if (incoming.target === crashPath) {
          setTimeout(() => {
            throw new Error(`crash requested by ${CRASH_VARIABLE}`);
          });
        }
        return forward(incoming);
      },
      upgrade: (incoming) => upgrader(incoming),
      relay: (req, incoming) => relayWebSocket(context, req, incoming),
    }, accessLog);
  } catch (error) {
    closeUpstreams(upstreams);
    const err = error instanceof Error ? error : new Error(String(error));
    reply({ type: "error", name: err.name, message: err.message });
    return;
  }
  running = {
    front,
    update: ({ config, table }) => {
      setUpstreamOptions(upstreams, {
        connectTimeout: config.connectTimeout,
        responseTimeout: config.responseTimeout,
      });
      // Idle connections to backends no longer in the pool are closed; busy ones finish.
      retainHosts(upstreams, table.flatMap((b) => (b ? [b.url] : [])));
      context = contextOf(config, table);
      forward = createForwarder(context);
      upgrader = createUpgrader(context);
    },
    stop: async (drainTimeout) => {
      let timer = 0 as unknown as ReturnType<typeof setTimeout>;
      // Half the drain timeout at most, so requests sent in the grace can still finish.
      const idleGrace = Math.min(IDLE_GRACE, drainTimeout / 2);
      const drained = await Promise.race([
        front.shutdown(idleGrace).then(() => true),
        new Promise<boolean>((resolve) => (timer = setTimeout(() => resolve(false), drainTimeout))),
      ]);
      clearTimeout(timer);
      closeUpstreams(upstreams);
      await accessLog?.flush();
      return drained;
    },
  };
  reply({ type: "listening", port: front.port });
}

self.onmessage = async (event: MessageEvent<WorkerMessage>) => {
  const message = event.data;
  switch (message.type) {
    case "start":
      start(message);
      break;
    case "update":
      running?.update(message);
      reply({ type: "updated" });
      break;
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
};
