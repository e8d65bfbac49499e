/**
 * What idle client connections cost in memory: opens N keep-alive connections to a goround on
 * loopback in bounded steps (each sends one GET, reads its answer and then stays idle, or
 * completes a WebSocket handshake and stays idle), reads the server's resident memory (`VmRSS`
 * in `/proc/<pid>/status`) before, at each step and after closing them all, and prints the cost
 * per connection and how far memory falls back.
 *
 * ```sh
 * deno task idle-memory                                   # 10,000 connections, this checkout
 * deno task idle-memory --connections 2000 --websocket    # idle WebSocket tunnels
 * deno task idle-memory --targets goround,floor,/tmp/old/main.ts --engine deno
 * ```
 *
 * Targets: `goround` (this checkout's `main.ts`), `floor` (`idle_floor.ts`: a bare Deno script
 * holding each connection with a pending 1-byte read, the least any Deno server can cost), or
 * the path of another checkout's `main.ts` (to compare old and new code in one run).
 *
 * @module
 */

import { parseArgs } from "node:util";
import { GOROUND_FLAGS, ROOT, startGoround } from "../tests/support/helpers.ts";

const MIB = 1024 * 1024;

/** What to measure. */
export interface IdleMemoryOptions {
  /** What serves the connections: `goround`, `floor`, or the path of a goround `main.ts`. */
  readonly target: string;
  /** Connections held open at the peak. */
  readonly connections: number;
  /** Connections opened at once; the next step starts once they are all answered. */
  readonly step: number;
  /** goround's front end. @default {"goround"} */
  readonly engine?: "goround" | "deno";
  /** goround's serving threads. @default {2} */
  readonly workers?: number;
  /** Hold WebSocket tunnels rather than idle keep-alive connections. @default {false} */
  readonly websocket?: boolean;
  /** How long to watch memory fall after the connections close, ms. @default {10000} */
  readonly watchMs?: number;
  /** Stop watching early once RSS has given back this share (0-1) of its growth.
   * @default {1} */
  readonly fallBack?: number;
  /** Where progress lines go. @default {() => {}} */
  readonly print?: (line: string) => void;
}

/** RSS at a point of the run, bytes. */
export interface Sample {
  /** Connections open when sampled. */
  readonly connections: number;
  /** Milliseconds since the connections were closed (0 while they are open). */
  readonly afterMs: number;
  /** Resident memory, bytes. */
  readonly rss: number;
}

/** What a run measured. */
export interface IdleMemoryReport {
  /** RSS with no client connection (after a warm-up), bytes. */
  readonly before: number;
  /** RSS with every connection open and idle, settled, bytes. */
  readonly open: number;
  /** Lowest RSS seen after the connections closed, bytes. */
  readonly closed: number;
  /** `(open - before) / connections`, bytes. */
  readonly perConnection: number;
  /** Every sample, in order. */
  readonly samples: readonly Sample[];
}

/** A server under measurement. */
interface Server {
  readonly pid: number;
  readonly port: number;
  readonly stop: () => Promise<unknown>;
}

const GET = new TextEncoder().encode("GET / HTTP/1.1\r\nhost: 127.0.0.1\r\n\r\n");
const UPGRADE = new TextEncoder().encode(
  "GET / HTTP/1.1\r\nhost: 127.0.0.1\r\nupgrade: websocket\r\nconnection: Upgrade\r\n" +
    "sec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==\r\nsec-websocket-version: 13\r\n\r\n",
);

/** Runs a command to its end and returns its output (Deno's permissions keep `/proc` from
 * scripts not run with `--allow-all`, so `cat` reads it). */
async function output(command: string, args: string[]): Promise<string> {
  const { success, stdout, stderr } = await new Deno.Command(command, { args, stdin: "null" })
    .output();
  const decoder = new TextDecoder();
  if (!success) throw new Error(`${command} ${args.join(" ")}: ${decoder.decode(stderr)}`);
  return decoder.decode(stdout);
}

/**
 * Resident memory of a process.
 *
 * @param pid The process.
 * @returns `VmRSS`, bytes.
 */
export async function residentBytes(pid: number): Promise<number> {
  const status = await output("cat", [`/proc/${pid}/status`]);
  const kib = /^VmRSS:\s+(\d+) kB$/m.exec(status);
  if (!kib) throw new Error(`no VmRSS in /proc/${pid}/status`);
  return Number(kib[1]) * 1024;
}

/** Client connections a server still holds on its port: established, or ended by the client
 * but not yet closed by the server (IPv4: the server listens on 127.0.0.1). */
