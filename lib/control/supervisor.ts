/**
 * The main thread's supervision: the pools (each its shared memory and health checker), the
 * process memory and the serving workers,
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
  isUsable,
  lastChange,
  type Pool,
  reclaimShare,
  resetRouteHits,
  setAdminState,
  setMembers,
  tenantOf,
  weightOf,
} from "../balance/pool.ts";
import { effectivePools, withPool } from "../config/pools.ts";
import type {
  PoolWire,
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

/** One pool as the main thread runs it: its shared memory, its backends and their checks. */
export interface PoolRun {
  /** Its name (`default` for the flags-only form). */
  readonly name: string;
  /** What log lines add after a backend's URL: ` (pool NAME)`, or `""` in the flags-only form. */
  readonly tag: string;
  /** The settings it runs with (the top level with its own on top). */
  config: Config;
  /** The backend in each slot. */
  table: (Backend | null)[];
  /** Member slots, in round-robin order. */
  slots: number[];
  /** Each backend's last failure (a failed probe, or what took it down passively). */
  readonly lastError: Map<number, LastError>;
  /** Last probe duration per slot, ms. */
  readonly probeMs: Map<number, number>;
  /** The shared memory. */
  readonly pool: Pool;
  /** Active health checks. */
  readonly health: HealthChecker;
  /** Per ejected slot, the timer that logs the end of its ejection. */
  readonly ejections: Map<number, ReturnType<typeof setTimeout>>;
  /** The slot each removed backend had: one that comes back takes it again, so its requests
   * still in flight there count against its `--max-conns`. */
  readonly former: Map<string, number>;
}

/** Everything the main thread keeps running. */
export interface Supervisor {
  /** The running settings (the top level, with the pools' and routes' specs). */
  config: Config;
  /** The pools, in the settings' order. */
  pools: PoolRun[];
  /** The process memory: process-wide counters, and the requests of each route. */
  readonly process: Pool;
  /** The process memory's slot of each route, by name (kept across reloads). */
  readonly routeSlots: Map<string, number>;
  /** The port the workers serve. */
  readonly port: number;
  /** The port the admin API got (`--admin` with port 0), once it is bound; else 0. */
  adminPort: number;
  /** The serving threads. */
  readonly workers: Serving[];
  /** When goround started (epoch ms). */
  readonly started: number;
  /** Reloads so far, by outcome, and when the last one succeeded (epoch ms; 0: none yet). */
  readonly reloads: { ok: number; failed: number; lastOk: number };
  /** Set once draining for exit has begun. */
  stopping: boolean;
  /** Serialises changes (reloads, admin actions), so they never interleave. */
  changing: Promise<unknown>;
}

/** The most routes a config may have (the slots of the process memory). */
export const ROUTE_CAPACITY = 256;

function healthOptions(
  run: Pick<PoolRun, "lastError" | "probeMs" | "tag">,
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
      run.probeMs.set(target.slot, result.ms);
      if (!result.ok) run.lastError.set(target.slot, { reason: result.reason, at: Date.now() });
    },
    onTransition: (target, up, reason) => {
      logLine(`backend ${target.backend.url}${run.tag} ${up ? "UP" : `DOWN: ${reason}`}`);
    },
  };
}

function targetsOf(table: readonly (Backend | null)[], slots: readonly number[]): Target[] {
  return slots.map((slot) => ({ slot, backend: table[slot]! }));
}

function ask(serving: Serving, message: WorkerMessage): Promise<WorkerReply> {
  const reply = new Promise<WorkerReply>((resolve) => serving.replies.push(resolve));
  serving.worker.postMessage(message);
  return reply;
}

/** The pools as a worker is told them. */
function wiredPools(pools: readonly PoolRun[]): PoolWire[] {
  return pools.map((run) => ({
    name: run.name,
    buffer: run.pool.buffer,
    config: run.config,
    // Only its members: one leaving is not picked by a worker told of the change.
    table: run.table.map((backend, slot) => run.slots.includes(slot) ? backend : null),
    tenants: run.table.map((_, slot) => tenantOf(run.pool, slot)),
  }));
}

/** The process memory's slot of each route, in route order, and the slots given to new routes
 * (their counts to start from 0, by `resetRouteHits`, once no worker counts a removed route in
 * them). */
