/**
 * goround: an HTTP reverse proxy and round-robin load balancer.
 *
 * `main.ts` only wires things: it reads the settings, allocates the shared pool, runs the
 * health checker, starts one serving worker per core, restarts a worker that crashes, reloads
 * the config file on SIGHUP and drains on SIGTERM/SIGINT. Everything else is in `lib/`.
 *
 * ```sh
 * deno run --unstable-net --allow-net --allow-read=. --allow-env='GOROUND_*' main.ts --help
 * ```
 *
 * @module
 */

import {
  type Backend,
  type Command,
  type Config,
  describeConfig,
  helpText,
  parseCommandLine,
  RESTART_ONLY,
} from "./lib/config.ts";
import { ConfigError } from "./lib/errors.ts";
import {
  type HealthChecker,
  type HealthOptions,
  startHealthChecks,
  type Target,
} from "./lib/health.ts";
import { logLine } from "./lib/log.ts";
import { createPool, DEFAULT_CAPACITY, freeSlot, type Pool, setMembers } from "./lib/pool.ts";
import { VERSION } from "./lib/version.ts";
import type {
  SlotTable,
  StartMessage,
  UpdateMessage,
  WorkerMessage,
  WorkerReply,
} from "./lib/worker.ts";

/** Exit status for a configuration error (bad flag, variable, file, or a port that is taken). */
export const EXIT_CONFIG = 2;

function readEnv(name: string): string | undefined {
  try {
    return Deno.env.get(name);
  } catch {
    return undefined; // not granted: treat as unset
  }
}

function readFile(path: string): string {
  return Deno.readTextFileSync(path);
}

function fail(message: string): never {
  console.error(`goround: ${message}`);
  Deno.exit(EXIT_CONFIG);
}

