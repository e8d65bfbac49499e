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
import { createHandler } from "./proxy.ts";
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

function start(message: StartMessage): void {
  const { config } = message;
  const pool = attachPool(message.buffer);
  const upstreams = createUpstreams({
    connectTimeout: config.connectTimeout,
    responseTimeout: config.responseTimeout,
  });
  const handler = createHandler({ pool, config, backends: config.backends, upstreams });
  let server: Deno.HttpServer<Deno.NetAddr>;
  try {
    server = Deno.serve({
      hostname: config.listen.hostname,
      port: message.port,
      reusePort: true,
      onListen: () => {},
      onError: (error) => {
        logLine(`internal error: ${error instanceof Error ? error.stack : String(error)}`);
        return new Response("bad gateway\n", { status: 502 });
      },
    }, handler);
  } catch (error) {
    const err = error instanceof Error ? error : new Error(String(error));
    reply({ type: "error", name: err.name, message: err.message });
    return;
  }
  stop = async (drainTimeout) => {
    const drained = await Promise.race([
      server.shutdown().then(() => true),
      new Promise<boolean>((resolve) => setTimeout(() => resolve(false), drainTimeout)),
    ]);
    closeUpstreams(upstreams);
    return drained;
  };
  reply({ type: "listening", port: server.addr.port });
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
