/**
 * Which backend takes the next attempt of a request, for plain requests and WebSocket
 * handshakes alike: the sticky pin while it can take the request, else the policy's choice
 * (`balance/selection.ts`, keyed by `--hash-key`), behind the `--max-conns` queue while
 * requests wait; then the fallbacks (a passively ejected backend rather than none, and with
 * `--panic` any enabled one when every backend looks down).
 *
 * @module
 */

import { createCapacityQueue } from "../balance/capacity_queue.ts";
import type { Backend, Config } from "../config/config.ts";
import { logLine } from "../log.ts";
import {
  beginRequest,
  inFlight,
  isAlive,
  isEnabled,
  isPanicking,
  isPending,
  isUsable,
  memberAt,
  nextTicket,
  type Pool,
  poolSize,
  setPanic,
  tenantOf,
} from "../balance/pool.ts";
import { type SelectionContext, selectorFor } from "../balance/selection.ts";
import { cookieValue, createSticky, STICKY_COOKIE } from "../balance/sticky.ts";

/** A request waited in the `--max-conns` queue of a core a change has since replaced: its table
 * knows none of the members now, so it must be forwarded again with the current one. */
export class Retired extends Error {
  /** Creates the error. */
  constructor() {
    super("the proxy core was replaced while the request waited for room");
    this.name = "Retired";
  }
}

/** One request's selection state: its key, and the backends it has tried. */
export interface Selection extends SelectionContext {
  /** Slots not to pick again (tried, or unknown to this worker). */
  readonly avoid: number[];
  /** The slot a valid sticky cookie pins the request to, or -1. */
  readonly pinned: number;
  /** Epoch ms at which its wait for `--max-conns` room ends (0: it has not waited). */
  queueUntil: number;
}

/** What a request routed again after a change brings from the cores it began in. */
export interface Earlier {
  /** The backends (URLs) it was tried on. */
  readonly tried: readonly string[];
  /** See {@linkcode Selection.queueUntil}: the wait goes on, it does not start over. */
  readonly queueUntil: number;
}

/** What picking needs to know of a request. */
export interface PickRequest {
  /** The client's address. */
  readonly clientIp: string;
  /** Its fields, names lowercased. */
  readonly headers: Iterable<readonly [string, string]>;
  /** Set when it is routed again after a change. */
  readonly rerouted?: Earlier;
}

/** A worker's backend picker. */
export interface Picker {
  /** The selection state for a new request. */
  readonly start: (request: PickRequest) => Selection;
  /**
   * The slot for the next attempt, -1 for none. A promise when the request had to wait for
   * `--max-conns` room: that slot is already counted as in flight (see `beginRequest`).
   */
  readonly next: (selection: Selection, retry: boolean) => number | Promise<number>;
  /** The `Set-Cookie` value that pins the client to `backend`, when the answer came from
   * another backend than its cookie named; `null` otherwise (or with sticky sessions off). */
  readonly cookie: (selection: Selection, slot: number, backend: Backend) => string | null;
  /** The slot's backend as this worker knows it; `undefined` for a member it was not told of,
   * or a slot that took another backend since (a change under way). */
  readonly backendOf: (slot: number) => Backend | undefined;
}

/** Whether some usable backend (not yet tried) is only held back by --max-conns. */
function anyFull(pool: Pool, avoid: readonly number[], maxConns: number): boolean {
  for (let i = 0; i < poolSize(pool); i++) {
    const slot = memberAt(pool, i);
    if (isUsable(pool, slot) && !avoid.includes(slot) && inFlight(pool, slot) >= maxConns) {
      return true;
    }
  }
  return false;
}

/** Whether any member is alive by the health view. */
function anyAlive(pool: Pool): boolean {
  for (let i = 0; i < poolSize(pool); i++) if (isAlive(pool, memberAt(pool, i))) return true;
  return false;
}

/**
 * The last resort when the policy found nothing: round-robin over the enabled members not tried
 * yet and below --max-conns, ejection ignored: those alive by the health view, or with `anyHealth`
 * (panic) every one of them.
 */
function fallbackPick(pool: Pool, avoid: readonly number[], options: {
  readonly anyHealth: boolean;
  readonly maxConns: number;
}): number {
  const size = poolSize(pool);
  const start = nextTicket(pool, size);
  for (let i = 0; i < size; i++) {
    const slot = memberAt(pool, (start + i) % size);
    if (!isEnabled(pool, slot) || avoid.includes(slot) || isPending(pool, slot)) continue;
    if (!options.anyHealth && !isAlive(pool, slot)) continue;
    if (options.maxConns > 0 && inFlight(pool, slot) >= options.maxConns) continue;
    return slot;
  }
  return -1;
}

/** The request key the `hash` policy hashes (see `--hash-key`); `""` when it is missing. */
function hashKey(spec: Config["hashKey"], request: PickRequest): string {
  if (spec.kind === "ip") return request.clientIp;
  if (spec.kind === "cookie") return cookieValue(request.headers, spec.name) ?? "";
  for (const [name, value] of request.headers) if (name === spec.name) return value;
  return "";
}

