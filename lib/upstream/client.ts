/**
 * The upstream client: HTTP/1.1 over `Deno.connect` with a keep-alive pool per backend.
 *
 * `fetch` is not usable for a transparent proxy (it decompresses bodies, rewrites `Host`, adds
 * fields and crawls on chunked uploads), so goround speaks HTTP/1.1 itself: it writes the head
 * and body bytes it was given and reads the response with {@linkcode parseResponseHead}. Bodies
 * are streamed in both directions; a response that already arrived whole is handed over as
 * bytes, which lets the connection go back to the pool at once.
 *
 * An idle pooled connection always has a read pending, so a backend closing it (idle timeout,
 * restart) is noticed at once and the connection dropped; when a request takes the connection,
 * that pending read becomes the first read of its response.
 *
 * Deadlines are checked by one sweep per {@linkcode Upstreams} (every 50 ms, `deadlines.ts`), not
 * a timer per request: a connection past its deadline is closed, which fails its pending I/O.
 *
 * @module
 */

import type { Backend } from "../config/config.ts";
import { BodyBrokeOff, describeError, UpstreamError } from "../errors.ts";
import {
  chunkedDecoder,
  type ChunkedState,
  decodeChunked,
  decodeChunkedInPlace,
  type Framing,
  LAST_CHUNK,
  parseResponseHead,
  ProtocolError,
  type RawFields,
  responseFraming,
  type ResponseHead,
  reusableAfter,
} from "../http/http1.ts";
import {
  batches,
  FRAME_ROOM,
  joinParts,
  READ_AHEAD_BYTES,
  type ReadAhead,
  readAhead,
} from "../http/streaming.ts";
import { BODY_BUFFER, borrow, giveBack } from "../http/buffers.ts";
import { writeAll } from "../http/conn_io.ts";
import { isPast, startSweep, stopSweep, type Sweep } from "../http/deadlines.ts";
import { keepBuffer, takeBuffer } from "../http/spare_buffers.ts";
import { frameInto, makeRoom } from "../http/conn_buffers.ts";
import { connectTcp } from "./connect.ts";

/** Bytes backed by a plain `ArrayBuffer` (what `Response` and `conn.read` take). */
export type Bytes = Uint8Array<ArrayBuffer>;

/** A request body: whole bytes, whole bytes in parts (a buffered body, in the recycled buffers
 * it was read into), a stream, or none. Whole bodies can be sent again on a retry. */
export type RequestBody = Bytes | readonly Bytes[] | ReadableStream<Bytes> | null;

/** A whole body up to this size goes out in one write with the head (copied after it into the
 * connection's write buffer); a larger one is written after the head, so that write buffer
 * never grows past it. */
const INLINE_BODY = 64 * 1024;

/** Settings of the upstream client. */
export interface UpstreamOptions {
  /** Time to establish a connection, ms. */
  readonly connectTimeout: number;
  /** Time from the end of the request to the response head (and the longest pause while
   * sending a request body), ms. */
  readonly responseTimeout: number;
  /** Idle connections kept per backend. @default {256} */
  readonly maxIdle?: number;
  /** Idle connections older than this are closed, ms. @default {60000} */
  readonly idleTimeout?: number;
  /** CA certificates (PEM) trusted for https:// backends; none: the system's roots. */
  readonly caCerts?: string[];
  /** Bytes of a streamed request body read ahead of the writes to the backend (see
   * `readAheadFor` in streaming.ts). @default {READ_AHEAD_BYTES} */
  readonly readAhead?: number;
}

/** A request ready for the wire. */
export interface OutgoingRequest {
  /** The method (decides whether the response can have a body). */
  readonly method: string;
  /** The serialised head (a byte string), including the framing field for the body. */
  readonly head: string;
  /** The body: whole bytes (sent with the head when small), whole parts, a stream, or none. */
  readonly body: RequestBody;
  /** Whether a stream body is sent with chunked framing (else it has a `Content-Length`). */
  readonly chunked: boolean;
  /** Called once when a streamed response body ends: with no argument when it completed or the
   * client cancelled it, with the reason when the backend broke it off. */
  readonly onBodyEnd?: (error?: string) => void;
}

