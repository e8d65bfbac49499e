/**
 * `deno task bench`: goround against a direct hit and against nginx, HAProxy and Caddy, each
 * round-robin over the same three fast backends, measured with `wrk` on loopback, one after
 * another, reported as Markdown on stdout (progress goes to stderr).
 *
 * ```sh
 * deno task bench            # about 2 minutes: every scenario, every target, 1 s + 2 s each
 * deno task bench --quick    # CI, about 40 s; exit status 1 if goround misbehaves
 * deno task bench --full     # README figures: 2 s warm-up + 10 s each, about 8 minutes
 * deno task bench --port 18000 --scenarios get,close --targets direct,goround,nginx
 * ```
 *
 * `--quick` runs every scenario against the direct hit and goround, but only the small GETs
 * against goround `--engine deno` and the peers, with one 1 s warm-up per target (before its
 * first scenario) instead of one per measurement.
 *
 * What it does:
 *
 * 1. Installs what is missing (`wrk`, `nginx-light`, `haproxy`, `caddy`, and `procps` for `ps`)
 *    with `apt-get update` and `apt-get install -y`, one package at a time; tools already there
 *    are left alone. A peer that still is not there is reported as "not installed"; without
 *    `wrk` or `nginx` nothing can run and the script exits 1.
 * 2. Starts the backends: one nginx with one worker process serving three ports (free ports
 *    unless `--backend-ports` names them), `GET /` → `Hello from Server <port>`, `GET /1m` → a
 *    1 MiB file, `POST /upload` → reads the whole body (either framing), then 200.
 * 3. For each target in turn, all on `127.0.0.1:<--port>` (default 8000): the direct hit
 *    (`wrk` to the first backend: the ceiling), goround (`main.ts --workers <cores>`), goround
 *    with `--engine deno` (its `Deno.serve` front end), nginx, HAProxy and Caddy: start it,
 *    wait until it answers, and for each scenario send one probe request, run `wrk` for the
 *    warm-up, then run `wrk --latency` for the measurement while sampling the resident memory
 *    of the target's whole process tree every 100 ms; then stop it (the whole tree). The
 *    peers' settings are in `bench_support/configs.ts` (nginx also streams request bodies,
 *    `proxy_request_buffering off`, as goround does).
 * 4. Prints one table per scenario: req/s, MiB/s for the big bodies, p50/p90/p99 latency,
 *    errors (`wrk`'s socket errors, timeouts included, plus responses of 400 and above), peak
 *    RSS, and goround's req/s and p99 ratios to every row.
 *
 * The scenarios (all `wrk -t2 -c64` by default): `get` (small GETs on keep-alive
 * connections), `close` (`Connection: close`, a new connection per request), `download-1m`,
 * `post-64k` (64 KiB body with `Content-Length`), `upload-1m` (1 MiB with `Content-Length`),
 * `upload-1m-chunked` (1 MiB chunked, no `Content-Length`).
 *
 * The verdict (exit status 1 on failure, in every mode): issue #3 says the CI run "fails only if
 * goround errors or falls below half of its own direct-hit ceiling ratio (a sanity floor, not a
 * timing test)". It is read here as: fail if goround (either front end) does not start, has any
 * error in any run (warm-up included), or if goround's small-GET req/s is below
 * `--floor` (default 0.2: about half the 0.4-0.6 that goround measures here) times the direct hit's req/s. Peers never fail the run. Change the
 * floor with `--floor` (or `DEFAULT_FLOOR` below) if the intended rule is different.
 *
 * Every process it starts is stopped at the end, also on error and on Ctrl-C; every file it
 * writes is in a temporary directory under /tmp, removed at the end.
 *
 * `--pin` runs each proxy on a core of its own (`taskset`, one worker), with this process, `wrk`,
 * the backends and the samplers on the others; with it, `--targets` can name the ladder's rungs
 * (`least_proxy.ts`) between the floor and goround.
 *
 * Permissions: `--allow-net=127.0.0.1 --allow-read=. --allow-write=/tmp
 * --allow-run=<deno>,wrk,nginx,haproxy,caddy,apt-get,sh,cat,ps,taskset` (`ps` and `cat` read other
 * processes' memory, since Deno reads another process's `/proc` only with `--allow-all`; `sh`
 * finds tools with `command -v` and kills stray descendants; `taskset` pins for `--pin`).
 *
 * @module
 */

import { parseArgs } from "node:util";
import { VERSION } from "../lib/version.ts";
import {
  caddyfile,
  haproxyConf,
  nginxBackendsConf,
  nginxProxyConf,
  routesConfig,
} from "./bench/configs.ts";
import {
  capture,
  cpuSeconds,
  type Managed,
  sampleTreeRss,
  spawnManaged,
  stopManaged,
  treePids,
  waitUntil,
} from "./bench/procs.ts";
import {
  combineRounds,
  formatMicros,
  judge,
  LADDER_IDS,
  type Measurement,
  renderReport,
  type Row,
  type RunInfo,
  TARGET_IDS,
  type TargetId,
  type Verdict,
} from "./bench/report.ts";
import {
  buildRequest,
  luaScript,
  runWrk,
  scenario,
  SCENARIO_IDS,
  type ScenarioId,
  totalErrors,
  type WrkResult,
} from "./bench/wrk.ts";

export type { Row, TargetId, Verdict } from "./bench/report.ts";
export type { ScenarioId } from "./bench/wrk.ts";

/** How long and how much: `quick` for CI, `default`, `full` for README figures. */
export type Mode = "quick" | "default" | "full";

/** One target and the scenarios it runs, in order. */
export interface PlanEntry {
  /** What is measured. */
  readonly target: TargetId;
  /** The workloads. */
  readonly scenarios: readonly ScenarioId[];
}

