/**
 * A bounded loopback load for restart tests: kept-alive connections that send one request after
 * another (and reconnect when a response says `Connection: close`, as a client must), plus
 * loops that open a new connection per request. Every request is classified: a request whose
 * bytes went out and got no response is lost, which is what a restart must never do; a refused
 * connection sent nothing.
 *
 * @module
 */

import { encodeLatin1, parseResponseHead, responseFraming } from "../lib/http/http1.ts";

/** What to send, and for how long. */
export interface RestartLoadOptions {
  /** Loopback port. */
  readonly port: number;
  /** Kept-alive connections. */
  readonly keepAlive: number;
  /** Loops that open a connection per request (`Connection: close`). */
  readonly fresh: number;
  /** Kept-alive connections that pause 20 ms between requests (idle when a stop begins, as a
   * browser's or a connection pool's mostly are). @default {0} */
  readonly paced?: number;
  /** Stops when this returns true (checked before each request), or at `maxDuration`. */
  readonly until: () => boolean;
  /** Longest run, ms. */
  readonly maxDuration: number;
  /** A request not answered within this time is lost, ms. @default {5000} */
  readonly timeout?: number;
}

/** What happened to the requests. */
export interface RestartLoadReport {
  /** Requests answered 2xx, on kept-alive connections. */
  readonly keptAlive: number;
  /** Requests answered 2xx, each on its own connection. */
  readonly fresh: number;
  /** Responses that said `Connection: close` to a kept-alive connection. */
  readonly told: number;
  /** Connections refused (nothing sent). */
  readonly refused: number;
  /** Failures by kind: `lost on a reused connection: closed` (a request sent on a connection
   * that had carried others), `lost on a new connection: reset` (its first), `HTTP 502`, ... */
  readonly failures: Record<string, number>;
}

/** The think time of a paced connection, ms. */
const PAUSE = 20;

/** A connection with its read buffer. */
interface Line {
  readonly conn: Deno.Conn;
  bytes: Uint8Array;
  start: number;
  end: number;
  /** Requests answered on it so far. */
  answered: number;
}

/** Reads one response; returns its status and whether the server closes the connection. */
async function readResponse(line: Line): Promise<{ status: number; close: boolean }> {
  const more = async () => {
    if (line.end === line.bytes.length) {
      const bigger = new Uint8Array(line.bytes.length * 2);
      bigger.set(line.bytes.subarray(line.start, line.end));
      line.end -= line.start;
      line.start = 0;
      line.bytes = bigger;
    }
    const n = await line.conn.read(line.bytes.subarray(line.end));
    if (n === null) throw new Error("closed");
    line.end += n;
  };
  while (true) {
    const head = line.end > line.start ? parseResponseHead(line.bytes, line.start, line.end) : null;
    if (head === null) {
      await more();
      continue;
    }
    line.start += head.size;
    const framing = responseFraming(head, "GET");
    if (framing.kind !== "length") throw new Error(`unexpected framing ${framing.kind}`);
    while (line.end - line.start < framing.length) await more();
    line.start += framing.length;
    return { status: head.status, close: head.close };
  }
}

function closeQuietly(conn: Deno.Conn | null): void {
  try {
    conn?.close();
  } catch {
    // Closed already.
  }
}

/** Why a request broke off: the error's kind, not its changing detail. */
function kindOf(error: unknown): string {
  if (error instanceof Deno.errors.ConnectionReset) return "reset";
  if (error instanceof Deno.errors.BrokenPipe) return "broken pipe";
  if (error instanceof Deno.errors.BadResource || error instanceof Deno.errors.Interrupted) {
    return "timeout";
  }
  return (error as Error).message === "closed" ? "closed" : (error as Error).message;
}

/**
 * Runs the load and reports every outcome.
 *
 * @param options Port, connections and when to stop.
 * @returns The report.
 */
export async function runRestartLoad(options: RestartLoadOptions): Promise<RestartLoadReport> {
  const deadline = Date.now() + options.maxDuration;
  const timeout = options.timeout ?? 5000;
  const failures: Record<string, number> = {};
  const counts = { keptAlive: 0, fresh: 0, told: 0, refused: 0 };
  const fail = (kind: string) => (failures[kind] = (failures[kind] ?? 0) + 1);
  const running = () => Date.now() < deadline && !options.until();

  /** One request on `line`; the connection is closed on any failure. */
  const exchange = async (line: Line, close: boolean): Promise<boolean> => {
    const timer = setTimeout(() => closeQuietly(line.conn), timeout);
    try {
      await line.conn.write(encodeLatin1(
        `GET /restart HTTP/1.1\r\nHost: restart\r\n${close ? "Connection: close\r\n" : ""}\r\n`,
      ));
      const { status, close: closing } = await readResponse(line);
      if (status < 200 || status > 299) fail(`HTTP ${status}`);
      else if (close) counts.fresh++;
      else counts.keptAlive++;
      if (closing && !close) counts.told++;
      line.answered++;
      return !closing;
    } catch (error) {
      fail(`lost on a ${line.answered === 0 ? "new" : "reused"} connection: ${kindOf(error)}`);
      return false;
    } finally {
      clearTimeout(timer);
    }
  };

  const connect = async (): Promise<Line | null> => {
    try {
      const conn = await Deno.connect({ hostname: "127.0.0.1", port: options.port });
      return { conn, bytes: new Uint8Array(4096), start: 0, end: 0, answered: 0 };
    } catch (error) {
      if (error instanceof Deno.errors.ConnectionRefused) counts.refused++;
      else fail(`connect: ${kindOf(error)}`);
      // Nothing listens (after a plain stop): wait a little rather than spin.
      await new Promise((resolve) => setTimeout(resolve, 10));
      return null;
    }
  };

  const keepAliveLoop = async (pause: number) => {
    let line: Line | null = null;
    while (running()) {
      if (pause > 0) await new Promise((resolve) => setTimeout(resolve, pause));
      line ??= await connect();
      if (line === null) continue;
      if (!(await exchange(line, false))) {
        closeQuietly(line.conn);
        line = null;
      }
    }
    closeQuietly(line?.conn ?? null);
  };

  const freshLoop = async () => {
    while (running()) {
      const line = await connect();
      if (line === null) continue;
      await exchange(line, true);
      closeQuietly(line.conn);
    }
  };

  await Promise.all([
    ...Array.from({ length: options.keepAlive }, () => keepAliveLoop(0)),
    ...Array.from({ length: options.paced ?? 0 }, () => keepAliveLoop(PAUSE)),
    ...Array.from({ length: options.fresh }, freshLoop),
  ]);
  return { ...counts, failures };
}
