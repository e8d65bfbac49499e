/**
 * `deno task takeover`: what a restart under load costs, goround's `--takeover` and
 * `nginx -s reload` side by side, in one run. Both proxy to the same three dummy backends
 * (`dummy_servers.ts`, one process each) on loopback; `wrk` loads each proxy (by default
 * `-t2 -c64` for 10 s) and, in the middle, the proxy is handed over: a second goround is started
 * with `--takeover`, or nginx is told to reload. Each run is done with kept-alive connections,
 * then with a new connection per request (`-H 'Connection: close'`), and the table shows wrk's
 * requests and its errors by kind.
 *
 * With `--migrate-req 0,1` each pair of runs is done under both settings of the kernel's
 * `net.ipv4.tcp_migrate_req` (root only; the setting found is put back at the end, on Ctrl-C
 * too). Installs `wrk` and `nginx-light` with `apt-get` when missing.
 *
 * ```sh
 * deno task takeover                          # the current tcp_migrate_req
 * deno task takeover --migrate-req 0,1        # both settings
 * deno task takeover --engines goround,deno   # goround's front end and Deno.serve's
 * ```
 *
 * @module
 */

import { parseArgs } from "node:util";
import { type BackendProcess, lineSplitter, spawnBackend } from "../dummy_servers.ts";
import { nginxProxyConf } from "./bench/configs.ts";

const ROOT = new URL("..", import.meta.url).pathname;
const MIGRATE_REQ = "net.ipv4.tcp_migrate_req";
const PACKAGES = { wrk: "wrk", nginx: "nginx-light" } as const;

/** The run's settings. */
export interface TakeoverToolOptions {
  /** Seconds of each wrk run. @default {10} */
  readonly duration: number;
  /** Seconds into the run at which the handover starts. @default {4} (goround needs about a
   * second to start before it takes over) */
  readonly at: number;
  /** `wrk -t`. @default {2} */
  readonly threads: number;
  /** `wrk -c`. @default {64} */
  readonly connections: number;
  /** The `tcp_migrate_req` settings to run under (`current`: leave it as found). */
  readonly migrate: readonly ("current" | "0" | "1")[];
  /** goround's front ends to run. @default {["goround"]} */
  readonly engines: readonly ("goround" | "deno")[];
  /** Whether missing tools are installed with apt-get. @default {true} */
  readonly install: boolean;
}

/** What wrk reported for one run. */
export interface WrkFigures {
  /** Requests completed. */
  readonly requests: number;
  /** Socket errors by kind, and responses that were not 2xx or 3xx. */
  readonly connect: number;
  readonly read: number;
  readonly write: number;
  readonly timeout: number;
  readonly non2xx: number;
}

/**
 * Reads wrk's text output.
 *
 * @param text What wrk printed.
 * @returns The figures (errors it did not print are 0).
 * @throws {Error} When there is no `N requests in` line.
 */
export function parseWrkText(text: string): WrkFigures {
  const requests = /^\s*(\d+) requests in /m.exec(text);
  if (!requests) throw new Error(`wrk printed no figures: ${text.trim().split("\n").at(-1)}`);
  const socket = /Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)/.exec(text);
  const non2xx = /Non-2xx or 3xx responses: (\d+)/.exec(text);
  return {
    requests: Number(requests[1]),
    connect: Number(socket?.[1] ?? 0),
    read: Number(socket?.[2] ?? 0),
    write: Number(socket?.[3] ?? 0),
    timeout: Number(socket?.[4] ?? 0),
    non2xx: Number(non2xx?.[1] ?? 0),
  };
}

/** All the failures of a run. */
export function failuresOf(figures: WrkFigures): number {
  return figures.connect + figures.read + figures.write + figures.timeout + figures.non2xx;
}

function whole(flag: string, text: string, min: number, max: number): number {
  if (!/^\d+$/.test(text) || Number(text) < min || Number(text) > max) {
    throw new RangeError(`${flag}: "${text}" is not a whole number from ${min} to ${max}`);
  }
  return Number(text);
}

