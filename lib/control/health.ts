/**
 * Active health checks. Each backend has its own probe loop (so one that hangs never delays
 * another's checks): a TCP connect by default (the brief), or an HTTP `GET` of a path, healthy
 * on 2xx/3xx. `fall` failed probes in a row take a live backend down; `rise` passed probes in a
 * row bring a dead one back (1 and 1 by default: the brief's transitions). A backend that joined
 * the pool down and was never probed comes up on its first passed probe, whatever `rise` (as
 * Envoy treats a new host's first check). The streaks live in shared memory, where the admin
 * status reads them.
 *
 * @module
 */

import type { Backend } from "../config/config.ts";
import { describeError } from "../errors.ts";
import { encodeLatin1, parseResponseHead, ProtocolError } from "../http/http1.ts";
import { isAlive, type Pool, recordProbe, setAlive, totals } from "../balance/pool.ts";
import { connectTcp } from "../upstream/connect.ts";

/** A backend and the pool slot holding its state. */
export interface Target {
  /** The slot. */
  readonly slot: number;
  /** The backend. */
  readonly backend: Backend;
}

/** Result of one probe. */
export type ProbeResult =
  | { readonly ok: true; readonly ms: number }
  | { readonly ok: false; readonly ms: number; readonly reason: string };

/** Settings of the checker. */
export interface HealthOptions {
  /** Time between probes of one backend, ms (each wait is jittered by ±10%, so probes of many
   * backends, and of many goround instances, do not fall into step). */
  readonly interval: number;
  /** Time between probes while a backend is down, ms (0: `interval`). @default {0} */
  readonly fastInterval?: number;
  /** Time a probe may take, ms. */
  readonly timeout: number;
  /** HTTP path to `GET`; empty for a TCP connect check. @default {""} */
  readonly path?: string;
  /** Passed probes in a row that bring a dead backend back. @default {1} */
  readonly rise?: number;
  /** Failed probes in a row that take a live backend down. @default {1} */
  readonly fall?: number;
  /** CA certificates for HTTP checks of https:// backends. @default {[]} */
  readonly caCerts?: string[];
  /** Called after every probe with its result. */
  readonly onProbe?: (target: Target, result: ProbeResult) => void;
  /** Called on every up/down transition this checker makes. */
  readonly onTransition?: (target: Target, up: boolean, reason: string) => void;
}

/** A running checker. */
export interface HealthChecker {
  /** Probes every backend (or those in `slots`) once now and applies the results. */
  readonly checkNow: (slots?: readonly number[]) => Promise<void>;
  /** Replaces the backends checked and the settings; loops of backends that stay go on. */
  readonly update: (targets: readonly Target[], options: HealthOptions) => void;
  /** Stops every loop and waits for probes in flight to finish. */
  readonly stop: () => Promise<void>;
}

function elapsed(started: number): number {
  return performance.now() - started;
}

function failed(started: number, limit: AbortSignal, error: unknown): ProbeResult {
  const reason = limit.aborted ? "health check timed out" : describeError(error);
  return { ok: false, ms: elapsed(started), reason };
}

/**
 * Opens and closes one TCP connection to the backend.
 *
 * @param backend The backend.
 * @param timeout Time allowed, ms.
 * @param signal Aborts the probe early.
 * @returns Success or failure (with a short reason), and the time it took.
 * @example
 * ```ts ignore
 * const result = await probeTcp(backend, 2000);
 * if (!result.ok) console.log(result.reason); // "connection refused"
 * ```
 */
export async function probeTcp(
  backend: Backend,
  timeout: number,
  signal?: AbortSignal,
): Promise<ProbeResult> {
  const started = performance.now();
  const limit = AbortSignal.timeout(timeout);
  try {
    const conn = await connectTcp({
      hostname: backend.hostname,
      port: backend.port,
      signal: signal ? AbortSignal.any([signal, limit]) : limit,
    });
    conn.close();
    return { ok: true, ms: elapsed(started) };
  } catch (error) {
    return failed(started, limit, error);
  }
}

/**
 * Sends `GET path` to the backend and reads the response head: healthy on 2xx and 3xx.
 *
 * @param backend The backend.
 * @param path The path, e.g. `/healthz`.
 * @param timeout Time allowed for the whole exchange, ms.
 * @param signal Aborts the probe early.
 * @returns Success or failure (with a short reason such as `HTTP 503`), and the time it took.
 */
