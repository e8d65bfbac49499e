/**
 * goround's own HTTP/1.1 front end, on a `Deno.listen` socket (the default `--engine goround`).
 *
 * `Deno.serve` costs a `Request` and a `Response` object per request, each with its headers
 * validated and copied between Rust and JavaScript: as a proxy front, more CPU per request than
 * the rest of goround (`docs/performance.md`). This server reads the
 * request head with one read, parses it once ({@linkcode parseRequestHead}), and writes the
 * response head and a whole body with one write. It keeps connections alive, answers requests
 * on a connection in order (pipelining included), streams bodies both ways, and refuses what
 * could smuggle a request (see `http1.ts`).
 *
 * Slow clients: each connection is a pending read, not a thread, so many slow connections do not
 * stop others being served; a request head must arrive within the header timeout, an idle
 * keep-alive connection is closed after the keep-alive timeout, a request body must keep its pace
 * (`body_pace.ts`: else 408), and a write to a client that stops reading is cut off after the
 * send timeout, all checked by one sweep (`deadlines.ts`). Request bodies are read into memory
 * before a backend is contacted, up to the request buffer (`request_buffer.ts`), so a slow upload
 * holds goround's memory, not a backend's worker.
 *
 * @module
 */

import {
  acceptBackoff,
  acceptFailed,
  acceptWorked,
  backoffBegins,
  backoffEnds,
  isPeerGone,
} from "./accept_backoff.ts";
import { type AccessEntry, type AccessLog, type ReplyFacts, replyFacts } from "./access_log.ts";
import { noteRead, type PaceLimits, readAllowance, resetPace } from "./body_pace.ts";
import { forwardResponseHeaders } from "../http/headers.ts";
import {
  chunkedDecoder,
  type ChunkedState,
  copyFields,
  decodeChunked,
  decodeChunkedInPlace,
  encodeLatin1,
  LAST_CHUNK,
  MAX_HEAD_BYTES,
  parseRequestHead,
  ProtocolError,
  RequestError,
  type RequestHead,
  writeLatin1,
} from "../http/http1.ts";
import { logLine } from "../log.ts";
import { formatDuration } from "../config/duration.ts";
import {
  connectRefused,
  type Forwarder,
  type Incoming,
  localReply,
  type Reply,
  splitTarget,
} from "../proxy/forward.ts";
import { type BufferBudget, UNBOUNDED } from "./request_buffer.ts";
import { batches, FRAME_ROOM } from "../http/streaming.ts";
import { BODY_BUFFER, borrow, giveBack } from "../http/buffers.ts";
import { isPast, startSweep, stopSweep } from "../http/deadlines.ts";
import { bufferSize, keepBuffer, takeBuffer } from "../http/spare_buffers.ts";
import { frameInto, makeRoom } from "../http/conn_buffers.ts";
import { reclaimed, reclaimMemory, type ReclaimState, shouldReclaim } from "./reclaim.ts";
import { drainingRefusal, isWebSocketUpgrade, type Upgrader } from "../proxy/websocket.ts";
import { splice } from "../proxy/ws_splice.ts";
import type { SessionEnd } from "../proxy/ws_bridge.ts";
import type { Bytes, RequestBody, UpstreamResponse } from "../upstream/client.ts";

/** Settings of the front end. The server reads them at each use, so the caller may change the
 * timeouts, the buffer sizes and the access log of a running server (a reload). */
export interface ServerOptions extends PaceLimits {
  /** The proxy core. */
  readonly forward: Forwarder;
  /** Time a client has to send a complete request head, ms. */
  readonly headerTimeout: number;
  /** Time an idle keep-alive connection is kept open, ms. */
  readonly keepAliveTimeout: number;
  /** Longest wait for a write to the client to make progress, ms (`--send-timeout`). */
  readonly sendTimeout: number;
  /** Request body bytes read before the request is forwarded (0: every body streams). */
  readonly requestBuffer: number;
  /** The budget buffered bodies take from. @default {UNBOUNDED} */
  readonly budget?: BufferBudget;
  /** `https` when the listener terminates TLS. @default {"http"} */
  readonly proto?: "http" | "https";
  /** Called with unexpected errors (a bug, not a client's or backend's fault). */
  readonly onError?: (error: unknown) => void;
  /** Where each request is logged, if anywhere. */
  readonly accessLog?: AccessLog | null;
  /** Told of each client connection opened (`1`) and closed (`-1`), for the metrics. */
  readonly onClient?: (change: 1 | -1) => void;
  /** Told of the status of each request goround answered itself, for the metrics. */
  readonly onRefused?: (status: number) => void;
  /** Opens the backend side of a WebSocket; without it, upgrades are forwarded as plain
   * requests (and the backend's 101, if any, refused). */
  readonly upgrade?: Upgrader;
}

/** How long, by default, a connection waiting for its next request may still send it once
 * shutdown has begun, ms. */
export const IDLE_GRACE = 1000;

/** A running front end. */
export interface Http1Server {
  /** The bound address. */
  readonly addr: Deno.NetAddr;
  /**
   * Stops accepting at once; requests in progress finish, each with `Connection: close`. A
   * connection waiting for its next request has `idleGrace` ms to send it (it is answered,
   * with `Connection: close`), then is closed: closing it at once would race with a client
   * sending on it, and lose that request. WebSocket tunnels keep running (a new handshake gets
   * 503) until they end, or until {@linkcode goAway}. Resolves when every connection is closed.
   */
  readonly shutdown: (idleGrace?: number) => Promise<void>;
  /** Sends every WebSocket tunnel, and any opened later, a close frame 1001 (going away): the
   * drain's deadline. Returns how many tunnels were open. */
  readonly goAway: () => number;
  /** Closes the listener and nothing else: connections keep being served as before (see
   * {@linkcode shutdown}, which follows). */
  readonly stopAccepting: () => void;
  /** Closes every connection at once. */
  readonly abort: () => void;
  /** Open client connections. */
  readonly connections: () => number;
  /** Bytes the open connections' read and write buffers hold: what idle connections cost. */
  readonly heldBytes: () => number;
}