/** A response head with its body. */
export interface UpstreamResponse {
  /** Status code, 200-599 (or 101 never: upgrades are not forwarded). */
  readonly status: number;
  /** The backend's reason phrase (may be empty). */
  readonly reason: string;
  /** Fields as received, names lowercased. */
  readonly headers: [string, string][];
  /** The field lines as bytes (when the response came off the wire): the front copies them to
   * the client as they are, without making strings of them. */
  readonly raw?: RawFields;
  /** How the backend framed the body. */
  readonly framing: Framing;
  /** The body: whole bytes, a stream of the rest, or none. Whole bytes may be a view into the
   * connection's read buffer: copy them, then call {@linkcode UpstreamResponse.release}. */
  readonly body: Bytes | ReadableStream<Bytes> | null;
  /** Whether the request went out on a pooled connection. */
  readonly reused: boolean;
  /** Hands the connection back to the pool once a whole body (or none) and the head's field
   * lines have been copied: both may be views into the connection's buffer (a no-op for a
   * stream body, whose connection the stream finishes). Call it exactly once, whatever happens
   * to the response. */
  readonly release: () => void;
}

/** One TCP connection to a backend. */
export interface Link {
  /** The connection. */
  readonly conn: Deno.Conn;
  /** The backend's pool it belongs to. */
  readonly host: Host;
  /** Read buffer for response heads; `buf[start..end)` is unread. */
  buf: Bytes;
  /** Write buffer for request heads (and whole bodies). */
  wbuf: Bytes;
  /** Start of the unread bytes in `buf`. */
  start: number;
  /** End of the unread bytes in `buf`. */
  end: number;
  /** Requests completed on this connection. */
  uses: number;
  /** A read started while idle, whose result belongs to the next response. */
  pending: Promise<number | null> | null;
  /** Whether it waits in its pool for the next request. */
  idle: boolean;
  /** Whether it has been closed. */
  closed: boolean;
  /** Epoch ms after which the sweep closes the connection (0: none). */
  deadline: number;
  /** Whether the sweep closed it for its deadline. */
  timedOut: boolean;
  /** When it last became idle (epoch ms). */
  idleSince: number;
  /** Offsets of the current response head's field lines, reused for each response. */
  readonly spans: number[];
  /** Settles the read kept pending while idle: made once per connection, not per request. */
  readonly onIdleRead: () => void;
}

/** Per-backend connection pool. */
export interface Host {
  /** The backend. */
  readonly backend: Backend;
  /** Its idle connections, the most recently used last. */
  readonly idle: Link[];
  /** The thread's client it belongs to. */
  readonly owner: Upstreams;
}

/** The upstream client of one thread: a pool per backend and the deadline sweep. */
export interface Upstreams {
  /** The settings (a reload replaces them). */
  options: Required<UpstreamOptions>;
  /** The pools, by backend URL. */
  readonly hosts: Map<string, Host>;
  /** Every open connection, idle or busy, from dial to close: the sweep and shutdown walk it.
   * (Membership changes per connection, not per request: a set of the busy ones, added to and
   * deleted from on every request, cost ~2% of the CPU in V8's hash-table upkeep.) */
  readonly links: Set<Link>;
  /** The deadline sweep, which also closes connections idle past the idle timeout. */
  sweep: Sweep;
}

const HEAD_BUFFER = 16 * 1024;
const WRITE_BUFFER = 4 * 1024;
const SWEEP_MS = 50;

/**
 * Creates the upstream client for one thread.
 *
 * @param options Timeouts and pool sizes.
 * @returns The client; release it with {@linkcode closeUpstreams}.
 */
