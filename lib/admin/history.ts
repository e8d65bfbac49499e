/**
 * The last 15 minutes of traffic, for the dashboard's charts: once a second the main thread
 * reads the shared counters (`balance/pool.ts`) into a ring of samples, and `GET /history`
 * turns each pair of neighbours into rates and latency quantiles. Kept here rather than in the
 * page, so a dashboard opened now shows what happened before it was opened.
 *
 * @module
 */

import { DURATION_BUCKETS, noBackendCount, type Pool, responseStats } from "../balance/pool.ts";

/** One backend's counters at one moment. */
export interface BackendSample {
  /** Responses by status class, 1xx to 5xx. */
  readonly classes: readonly number[];
  /** Responses per latency bucket of `DURATION_BUCKETS`, then +Inf (not cumulative). */
  readonly buckets: readonly number[];
}

/** Every counter the charts need, at one moment. */
export interface Sample {
  /** When (epoch ms). */
  readonly at: number;
  /** By backend ({@linkcode sampleKey}). */
  readonly backends: ReadonlyMap<string, BackendSample>;
  /** Requests answered 503 because no backend was usable, so far. */
  readonly noBackend: number;
}

/** One backend over one interval. */
export interface BackendPoint {
  /** Responses per second. */
  readonly rps: number;
  /** 5xx responses per second. */
  readonly errors: number;
  /** Median latency, seconds (`null`: no response in the interval). */
  readonly p50: number | null;
  /** 99th-percentile latency, seconds (`null`: no response in the interval). */
  readonly p99: number | null;
}

/** The pool over one interval. */
export interface Point {
  /** The interval's end (epoch ms). */
  readonly at: number;
  /** Responses per second by class: 2xx, 4xx, 5xx (1xx and 3xx count with 2xx). */
  readonly classes: readonly [number, number, number];
  /** Requests refused for want of a usable backend, per second. */
  readonly refused: number;
  /** By backend URL. */
  readonly backends: Readonly<Record<string, BackendPoint>>;
}

/** One pool as a sample reads it: its memory and the slot and URL of each backend. */
export interface SampledPool {
  /** Its name. */
  readonly name: string;
  /** Its shared memory. */
  readonly pool: Pool;
  /** Its member slots. */
  readonly slots: readonly number[];
  /** The backend of each slot. */
  readonly table: readonly ({ readonly url: string } | null)[];
}

/**
 * A backend's key in a sample: its URL while there is one pool, else `pool/URL` (one URL may
 * serve in two pools).
 *
 * @param pool The pool's name.
 * @param url The backend's URL.
 * @param pools How many pools there are.
 * @returns The key.
 */
export function sampleKey(pool: string, url: string, pools: number): string {
  return pools === 1 ? url : `${pool}/${url}`;
}

/**
 * Reads the counters of every backend of the pools.
 *
 * @param pools The pools.
 * @param at The time to stamp it with (epoch ms).
 * @returns The sample.
 */
export function takeSample(pools: readonly SampledPool[], at: number): Sample {
  const map = new Map<string, BackendSample>();
  let noBackend = 0;
  for (const { name, pool, slots, table } of pools) {
    for (const slot of slots) {
      const stats = responseStats(pool, slot);
      map.set(sampleKey(name, table[slot]!.url, pools.length), {
        classes: stats.classes.map(Number),
        buckets: stats.buckets.map(Number),
      });
    }
    noBackend += noBackendCount(pool);
  }
  return { at, backends: map, noBackend };
}

/**
 * The `q` quantile of the responses counted in `buckets`, interpolated linearly inside its
 * bucket as Prometheus' `histogram_quantile` does (the +Inf bucket answers its lower bound).
 *
 * @param buckets Counts per bucket of `bounds`, then +Inf (not cumulative).
 * @param bounds The buckets' upper bounds, seconds.
 * @param q The quantile, 0 to 1.
 * @returns Seconds, or `null` when nothing was counted.
 * @example
 * ```ts
 * import { quantile } from "./history.ts";
 * quantile([0, 10, 0], [0.001, 0.002], 0.5); // 0.0015
 * ```
 */
export function quantile(
  buckets: readonly number[],
  bounds: readonly number[],
  q: number,
): number | null {
  const total = buckets.reduce((sum, n) => sum + n, 0);
  if (total === 0) return null;
  const rank = q * total;
  let seen = 0;
  for (let i = 0; i < buckets.length; i++) {
    const n = buckets[i]!;
    if (seen + n >= rank && n > 0) {
      if (i >= bounds.length) return bounds[bounds.length - 1]!;
      const lower = i === 0 ? 0 : bounds[i - 1]!;
      return lower + (bounds[i]! - lower) * ((rank - seen) / n);
    }
    seen += n;
  }
  return bounds[bounds.length - 1]!;
}

/**
 * What happened between two samples, per second.
 *
 * @param before The earlier sample.
 * @param after The later one.
 * @returns The point (a backend only in `after` counts from zero).
 */
export function pointBetween(before: Sample, after: Sample): Point {
  const seconds = Math.max(0.001, (after.at - before.at) / 1000);
  const classes: [number, number, number] = [0, 0, 0];
  const backends: Record<string, BackendPoint> = {};
  for (const [url, now] of after.backends) {
    const then = before.backends.get(url);
    const delta = (list: readonly number[], old: readonly number[] | undefined) =>
      list.map((n, i) => Math.max(0, n - (old?.[i] ?? 0)));
    const byClass = delta(now.classes, then?.classes);
    const buckets = delta(now.buckets, then?.buckets);
    classes[0] += byClass[0]! + byClass[1]! + byClass[2]!;
    classes[1] += byClass[3]!;
    classes[2] += byClass[4]!;
    const responses = byClass.reduce((sum, n) => sum + n, 0);
    backends[url] = {
      rps: responses / seconds,
      errors: byClass[4]! / seconds,
      p50: quantile(buckets, DURATION_BUCKETS, 0.5),
      p99: quantile(buckets, DURATION_BUCKETS, 0.99),
    };
  }
  return {
    at: after.at,
    classes: [classes[0] / seconds, classes[1] / seconds, classes[2] / seconds],
    refused: Math.max(0, after.noBackend - before.noBackend) / seconds,
    backends,
  };
}

/** A running sampler. */
export interface History {
  /** The points of the samples held, oldest first. */
  readonly points: () => Point[];
  /** Stops sampling. */
  readonly stop: () => void;
}

/**
 * Starts sampling every `intervalMs`, keeping the last `size` samples.
 *
 * @param sample Takes one sample now.
 * @param options The interval (ms) and how many samples to keep. @default {1000 and 900}
 * @returns The sampler (its timer does not keep the process alive).
 */
export function startHistory(
  sample: () => Sample,
  options: { readonly intervalMs?: number; readonly size?: number } = {},
): History {
  const size = options.size ?? 900;
  const ring: Sample[] = [sample()];
  const timer = setInterval(() => {
    ring.push(sample());
    if (ring.length > size + 1) ring.shift();
  }, options.intervalMs ?? 1000);
  Deno.unrefTimer(timer);
  return {
    points: () => ring.slice(1).map((after, i) => pointBetween(ring[i]!, after)),
    stop: () => clearInterval(timer),
  };
}