/** One client connection. */
interface Client {
  readonly conn: Deno.Conn;
  readonly ip: string;
  readonly options: ServerOptions;
  /** Read buffer; `buf[start..end)` is unread. Between requests it is sized to the last
   * request ({@linkcode fitBuffers}). */
  buf: Bytes;
  /** Write buffer for response heads and whole bodies: borrowed by a reply that needs one,
   * given back once the connection waits for its next request ({@linkcode EMPTY} then). */
  wbuf: Bytes;
  start: number;
  end: number;
  /** Read buffer size to wait for the next request with (see {@linkcode fitBuffers}). */
  waitSize: number;
  /** Epoch ms after which the sweep closes the connection (0: none): a read's deadline. */
  deadline: number;
  /** Epoch ms after which the sweep closes the connection while a write is pending (0: none). */
  sendDeadline: number;
  /** When the pending read of a request body began, epoch ms (0: no body read pending). */
  readSince: number;
  /** The request body's pace (see `body_pace.ts`). */
  paceBytes: number;
  paceWait: number;
  /** Whether every byte of the request body has been read (the connection can carry another
   * request). */
  bodyDone: boolean;
  /** Whether a response to the current request has begun (or a 408 took its place). */
  replied: boolean;
  /** The request being answered (for log lines). */
  head: RequestHead | null;
  /** Bytes of the buffer budget the current request holds. */
  reserved: number;
  /** A 408 being written; the connection closes once it is out. */
  farewell: Promise<void> | null;
  /** A request is being answered. */
  busy: boolean;
  /** Request heads read so far. */
  requests: number;
  /** Some bytes of the next request head have arrived (its header timeout runs). */
  headBegun: boolean;
  /** Set while the connection carries a WebSocket tunnel: closes it with 1001 (going away). */
  goingAway: (() => void) | null;
  closed: boolean;
}

/** A new connection's first read buffer (nginx's `client_header_buffer_size`). */
const FIRST_READ = 1024;
/** Largest read buffer kept between requests: what a body is read ahead with. */
const READ_BUFFER = 16 * 1024;
const WRITE_BUFFER = 4 * 1024;
/** No buffer: an idle connection's write buffer. */
const EMPTY: Bytes = new Uint8Array(0);
const SWEEP_MS = 100;

/** A server's shutdown state, shared by its connections. */
interface Drain {
  /** Set once shutdown has begun: every reply says `Connection: close`. */
  stopping: boolean;
  /** Epoch ms at which a connection still waiting for its next request is closed (0: none). */
  idleUntil: number;
  /** Set at the drain's deadline: WebSocket tunnels are closed with 1001. */
  goneAway: boolean;
}
/** Epoch ms as of the last sweep or request start, on this thread: write deadlines are set from
 * it, so a write costs no clock read (the sweep is 100 ms coarse anyway). */
let clock = Date.now();
const CONTINUE = encodeLatin1("HTTP/1.1 100 Continue\r\n\r\n");
const TOO_SLOW_TEXT = "request body too slow\n";
/** What a client whose body broke the pace gets (RFC 9110 §15.5.9), the connection then closed. */
const TOO_SLOW = encodeLatin1(
  "HTTP/1.1 408 Request Timeout\r\ncontent-type: text/plain; charset=utf-8\r\n" +
    `content-length: ${TOO_SLOW_TEXT.length}\r\nconnection: close\r\n\r\n${TOO_SLOW_TEXT}`,
);
/** Room in a recycled buffer for a chunked body's payload (framing room is left, should the
 * piece be sent on chunked). */
const CHUNK_ROOM = BODY_BUFFER - FRAME_ROOM;
/** A buffer with less room than this left is done with: a new one takes the next read. */
const MIN_READ = 4096;
const NO_PARTS: readonly Bytes[] = [];

/** Reason phrases for the statuses goround itself answers. */
const REASONS: Record<number, string> = {
  200: "OK",
  204: "No Content",
  301: "Moved Permanently",
  302: "Found",
  303: "See Other",
  307: "Temporary Redirect",
  308: "Permanent Redirect",
  400: "Bad Request",
  401: "Unauthorized",
  403: "Forbidden",
  404: "Not Found",
  410: "Gone",
  429: "Too Many Requests",
  405: "Method Not Allowed",
  408: "Request Timeout",
  417: "Expectation Failed",
  431: "Request Header Fields Too Large",
  501: "Not Implemented",
  502: "Bad Gateway",
  503: "Service Unavailable",
  504: "Gateway Timeout",
  505: "HTTP Version Not Supported",
  508: "Loop Detected",
};

function closeClient(client: Client): void {
  // Whatever ended the connection (a bad or cut-off body, a 408, the client leaving), the
  // request-buffer budget its body held goes back.
  releaseBudget(client);
  if (client.closed) return;
  client.closed = true;
  try {
    client.conn.close();
  } catch {
    // Already closed.
  }
}

/** Reads more bytes into the client buffer: the read's own promise, not an async wrapper, since
 * this is on every request's path. The caller adds what it returns to `client.end`; `null` is
 * the end of the stream. */
function readMore(client: Client): Promise<number | null> {
  // A head longer than the buffer (an idle connection's is small) gets a bigger one.
  makeRoom(client, MAX_HEAD_BYTES * 2);
  return client.conn.read(client.buf.subarray(client.end));
}

/**
 * Between requests (nothing buffered): gives the write buffer back, and sizes the read buffer
 * to the last request with room to spare. The pending read of an idle connection then holds
 * little, and a busy connection whose requests are alike keeps its read buffer (and still
 * reads a request in one read).
 */
function fitBuffers(client: Client): void {
  if (client.wbuf !== EMPTY) {
    keepBuffer(client.wbuf);
    client.wbuf = EMPTY;
  }
  if (client.buf.length === client.waitSize) return;
  keepBuffer(client.buf);
  client.buf = takeBuffer(client.waitSize);
}

/** The client's write buffer, with room for `size` bytes (an idle connection has none). */
function writeRoom(client: Client, size: number): Bytes {
  if (client.wbuf.length < size) {
    keepBuffer(client.wbuf);
    client.wbuf = takeBuffer(Math.max(size, WRITE_BUFFER));
  }
  return client.wbuf;
}

/** Writes all of `bytes`; each write must make progress within the send timeout. */
async function writeAll(client: Client, bytes: Uint8Array): Promise<void> {
  const timeout = client.options.sendTimeout;
  client.sendDeadline = clock + timeout;
  let offset = await client.conn.write(bytes);
  while (offset < bytes.length) {
    client.sendDeadline = clock + timeout;
    offset += await client.conn.write(bytes.subarray(offset));
  }
  client.sendDeadline = 0;
}