export function createUpstreams(options: UpstreamOptions): Upstreams {
  const links = new Set<Link>();
  const upstreams: Upstreams = {
    options: {
      maxIdle: 256,
      idleTimeout: 60_000,
      caCerts: [],
      readAhead: READ_AHEAD_BYTES,
      ...options,
    },
    hosts: new Map(),
    links,
    sweep: startSweep(links, {
      every: SWEEP_MS,
      check: expireLink,
      after: (now) => closeIdle(upstreams, now),
    }),
  };
  return upstreams;
}

/**
 * Stops the sweep and closes every connection, idle or busy.
 *
 * @param upstreams The client.
 */
export function closeUpstreams(upstreams: Upstreams): void {
  stopSweep(upstreams.sweep);
  for (const link of [...upstreams.links]) closeLink(link);
}

/**
 * Changes the timeouts (a reload); requests already under way keep the deadlines they have.
 *
 * @param upstreams The client.
 * @param options The new timeouts.
 */
export function setUpstreamOptions(upstreams: Upstreams, options: UpstreamOptions): void {
  upstreams.options = { ...upstreams.options, ...options };
}

/**
 * Forgets the pools of backends not in `urls` (after a reload removed them): their idle
 * connections are closed; requests still under way on them finish normally.
 *
 * @param upstreams The client.
 * @param urls The backends that stay.
 */
export function retainHosts(upstreams: Upstreams, urls: readonly string[]): void {
  for (const [url, host] of upstreams.hosts) {
    if (urls.includes(url)) continue;
    upstreams.hosts.delete(url);
    for (const link of [...host.idle]) closeLink(link);
  }
}

/**
 * Number of idle pooled connections to a backend (for tests and status).
 *
 * @param upstreams The client.
 * @param backend The backend.
 * @returns The count.
 */
export function idleCount(upstreams: Upstreams, backend: Backend): number {
  return upstreams.hosts.get(backend.url)?.idle.length ?? 0;
}

function hostFor(upstreams: Upstreams, backend: Backend): Host {
  let host = upstreams.hosts.get(backend.url);
  if (!host) {
    host = { backend, idle: [], owner: upstreams };
    upstreams.hosts.set(backend.url, host);
  }
  return host;
}

/** Closes a connection past its deadline; an idle one has none (release clears it). */
function expireLink(link: Link, now: number): void {
  if (!isPast(link.deadline, now)) return;
  link.timedOut = true;
  closeLink(link);
}

/** Closes the connections idle for longer than the idle timeout (the oldest are first). */
function closeIdle(upstreams: Upstreams, now: number): void {
  const cutoff = now - upstreams.options.idleTimeout;
  for (const host of upstreams.hosts.values()) {
    while (host.idle.length > 0 && host.idle[0]!.idleSince < cutoff) closeLink(host.idle[0]!);
  }
}

function closeLink(link: Link): void {
  if (link.closed) return;
  link.closed = true;
  link.host.owner.links.delete(link);
  if (link.idle) {
    const at = link.host.idle.indexOf(link);
    if (at >= 0) link.host.idle.splice(at, 1);
    link.idle = false;
  }
  try {
    link.conn.close();
  } catch {
    // Already closed by the peer's reset; nothing to release.
  }
}

