/**
 * DNS service discovery: the pool's backends taken from DNS instead of flags, and kept up to date.
 *
 * - `dns:NAME:PORT`: every A and AAAA address of `NAME` is a backend on `PORT` (weight 1).
 * - `srv:NAME`: every SRV record of `NAME` (RFC 2782) of the lowest priority value is a backend
 *   at each address of its target, on the record's port, with the record's weight (0 counts as
 *   1, and more than 1000 as 1000, the range goround's weights take).
 *
 * {@linkcode resolveBackends} turns one DNS answer into a sorted backend list (so an unchanged
 * answer gives an identical list, whatever order the server rotated the records into);
 * {@linkcode startDiscovery} re-resolves on an interval and reports only changes. A name that
 * has no records of one type is not a failure; a server that times out, refuses or answers
 * nothing at all for the name is, and then the last good set stays: a DNS outage never empties
 * the pool.
 *
 * `Deno.resolveDns` needs `--allow-net`.
 *
 * @module
 */

import type { Backend } from "../config/config.ts";
import { parseBackend } from "../config/values.ts";
import {
  type DiscoverySpec,
  formatDiscoverySpec,
  type NameServer,
} from "../config/discovery_spec.ts";
import { describeError } from "../errors.ts";

export type { Backend };

/** Discovery found no backend: the resolver failed, or the name has no usable records. */
export class DiscoveryError extends Error {
  /**
   * Creates the error.
   *
   * @param message What failed, starting with the discovery target.
   */
  constructor(message: string) {
    super(message);
    this.name = "DiscoveryError";
  }
}

/** Default time one resolution (every query it makes) may take, ms. */
export const DEFAULT_RESOLVE_TIMEOUT = 5000;

/** Highest backend weight goround takes (as `parseBackend` checks). */
const MAX_WEIGHT = 1000;

/**
 * The backend at an address: `http://1.2.3.4:PORT`, or `http://[::1]:PORT` for IPv6.
 *
 * @param address An IPv4 or IPv6 address (without brackets).
 * @param port The TCP port.
 * @param weight The weight, 1 to 1000.
 * @returns The backend, shaped as `parseBackend` makes them.
 */
export function backendAt(address: string, port: number, weight = 1): Backend {
  const host = address.includes(":") ? `[${address}]` : address;
  return parseBackend(`http://${host}:${port}${weight === 1 ? "" : `,weight=${weight}`}`);
}

/**
 * The weight a backend gets from an SRV record's weight: the same number, within 1 to 1000 (a
 * weight of 0 means "rarely" in RFC 2782; goround has no such share, so it is 1).
 *
 * @param srvWeight The record's weight, 0 to 65535.
 * @returns The backend weight.
 */
export function weightFromSrv(srvWeight: number): number {
  return Math.min(MAX_WEIGHT, Math.max(1, Math.floor(srvWeight)));
}

/**
 * Puts backends in the order discovery reports them: by URL, one per URL (weights of
 * duplicates, as from two SRV records naming the same address and port, are added up, within
 * 1000).
 *
 * @param backends Backends in any order.
 * @returns A new, sorted list without duplicate URLs.
 */
export function normaliseBackends(backends: readonly Backend[]): Backend[] {
  const byUrl = new Map<string, Backend>();
  for (const backend of backends) {
    const seen = byUrl.get(backend.url);
    const weight = Math.min(MAX_WEIGHT, (seen?.weight ?? 0) + backend.weight);
    byUrl.set(backend.url, seen ? { ...seen, weight } : backend);
  }
  return [...byUrl.values()].sort((a, b) => (a.url < b.url ? -1 : a.url > b.url ? 1 : 0));
}

/**
 * Whether two discovered sets are the same: the same URLs with the same weights, in order.
 *
 * @param a One list (as {@linkcode normaliseBackends} orders them).
 * @param b The other.
 * @returns Whether they are equal.
 */
export function sameBackends(a: readonly Backend[], b: readonly Backend[]): boolean {
  return a.length === b.length &&
    a.every((backend, i) => backend.url === b[i]!.url && backend.weight === b[i]!.weight);
}

/** Options of {@linkcode resolveBackends}. */
export interface ResolveOptions {
  /** The DNS server to ask. @default {the system's resolvers} */
  readonly nameServer?: NameServer;
  /** Time the whole resolution may take, ms. @default {DEFAULT_RESOLVE_TIMEOUT} */
  readonly timeout?: number;
  /** Abandons the resolution (it then rejects with the signal's reason). */
  readonly signal?: AbortSignal;
}