/** A write made no progress within the send timeout (the client stopped reading): the
 * connection is closed, which fails the write, and the writer lets the backend go. */
function sendTimedOut(client: Client): void {
  if (client.closed) return;
  const head = client.head;
  logLine(
    `client ${client.ip} stopped reading the response for ${
      formatDuration(client.options.sendTimeout)
    } (--send-timeout): connection closed${head ? ` (${head.method} ${head.target})` : ""}`,
  );
  closeClient(client);
}

/** Acts on a connection past a deadline: a body read past its pace gets 408; a head or an idle
 * connection is just closed; so is one whose client stopped reading. */
function expireClient(client: Client, now: number): void {
  if (isPast(client.deadline, now)) {
    if (client.readSince !== 0) bodyTimedOut(client);
    else closeClient(client);
  } else if (isPast(client.sendDeadline, now)) {
    sendTimedOut(client);
  }
}

/** A request body broke its pace (see `body_pace.ts`): 408, unless a response has begun, then
 * the connection is closed. Whoever waits on the body then fails and finds `replied` set. */
function bodyTimedOut(client: Client): void {
  client.deadline = 0;
  client.readSince = 0;
  if (client.closed || client.farewell) return;
  const { head, options } = client;
  logLine(
    `client ${client.ip} sent its request body too slowly (--body-timeout ${
      formatDuration(options.bodyTimeout)
    }, --body-min-rate ${options.bodyMinRate}): 408${
      head ? ` (${head.method} ${head.target})` : ""
    }`,
  );
  if (client.replied) {
    closeClient(client);
    return;
  }
  client.replied = true;
  options.onRefused?.(408);
  logExchange(client, head, performance.now(), { status: 408, bytes: TOO_SLOW_TEXT.length }, {
    backend: null,
    retries: 0,
    requestId: "-",
    reason: "request body too slow",
  });
  client.sendDeadline = Date.now() + options.sendTimeout;
  client.farewell = client.conn.write(TOO_SLOW).then(() => {}, () => {}).finally(() =>
    closeClient(client)
  );
}

/**
 * Starts the wait for the next request head: arms its deadline. A new connection has the header
 * timeout to send its first request; a kept-alive one may idle for the keep-alive timeout, then
 * has the header timeout once a head has begun. The deadline is set once per phase, so
 * trickling bytes does not extend it (slowloris).
 */
function awaitHead(client: Client, options: ServerOptions, drain: Drain): void {
  client.headBegun = client.end > client.start;
  client.replied = false;
  const now = Date.now();
  clock = now;
  client.deadline = now +
    (client.headBegun || client.requests === 0 ? options.headerTimeout : options.keepAliveTimeout);
  if (!client.headBegun) idleAtMost(client, drain);
}

/** While shutting down, a connection waits for its next request only until the grace ends. */
function idleAtMost(client: Client, drain: Drain): void {
  if (drain.idleUntil !== 0 && client.deadline > drain.idleUntil) client.deadline = drain.idleUntil;
}

/**
 * The next request head if the buffer holds all of it, else `null` (read more, then call again).
 * Synchronous, so the usual exchange (one read, one whole head) costs no promise of its own.
 */
function takeHead(client: Client, options: ServerOptions): RequestHead | null {
  if (client.end === client.start) {
    client.start = 0;
    client.end = 0;
    fitBuffers(client); // every write of the last reply is over
    return null;
  }
  const head = parseRequestHead(client.buf, client.start, client.end);
  if (head !== null) {
    client.start += head.size;
    client.requests++;
    // The next request's head and body in one read, if like this one (half again for a longer
    // target or field); a chunked body's size is unknown: room for a full read of it.
    const size = head.size + (head.bodyLength < 0 ? READ_BUFFER : head.bodyLength);
    client.waitSize = Math.min(bufferSize(size + (size >> 1)), READ_BUFFER);
    return head;
  }
  if (!client.headBegun) {
    client.headBegun = true;
    client.deadline = Date.now() + options.headerTimeout;
  }
  return null;
}

/** Arms the deadline while a body read waits on the client (its pace decides how long); call
 * {@linkcode bodyRead} after. */
function bodyDeadline(client: Client): void {
  const now = Date.now();
  client.readSince = now;
  client.deadline = now + readAllowance(client, client.options);
}

/**
 * Clears the body deadline and counts the read in the body's pace: between reads the time is
 * the consumer's (the backend's), not the client's, and the response timeout covers that.
 *
 * @throws {RequestError} 408 when the body has fallen below its pace (the 408 is sent already).
 */
function bodyRead(client: Client, bytes: number): void {
  const since = client.readSince;
  client.readSince = 0;
  client.deadline = 0;
  if (since === 0) return; // the sweep found it past its deadline: the 408 is on its way
  if (!noteRead(client, bytes, Date.now() - since, client.options)) {
    bodyTimedOut(client);
    throw new RequestError(408, "request body too slow");
  }
}

/** Gives back the budget the request's buffered bytes held. */
function releaseBudget(client: Client): void {
  if (client.reserved === 0) return;
  (client.options.budget ?? UNBOUNDED).give(client.reserved);
  client.reserved = 0;
}

/** Takes budget for `bytes` more of the request's body; `false` when the budget is spent. */
function reserve(client: Client, bytes: number): boolean {
  if (!(client.options.budget ?? UNBOUNDED).take(bytes)) return false;
  client.reserved += bytes;
  return true;
}

/** Total length of parts. */
function lengthOf(parts: readonly Bytes[]): number {
  let size = 0;
  for (let i = 0; i < parts.length; i++) size += parts[i]!.length;
  return size;
}

/**
 * Reads up to `want` bytes of a `Content-Length` body before the request is forwarded, into
 * recycled buffers (`buffers.ts`), each taken from the budget first. Stops early when the budget
 * is spent (the rest then streams). The caller gives the parts back once the exchange is over.
 */
async function bufferLength(client: Client, want: number): Promise<Bytes[]> {
  const parts: Bytes[] = [];
  let got = 0;
  try {
    while (got < want) {
      const size = Math.min(BODY_BUFFER, want - got);
      if (!reserve(client, size)) break;
      const part = borrow().subarray(0, size);
      parts.push(part);
      let at = Math.min(size, client.end - client.start);
      part.set(client.buf.subarray(client.start, client.start + at));
      client.start += at;
      while (at < size) {
        bodyDeadline(client);
        const n = await client.conn.read(part.subarray(at));
        bodyRead(client, n ?? 0);
        if (n === null) throw new RequestError(400, "request body ended early");
        at += n;
      }
      got += size;
    }
  } catch (error) {
    // No one will read these: the buffers and the budget go back now (the budget again in
    // closeClient, a no-op then).
    for (const part of parts) giveBack(part);
    releaseBudget(client);
    throw error;
  }
  return parts;
}