/** Everything a benchmark run needs to know. */
export interface BenchOptions {
  /** The mode the durations and plan came from (shown in the report). */
  readonly mode: Mode;
  /** Seconds of each measured `wrk` run. @default {2} (`--full`: 10) */
  readonly duration: number;
  /** Seconds of each warm-up `wrk` run (its figures are not kept); 0: none. @default {1} */
  readonly warmup: number;
  /**
   * When warm-ups run: before `each` measurement, or only before the `first` scenario of each
   * target (what `quick` does to stay well under a minute).
   * @default {"each"}
   */
  readonly warmupScope: "each" | "first";
  /** Targets in run order, each with its scenarios. */
  readonly plan: readonly PlanEntry[];
  /** The port every proxy listens on (127.0.0.1). @default {8000} */
  readonly port: number;
  /** The three backends' ports; 0 picks a free port. @default {[0, 0, 0]} */
  readonly backendPorts: readonly number[];
  /** `wrk -t`. @default {2} */
  readonly threads: number;
  /** `wrk -c`. @default {64} */
  readonly connections: number;
  /** Responses slower than this many seconds count as errors (`wrk --timeout`). @default {5} */
  readonly timeout: number;
  /** goround's `--workers`, nginx's worker processes, HAProxy's `nbthread`. @default {cores} */
  readonly workers: number;
  /** Whether missing tools are installed with `apt-get`. @default {true} */
  readonly install: boolean;
  /** Time between memory samples, ms. @default {100} */
  readonly sampleIntervalMs: number;
  /** Minimum goround ÷ direct small-GET req/s before the run fails. @default {0.25} */
  readonly floor: number;
  /** How many times the whole plan runs (targets restarted each time); the tables show each
   * target's median round (see `combineRounds`). @default {1} */
  readonly rounds: number;
  /** Another checkout of goround (a directory holding its `main.ts`) measured right after
   * goround in every round, with the same scenarios, to measure a change; `null`: none.
   * @default {null} */
  readonly compare: string | null;
  /** Whether each proxy runs alone on the first CPU this process may use (`taskset`, one
   * worker), with `wrk`, the backends and the benchmark itself on the others: its CPU per request then decides its req/s, without the
   * load generator's share of the cores in between. @default {false} */
  readonly pin: boolean;
  /** Routes goround (not the `--compare` build) runs with: a config file of that many routes,
   * the bench's requests matching the last one in match order; 0: the flags-only form.
   * @default {0} */
  readonly routes: number;
}

/** The default sanity floor: goround's small-GET req/s must reach this share of the direct hit's. */
export const DEFAULT_FLOOR = 0.2;

/** The V8 flags `deno task start` runs goround with (a small young generation keeps memory
 * low under load without costing throughput). */
const GOROUND_V8_FLAGS = ["--v8-flags=--max-semi-space-size=4"];

/** The repository root (where `main.ts` lives), with a trailing slash. */
const ROOT = new URL("..", import.meta.url).pathname;

/** The tools the benchmark may use, and the Debian package of each. */
const PACKAGES = {
  wrk: "wrk",
  nginx: "nginx-light",
  haproxy: "haproxy",
  caddy: "caddy",
  ps: "procps", // for the process trees; without it only the root process's memory is counted
} as const;

type Tool = keyof typeof PACKAGES;

/** The tool each target needs, besides `wrk` and the nginx backends. */
const TARGET_TOOL: Record<TargetId, Tool | null> = {
  direct: null,
  goround: null,
  "goround-deno": null,
  "goround-least-conn": null,
  "goround-hash": null,
  "goround-compare": null,
  "deno-floor": null,
  "deno-least": null,
  "goround-front": null,
  "goround-client": null,
  nginx: "nginx",
  haproxy: "haproxy",
  caddy: "caddy",
};

/** How long a target may take to answer after it was started, ms. */
const START_TIMEOUT = 20_000;

/**
 * The plan of a mode: every target runs every scenario, except in `quick`, where only the
 * direct hit and goround run them all and the other targets run the small-GET scenario. The
 * rows for goround's other policies (least-conn, hash) and the ladder's rungs only ever run the
 * small GETs.
 *
 * @param mode The mode.
 * @param ladder Whether to include the ladder's rungs (`LADDER_IDS`).
 * @returns Targets with their scenarios, in run order.
 */
export function planFor(mode: Mode, ladder = false): PlanEntry[] {
  return TARGET_IDS.filter((target) =>
    target !== "goround-compare" && (ladder || !LADDER_IDS.includes(target))
  ).map((target) => ({
    target,
    scenarios: target === "goround-least-conn" || target === "goround-hash" ||
        LADDER_IDS.includes(target) ||
        (mode === "quick" && target !== "direct" && target !== "goround")
      ? ["get"]
      : [...SCENARIO_IDS],
  }));
}

/**
 * The options of a mode on a machine with `cores` cores.
 *
 * @param mode `quick`, `default` or `full`.
 * @param cores The number of cores (`navigator.hardwareConcurrency`).
 * @returns The options.
 * @example
 * ```ts
 * const options = { ...defaultOptions("quick", navigator.hardwareConcurrency), port: 18000 };
 * ```
 */
export function defaultOptions(mode: Mode, cores: number): BenchOptions {
  return {
    mode,
    duration: mode === "full" ? 10 : 2,
    warmup: mode === "full" ? 2 : 1,
    warmupScope: mode === "quick" ? "first" : "each",
    plan: planFor(mode),
    port: 8000,
    backendPorts: [0, 0, 0],
    threads: 2,
    connections: 64,
    timeout: 5,
    workers: Math.max(1, cores),
    install: true,
    sampleIntervalMs: 100,
    floor: DEFAULT_FLOOR,
    rounds: 1,
    pin: false,
    compare: null,
    routes: 0,
  };
}