async function heldConnections(pid: number, port: number): Promise<number> {
  const table = await output("cat", [`/proc/${pid}/net/tcp`]);
  const local = `:${port.toString(16).toUpperCase().padStart(4, "0")}`;
  let count = 0;
  for (const line of table.split("\n")) {
    const [, address, , state] = line.trim().split(/\s+/);
    if (address?.endsWith(local) && (state === "01" || state === "08")) count++;
  }
  return count;
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

async function writeAll(conn: Deno.Conn, bytes: Uint8Array): Promise<void> {
  for (let at = 0; at < bytes.length;) at += await conn.write(bytes.subarray(at));
}

/** Reads one response (a head, and a `Content-Length` body unless it is a 101). */
async function readResponse(conn: Deno.Conn): Promise<number> {
  const buf = new Uint8Array(2048);
  let end = 0;
  while (true) {
    const n = await conn.read(buf.subarray(end));
    if (n === null) throw new Error("the server closed the connection before answering");
    end += n;
    const text = new TextDecoder().decode(buf.subarray(0, end));
    const headEnd = text.indexOf("\r\n\r\n");
    if (headEnd < 0) continue;
    const status = Number(text.slice(9, 12));
    const length = Number(/\r\ncontent-length: *(\d+)/i.exec(text)?.[1] ?? 0);
    if (status === 101 || end >= headEnd + 4 + length) return status;
  }
}

/** Opens a connection, makes its one exchange, and leaves it idle. */
async function openIdle(port: number, websocket: boolean): Promise<Deno.Conn> {
  const conn = await Deno.connect({ hostname: "127.0.0.1", port });
  try {
    await writeAll(conn, websocket ? UPGRADE : GET);
    const status = await readResponse(conn);
    if (status !== (websocket ? 101 : 200)) throw new Error(`the server answered ${status}`);
    return conn;
  } catch (error) {
    conn.close();
    throw error;
  }
}

/** Why a connection could not be opened; running out of descriptors is the user's to fix. */
function openFailure(open: number, reason: unknown): Error {
  if (!/too many open files/i.test(String(reason))) {
    return new Error(`connection ${open + 1} failed: ${reason}`);
  }
  // This client and the server each hold one descriptor per connection (two with a tunnel).
  return new RangeError(
    `--connections: out of file descriptors after ${open} connections: raise the limit ` +
      `first (ulimit -n), or ask for fewer`,
  );
}

/** The backend: answers `ok`, or accepts a WebSocket and leaves it idle. */
function startBackend(): { server: Deno.HttpServer<Deno.NetAddr>; sockets: Set<WebSocket> } {
  const sockets = new Set<WebSocket>();
  const server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen: () => {} }, (req) => {
    if (req.headers.get("upgrade")?.toLowerCase() !== "websocket") return new Response("ok\n");
    const { socket, response } = Deno.upgradeWebSocket(req);
    sockets.add(socket);
    socket.onclose = () => sockets.delete(socket);
    socket.onerror = () => {};
    return response;
  });
  return { server, sockets };
}

async function startFloor(): Promise<Server> {
  const child = new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      ...GOROUND_FLAGS.filter((flag) => flag.startsWith("--v8-flags")),
      "--allow-net=127.0.0.1",
      `${ROOT}tools/idle_floor.ts`,
    ],
    stdin: "null",
    stdout: "piped",
    stderr: "inherit",
  }).spawn();
  const lines = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
  const { value } = await lines.read();
  lines.releaseLock();
  child.stdout.cancel().catch(() => {});
  const port = Number(/listening on (\d+)/.exec(value ?? "")?.[1] ?? 0);
  if (port === 0) throw new Error(`idle_floor.ts did not start: ${value}`);
  return {
    pid: child.pid,
    port,
    stop: () => {
      child.kill("SIGTERM");
      return child.status;
    },
  };
}

async function startTarget(options: IdleMemoryOptions, backend: string): Promise<Server> {
  if (options.target === "floor") return await startFloor();
  const entry = options.target === "goround" ? undefined : options.target;
  return await startGoround([
    "--backend",
    backend,
    "--engine",
    options.engine ?? "goround",
    "--workers",
    String(options.workers ?? 2),
    "--access-log",
    "off",
    "--health-interval",
    "1h",
  ], entry === undefined ? {} : { entry });
}

/** Waits until the server has closed every client connection. */
async function awaitClosed(server: Server): Promise<void> {
  const deadline = Date.now() + 30_000;
  while ((await heldConnections(server.pid, server.port)) > 0) {
    if (Date.now() > deadline) throw new Error("the server kept the closed connections open");
    await sleep(50);
  }
}

/**
 * Measures one target: starts it and a backend, warms it up, opens the idle connections in
 * steps, closes them, and watches memory fall.
 *
 * @param options What to measure.
 * @returns RSS before, open and after, and every sample.
 */