export async function probeHttp(
  backend: Backend,
  path: string,
  timeout: number,
  signal?: AbortSignal,
  caCerts: string[] = [],
): Promise<ProbeResult> {
  const started = performance.now();
  const limit = AbortSignal.timeout(timeout);
  const stop = signal ? AbortSignal.any([signal, limit]) : limit;
  let conn: Deno.Conn | null = null;
  const close = () => {
    try {
      conn?.close();
    } catch {
      // Closed already.
    }
  };
  try {
    const tcp = await connectTcp({
      hostname: backend.hostname,
      port: backend.port,
      signal: stop,
    });
    conn = tcp;
    stop.addEventListener("abort", close, { once: true });
    if (backend.tls) {
      conn = await Deno.startTls(tcp, {
        hostname: backend.hostname,
        ...(caCerts.length ? { caCerts } : {}),
      });
    }
    const host = new URL(backend.url).host;
    await conn.write(encodeLatin1(
      `GET ${path} HTTP/1.1\r\nHost: ${host}\r\nUser-Agent: goround-health\r\nConnection: close\r\n\r\n`,
    ));
    const buf = new Uint8Array(16 * 1024);
    let end = 0;
    while (true) {
      const n = end < buf.length ? await conn.read(buf.subarray(end)) : null;
      if (n === null) throw new ProtocolError("no complete response head");
      end += n;
      const head = parseResponseHead(buf, 0, end);
      if (head === null || head.status < 200) continue;
      if (head.status < 400) return { ok: true, ms: elapsed(started) };
      return { ok: false, ms: elapsed(started), reason: `health check got HTTP ${head.status}` };
    }
  } catch (error) {
    if (error instanceof ProtocolError) {
      return { ok: false, ms: elapsed(started), reason: `health check: ${error.message}` };
    }
    return failed(started, limit, error);
  } finally {
    stop.removeEventListener("abort", close);
    close();
  }
}

/**
 * A probe interval with ±10% jitter, so the probes of many backends (and of many goround
 * instances) do not fall into step.
 *
 * @param base The interval, ms.
 * @param random A number in [0, 1).
 * @returns Between 0.9 and 1.1 times `base`.
 */
export function jittered(base: number, random: number = Math.random()): number {
  return base * (0.9 + random * 0.2);
}

/**
 * Starts a probe loop per target; each loop probes, then waits `interval`. Call
 * {@linkcode HealthChecker.checkNow} first for an immediate round.
 *
 * @param pool The shared pool whose alive flags and streaks are written.
 * @param targets The backends to check.
 * @param options Interval, timeout, check kind, rise/fall and callbacks.
 * @returns The running checker.
 */
export function startHealthChecks(
  pool: Pool,
  targets: readonly Target[],
  options: HealthOptions,
): HealthChecker {
  const stopping = new AbortController();
  const timers = new Map<number, ReturnType<typeof setTimeout>>();
  const running = new Set<Promise<void>>();
  let current = options;
  let checked = [...targets];

  /** Whether `target` is still checked: its slot, with the same backend in it (a removed
   * backend's slot may be reused for another while a probe of the old one is under way). */
  const isChecked = (target: Target): boolean =>
    checked.some((t) => t.slot === target.slot && t.backend.url === target.backend.url);
  const probeOnce = async (target: Target): Promise<void> => {
    const { timeout, path = "" } = current;
    const result = path === ""
      ? await probeTcp(target.backend, timeout, stopping.signal)
      : await probeHttp(target.backend, path, timeout, stopping.signal, current.caCerts ?? []);
    if (stopping.signal.aborted || !isChecked(target)) return;
    const probed = totals(pool, target.slot);
    const first = probed.probesOk + probed.probesFailed === 0n;
    const streak = recordProbe(pool, target.slot, result.ok, result.ms * 1000);
    current.onProbe?.(target, result);
    const alive = isAlive(pool, target.slot);
    if (result.ok && !alive && (first || streak.passes >= (current.rise ?? 1))) {
      if (setAlive(pool, target.slot, true)) current.onTransition?.(target, true, "");
    } else if (!result.ok && alive && streak.misses >= (current.fall ?? 1)) {
      if (setAlive(pool, target.slot, false)) {
        current.onTransition?.(target, false, result.reason);
        // A probe outside the loop (checkNow) found it down: recheck at the fast interval
        // instead of waiting out the normal one already scheduled.
        const pending = timers.get(target.slot);
        if (pending !== undefined && (current.fastInterval ?? 0) > 0) {
          clearTimeout(pending);
          loop(target);
        }
      }
    }
  };
  const track = (work: Promise<void>): Promise<void> => {
    running.add(work);
    return work.finally(() => running.delete(work));
  };
  const loop = (target: Target): void => {
    const down = !isAlive(pool, target.slot);
    const base = down && (current.fastInterval ?? 0) > 0 ? current.fastInterval! : current.interval;
    const timer = setTimeout(async () => {
      timers.delete(target.slot);
      await track(probeOnce(target));
      if (!stopping.signal.aborted && isChecked(target)) loop(target);
    }, jittered(base));
    timers.set(target.slot, timer);
  };

  for (const target of checked) loop(target);
  return {
    checkNow: async (slots) => {
      const targets = slots ? checked.filter((t) => slots.includes(t.slot)) : checked;
      await Promise.all(targets.map((target) => track(probeOnce(target))));
    },
    update: (next, nextOptions) => {
      current = nextOptions;
      const before = new Map(checked.map((t) => [t.slot, t]));
      checked = [...next];
      for (const target of checked) {
        const old = before.get(target.slot);
        if (old && old.backend.url === target.backend.url) continue;
        const timer = timers.get(target.slot);
        if (timer !== undefined) clearTimeout(timer);
        loop(target);
      }
      for (const slot of before.keys()) {
        if (checked.some((t) => t.slot === slot)) continue;
        const timer = timers.get(slot);
        if (timer !== undefined) clearTimeout(timer);
        timers.delete(slot);
      }
    },
    stop: async () => {
      stopping.abort();
      for (const timer of timers.values()) clearTimeout(timer);
      timers.clear();
      await Promise.all([...running]);
    },
  };
}