/**
 * Reads and decodes a chunked body before the request is forwarded, until it ends or more than
 * the request buffer has arrived (or the budget is spent), into recycled buffers. A malformed
 * chunk is a 400 here, before any backend has seen the request. Bytes after the body's end stay
 * buffered for the next request.
 */
async function bufferChunked(client: Client, decoder: ChunkedState): Promise<Bytes[]> {
  const limit = client.options.requestBuffer;
  const parts: Bytes[] = [];
  let payload = 0;
  let out: Bytes | null = null;
  let used = 0;
  const keep = (data: Uint8Array) => {
    out!.set(data, used);
    used += data.length;
  };
  try {
    while (decoder.phase !== "done" && payload <= limit) {
      if (out === null || used > CHUNK_ROOM - MIN_READ) {
        if (out !== null) parts.push(out.subarray(0, used));
        out = null;
        if (!reserve(client, CHUNK_ROOM)) break;
        out = borrow().subarray(0, CHUNK_ROOM);
        used = 0;
      }
      const before = used;
      // The payload decoded is never longer than the input, so it fits in `out`; and no more is
      // taken than could bring the payload one byte past the limit (which then streams).
      const room = Math.min(CHUNK_ROOM - used, limit + 1 - payload);
      if (client.end > client.start) {
        const input = client.buf.subarray(client.start, Math.min(client.end, client.start + room));
        client.start += decodeChunked(decoder, input, keep);
      } else {
        bodyDeadline(client);
        const n = await client.conn.read(out.subarray(used, used + room));
        bodyRead(client, n ?? 0);
        if (n === null) throw new RequestError(400, "chunked body ended early");
        const region = out.subarray(used, used + n);
        const decoded = decodeChunkedInPlace(decoder, region);
        used += decoded.payload;
        if (decoded.consumed < n) putBack(client, region.subarray(decoded.consumed)); // the next request
      }
      payload += used - before;
    }
  } catch (error) {
    for (const part of parts) giveBack(part);
    if (out !== null) giveBack(out);
    releaseBudget(client);
    if (error instanceof ProtocolError) throw new RequestError(400, error.message);
    throw error;
  }
  if (out !== null && used > 0) parts.push(out.subarray(0, used));
  else if (out !== null) giveBack(out);
  if (decoder.phase === "done") {
    // Whole: the budget holds what the body takes, not the buffers' spare room.
    (client.options.budget ?? UNBOUNDED).give(client.reserved - payload);
    client.reserved = payload;
  }
  return parts;
}

/** Streams the rest of a `Content-Length` body off the connection, after the parts buffered
 * already (their budget is given back once the consumer has taken them). */
function lengthBody(
  client: Client,
  length: number,
  prefix: readonly Bytes[],
): ReadableStream<Bytes> {
  let remaining = length;
  return new ReadableStream<Bytes>({
    start(controller) {
      for (const part of prefix) controller.enqueue(part);
      const buffered = Math.min(remaining, client.end - client.start);
      if (buffered > 0) {
        controller.enqueue(client.buf.slice(client.start, client.start + buffered));
        client.start += buffered;
        remaining -= buffered;
      }
      if (remaining === 0) {
        client.bodyDone = true;
        controller.close();
      }
    },
    async pull(controller) {
      releaseBudget(client);
      const chunk = borrow();
      bodyDeadline(client);
      const n = await client.conn.read(chunk.subarray(0, Math.min(chunk.length, remaining)))
        .catch(() => null);
      try {
        bodyRead(client, n ?? 0);
      } catch (error) {
        giveBack(chunk);
        controller.error(error);
        return;
      }
      if (n === null) {
        giveBack(chunk);
        controller.error(new RequestError(400, "request body ended early"));
        return;
      }
      remaining -= n;
      controller.enqueue(n === chunk.length ? chunk : chunk.subarray(0, n));
      if (remaining === 0) {
        client.bodyDone = true;
        controller.close();
      }
    },
  }, { highWaterMark: 0 });
}

/**
 * Streams the rest of a chunked body off the connection, decoded, after the parts buffered
 * already; bytes after its end stay buffered. Each piece is a recycled buffer (`buffers.ts`):
 * what the client buffer held of the body, or one large read straight off the connection
 * decoded in place, so a large body takes large reads, not the client buffer's small ones.
 */
function chunkedBody(
  client: Client,
  decoder: ChunkedState,
  prefix: readonly Bytes[],
): ReadableStream<Bytes> {
  return new ReadableStream<Bytes>({
    start(controller) {
      for (const part of prefix) controller.enqueue(part);
    },
    pull: async (controller) => {
      releaseBudget(client);
      // Leave room for the chunk framing, should the piece be sent on chunked.
      const out = borrow().subarray(0, CHUNK_ROOM);
      let used = 0;
      try {
        while (used === 0 && decoder.phase !== "done") {
          if (client.end > client.start) {
            // The payload decoded is never longer than the input, so it fits in `out`.
            const input = client.buf.subarray(
              client.start,
              Math.min(client.end, client.start + out.length),
            );
            client.start += decodeChunked(decoder, input, (data) => {
              out.set(data, used);
              used += data.length;
            });
            continue;
          }
          bodyDeadline(client);
          const n = await client.conn.read(out);
          bodyRead(client, n ?? 0);
          if (n === null) throw new RequestError(400, "chunked body ended early");
          const { payload, consumed } = decodeChunkedInPlace(decoder, out.subarray(0, n));
          used = payload;
          if (consumed < n) putBack(client, out.subarray(consumed, n)); // the next request
        }
      } catch (error) {
        giveBack(out);
        controller.error(
          error instanceof ProtocolError ? new RequestError(400, error.message) : error,
        );
        return;
      }
      if (used > 0) controller.enqueue(out.subarray(0, used));
      else giveBack(out);
      if (decoder.phase === "done") {
        client.bodyDone = true;
        controller.close();
      }
    },
  }, { highWaterMark: 0 });
}

