/**
 * The main thread's supervision: the shared pool, the health checker and the serving workers,
 * and every change to them at run time (a reloaded config, a backend drained, added or removed
 * through the admin API, a worker that crashed, the final drain). One {@linkcode Supervisor}
 * record holds it all; the functions below change it.
 *
 * @module
 */

import { ValidationError } from "../errors.ts";
import type { Backend, Config } from "../config/config.ts";
import { parseBackend } from "../config/values.ts";
import {
  type HealthChecker,
  type HealthOptions,
  type ProbeResult,
  startHealthChecks,
  type Target,
} from "./health.ts";
import { logLine } from "../log.ts";
import { ownAddressMessage, ownBackend, ownListeners } from "../config/own_address.ts";
import { newInstanceId } from "../proxy/via.ts";
import {
  adminState,
  createPool,
  DEFAULT_CAPACITY,
  ejectedUntil,
  freeSlot,
  inFlight,
  isAlive,
  lastChange,
  type Pool,
  reclaimShare,
  setAdminState,
  setMembers,
} from "../balance/pool.ts";
import type {
  SlotTable,
  StartMessage,
  UpdateMessage,
  WorkerEvent,
  WorkerMessage,
  WorkerReply,
} from "./worker.ts";

/** A serving thread and the replies it owes. */
export interface Serving {
  /** The thread. */
  worker: Worker;
  /** Who waits for its next replies, in order. */
  replies: ((reply: WorkerReply) => void)[];
}

/** A backend's last failure: a failed health check or a passive one. */
export interface LastError {
  /** What went wrong, e.g. `connection refused`. */
  readonly reason: string;
  /** When (epoch ms). */
  readonly at: number;
}

/** Everything the main thread keeps running. */
export interface Supervisor {
  /** The running settings. */
  config: Config;
  /** The backend in each pool slot. */
  table: (Backend | null)[];
  /** Member slots, in round-robin order. */
  slots: number[];
  /** Each backend's last failure (a failed probe, or what took it down passively). */
  readonly lastError: Map<number, LastError>;
  /** Last probe duration per slot, ms. */
  readonly probeMs: Map<number, number>;
  /** The shared memory. */
  readonly pool: Pool;
  /** The port the workers serve. */
  readonly port: number;
  /** The port the admin API got (`--admin` with port 0), once it is bound; else 0. */
  adminPort: number;
  /** The serving threads. */
  readonly workers: Serving[];
  /** Active health checks. */
  readonly health: HealthChecker;
  /** When goround started (epoch ms). */
  readonly started: number;
  /** Reloads so far, by outcome, and when the last one succeeded (epoch ms; 0: none yet). */
  readonly reloads: { ok: number; failed: number; lastOk: number };
  /** Set once draining for exit has begun. */
  stopping: boolean;
  /** Serialises changes (reloads, admin actions), so they never interleave. */
  changing: Promise<unknown>;
  /** Per ejected slot, the timer that logs the end of its ejection. */
  readonly ejections: Map<number, ReturnType<typeof setTimeout>>;
}

function healthOptions(
  sup: Pick<Supervisor, "lastError" | "probeMs">,
  config: Config,
): HealthOptions {
  return {
    interval: config.healthInterval,
    fastInterval: config.healthFastInterval,
    caCerts: config.pems?.ca ? [config.pems.ca] : [],
    timeout: config.healthTimeout,
    path: config.healthPath,
    rise: config.healthRise,
    fall: config.healthFall,
    onProbe: (target: Target, result: ProbeResult) => {
      sup.probeMs.set(target.slot, result.ms);
      if (!result.ok) sup.lastError.set(target.slot, { reason: result.reason, at: Date.now() });
    },
    onTransition: (target, up, reason) => {
      logLine(`backend ${target.backend.url} ${up ? "UP" : `DOWN: ${reason}`}`);
    },
  };
}

function targetsOf(table: SlotTable, slots: readonly number[]): Target[] {
  return slots.map((slot) => ({ slot, backend: table[slot]! }));
}

function ask(serving: Serving, message: WorkerMessage): Promise<WorkerReply> {
  const reply = new Promise<WorkerReply>((resolve) => serving.replies.push(resolve));
  serving.worker.postMessage(message);
  return reply;
}

function startMessage(sup: Supervisor, index: number): StartMessage {
  return {
    type: "start",
    worker: index,
    buffer: sup.pool.buffer,
    config: sup.config,
    table: sup.table,
    port: sup.port,
  };
}

