/**
 * The benchmark's ladder rungs: the least an HTTP/1.1 proxy on Deno can do, and goround's own
 * layers added to it one at a time, so that `deno task bench --pin` can show what each costs per
 * request (see the README's Performance section). Not products: each handles the benchmark's
 * bodiless keep-alive GETs against backends that answer with `Content-Length`, and nothing else
 * (no errors handled, no timeouts, no health). One thread each.
 *
 * - `least`: no HTTP library at all. A client's request head is found (its blank line) and sent
 *   to a pooled backend connection as it came; the response head's `Content-Length` is read off
 *   the bytes, and the whole response is sent back as it came. Four socket operations per
 *   request, like the floor's relay, plus the pairing of requests and responses a proxy needs.
 * - `front`: goround's front end (`serveHttp1`: request parsing, framing, keep-alive, deadlines)
 *   with `least`'s exchange behind it, answering with the backend's body (as text: the
 *   benchmark's bodies are ASCII).
 * - `client`: goround's front end and goround's upstream client (`roundTrip`: pooled connections,
 *   the response parser, the response's field lines copied to the client), without the proxy
 *   core (no selection policy, retries, `X-Forwarded-*`, request ids or metrics).
 * - `core`: goround's front end, proxy core and upstream client as one worker thread runs them,
 *   on the main thread (so that `cpu_profile.ts` can profile them: Deno's inspector does not list
 *   worker threads); no health checks.
 *
 * Usage: `deno run --allow-net=127.0.0.1 least_proxy.ts RUNG PORT BACKEND...`
 *
 * @module
 */

import type { Backend } from "../../lib/config/config.ts";
import { parseCommandLine } from "../../lib/config/command_line.ts";
import { createPool, setMembers } from "../../lib/balance/pool.ts";
import { createForwarder, localReply, type Reply } from "../../lib/proxy/forward.ts";
import { serveHttp1 } from "../../lib/front/server.ts";
import { createUpstreams, roundTrip } from "../../lib/upstream/client.ts";

/** The rungs this module serves. */
export const RUNGS = ["least", "front", "client", "core"] as const;

/** A rung. */
export type Rung = typeof RUNGS[number];

/**
 * Where a head's blank line ends in `bytes[from..to)`, or -1 if it has not arrived.
 *
 * @param bytes The buffer.
 * @param from Where the head starts.
 * @param to One past the last byte read.
 * @returns The offset after the blank line, or -1.
 */
export function headEnd(bytes: Uint8Array, from: number, to: number): number {
  for (let i = from; i + 3 < to; i++) {
    if (bytes[i] === 13 && bytes[i + 1] === 10 && bytes[i + 2] === 13 && bytes[i + 3] === 10) {
      return i + 4;
    }
  }
  return -1;
}

/** `content-length:` in lowercase ASCII. */
const CONTENT_LENGTH = new TextEncoder().encode("content-length:");

/**
 * The `Content-Length` of a response head (any case of the name), or 0 when it has none.
 *
 * @param bytes The buffer.
 * @param end Where the head ends.
 * @returns The length.
 */
export function contentLength(bytes: Uint8Array, end: number): number {
  outer: for (let i = 0; i + CONTENT_LENGTH.length < end; i++) {
    for (let k = 0; k < CONTENT_LENGTH.length; k++) {
      if ((bytes[i + k]! | 0x20) !== CONTENT_LENGTH[k]) continue outer;
    }
    let at = i + CONTENT_LENGTH.length;
    while (bytes[at] === 32) at++;
    let value = 0;
    while (bytes[at]! >= 48 && bytes[at]! <= 57) value = value * 10 + bytes[at++]! - 48;
    return value;
  }
  return 0;
}