/**
 * Reads what the request buffer takes of the request's body, then gives the body to forward:
 * whole (bytes, or parts), or a stream of the parts read and the rest. Sets `bodyLength` to
 * what goes out as `Content-Length` (-1: the rest streams chunked).
 */
async function requestBody(
  client: Client,
  head: RequestHead,
): Promise<{ body: RequestBody; bodyLength: number }> {
  const limit = client.options.requestBuffer;
  if (head.bodyLength > 0) {
    const parts = limit > 0
      ? await bufferLength(client, Math.min(head.bodyLength, limit))
      : NO_PARTS;
    const got = lengthOf(parts);
    if (got < head.bodyLength) {
      return {
        body: lengthBody(client, head.bodyLength - got, parts),
        bodyLength: head.bodyLength,
      };
    }
    client.bodyDone = true;
    return { body: parts.length === 1 ? parts[0]! : parts, bodyLength: head.bodyLength };
  }
  const decoder = chunkedDecoder();
  const parts = limit > 0 ? await bufferChunked(client, decoder) : NO_PARTS;
  if (decoder.phase !== "done") {
    return { body: chunkedBody(client, decoder, parts), bodyLength: -1 };
  }
  // Decoded whole: it goes on with a Content-Length, as nginx sends a buffered body.
  client.bodyDone = true;
  const length = lengthOf(parts);
  return {
    body: parts.length === 1 ? parts[0]! : parts.length === 0 ? EMPTY : parts,
    bodyLength: length,
  };
}

/** Puts bytes read past a body back in the (empty) client buffer, for the next request. */
function putBack(client: Client, bytes: Uint8Array): void {
  if (bytes.length > client.buf.length) {
    keepBuffer(client.buf);
    client.buf = takeBuffer(bytes.length);
  }
  client.buf.set(bytes);
  client.start = 0;
  client.end = bytes.length;
}

/** Serialises a response head: the status line, `fields`, then `tail` (field lines as text). */
function responseHead(
  status: number,
  reason: string,
  fields: readonly (readonly [string, string])[],
  tail = "",
): string {
  return `HTTP/1.1 ${status} ${reason}\r\n${fieldLines(fields)}${tail}\r\n`;
}

/** Writes a stream body, chunk-framed or raw: the bytes sent, or -1 when the backend broke off. */
async function writeStream(
  client: Client,
  body: ReadableStream<Bytes>,
  chunked: boolean,
): Promise<number> {
  const reader = body.getReader();
  let sent = 0;
  try {
    while (true) {
      const { done, value } = await reader.read();
      if (done) break;
      // Given back only once all is written (see `pump` in upstream.ts for why).
      const out = [...batches([value], chunked)];
      for (const bytes of out) await writeAll(client, bytes);
      for (const bytes of out) giveBack(bytes);
      giveBack(value);
      sent += value.length;
    }
  } catch {
    reader.cancel().catch(() => {});
    return -1; // the backend broke off: cut the client's response short, never end it cleanly
  } finally {
    reader.releaseLock();
  }
  if (chunked) await writeAll(client, LAST_CHUNK);
  return sent;
}

/**
 * Writes a reply. Returns what was written, and whether the connection may carry another
 * request.
 */
async function writeReply(
  client: Client,
  request: Pick<RequestHead, "method" | "minor">,
  reply: Reply,
  keepAlive: boolean,
): Promise<Written> {
  const whole = frameWhole(client, request, reply, keepAlive);
  if (whole === null) {
    return await writeStreamed(client, request, reply as UpstreamReply, keepAlive);
  }
  const bytes = client.wbuf.subarray(0, whole.size);
  // One write nearly always takes it all: awaited directly, without writeAll's promise.
  client.sendDeadline = clock + client.options.sendTimeout;
  const n = await client.conn.write(bytes);
  if (n < bytes.length) await writeAll(client, bytes.subarray(n));
  client.sendDeadline = 0;
  return whole;
}

/** A reply with a backend's response. */
type UpstreamReply = Reply & { readonly kind: "upstream" };

/** Whether a response to `request` has no body (RFC 9112 §6.3 rule 1). */
function bodiless(request: Pick<RequestHead, "method">, status: number): boolean {
  return request.method === "HEAD" || status === 204 || status === 304 || status < 200;
}

/**
 * Frames a reply that goes out in one write into the client's write buffer: a local reply, or
 * a backend's response with a whole body or none (whose connection is released once the bytes
 * are copied). Synchronous: {@linkcode writeReply}
 * then sends it with one awaited write.
 *
 * @returns What was framed (`size` bytes at the start of `client.wbuf`), or `null` for a
 *   response with a stream body (see {@linkcode writeStreamed}).
 */
function frameWhole(
  client: Client,
  request: Pick<RequestHead, "method" | "minor">,
  reply: Reply,
  keepAlive: boolean,
): Written | null {
  const extra = reply.extra ?? NONE;
  if (reply.kind === "local") return frameLocal(client, request, reply, keepAlive, extra);
  const { response } = reply;
  const { status } = response;
  let body = response.body;
  if (body instanceof ReadableStream) {
    if (!bodiless(request, status)) return null;
    body.cancel().catch(() => {});
    body = null;
  } else if (body !== null && bodiless(request, status)) {
    body = null;
  }
  try {
    // Content-Length is kept where it describes the representation but no body follows
    // (HEAD, 304: RFC 9110 §8.6); otherwise goround frames the body itself.
    const keepLength = body === null && status !== 204 && bodiless(request, status);
    // After the backend's own fields: goround's extras, the framing and Connection.
    let tail = fieldLines(extra);
    if (body !== null) tail += `content-length: ${body.length}\r\n`;
    tail += connectionLine(request.minor, keepAlive);
    const bytes = frameResponse(client, response, keepLength, tail, body);
    return { status, keep: keepAlive, bytes: body === null ? 0 : body.length, size: bytes.length };
  } finally {
    // The bytes are copied (or failed to be): the backend connection can go back to the pool.
    response.release();
  }
}

/** goround's own answer: no content for 204, 205 and 304 (RFC 9110 §15.3.5, §15.3.6,
 * §15.4.5) and no Content-Length for 204 and 304 (§8.6); other text goes as UTF-8. */
