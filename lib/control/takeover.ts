/**
 * The new process's side of `--takeover`: find the goround running on the same `--listen`
 * through its admin API, and, once this process serves the port too (`SO_REUSEPORT`), ask it
 * to hand over (`POST /takeover`); it then closes its admin listener, drains and exits, and
 * this process binds the admin port once it is free. No signal is sent: that would need
 * `--allow-run`, which goround does not ask for.
 *
 * @module
 */

import type { Listen } from "../config/config.ts";
import { parseListen } from "../config/values.ts";
import { ConfigError } from "../errors.ts";
import { connect as connectTcp } from "node:net";
import { connect as connectTls } from "node:tls";
import { TAKEOVER_PROBE_PATH, viaEntry } from "../proxy/via.ts";

/** How long one admin request to the running goround may take, ms. */
const REQUEST_TIMEOUT = 5000;

/** How long a running goround probes for its successor before it refuses, ms: well within
 * what the successor waits for its answer ({@linkcode HANDOVER_TIMEOUT}). */
const PROBE_BUDGET = 3000;

/** How long the successor waits for the answer to `POST /takeover`, ms: the probes, and time to
 * answer. Were it shorter, the successor could give up while the other still agrees. */
const HANDOVER_TIMEOUT = PROBE_BUDGET + REQUEST_TIMEOUT;

/** Nothing listens at `--admin`: no goround runs there (a cold start can go ahead). */
export class NothingListens extends ConfigError {
  /**
   * Creates the error.
   *
   * @param message One line saying where nothing answered.
   */
  constructor(message: string) {
    super(message);
    this.name = "NothingListens";
  }
}

/** The running goround, as its admin API describes itself. */
export interface Predecessor {
  /** Its admin API's base URL. */
  readonly admin: string;
  /** Its process id, or `null` when its status does not say. */
  readonly pid: number | null;
}

/** How the new process reaches the running one. */
export interface TakeoverTarget {
  /** This process's `--listen` (the running one must serve the same). */
  readonly listen: Listen;
  /** The shared `--admin` address. */
  readonly admin: Listen;
  /** The shared `--admin-token`, or `""`. */
  readonly token: string;
}

/**
 * The base URL that reaches a listener bound to `listen` from this machine: a wildcard
 * address (`0.0.0.0`, `::`) is reached on loopback.
 *
 * @param listen The bound address.
 * @returns For example `http://127.0.0.1:9000`.
 */
export function localUrl(listen: Listen): string {
  const host = localHost(listen);
  return `http://${host.includes(":") ? `[${host}]` : host}:${listen.port}`;
}

/** The address that reaches a listener bound to `listen`: a wildcard is reached on loopback. */
function localHost(listen: Listen): string {
  if (listen.hostname === "0.0.0.0" || listen.hostname === "") return "127.0.0.1";
  return listen.hostname === "::" ? "::1" : listen.hostname;
}

/** One admin request, answered or turned into a one-line `--takeover:` error. */
async function ask(
  target: TakeoverTarget,
  path: string,
  init: { method: string; body?: string },
  timeout = REQUEST_TIMEOUT,
): Promise<{ status: number; text: string }> {
  const base = localUrl(target.admin);
  const headers: Record<string, string> = { accept: "application/json" };
  if (init.body !== undefined) headers["content-type"] = "application/json";
  if (target.token !== "") headers["authorization"] = `Bearer ${target.token}`;
  // A fresh connection, closed after: nothing is left open on the admin port being handed over.
  const client = Deno.createHttpClient({ poolMaxIdlePerHost: 0 });
  try {
    const res = await fetch(`${base}${path}`, {
      ...init,
      headers,
      client,
      signal: AbortSignal.timeout(timeout),
    });
    return { status: res.status, text: await res.text() };
  } catch (error) {
    const cause = (error as { cause?: unknown }).cause;
    const detail = /refused/i.test(String(cause ?? error))
      ? "connection refused"
      : (error as Error).name === "TimeoutError"
      ? `no answer within ${timeout / 1000}s`
      : String((cause as Error | undefined)?.message ?? (error as Error).message).split("\n")[0];
    const message =
      `--takeover: nothing answers at ${base} (${detail}): expected the admin API (--admin) of the running goround`;
    throw detail === "connection refused" ? new NothingListens(message) : new ConfigError(message);
  } finally {
    client.close();
  }
}