function routeSlotsOf(
  sup: Pick<Supervisor, "routeSlots">,
  config: Config,
): { slots: number[]; fresh: number[] } {
  const names = new Set(config.routes.map((route) => route.name));
  for (const name of [...sup.routeSlots.keys()]) {
    if (!names.has(name)) sup.routeSlots.delete(name);
  }
  const used = new Set(sup.routeSlots.values());
  const fresh: number[] = [];
  let free = 0;
  const slots = config.routes.map((route) => {
    let slot = sup.routeSlots.get(route.name);
    if (slot === undefined) {
      while (used.has(free)) free++;
      slot = free;
      used.add(slot);
      fresh.push(slot);
      sup.routeSlots.set(route.name, slot);
    }
    return slot;
  });
  return { slots, fresh };
}

/** The route slots a starting worker counts in (a fresh one's count starts from 0). */
function startSlots(sup: Supervisor): number[] {
  const { slots, fresh } = routeSlotsOf(sup, sup.config);
  for (const slot of fresh) resetRouteHits(sup.process, slot);
  return slots;
}

function startMessage(sup: Supervisor, index: number): StartMessage {
  return {
    type: "start",
    worker: index,
    process: sup.process.buffer,
    config: sup.config,
    pools: wiredPools(sup.pools),
    routeSlots: startSlots(sup),
    port: sup.port,
  };
}

/** The running pool of that name, if any. */
export function poolNamed(sup: Supervisor, name: string): PoolRun | undefined {
  return sup.pools.find((run) => run.name === name);
}

/** Logs a passive ejection a worker made, and its end when the time comes. */
function ejected(sup: Supervisor, run: PoolRun, slot: number, reason: string): void {
  const backend = run.table[slot];
  if (!backend) return;
  run.lastError.set(slot, { reason, at: Date.now() });
  logLine(`backend ${backend.url}${run.tag} EJECTED ${reason}`);
  const watch = () => {
    clearTimeout(run.ejections.get(slot));
    run.ejections.delete(slot);
    const until = ejectedUntil(run.pool, slot);
    if (sup.stopping || run.table[slot]?.url !== backend.url || !sup.pools.includes(run)) return;
    if (until > 0) {
      run.ejections.set(slot, setTimeout(watch, until - Date.now()));
      return;
    }
    const health = isAlive(run.pool, slot) ? "" : " (still DOWN by its health checks)";
    logLine(`backend ${backend.url}${run.tag} back from ejection${health}`);
  };
  if (ejectedUntil(run.pool, slot) > 0) watch();
}