function listOf<T extends string>(flag: string, text: string, allowed: readonly T[]): T[] {
  const items = text.split(",").map((item) => item.trim());
  for (const item of items) {
    if (!(allowed as readonly string[]).includes(item)) {
      throw new RangeError(`${flag}: "${item}" is not one of ${allowed.join(", ")}`);
    }
  }
  return items as T[];
}

const USAGE = `Usage: deno task takeover [options]

Loads goround and nginx with wrk over the same dummy backends and hands each over in the
middle (goround --takeover, nginx -s reload); prints wrk's requests and errors by kind.

  --duration S        seconds of each wrk run (default 10)
  --at S              seconds into the run at which the handover starts (default 4)
  --threads N         wrk -t (default 2)
  --connections N     wrk -c (default 64)
  --migrate-req LIST  run under these net.ipv4.tcp_migrate_req settings: current, 0, 1
                      (default current; 0 and 1 need root, the setting is restored)
  --engines LIST      goround front ends: goround, deno (default goround)
  --no-install        do not apt-get install wrk or nginx
`;

/**
 * Reads the command line.
 *
 * @param args The arguments.
 * @returns The options, or `"help"`.
 * @throws {RangeError} One line naming the flag, the value and what was expected.
 */
export function parseToolArgs(args: readonly string[]): TakeoverToolOptions | "help" {
  const { values } = parseArgs({
    args: [...args],
    options: {
      duration: { type: "string", default: "10" },
      at: { type: "string", default: "4" },
      threads: { type: "string", default: "2" },
      connections: { type: "string", default: "64" },
      "migrate-req": { type: "string", default: "current" },
      engines: { type: "string", default: "goround" },
      "no-install": { type: "boolean", default: false },
      help: { type: "boolean", short: "h", default: false },
    },
    strict: true,
  });
  if (values.help) return "help";
  const duration = whole("--duration", values.duration, 2, 600);
  const at = whole("--at", values.at, 0, 600);
  if (at >= duration) {
    throw new RangeError(`--at: "${at}" is not inside the run: expected less than --duration`);
  }
  return {
    duration,
    at,
    threads: whole("--threads", values.threads, 1, 64),
    connections: whole("--connections", values.connections, 1, 10_000),
    migrate: listOf("--migrate-req", values["migrate-req"], ["current", "0", "1"] as const),
    engines: listOf("--engines", values.engines, ["goround", "deno"] as const),
    install: !values["no-install"],
  };
}

