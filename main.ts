/**
 * goround: an HTTP reverse proxy and round-robin load balancer.
 *
 * `main.ts` only wires things: it reads the settings, claims the port, starts the supervisor
 * (shared pool, health checks, one serving worker per core) and the admin listener, prints the
 * banner, and turns signals into actions: SIGHUP re-reads the settings and the files they name
 * (`lib/config/reload_plan.ts` decides what applies), SIGTERM/SIGINT drain and exit. With `--takeover` it
 * starts alongside a running goround on the same port and asks it, through its admin API, to
 * hand over (`POST /takeover`: the same drain). Everything else is in
 * `lib/`.
 *
 * ```sh
 * deno run --unstable-net --allow-net --allow-read=. --allow-env='GOROUND_*' main.ts --help
 * goround check --config goround.json    # validate a config file and print the settings
 * ```
 *
 * @module
 */

import {
  type Admin,
  type Handover,
  readinessOf,
  serveAdmin,
  type Successor,
} from "./lib/admin/api.ts";
import { type Backend, type Config, envName, FLAGS, type Listen } from "./lib/config/config.ts";
import { type Command, parseCommandLine } from "./lib/config/command_line.ts";
import { describeConfig } from "./lib/config/help.ts";
import { helpText } from "./lib/config/help.ts";
import {
  type Discovery,
  DiscoveryError,
  resolveBackends,
  startDiscovery,
} from "./lib/control/discovery.ts";
import { denoEnv, unknownVariables, unknownVariableWarning } from "./lib/config/env_check.ts";
import { ConfigError, ValidationError } from "./lib/errors.ts";
import {
  bannerLine,
  flushRepeats,
  logLine,
  logOutcome,
  REPEAT_WINDOW_MS,
  setLogFormat,
} from "./lib/log.ts";
import {
  isOwnListener,
  ownAddressMessage,
  ownBackend,
  type OwnListener,
  ownListeners,
} from "./lib/config/own_address.ts";
import { readPemFiles } from "./lib/config/pem_files.ts";
import { isAlive } from "./lib/balance/pool.ts";
import { describeReload, planReload } from "./lib/config/reload_plan.ts";
import { effectivePools, withPool } from "./lib/config/pools.ts";
import {
  applyConfig,
  changePool,
  drainAndStop,
  type PoolRun,
  startSupervisor,
  type Supervisor,
} from "./lib/control/supervisor.ts";
import {
  bindWhenFree,
  findPredecessor,
  NothingListens,
  requestHandover,
  successorServes,
  type TakeoverTarget,
} from "./lib/control/takeover.ts";
import { versionLines } from "./lib/version.ts";

/** Exit status for a configuration error (bad flag, variable, file, or a port that is taken). */
export const EXIT_CONFIG = 2;

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