/** `--help`. */
export const HELP = `Usage: deno task bench [options]

Benchmarks goround against a direct hit, nginx, HAProxy and Caddy (round-robin over three
nginx backends) with wrk, and prints Markdown tables. Exits 1 if goround has errors or its
small-GET req/s is below --floor times the direct hit's.

Options:
  --quick                CI mode (about 40 s): 2 s runs, one warm-up per target; peers and
                         --engine deno only run the small GETs
  --full                 README mode: 10 s runs after 2 s warm-ups (about 8 minutes)
  --duration N           seconds per measured run (default 2; --full 10)
  --warmup N             seconds of warm-up before each measured run, 0 for none (default 1)
  --port N               port of the proxies on 127.0.0.1 (default 8000)
  --backend-ports A,B,C  the backends' ports (default: three free ports)
  --scenarios LIST       some of: ${SCENARIO_IDS.join(",")}
  --targets LIST         some of: ${TARGET_IDS.join(",")}
                         (deno-least, goround-front and goround-client, the ladder from the
                         least HTTP proxy on Deno up to goround, run only when named here,
                         and only with --pin)
  --connections N        wrk -c (default 64)
  --threads N            wrk -t (default 2)
  --timeout N            seconds after which wrk counts a response as an error (default 5)
  --workers N            goround --workers, nginx workers, HAProxy nbthread (default: cores;
                         --pin: 1)
  --floor R              minimum goround ÷ direct small-GET req/s (default ${DEFAULT_FLOOR})
  --rounds N             run the whole plan N times, one round after another; each table row
                         is the target's median round, and every round's req/s is listed
                         (default 1, at most 40)
  --compare DIR          also run goround from another checkout (DIR holds its main.ts),
                         right after goround in every round: with --rounds, the rounds table
                         shows goround ÷ that build, round by round
  --routes N             goround (not --compare's build) runs with a config file of N routes
                         (hosts, wildcards, prefixes; the requests match the last, a catch-all)
  --pin                  each proxy alone on one CPU (taskset), one worker; wrk (default -t1
                         -c32) and the backends on the other cores; needs 2 cores
  --no-install           do not apt-get install missing tools
  --help                 this text`;

function integer(flag: string, text: string, min: number, max: number): number {
  const n = Number(text);
  if (!/^\d+$/.test(text) || n < min || n > max) {
    throw new RangeError(`--${flag}: "${text}" is not a whole number from ${min} to ${max}`);
  }
  return n;
}

function list<T extends string>(flag: string, text: string, allowed: readonly T[]): T[] {
  const items = text.split(",").map((s) => s.trim()).filter((s) => s !== "");
  for (const item of items) {
    if (!(allowed as readonly string[]).includes(item)) {
      throw new RangeError(`--${flag}: "${item}" is not one of ${allowed.join(", ")}`);
    }
  }
  if (items.length === 0) throw new RangeError(`--${flag}: "${text}" names nothing`);
  return items as T[];
}

/**
 * Reads the command line into options.
 *
 * @param args The arguments (`Deno.args`).
 * @param cores The number of cores.
 * @returns The options, or `"help"` for `--help`.
 * @throws {RangeError} For a bad value, naming the flag, the value and what was expected.
 */
export function parseBenchArgs(args: readonly string[], cores: number): BenchOptions | "help" {
  const { values } = parseArgs({
    args: [...args],
    options: {
      quick: { type: "boolean" },
      full: { type: "boolean" },
      duration: { type: "string" },
      warmup: { type: "string" },
      port: { type: "string" },
      "backend-ports": { type: "string" },
      scenarios: { type: "string" },
      targets: { type: "string" },
      connections: { type: "string" },
      threads: { type: "string" },
      timeout: { type: "string" },
      workers: { type: "string" },
      floor: { type: "string" },
      rounds: { type: "string" },
      pin: { type: "boolean" },
      compare: { type: "string" },
      routes: { type: "string" },
      "no-install": { type: "boolean" },
      help: { type: "boolean" },
    },
    strict: true,
    allowPositionals: false,
  });
  if (values.help) return "help";
  if (values.quick && values.full) throw new RangeError("--quick and --full exclude each other");
  const mode: Mode = values.quick ? "quick" : values.full ? "full" : "default";
  const base = defaultOptions(mode, cores);
  let plan = base.plan;
  if (values.scenarios !== undefined) {
    const chosen = list("scenarios", values.scenarios, SCENARIO_IDS);
    plan = plan.map((e) => ({ ...e, scenarios: e.scenarios.filter((s) => chosen.includes(s)) }));
  }
  if (values.targets !== undefined) {
    // goround-compare comes with --compare, not by name.
    const chosen: readonly TargetId[] = list(
      "targets",
      values.targets,
      TARGET_IDS.filter((t) => t !== "goround-compare"),
    );
    plan = planFor(mode, true)
      .map((e) => ({
        ...e,
        scenarios: e.scenarios.filter((s) => plan.some((p) => p.scenarios.includes(s))),
      }))
      .filter((e) => chosen.includes(e.target));
  }
  plan = plan.filter((e) => e.scenarios.length > 0);
  let backendPorts = base.backendPorts;
  if (values["backend-ports"] !== undefined) {
    backendPorts = values["backend-ports"].split(",").map((p) =>
      integer("backend-ports", p.trim(), 0, 65535)
    );
    if (backendPorts.length !== 3) {
      throw new RangeError(
        `--backend-ports: "${
          values["backend-ports"]
        }" is not three ports: expected e.g. 9081,9082,9083`,
      );
    }
  }
  let floor = base.floor;
  if (values.floor !== undefined) {
    floor = Number(values.floor);
    if (!/^\d*\.?\d+$/.test(values.floor) || floor > 1) {
      throw new RangeError(`--floor: "${values.floor}" is not a ratio: expected e.g. 0.25`);
    }
  }
  const pick = (
    flag: string,
    text: string | undefined,
    fallback: number,
    min: number,
    max: number,
  ) => text === undefined ? fallback : integer(flag, text, min, max);
  const pin = values.pin === true;
  if (pin && values.workers !== undefined && integer("workers", values.workers, 1, 1024) !== 1) {
    throw new RangeError(
      `--workers: "${values.workers}" with --pin: each proxy runs on one core, so one worker`,
    );
  }
  let compare: string | null = null;
  if (values.compare !== undefined) {
    compare = values.compare.replace(/\/+$/, "");
    if (compare === "") throw new RangeError(`--compare: "${values.compare}" names no directory`);
    // Right after goround, with goround's scenarios.
    const at = plan.findIndex((e) => e.target === "goround");
    if (at < 0) throw new RangeError("--compare: goround is not among the --targets");
    plan = [
      ...plan.slice(0, at + 1),
      { ...plan[at]!, target: "goround-compare" },
      ...plan.slice(at + 1),
    ];
  }
  const rungs = plan.filter((e) => LADDER_IDS.includes(e.target)).map((e) => e.target);
  if (rungs.length > 0 && !pin) {
    throw new RangeError(
      `--targets: ${rungs.join(", ")} run${rungs.length === 1 ? "s" : ""} on one thread: ` +
        "compare them with the others only with --pin",
    );
  }
  return {
    mode,
    duration: pick("duration", values.duration, base.duration, 1, 3600),
    warmup: pick("warmup", values.warmup, base.warmup, 0, 3600),
    warmupScope: base.warmupScope,
    plan,
    port: pick("port", values.port, base.port, 1, 65535),
    backendPorts,
    threads: pick("threads", values.threads, pin ? 1 : base.threads, 1, 256),
    connections: pick("connections", values.connections, pin ? 32 : base.connections, 1, 10000),
    timeout: pick("timeout", values.timeout, base.timeout, 1, 3600),
    workers: pin ? 1 : pick("workers", values.workers, base.workers, 1, 1024),
    install: !values["no-install"],
    sampleIntervalMs: base.sampleIntervalMs,
    floor,
    rounds: pick("rounds", values.rounds, base.rounds, 1, 40),
    pin,
    compare,
    routes: pick("routes", values.routes, 0, 0, 256),
  };
}