/** Logs a passive ejection a worker made, and its end when the time comes. */
function ejected(sup: Supervisor, slot: number, reason: string): void {
  const backend = sup.table[slot];
  if (!backend) return;
  sup.lastError.set(slot, { reason, at: Date.now() });
  logLine(`backend ${backend.url} EJECTED ${reason}`);
  const watch = () => {
    clearTimeout(sup.ejections.get(slot));
    sup.ejections.delete(slot);
    const until = ejectedUntil(sup.pool, slot);
    if (sup.stopping || sup.table[slot]?.url !== backend.url) return;
    if (until > 0) {
      sup.ejections.set(slot, setTimeout(watch, until - Date.now()));
      return;
    }
    const health = isAlive(sup.pool, slot) ? "" : " (still DOWN by its health checks)";
    logLine(`backend ${backend.url} back from ejection${health}`);
  };
  if (ejectedUntil(sup.pool, slot) > 0) watch();
}

/** Starts worker `index` (again, after a crash) and resolves with its first reply. */
function launch(sup: Supervisor, index: number, workerUrl: URL): Promise<WorkerReply> {
  const worker = new Worker(workerUrl, { type: "module" });
  const serving: Serving = { worker, replies: [] };
  worker.onmessage = (event: MessageEvent<WorkerReply | WorkerEvent>) => {
    const data = event.data;
    if (data.type === "down") {
      const backend = sup.table[data.slot];
      sup.lastError.set(data.slot, { reason: data.reason, at: Date.now() });
      if (backend) logLine(`backend ${backend.url} DOWN: ${data.reason}`);
      return;
    }
    if (data.type === "ejected") {
      ejected(sup, data.slot, data.reason);
      return;
    }
    serving.replies.shift()?.(data);
  };
  worker.onerror = (event) => {
    event.preventDefault();
    if (sup.stopping) return;
    worker.terminate();
    // Its requests died with it (its event loop ended with the error): their counts go before
    // the new worker serves from the same row.
    const lost = reclaimShare(sup.pool, index);
    const counts = lost === 0 ? "" : ` (${lost} requests in flight lost, their counts taken back)`;
    logLine(`worker ${index} crashed (${event.message}); restarting it${counts}`);
    for (const waiter of serving.replies.splice(0)) waiter({ type: "updated" });
    launch(sup, index, workerUrl).then((reply) => {
      if (reply.type === "error") logLine(`worker ${index} failed to restart: ${reply.message}`);
    });
  };
  sup.workers[index] = serving;
  return ask(serving, startMessage(sup, index));
}

/** The settings with `--admin` at the port it got, for the own-address check. */
function boundAdmin(sup: Supervisor, config: Config): Config {
  if (!config.admin || config.admin.port !== 0 || sup.adminPort === 0) return config;
  return { ...config, admin: { ...config.admin, port: sup.adminPort } };
}

/**
 * Allocates the pool, runs a first round of health checks (so dead backends are known before
 * the first request), and starts `config.workers` serving threads on `port`.
 *
 * @param config The settings.
 * @param port The port the workers serve (already claimed).
 * @param workerUrl The worker module (`lib/control/worker.ts`).
 * @returns The supervisor, or the first worker's error reply.
 */
export async function startSupervisor(
  config: Config,
  port: number,
  workerUrl: URL,
): Promise<Supervisor | Extract<WorkerReply, { type: "error" }>> {
  // Sticky cookies are signed with one key that every worker (and every reload) shares.
  if (config.sticky === "cookie" && config.stickyKey === "") {
    config = { ...config, stickyKey: crypto.randomUUID() };
  }
  // So is the id in goround's Via, by which a request that comes back round a loop is known.
  if (config.instanceId === "") config = { ...config, instanceId: newInstanceId() };
  const pool = createPool(Math.max(DEFAULT_CAPACITY, 2 * config.backends.length), {
    workers: config.workers,
  });
  const slots = config.backends.map((_, slot) => slot);
  const table: (Backend | null)[] = new Array(pool.capacity).fill(null);
  config.backends.forEach((backend, slot) => (table[slot] = backend));
  setMembers(pool, slots, config.backends.map((b) => b.weight));
  const lastError = new Map<number, LastError>();
  const probeMs = new Map<number, number>();
  const health = startHealthChecks(
    pool,
    targetsOf(table, slots),
    healthOptions({ lastError, probeMs }, config),
  );
  await health.checkNow();
  const sup: Supervisor = {
    config,
    table,
    slots,
    lastError,
    probeMs,
    pool,
    port,
    adminPort: 0,
    workers: [],
    health,
    started: Date.now(),
    reloads: { ok: 0, failed: 0, lastOk: 0 },
    stopping: false,
    changing: Promise.resolve(),
    ejections: new Map(),
  };
  for (let index = 0; index < config.workers; index++) {
    const reply = await launch(sup, index, workerUrl);
    if (reply.type === "error") {
      await stopWorkers(sup, 0);
      await health.stop();
      return reply;
    }
  }
  return sup;
}

