/**
 * V8's CPU profile of goround's request path under load: which functions the time of a small
 * keep-alive GET goes to (the README's Performance section quotes it). It starts a rung of
 * `least_proxy.ts` (default `core`: goround's front end, proxy core and upstream client on the
 * main thread, since Deno's inspector does not list worker threads) with `--inspect`, loads it
 * with `wrk -t1 -c32`, samples it with the inspector's `Profiler` every 50 µs, and prints the
 * self time of the busiest functions in µs per request. The sampling itself slows the process
 * about twofold, so the figures are shares, not costs.
 *
 * ```sh
 * deno run --allow-net=127.0.0.1 --allow-read=. \
 *   --allow-run="$(deno eval 'console.log(Deno.execPath())')",wrk \
 *   tools/bench/cpu_profile.ts --backends 9091,9092,9093 [--rung core] [--seconds 5]
 * ```
 *
 * The backends must be running already (fast ones: nginx, as `deno task bench` starts them).
 *
 * @module
 */

import { parseArgs } from "node:util";
import { RUNGS } from "./least_proxy.ts";

/** One node of a `Profiler.stop` profile. */
interface ProfileNode {
  readonly id: number;
  readonly callFrame: { readonly functionName: string; readonly url: string };
}

/** The profile `Profiler.stop` returns. */
export interface Profile {
  readonly nodes: readonly ProfileNode[];
  readonly samples: readonly number[];
  readonly startTime: number;
  readonly endTime: number;
}

/**
 * Self time per function, in µs per request, busiest first.
 *
 * @param profile The profile.
 * @param requests Requests served while it was taken.
 * @returns `[name, µs per request]` pairs; a name is the function and its file.
 */
export function selfTimes(profile: Profile, requests: number): [string, number][] {
  const names = new Map<number, string>();
  for (const node of profile.nodes) {
    const file = node.callFrame.url.split("/").pop() || "(native)";
    names.set(node.id, `${node.callFrame.functionName || "(anonymous)"} ${file}`);
  }
  const perSample = (profile.endTime - profile.startTime) / Math.max(1, profile.samples.length);
  const totals = new Map<string, number>();
  for (const id of profile.samples) {
    const name = names.get(id) ?? "(unknown)";
    totals.set(name, (totals.get(name) ?? 0) + perSample / requests);
  }
  return [...totals].sort((a, b) => b[1] - a[1]);
}

/** Sends inspector commands over one WebSocket and awaits their results. */
function inspector(socket: WebSocket): (method: string, params?: object) => Promise<unknown> {
  let next = 0;
  const waiting = new Map<number, (result: unknown) => void>();
  socket.onmessage = (event) => {
    const message = JSON.parse(event.data);
    waiting.get(message.id)?.(message.result);
    waiting.delete(message.id);
  };
  return (method, params = {}) =>
    new Promise((resolve) => {
      const id = ++next;
      waiting.set(id, resolve);
      socket.send(JSON.stringify({ id, method, params }));
    });
}

/** Runs `wrk -t1 -c32` against a port; returns how many requests it completed. */
async function load(port: number, seconds: number): Promise<number> {
  const output = await new Deno.Command("wrk", {
    args: ["-t1", "-c32", `-d${seconds}s`, `http://127.0.0.1:${port}/`],
    stdout: "piped",
    stderr: "piped",
  }).output();
  const text = new TextDecoder().decode(output.stdout);
  const requests = Number(/(\d+) requests in/.exec(text)?.[1]);
  if (!output.success || !(requests > 0)) throw new Error(`wrk failed: ${text.trim()}`);
  return requests;
}

/** A port that is free right now. */
function freePort(): number {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const { port } = listener.addr;
  listener.close();
  return port;
}

if (import.meta.main) {
  const { values } = parseArgs({
    args: Deno.args,
    options: {
      backends: { type: "string" },
      rung: { type: "string", default: "core" },
      seconds: { type: "string", default: "5" },
    },
    strict: true,
  });
  const backends = (values.backends ?? "").split(",").filter((p) => p !== "");
  const seconds = Number(values.seconds);
  if (backends.length === 0 || !RUNGS.includes(values.rung as typeof RUNGS[number])) {
    console.error(`usage: cpu_profile.ts --backends P1,P2,... [--rung ${RUNGS.join("|")}]`);
    Deno.exit(2);
  }
  if (!Number.isInteger(seconds) || seconds < 1) {
    console.error(`--seconds: "${values.seconds}" is not a whole number of seconds`);
    Deno.exit(2);
  }
  const port = freePort();
  const inspect = freePort();
  const child = new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      `--inspect=127.0.0.1:${inspect}`,
      "--allow-net=127.0.0.1",
      new URL("./least_proxy.ts", import.meta.url).pathname,
      values.rung!,
      String(port),
      ...backends,
    ],
    stdout: "piped",
    stderr: "null",
  }).spawn();
  const lines = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
  try {
    await lines.read(); // "<rung> rung on …": it listens
    const [target] = await (await fetch(`http://127.0.0.1:${inspect}/json/list`)).json();
    const socket = new WebSocket(target.webSocketDebuggerUrl);
    await new Promise((resolve) => (socket.onopen = resolve));
    const call = inspector(socket);
    await load(port, 2); // warm-up: the JIT settles
    await call("Profiler.enable");
    await call("Profiler.setSamplingInterval", { interval: 50 });
    await call("Profiler.start");
    const requests = await load(port, seconds);
    const { profile } = await call("Profiler.stop") as { profile: Profile };
    socket.close();
    const wall = (profile.endTime - profile.startTime) / requests;
    console.log(
      `${values.rung} rung: ${requests} requests in ${seconds} s while sampled, ` +
        `${wall.toFixed(1)} µs of wall time each; self time per request:`,
    );
    for (const [name, micros] of selfTimes(profile, requests).slice(0, 30)) {
      console.log(`${micros.toFixed(3).padStart(8)} µs  ${name}`);
    }
  } finally {
    child.kill();
    await child.status;
    await lines.cancel();
  }
}