/** Callbacks and cancellation for {@linkcode runBench}. */
export interface BenchHooks {
  /** Receives progress lines. */
  readonly log: (line: string) => void;
  /** Stops the run early: `wrk` is killed, everything started is stopped, and it throws. */
  readonly signal?: AbortSignal;
}

/** What a run produced. */
export interface BenchResult {
  /** Every result, in run order. */
  readonly rows: readonly Row[];
  /** The sanity check. */
  readonly verdict: Verdict;
  /** The Markdown report. */
  readonly report: string;
}

/** Whether a command is on the PATH (`sh -c 'command -v …'`). */
async function have(tool: string): Promise<boolean> {
  return (await capture("sh", ["-c", `command -v ${tool}`])).code === 0;
}

function lastLines(text: string, n = 3): string {
  return text.trim().split("\n").slice(-n).join(" / ");
}

/**
 * Finds the tools, installing missing ones with `apt-get` (one package at a time, so a package
 * that cannot be had does not hold up the others).
 *
 * @param tools The tools needed.
 * @param install Whether to install missing ones.
 * @param log Progress lines.
 * @returns The tools that are there.
 */
async function ensureTools(
  tools: readonly Tool[],
  install: boolean,
  log: (line: string) => void,
): Promise<Set<Tool>> {
  const present = new Set<Tool>();
  for (const tool of tools) if (await have(tool)) present.add(tool);
  const missing = tools.filter((tool) => !present.has(tool));
  if (missing.length === 0) return present;
  if (!install) {
    log(`missing and not installed (--no-install): ${missing.join(", ")}`);
    return present;
  }
  if (!(await have("apt-get"))) {
    log(`missing: ${missing.join(", ")}; apt-get is not available to install them`);
    return present;
  }
  const env = { DEBIAN_FRONTEND: "noninteractive" };
  log("apt-get update");
  const update = await capture("apt-get", ["update"], env);
  if (update.code !== 0) log(`apt-get update failed: ${lastLines(update.stderr || update.stdout)}`);
  for (const tool of missing) {
    log(`apt-get install -y ${PACKAGES[tool]}`);
    const result = await capture("apt-get", ["install", "-y", PACKAGES[tool]], env);
    if (result.code !== 0) {
      log(`apt-get install ${PACKAGES[tool]} failed: ${lastLines(result.stderr || result.stdout)}`);
    }
    if (await have(tool)) present.add(tool);
  }
  return present;
}

/** Whether `port` on 127.0.0.1 can be bound right now. */
function portFree(port: number): boolean {
  try {
    Deno.listen({ hostname: "127.0.0.1", port }).close();
    return true;
  } catch (error) {
    if (error instanceof Deno.errors.AddrInUse) return false;
    throw error;
  }
}

/** A port that is free right now. */
function freePort(): number {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = listener.addr.port;
  listener.close();
  return port;
}

/** Whether `GET /` on the port answers 200 `Hello from Server …`, on a fresh connection. */
async function answers(port: number): Promise<boolean> {
  const client = Deno.createHttpClient({ poolMaxIdlePerHost: 0 });
  try {
    const res = await fetch(`http://127.0.0.1:${port}/`, {
      client,
      signal: AbortSignal.timeout(2_000),
    });
    const text = await res.text();
    return res.status === 200 && text.startsWith("Hello from Server");
  } catch {
    return false;
  } finally {
    client.close();
  }
}

/**
 * Sends one request on a fresh connection and returns the response's status line (or why
 * there is none), to show plainly when a target refuses a workload.
 */
async function probe(port: number, request: Uint8Array): Promise<string> {
  let conn: Deno.TcpConn | null = null;
  let timedOut = false;
  const timer = setTimeout(() => {
    timedOut = true;
    try {
      conn?.close();
    } catch {
      // Closed already.
    }
  }, 5_000);
  try {
    conn = await Deno.connect({ hostname: "127.0.0.1", port });
    for (let offset = 0; offset < request.length;) {
      offset += await conn.write(request.subarray(offset));
    }
    const buffer = new Uint8Array(4096);
    const decoder = new TextDecoder();
    let text = "";
    while (!text.includes("\r\n") && text.length < 8192) {
      const n = await conn.read(buffer);
      if (n === null) break;
      text += decoder.decode(buffer.subarray(0, n), { stream: true });
    }
    return text.split("\r\n")[0] || "no response (connection closed)";
  } catch (error) {
    return timedOut ? "no response within 5 s" : `no response (${(error as Error).message})`;
  } finally {
    clearTimeout(timer);
    try {
      conn?.close();
    } catch {
      // Closed already (by the timer).
    }
  }
}

/** The shell quoting of one argument, for the report's command line. */
function shellQuote(arg: string): string {
  return /^[\w@%+=:,./-]+$/.test(arg) ? arg : `'${arg.replaceAll("'", `'"'"'`)}'`;
}

