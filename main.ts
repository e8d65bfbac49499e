/**
 * goround: an HTTP reverse proxy and round-robin load balancer.
 *
 * `main.ts` only wires things: it reads the settings, allocates the shared pool, runs the
 * health checker, starts one serving worker per core and handles signals. Everything else is
 * in `lib/`.
 *
 * ```sh
 * deno run --unstable-net --allow-net --allow-read=. --allow-env='GOROUND_*' main.ts --help
 * ```
 *
 * @module
 */

import {
  type Command,
  type Config,
  describeConfig,
  helpText,
  parseCommandLine,
} from "./lib/config.ts";
import { ConfigError } from "./lib/errors.ts";
import { startHealthChecks, type Target } from "./lib/health.ts";
import { logLine } from "./lib/log.ts";
import { createPool, DEFAULT_CAPACITY, setMembers } from "./lib/pool.ts";
import { VERSION } from "./lib/version.ts";
import type { StartMessage, StopMessage, WorkerReply } from "./lib/worker.ts";

/** Exit status for a configuration error (bad flag, variable, or a port that is taken). */
export const EXIT_CONFIG = 2;

/** How long a stopping worker may take to finish in-flight requests, ms. */
const DRAIN_TIMEOUT = 30_000;

function readEnv(name: string): string | undefined {
  try {
    return Deno.env.get(name);
  } catch {
    return undefined; // not granted: treat as unset
  }
}

function fail(message: string): never {
  console.error(`goround: ${message}`);
  Deno.exit(EXIT_CONFIG);
}

/** Formats a bound address the way the brief prints it (`:8000` for all interfaces). */
function displayAddress(hostname: string, port: number): string {
  if (hostname === "0.0.0.0") return `:${port}`;
  return hostname.includes(":") ? `[${hostname}]:${port}` : `${hostname}:${port}`;
}

/**
 * Checks the port is free (a plain bind, without `reusePort`, fails if anyone holds it, even
 * another goround) and resolves port 0 to a concrete free port for all workers to share.
 */
function claimPort(config: Config): number {
  const where = displayAddress(config.listen.hostname, config.listen.port);
  try {
    const listener = Deno.listen({ hostname: config.listen.hostname, port: config.listen.port });
    const port = listener.addr.port;
    listener.close();
    return port;
  } catch (error) {
    if (error instanceof Deno.errors.AddrInUse) {
      fail(`--listen: "${where}" is in use: expected a free port`);
    }
    if (error instanceof Deno.errors.AddrNotAvailable) {
      fail(`--listen: "${where}" is not an address of this machine: expected a local interface`);
    }
    if (error instanceof Deno.errors.PermissionDenied) {
      fail(`--listen: "${where}" needs privileges: expected a port above 1023`);
    }
    throw error;
  }
}

/** A serving thread and the way to ask it things. */
interface Serving {
  worker: Worker;
  replies: ((reply: WorkerReply) => void)[];
}

function spawnWorker(start: StartMessage, onCrash: (error: ErrorEvent) => void): Serving {
  const worker = new Worker(new URL("./lib/worker.ts", import.meta.url), { type: "module" });
  const serving: Serving = { worker, replies: [] };
  worker.onmessage = (event: MessageEvent<WorkerReply>) => {
    for (const waiter of serving.replies.splice(0)) waiter(event.data);
  };
  worker.onerror = (event) => {
    event.preventDefault();
    onCrash(event);
  };
  worker.postMessage(start);
  return serving;
}

function nextReply(serving: Serving): Promise<WorkerReply> {
  return new Promise((resolve) => serving.replies.push(resolve));
}

async function run(config: Config): Promise<void> {
  const pool = createPool(Math.max(DEFAULT_CAPACITY, config.backends.length));
  setMembers(pool, config.backends.map((_, slot) => slot));
  const port = claimPort(config);
  const targets: Target[] = config.backends.map((backend, slot) => ({ slot, backend }));

  const health = startHealthChecks(pool, targets, {
    interval: config.healthInterval,
    timeout: config.healthTimeout,
    onTransition: (target, up, reason) => {
      logLine(`backend ${target.backend.url} ${up ? "UP" : `DOWN: ${reason}`}`);
    },
  });
  await health.checkNow();

  const start: StartMessage = { type: "start", buffer: pool.buffer, config, port };
  let stopping = false;
  const workers: Serving[] = [];
  const launch = (index: number): Promise<WorkerReply> => {
    const serving = spawnWorker(start, (event) => {
      if (stopping) return;
      logLine(`worker ${index} crashed (${event.message}); restarting it`);
      serving.worker.terminate();
      launch(index);
    });
    workers[index] = serving;
    return nextReply(serving);
  };
  for (let index = 0; index < config.workers; index++) {
    const reply = await launch(index);
    if (reply.type === "error") {
      if (reply.name === "AddrInUse") {
        fail(`--listen: port ${port} is in use: expected a free port`);
      }
      throw new Error(`worker ${index} failed to start: ${reply.name}: ${reply.message}`);
    }
  }

  console.log(`Load Balancer started at ${displayAddress(config.listen.hostname, port)}`);
  for (const line of describeConfig(config)) console.log(line);

  const shutdown = async (signal: Deno.Signal) => {
    if (stopping) return;
    stopping = true;
    logLine(`${signal}: draining ${workers.length} workers`);
    const stop: StopMessage = { type: "stop", drainTimeout: DRAIN_TIMEOUT };
    await Promise.all(workers.map(async (serving) => {
      const done = nextReply(serving);
      serving.worker.postMessage(stop);
      await done;
      serving.worker.terminate();
    }));
    await health.stop();
    logLine("stopped");
    Deno.exit(0);
  };
  for (const signal of ["SIGINT", "SIGTERM"] as const) {
    Deno.addSignalListener(signal, () => void shutdown(signal));
  }
}

/**
 * Runs goround with the process's arguments and environment.
 *
 * @returns When the proxy is serving (it keeps running until a signal).
 */
export async function main(): Promise<void> {
  let command: Command;
  try {
    command = parseCommandLine(Deno.args, readEnv, navigator.hardwareConcurrency);
  } catch (error) {
    if (error instanceof ConfigError) fail(error.message);
    throw error;
  }
  if (command.kind === "help") {
    console.log(helpText());
    return;
  }
  if (command.kind === "version") {
    console.log(`goround ${VERSION}`);
    return;
  }
  await run(command.config);
}

if (import.meta.main) await main();