async function dial(host: Host): Promise<Link> {
  const { hostname, port, tls } = host.backend;
  const { connectTimeout, caCerts } = host.owner.options;
  let conn: Deno.Conn;
  try {
    const signal = AbortSignal.timeout(connectTimeout);
    if (tls) {
      // TLS to an https:// backend: SNI and certificate checks use its host name.
      const tcp = await connectTcp({ hostname, port, signal });
      tcp.setNoDelay(true);
      conn = await Deno.startTls(tcp, { hostname, ...(caCerts.length ? { caCerts } : {}) });
    } else {
      const tcp = await connectTcp({ hostname, port, signal });
      tcp.setNoDelay(true);
      conn = tcp;
    }
  } catch (error) {
    throw new UpstreamError("connect", describeError(error), { sent: false, reused: false });
  }
  const link: Link = {
    conn,
    host,
    onIdleRead: () => {
      if (link.idle) closeLink(link);
    },
    spans: [],
    buf: takeBuffer(HEAD_BUFFER),
    wbuf: takeBuffer(WRITE_BUFFER),
    start: 0,
    end: 0,
    uses: 0,
    pending: null,
    idle: false,
    closed: false,
    deadline: 0,
    timedOut: false,
    idleSince: 0,
  };
  host.owner.links.add(link);
  return link;
}

/** Takes the most recently used idle connection (LIFO keeps the warm ones warm). */
function takeIdle(host: Host): Link | null {
  const link = host.idle.pop();
  if (!link) return null;
  link.idle = false;
  return link;
}

function release(link: Link): void {
  const host = link.host;
  link.deadline = 0;
  // Closed, pool full, or the backend was removed by a reload: nothing to keep it for.
  const { owner } = host;
  if (
    link.closed || host.idle.length >= owner.options.maxIdle ||
    owner.hosts.get(host.backend.url) !== host
  ) {
    closeLink(link);
    return;
  }
  link.uses++;
  link.start = 0;
  link.end = 0;
  link.idle = true;
  link.idleSince = Date.now();
  host.idle.push(link);
  // Keep a read pending: if it completes while the connection is still idle, the backend
  // closed it (or sent bytes nobody asked for), so it is dropped from the pool.
  const pending = link.conn.read(link.buf);
  link.pending = pending;
  pending.then(link.onIdleRead, link.onIdleRead);
}

/** Serialises the head, and a whole body after it, into the connection's write buffer. */
function frame(link: Link, head: string, body: Uint8Array | null): Bytes {
  return frameInto(link, head, body, WRITE_BUFFER);
}

/**
 * Reads more bytes into the head buffer (the read left pending while the connection was idle,
 * if any): the read's own promise, not an async wrapper, since this is on every request's path.
 * The caller adds what it returns to `link.end`; `null` is the end of the stream.
 */
function readMore(link: Link): Promise<number | null> {
  if (link.pending) {
    const pending = link.pending;
    link.pending = null;
    return pending;
  }
  makeRoom(link, Infinity); // the parser bounds a head; a whole body may need more
  return link.conn.read(link.buf.subarray(link.end));
}

/**
 * Sends a stream body as it arrives (see {@linkcode readAhead}). The deadline runs only while a
 * write is pending: a backend that stops reading times out; a client that pauses does not.
 */
async function pump(
  link: Link,
  body: ReadableStream<Bytes>,
  chunked: boolean,
  headArrived: () => boolean,
): Promise<void> {
  const { responseTimeout: timeout, readAhead: limit } = link.host.owner.options;
  const ahead = readAhead(body, limit);
  try {
    for (let parts; (parts = await clientParts(ahead)) !== null;) {
      link.deadline = Date.now() + timeout;
      // Nothing goes back to the pool until every batch is written: a lone part is sent as its
      // own batch, and given back early it could be lent to the read-ahead (or another request)
      // and overwritten while a later batch's write waits, then given back a second time.
      const out = [...batches(parts, chunked)];
      for (const bytes of out) await writeAll(link.conn, bytes);
      for (const bytes of out) giveBack(bytes);
      for (const part of parts) giveBack(part);
      link.deadline = 0;
    }
    if (chunked) await writeAll(link.conn, LAST_CHUNK);
  } catch (error) {
    ahead.cancel(error);
    throw error;
  }
  // The body is sent: the response timeout now runs, unless the response has begun already (a
  // backend may answer before it has read the whole body; its response is not timed).
  if (!headArrived()) link.deadline = Date.now() + timeout;
}