function loadConfig(args: readonly string[]): Command {
  return parseCommandLine(
    args,
    readEnv,
    navigator.hardwareConcurrency,
    (path) => Deno.readTextFileSync(path),
  );
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
function claimPort(listen: Listen, flag: string): number {
  const where = displayAddress(listen.hostname, listen.port);
  try {
    const listener = Deno.listen({ hostname: listen.hostname, port: listen.port });
    const port = listener.addr.port;
    listener.close();
    return port;
  } catch (error) {
    if (error instanceof Deno.errors.AddrInUse) {
      fail(`${flag}: "${where}" is in use: expected a free port`);
    }
    if (error instanceof Deno.errors.AddrNotAvailable) {
      fail(`${flag}: "${where}" is not an address of this machine: expected a local interface`);
    }
    if (error instanceof Deno.errors.PermissionDenied) {
      fail(`${flag}: "${where}" needs privileges: expected a port above 1023`);
    }
    throw error;
  }
}

function hostPort(hostname: string, port: number): string {
  return hostname.includes(":") ? `[${hostname}]:${port}` : `${hostname}:${port}`;
}

/** ANSI colour, only when stderr is a terminal. */
function paint(code: number, text: string): string {
  return Deno.stderr.isTerminal() ? `\x1b[${code}m${text}\x1b[0m` : text;
}

function banner(sup: Supervisor, admin: Admin | null): string[] {
  const { config } = sup;
  const backendsOf = (run: PoolRun) =>
    run.slots.map((slot) => {
      const url = run.table[slot]!.url;
      return isAlive(run.pool, slot)
        ? `${url} ${paint(32, "up")}`
        : `${url} ${paint(31, `down (${run.lastError.get(slot)?.reason})`)}`;
    }).join(", ");
  const pools = config.pools.length === 0
    ? [`  backends: ${backendsOf(sup.pools[0]!)}`]
    : sup.pools.map((run) => `  pool ${run.name}: ${backendsOf(run)}`);
  const routes = config.routes.length === 0 ? [] : [`  routes: ${config.routes.length}`];
  const [, settings, health] = describeConfig(config);
  return [
    `Load Balancer started at ${displayAddress(config.listen.hostname, sup.port)}${
      config.tlsCert ? " (HTTPS)" : ""
    }`,
    ...pools,
    ...routes,
    settings!,
    health!,
    `  admin: ${admin ? `http://${hostPort(config.admin!.hostname, admin.port)}/` : "off"}`,
  ];
}

/** Starts and stops DNS discovery (a reload restarts it when its settings change). */
interface DnsFollower {
  readonly start: () => void;
  readonly stop: () => Promise<void>;
}

/**
 * SIGHUP: re-reads the settings and every file they name, and applies what can change while
 * running; the rest is named in the one log line as taking effect on restart. A setting or
 * file that is invalid leaves everything as it was, and says why in one line.
 */
async function reload(sup: Supervisor, dns: DnsFollower): Promise<void> {
  if (sup.stopping) return; // draining for exit: nothing new starts
  let read: Config;
  try {
    const command = loadConfig(Deno.args);
    if (command.kind !== "run") return;
    read = readPemFiles(command.config, (path) => Deno.readTextFileSync(path));
  } catch (error) {
    if (!(error instanceof ConfigError)) throw error;
    sup.reloads.failed++;
    logOutcome(`reload failed, keeping the running config: ${error.message}`);
    return;
  }
  const plan = planReload(sup.config, read);
  // Discovery stops first, so an answer for the old name cannot land after the new settings.
  if (plan.rediscover) await dns.stop();
  try {
    const { added, removed, problems } = await applyConfig(sup, plan.config);
    sup.reloads.ok++;
    sup.reloads.lastOk = Date.now();
    setLogFormat(sup.config.logFormat);
    logOutcome(describeReload(plan, {
      file: sup.config.configFile,
      backends: sup.pools.reduce((sum, run) => sum + run.slots.length, 0),
      added,
      removed,
      problems,
    }));
  } catch (error) {
    if (!(error instanceof ValidationError)) throw error;
    sup.reloads.failed++;
    logOutcome(`reload failed, keeping the running config: ${error.message}`);
  } finally {
    if (plan.rediscover) dns.start();
  }
}

/** Reads the PEM files named by --tls-cert, --tls-key and --backend-ca (exit 2 when it cannot). */
function readPems(config: Config): Config {
  try {
    return readPemFiles(config, (path) => Deno.readTextFileSync(path));
  } catch (error) {
    if (error instanceof ConfigError) fail(error.message);
    throw error;
  }
}

/** The --redirect-http listener: every request gets a 308 to the same URL over HTTPS. Shared
 * (`reusePort`) like the proxy port, so a --takeover successor can bind it too. */
function serveRedirect(listen: Listen, httpsPort: number): Deno.HttpServer {
  try {
    return Deno.serve(
      { hostname: listen.hostname, port: listen.port, reusePort: true, onListen: () => {} },
      (req) => {
        const url = new URL(req.url);
        const host = (req.headers.get("host") ?? url.host).replace(/:\d+$/, "");
        const port = httpsPort === 443 ? "" : `:${httpsPort}`;
        // 308 keeps the method and body (RFC 9110 §15.4.9), unlike 301.
        return new Response(null, {
          status: 308,
          headers: { location: `https://${host}${port}${url.pathname}${url.search}` },
        });
      },
    );
  } catch (error) {
    if (error instanceof Deno.errors.AddrInUse) {
      fail(
        `--redirect-http: "${
          displayAddress(listen.hostname, listen.port)
        }" is in use: expected a free port`,
      );
    }
    throw error;
  }
}

/** A DNS answer minus goround's own address (a name that also resolves to this machine), each
 * left out with one line. */
function withoutSelf(backends: readonly Backend[], listening: readonly OwnListener[]): Backend[] {
  const kept: Backend[] = [];
  for (const backend of backends) {
    if (!isOwnListener(backend, listening)) kept.push(backend);
    else logLine(`discovery: ${ownAddressMessage(backend, listening)}; left out of the pool`);
  }
  return kept;
}

/** With --discover (or a pool's `discover`), the first DNS answer is the pool (goround does not
 * start without one). Returns each discovering pool's first answer, by name. */
async function discoverBackends(
  config: Config,
  listening: readonly OwnListener[],
): Promise<{ config: Config; answers: Map<string, Backend[]> }> {
  const answers = new Map<string, Backend[]>();
  for (const pool of effectivePools(config)) {
    const spec = pool.config.discover;
    if (!spec) continue;
    const flag = config.pools.length === 0 ? "--discover" : `pool ${pool.name}: discover`;
    try {
      const answer = await resolveBackends(spec, {
        ...(pool.config.discoverNameServer ? { nameServer: pool.config.discoverNameServer } : {}),
      });
      const backends = withoutSelf(answer, listening);
      if (backends.length === 0) {
        fail(`${flag}: every address DNS gave is goround's own: expected other servers`);
      }
      config = withPool(config, pool.name, { ...pool.config, backends });
      answers.set(pool.name, answer);
    } catch (error) {
      if (error instanceof DiscoveryError) fail(`${flag}: ${error.message}`);
      throw error;
    }
  }
  return { config, answers };
}

/** Follows DNS for one pool: each changed answer becomes its backends, as a reload would make
 * them, less any address of goround's own. `answer` is the first answer, already applied. */
function followDns(sup: Supervisor, run: PoolRun, answer: readonly Backend[]): Discovery | null {
  const { discover, discoverInterval, discoverNameServer } = run.config;
  if (!discover) return null;
  const listening = ownListeners(sup.config, {
    hostname: sup.config.listen.hostname,
    port: sup.port,
  });
  const named = sup.config.pools.length === 0 ? "" : ` (pool ${run.name})`;
  return startDiscovery(discover, {
    interval: discoverInterval,
    // A lookup may take as long as the interval (between 1 s and 5 s), so a DNS server that is
    // gone is noticed in about one round.
    timeout: Math.max(1000, Math.min(5000, discoverInterval)),
    ...(discoverNameServer ? { nameServer: discoverNameServer } : {}),
    initial: answer,
    onChange: async (answer) => {
      const backends = withoutSelf(answer, listening);
      if (backends.length === 0) {
        logLine(
          `discovery${named}: every address DNS gave is goround's own; keeping the last backends`,
        );
        return;
      }
      const { added, removed } = await changePool(sup, run.name, (pool) => ({ ...pool, backends }));
      logLine(
        `discovery${named}: ${backends.length} backends` +
          (added.length ? `, added ${added.join(", ")}` : "") +
          (removed.length ? `, removed ${removed.join(", ")}` : ""),
      );
    },
    onError: (message) =>
      logLine(`discovery${named} failed, keeping the last good backends: ${message}`),
  });
}

/** Follows DNS for every pool that asks for it. */
function followAllDns(sup: Supervisor, answers: ReadonlyMap<string, Backend[]>): Discovery[] {
  return sup.pools.flatMap((run) => {
    const discovery = followDns(sup, run, answers.get(run.name) ?? run.config.backends);
    return discovery ? [discovery] : [];
  });
}

/** With --takeover, the running goround to hand over from (exit 2 when there is none). */
async function predecessorOf(config: Config): Promise<TakeoverTarget | null> {
  if (!config.takeover || !config.admin) return null;
  const target = { listen: config.listen, admin: config.admin, token: config.adminToken };
  try {
    await findPredecessor(target);
  } catch (error) {
    // No goround runs: with the port free, this is a first start (the same command always works).
    if (error instanceof NothingListens && portIsFree(config.listen)) {
      logLine(`takeover: nothing runs at --admin ${localAdmin(config.admin)}: starting afresh`);
      return null;
    }
    if (error instanceof ConfigError) fail(error.message);
    throw error;
  }
  return target;
}

/** Whether nothing holds the port (another error, such as a bad address, is left to claimPort). */
function portIsFree(listen: Listen): boolean {
  try {
    Deno.listen({ hostname: listen.hostname, port: listen.port }).close();
    return true;
  } catch (error) {
    return !(error instanceof Deno.errors.AddrInUse);
  }
}

/**
 * Asks the running goround to hand over (this process serves the port already), then binds
 * the admin port once it has let go of it. A refusal drains this process and exits 2.
 */
async function takeOver(
  sup: Supervisor,
  target: TakeoverTarget,
  serve: (listen: Listen) => Admin,
  signals: Signals,
): Promise<Admin | null> {
  let handover: Awaited<ReturnType<typeof requestHandover>>;
  signals.hold = true;
  try {
    handover = await requestHandover(target, sup.config.instanceId);
  } catch (error) {
    if (!(error instanceof ConfigError)) throw error;
    await drainAndStop(sup);
    fail(error.message);
  } finally {
    signals.hold = false;
  }
  if (signals.held !== null) {
    logLine(
      `takeover: ${signals.held} came while asking, and the running goround lets go: this one ` +
        `serves the port, the only one now; send ${signals.held} again to stop it`,
    );
  }
  if (handover.drainTimeout === null) {
    logLine("takeover: the running goround is stopping already: this one serves the port alone");
  } else {
    logLine(
      `takeover: pid ${handover.pid ?? "?"} hands over; it finishes its requests and exits ` +
        `(at most ${handover.drainTimeout} ms)`,
    );
  }
  // It closes its admin listener first; by the end of its drain it has exited. One stopping
  // already has not said how long its drain is: wait for it as long as it takes.
  const admin = await bindWhenFree(() => serve(target.admin), {
    timeout: handover.drainTimeout === null ? Infinity : handover.drainTimeout + 5000,
  });
  if (!admin) {
    logLine(`takeover: --admin ${localAdmin(target.admin)} is still in use: serving without it`);
  }
  return admin;
}

/** How often the wait for a usable backend looks, ms. */
const READY_POLL = 25;

/**
 * Waits until one backend of this process is usable, one more round of health checks at most
 * (the first ran at start): a successor with none would answer every request 503.
 *
 * @throws {ConfigError} When none is: the running goround keeps serving.
 */
async function waitForUsableBackend(sup: Supervisor): Promise<void> {
  const deadline = Date.now() + sup.config.healthInterval + sup.config.healthTimeout;
  while (!readinessOf(sup).ready) {
    if (Date.now() >= deadline) {
      const states = /\((.*)\)$/.exec(readinessOf(sup).reason)?.[1];
      const errors = sup.pools.flatMap((run) => [...run.lastError.values()]);
      const why = [states, errors[0]?.reason].filter(Boolean).join("; ");
      throw new ConfigError(
        `--takeover: this goround has no usable backend${why ? ` (${why})` : ""}: ` +
          "the running goround keeps serving; expected a backend that passes its health check",
      );
    }
    await new Promise((resolve) => setTimeout(resolve, READY_POLL));
  }
}

function localAdmin(listen: Listen): string {
  return displayAddress(listen.hostname, listen.port);
}

/** What the signal handlers act on once goround is running. */
interface Running {
  readonly sup: Supervisor;
  /** Set once bound (after a takeover, once the predecessor let go of the port). */
  admin: Admin | null;
  readonly redirect: Deno.HttpServer | null;
  readonly dns: DnsFollower;
  readonly flusher: ReturnType<typeof setInterval>;
}

/** The signal handlers' state, and the one drain that SIGTERM, SIGINT and a takeover share. */
interface Signals {
  running: Running | null;
  /** While this process asks the running goround to hand over: a stop waits in `held`, since
   * draining now would leave no one serving should the other agree. */
  hold: boolean;
  /** The signal that came while `hold` was on. */
  held: string | null;
  /** Whether workers are being started: one may serve already, so a stop must wait for
   * `running`, then drain (exiting at once would cut its requests). */
  launching: boolean;
  /** The signal that came while `launching`, before `running` was set. */
  pending: string | null;
  /** Drains and exits. `handover`: a successor takes over, so the admin port is let go of first
   * (it binds it meanwhile); else the admin API answers through the drain, so a `--takeover`
   * started meanwhile finds a goround stopping already rather than none. */
  readonly stop: (why: string, handover?: boolean) => Promise<void>;
  readonly stopping: () => boolean;
}

/** How long a drain's end waits for admin requests still under way, ms. */
const ADMIN_CLOSE_MS = 1000;

/** Waits for `done` to settle, `ms` at most. */
async function settled(done: Promise<unknown> | undefined, ms: number): Promise<void> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const late = new Promise<void>((resolve) => timer = setTimeout(resolve, ms));
  await Promise.race([done?.catch(() => {}), late]);
  clearTimeout(timer);
}