function loadConfig(): Command {
  return parseCommandLine(Deno.args, readEnv, navigator.hardwareConcurrency, readFile);
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

function healthOptions(config: Config): HealthOptions {
  return {
    interval: config.healthInterval,
    timeout: config.healthTimeout,
    path: config.healthPath,
    rise: config.healthRise,
    fall: config.healthFall,
    onTransition: (target, up, reason) => {
      logLine(`backend ${target.backend.url} ${up ? "UP" : `DOWN: ${reason}`}`);
    },
  };
}

function targetsOf(table: SlotTable, slots: readonly number[]): Target[] {
  return slots.map((slot) => ({ slot, backend: table[slot]! }));
}

/** A serving thread and the replies it owes. */
interface Serving {
  worker: Worker;
  replies: ((reply: WorkerReply) => void)[];
}

function ask(serving: Serving, message: WorkerMessage): Promise<WorkerReply> {
  const reply = new Promise<WorkerReply>((resolve) => serving.replies.push(resolve));
  serving.worker.postMessage(message);
  return reply;
}

/** Everything the main thread keeps running. */
interface Supervisor {
  config: Config;
  /** The backend in each pool slot. */
  table: (Backend | null)[];
  /** Member slots, in round-robin order. */
  slots: number[];
  readonly pool: Pool;
  readonly port: number;
  readonly workers: Serving[];
  readonly health: HealthChecker;
  stopping: boolean;
}

function startMessage(sup: Supervisor): StartMessage {
  return {
    type: "start",
    buffer: sup.pool.buffer,
    config: sup.config,
    table: sup.table,
    port: sup.port,
  };
}

/** Starts worker `index` (again, after a crash) and resolves with its first reply. */
function launch(sup: Supervisor, index: number): Promise<WorkerReply> {
  const worker = new Worker(new URL("./lib/worker.ts", import.meta.url), { type: "module" });
  const serving: Serving = { worker, replies: [] };
  worker.onmessage = (event: MessageEvent<WorkerReply>) => serving.replies.shift()?.(event.data);
  worker.onerror = (event) => {
    event.preventDefault();
    if (sup.stopping) return;
    logLine(`worker ${index} crashed (${event.message}); restarting it`);
    worker.terminate();
    for (const waiter of serving.replies.splice(0)) waiter({ type: "updated" });
    launch(sup, index).then((reply) => {
      if (reply.type === "error") logLine(`worker ${index} failed to restart: ${reply.message}`);
    });
  };
  sup.workers[index] = serving;
  return ask(serving, startMessage(sup));
}

/**
 * Applies a reloaded config: backends that stay keep their slot (and counters), new ones take a
 * free slot, removed ones stop getting requests and finish those in flight.
 */
async function reload(sup: Supervisor): Promise<void> {
  let command: Command;
  try {
    command = loadConfig();
  } catch (error) {
    if (!(error instanceof ConfigError)) throw error;
    logLine(`reload failed, keeping the running config: ${error.message}`);
    return;
  }
  if (command.kind !== "run") return;
  const next = command.config;
  for (const key of RESTART_ONLY) {
    if (JSON.stringify(next[key]) !== JSON.stringify(sup.config[key])) {
      logLine(`reload: ${key} changed; that takes effect on restart`);
    }
  }
  const config: Config = {
    ...next,
    ...Object.fromEntries(RESTART_ONLY.map((key) => [key, sup.config[key]])),
  };
  const bySlot = new Map(sup.slots.map((slot) => [sup.table[slot]!.url, slot]));
  const taken = new Set<number>();
  const slots: number[] = [];
  const table = [...sup.table];
  for (const backend of config.backends) {
    let slot = bySlot.get(backend.url);
    if (slot === undefined) slot = freeSlot(sup.pool, taken);
    if (slot < 0) {
      logLine(
        `reload failed, keeping the running config: more backends than the ${sup.pool.capacity} slots`,
      );
      return;
    }
    taken.add(slot);
    slots.push(slot);
    table[slot] = backend;
  }
  const added = config.backends.filter((b) => !bySlot.has(b.url)).map((b) => b.url);
  const removed = [...bySlot.keys()].filter((url) => !config.backends.some((b) => b.url === url));
  // Workers learn the new backends before the pool lists them, so no worker ever selects a
  // slot it has no backend for.
  const update: UpdateMessage = { type: "update", config, table };
  await Promise.all(sup.workers.map((serving) => ask(serving, update)));
  setMembers(sup.pool, slots);
  for (const slot of sup.slots) if (!slots.includes(slot)) table[slot] = null;
  sup.config = config;
  sup.table = table;
  sup.slots = slots;
  sup.health.update(targetsOf(table, slots), healthOptions(config));
  logLine(
    `reloaded ${config.configFile}: ${slots.length} backends` +
      (added.length ? `, added ${added.join(", ")}` : "") +
      (removed.length ? `, removed ${removed.join(", ")}` : ""),
  );
}

async function shutdown(sup: Supervisor, signal: Deno.Signal): Promise<void> {
  if (sup.stopping) return;
  sup.stopping = true;
  logLine(
    `${signal}: draining ${sup.workers.length} workers (at most ${sup.config.drainTimeout} ms)`,
  );
  const replies = await Promise.all(sup.workers.map(async (serving) => {
    const reply = await ask(serving, { type: "stop", drainTimeout: sup.config.drainTimeout });
    serving.worker.terminate();
    return reply;
  }));
  await sup.health.stop();
  const cut = replies.some((reply) => reply.type === "stopped" && !reply.drained);
  logLine(cut ? "stopped (drain timeout: some requests were cut off)" : "stopped");
  Deno.exit(0);
}

async function run(config: Config): Promise<void> {
  const pool = createPool(Math.max(DEFAULT_CAPACITY, 2 * config.backends.length));
  const slots = config.backends.map((_, slot) => slot);
  const table: (Backend | null)[] = new Array(pool.capacity).fill(null);
  config.backends.forEach((backend, slot) => (table[slot] = backend));
  setMembers(pool, slots);
  const port = claimPort(config);

  const health = startHealthChecks(pool, targetsOf(table, slots), healthOptions(config));
  await health.checkNow();

  const sup: Supervisor = {
    config,
    table,
    slots,
    pool,
    port,
    workers: [],
    health,
    stopping: false,
  };
  for (let index = 0; index < config.workers; index++) {
    const reply = await launch(sup, index);
    if (reply.type === "error") {
      if (reply.name === "AddrInUse") {
        fail(`--listen: port ${port} is in use: expected a free port`);
      }
      throw new Error(`worker ${index} failed to start: ${reply.name}: ${reply.message}`);
    }
  }

  console.log(`Load Balancer started at ${displayAddress(config.listen.hostname, port)}`);
  for (const line of describeConfig(config)) console.log(line);

  for (const signal of ["SIGINT", "SIGTERM"] as const) {
    Deno.addSignalListener(signal, () => void shutdown(sup, signal));
  }
  let reloading = Promise.resolve();
  Deno.addSignalListener("SIGHUP", () => {
    if (config.configFile === "") {
      logLine("SIGHUP: nothing to reload (start goround with --config FILE)");
      return;
    }
    reloading = reloading.then(() => reload(sup));
  });
}

/**
 * Runs goround with the process's arguments and environment.
 *
 * @returns When the proxy is serving (it keeps running until a signal).
 */
export async function main(): Promise<void> {
  let command: Command;
  try {
    command = loadConfig();
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