/** Writes a whole body's parts after the head. The deadline runs while each write is pending
 * (a backend that stops reading times out), then for the response. The parts stay the
 * caller's: a retry sends them again. */
async function sendWhole(link: Link, parts: readonly Bytes[], timeout: number): Promise<void> {
  for (const part of parts) {
    link.deadline = Date.now() + timeout;
    await writeAll(link.conn, part);
  }
  link.deadline = Date.now() + timeout;
}

/** The next parts of the client's body. Its failure is the client's, not the backend's, so it
 * is told apart (`client`): a client going away mid-upload must not take a backend down. */
async function clientParts(ahead: ReadAhead): Promise<Uint8Array[] | null> {
  try {
    return await ahead.next();
  } catch (error) {
    throw new UpstreamError("client", `the client's body broke off: ${describeError(error)}`, {
      sent: true,
      reused: false,
    });
  }
}

/**
 * Sends a request to a backend and reads the response head.
 *
 * @param upstreams The thread's client.
 * @param backend Where to send it.
 * @param request The serialised request.
 * @param fresh Dial a new connection rather than take an idle one (a retry after a pooled
 *   connection turned out closed).
 * @returns The response; its stream body, if any, must be read or cancelled.
 * @throws {UpstreamError} When no usable response head arrived.
 */
export async function roundTrip(
  upstreams: Upstreams,
  backend: Backend,
  request: OutgoingRequest,
  fresh = false,
): Promise<UpstreamResponse> {
  const host = hostFor(upstreams, backend);
  const pooled = fresh ? null : takeIdle(host);
  const link = pooled ?? await dial(host);
  const reused = pooled !== null;
  const timeout = upstreams.options.responseTimeout;
  let sent = false;
  let pumping: Promise<void> | null = null;
  let pumpDone = true;
  let pumpFailure: unknown = null;
  let headArrived = false;
  try {
    const { body } = request;
    sent = true;
    if (body === null || (body instanceof Uint8Array && body.length <= INLINE_BODY)) {
      // One write nearly always takes it all: awaited directly, without writeAll's promise.
      const bytes = frame(link, request.head, body);
      const n = await link.conn.write(bytes);
      if (n < bytes.length) await writeAll(link.conn, bytes.subarray(n));
      link.deadline = Date.now() + timeout;
    } else if (!(body instanceof ReadableStream)) {
      await writeAll(link.conn, frame(link, request.head, null));
      await sendWhole(link, body instanceof Uint8Array ? [body] : body, timeout);
    } else {
      await writeAll(link.conn, frame(link, request.head, null));
      pumpDone = false;
      pumping = pump(link, body, request.chunked, () => headArrived).then(
        () => {
          pumpDone = true;
        },
        (error) => {
          // The client's body broke off, or the backend stopped reading: the exchange is over.
          pumpFailure = error;
          closeLink(link);
          throw error;
        },
      );
      pumping.catch(() => {});
    }
    // The head nearly always comes in one read: awaited here, without readHead's own promise.
    const n = await readMore(link);
    if (n === null) throw endedEarly(link);
    link.end += n;
    const head = headIn(link, false) ?? await readHead(link);
    // Framing is decided (and validated) before anything reaches the client.
    const framing = responseFraming(head, request.method);
    headArrived = true;
    link.deadline = 0;
    const close = !reusableAfter(head, request.method);
    return respond(link, head, framing, request, reused, () => pumpDone, close);
  } catch (error) {
    closeLink(link);
    // The read failed because the pump closed the connection when the client's body broke.
    if (pumpFailure instanceof UpstreamError && pumpFailure.kind === "client") throw pumpFailure;
    throw classify(error, link, { sent, reused, pumping });
  }
}