/** Runs `change` after every change queued before it. */
function serialised<T>(sup: Supervisor, change: () => Promise<T>): Promise<T> {
  const next = sup.changing.then(change);
  sup.changing = next.catch(() => {});
  return next;
}

/** The outcome of a change to the backends. */
export interface BackendChange {
  /** Backends added. */
  readonly added: string[];
  /** Backends removed. */
  readonly removed: string[];
  /** Settles once the added backends' first health checks are done (each bounded by
   * `--health-timeout`). */
  readonly firstChecks: Promise<void>;
  /** What a worker could not apply (e.g. `worker 1: kept the old front end: ...`). */
  readonly problems: string[];
}

/**
 * Makes `config.backends` the pool: backends that stay keep their slot, state and counters;
 * new ones take a free slot and join down, probed at once, so they take traffic only once their
 * first health check passes; removed ones stop getting requests and finish those in flight.
 * Workers learn the new backends before the pool lists them, so none ever selects a slot it
 * cannot serve. The admin API, a reload and DNS discovery all change the pool through here.
 *
 * @param sup The supervisor.
 * @param next The settings to run with from now on, or a function that makes them from the
 *   running ones when this change's turn comes (so concurrent changes never undo each other).
 * @returns What changed.
 * @throws {ValidationError} When there are more backends than slots, or one is goround's own
 *   listen address (nothing changes then).
 */
export function applyConfig(
  sup: Supervisor,
  next: Config | ((running: Config) => Config),
): Promise<BackendChange> {
  return serialised(sup, async () => {
    const wanted = typeof next === "function" ? next(sup.config) : next;
    // An empty key keeps the running one; sticky turned on by a reload gets a random one.
    const stickyKey = wanted.stickyKey || sup.config.stickyKey ||
      (wanted.sticky === "cookie" ? crypto.randomUUID() : "");
    const config = { ...wanted, stickyKey, instanceId: sup.config.instanceId };
    const listening = ownListeners(boundAdmin(sup, config), {
      hostname: sup.config.listen.hostname,
      port: sup.port,
    });
    const own = ownBackend(config.backends, listening);
    if (own) throw new ValidationError(ownAddressMessage(own, listening));
    const bySlot = new Map(sup.slots.map((slot) => [sup.table[slot]!.url, slot]));
    const taken = new Set<number>();
    const slots: number[] = [];
    const table = [...sup.table];
    for (const backend of config.backends) {
      let slot = bySlot.get(backend.url);
      if (slot === undefined) slot = freeSlot(sup.pool, taken);
      if (slot < 0) throw new ValidationError(`more backends than the ${sup.pool.capacity} slots`);
      taken.add(slot);
      slots.push(slot);
      table[slot] = backend;
    }
    const added = config.backends.filter((b) => !bySlot.has(b.url)).map((b) => b.url);
    const removed = [...bySlot.keys()].filter((url) => !config.backends.some((b) => b.url === url));
    const update: UpdateMessage = { type: "update", config, table };
    // Set before the workers are told: a worker restarted meanwhile (after a crash) starts from
    // these, so it knows every slot the membership is about to name (the removed ones are
    // cleared below, once no worker picks them any more).
    sup.config = config;
    sup.table = table;
    const replies = await Promise.all(sup.workers.map((serving) => ask(serving, update)));
    const problems = replies.flatMap((reply, index) =>
      reply.type === "updated" && reply.problem ? [`worker ${index}: ${reply.problem}`] : []
    );
    const joined = slots.filter((slot) => !sup.slots.includes(slot));
    // Down until a probe passes, as Envoy's ignore_new_hosts_until_first_hc: a backend named
    // by mistake, or not started yet, never gets a request.
    setMembers(sup.pool, slots, config.backends.map((b) => b.weight), { alive: false });
    for (const slot of sup.slots) {
      if (slots.includes(slot)) continue;
      table[slot] = null;
      sup.lastError.delete(slot);
      sup.probeMs.delete(slot);
    }
    for (const slot of joined) {
      sup.lastError.delete(slot); // a late report about the slot's former backend
      sup.probeMs.delete(slot);
    }
    sup.slots = slots;
    sup.health.update(targetsOf(table, slots), healthOptions(sup, config));
    const firstChecks = joined.length ? sup.health.checkNow(joined) : Promise.resolve();
    return { added, removed, firstChecks, problems };
  });
}

