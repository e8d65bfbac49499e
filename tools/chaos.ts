/**
 * The brief's "Chaos Monkey" acceptance test, unattended: start three backends and goround,
 * show the round-robin cycle, kill the middle backend for real, show that it is skipped, then
 * restart it and show it rejoining. Exits 1 on any deviation.
 *
 * ```sh
 * deno task chaos                              # backends 8081-8083, goround on :8000
 * deno task chaos --proxy-port 0 --ports 0,0,0 # free ports (what the tests use)
 * deno task chaos --load                       # chaos under load (see chaos_load.ts)
 * deno task chaos --load --duration 5s         # a short one
 * deno task chaos --goround ~/.deno/bin/goround # through an installed goround command
 * ```
 *
 * @module
 */

import { parseArgs } from "node:util";
import { type BackendProcess, lineSplitter, spawnBackend } from "../dummy_servers.ts";
import { parseDuration } from "../lib/config/duration.ts";
import { runLoadChaos } from "./chaos_load.ts";

/** Options of a chaos run. */
export interface ChaosOptions {
  /** goround's port (0: any free one). */
  readonly proxyPort: number;
  /** The three backends' ports (0: any free one). */
  readonly ports: readonly number[];
  /** goround's `--health-interval`. */
  readonly healthInterval: string;
  /** goround's `--workers`. */
  readonly workers: number;
  /** A `goround` command to run (e.g. one `deno task install` made); default: `main.ts` with
   * `deno run`. */
  readonly goround?: string;
}

const ROOT = new URL("..", import.meta.url).pathname;

class Deviation extends Error {}

function expect(condition: boolean, message: string): void {
  if (!condition) throw new Deviation(message);
}

/** One request on a fresh connection (as `curl` does), returning the body text. */
async function curl(port: number): Promise<string> {
  const client = Deno.createHttpClient({ poolMaxIdlePerHost: 0 });
  try {
    const res = await fetch(`http://127.0.0.1:${port}/`, { client });
    const text = await res.text();
    return res.status === 200 ? text : `HTTP ${res.status}: ${text.trim()}`;
  } catch (error) {
    return `request failed: ${(error as Error).message}`;
  } finally {
    client.close();
  }
}

async function until(what: string, timeout: number, check: () => boolean): Promise<void> {
  const deadline = Date.now() + timeout;
  while (!check()) {
    if (Date.now() > deadline) {
      throw new Deviation(`timed out after ${timeout} ms waiting for ${what}`);
    }
    await new Promise((resolve) => setTimeout(resolve, 25));
  }
}

/**
 * Runs the chaos sequence, printing what the brief shows.
 *
 * @param options Ports, health interval and workers.
 * @param print Receives each output line.
 * @returns `true` when every step behaved as the brief requires.
 */