/** Machine description, versions and the command line, for the report's header. */
async function describeRun(
  options: BenchOptions,
  tools: Set<Tool>,
  backendPorts: readonly number[],
): Promise<RunInfo> {
  const read = async (path: string) => {
    try {
      const result = await capture("cat", [path]);
      return result.code === 0 ? result.stdout : "";
    } catch {
      return "";
    }
  };
  const cpu = /^model name\s*:\s*(.+)$/m.exec(await read("/proc/cpuinfo"))?.[1]?.trim() ??
    "unknown";
  const memKiB = Number(/^MemTotal:\s+(\d+) kB$/m.exec(await read("/proc/meminfo"))?.[1] ?? NaN);
  const cmdline = (await read(`/proc/${Deno.pid}/cmdline`)).split("\0").filter((a) => a !== "");
  const versions = [`goround ${VERSION}`, `Deno ${Deno.version.deno}`];
  const version = async (tool: Tool, args: string[], pattern: RegExp, name: string) => {
    if (!tools.has(tool)) return;
    const result = await capture(tool, args);
    const match = pattern.exec(result.stdout + result.stderr);
    versions.push(match ? `${name} ${match[1]}` : name);
  };
  await version("wrk", ["-v"], /^wrk (\S+)/m, "wrk");
  await version("nginx", ["-v"], /nginx\/(\S+)/, "nginx");
  await version("haproxy", ["-v"], /version (\S+)/, "HAProxy");
  await version("caddy", ["version"], /^v?(\d\S*)/m, "Caddy");
  const targets = options.plan.map((e) => e.target).join(", ");
  const warmup = options.warmup === 0
    ? "no warm-up"
    : options.warmupScope === "each"
    ? `each after a ${options.warmup} s warm-up`
    : `after a ${options.warmup} s warm-up before each target's first scenario`;
  return {
    date: new Date().toISOString(),
    cores: navigator.hardwareConcurrency,
    cpu,
    memory: Number.isFinite(memKiB) ? `${(memKiB / 1024 / 1024).toFixed(1)} GiB` : "unknown",
    versions,
    command: cmdline.length > 0 ? cmdline.map(shellQuote).join(" ") : "unknown",
    settings: [
      `Mode: ${options.mode}: ${options.duration} s measured per target and scenario, ${warmup}; ` +
      `\`wrk -t${options.threads} -c${options.connections} ` +
      `--timeout ${options.timeout}s --latency\`; targets: ${targets}`,
      `Backends: one nginx, one worker process, on 127.0.0.1:${backendPorts.join(", ")}; ` +
      `proxies on 127.0.0.1:${options.port}, ${options.workers} ` +
      `${options.workers === 1 ? "worker or thread" : "workers/threads"} each ` +
      `(Caddy: Go's default); peak RSS is the proxy's whole process tree, sampled every ` +
      `${options.sampleIntervalMs} ms during the measured run; CPU/req is that tree's CPU ` +
      "time (user + system, from /proc) over the measured run, divided by its requests",
      ...(options.pin
        ? [
          "Pinned (--pin): each proxy on a CPU of its own (`taskset`, one worker); `wrk`, the " +
          "backends and the benchmark itself on the others",
        ]
        : []),
      ...(options.rounds > 1
        ? [
          `Rounds: ${options.rounds}: the whole plan ran ${options.rounds} times; each row below ` +
          "is the target's round with the median req/s, with the errors of all rounds",
        ]
        : []),
    ],
  };
}

/** The state of a run that the helpers share. */
interface Context {
  readonly options: BenchOptions;
  readonly hooks: BenchHooks;
  readonly dir: string;
  readonly backendPorts: readonly number[];
  /** Lua scripts already written, by scenario and port. */
  readonly scripts: Map<string, { script: string; request: Uint8Array }>;
  /** With `--pin`: the CPU of the proxies (the first this process may use), the CPUs of `wrk`
   * and the backends (the rest), and all of them. */
  readonly cores: { readonly proxy: string; readonly load: string; readonly all: string } | null;
}

/**
 * The CPUs a process may run on, from its `/proc/<pid>/status` (`Cpus_allowed_list`, e.g.
 * `0-3,6`): the ones `--pin` shares out, which may be fewer than the machine has.
 *
 * @param status The text of the status file.
 * @returns The CPU numbers in order (empty when the line is missing).
 */
export function allowedCpus(status: string): number[] {
  const list = /^Cpus_allowed_list:\s*(\S+)$/m.exec(status)?.[1] ?? "";
  const cpus: number[] = [];
  for (const part of list.split(",")) {
    const range = /^(\d+)(?:-(\d+))?$/.exec(part);
    if (range === null) continue;
    const from = Number(range[1]);
    const to = Number(range[2] ?? range[1]);
    for (let cpu = from; cpu <= to; cpu++) cpus.push(cpu);
  }
  return cpus;
}

/** Sets the CPUs every thread of a running process may use (`taskset -a -p -c`). */
async function pinProcess(pid: number, cpus: string): Promise<void> {
  const result = await capture("taskset", ["-a", "-p", "-c", cpus, String(pid)]);
  if (result.code !== 0) {
    throw new Error(`taskset -a -p -c ${cpus} ${pid} failed: ${lastLines(result.stderr)}`);
  }
}

/** A command as run on `cpus` (`taskset -c`), or as it is when `cpus` is null. */
function onCores(cpus: string | null, command: string, args: string[]): [string, string[]] {
  return cpus === null ? [command, args] : ["taskset", ["-c", cpus, command, ...args]];
}

function labelOf(target: TargetId, count: number, compare: string | null, routes = 0): string {
  const workers = `${count} worker${count === 1 ? "" : "s"}`;
  switch (target) {
    case "direct":
      return "direct to one backend (ceiling)";
    case "goround":
      return `goround (${workers}${routes > 0 ? `, ${routes} routes` : ""})`;
    case "goround-compare":
      return `goround from ${compare} (${workers})`;
    case "goround-deno":
      return `goround --engine deno (${workers})`;
    case "goround-least-conn":
      return `goround --algorithm least-conn (${workers})`;
    case "goround-hash":
      return `goround --algorithm hash (${workers}; one client IP, so one backend)`;
    case "deno-floor":
      return `floor: a Deno TCP relay, no HTTP at all (${workers})`;
    case "deno-least":
      return "the least HTTP proxy on Deno: heads found, not parsed (1 thread)";
    case "goround-front":
      return "… with goround's front end (1 thread)";
    case "goround-client":
      return "… and goround's upstream client (1 thread)";
    case "nginx":
      return `nginx (${workers})`;
    case "haproxy":
      return `HAProxy (nbthread ${count})`;
    case "caddy":
      return "Caddy";
  }
}