/** What every query of one resolution shares. */
interface Resolution {
  /** The target, for messages. */
  readonly label: string;
  readonly nameServer: NameServer | undefined;
  /** The caller's signal (stop). */
  readonly stop: AbortSignal | undefined;
  /** Fires when the time limit is up. */
  readonly limit: AbortSignal;
  readonly timeout: number;
}

/** Runs one query; "no records of this type" is `[]`, any other failure a DiscoveryError. */
async function query<T>(
  resolution: Resolution,
  name: string,
  type: string,
  ask: (options: Deno.ResolveDnsOptions) => Promise<T[]>,
): Promise<T[]> {
  const { nameServer, stop, limit } = resolution;
  const signal = stop ? AbortSignal.any([stop, limit]) : limit;
  try {
    return await ask(nameServer ? { nameServer, signal } : { signal });
  } catch (error) {
    // NotFound is an answer (NXDOMAIN, or no records of this type: a name with only IPv4
    // addresses has no AAAA); everything else (a timeout, a refused socket) is a failure.
    if (error instanceof Deno.errors.NotFound) return [];
    if (stop?.aborted) throw stop.reason;
    const why = limit.aborted
      ? `timed out after ${resolution.timeout} ms`
      : describeError(error).replace(/^proto error: /, "");
    throw new DiscoveryError(`${resolution.label}: ${type} lookup of ${name} failed: ${why}`);
  }
}

/**
 * Like `Promise.all`, but settles only once every promise has: a failed query never leaves
 * its sibling running after the resolution has been reported (and `stop()` has returned).
 */
async function allSettled<T>(promises: readonly Promise<T>[]): Promise<T[]> {
  const results = await Promise.allSettled(promises);
  const failed = results.find((r): r is PromiseRejectedResult => r.status === "rejected");
  if (failed) throw failed.reason;
  return results.map((r) => (r as PromiseFulfilledResult<T>).value);
}

async function addressesOf(resolution: Resolution, name: string): Promise<string[]> {
  const [v4 = [], v6 = []] = await allSettled([
    query(resolution, name, "A", (options) => Deno.resolveDns(name, "A", options)),
    query(resolution, name, "AAAA", (options) => Deno.resolveDns(name, "AAAA", options)),
  ]);
  return [...v4, ...v6];
}

/**
 * Resolves a discovery target to backends, once. For `dns:NAME:PORT`: the A and AAAA addresses
 * of `NAME` on `PORT`. For `srv:NAME`: the SRV records of `NAME` with the lowest priority value
 * (RFC 2782: higher values are fallbacks, which goround's pool has no notion of), each target's
 * A and AAAA addresses on the record's port, weighted by the record's weight (see
 * {@linkcode weightFromSrv}).
 *
 * No records of one type is not an error (a name may have only IPv4 addresses, or an SRV target
 * may be gone); a query that fails (timeout, refused socket) is, so a partial answer never
 * passes for a complete one.
 *
 * @param spec What to resolve.
 * @param options The name server, a time limit and an abort signal.
 * @returns The backends, sorted by URL, one per URL.
 * @throws {DiscoveryError} When a query fails or the answer has no address at all.
 * @example
 * ```ts ignore
 * const backends = await resolveBackends(parseDiscoverySpec("dns:app.test:8080"), {
 *   nameServer: parseNameServer("127.0.0.1:5353"),
 * });
 * // [{ url: "http://127.0.0.1:8080", hostname: "127.0.0.1", port: 8080, weight: 1 }, ...]
 * ```
 */
export async function resolveBackends(
  spec: DiscoverySpec,
  options: ResolveOptions = {},
): Promise<Backend[]> {
  const timeout = options.timeout ?? DEFAULT_RESOLVE_TIMEOUT;
  const resolution: Resolution = {
    label: formatDiscoverySpec(spec),
    nameServer: options.nameServer,
    stop: options.signal,
    limit: AbortSignal.timeout(timeout),
    timeout,
  };
  let found: Backend[];
  if (spec.kind === "dns") {
    const addresses = await addressesOf(resolution, spec.name);
    found = addresses.map((address) => backendAt(address, spec.port));
  } else {
    const answer = await query(
      resolution,
      spec.name,
      "SRV",
      (options) => Deno.resolveDns(spec.name, "SRV", options),
    );
    // A target of "." means "no such service here" (RFC 2782); port 0 cannot be connected to.
    const records = answer.filter((r) => r.target !== "." && r.target !== "" && r.port > 0);
    const best = Math.min(...records.map((r) => r.priority));
    const perRecord = await allSettled(
      records.filter((r) => r.priority === best).map(async (record) => {
        const addresses = await addressesOf(resolution, record.target);
        return addresses.map((a) => backendAt(a, record.port, weightFromSrv(record.weight)));
      }),
    );
    found = perRecord.flat();
  }
  if (found.length === 0) {
    throw new DiscoveryError(
      `${resolution.label}: no ${
        spec.kind === "dns" ? "A or AAAA" : "SRV"
      } records with an address`,
    );
  }
  return normaliseBackends(found);
}