function log(line: string): void {
  console.error(`takeover: ${line}`);
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

async function runs(command: string, args: string[]): Promise<boolean> {
  try {
    await new Deno.Command(command, { args, stdout: "null", stderr: "null" }).output();
    return true;
  } catch {
    return false;
  }
}

/** Installs what is missing with apt-get (`apt-get update` first). */
async function ensureTools(install: boolean): Promise<void> {
  const missing: (keyof typeof PACKAGES)[] = [];
  if (!(await runs("wrk", ["-v"]))) missing.push("wrk");
  if (!(await runs("nginx", ["-v"]))) missing.push("nginx");
  if (missing.length === 0) return;
  if (!install) throw new Error(`missing ${missing.join(", ")} (and --no-install)`);
  const env = { DEBIAN_FRONTEND: "noninteractive" };
  log("apt-get update");
  await new Deno.Command("apt-get", { args: ["update"], env, stdout: "null" }).output();
  for (const tool of missing) {
    log(`apt-get install -y ${PACKAGES[tool]}`);
    await new Deno.Command("apt-get", {
      args: ["install", "-y", PACKAGES[tool]],
      env,
      stdout: "null",
    }).output();
    if (!(await runs(tool, ["-v"]))) throw new Error(`${tool} could not be installed`);
  }
}

function freePort(): number {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = listener.addr.port;
  listener.close();
  return port;
}

/** Waits until `GET /` on the port is answered 200, for at most `timeout` ms. */
async function answering(port: number, timeout = 15_000): Promise<void> {
  const deadline = Date.now() + timeout;
  while (Date.now() < deadline) {
    const client = Deno.createHttpClient({ poolMaxIdlePerHost: 0 });
    try {
      const res = await fetch(`http://127.0.0.1:${port}/`, { client });
      await res.body?.cancel();
      if (res.status === 200) return;
    } catch {
      // Not yet.
    } finally {
      client.close();
    }
    await sleep(50);
  }
  throw new Error(`nothing answered on 127.0.0.1:${port} within ${timeout} ms`);
}

/** A child whose output is kept line by line. */
interface Child {
  readonly process: Deno.ChildProcess;
  readonly lines: string[];
  readonly exited: Promise<Deno.CommandStatus>;
}

function spawn(command: string, args: string[]): Child {
  const process = new Deno.Command(command, {
    args,
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const lines: string[] = [];
  const keep = async (stream: ReadableStream<Uint8Array>) => {
    const text = stream.pipeThrough(new TextDecoderStream()).pipeThrough(lineSplitter());
    for await (const line of text) lines.push(line);
  };
  const exited = Promise.all([keep(process.stdout), keep(process.stderr)]).then(() =>
    process.status
  );
  return { process, lines, exited };
}

function stop(child: Child | null): Promise<unknown> {
  if (!child) return Promise.resolve();
  try {
    child.process.kill("SIGTERM");
  } catch {
    // Exited already.
  }
  return child.exited;
}

// `deno run` reads and writes /proc only with --allow-all: sysctl and cat do it instead.

async function readMigrate(): Promise<string | null> {
  const { code, stdout } = await new Deno.Command("sysctl", {
    args: ["-n", MIGRATE_REQ],
    stderr: "null",
  }).output();
  return code === 0 ? new TextDecoder().decode(stdout).trim() : null; // before Linux 5.14
}

async function writeMigrate(value: string): Promise<void> {
  const { code, stderr } = await new Deno.Command("sysctl", {
    args: ["-w", `${MIGRATE_REQ}=${value}`],
    stdout: "null",
  }).output();
  if (code !== 0) {
    throw new Error(
      `sysctl -w ${MIGRATE_REQ}=${value}: ${new TextDecoder().decode(stderr).trim()}`,
    );
  }
}

/** One measured run. */
interface Row {
  readonly proxy: string;
  readonly handover: string;
  readonly mode: "keep-alive" | "close";
  readonly migrate: string;
  readonly figures: WrkFigures;
  /** What the handover took, as a phrase. */
  readonly took: string;
  /** The 1-minute load average before and after the run. */
  readonly load: string;
}

/** How one proxy is started and handed over. */
interface Contender {
  readonly proxy: string;
  readonly handover: string;
  /** Starts it on `port`. */
  readonly start: (port: number) => Promise<void>;
  /** Hands it over; resolves with what that took. */
  readonly handOver: () => Promise<string>;
  /** Stops whatever runs. */
  readonly stop: () => Promise<void>;
}

function goroundContender(engine: "goround" | "deno", backends: string): Contender {
  let running: Child | null = null;
  const started: Child[] = [];
  let flags: string[] = [];
  const command = (extra: string[]) => [
    "run",
    "--unstable-net",
    "--allow-net",
    `--allow-read=${ROOT}`,
    "--allow-env=GOROUND_*",
    `${ROOT}main.ts`,
    ...flags,
    ...extra,
  ];
  const banner = async (child: Child) => {
    const deadline = Date.now() + 15_000;
    while (!child.lines.some((line) => line.startsWith("  admin: "))) {
      if (Date.now() > deadline) {
        throw new Error(`goround did not start: ${child.lines.join(" / ")}`);
      }
      await sleep(20);
    }
  };
  return {
    proxy: engine === "goround" ? "goround" : "goround --engine deno",
    handover: "`--takeover`",
    start: async (port) => {
      flags = [
        "--listen",
        `127.0.0.1:${port}`,
        "--admin",
        `127.0.0.1:${freePort()}`,
        "--backends",
        backends,
        "--engine",
        engine,
        "--access-log",
        "off",
      ];
      running = spawn(Deno.execPath(), command([]));
      started.push(running);
      await banner(running);
    },
    handOver: async () => {
      const old = running!;
      const from = performance.now();
      const next = spawn(Deno.execPath(), command(["--takeover"]));
      started.push(next);
      running = next;
      await banner(next);
      const serving = performance.now() - from;
      const status = await old.exited;
      if (status.code !== 0) throw new Error(`the old goround exited ${status.code}`);
      const exited = performance.now() - from;
      return `new serving and holding the admin port ${(serving / 1000).toFixed(1)} s after its ` +
        `start; old exited 0 at ${(exited / 1000).toFixed(1)} s`;
    },
    stop: async () => {
      await Promise.all(started.splice(0).map(stop));
      running = null;
    },
  };
}

function nginxContender(dir: string, backendPorts: number[], workers: number): Contender {
  const conf = `${dir}/nginx.conf`;
  const base = ["-c", conf, "-p", dir, "-e", `${dir}/nginx.err`];
  let master: Child | null = null;
  return {
    proxy: "nginx",
    handover: "`nginx -s reload`",
    start: async (port) => {
      await Deno.writeTextFile(
        conf,
        nginxProxyConf({ port, backends: backendPorts, workers, dir }),
      );
      master = spawn("nginx", ["-g", "daemon off;", ...base]);
      await answering(port);
    },
    handOver: async () => {
      const started = performance.now();
      const { code } = await new Deno.Command("nginx", { args: [...base, "-s", "reload"] })
        .output();
      if (code !== 0) throw new Error(`nginx -s reload exited ${code}`);
      return `reload signalled in ${Math.round(performance.now() - started)} ms`;
    },
    stop: async () => {
      await stop(master);
      master = null;
    },
  };
}

async function loadAverage(): Promise<string> {
  const { code, stdout } = await new Deno.Command("cat", { args: ["/proc/loadavg"] }).output();
  return code === 0 ? new TextDecoder().decode(stdout).split(" ")[0]! : "?";
}

async function measure(
  contender: Contender,
  options: TakeoverToolOptions,
  setting: { mode: Row["mode"]; migrate: string },
): Promise<Row> {
  const port = freePort();
  await contender.start(port);
  const before = await loadAverage();
  try {
    const args = [
      `-t${options.threads}`,
      `-c${options.connections}`,
      `-d${options.duration}s`,
      "--timeout",
      "5s",
      ...(setting.mode === "close" ? ["-H", "Connection: close"] : []),
      `http://127.0.0.1:${port}/`,
    ];
    const wrk = new Deno.Command("wrk", { args, stdout: "piped", stderr: "piped" }).output();
    await sleep(options.at * 1000);
    const took = await contender.handOver();
    const output = await wrk;
    const text = new TextDecoder().decode(output.stdout) + new TextDecoder().decode(output.stderr);
    const figures = parseWrkText(text);
    const load = `${before} → ${await loadAverage()}`;
    return {
      proxy: contender.proxy,
      handover: contender.handover,
      ...setting,
      figures,
      took,
      load,
    };
  } finally {
    await contender.stop();
  }
}

function table(rows: readonly Row[]): string {
  const head = "| proxy | handover | connections | tcp_migrate_req | requests | failed | " +
    "connect | read | write | timeout | non-2xx | load avg |";
  const lines = [head, "|" + " --- |".repeat(12)];
  for (const row of rows) {
    const f = row.figures;
    const mode = row.mode === "close" ? "new per request" : "kept alive";
    lines.push(
      `| ${row.proxy} | ${row.handover} | ${mode} | ${row.migrate} | ${f.requests} | ` +
        `**${failuresOf(f)}** | ${f.connect} | ${f.read} | ${f.write} | ${f.timeout} | ` +
        `${f.non2xx} | ${row.load} |`,
    );
  }
  return lines.join("\n");
}

/**
 * Runs every handover under every setting and prints the table.
 *
 * @param options The run's settings.
 * @returns The rows.
 */
export async function runTakeoverTool(options: TakeoverToolOptions): Promise<Row[]> {
  await ensureTools(options.install);
  const found = await readMigrate();
  if (found === null && options.migrate.some((m) => m !== "current")) {
    throw new Error(`sysctl ${MIGRATE_REQ} failed: this kernel cannot migrate requests`);
  }
  const restore = async () => {
    if (found !== null && (await readMigrate()) !== found) {
      await writeMigrate(found);
      log(`tcp_migrate_req put back to ${found}`);
    }
  };
  const onInterrupt = () => void restore().finally(() => Deno.exit(130));
  Deno.addSignalListener("SIGINT", onInterrupt);
  const dir = await Deno.makeTempDir({ prefix: "goround-takeover-" });
  // nginx's workers may run as another user: let them read the directory.
  await Deno.chmod(dir, 0o755);
  const backends: BackendProcess[] = [];
  const rows: Row[] = [];
  try {
    for (let i = 0; i < 3; i++) backends.push(await spawnBackend(0));
    const ports = backends.map((b) => b.port);
    const urls = ports.map((port) => `http://127.0.0.1:${port}`).join(",");
    log(`backends: dummy_servers.ts on 127.0.0.1:${ports.join(", ")}`);
    const contenders = [
      ...options.engines.map((engine) => goroundContender(engine, urls)),
      nginxContender(dir, ports, navigator.hardwareConcurrency),
    ];
    for (const wanted of options.migrate) {
      if (wanted !== "current") await writeMigrate(wanted);
      const migrate = (await readMigrate()) ?? "absent";
      for (const mode of ["keep-alive", "close"] as const) {
        for (const contender of contenders) {
          log(`${contender.proxy}, ${mode}, tcp_migrate_req ${migrate}`);
          const row = await measure(contender, options, { mode, migrate });
          log(`  ${row.figures.requests} requests, ${failuresOf(row.figures)} failed; ${row.took}`);
          rows.push(row);
        }
      }
    }
  } finally {
    await restore();
    Deno.removeSignalListener("SIGINT", onInterrupt);
    for (const backend of backends) {
      try {
        backend.child.kill("SIGTERM");
      } catch {
        // Exited already.
      }
    }
    await Promise.all(backends.map((b) => b.exited));
    await Deno.remove(dir, { recursive: true });
  }
  return rows;
}

/** Prints the run's setup, then the table. */
function report(options: TakeoverToolOptions, rows: readonly Row[]): void {
  const kernel = Deno.osRelease();
  console.log(
    `wrk -t${options.threads} -c${options.connections} -d${options.duration}s, the handover ` +
      `${options.at} s in; goround (${navigator.hardwareConcurrency} workers) and nginx (${navigator.hardwareConcurrency} ` +
      `workers) over three dummy_servers.ts backends; ${navigator.hardwareConcurrency} cores, ` +
      `Linux ${kernel.trim()}, ${new Date().toISOString()}`,
  );
  console.log("");
  console.log(table(rows));
  for (const row of rows) {
    if (row.proxy.startsWith("goround")) {
      console.log(`\n${row.proxy}, ${row.mode}, tcp_migrate_req ${row.migrate}: ${row.took}`);
    }
  }
}

if (import.meta.main) {
  let options: TakeoverToolOptions | "help";
  try {
    options = parseToolArgs(Deno.args);
  } catch (error) {
    console.error(`takeover: ${(error as Error).message}`);
    Deno.exit(2);
  }
  if (options === "help") {
    console.log(USAGE);
  } else {
    try {
      report(options, await runTakeoverTool(options));
    } catch (error) {
      console.error(`takeover: ${(error as Error).message}`);
      Deno.exit(1);
    }
  }
}