/** Starts a target's process (none for the direct hit) and waits until it answers. */
async function startTarget(ctx: Context, target: TargetId): Promise<Managed | null> {
  if (target === "direct") return null;
  const { options, dir, backendPorts } = ctx;
  const port = options.port;
  const proxyCpus = ctx.cores?.proxy ?? null;
  const confOptions = { port, backends: backendPorts, workers: options.workers, dir };
  let proc: Managed;
  let banner = true;
  switch (target) {
    case "goround":
    case "goround-compare":
    case "goround-deno":
    case "goround-least-conn":
    case "goround-hash": {
      banner = false;
      const root = target === "goround-compare" ? `${options.compare}/` : ROOT;
      const backends = backendPorts.map((p) => `http://127.0.0.1:${p}`);
      const routed = target === "goround" && options.routes > 0;
      const file = `${dir}/routes.json`;
      if (routed) await Deno.writeTextFile(file, routesConfig(options.routes, backends));
      const args = [
        "run",
        ...GOROUND_V8_FLAGS,
        "--unstable-net",
        "--allow-net",
        `--allow-read=${root}${routed ? `,${file}` : ""}`,
        `${root}main.ts`,
        "--listen",
        `127.0.0.1:${port}`,
        ...(routed ? ["--config", file] : ["--backends", backends.join(",")]),
        "--workers",
        String(options.workers),
        // As the peers run here: no access log, no admin listener.
        "--access-log",
        "off",
        "--admin",
        "off",
        ...(target === "goround-deno" ? ["--engine", "deno"] : []),
        ...(target === "goround-least-conn" ? ["--algorithm", "least-conn"] : []),
        ...(target === "goround-hash" ? ["--algorithm", "hash"] : []),
      ];
      proc = spawnManaged(...onCores(proxyCpus, Deno.execPath(), args), {
        name: target,
        onLine: (line) => {
          if (line.startsWith("Load Balancer started at")) banner = true;
        },
      });
      break;
    }
    case "deno-floor": {
      const args = [
        "run",
        "--unstable-net",
        "--allow-net=127.0.0.1",
        `--allow-read=${ROOT}tools/bench/floor_proxy.ts`, // for its worker threads
        `${ROOT}tools/bench/floor_proxy.ts`,
        String(port),
        String(options.workers),
        ...backendPorts.map(String),
      ];
      proc = spawnManaged(...onCores(proxyCpus, Deno.execPath(), args), { name: target });
      break;
    }
    case "deno-least":
    case "goround-front":
    case "goround-client": {
      const rung = { "deno-least": "least", "goround-front": "front", "goround-client": "client" };
      const args = [
        "run",
        ...GOROUND_V8_FLAGS,
        "--allow-net=127.0.0.1",
        `${ROOT}tools/bench/least_proxy.ts`,
        rung[target],
        String(port),
        ...backendPorts.map(String),
      ];
      proc = spawnManaged(...onCores(proxyCpus, Deno.execPath(), args), { name: target });
      break;
    }
    case "nginx": {
      const conf = `${dir}/nginx-proxy.conf`;
      await Deno.writeTextFile(conf, nginxProxyConf(confOptions));
      const log = `${dir}/nginx-proxy.err`;
      const args = ["-g", "daemon off;", "-c", conf, "-p", dir, "-e", log];
      proc = spawnManaged(...onCores(proxyCpus, "nginx", args), { name: "nginx" });
      break;
    }
    case "haproxy": {
      const conf = `${dir}/haproxy.cfg`;
      await Deno.writeTextFile(conf, haproxyConf(confOptions));
      proc = spawnManaged(...onCores(proxyCpus, "haproxy", ["-db", "-f", conf]), {
        name: "haproxy",
      });
      break;
    }
    case "caddy": {
      const conf = `${dir}/Caddyfile`;
      await Deno.writeTextFile(conf, caddyfile(confOptions));
      const home = `${dir}/caddy-home`;
      await Deno.mkdir(home, { recursive: true });
      const args = ["run", "--config", conf, "--adapter", "caddyfile"];
      proc = spawnManaged(...onCores(proxyCpus, "caddy", args), {
        name: "caddy",
        env: { HOME: home, XDG_CONFIG_HOME: home, XDG_DATA_HOME: home },
      });
      break;
    }
  }
  try {
    await waitUntil(`${target} to answer on 127.0.0.1:${port}`, START_TIMEOUT, async () => {
      ctx.hooks.signal?.throwIfAborted();
      if (proc.hasExited()) {
        await Promise.race([proc.drained, new Promise((r) => setTimeout(r, 500))]);
        throw new Error(`${target} exited: ${proc.tail.slice(-3).join(" / ") || "no output"}`);
      }
      return banner && await answers(port);
    });
  } catch (error) {
    await stopManaged(proc);
    throw error;
  }
  return proc;
}

/** The request file and Lua script of a scenario against a port, written once. */
async function scriptFor(
  ctx: Context,
  id: ScenarioId,
  port: number,
): Promise<{ script: string; request: Uint8Array }> {
  const key = `${id}-${port}`;
  const known = ctx.scripts.get(key);
  if (known) return known;
  const request = buildRequest(scenario(id), `127.0.0.1:${port}`);
  const requestPath = `${ctx.dir}/${key}.http`;
  const script = `${ctx.dir}/${key}.lua`;
  await Deno.writeFile(requestPath, request);
  await Deno.writeTextFile(script, luaScript(requestPath));
  const entry = { script, request };
  ctx.scripts.set(key, entry);
  return entry;
}