function frameLocal(
  client: Client,
  request: Pick<RequestHead, "method" | "minor">,
  reply: Extract<Reply, { kind: "local" }>,
  keepAlive: boolean,
  extra: readonly (readonly [string, string])[],
): Written {
  const { status } = reply;
  const text = status === 204 || status === 205 || status === 304 ? "" : reply.text;
  const encoded = /[\u0080-\uffff]/.test(text) ? new TextEncoder().encode(text) : null;
  const length = encoded?.length ?? text.length;
  const lengthLine = status === 204 || status === 304 ? "" : `content-length: ${length}\r\n`;
  const tail = fieldLines(extra) + lengthLine + connectionLine(request.minor, keepAlive);
  const head = responseHead(status, REASONS[status] ?? "", reply.headers, tail);
  const withBody = request.method !== "HEAD";
  const bytes = withBody && encoded === null
    ? frame(client, head + text, null)
    : frame(client, head, withBody ? encoded : null);
  return { status, keep: keepAlive, bytes: withBody ? length : 0, size: bytes.length };
}

/** Writes a backend's response whose body is a stream. */
async function writeStreamed(
  client: Client,
  request: Pick<RequestHead, "method" | "minor">,
  reply: UpstreamReply,
  keepAlive: boolean,
): Promise<Written> {
  const { response } = reply;
  const { status } = response;
  const body = response.body as ReadableStream<Bytes>;
  try {
    let keep = keepAlive;
    let chunked = false;
    let tail = fieldLines(reply.extra ?? NONE);
    if (response.framing.kind === "length") {
      tail += `content-length: ${response.framing.length}\r\n`;
    } else if (request.minor === 1) {
      tail += "transfer-encoding: chunked\r\n"; // RFC 9112 §7.1
      chunked = true;
    } else {
      keep = false; // an HTTP/1.0 client and a body of unknown length: end it by closing
    }
    tail += connectionLine(request.minor, keep);
    try {
      await writeAll(client, frameResponse(client, response, false, tail, null));
    } catch (error) {
      // The client went away before the head: the body is never read, so it is cancelled (which
      // closes the backend connection and ends the request's in-flight count).
      body.cancel().catch(() => {});
      throw error;
    }
    const sent = await writeStream(client, body, chunked);
    return { status, keep: sent >= 0 && keep, bytes: sent < 0 ? null : sent, size: 0 };
  } finally {
    response.release();
  }
}

/** Field lines as text. */
function fieldLines(fields: readonly (readonly [string, string])[]): string {
  let out = "";
  for (const [name, value] of fields) out += `${name}: ${value}\r\n`;
  return out;
}

/** What writing a reply did. */
interface Written {
  /** The status sent. */
  readonly status: number;
  /** Whether the connection may carry another request. */
  readonly keep: boolean;
  /** Body bytes sent (`null` when the body broke off). */
  readonly bytes: number | null;
  /** Bytes framed in the write buffer by {@linkcode frameWhole} (0 for a streamed reply). */
  readonly size: number;
}

/** Serialises a head, and a whole body after it, into the client's write buffer. */
function frame(client: Client, head: string, body: Uint8Array | null): Uint8Array {
  return frameInto(client, head, body, WRITE_BUFFER);
}

/**
 * Serialises a backend's response head for the client, and a whole body after it, into the
 * client's write buffer: the status line, the backend's fields minus the hop-by-hop ones (and
 * `Content-Length` unless `keepLength`), then `tail`. Field lines that came off the wire are
 * copied as bytes; strings are used only when `Connection` names other fields to drop.
 */
function frameResponse(
  client: Client,
  response: UpstreamResponse,
  keepLength: boolean,
  tail: string,
  body: Uint8Array | null,
): Uint8Array {
  // The backend's reason phrase, even an empty one (RFC 9112 section 4: clients ignore it).
  const { status, raw, reason } = response;
  if (raw === undefined || raw.namesOthers) {
    const fields = forwardResponseHeaders(response.headers, keepLength);
    return frame(client, responseHead(status, reason, fields, tail), body);
  }
  const line = `HTTP/1.1 ${status} ${reason}\r\n`;
  // A copied line can be one byte longer than it came (a bare LF becomes CRLF).
  const room = line.length + raw.size + raw.count + tail.length + 2 +
    (body === null ? 0 : body.length);
  const out = writeRoom(client, room);
  let at = writeLatin1(line, out, 0);
  at = copyFields(raw, keepLength, out, at);
  at = writeLatin1(tail, out, at);
  out[at++] = 13;
  out[at++] = 10;
  if (body !== null) {
    out.set(body, at);
    at += body.length;
  }
  return out.subarray(0, at);
}

/** `Connection` as RFC 9112 §9.3 has it, as a field line (or none): say close when closing;
 * HTTP/1.0 needs keep-alive said. */
function connectionLine(minor: number, keepAlive: boolean): string {
  if (!keepAlive) return "connection: close\r\n";
  return minor === 0 ? "connection: keep-alive\r\n" : "";
}

const NONE: readonly [string, string][] = [];

function errorReply(error: RequestError): Reply {
  return localReply(error.status, error.message);
}