/** Turns an admin answer that is not `expected` into a one-line error. */
function refused(target: TakeoverTarget, answer: { status: number; text: string }): ConfigError {
  const base = localUrl(target.admin);
  if (answer.status === 401) {
    return new ConfigError(
      `--takeover: the goround at ${base} refused the admin token (HTTP 401): expected its --admin-token`,
    );
  }
  const why = answer.text.trim().split("\n")[0]!.slice(0, 120);
  return new ConfigError(
    `--takeover: ${base} answered HTTP ${answer.status}${
      why ? ` (${why})` : ""
    }: expected the admin API of a goround that can hand over`,
  );
}

/**
 * Checks, before this process binds anything, that a goround answers at the admin address and
 * serves the same `--listen`.
 *
 * @param target Where to find it, and this process's `--listen`.
 * @returns The running goround.
 * @throws {ConfigError} One line saying why there is nothing to take over.
 */
export async function findPredecessor(target: TakeoverTarget): Promise<Predecessor> {
  const answer = await ask(target, "/status", { method: "GET" });
  if (answer.status !== 200) throw refused(target, answer);
  let status: { listen?: unknown; pid?: unknown };
  try {
    status = JSON.parse(answer.text);
  } catch {
    throw refused(target, answer);
  }
  const base = localUrl(target.admin);
  if (typeof status?.listen !== "string") throw refused(target, answer);
  const serves = parseListen(status.listen);
  const { listen } = target;
  if (serves.port !== listen.port || serves.hostname !== listen.hostname) {
    const host = listen.hostname === "0.0.0.0" ? "" : listen.hostname;
    const mine = `${host.includes(":") ? `[${host}]` : host}:${listen.port}`;
    throw new ConfigError(
      `--takeover: the goround at ${base} serves "${status.listen}", not "${mine}": expected the same --listen`,
    );
  }
  return { admin: base, pid: Number.isInteger(status.pid) ? status.pid as number : null };
}

/**
 * Asks the running goround to hand over: it answers 202, then stops accepting, drains and
 * exits. Call once this process serves the port.
 *
 * @param target Where it is.
 * @param instanceId This process's instance id (`proxy/via.ts`), which it checks serves the port.
 * @returns Its process id and drain timeout (ms); both `null` when it is stopping already (its
 *   admin port closed, or it said so), so this process keeps serving the port alone.
 * @throws {ConfigError} When it does not agree.
 */
export async function requestHandover(
  target: TakeoverTarget,
  instanceId: string,
): Promise<{ pid: number | null; drainTimeout: number | null }> {
  let answer: { status: number; text: string };
  try {
    answer = await ask(target, "/takeover", {
      method: "POST",
      body: JSON.stringify({ pid: Deno.pid, instance: instanceId }),
    }, HANDOVER_TIMEOUT);
  } catch (error) {
    // It answered a moment ago (findPredecessor): gone now, it was stopping (a SIGTERM).
    if (error instanceof NothingListens) return { pid: null, drainTimeout: null };
    throw error;
  }
  if (answer.status === 409 && answer.text.includes("already stopping")) {
    return { pid: null, drainTimeout: null };
  }
  if (answer.status !== 202) throw refused(target, answer);
  let body: { pid?: unknown; drainTimeout?: unknown } = {};
  try {
    body = JSON.parse(answer.text);
  } catch {
    // Agreed, with no details.
  }
  return {
    pid: Number.isInteger(body.pid) ? body.pid as number : null,
    drainTimeout: typeof body.drainTimeout === "number" ? body.drainTimeout : 30_000,
  };
}

