/**
 * A bounded HTTP/1.1 load generator for chaos runs: `connections` kept-alive connections, each
 * sending one request after another until the deadline, recording every outcome. Failures are
 * classified (status, connection error, client timeout), so a report can prove there were none.
 *
 * @module
 */

import {
  chunkedDecoder,
  decodeChunked,
  encodeLatin1,
  parseResponseHead,
  responseFraming,
} from "../lib/http/http1.ts";

/** What to send. */
export interface LoadOptions {
  /** Loopback port to load. */
  readonly port: number;
  /** Concurrent connections. */
  readonly connections: number;
  /** How long to run, ms. */
  readonly duration: number;
  /** `GET`, or `POST` with a body of `bodySize` bytes. */
  readonly method: "GET" | "POST";
  /** POST body size. @default {1024} */
  readonly bodySize?: number;
  /** A request not answered within this time counts as a failure, ms. @default {5000} */
  readonly timeout?: number;
  /** Each request carries `X-Chaos-Id: <prefix><n>`. @default {"r"} */
  readonly idPrefix?: string;
  /** A 2xx whose body does not start with this is a failure (`wrong body`): a response meant
   * for someone else. @default {"" (any body)} */
  readonly bodyStartsWith?: string;
}

/** The outcome of a run. */
export interface LoadReport {
  /** Requests sent. */
  readonly requests: number;
  /** Answered 2xx. */
  readonly successes: number;
  /** Failures by kind: `HTTP 502`, `connection reset`, `timeout`, … */
  readonly failures: Record<string, number>;
  /** Latency of successful requests, ms, sorted. */
  readonly latencies: number[];
  /** Ids of every request sent. */
  readonly ids: string[];
}

/**
 * The latency at quantile `q` (0-1) of sorted values.
 *
 * @param sorted Ascending values.
 * @param q The quantile.
 * @returns The value, or 0 for none.
 */
export function quantile(sorted: readonly number[], q: number): number {
  if (sorted.length === 0) return 0;
  return sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))]!;
}

const decoder = new TextDecoder();

/** Reads one response off `conn`; returns its status and the start of a length-framed body
 * (up to 64 bytes), or throws. */
async function readResponse(
  conn: Deno.Conn,
  buf: { bytes: Uint8Array; start: number; end: number },
): Promise<{ status: number; start: string }> {
  const more = async () => {
    if (buf.end === buf.bytes.length) {
      const bigger = new Uint8Array(buf.bytes.length * 2);
      bigger.set(buf.bytes.subarray(buf.start, buf.end));
      buf.end -= buf.start;
      buf.start = 0;
      buf.bytes = bigger;
    }
    const n = await conn.read(buf.bytes.subarray(buf.end));
    if (n === null) throw new Error("connection closed");
    buf.end += n;
  };
  while (true) {
    const head = buf.end > buf.start ? parseResponseHead(buf.bytes, buf.start, buf.end) : null;
    if (head === null) {
      await more();
      continue;
    }
    buf.start += head.size;
    if (head.status < 200) continue;
    const framing = responseFraming(head, "GET");
    let start = "";
    if (framing.kind === "length") {
      while (buf.end - buf.start < framing.length) await more();
      start = decoder.decode(
        buf.bytes.subarray(buf.start, buf.start + Math.min(64, framing.length)),
      );
      buf.start += framing.length;
    } else if (framing.kind === "chunked") {
      const state = chunkedDecoder();
      while (true) {
        buf.start += decodeChunked(state, buf.bytes.subarray(buf.start, buf.end), () => {});
        if (state.phase === "done") break;
        await more();
      }
    } else if (framing.kind === "close") {
      throw new Error("close-delimited response");
    }
    if (head.close) throw new Error("server closed the connection");
    return { status: head.status, start };
  }
}

/**
 * Runs the load and reports every outcome.
 *
 * @param options Port, connections, duration and request kind.
 * @returns The report.
 */
export async function runLoad(options: LoadOptions): Promise<LoadReport> {
  const deadline = Date.now() + options.duration;
  const timeout = options.timeout ?? 5000;
  const prefix = options.idPrefix ?? "r";
  const body = "x".repeat(options.method === "POST" ? options.bodySize ?? 1024 : 0);
  const failures: Record<string, number> = {};
  const latencies: number[] = [];
  const ids: string[] = [];
  let successes = 0;
  let next = 0;
  const fail = (kind: string) => (failures[kind] = (failures[kind] ?? 0) + 1);

  const worker = async () => {
    let conn: Deno.Conn | null = null;
    const buf = { bytes: new Uint8Array(16 * 1024), start: 0, end: 0 };
    while (Date.now() < deadline) {
      const id = `${prefix}${next++}`;
      ids.push(id);
      const started = performance.now();
      let timer = 0 as unknown as ReturnType<typeof setTimeout>;
      let timedOut = false;
      try {
        if (conn === null) {
          conn = await Deno.connect({ hostname: "127.0.0.1", port: options.port });
          buf.start = 0;
          buf.end = 0;
        }
        const open = conn;
        timer = setTimeout(() => {
          timedOut = true;
          open.close();
        }, timeout);
        const framing = options.method === "POST" ? `Content-Length: ${body.length}\r\n` : "";
        await open.write(encodeLatin1(
          `${options.method} /chaos/${id} HTTP/1.1\r\nHost: chaos\r\nX-Chaos-Id: ${id}\r\n${framing}\r\n${body}`,
        ));
        const { status, start } = await readResponse(open, buf);
        clearTimeout(timer);
        if (status >= 200 && status < 300 && !start.startsWith(options.bodyStartsWith ?? "")) {
          fail("wrong body");
        } else if (status >= 200 && status < 300) {
          successes++;
          latencies.push(performance.now() - started);
        } else {
          fail(`HTTP ${status}`);
        }
      } catch (error) {
        clearTimeout(timer);
        fail(timedOut ? "client timeout" : `connection error (${(error as Error).message})`);
        try {
          conn?.close();
        } catch {
          // Closed already.
        }
        conn = null;
      }
    }
    try {
      conn?.close();
    } catch {
      // Closed already.
    }
  };
  await Promise.all(Array.from({ length: options.connections }, worker));
  latencies.sort((a, b) => a - b);
  return { requests: ids.length, successes, failures, latencies, ids };
}