export async function measureIdleMemory(options: IdleMemoryOptions): Promise<IdleMemoryReport> {
  const print = options.print ?? (() => {});
  const websocket = options.websocket ?? false;
  const backend = startBackend();
  const server = await startTarget(options, `http://127.0.0.1:${backend.server.addr.port}`);
  const conns: Deno.Conn[] = [];
  const samples: Sample[] = [];

  const mib = (bytes: number) => `${(bytes / MIB).toFixed(1)} MiB`;
  try {
    // Warm-up, as many at once as a step: the first requests compile the hot path, and fill
    // the backend pools as far as the steps will.
    for (let round = 0; round < 4; round++) {
      const warm = await Promise.all(
        Array.from({ length: options.step }, () => openIdle(server.port, false)),
      );
      for (const conn of warm) conn.close();
    }
    await sleep(500);
    const before = await residentBytes(server.pid);
    samples.push({ connections: 0, afterMs: 0, rss: before });
    print(`  before: ${mib(before)}`);
    while (conns.length < options.connections) {
      const size = Math.min(options.step, options.connections - conns.length);
      const opened = await Promise.allSettled(
        Array.from({ length: size }, () => openIdle(server.port, websocket)),
      );
      for (const result of opened) if (result.status === "fulfilled") conns.push(result.value);
      const failed = opened.find((result) => result.status === "rejected");
      if (failed) throw openFailure(conns.length, (failed as PromiseRejectedResult).reason);
      const rss = await residentBytes(server.pid);
      samples.push({ connections: conns.length, afterMs: 0, rss });
    }
    await sleep(1000);
    const open = await residentBytes(server.pid);
    samples.push({ connections: conns.length, afterMs: 0, rss: open });
    const perConnection = (open - before) / conns.length;
    print(
      `  ${conns.length} open: ${mib(open)} (+${mib(open - before)}, ` +
        `${(perConnection / 1024).toFixed(1)} KiB per connection)`,
    );
    for (const conn of conns.splice(0)) conn.close();
    const closedAt = Date.now();
    await awaitClosed(server);
    let closed = Infinity;
    const watch = options.watchMs ?? 10_000;
    const marks = [0, 1000, 2000, 5000, 10_000, 20_000, 30_000, 60_000];
    const after: string[] = [];
    while (true) {
      const afterMs = Date.now() - closedAt;
      const rss = await residentBytes(server.pid);
      samples.push({ connections: 0, afterMs, rss });
      closed = Math.min(closed, rss);
      if (marks.length > 0 && afterMs >= marks[0]!) {
        while (marks.length > 0 && afterMs >= marks[0]!) marks.shift();
        after.push(`${mib(rss)} at ${(afterMs / 1000).toFixed(1)} s`);
      }
      if (afterMs >= watch || closed <= before + (open - before) * (1 - (options.fallBack ?? 1))) {
        break;
      }
      await sleep(250);
    }
    const back = open > before ? Math.round((open - closed) / (open - before) * 100) : 0;
    print(
      `  closed: ${after.join(", ")}; lowest ${mib(closed)} ` +
        `(${mib(closed - before)} above before: ${back}% of the growth given back)`,
    );
    return { before, open, closed, perConnection, samples };
  } finally {
    for (const conn of conns) conn.close();
    await server.stop();
    for (const socket of backend.sockets) socket.close();
    await backend.server.shutdown();
  }
}

function fail(message: string): never {
  console.error(`idle-memory: ${message}`);
  Deno.exit(2);
}

function positive(flag: string, text: string): number {
  const value = Number(text);
  if (!Number.isInteger(value) || value < 1) {
    fail(`--${flag}: "${text}" is not a whole number of at least 1`);
  }
  return value;
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    args: Deno.args,
    options: {
      targets: { type: "string", default: "goround" },
      connections: { type: "string", default: "10000" },
      step: { type: "string", default: "500" },
      engine: { type: "string", default: "goround" },
      workers: { type: "string", default: "2" },
      websocket: { type: "boolean", default: false },
      watch: { type: "string", default: "10" },
    },
    strict: true,
  });
  const connections = positive("connections", values.connections);
  const step = positive("step", values.step);
  const workers = positive("workers", values.workers);
  const watchMs = positive("watch", values.watch) * 1000;
  const engine = values.engine;
  if (engine !== "goround" && engine !== "deno") {
    fail(`--engine: "${engine}" is not an engine: expected goround or deno`);
  }
  const targets = values.targets.split(",");
  for (const target of targets) {
    if (target === "goround" || target === "floor" || target.endsWith(".ts")) continue;
    fail(`--targets: "${target}" is not goround, floor or the path of a main.ts`);
  }
  if (values.websocket && targets.includes("floor")) {
    fail(`--targets: "floor" does not speak WebSocket: drop it or --websocket`);
  }
  const kind = values.websocket ? "idle WebSocket tunnels" : "idle keep-alive connections";
  for (const target of targets) {
    const what = target === "floor" ? "floor (bare Deno, pending 1-byte read)" : target;
    console.log(
      `${what}${target === "floor" ? "" : ` (engine ${engine}, ${workers} workers)`}: ` +
        `${connections} ${kind}, steps of ${step}`,
    );
    try {
      await measureIdleMemory({
        target,
        connections,
        step,
        engine,
        workers,
        websocket: values.websocket,
        watchMs,
        print: (line) => console.log(line),
      });
    } catch (error) {
      if (error instanceof RangeError) fail(error.message);
      throw error;
    }
  }
}

if (import.meta.main) await main();
