/**
 * Active health checks: a TCP connect to every backend each interval. A success on a dead
 * backend marks it alive; a failure on a live one marks it dead (the brief's transitions). Each
 * backend has its own probe loop, so one that hangs never delays the others' checks.
 *
 * @module
 */

import type { Backend } from "./config.ts";
import { describeError } from "./errors.ts";
import { type Pool, setAlive } from "./pool.ts";

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
  | { readonly ok: false; readonly reason: string };

/** Settings of the checker. */
export interface HealthOptions {
  /** Time between probes of one backend, ms. */
  readonly interval: number;
  /** Time a probe may take, ms. */
  readonly timeout: number;
  /** Called on every up/down transition this checker makes. */
  readonly onTransition?: (target: Target, up: boolean, reason: string) => void;
}

/** A running checker. */
export interface HealthChecker {
  /** Probes every backend once now and applies the results. */
  readonly checkNow: () => Promise<void>;
  /** Stops every loop and waits for probes in flight to finish. */
  readonly stop: () => Promise<void>;
}

/**
 * Opens and closes one TCP connection to the backend.
 *
 * @param backend The backend.
 * @param timeout Time allowed, ms.
 * @param signal Aborts the probe early.
 * @returns Success with the connect time, or failure with a short reason.
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
    const conn = await Deno.connect({
      hostname: backend.hostname,
      port: backend.port,
      signal: signal ? AbortSignal.any([signal, limit]) : limit,
    });
    conn.close();
    return { ok: true, ms: performance.now() - started };
  } catch (error) {
    return { ok: false, reason: limit.aborted ? "health check timed out" : describeError(error) };
  }
}

/**
 * Starts a probe loop per target. The first probes run at once; each loop then waits
 * `interval` after its previous probe finished.
 *
 * @param pool The shared pool whose alive flags are written.
 * @param targets The backends to check.
 * @param options Interval, timeout and a transition callback.
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

  const probeOnce = async (target: Target): Promise<void> => {
    const result = await probeTcp(target.backend, options.timeout, stopping.signal);
    if (stopping.signal.aborted) return;
    if (setAlive(pool, target.slot, result.ok)) {
      options.onTransition?.(target, result.ok, result.ok ? "" : result.reason);
    }
  };
  const track = (work: Promise<void>): Promise<void> => {
    running.add(work);
    return work.finally(() => running.delete(work));
  };
  const loop = (target: Target): void => {
    const timer = setTimeout(async () => {
      timers.delete(target.slot);
      await track(probeOnce(target));
      if (!stopping.signal.aborted) loop(target);
    }, options.interval);
    timers.set(target.slot, timer);
  };

  for (const target of targets) loop(target);
  return {
    checkNow: async () => {
      await Promise.all(targets.map((target) => track(probeOnce(target))));
    },
    stop: async () => {
      stopping.abort();
      for (const timer of timers.values()) clearTimeout(timer);
      timers.clear();
      await Promise.all([...running]);
    },
  };
}