function classify(
  error: unknown,
  link: Link,
  state: { sent: boolean; reused: boolean; pumping: Promise<void> | null },
): UpstreamError {
  const flags = { sent: state.sent, reused: state.reused };
  // The sweep closed the connection: whatever the read then reported, the cause is the timeout.
  if (link.timedOut) {
    return new UpstreamError("timeout", "timed out waiting for the response", flags);
  }
  if (error instanceof UpstreamError) return error;
  if (error instanceof ProtocolError) return new UpstreamError("protocol", error.message, flags);
  return new UpstreamError("reset", describeError(error), flags);
}

/**
 * The final response head if the buffer holds one (interim 1xx heads before it are consumed),
 * else `null`: the caller reads more, or ends the response if the connection ended.
 */
function headIn(link: Link, switching: boolean): ResponseHead | null {
  while (link.end > link.start) {
    const head = parseResponseHead(link.buf, link.start, link.end, link.spans);
    if (head === null) return null;
    link.start += head.size;
    if (head.status === 101) {
      if (switching) return head;
      throw new ProtocolError("unexpected 101 Switching Protocols");
    }
    // Interim responses (100 Continue, 102, 103 Early Hints) are consumed here.
    if (head.status < 200) continue;
    return head;
  }
  return null;
}

/** The framing of a 101 response: none (the connection then carries the new protocol). */
const NO_BODY: Framing = { kind: "none" };

async function readHead(link: Link, switching = false): Promise<ResponseHead> {
  while (true) {
    const head = headIn(link, switching);
    if (head !== null) return head;
    const n = await readMore(link);
    if (n === null) throw endedEarly(link);
    link.end += n;
  }
}

/** The backend closed the connection before a whole response head. */
function endedEarly(link: Link): UpstreamError {
  const reason = link.end > link.start
    ? "response head cut short"
    : "connection closed before a response";
  return new UpstreamError("reset", reason, { sent: true, reused: link.uses > 0 });
}

/** A protocol switch the backend accepted: the connection is now the caller's. */
export interface Switched {
  /** The 101 response head's fields. */
  readonly headers: [string, string][];
  /** The backend connection, handed over (no longer pooled or timed). */
  readonly conn: Deno.Conn;
  /** Bytes the backend sent after the 101 head (already the new protocol's). */
  readonly leftover: Uint8Array;
}

/**
 * Sends an upgrade request (WebSocket) on a fresh connection. If the backend switches
 * protocols (101), the connection is handed over; any other answer is an ordinary response
 * (and the connection is closed after it).
 *
 * @param upstreams The thread's client.
 * @param backend Where to send it.
 * @param request The serialised request (with `Upgrade` and `Connection: upgrade`).
 * @returns The switched connection, or the response.
 * @throws {UpstreamError} When no usable response head arrived.
 */
export async function upgrade(
  upstreams: Upstreams,
  backend: Backend,
  request: OutgoingRequest,
): Promise<
  { kind: "switched"; switched: Switched } | { kind: "response"; response: UpstreamResponse }
> {
  const host = hostFor(upstreams, backend);
  const link = await dial(host);
  try {
    await writeAll(link.conn, frame(link, request.head, null));
    link.deadline = Date.now() + upstreams.options.responseTimeout;
    const head = await readHead(link, true);
    const framing = head.status === 101 ? NO_BODY : responseFraming(head, request.method);
    link.deadline = 0;
    if (head.status === 101) {
      upstreams.links.delete(link);
      link.closed = true; // not ours any more: the pool and the sweep let it be
      const leftover = link.buf.slice(link.start, link.end);
      // The tunnel reads and writes with buffers of its own; no read or write is pending here.
      keepBuffer(link.buf);
      keepBuffer(link.wbuf);
      return { kind: "switched", switched: { headers: head.headers, conn: link.conn, leftover } };
    }
    // Not switching: an ordinary answer, and the connection is not reused after it.
    const response = respond(link, head, framing, request, false, () => true, true);
    return { kind: "response", response };
  } catch (error) {
    closeLink(link);
    throw classify(error, link, { sent: true, reused: false, pumping: null });
  }
}