/**
 * Handles SIGINT, SIGTERM and SIGHUP from the start: registering a signal takes a file
 * descriptor, which a flood of connections to the workers could leave none of later. A signal
 * before goround runs exits at once (there is nothing to drain).
 */
function handleSignals(): Signals {
  let stopping = false;
  const state: Signals = {
    running: null,
    hold: false,
    held: null,
    launching: false,
    pending: null,
    stopping: () => stopping,
    stop: async (why, handover = false) => {
      if (state.hold) {
        if (state.held === null) {
          logLine(`${why} while asking the running goround to hand over: waiting for its answer`);
        }
        state.held ??= why;
        return;
      }
      if (stopping) return;
      const running = state.running;
      if (running === null) {
        if (!state.launching) Deno.exit(0); // nothing serves yet: nothing to drain
        state.pending ??= why;
        return;
      }
      stopping = true;
      const { sup, admin, redirect, dns, flusher } = running;
      logLine(
        `${why}: draining ${sup.workers.length} workers (at most ${sup.config.drainTimeout} ms)`,
      );
      const closing = handover ? admin?.shutdown() : undefined;
      await dns.stop();
      const drained = await drainAndStop(sup);
      // An admin request still under way (a body that never comes) is cut, not waited for.
      await settled(closing ?? admin?.shutdown(), ADMIN_CLOSE_MS);
      await redirect?.shutdown();
      clearInterval(flusher);
      flushRepeats(Infinity);
      logLine(drained ? "stopped" : "stopped (drain timeout: some requests were cut off)");
      Deno.exit(0);
    },
  };
  for (const signal of ["SIGINT", "SIGTERM"] as const) {
    Deno.addSignalListener(signal, () => void state.stop(signal));
  }
  // Reloads run one after another, each planned against the settings the one before left.
  let reloading = Promise.resolve();
  Deno.addSignalListener("SIGHUP", () => {
    const running = state.running;
    if (running === null) return;
    reloading = reloading.then(() => reload(running.sup, running.dns)).catch((error) =>
      logLine(`reload failed (a bug; the running config may be partly changed): ${error.stack}`)
    );
  });
  return state;
}