export async function runChaos(
  options: ChaosOptions,
  print: (line: string) => void,
): Promise<boolean> {
  const backends: BackendProcess[] = [];
  let goround: Deno.ChildProcess | null = null;
  let drained: Promise<unknown> = Promise.resolve();
  const logs: string[] = [];
  try {
    print("# 1. Start the backends");
    for (const port of options.ports) backends.push(await spawnBackend(port));
    print(`Listening on ${backends.map((b) => b.port).join(", ")}...`);
    const [first, victim, third] = backends as [BackendProcess, BackendProcess, BackendProcess];

    print("# 2. Start the load balancer");
    const program = options.goround ?? Deno.execPath();
    const run = options.goround
      ? []
      : ["run", "--unstable-net", "--allow-net", `--allow-read=${ROOT}`, `${ROOT}main.ts`];
    goround = new Deno.Command(program, {
      args: [
        ...run,
        "--listen",
        `127.0.0.1:${options.proxyPort}`,
        "--backends",
        backends.map((b) => `http://127.0.0.1:${b.port}`).join(","),
        "--health-interval",
        options.healthInterval,
        "--workers",
        String(options.workers),
        "--admin",
        "off",
      ],
      stdout: "piped",
      stderr: "piped",
      stdin: "null",
    }).spawn();
    const collect = async (stream: ReadableStream<Uint8Array>, echo: boolean) => {
      for await (
        const line of stream.pipeThrough(new TextDecoderStream()).pipeThrough(lineSplitter())
      ) {
        logs.push(line);
        if (echo) print(`  [goround] ${line}`);
      }
    };
    drained = Promise.all([collect(goround.stdout, false), collect(goround.stderr, true)]);
    let exited = false;
    goround.status.then(() => (exited = true));
    await until("goround's banner", 15_000, () => {
      expect(!exited, `goround exited: ${logs.at(-1) ?? "no output"}`);
      return logs.some((l) => l.startsWith("Load Balancer started at"));
    });
    const banner = logs.find((l) => l.startsWith("Load Balancer started at"))!;
    print(banner);
    const port = Number(/:(\d+)$/.exec(banner)![1]);

    print("# 3. The happy path");
    const happy: string[] = [];
    for (let i = 0; i < 4; i++) happy.push(await curl(port));
    happy.forEach((line) => print(line));
    const names = (list: BackendProcess[]) => list.map((b) => `Hello from Server ${b.port}`);
    expect(
      JSON.stringify(happy) === JSON.stringify(names([first, victim, third, first])),
      `the cycle should be ${names([first, victim, third, first]).join(", ")}`,
    );

    print(`# 4. The kill: server ${victim.port} (pid ${victim.pid}) gets SIGKILL`);
    victim.child.kill("SIGKILL");
    await victim.exited;

    print("# 5. The resilience check");
    const after: string[] = [];
    for (let i = 0; i < 4; i++) after.push(await curl(port));
    after.forEach((line) => print(line));
    const alive = names([first, third]);
    expect(
      after.every((line) => alive.includes(line)),
      `every reply should come from ${alive.join(" or ")}`,
    );
    expect(
      after.every((line, i) => i === 0 || line !== after[i - 1]),
      "the live servers should alternate",
    );

    print(`# 6. Beyond the brief: restart server ${victim.port} and watch it rejoin`);
    const reborn = await spawnBackend(victim.port);
    backends[1] = reborn;
    print(`Listening on ${reborn.port}... (pid ${reborn.pid})`);
    await until(
      `goround to report ${victim.port} UP`,
      30_000,
      () => logs.some((l) => l.includes(`:${victim.port} UP`)),
    );
    const rejoined: string[] = [];
    for (let i = 0; i < 6; i++) rejoined.push(await curl(port));
    rejoined.forEach((line) => print(line));
    expect(
      rejoined.filter((line) => line === `Hello from Server ${victim.port}`).length === 2,
      `server ${victim.port} should take a third of the requests again`,
    );
    expect(rejoined.every((line) => names(backends).includes(line)), "every reply should succeed");
    print(
      `Chaos test passed: no failed request; ${victim.port} was skipped while dead and rejoined.`,
    );
    return true;
  } catch (error) {
    if (!(error instanceof Deviation)) throw error;
    print(`Chaos test FAILED: ${error.message}`);
    return false;
  } finally {
    if (goround) {
      try {
        goround.kill("SIGTERM");
      } catch {
        // Already gone.
      }
      await goround.status;
    }
    await drained;
    for (const backend of backends) {
      try {
        backend.child.kill("SIGTERM");
      } catch {
        // Killed already.
      }
      await backend.exited;
    }
  }
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    args: Deno.args,
    options: {
      "proxy-port": { type: "string", default: "8000" },
      ports: { type: "string", default: "8081,8082,8083" },
      "health-interval": { type: "string", default: "1s" },
      workers: { type: "string", default: String(navigator.hardwareConcurrency) },
      load: { type: "boolean", default: false },
      duration: { type: "string", default: "30s" },
      connections: { type: "string", default: "64" },
      goround: { type: "string" },
    },
    strict: true,
  });
  const ports = values.ports.split(",").map(Number);
  if (ports.length !== 3 || ports.some((p) => !Number.isInteger(p) || p < 0 || p > 65535)) {
    console.error(
      `chaos: --ports: "${values.ports}" is not three ports: expected e.g. 8081,8082,8083`,
    );
    Deno.exit(2);
  }
  const print = (line: string) => console.log(line);
  const common = {
    proxyPort: Number(values["proxy-port"]),
    ports,
    workers: Number(values.workers),
  };
  const ok = values.load
    ? await runLoadChaos({
      ...common,
      duration: parseDuration(values.duration),
      connections: Number(values.connections),
    }, print)
    : await runChaos({
      ...common,
      healthInterval: values["health-interval"],
      ...(values.goround ? { goround: values.goround } : {}),
    }, print);
  Deno.exit(ok ? 0 : 1);
}

if (import.meta.main) await main();