async function answer(
  client: Client,
  head: RequestHead,
  options: ServerOptions,
  drain: Drain,
): Promise<boolean> {
  const started = performance.now();
  if (head.method === "CONNECT") {
    const reply = connectRefused();
    const written = await writeReply(client, head, reply, false);
    if (reply.kind === "local") client.options.onRefused?.(written.status);
    if (client.options.accessLog) {
      logExchange(client, head, started, written, replyFacts(reply));
    }
    return false;
  }
  const { target, authority } = splitTarget(head.target);
  client.head = head;
  client.bodyDone = head.bodyLength === 0;
  let body: RequestBody = null;
  let bodyLength = 0;
  if (head.bodyLength !== 0) {
    if (head.expectContinue) await writeAll(client, CONTINUE);
    resetPace(client);
    ({ body, bodyLength } = await requestBody(client, head));
  } else if (hasField(head.headers, "content-length")) {
    body = new Uint8Array(0); // an explicit "Content-Length: 0" is passed on as such
  }
  const incoming: Incoming = {
    method: head.method,
    target,
    authority: authority ?? head.host ?? "",
    headers: head.headers,
    body,
    bodyLength,
    clientIp: client.ip,
    proto: options.proto ?? "http",
    arrived: started,
    underscores: head.underscores,
  };
  if (options.upgrade && head.bodyLength === 0 && isWebSocketUpgrade(head.method, head.headers)) {
    await tunnel(client, head, incoming, { upgrader: options.upgrade, drain });
    return false; // the connection was the tunnel's; it is closed now
  }
  let reply: Reply;
  let written: Written;
  try {
    reply = await options.forward(incoming);
    if (client.replied) {
      // The body fell below its pace and got 408 meanwhile; the connection is closing.
      if (reply.kind === "upstream") {
        const { response } = reply;
        if (response.body instanceof ReadableStream) response.body.cancel().catch(() => {});
        response.release();
      }
      return false;
    }
    client.replied = true;
    // The connection carries another request only if this one was read to its end.
    const keepAlive = head.keepAlive && !drain.stopping && client.bodyDone;
    written = await writeReply(client, head, reply, keepAlive);
  } finally {
    // The exchange is over: no retry is left to replay a whole body, and the reply (which a
    // forwarder could have built from it) is written, so its recycled buffers can go back.
    if (body instanceof Uint8Array) giveBack(body);
    else if (Array.isArray(body)) { for (const part of body) giveBack(part); }
    if (client.reserved !== 0) releaseBudget(client);
  }
  if (!client.bodyDone && body instanceof ReadableStream) body.cancel().catch(() => {});
  if (reply.kind === "local") client.options.onRefused?.(written.status);
  if (client.options.accessLog) {
    logExchange(client, head, started, written, replyFacts(reply));
  }

  return written.keep && client.bodyDone;
}

/** What was sent: the status and the body bytes. */
type Sent = Pick<AccessEntry, "status" | "bytes">;

/**
 * Writes the access-log line of one exchange of this connection: answered, refused (`head`
 * `null` when it was refused before its head was read whole), or a WebSocket session once over.
 */
function logExchange(
  client: Client,
  head: RequestHead | null,
  started: number,
  sent: Sent,
  facts: ReplyFacts & Pick<AccessEntry, "session">,
): void {
  const log = client.options.accessLog;
  if (!log) return;
  const field = (name: string) => head?.headers.find(([n]) => n === name)?.[1] ?? null;
  const now = performance.now();
  log.log({
    time: Date.now() - (now - started),
    client: client.ip,
    method: head?.method ?? "-",
    target: head?.target ?? "-",
    protocol: head === null ? "-" : head.minor === 1 ? "HTTP/1.1" : "HTTP/1.0",
    status: sent.status,
    bytes: head?.method === "HEAD" ? 0 : sent.bytes,
    durationMs: now - started,
    backend: facts.backend,
    retries: facts.retries,
    requestId: facts.requestId,
    referer: field("referer"),
    userAgent: field("user-agent"),
    reason: facts.reason,
    ...(facts.session ? { session: facts.session } : {}),
    ...(facts.route === undefined ? {} : { route: facts.route, pool: facts.pool ?? null }),
  });
}

/** Whether a field is among `fields`. */
function hasField(fields: readonly (readonly [string, string])[], name: string): boolean {
  for (let i = 0; i < fields.length; i++) if (fields[i]![0] === name) return true;
  return false;
}

/** Completes a WebSocket handshake through a backend, then splices the two connections; while
 * draining, a new handshake gets 503. */
async function tunnel(
  client: Client,
  head: RequestHead,
  incoming: Incoming,
  options: { readonly upgrader: Upgrader; readonly drain: Drain },
): Promise<void> {
  const started = performance.now();
  const { drain } = options;
  const outcome = drain.stopping
    ? { kind: "reply" as const, reply: drainingRefusal() }
    : await options.upgrader(incoming);
  if (outcome.kind === "reply") {
    const written = await writeReply(client, head, outcome.reply, false);
    if (outcome.reply.kind === "local") client.options.onRefused?.(written.status);
    if (client.options.accessLog) {
      logExchange(client, head, started, written, replyFacts(outcome.reply));
    }
    return;
  }
  const { switched } = outcome;
  let session: SessionEnd | undefined;
  try {
    // The backend's 101 goes to the client as it is (Upgrade, Connection, Sec-WebSocket-*
    // included: for a protocol switch they are the point), minus framing fields.
    const fields = switched.headers.filter(([name]) =>
      name !== "transfer-encoding" && name !== "content-length" && name !== "keep-alive"
    );
    fields.push(["x-request-id", outcome.requestId]);
    await writeAll(client, frame(client, responseHead(101, "Switching Protocols", fields), null));
    const leftover = client.buf.slice(client.start, client.end);
    client.start = client.end;
    recycle(client); // a tunnel may idle for hours: it reads and writes with buffers of its own
    // A drain lets a tunnel run until its deadline; then both ends are told 1001.
    const away = new AbortController();
    client.goingAway = () => away.abort();
    if (drain.goneAway) away.abort();
    session = await splice(
      { conn: client.conn, leftover },
      { conn: switched.conn, leftover: switched.leftover },
      {
        client: client.ip,
        backend: outcome.backend.url,
        requestId: outcome.requestId,
        goAway: away.signal,
      },
    );
  } finally {
    try {
      switched.conn.close();
    } catch {
      // Closed by the splice.
    }
    outcome.done();
    // One line per session, once it is over: its length, bytes each way and close code.
    logExchange(client, head, started, { status: 101, bytes: null }, {
      backend: outcome.backend.url,
      retries: 0,
      requestId: outcome.requestId,
      reason: null,
      ...(session ? { session } : {}),
      ...(outcome.routed ? { route: outcome.routed.route, pool: outcome.routed.pool } : {}),
    });
  }
}

async function session(
  client: Client,
  options: ServerOptions,
  drain: Drain,
): Promise<void> {
  try {
    // Not ended by shutdown: a reply that went out without `Connection: close` lets the client
    // send another request, which is answered (with it) rather than cut off.
    while (!client.closed) {
      client.busy = false;
      let head: RequestHead | null;
      try {
        awaitHead(client, options, drain);
        head = takeHead(client, options);
        while (head === null) {
          const n = await readMore(client);
          if (n === null) return; // the client closed the connection between requests
          client.end += n;
          head = takeHead(client, options);
        }
      } catch (error) {
        if (!(error instanceof RequestError)) throw error;
        const reply = errorReply(error);
        const started = performance.now();
        const written = await writeReply(client, { minor: 1, method: "GET" }, reply, false);
        if (reply.kind === "local") client.options.onRefused?.(written.status);
        if (client.options.accessLog) {
          logExchange(client, null, started, written, replyFacts(reply));
        }
        return;
      }
      client.busy = true;
      client.deadline = 0;
      let again: boolean;
      try {
        again = await answer(client, head, options, drain);
      } catch (error) {
        if (!(error instanceof RequestError)) throw error;
        if (client.replied) return;
        const reply = errorReply(error);
        const written = await writeReply(client, head, reply, false);
        if (reply.kind === "local") client.options.onRefused?.(written.status);
        if (client.options.accessLog) {
          logExchange(client, head, performance.now(), written, replyFacts(reply));
        }
        return;
      }
      if (!again) return;
    }
  } catch (error) {
    // A client that went away mid-exchange is routine; anything else is reported.
    if (!client.closed && !isConnectionError(error)) options.onError?.(error);
  } finally {
    if (client.farewell) await client.farewell;
    closeClient(client);
  }
}