/** Probe, warm-up and measured run of one scenario against a port. */
async function measure(
  ctx: Context,
  id: ScenarioId,
  port: number,
  proc: Managed | null,
  warmup: boolean,
): Promise<Measurement> {
  const { options, hooks } = ctx;
  const { script, request } = await scriptFor(ctx, id, port);
  const url = `http://127.0.0.1:${port}${scenario(id).path}`;
  const wrk = (seconds: number): Promise<WrkResult> =>
    runWrk(url, script, {
      threads: options.threads,
      connections: options.connections,
      seconds,
      timeout: options.timeout,
      ...(hooks.signal ? { signal: hooks.signal } : {}),
      ...(ctx.cores ? { cpus: ctx.cores.load } : {}),
    });
  const firstLine = await probe(port, request);
  const warm = warmup ? await wrk(options.warmup) : null;
  const sampler = proc ? sampleTreeRss(proc.pid, options.sampleIntervalMs) : null;
  // The proxy's CPU time over the measured run, per request: what it costs on a machine it
  // shares, steadier from run to run than req/s.
  const pids = proc ? await treePids(proc.pid) : [];
  const cpuBefore = await cpuSeconds(pids);
  let result: WrkResult;
  let peak: number | null = null;
  try {
    result = await wrk(options.duration);
  } finally {
    peak = (await sampler?.stop()) ?? null;
  }
  const cpuAfter = await cpuSeconds(pids);
  const payload = scenario(id).payload;
  return {
    rps: result.seconds > 0 ? result.requests / result.seconds : 0,
    cpuPerRequest: cpuBefore === null || cpuAfter === null || result.requests === 0
      ? null
      : (cpuAfter - cpuBefore) * 1e6 / result.requests,
    p50: result.p50,
    p90: result.p90,
    p99: result.p99,
    errors: result.errors,
    warmupErrors: warm ? totalErrors(warm.errors) : 0,
    peakRssKiB: peak,
    mibPerSecond: payload > 0 && result.seconds > 0
      ? result.requests * payload / result.seconds / (1024 * 1024)
      : null,
    probe: firstLine,
  };
}

function summary(m: Measurement): string {
  const rss = m.peakRssKiB === null ? "" : `, ${(m.peakRssKiB / 1024).toFixed(1)} MiB`;
  const cpu = m.cpuPerRequest === null ? "" : `, ${formatMicros(m.cpuPerRequest)} CPU/req`;
  const errors = totalErrors(m.errors) + m.warmupErrors;
  return `${Math.round(m.rps)} req/s, p99 ${m.p99.toFixed(2)} ms, ${errors} errors${rss}${cpu}`;
}

/**
 * Runs the benchmark: tools, backends, then each target of the plan in turn; stops everything
 * it started and removes its temporary directory before returning or throwing.
 *
 * @param options What to run and how long (see {@linkcode defaultOptions}).
 * @param hooks Progress lines and an optional abort signal.
 * @returns The results, the verdict and the Markdown report.
 * @throws {Error} When the benchmark cannot run at all (no `wrk` or `nginx`, a port in use,
 * backends that do not start) or was aborted.
 * @example
 * ```ts
 * const result = await runBench(
 *   { ...defaultOptions("quick", navigator.hardwareConcurrency), port: 18000 },
 *   { log: (line) => console.error(line) },
 * );
 * console.log(result.report);
 * ```
 */
export async function runBench(options: BenchOptions, hooks: BenchHooks): Promise<BenchResult> {
  const { log, signal } = hooks;
  const needed = new Set<Tool>(["wrk", "nginx", "ps"]);
  for (const entry of options.plan) {
    const tool = TARGET_TOOL[entry.target];
    if (tool) needed.add(tool);
  }
  const tools = await ensureTools([...needed], options.install, log);
  for (const tool of ["wrk", "nginx"] as const) {
    if (!tools.has(tool)) {
      throw new Error(
        `${tool} is not installed (Debian package ${PACKAGES[tool]}): nothing to measure`,
      );
    }
  }
  if (!tools.has("ps")) log("ps is missing: peak RSS counts each proxy's main process only");
  const backendPorts = options.backendPorts.map((p) => (p === 0 ? freePort() : p));
  for (
    const port of [
      ...backendPorts,
      ...(options.plan.some((e) => e.target !== "direct") ? [options.port] : []),
    ]
  ) {
    if (!portFree(port)) {
      throw new Error(
        `port ${port} on 127.0.0.1 is in use: expected a free port (choose others with --port or --backend-ports)`,
      );
    }
  }
  let pinning: { proxy: string; load: string; all: string } | null = null;
  if (options.pin) {
    if (!(await have("taskset"))) {
      throw new Error("--pin needs taskset (Debian package util-linux): it is not installed");
    }
    const status = await capture("cat", [`/proc/${Deno.pid}/status`]);
    const cpus = allowedCpus(status.stdout);
    if (cpus.length < 2) {
      throw new Error(`--pin needs at least 2 CPUs: this process may run on ${cpus.length}`);
    }
    pinning = { proxy: String(cpus[0]), load: cpus.slice(1).join(","), all: cpus.join(",") };
  }
  const info = await describeRun(options, tools, backendPorts);
  const dir = await Deno.makeTempDir({ dir: "/tmp", prefix: "goround-bench-" });
  const ctx: Context = {
    options,
    hooks,
    dir,
    backendPorts,
    scripts: new Map(),
    cores: pinning,
  };
  const rounds: Row[][] = [];
  let backends: Managed | null = null;
  try {
    // This process (and so wrk, the samplers and every child not pinned elsewhere) keeps off the
    // proxies' core; its affinity is given back at the end.
    if (pinning) await pinProcess(Deno.pid, pinning.load);
    // nginx workers may run as another user: let them read the files.
    await Deno.chmod(dir, 0o755);
    const root = `${dir}/www`;
    await Deno.mkdir(root, { mode: 0o755 });
    await Deno.chmod(root, 0o755);
    await Deno.writeFile(`${root}/1m`, new Uint8Array(1024 * 1024).fill(120), { mode: 0o644 });
    await Deno.writeFile(`${root}/upload`, new Uint8Array(0), { mode: 0o644 });
    const conf = `${dir}/backends.conf`;
    await Deno.writeTextFile(conf, nginxBackendsConf({ ports: backendPorts, dir, root }));
    log(`backends: nginx on 127.0.0.1:${backendPorts.join(", ")}`);
    backends = spawnManaged(
      ...onCores(ctx.cores?.load ?? null, "nginx", [
        "-g",
        "daemon off;",
        "-c",
        conf,
        "-p",
        dir,
        "-e",
        `${dir}/backends.err`,
      ]),
      { name: "backends" },
    );
    const started = backends;
    await waitUntil("the backends to answer", START_TIMEOUT, async () => {
      signal?.throwIfAborted();
      if (started.hasExited()) {
        throw new Error(
          `the backends' nginx exited: ${started.tail.slice(-3).join(" / ") || "no output"}`,
        );
      }
      for (const port of backendPorts) if (!(await answers(port))) return false;
      return true;
    });

    for (let round = 1; round <= options.rounds; round++) {
      if (options.rounds > 1) log(`round ${round} of ${options.rounds}`);
      const rows: Row[] = [];
      await runRound(ctx, tools, rows);
      rounds.push(rows);
    }
  } finally {
    if (backends) await stopManaged(backends);
    if (pinning) await pinProcess(Deno.pid, pinning.all).catch(() => {});
    await Deno.remove(dir, { recursive: true }).catch(() => {});
  }
  const rows = combineRounds(rounds);
  // Group by scenario in the report (the run itself goes target by target).
  const order = (r: Row) => SCENARIO_IDS.indexOf(r.scenario) * 100 + TARGET_IDS.indexOf(r.target);
  rows.sort((a, b) => order(a) - order(b));
  const verdict = judge(rows, options.floor);
  return { rows, verdict, report: renderReport(info, rows, verdict) };
}