/** Options of {@linkcode startDiscovery}. */
export interface DiscoveryOptions {
  /** Time from the end of one resolution to the start of the next, ms. */
  readonly interval: number;
  /** The DNS server to ask. @default {the system's resolvers} */
  readonly nameServer?: NameServer;
  /** Time one resolution may take, ms. @default {DEFAULT_RESOLVE_TIMEOUT} */
  readonly timeout?: number;
  /** The set already in use (resolved at startup): `onChange` is called only when DNS says
   * something else. @default {none: the first resolution calls onChange} */
  readonly initial?: readonly Backend[];
  /** Called with the new set (sorted by URL, never empty) each time it differs from the last
   * one applied; awaited before the next resolution. If it throws, the error goes to `onError`
   * and the set is offered again after the next resolution. */
  readonly onChange: (backends: Backend[]) => void | Promise<void>;
  /** Called once per failed resolution with a one-line reason; the last good set stays. */
  readonly onError: (message: string) => void;
}

/** A running discovery loop. */
export interface Discovery {
  /** Resolves now (after any resolution in flight) and applies the result. */
  readonly refreshNow: () => Promise<void>;
  /** Stops the loop: cancels the timer, abandons a resolution in flight and waits for it. */
  readonly stop: () => Promise<void>;
}

/**
 * Resolves `spec` now and then every `interval` ms (measured from the end of one resolution,
 * so a slow server never stacks queries up), calling `onChange` when the set of backends (URLs
 * and weights) differs from the last one applied. A failed resolution calls `onError` and
 * keeps the last good set: `onChange` never gets an empty list.
 *
 * @param spec What to resolve.
 * @param options Interval, name server, callbacks.
 * @returns The running loop.
 * @example
 * ```ts ignore
 * const discovery = startDiscovery(parseDiscoverySpec("dns:app.internal:8080"), {
 *   interval: 10_000,
 *   onChange: (backends) => applyConfig(sup, { ...sup.config, backends }),
 *   onError: (message) => logLine(`discovery: ${message}`),
 * });
 * // later
 * await discovery.stop();
 * ```
 */
export function startDiscovery(spec: DiscoverySpec, options: DiscoveryOptions): Discovery {
  const stopping = new AbortController();
  let applied: readonly Backend[] | null = options.initial
    ? normaliseBackends(options.initial)
    : null;
  let timer: ReturnType<typeof setTimeout> | undefined;
  // Resolutions run one after another on this chain, so results apply in order.
  let chain: Promise<void> = Promise.resolve();
  const resolveOptions: ResolveOptions = {
    signal: stopping.signal,
    ...(options.nameServer ? { nameServer: options.nameServer } : {}),
    ...(options.timeout !== undefined ? { timeout: options.timeout } : {}),
  };

  const once = async (): Promise<void> => {
    if (stopping.signal.aborted) return;
    let backends: Backend[];
    try {
      backends = await resolveBackends(spec, resolveOptions);
    } catch (error) {
      if (stopping.signal.aborted) return;
      options.onError(error instanceof DiscoveryError ? error.message : describeError(error));
      return;
    }
    if (stopping.signal.aborted || (applied !== null && sameBackends(applied, backends))) return;
    try {
      await options.onChange(backends);
      applied = backends;
    } catch (error) {
      const why = error instanceof Error ? error.message : String(error);
      options.onError(
        `${formatDiscoverySpec(spec)}: applying the discovered backends failed: ${why}`,
      );
    }
  };
  const run = (): Promise<void> => {
    const next = chain.then(once);
    // A callback that throws fails only the call that ran it, not the resolutions after it.
    chain = next.catch(() => {});
    return next;
  };
  const schedule = (): void => {
    if (stopping.signal.aborted) return;
    timer = setTimeout(() => {
      timer = undefined;
      run().catch(() => {}).finally(schedule);
    }, options.interval);
  };

  run().catch(() => {}).finally(schedule);
  return {
    refreshNow: run,
    stop: async () => {
      stopping.abort();
      if (timer !== undefined) clearTimeout(timer);
      timer = undefined;
      await chain;
    },
  };
}
