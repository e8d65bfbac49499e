/**
 * Entry point of a serving worker thread. The main thread posts a {@linkcode StartMessage}
 * (the shared pool memory, the settings and the port); the worker maps the pool, serves the
 * port with `reusePort` (the kernel spreads connections over the workers) and answers
 * {@linkcode WorkerReply} messages. A {@linkcode StopMessage} drains it.
 *
 * @module
 */

/// <reference lib="deno.worker" />

import type { Config } from "./config.ts";
import { logLine } from "./log.ts";
import { attachPool } from "./pool.ts";
import { createForwarder } from "./proxy.ts";
import { createServeHandler } from "./serve_handler.ts";
import { serveHttp1 } from "./server.ts";
import { closeUpstreams, createUpstreams } from "./upstream.ts";

/** Tells a worker to start serving. */
export interface StartMessage {
  /** Message kind. */
  readonly type: "start";
  /** The pool's shared memory. */
  readonly buffer: SharedArrayBuffer;
  /** Settings. */
  readonly config: Config;
  /** The port to serve (already chosen when the configured one is 0). */
  readonly port: number;
}

/** Tells a worker to stop accepting and finish what it has. */
export interface StopMessage {
  /** Message kind. */
  readonly type: "stop";
  /** Longest wait for in-flight requests, ms. */
  readonly drainTimeout: number;
}

/** What a worker reports back. */
export type WorkerReply =
  | { readonly type: "listening"; readonly port: number }
  | { readonly type: "error"; readonly name: string; readonly message: string }
  | { readonly type: "stopped"; readonly drained: boolean };

let stop: ((drainTimeout: number) => Promise<boolean>) | null = null;

function reply(message: WorkerReply): void {
  self.postMessage(message);
}

/** A running front end, whichever engine. */
interface Front {
  readonly port: number;
  /** Stops accepting and resolves once in-flight requests are answered. */
  readonly shutdown: () => Promise<void>;
}

function internalError(error: unknown): void {
  logLine(`internal error: ${error instanceof Error ? error.stack : String(error)}`);
}

function listen(message: StartMessage, forward: ReturnType<typeof createForwarder>): Front {
  const { config } = message;
  const address = { hostname: config.listen.hostname, port: message.port, reusePort: true };
  if (config.engine === "deno") {
    const server = Deno.serve({
      ...address,
      onListen: () => {},
      onError: (error) => {
        internalError(error);
        return new Response("bad gateway\n", { status: 502 });
      },
    }, createServeHandler(forward));
    return { port: server.addr.port, shutdown: () => server.shutdown() };
  }
  const server = serveHttp1(Deno.listen(address), {
    forward,
    headerTimeout: config.headerTimeout,
    keepAliveTimeout: config.keepAliveTimeout,
    onError: internalError,
  });
  return { port: server.addr.port, shutdown: () => server.shutdown() };
}

function start(message: StartMessage): void {
  const { config } = message;
  const pool = attachPool(message.buffer);
  const upstreams = createUpstreams({
    connectTimeout: config.connectTimeout,
    responseTimeout: config.responseTimeout,
  });
  const forward = createForwarder({ pool, config, backends: config.backends, upstreams });
  let front: Front;
  try {
    front = listen(message, forward);
  } catch (error) {
    closeUpstreams(upstreams);
    const err = error instanceof Error ? error : new Error(String(error));
    reply({ type: "error", name: err.name, message: err.message });
    return;
  }
  stop = async (drainTimeout) => {
    let timer = 0 as unknown as ReturnType<typeof setTimeout>;
    const drained = await Promise.race([
      front.shutdown().then(() => true),
      new Promise<boolean>((resolve) => (timer = setTimeout(() => resolve(false), drainTimeout))),
    ]);
    clearTimeout(timer);
    closeUpstreams(upstreams);
    return drained;
  };
  reply({ type: "listening", port: front.port });
}

self.onmessage = async (event: MessageEvent<StartMessage | StopMessage>) => {
  const message = event.data;
  if (message.type === "start") {
    start(message);
  } else if (message.type === "stop") {
    const drained = stop ? await stop(message.drainTimeout) : true;
    reply({ type: "stopped", drained });
  }
};