async function run(given: Config, workerUrl: URL): Promise<void> {
  setLogFormat(given.logFormat);
  const signals = handleSignals();
  const target = await predecessorOf(given);
  // Taking over, the running goround holds these ports: the proxy and redirect ports are shared
  // with it (SO_REUSEPORT), the admin port is handed over.
  const port = target ? given.listen.port : claimPort(given.listen, "--listen");
  const listening = ownListeners(given, { hostname: given.listen.hostname, port });
  // With --listen :0 the port is known only now (a fixed one was checked with the flags).
  for (const pool of effectivePools(given)) {
    const own = ownBackend(pool.config.backends, listening);
    const where = given.pools.length === 0 ? "--backends" : `pool ${pool.name}: backends`;
    if (own && !pool.config.discover) fail(`${where}: ${ownAddressMessage(own, listening)}`);
  }
  const { config, answers } = await discoverBackends(readPems(given), listening);
  if (!target && config.admin) claimPort(config.admin, "--admin");
  if (!target && config.redirectHttp) claimPort(config.redirectHttp, "--redirect-http");
  // Taking over, no worker binds the port before a backend passes its check: a successor with
  // none would answer 503 beside the running goround.
  let started: Awaited<ReturnType<typeof startSupervisor>>;
  try {
    started = await startSupervisor(
      config,
      port,
      workerUrl,
      target ? waitForUsableBackend : null,
      () => (signals.launching = true),
    );
  } catch (error) {
    if (error instanceof ConfigError) fail(error.message);
    throw error;
  }
  if (!("pools" in started)) {
    if (started.name === "AddrInUse") {
      fail(`--listen: port ${port} is in use: expected a free port`);
    }
    throw new Error(`a worker failed to start: ${started.name}: ${started.message}`);
  }
  const sup = started;
  let discovery = followAllDns(sup, answers);
  const dns: DnsFollower = {
    start: () => (discovery = followAllDns(sup, new Map())),
    stop: async () => {
      await Promise.all(discovery.map((d) => d.stop()));
      discovery = [];
    },
  };
  const running: Running = {
    sup,
    admin: null,
    redirect: config.redirectHttp ? serveRedirect(config.redirectHttp, port) : null,
    dns,
    // The count of a flood of repeated log lines is written once its second is over.
    flusher: setInterval(() => flushRepeats(), REPEAT_WINDOW_MS),
  };
  signals.running = running;
  const onTakeover = async (successor: Successor) => {
    if (signals.stopping()) return { status: 409, message: "already stopping" };
    // This goround's own id is in every Via it sends: its own 508 would pass the probe below.
    if (successor.instance === sup.config.instanceId) {
      logLine(
        `takeover by pid ${successor.pid ?? "?"} refused: it names this goround's own instance`,
      );
      return {
        status: 409,
        message: "that instance is this goround: expected the successor's own",
      };
    }
    const probe = {
      listen: { hostname: sup.config.listen.hostname, port },
      tls: sup.config.tlsCert !== "",
      own: sup.config.instanceId,
    };
    if (!(await successorServes(probe, successor.instance))) {
      logLine(
        `takeover by pid ${successor.pid ?? "?"} refused: no goround with instance ` +
          `${successor.instance} answers on port ${port}`,
      );
      return {
        status: 409,
        message: `no goround with instance ${successor.instance} answers on port ${port}: ` +
          "a successor must serve the port before this goround hands over",
      };
    }
    // After the 202 is on its way.
    setTimeout(() => void signals.stop(`takeover by pid ${successor.pid ?? "?"}`, true));
    return { pid: Deno.pid, drainTimeout: sup.config.drainTimeout } satisfies Handover;
  };
  const serve = (listen: Listen) => serveAdmin(sup, listen, { onTakeover });
  if (signals.pending !== null) {
    void signals.stop(signals.pending); // a signal while the workers started: drain them now
    return;
  }
  if (target) {
    // Stopped before asking (a signal while starting): it drains, and the other goes on serving.
    if (signals.stopping()) return;
    running.admin = await takeOver(sup, target, serve, signals);
  } else if (config.admin) running.admin = serve(config.admin);
  sup.adminPort = running.admin?.port ?? 0;
  // stdout carries only the access log (so `| jq .` reads it); the banner is operational.
  for (const line of banner(sup, running.admin)) bannerLine(line);
  warnUnknownVariables();
}