function respond(
  link: Link,
  head: ResponseHead,
  framing: Framing,
  request: OutgoingRequest,
  reused: boolean,
  pumpDone: () => boolean,
  close = head.close,
): UpstreamResponse {
  // A whole body (or none) is handed over with the connection still held: the head's field
  // lines and the body are in its buffer until the caller has copied them and calls `release`.
  const whole = (body: Bytes | null) =>
    new WireResponse(head, framing, body, reused, link, close, pumpDone);
  const streamed = (body: ReadableStream<Bytes>) =>
    new WireResponse(head, framing, body, reused, null, close, pumpDone);
  const finish = () => finishLink(link, close, pumpDone);
  switch (framing.kind) {
    case "none":
      return whole(null);
    case "length": {
      const available = link.end - link.start;
      if (available >= framing.length) {
        const body = link.buf.subarray(link.start, link.start + framing.length);
        link.start += framing.length;
        return whole(body);
      }
      return streamed(lengthStream(link, framing.length, finish, request));
    }
    case "chunked": {
      const state = chunkedDecoder();
      const parts: Bytes[] = [];
      const input = link.buf.subarray(link.start, link.end);
      try {
        link.start += decodeChunked(state, input, (data) => parts.push(data.slice()));
      } catch (error) {
        closeLink(link);
        throw new UpstreamError("protocol", (error as Error).message, { sent: true, reused });
      }
      // Each part is a copy already: a lone one needs no other.
      if (state.phase === "done") {
        return whole(parts.length === 1 ? parts[0]! : joinParts(parts, false));
      }
      return streamed(chunkedStream(link, state, parts, finish, request));
    }
    case "close":
      return streamed(closeStream(link, request));
  }
}

/** Pools the connection after a response, or closes it when it cannot carry another. */
function finishLink(link: Link, close: boolean, pumpDone: () => boolean): void {
  if (!close && pumpDone() && link.start === link.end) release(link);
  else closeLink(link);
}

/**
 * A response read off the wire. A class so that `headers` is decoded from the field lines on
 * first use, by a getter on the prototype (the goround front copies the lines as bytes and
 * never asks), and so that `release` is a method, not closures made per response.
 */
class WireResponse implements UpstreamResponse {
  readonly status: number;
  readonly reason: string;
  readonly raw: RawFields;
  #link: Link | null;

  constructor(
    readonly head: ResponseHead,
    readonly framing: Framing,
    readonly body: Bytes | ReadableStream<Bytes> | null,
    readonly reused: boolean,
    link: Link | null,
    readonly close: boolean,
    readonly pumpDone: () => boolean,
  ) {
    this.status = head.status;
    this.reason = head.reason;
    this.raw = head.raw;
    this.#link = link;
  }

  get headers(): [string, string][] {
    return this.head.headers;
  }

  release(): void {
    const link = this.#link;
    if (link === null) return; // a stream body's connection is finished by the stream
    this.#link = null;
    finishLink(link, this.close, this.pumpDone);
  }
}

function takeLeftover(link: Link): Bytes | null {
  if (link.end === link.start) return null;
  const rest = link.buf.slice(link.start, link.end);
  link.start = link.end;
  return rest;
}

function bodyFailed(link: Link, request: OutgoingRequest, reason: string): Error {
  closeLink(link);
  request.onBodyEnd?.(reason);
  return new BodyBrokeOff(`backend ${link.host.backend.url} ${reason}`);
}

/**
 * Reads the next piece of a body, at most `size` bytes, into a recycled buffer (`buffers.ts`).
 * Returns the bytes, `null` at the end of the connection, or `undefined` when the read failed
 * (the stream is then errored and the failure reported).
 */
