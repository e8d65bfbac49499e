/**
 * Chaos under load (`deno task chaos --load`): steady concurrent traffic through goround while,
 * on a schedule, backends are killed and restarted, made to hang, to answer 500 and to reset
 * connections, one at a time, so at least one backend is healthy throughout. Two runs: GET
 * traffic, which must see no failure at all, then POST traffic, where no request may reach two
 * backends (the backends record every `X-Chaos-Id` they receive, even the ones that get killed).
 *
 * Throughout both runs an attacker sends the poison requests of issue 13: a route every backend
 * answers 500, one that makes an application close the connection without an answer, and one
 * that makes it write a stray response after a 204 (a fourth backend, `support/buggy_app.ts`,
 * has those bugs). None of it may fail a legitimate request, empty the pool, or reach another
 * client: every legitimate answer must be a backend's own `Hello from Server`.
 *
 * @module
 */

import { type BackendProcess, CONTROL_HEADERS, spawnBackend } from "../dummy_servers.ts";
import { startGoround } from "../tests/support/helpers.ts";
import { type LoadReport, quantile, runLoad } from "./load_generator.ts";
import { serveBuggyApp } from "./buggy_app.ts";

/** Options of a chaos-under-load run. */
export interface LoadChaosOptions {
  /** goround's port (0: any free one). */
  readonly proxyPort: number;
  /** The three backends' ports (0: any free one). */
  readonly ports: readonly number[];
  /** Length of each run (GET, then POST), ms. */
  readonly duration: number;
  /** Concurrent client connections. */
  readonly connections: number;
  /** goround's `--workers`. */
  readonly workers: number;
}

/** One scheduled fault: at a fraction of the run, do something to a backend. */
interface Fault {
  /** When, as a fraction of the run (0-1). */
  readonly at: number;
  /** Which backend (0-2). */
  readonly backend: number;
  /** What. */
  readonly action: "kill" | "restart" | "hang" | "500" | "reset" | "ok";
}

/** The schedule: one backend misbehaves at a time, each kind of fault once. */
export const SCHEDULE: readonly Fault[] = [
  { at: 0.10, backend: 1, action: "kill" },
  { at: 0.25, backend: 1, action: "restart" },
  { at: 0.35, backend: 2, action: "hang" },
  { at: 0.50, backend: 2, action: "ok" },
  { at: 0.55, backend: 0, action: "500" },
  { at: 0.70, backend: 0, action: "ok" },
  { at: 0.75, backend: 1, action: "reset" },
  { at: 0.88, backend: 1, action: "ok" },
];

/** The poison requests, one of each every `ATTACK_EVERY_MS`. */
export const ATTACKS: readonly string[] = ["/attack/500", "/attack/drop", "/attack/stray"];
const ATTACK_EVERY_MS = 100;

/** Sends the poison requests until `stop` resolves; returns the statuses they got, by path. */
async function attack(
  port: number,
  stop: Promise<void>,
): Promise<Record<string, Record<string, number>>> {
  const seen: Record<string, Record<string, number>> = {};
  let stopped = false;
  stop.then(() => (stopped = true));
  while (!stopped) {
    await Promise.all(ATTACKS.map(async (path) => {
      const client = Deno.createHttpClient({ poolMaxIdlePerHost: 0 });
      let outcome: string;
      try {
        const res = await fetch(`http://127.0.0.1:${port}${path}`, {
          client,
          signal: AbortSignal.timeout(2000),
        });
        await res.body?.cancel();
        outcome = String(res.status);
      } catch {
        outcome = "no answer";
      } finally {
        client.close();
      }
      const counts = seen[path] ??= {};
      counts[outcome] = (counts[outcome] ?? 0) + 1;
    }));
    await new Promise((resolve) => setTimeout(resolve, ATTACK_EVERY_MS));
  }
  return seen;
}

/** What one run found. */
export interface RunResult {
  /** The client side. */
  readonly load: LoadReport;
  /** Request ids received by more than one backend. */
  readonly duplicates: number;
  /** Requests received by backends in all (retries make it exceed `unique`). */
  readonly received: number;
  /** Distinct request ids received. */
  readonly unique: number;
  /** goround's log lines about backend transitions during the run. */
  readonly transitions: string[];
  /** What the poison requests got, by path and status. */
  readonly attacks: Record<string, Record<string, number>>;
}

async function setMode(port: number, mode: string): Promise<void> {
  const res = await fetch(`http://127.0.0.1:${port}/_dummy/mode/${mode}`, {
    method: "POST",
    headers: CONTROL_HEADERS,
  });
  await res.body?.cancel();
}

function countDuplicates(
  backends: readonly Pick<BackendProcess, "ids">[],
): { received: number; unique: number; duplicates: number } {
  const seen = new Map<string, number>();
  let received = 0;
  for (const backend of backends) {
    for (const id of new Set(backend.ids)) {
      received++;
      seen.set(id, (seen.get(id) ?? 0) + 1);
    }
  }
  return {
    received,
    unique: seen.size,
    duplicates: [...seen.values()].filter((n) => n > 1).length,
  };
}

/**
 * Runs GET then POST load with the fault schedule, printing a report.
 *
 * @param options Ports, duration, connections and workers.
 * @param print Receives each output line.
 * @returns `true` when the GET run had no failure and the POST run no duplicate delivery.
 */