/** Warns of each `GOROUND_*` variable that is not a setting (a typo), naming the closest. */
function warnUnknownVariables(): void {
  const settings = FLAGS.map((flag) => envName(flag.name));
  for (const unknown of unknownVariables(settings, denoEnv())) {
    logLine(unknownVariableWarning(unknown));
  }
}

/** `goround check --config FILE [flags]`: validates the settings and prints them. */
function check(args: readonly string[]): void {
  let command: Command;
  try {
    command = loadConfig(args);
  } catch (error) {
    if (error instanceof ConfigError) fail(error.message);
    throw error;
  }
  if (command.kind !== "run") return;
  const { config } = command;
  warnUnknownVariables();
  console.log(`${config.configFile || "the flags"}: valid`);
  const shown = {
    ...config,
    trustedProxies: config.trustedProxies.map((c) => c.text),
    adminToken: config.adminToken ? "(set)" : "",
  };
  console.log(JSON.stringify(shown, null, 2));
}

/**
 * Runs goround with the process's arguments and environment.
 *
 * @param options `workerUrl`: the serving worker's module (a test fixture may wrap the real
 *   one). @default {lib/control/worker.ts}
 * @returns When the proxy is serving (it keeps running until a signal).
 */
export async function main(
  options: { readonly workerUrl?: URL } = {},
): Promise<void> {
  if (Deno.args[0] === "check") return check(Deno.args.slice(1));
  let command: Command;
  try {
    command = loadConfig(Deno.args);
  } catch (error) {
    if (error instanceof ConfigError) fail(error.message);
    throw error;
  }
  if (command.kind === "help") {
    console.log(helpText());
    return;
  }
  if (command.kind === "version") {
    for (const line of versionLines()) console.log(line);
    return;
  }
  await run(
    command.config,
    options.workerUrl ?? new URL("./lib/control/worker.ts", import.meta.url),
  );
}

if (import.meta.main) await main();