/** Starts worker `index` (again, after a crash) and resolves with its first reply. */
function launch(sup: Supervisor, index: number, workerUrl: URL): Promise<WorkerReply> {
  const worker = new Worker(workerUrl, { type: "module" });
  const serving: Serving = { worker, replies: [] };
  worker.onmessage = (event: MessageEvent<WorkerReply | WorkerEvent>) => {
    const data = event.data;
    if (data.type === "down" || data.type === "ejected") {
      const run = poolNamed(sup, data.pool);
      if (!run) return; // a pool a reload removed meanwhile
      if (data.type === "ejected") return ejected(sup, run, data.slot, data.reason);
      const backend = run.table[data.slot];
      run.lastError.set(data.slot, { reason: data.reason, at: Date.now() });
      if (backend) logLine(`backend ${backend.url}${run.tag} DOWN: ${data.reason}`);
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
    const lost = sup.pools.reduce((sum, run) => sum + reclaimShare(run.pool, index), 0);
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

/** A new pool's memory and health checks, its backends in the first slots. */
function createRun(
  name: string,
  config: Config,
  options: { workers: number; named: boolean },
): PoolRun {
  const { workers } = options;
  const tag = options.named ? ` (pool ${name})` : "";
  // Twice the slots of the backends it may hold: a change that replaces them all finds free
  // slots, so those leaving finish beside the new ones.
  const limit = Math.max(DEFAULT_CAPACITY, 2 * config.backends.length);
  const pool = createPool(2 * limit, { workers });
  const table: (Backend | null)[] = new Array(pool.capacity).fill(null);
  config.backends.forEach((backend, slot) => (table[slot] = backend));
  const lastError = new Map<number, LastError>();
  const probeMs = new Map<number, number>();
  const health = startHealthChecks(pool, [], healthOptions({ lastError, probeMs, tag }, config));
  return {
    name,
    tag,
    config,
    table,
    slots: [],
    lastError,
    probeMs,
    pool,
    health,
    ejections: new Map(),
    former: new Map(),
  };
}

/**
 * Allocates the pools, runs a first round of health checks (so dead backends are known before
 * the first request), and starts `config.workers` serving threads on `port`.
 *
 * @param config The settings.
 * @param port The port the workers serve (already claimed).
 * @param workerUrl The worker module (`lib/control/worker.ts`).
 * @param ready Awaited after the first checks, before any worker binds the port (a takeover
 *   waits there for a usable backend); when it throws, the checks stop and it is rethrown.
 * @param launching Called as the first worker starts: from then on, a stop must drain.
 * @returns The supervisor, or the first worker's error reply.
 */
export async function startSupervisor(
  config: Config,
  port: number,
  workerUrl: URL,
  ready: ((sup: Supervisor) => Promise<void>) | null = null,
  launching: () => void = () => {},
): Promise<Supervisor | Extract<WorkerReply, { type: "error" }>> {
  // Sticky cookies are signed with one key that every worker (and every reload) shares.
  if (config.stickyKey === "" && effectivePools(config).some((p) => p.config.sticky === "cookie")) {
    config = { ...config, stickyKey: crypto.randomUUID() };
  }
  // So is the id in goround's Via, by which a request that comes back round a loop is known.
  if (config.instanceId === "") config = { ...config, instanceId: newInstanceId() };
  if (config.routes.length > ROUTE_CAPACITY) {
    throw new ValidationError(`more routes than the ${ROUTE_CAPACITY} goround keeps counters for`);
  }
  const pools = effectivePools(config).map(({ name, config: settings }) => {
    const run = createRun(name, settings, {
      workers: config.workers,
      named: config.pools.length > 0,
    });
    run.slots = settings.backends.map((_, slot) => slot);
    setMembers(run.pool, run.slots, settings.backends.map((b) => b.weight));
    run.health.update(targetsOf(run.table, run.slots), healthOptions(run, settings));
    return run;
  });
  await Promise.all(pools.map((run) => run.health.checkNow()));
  const sup: Supervisor = {
    config,
    pools,
    process: createPool(ROUTE_CAPACITY, { workers: config.workers }),
    routeSlots: new Map(),
    port,
    adminPort: 0,
    workers: [],
    started: Date.now(),
    reloads: { ok: 0, failed: 0, lastOk: 0 },
    stopping: false,
    changing: Promise.resolve(),
  };
  if (ready) {
    try {
      await ready(sup);
    } catch (error) {
      await Promise.all(pools.map((run) => run.health.stop()));
      throw error;
    }
  }
  launching();
  for (let index = 0; index < config.workers; index++) {
    const reply = await launch(sup, index, workerUrl);
    if (reply.type === "error") {
      await stopWorkers(sup, 0);
      await Promise.all(pools.map((run) => run.health.stop()));
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
  /** Backends added (with `pool/` before them when there are named pools). */
  readonly added: string[];
  /** Backends removed (named the same way). */
  readonly removed: string[];
  /** Pools added and removed. */
  readonly pools: { readonly added: string[]; readonly removed: string[] };
  /** Settles once the added backends' first health checks are done (each bounded by
   * `--health-timeout`). */
  readonly firstChecks: Promise<void>;
  /** What a worker could not apply (e.g. `worker 1: kept the old front end: ...`). */
  readonly problems: string[];
}

/** How one pool's backends change: its new slots and table, before anything is applied. */
interface PoolPlan {
  readonly run: PoolRun;
  readonly config: Config;
  readonly slots: number[];
  readonly table: (Backend | null)[];
  readonly added: string[];
  readonly removed: string[];
  /** Slots that stay members but take another backend (a full pool replaced). */
  readonly renewed: ReadonlySet<number>;
  /** Whether the pool is new with this change. */
  readonly fresh: boolean;
}

/** The slot `url` had before it was removed, if no other backend has taken it since. */
function formerSlot(run: PoolRun, url: string, taken: ReadonlySet<number>): number | undefined {
  const slot = run.former.get(url);
  if (slot === undefined || taken.has(slot) || run.table[slot] !== null) return undefined;
  return slot;
}

/** Drops what {@linkcode PoolRun.former} says of `slot`, which a backend takes now. */
function forget(run: PoolRun, slot: number): void {
  for (const [url, former] of run.former) if (former === slot) run.former.delete(url);
}

/** The most backends a pool holds: half its slots (see {@linkcode createRun}). */
function memberLimit(run: PoolRun): number {
  return run.pool.capacity / 2;
}

/** Backends that stay keep their slot; new ones take a free one, or when none is left (slots
 * still held by requests of backends removed before), the slot of one leaving. */
function planPool(run: PoolRun, config: Config, fresh: boolean): PoolPlan {
  const limit = memberLimit(run);
  if (config.backends.length > limit) {
    throw new ValidationError(`pool "${run.name}": more backends than the ${limit} a pool holds`);
  }
  const bySlot = new Map(run.slots.map((slot) => [run.table[slot]!.url, slot]));
  const urls = new Set(config.backends.map((b) => b.url));
  const vacating = run.slots.filter((slot) => !urls.has(run.table[slot]!.url));
  const taken = new Set<number>();
  const slots: number[] = [];
  const table = [...run.table];
  for (const backend of config.backends) {
    let slot = bySlot.get(backend.url) ?? formerSlot(run, backend.url, taken);
    if (slot === undefined) slot = freeSlot(run.pool, taken);
    if (slot < 0) slot = vacating.find((s) => !taken.has(s)) ?? -1;
    if (slot < 0) {
      throw new ValidationError(
        `pool "${run.name}": no slot is free (removed backends still finish requests in them)`,
      );
    }
    taken.add(slot);
    slots.push(slot);
    table[slot] = backend;
    forget(run, slot);
  }
  const added = config.backends.filter((b) => !bySlot.has(b.url)).map((b) => b.url);
  const removed = [...bySlot.keys()].filter((url) => !config.backends.some((b) => b.url === url));
  const renewed = new Set(vacating.filter((slot) => taken.has(slot)));
  return { run, config, slots, table, added, removed, renewed, fresh };
}

/** A pool's members during a change: the new ones have joined, and those leaving are still in
 * for the workers not yet told (a worker skips a member it does not know). */
interface Joining {
  readonly plan: PoolPlan;
  readonly joined: number[];
  readonly leaving: number[];
}

/** Before the workers are told: the new members join (down until probed, as Envoy's
 * ignore_new_hosts_until_first_hc, unless up in a pool a moment ago) beside those leaving. */
function joinPool(plan: PoolPlan, healthy: ReadonlySet<string>): Joining {
  const { run, config, slots, table, renewed: renew } = plan;
  // A slot that takes another backend joins as new; a worker not yet told skips it (its tenant).
  const joined = slots.filter((slot) => !run.slots.includes(slot) || renew.has(slot));
  const leaving = run.slots.filter((slot) => !slots.includes(slot));
  const up = new Set(joined.filter((slot) => healthy.has(table[slot]!.url)));
  const weights = config.backends.map((b) => b.weight);
  setMembers(
    run.pool,
    [...slots, ...leaving],
    [...weights, ...leaving.map((slot) => weightOf(run.pool, slot))],
    { alive: false, up, renew },
  );
  for (const slot of joined) {
    run.lastError.delete(slot); // a late report about the slot's former backend
    run.probeMs.delete(slot);
  }
  run.slots = slots;
  run.health.update(targetsOf(table, slots), healthOptions(run, config));
  return { plan, joined, leaving };
}

/** Once every worker has the new members: those leaving go. */
function leavePool({ plan, leaving }: Joining): void {
  if (leaving.length === 0) return;
  const { run, config, slots, table } = plan;
  setMembers(run.pool, slots, config.backends.map((b) => b.weight));
  for (const slot of leaving) {
    run.former.set(table[slot]!.url, slot);
    table[slot] = null;
    run.lastError.delete(slot);
    run.probeMs.delete(slot);
  }
}

/** The route slots the workers count in now (the running routes'). */
function runningSlots(sup: Pick<Supervisor, "config" | "routeSlots">): number[] {
  return sup.config.routes.map((route) => sup.routeSlots.get(route.name)!);
}

function sameRoutes(
  a: Config["routes"],
  b: Config["routes"],
  slotsA: readonly number[],
  slotsB: readonly number[],
): boolean {
  return JSON.stringify(a) === JSON.stringify(b) && slotsA.join() === slotsB.join();
}

/** Sends `message` to every worker; what any could not apply. */
async function tellWorkers(sup: Supervisor, message: UpdateMessage): Promise<string[]> {
  const replies = await Promise.all(sup.workers.map((serving) => ask(serving, message)));
  return replies.flatMap((reply, index) =>
    reply.type === "updated" && reply.problem ? [`worker ${index}: ${reply.problem}`] : []
  );
}

/**
 * Makes `next` the running settings: pools that stay keep their memory, and in them backends
 * that stay keep their slot, state and counters; new backends take a free slot and join down,
 * probed at once, so they take traffic only once their first health check passes; removed ones
 * stop getting requests and finish those in flight. New pools start with every backend down
 * until probed (one up in another pool before starts up); removed pools finish their requests.
 * Each worker takes the new routes and members in one step (it skips a member it was not told
 * of), so a request meets the old settings or the new, never a mix; when routes move or members
 * leave, the new members' first probes come first. The admin API, a reload and DNS discovery all
 * change the pools through here.
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
    const config = keptIdentity(sup.config, wanted);
    const listening = ownListeners(boundAdmin(sup, config), {
      hostname: sup.config.listen.hostname,
      port: sup.port,
    });
    const effective = effectivePools(config);
    for (const pool of effective) {
      const own = ownBackend(pool.config.backends, listening);
      if (own) throw new ValidationError(ownAddressMessage(own, listening));
    }
    if (config.routes.length > ROUTE_CAPACITY) {
      throw new ValidationError(
        `more routes than the ${ROUTE_CAPACITY} goround keeps counters for`,
      );
    }
    const plans = effective.map(({ name, config: settings }) => {
      const run = poolNamed(sup, name);
      return run ? planPool(run, settings, false) : planPool(
        createRun(name, settings, { workers: config.workers, named: config.pools.length > 0 }),
        settings,
        true,
      );
    });
    const gone = sup.pools.filter((run) => !plans.some((plan) => plan.run === run));
    const named = config.pools.length > 0;
    const label = (plan: PoolPlan, url: string) => named ? `${plan.run.name}/${url}` : url;
    const before = { routes: sup.config.routes, slots: runningSlots(sup) };
    // Backends up before this change, in any pool (also the removed ones).
    const healthy = new Set(
      [...plans.map((plan) => plan.run), ...gone].flatMap((run) =>
        run.slots.filter((slot) => isUsable(run.pool, slot)).map((slot) => run.table[slot]!.url)
      ),
    );
    // Set before the workers are told: a worker restarted meanwhile (after a crash) starts from
    // these.
    sup.config = config;
    for (const plan of plans) {
      plan.run.config = plan.config;
      plan.run.table = plan.table;
    }
    sup.pools = plans.map((plan) => plan.run);
    const { slots, fresh } = routeSlotsOf(sup, config);
    const joinings = plans.map((plan) => joinPool(plan, healthy));
    const checks = joinings.flatMap(({ plan, joined }) =>
      joined.length ? [plan.run.health.checkNow(joined)] : []
    );
    // Each worker swaps routes and members in one step, so no request meets a mix. When routes
    // move or members leave, the new ones get their first probe (bounded by --health-timeout)
    // first: the requests they take over are not answered 503 while it runs.
    const moving = gone.length > 0 ||
      joinings.some((j) => j.leaving.length > 0 || j.plan.renewed.size > 0) ||
      !sameRoutes(before.routes, config.routes, before.slots, slots);
    if (moving) await Promise.all(checks);
    const update: UpdateMessage = {
      type: "update",
      config,
      pools: wiredPools(sup.pools),
      routeSlots: slots,
    };
    const problems = await tellWorkers(sup, update);
    for (const joining of joinings) leavePool(joining);
    for (const slot of fresh) resetRouteHits(sup.process, slot);
    for (const run of gone) {
      for (const timer of run.ejections.values()) clearTimeout(timer);
      void run.health.stop();
    }
    return {
      added: plans.flatMap((plan) => plan.added.map((url) => label(plan, url))),
      removed: [
        ...plans.flatMap((plan) => plan.removed.map((url) => label(plan, url))),
        ...gone.flatMap((run) => run.slots.map((slot) => `${run.name}/${run.table[slot]!.url}`)),
      ],
      pools: {
        added: plans.filter((plan) => plan.fresh).map((plan) => plan.run.name),
        removed: gone.map((run) => run.name),
      },
      firstChecks: Promise.all(checks).then(() => {}),
      problems,
    };
  });
}

/** The running process's identity kept through a change: its Via id, and its sticky key
 * (an empty key keeps the running one; sticky turned on by a reload gets a random one). */
function keptIdentity(running: Config, wanted: Config): Config {
  const sticky = effectivePools(wanted).some((pool) => pool.config.sticky === "cookie");
  const stickyKey = wanted.stickyKey || running.stickyKey || (sticky ? crypto.randomUUID() : "");
  return { ...wanted, stickyKey, instanceId: running.instanceId };
}

/**
 * Changes one pool's settings (its backends: the admin API, DNS discovery) and applies them.
 *
 * @param sup The supervisor.
 * @param name The pool.
 * @param change Makes the pool's new settings from its running ones.
 * @returns What changed.
 */
export function changePool(
  sup: Supervisor,
  name: string,
  change: (pool: Config) => Config,
): Promise<BackendChange> {
  return applyConfig(sup, (running) => {
    const pool = effectivePools(running).find((p) => p.name === name);
    if (!pool) throw new ValidationError(`no pool "${name}"`);
    return withPool(running, name, change(pool.config));
  });
}

/**
 * Adds a backend (admin API): the running settings with one more backend. Resolves once its
 * first health check is done, so its state then says whether it takes traffic.
 *
 * @param sup The supervisor.
 * @param name The pool.
 * @param url The backend's URL.
 * @returns The new backend's slot, or -1 when another change removed it meanwhile.
 * @throws {ValidationError} For a bad URL, or when it is already in the pool.
 */
export async function addBackend(sup: Supervisor, name: string, url: string): Promise<number> {
  const backend = parseBackend(url);
  const change = await changePool(sup, name, (running) => {
    if (running.backends.some((b) => b.url === backend.url)) {
      throw new ValidationError(`${backend.url} is already in the pool`);
    }
    return { ...running, backends: [...running.backends, backend] };
  });
  await change.firstChecks;
  // -1: another change removed it while its first check ran.
  const run = poolNamed(sup, name);
  return run?.slots.find((slot) => run.table[slot]?.url === backend.url) ?? -1;
}

/**
 * Removes a backend (admin API); its requests in flight finish.
 *
 * @param sup The supervisor.
 * @param name The pool.
 * @param slot The backend's id.
 * @returns Whether it was in the pool.
 */
export async function removeBackend(sup: Supervisor, name: string, slot: number): Promise<boolean> {
  let found = false;
  await changePool(sup, name, (running) => {
    const run = poolNamed(sup, name);
    const backend = run?.slots.includes(slot) ? run.table[slot] : null;
    if (!run || !backend) return running;
    if (run.slots.length === 1) throw new ValidationError("the last backend cannot be removed");
    found = true;
    return { ...running, backends: running.backends.filter((b) => b.url !== backend.url) };
  });
  return found;
}

/**
 * Stops new requests to a backend (`draining`) or lets them go to it again (`enabled`).
 *
 * @param run The pool.
 * @param slot The backend's id.
 * @param drain Whether to drain.
 * @returns Whether it is in the pool.
 */
export function setDraining(run: PoolRun, slot: number, drain: boolean): boolean {
  const backend = run.slots.includes(slot) ? run.table[slot] : null;
  if (!backend) return false;
  setAdminState(run.pool, slot, drain ? "draining" : "enabled");
  logLine(`backend ${backend.url}${run.tag} ${drain ? "draining" : "enabled"} (admin)`);
  return true;
}

/** A backend's state as the admin API shows it. */
export type BackendState = "up" | "down" | "ejected" | "draining" | "drained";

/**
 * A backend's state: `draining` while it still has requests in flight after a drain, then
 * `drained`; otherwise the health view, `down`, then passive ejection, `ejected`; else `up`.
 *
 * @param run The pool.
 * @param slot The backend's id.
 * @returns The state.
 */
export function backendState(run: PoolRun, slot: number): BackendState {
  if (adminState(run.pool, slot) === "draining") {
    return inFlight(run.pool, slot) > 0 ? "draining" : "drained";
  }
  if (!isAlive(run.pool, slot)) return "down";
  return ejectedUntil(run.pool, slot) > 0 ? "ejected" : "up";
}

/**
 * Unix seconds of the backend's last up/down transition.
 *
 * @param run The pool.
 * @param slot The backend's id.
 * @returns Seconds, or 0 when it never changed.
 */
export function changedAt(run: PoolRun, slot: number): number {
  return lastChange(run.pool, slot);
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
  for (const run of sup.pools) {
    for (const timer of run.ejections.values()) clearTimeout(timer);
    run.ejections.clear();
  }
  const drained = await stopWorkers(sup, sup.config.drainTimeout);
  await Promise.all(sup.pools.map((run) => run.health.stop()));
  return drained;
}