/** Whether two byte arrays hold the same bytes. */
function sameBytes(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

/** Idle backend connections, one stack per backend, and the round-robin position. */
interface Pools {
  readonly ports: readonly number[];
  readonly idle: Deno.TcpConn[][];
  next: number;
}

/** A backend's response as read by {@linkcode exchange}: `bytes[0..size)`, head and body. */
interface Answer {
  readonly bytes: Uint8Array;
  readonly head: number;
  readonly size: number;
}

/**
 * Sends a request head to the next backend on a pooled connection and reads the whole response
 * into `buffer` (which must hold it).
 *
 * @param pools The connection pools.
 * @param request The request's bytes.
 * @param buffer Where the response is read.
 * @returns The response.
 */
async function exchange(pools: Pools, request: Uint8Array, buffer: Uint8Array): Promise<Answer> {
  const slot = pools.next++ % pools.ports.length;
  let conn = pools.idle[slot]!.pop();
  if (conn === undefined) {
    conn = await Deno.connect({ hostname: "127.0.0.1", port: pools.ports[slot]! });
    conn.setNoDelay(true);
  }
  await conn.write(request);
  let end = 0;
  let head = -1;
  while (head < 0) {
    const n = await conn.read(buffer.subarray(end));
    if (n === null) throw new Error("the backend closed the connection");
    end += n;
    head = headEnd(buffer, 0, end);
  }
  const size = head + contentLength(buffer, head);
  while (end < size) {
    const n = await conn.read(buffer.subarray(end));
    if (n === null) throw new Error("the backend closed the connection");
    end += n;
  }
  pools.idle[slot]!.push(conn);
  return { bytes: buffer, head, size };
}

/** `least`: one client connection, request after request. */
async function leastSession(client: Deno.TcpConn, pools: Pools): Promise<void> {
  client.setNoDelay(true);
  const request = new Uint8Array(16 * 1024);
  const response = new Uint8Array(16 * 1024);
  try {
    while (true) {
      let end = 0;
      let head = -1;
      while (head < 0) {
        const n = await client.read(request.subarray(end));
        if (n === null) return;
        end += n;
        head = headEnd(request, 0, end);
      }
      const answer = await exchange(pools, request.subarray(0, head), response);
      await client.write(answer.bytes.subarray(0, answer.size));
    }
  } catch {
    // A connection went away: a rung has no error handling to speak of.
  } finally {
    try {
      client.close();
    } catch {
      // Closed already.
    }
  }
}

/**
 * Starts serving a rung on a listener, until the process ends.
 *
 * @param rung Which one.
 * @param listener Where clients connect.
 * @param backends The backends' ports on 127.0.0.1, in round-robin order.
 */
export function serveRung(
  rung: Rung,
  listener: Deno.TcpListener,
  backends: readonly number[],
): void {
  const timeouts = {
    headerTimeout: 30_000,
    keepAliveTimeout: 60_000,
    sendTimeout: 60_000,
    requestBuffer: 1024 * 1024,
    bodyTimeout: 60_000,
    bodyMinRate: 500,
  };
  if (rung === "least") {
    const pools: Pools = { ports: backends, idle: backends.map(() => []), next: 0 };
    (async () => {
      for await (const client of listener) leastSession(client, pools);
    })();
  } else if (rung === "front") {
    const pools: Pools = { ports: backends, idle: backends.map(() => []), next: 0 };
    // A response buffer per exchange under way (exchanges overlap), reused afterwards.
    const buffers: Uint8Array[] = [];
    // The rung's own work is kept out of the measure: request heads and replies are made once
    // per distinct request and body, and reused (the benchmark sends one request over and over).
    const heads = new Map<string, Uint8Array>();
    const replies: { body: Uint8Array; reply: Reply }[] = [];
    const encoder = new TextEncoder();
    const decoder = new TextDecoder();
    serveHttp1(listener, {
      ...timeouts,
      forward: async (incoming) => {
        const key = `${incoming.method} ${incoming.target} ${incoming.authority}`;
        let head = heads.get(key);
        if (head === undefined) {
          head = encoder.encode(
            `${incoming.method} ${incoming.target} HTTP/1.1\r\nhost: ${incoming.authority}\r\n\r\n`,
          );
          heads.set(key, head);
        }
        const buffer = buffers.pop() ?? new Uint8Array(16 * 1024);
        try {
          const answer = await exchange(pools, head, buffer);
          const body = answer.bytes.subarray(answer.head, answer.size);
          for (const known of replies) if (sameBytes(known.body, body)) return known.reply;
          const reply = localReply(200, decoder.decode(body));
          replies.push({ body: body.slice(), reply });
          return reply;
        } finally {
          buffers.push(buffer);
        }
      },
    });
  } else if (rung === "core") {
    const urls = backends.map((port) => `http://127.0.0.1:${port}`).join(",");
    const command = parseCommandLine(["--backends", urls], () => undefined, 1);
    if (command.kind !== "run") throw new Error(`bad backends: ${urls}`);
    const { config } = command;
    const pool = createPool(config.backends.length);
    setMembers(pool, config.backends.map((_, slot) => slot));
    const upstreams = createUpstreams({
      connectTimeout: config.connectTimeout,
      responseTimeout: config.responseTimeout,
    });
    const forward = createForwarder({ pool, config, backends: config.backends, upstreams });
    serveHttp1(listener, { ...timeouts, forward });
  } else {
    const upstreams = createUpstreams({ connectTimeout: 5_000, responseTimeout: 30_000 });
    const hosts: Backend[] = backends.map((port) => ({
      url: `http://127.0.0.1:${port}`,
      hostname: "127.0.0.1",
      port,
      weight: 1,
      tls: false,
    }));
    let next = 0;
    serveHttp1(listener, {
      ...timeouts,
      forward: async (incoming) => {
        const head = `${incoming.method} ${incoming.target} HTTP/1.1\r\n` +
          `host: ${incoming.authority}\r\n\r\n`;
        const backend = hosts[next++ % hosts.length]!;
        const response = await roundTrip(upstreams, backend, {
          method: incoming.method,
          head,
          body: null,
          chunked: false,
          onBodyEnd: () => {},
        });
        return { kind: "upstream", response };
      },
    });
  }
}

if (import.meta.main) {
  const [rung, port, ...backends] = Deno.args;
  if (!RUNGS.includes(rung as Rung) || !port || backends.length === 0) {
    console.error(`usage: least_proxy.ts ${RUNGS.join("|")} PORT BACKEND_PORT...`);
    Deno.exit(2);
  }
  const listener = Deno.listen({ hostname: "127.0.0.1", port: Number(port) });
  console.log(`${rung} rung on 127.0.0.1:${port}`); // once it accepts connections
  serveRung(rung as Rung, listener, backends.map(Number));
}