/** Keeps a connection's buffers for the next ones once it needs them no more (nothing refers
 * to them: request bodies are handed on as copies or as recycled body buffers). */
function recycle(client: Client): void {
  keepBuffer(client.buf);
  keepBuffer(client.wbuf);
  client.buf = EMPTY;
  client.wbuf = EMPTY;
}

function isConnectionError(error: unknown): boolean {
  return error instanceof Deno.errors.BrokenPipe || error instanceof Deno.errors.ConnectionReset ||
    error instanceof Deno.errors.BadResource || error instanceof Deno.errors.Interrupted ||
    error instanceof Deno.errors.NotConnected || error instanceof Deno.errors.UnexpectedEof;
}

/**
 * Serves HTTP/1.1 on `listener`, handing each request to `options.forward`.
 *
 * @param listener A bound TCP (or TLS) listener.
 * @param options The proxy core and the client timeouts.
 * @returns The running server.
 * @example
 * ```ts ignore
 * const listener = Deno.listen({ port: 8000 });
 * const server = serveHttp1(listener, { forward, headerTimeout: 30_000, keepAliveTimeout: 60_000 });
 * ```
 */
export function serveHttp1(listener: Deno.Listener, options: ServerOptions): Http1Server {
  const clients = new Set<Client>();
  const sessions = new Set<Promise<void>>();
  const drain: Drain = { stopping: false, idleUntil: 0, goneAway: false };
  let accepts = true;
  const reclaim: ReclaimState = { peak: 0, last: 0 };
  const sweep = startSweep(clients, {
    every: SWEEP_MS,
    check: expireClient,
    after: (now) => {
      clock = now;
      // Many connections gone: what they held goes back to the system (see reclaim.ts).
      if (shouldReclaim(reclaim, clients.size, now)) {
        reclaimMemory();
        reclaimed(reclaim, clients.size, now);
      }
    },
  });

  const backoff = acceptBackoff();
  // Ends a wait after a failed accept early: on shutdown, or when a connection closed (its file
  // descriptor is free again).
  let wake: (() => void) | null = null;
  const pause = (ms: number) =>
    new Promise<void>((resolve) => {
      const done = () => {
        clearTimeout(timer);
        wake = null;
        resolve();
      };
      const timer = setTimeout(done, ms);
      wake = done;
    });
  const accepting = (async () => {
    while (accepts) {
      let conn: Deno.Conn;
      try {
        conn = await listener.accept();
      } catch (error) {
        if (!accepts || error instanceof Deno.errors.BadResource) return;
        if (isPeerGone(error)) continue; // reset in the backlog: routine, and nothing to wait for
        if (backoff.failures === 0) logLine(backoffBegins(error));
        await pause(acceptFailed(backoff));
        continue; // keep serving the connections we have
      }
      if (backoff.failures > 0) {
        const failures = acceptWorked(backoff);
        if (failures > 0) logLine(backoffEnds(failures, backoff));
      }
      try {
        if ("setNoDelay" in conn) (conn as Deno.TcpConn).setNoDelay(true);
      } catch {
        // Reset between accept and here: the session's first read finds out.
      }
      const client: Client = {
        conn,
        ip: (conn.remoteAddr as Deno.NetAddr).hostname,
        options,
        buf: takeBuffer(FIRST_READ),
        wbuf: EMPTY,
        start: 0,
        end: 0,
        waitSize: FIRST_READ,
        deadline: Date.now() + options.headerTimeout,
        sendDeadline: 0,
        readSince: 0,
        paceBytes: 0,
        paceWait: 0,
        bodyDone: true,
        replied: false,
        head: null,
        reserved: 0,
        farewell: null,
        busy: false,
        requests: 0,
        headBegun: false,
        goingAway: null,
        closed: false,
      };
      clients.add(client);
      options.onClient?.(1);
      const running = session(client, options, drain).finally(() => {
        clients.delete(client);
        options.onClient?.(-1);
        sessions.delete(running);
        recycle(client);
        wake?.();
      });
      sessions.add(running);
    }
  })();

  // Until shutdown, replies still keep their connections alive.
  const stopAccepting = () => {
    if (!accepts) return;
    accepts = false;
    try {
      listener.close();
    } catch {
      // Closed already.
    }
    wake?.(); // a wait after a failed accept ends now
  };

  return {
    addr: listener.addr as Deno.NetAddr,
    connections: () => clients.size,
    heldBytes: () => {
      let bytes = 0;
      for (const client of clients) bytes += client.buf.length + client.wbuf.length;
      return bytes;
    },
    stopAccepting,
    shutdown: async (idleGrace = IDLE_GRACE) => {
      stopAccepting();
      drain.stopping = true;
      drain.idleUntil = Date.now() + Math.max(0, idleGrace);
      await accepting;
      // Busy connections finish their request, answered with close; idle ones are closed by the
      // sweep once the grace is over, unless their next request comes first; WebSocket tunnels
      // run on (until `goAway`).
      for (const client of clients) {
        if (!client.goingAway && !client.busy && !client.headBegun) idleAtMost(client, drain);
      }
      await Promise.all([...sessions]);
      stopSweep(sweep);
    },
    goAway: () => {
      drain.goneAway = true;
      let told = 0;
      for (const client of clients) {
        if (client.goingAway) {
          client.goingAway();
          told++;
        }
      }
      return told;
    },
    abort: () => {
      drain.stopping = true;
      stopAccepting();
      for (const client of clients) closeClient(client);
      stopSweep(sweep);
    },
  };
}