async function readPiece(
  link: Link,
  size: number,
  request: OutgoingRequest,
  controller: ReadableStreamDefaultController<Bytes>,
): Promise<Bytes | null | undefined> {
  const buffer = borrow();
  try {
    const n = await link.conn.read(buffer.subarray(0, size));
    if (n === null) giveBack(buffer);
    return n === null ? null : n === buffer.length ? buffer : buffer.subarray(0, n);
  } catch (error) {
    giveBack(buffer);
    controller.error(bodyFailed(link, request, `broke off mid-body: ${describeError(error)}`));
    return undefined;
  }
}

function lengthStream(
  link: Link,
  length: number,
  finish: () => void,
  request: OutgoingRequest,
): ReadableStream<Bytes> {
  let remaining = length;
  return new ReadableStream<Bytes>({
    start(controller) {
      const first = takeLeftover(link);
      if (first) {
        remaining -= first.length;
        controller.enqueue(first);
      }
    },
    async pull(controller) {
      // A whole buffer is asked for even near the end, so that bytes sent past the body in the
      // same write are seen here (and the connection closed), not after it is lent again.
      const piece = await readPiece(link, BODY_BUFFER, request, controller);
      if (piece === undefined) return;
      if (piece === null) {
        controller.error(
          bodyFailed(link, request, `closed the connection ${remaining} bytes short`),
        );
        return;
      }
      const extra = piece.length > remaining;
      controller.enqueue(extra ? piece.subarray(0, remaining) : piece);
      remaining = extra ? 0 : remaining - piece.length;
      if (remaining === 0) {
        controller.close();
        if (extra) closeLink(link);
        else finish();
        request.onBodyEnd?.();
      }
    },
    cancel() {
      closeLink(link);
      request.onBodyEnd?.();
    },
  });
}

function chunkedStream(
  link: Link,
  state: ChunkedState,
  buffered: Bytes[],
  finish: () => void,
  request: OutgoingRequest,
): ReadableStream<Bytes> {
  return new ReadableStream<Bytes>({
    start(controller) {
      for (const part of buffered) controller.enqueue(part);
    },
    async pull(controller) {
      // Loop until at least one payload byte (or the end) so each pull makes progress.
      while (true) {
        // Room is left for the chunk framing, should the piece be sent on chunked.
        const piece = await readPiece(link, BODY_BUFFER - FRAME_ROOM, request, controller);
        if (piece === undefined) return;
        if (piece === null) {
          controller.error(
            bodyFailed(link, request, "closed the connection before the last chunk"),
          );
          return;
        }
        let decoded: { payload: number; consumed: number };
        try {
          decoded = decodeChunkedInPlace(state, piece);
        } catch (error) {
          giveBack(piece);
          controller.error(
            bodyFailed(link, request, `sent a bad chunk: ${(error as Error).message}`),
          );
          return;
        }
        if (decoded.payload > 0) controller.enqueue(piece.subarray(0, decoded.payload));
        else giveBack(piece);
        if (state.phase === "done") {
          if (decoded.consumed < piece.length) {
            closeLink(link); // bytes after the end of the body: the connection is not clean
          } else {
            finish();
          }
          controller.close();
          request.onBodyEnd?.();
          return;
        }
        if (decoded.payload > 0) return;
      }
    },
    cancel() {
      closeLink(link);
      request.onBodyEnd?.();
    },
  });
}

function closeStream(link: Link, request: OutgoingRequest): ReadableStream<Bytes> {
  return new ReadableStream<Bytes>({
    start(controller) {
      const first = takeLeftover(link);
      if (first) controller.enqueue(first);
    },
    async pull(controller) {
      // Room is left for the chunk framing: goround sends this body on chunked.
      const piece = await readPiece(link, BODY_BUFFER - FRAME_ROOM, request, controller);
      if (piece === undefined) return;
      if (piece === null) {
        closeLink(link);
        controller.close();
        request.onBodyEnd?.();
        return;
      }
      controller.enqueue(piece);
    },
    cancel() {
      closeLink(link);
      request.onBodyEnd?.();
    },
  });
}