/**
 * Adds a backend (admin API): the running settings with one more backend. Resolves once its
 * first health check is done, so its state then says whether it takes traffic.
 *
 * @param sup The supervisor.
 * @param url The backend's URL.
 * @returns The new backend's slot, or -1 when another change removed it meanwhile.
 * @throws {ValidationError} For a bad URL; {@linkcode ValidationError} when it is already in the pool.
 */
export async function addBackend(sup: Supervisor, url: string): Promise<number> {
  const backend = parseBackend(url);
  const change = await applyConfig(sup, (running) => {
    if (running.backends.some((b) => b.url === backend.url)) {
      throw new ValidationError(`${backend.url} is already in the pool`);
    }
    return { ...running, backends: [...running.backends, backend] };
  });
  await change.firstChecks;
  // -1: another change removed it while its first check ran.
  return sup.slots.find((slot) => sup.table[slot]?.url === backend.url) ?? -1;
}

/**
 * Removes a backend (admin API); its requests in flight finish.
 *
 * @param sup The supervisor.
 * @param slot The backend's id.
 * @returns Whether it was in the pool.
 */
export async function removeBackend(sup: Supervisor, slot: number): Promise<boolean> {
  let found = false;
  await applyConfig(sup, (running) => {
    const backend = sup.slots.includes(slot) ? sup.table[slot] : null;
    if (!backend) return running;
    if (sup.slots.length === 1) throw new ValidationError("the last backend cannot be removed");
    found = true;
    return { ...running, backends: running.backends.filter((b) => b.url !== backend.url) };
  });
  return found;
}

/**
 * Stops new requests to a backend (`draining`) or lets them go to it again (`enabled`).
 *
 * @param sup The supervisor.
 * @param slot The backend's id.
 * @param drain Whether to drain.
 * @returns Whether it is in the pool.
 */
export function setDraining(sup: Supervisor, slot: number, drain: boolean): boolean {
  const backend = sup.slots.includes(slot) ? sup.table[slot] : null;
  if (!backend) return false;
  setAdminState(sup.pool, slot, drain ? "draining" : "enabled");
  logLine(`backend ${backend.url} ${drain ? "draining" : "enabled"} (admin)`);
  return true;
}

/** A backend's state as the admin API shows it. */
export type BackendState = "up" | "down" | "ejected" | "draining" | "drained";

/**
 * A backend's state: `draining` while it still has requests in flight after a drain, then
 * `drained`; otherwise the health view, `down`, then passive ejection, `ejected`; else `up`.
 *
 * @param sup The supervisor.
 * @param slot The backend's id.
 * @returns The state.
 */
export function backendState(sup: Supervisor, slot: number): BackendState {
  if (adminState(sup.pool, slot) === "draining") {
    return inFlight(sup.pool, slot) > 0 ? "draining" : "drained";
  }
  if (!isAlive(sup.pool, slot)) return "down";
  return ejectedUntil(sup.pool, slot) > 0 ? "ejected" : "up";
}

/**
 * Unix seconds of the backend's last up/down transition.
 *
 * @param sup The supervisor.
 * @param slot The backend's id.
 * @returns Seconds, or 0 when it never changed.
 */
export function changedAt(sup: Supervisor, slot: number): number {
  return lastChange(sup.pool, slot);
}

async function stopWorkers(sup: Supervisor, drainTimeout: number): Promise<boolean> {
  // Every listener closes before any connection is told to close, so no client that
  // reconnects lands on another worker's listener just before that one closes too.
  await Promise.all(sup.workers.map((serving) => ask(serving, { type: "close" })));
  const replies = await Promise.all(sup.workers.map(async (serving) => {
    const reply = await ask(serving, { type: "stop", drainTimeout });
    serving.worker.terminate();
    return reply;
  }));
  return replies.every((reply) => reply.type !== "stopped" || reply.drained);
}

/**
 * Drains for exit: workers stop accepting and finish in-flight requests (bounded by the drain
 * timeout), then health checks stop.
 *
 * @param sup The supervisor.
 * @returns Whether every request finished within the drain timeout.
 */
export async function drainAndStop(sup: Supervisor): Promise<boolean> {
  sup.stopping = true;
  for (const timer of sup.ejections.values()) clearTimeout(timer);
  sup.ejections.clear();
  const drained = await stopWorkers(sup, sup.config.drainTimeout);
  await sup.health.stop();
  return drained;
}