/**
 * Creates the picker of one worker.
 *
 * @param pool The shared pool.
 * @param config Settings.
 * @param backends Backend of each slot, as this worker knows them.
 * @param tenants Each slot's tenant ({@linkcode tenantOf}) when `backends` was made.
 *   @default {the tenants now}
 * @param retired Whether a change replaced the core this picker serves: a request waiting in
 *   its queue then leaves it with {@linkcode Retired}. @default {never}
 * @returns The picker.
 */
export function createPicker(
  pool: Pool,
  config: Config,
  backends: readonly (Backend | undefined)[],
  tenants: readonly number[] = backends.map((_, slot) => tenantOf(pool, slot)),
  retired: () => boolean = () => false,
): Picker {
  const select = selectorFor(config.algorithm, {
    nameOf: (slot) => backends[slot]?.url ?? String(slot),
  });
  const sticky = config.sticky === "cookie" ? createSticky(config.stickyKey) : null;
  const stickyIds = sticky ? backends.map((b) => (b ? sticky.idOf(b.url) : "")) : [];
  const waiting = createCapacityQueue(pool);
  /** The slots of backends tried before a change, known by URL. */
  const slotsOf = (urls: readonly string[]): number[] =>
    backends.flatMap((backend, slot) => backend && urls.includes(backend.url) ? [slot] : []);
  const backendOf = (slot: number): Backend | undefined => {
    const backend = backends[slot];
    return backend !== undefined && tenants[slot] === tenantOf(pool, slot) ? backend : undefined;
  };

  /** A valid sticky cookie names a backend: the request goes there while it can take it. */
  const pinnedFor = (request: PickRequest): number => {
    if (!sticky) return -1;
    const value = cookieValue(request.headers, STICKY_COOKIE);
    const id = value === null ? null : sticky.verify(value);
    if (id === null) return -1;
    const slot = stickyIds.indexOf(id);
    if (slot < 0 || !isUsable(pool, slot)) return -1;
    return config.maxConns === 0 || inFlight(pool, slot) < config.maxConns ? slot : -1;
  };

  /** A backend for a queued request, counted on it at once. */
  const claim = (selection: Selection, retry: boolean): number => {
    if (retired()) throw new Retired();
    while (true) {
      const slot = select(pool, selection);
      if (slot < 0) return -1;
      if (backendOf(slot) === undefined) {
        selection.avoid.push(slot); // a member this worker does not know (a reload under way)
        continue;
      }
      beginRequest(pool, slot, retry);
      return slot;
    }
  };
  /** Waits up to --queue-timeout for a backend at --max-conns to get room, behind the requests
   * queued before. */
  const queue = async (selection: Selection, retry: boolean): Promise<number> => {
    if (selection.queueUntil === 0) selection.queueUntil = Date.now() + config.queueTimeout;
    const slot = await waiting.wait(() => claim(selection, retry), {
      timeoutMs: Math.max(0, selection.queueUntil - Date.now()),
      restricted: selection.avoid.length > 0,
    });
    if (slot >= 0) selection.queueUntil = 0; // a later wait (a retry's) is a wait of its own
    return slot;
  };

  const choose = (selection: Selection, retry: boolean): number | Promise<number> => {
    // First come, first served: behind the waiters, unless nothing is full any more (all down).
    if (waiting.size() > 0 && anyFull(pool, selection.avoid, config.maxConns)) {
      return queue(selection, retry);
    }
    const slot = select(pool, selection);
    if (slot >= 0) {
      // A load first: the compare-and-swap (a write to a shared line) only while panicking.
      if (config.panic && isPanicking(pool) && setPanic(pool, false)) {
        logLine("panic over: a backend is up again");
      }
      return slot; // the common case answers at once, without a promise
    }
    if (
      config.maxConns > 0 && config.queueTimeout > 0 &&
      anyFull(pool, selection.avoid, config.maxConns)
    ) {
      return queue(selection, retry);
    }
    const { avoid, maxConns } = selection;
    const ejected = fallbackPick(pool, avoid, { anyHealth: false, maxConns });
    if (ejected >= 0) return ejected;
    if (config.panic && !anyAlive(pool)) {
      if (setPanic(pool, true)) logLine("panic: every backend looks down; trying them all");
      return fallbackPick(pool, avoid, { anyHealth: true, maxConns });
    }
    return -1;
  };

  return {
    start: (request) => ({
      avoid: request.rerouted ? slotsOf(request.rerouted.tried) : [],
      key: config.algorithm === "hash" ? hashKey(config.hashKey, request) : "",
      maxConns: config.maxConns,
      slowStart: config.slowStart,
      pinned: pinnedFor(request),
      queueUntil: request.rerouted?.queueUntil ?? 0,
    }),
    next: (selection, retry) =>
      selection.pinned >= 0 && !selection.avoid.includes(selection.pinned)
        ? selection.pinned
        : choose(selection, retry),
    cookie: (selection, slot, backend) =>
      sticky && slot !== selection.pinned
        ? `${STICKY_COOKIE}=${sticky.token(backend.url)}; Path=/; HttpOnly; SameSite=Lax`
        : null,
    backendOf,
  };
}