/**
 * Calls `bind` until it stops throwing `AddrInUse` (the old process is freeing the port), or
 * the time is up.
 *
 * @param bind Binds the port.
 * @param options `timeout`: longest wait, ms; `every`: pause between tries, ms (default 20).
 * @returns What `bind` returned, or `null` when the port stayed in use.
 */
export async function bindWhenFree<T>(
  bind: () => T,
  options: { timeout: number; every?: number },
): Promise<T | null> {
  const deadline = Date.now() + options.timeout;
  while (true) {
    try {
      return bind();
    } catch (error) {
      if (!(error instanceof Deno.errors.AddrInUse)) throw error;
      if (Date.now() >= deadline) return null;
    }
    await new Promise((resolve) => setTimeout(resolve, options.every ?? 20));
  }
}

/** Where a goround handing over looks for its successor: its own `--listen`. */
export interface ProbeTarget {
  /** The proxy's address. */
  readonly listen: Listen;
  /** Whether the port speaks TLS. */
  readonly tls: boolean;
  /** This goround's instance id. */
  readonly own: string;
}

/** Tries made before concluding that no successor serves the port: the kernel spreads new
 * connections over every listener of the port, so each try reaches the successor's with a
 * fair chance (at least 1 in 1 + this goround's worker count). */
const PROBE_TRIES = 48;

/** How long one probe may take, ms. */
const PROBE_TIMEOUT = 2000;

/** Sends one probe naming both goround processes in `Via`, and returns the `Via` of the 508
 * that answers it: the entry of the goround whose listener took the connection. */
function probeOnce(
  target: ProbeTarget,
  successor: string,
  timeout: number,
): Promise<string | null> {
  const host = localHost(target.listen);
  const { port } = target.listen;
  // node:tls, as the probe reads an answer from a certificate it need not trust.
  const socket = !target.tls
    ? connectTcp({ host, port })
    : connectTls({ host, port, rejectUnauthorized: false, ALPNProtocols: ["http/1.1"] });
  const via = `${viaEntry(target.own)}, ${viaEntry(successor)}`;
  socket.write(
    `GET ${TAKEOVER_PROBE_PATH} HTTP/1.1\r\nHost: goround\r\nVia: ${via}\r\n` +
      "Connection: close\r\n\r\n",
  );
  return new Promise((resolve) => {
    let head = "";
    const done = (value: string | null) => {
      clearTimeout(timer);
      socket.destroy();
      resolve(value);
    };
    const timer = setTimeout(() => done(null), timeout);
    socket.setEncoding("latin1");
    socket.on("data", (chunk: string) => {
      head += chunk;
      const end = head.indexOf("\r\n\r\n");
      if (end >= 0) done(viaOf508(head.slice(0, end)));
      else if (head.length > 16 * 1024) done(null);
    });
    socket.on("error", () => done(null));
    socket.on("end", () => done(null));
  });
}

/** The `Via` of a 508 response head, or `null`. */
function viaOf508(head: string): string | null {
  if (!/^HTTP\/1\.1 508 /.test(head)) return null;
  return /^via:[ \t]*(.*?)[ \t]*$/im.exec(head)?.[1] ?? null;
}

/**
 * Whether the goround with instance id `successor` serves this goround's port: the check made
 * before handing over, so a stray `POST /takeover` cannot stop a goround that nothing replaces.
 *
 * @param target This goround's port and id.
 * @param successor The instance id the successor gave.
 * @returns `true` once one probe was answered by the successor.
 */
export async function successorServes(target: ProbeTarget, successor: string): Promise<boolean> {
  const wanted = viaEntry(successor);
  const deadline = Date.now() + PROBE_BUDGET;
  for (let i = 0; i < PROBE_TRIES; i++) {
    const left = deadline - Date.now();
    if (left <= 0) break;
    // A probe cut, refused or timed out is null: another try.
    if ((await probeOnce(target, successor, Math.min(PROBE_TIMEOUT, left))) === wanted) {
      return true;
    }
  }
  return false;
}