export async function runLoadChaos(
  options: LoadChaosOptions,
  print: (line: string) => void,
): Promise<boolean> {
  const backends: BackendProcess[] = [];
  const everyProcess: BackendProcess[] = [];
  for (const port of options.ports) {
    const backend = await spawnBackend(port, { record: true });
    backends.push(backend);
    everyProcess.push(backend);
  }
  const ports = backends.map((b) => b.port);
  const buggy = serveBuggyApp();
  print(`Backends on ${ports.join(", ")} (one process each, recording request ids)`);
  print(`A buggy application on ${buggy.port} (drops connections, writes after a 204)`);
  const proxy = await startGoround([
    "--listen",
    `127.0.0.1:${options.proxyPort}`,
    "--backends",
    [...ports, buggy.port].map((p) => `http://127.0.0.1:${p}`).join(","),
    "--workers",
    String(options.workers),
    "--health-path",
    "/healthz",
    "--health-interval",
    "250ms",
    "--health-timeout",
    "300ms",
    "--connect-timeout",
    "300ms",
    "--response-timeout",
    "500ms",
    "--max-fails",
    "3",
    "--fail-window",
    "2s",
    "--ejection-time",
    "2s",
  ]);
  print(
    `${
      proxy.stderr[0]
    } (HTTP checks every 250ms, response timeout 500ms, max 3 fails in 2s, ejection 2s)`,
  );

  const run = async (method: "GET" | "POST"): Promise<RunResult> => {
    const start = proxy.stderr.length;
    const before = everyProcess.map((b) => b.ids.length);
    const timers: ReturnType<typeof setTimeout>[] = [];
    const actions: Promise<void>[] = [];
    for (const fault of SCHEDULE) {
      timers.push(setTimeout(() => {
        const index = fault.backend;
        const port = ports[index]!;
        actions.push((async () => {
          if (fault.action === "kill") {
            backends[index]!.child.kill("SIGKILL");
            await backends[index]!.exited;
          } else if (fault.action === "restart") {
            const reborn = await spawnBackend(port, { record: true });
            backends[index] = reborn;
            everyProcess.push(reborn);
          } else {
            await setMode(port, fault.action);
          }
          print(
            `  t=${
              (fault.at * options.duration / 1000).toFixed(1)
            }s backend ${port}: ${fault.action}`,
          );
        })());
      }, fault.at * options.duration));
    }
    let loadDone = () => {};
    const attacking = attack(proxy.port, new Promise<void>((resolve) => (loadDone = resolve)));
    const buggyBefore = buggy.ids.length;
    const load = await runLoad({
      port: proxy.port,
      connections: options.connections,
      duration: options.duration,
      method,
      idPrefix: `${method.toLowerCase()}-`,
      timeout: 5000,
      bodyStartsWith: "Hello from Server ",
    });
    loadDone();
    const attacks = await attacking;
    for (const timer of timers) clearTimeout(timer);
    await Promise.all(actions);
    // Let the backends' "seen" lines drain through their stdout pipes.
    await new Promise((resolve) => setTimeout(resolve, 300));
    const counted = countDuplicates([
      ...everyProcess.map((b, i) => ({ ids: b.ids.slice(before[i] ?? 0) })),
      { ids: buggy.ids.slice(buggyBefore) },
    ]);
    const transitions = proxy.stderr.slice(start).filter((l) =>
      / (UP|DOWN|EJECTED|back from ejection)/.test(l)
    );
    return { load, ...counted, transitions, attacks };
  };

  const report = (method: string, result: RunResult) => {
    const { load } = result;
    const failed = load.requests - load.successes;
    print(
      `${method} run: ${load.requests} requests, ${load.successes} succeeded, ${failed} failed`,
    );
    for (const [kind, n] of Object.entries(load.failures)) print(`  failures: ${n} × ${kind}`);
    print(
      `  latency p50 ${quantile(load.latencies, 0.5).toFixed(1)} ms, p99 ${
        quantile(load.latencies, 0.99).toFixed(1)
      } ms, max ${(load.latencies.at(-1) ?? 0).toFixed(1)} ms`,
    );
    print(
      `  backends received ${result.received} requests for ${result.unique} ids: ` +
        `${result.received - result.unique} retries; ${result.duplicates} ids reached two backends`,
    );
    for (const [path, counts] of Object.entries(result.attacks)) {
      const shown = Object.entries(counts).map(([status, n]) => `${n} × ${status}`).join(", ");
      print(`  attack ${path}: ${shown}`);
    }
    print(`  transitions:`);
    for (const line of result.transitions) print(`    ${line.replace(/^\S+ /, "")}`);
  };

  try {
    print(`# GET traffic: ${options.connections} connections for ${options.duration / 1000}s`);
    const gets = await run("GET");
    report("GET", gets);
    for (const [i, port] of ports.entries()) {
      if (
        (await fetch(`http://127.0.0.1:${port}/_dummy/stats`).then((r) => r.json()).catch(() =>
          null
        )) === null
      ) {
        backends[i] = await spawnBackend(port, { record: true });
        everyProcess.push(backends[i]!);
      }
    }
    print(
      `# POST traffic (1 KiB bodies): ${options.connections} connections for ${
        options.duration / 1000
      }s`,
    );
    const posts = await run("POST");
    report("POST", posts);
    const getsOk = gets.load.successes === gets.load.requests;
    const postsOk = posts.duplicates === 0;
    print(getsOk ? "GET: no failed request." : "GET: FAILED, some requests failed.");
    print(
      postsOk
        ? "POST: no request reached two backends."
        : "POST: FAILED, requests were delivered twice.",
    );
    return getsOk && postsOk;
  } finally {
    await proxy.stop();
    for (const backend of backends) {
      try {
        backend.child.kill("SIGTERM");
      } catch {
        // Killed already.
      }
    }
    await Promise.all(everyProcess.map((b) => b.exited));
    await buggy.close();
  }
}