/** Runs every target of the plan once, in order, adding a row per target and scenario. */
async function runRound(ctx: Context, tools: ReadonlySet<Tool>, rows: Row[]): Promise<void> {
  const { options, backendPorts } = ctx;
  const { log, signal } = ctx.hooks;
  for (const entry of options.plan) {
    signal?.throwIfAborted();
    const label = labelOf(entry.target, options.workers, options.compare, options.routes);
    const skip = (reason: string) => {
      for (const id of entry.scenarios) {
        rows.push({
          target: entry.target,
          label,
          scenario: id,
          outcome: { kind: "skipped", reason },
        });
      }
    };
    const tool = TARGET_TOOL[entry.target];
    if (tool && !tools.has(tool)) {
      log(`${entry.target}: not installed`);
      skip("not installed");
      continue;
    }
    log(`${entry.target}: starting`);
    let proc: Managed | null = null;
    try {
      proc = await startTarget(ctx, entry.target);
    } catch (error) {
      signal?.throwIfAborted();
      const reason = `failed to start: ${(error as Error).message}`;
      log(`${entry.target}: ${reason}`);
      skip(reason);
      continue;
    }
    const port = entry.target === "direct" ? backendPorts[0]! : options.port;
    try {
      for (const id of entry.scenarios) {
        signal?.throwIfAborted();
        if (proc?.hasExited()) {
          const reason = `exited: ${proc.tail.slice(-3).join(" / ") || "no output"}`;
          rows.push({
            target: entry.target,
            label,
            scenario: id,
            outcome: { kind: "skipped", reason },
          });
          continue;
        }
        try {
          const warmup = options.warmup > 0 &&
            (options.warmupScope === "each" || id === entry.scenarios[0]);
          const m = await measure(ctx, id, port, proc, warmup);
          log(`${entry.target}: ${id}: ${summary(m)}`);
          if (proc && totalErrors(m.errors) + m.warmupErrors > 0) {
            for (const line of proc.tail.slice(-5)) log(`  ${entry.target} said: ${line}`);
          }
          rows.push({
            target: entry.target,
            label,
            scenario: id,
            outcome: { kind: "measured", measurement: m },
          });
        } catch (error) {
          signal?.throwIfAborted();
          const reason = `measurement failed: ${(error as Error).message}`;
          log(`${entry.target}: ${id}: ${reason}`);
          rows.push({
            target: entry.target,
            label,
            scenario: id,
            outcome: { kind: "skipped", reason },
          });
        }
      }
    } finally {
      if (proc) {
        await stopManaged(proc);
        await waitUntil(
          `port ${options.port} to be free again`,
          10_000,
          () => Promise.resolve(portFree(options.port)),
        );
      }
    }
  }
}

/**
 * The command line: parses the flags, runs the benchmark with progress on stderr and the report
 * on stdout, and exits 0 (pass), 1 (goround failed the sanity check, or the benchmark could not
 * run), 2 (bad flag) or 130 (interrupted; everything it started is stopped first).
 *
 * @returns Never: it exits.
 */
export async function main(): Promise<void> {
  let options: BenchOptions | "help";
  try {
    options = parseBenchArgs(Deno.args, navigator.hardwareConcurrency);
  } catch (error) {
    if (!(error instanceof RangeError || error instanceof TypeError)) throw error;
    console.error(`bench: ${error.message}`);
    Deno.exit(2);
  }
  if (options === "help") {
    console.log(HELP);
    Deno.exit(0);
  }
  const controller = new AbortController();
  const stop = () => controller.abort(new Error("interrupted"));
  Deno.addSignalListener("SIGINT", stop);
  Deno.addSignalListener("SIGTERM", stop);
  const started = Date.now();
  const log = (line: string) =>
    console.error(`[bench ${((Date.now() - started) / 1000).toFixed(1).padStart(5)}s] ${line}`);
  try {
    const result = await runBench(options, { log, signal: controller.signal });
    console.log(result.report);
    log(`done: ${result.verdict.ok ? "PASS" : "FAIL"}`);
    Deno.exit(result.verdict.ok ? 0 : 1);
  } catch (error) {
    if (controller.signal.aborted) {
      log("interrupted; everything it started has been stopped");
      Deno.exit(130);
    }
    log(`error: ${(error as Error).message}`);
    Deno.exit(1);
  }
}

if (import.meta.main) await main();
