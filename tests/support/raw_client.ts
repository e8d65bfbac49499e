/**
 * A raw HTTP/1.1 client for tests: writes exact bytes and reads responses off the wire, so tests
 * can send what no real client would (smuggling attempts, bare LFs, slow heads) and see exactly
 * what came back. {@linkcode rawRequest} sends once and reads until the server closes;
 * {@linkcode Wire} reads responses one at a time (pipelining works), with a deadline on every
 * read.
 *
 * @module
 */

import { equal, ok as assert } from "node:assert/strict";
import { joinParts } from "../../lib/http/streaming.ts";

const encoder = new TextEncoder();
const decoder = new TextDecoder();

function concat(...parts: Uint8Array[]): Uint8Array<ArrayBuffer> {
  return joinParts(parts, false);
}

/** Index of the first `seq` in `buf` at or after `from`, or -1. */
function indexOfSeq(buf: Uint8Array, seq: readonly number[], from = 0): number {
  outer: for (let i = from; i + seq.length <= buf.length; i++) {
    for (let j = 0; j < seq.length; j++) if (buf[i + j] !== seq[j]) continue outer;
    return i;
  }
  return -1;
}

const CRLF = [13, 10];
const CRLF_CRLF = [13, 10, 13, 10];

/** A response head's status line, status and fields, from its text (without the blank line). */
function parseHead(head: string): Pick<WireResponse, "statusLine" | "status" | "headers"> {
  const [statusLine = "", ...lines] = head.split("\r\n");
  const headers = lines.map((line): [string, string] => {
    const colon = line.indexOf(":");
    return [line.slice(0, colon).toLowerCase(), line.slice(colon + 1).trim()];
  });
  return { statusLine, status: Number(statusLine.split(" ")[1]), headers };
}

/** A response read off the wire. */
export interface WireResponse {
  /** The status line. */
  readonly statusLine: string;
  /** Status code. */
  readonly status: number;
  /** Fields in order, names lowercased. */
  readonly headers: [string, string][];
  /** The payload (chunk framing removed). */
  readonly body: string;
  /** The body bytes as received (chunk framing included). */
  readonly raw: string;
  /** Whether the body ended as its framing says (false: the connection ended first). */
  readonly complete: boolean;
}

/** The fields of a response, either kind. */
type WithFields = Pick<WireResponse, "headers">;

/** The first value of a field (`name` in lowercase), or `undefined`. */
export function field(response: WithFields, name: string): string | undefined {
  return response.headers.find(([n]) => n === name)?.[1];
}

/** Every value of a field. */
export function fields(response: WithFields, name: string): string[] {
  return response.headers.filter(([n]) => n === name).map(([, v]) => v);
}

/** A response read off the wire by {@linkcode rawRequest}. */
export interface RawResponse {
  /** The status line (all that came, when it was not HTTP). */
  readonly statusLine: string;
  /** Status code. */
  readonly status: number;
  /** Fields, names lowercased, in order. */
  readonly headers: [string, string][];
  /** The raw body bytes as received (still chunk-framed if chunked). */
  readonly body: Uint8Array;
}

/**
 * Sends raw bytes on a new connection and reads until the peer closes (send
 * `Connection: close`), or until `timeout` ms pass.
 *
 * @param port Loopback port.
 * @param request The exact bytes to send.
 * @param timeout Longest wait, ms.
 * @returns The parsed response (or the raw text in `statusLine` when it is not HTTP).
 */
export async function rawRequest(
  port: number,
  request: string | Uint8Array,
  timeout = 5000,
): Promise<RawResponse> {
  const conn = await Deno.connect({ hostname: "127.0.0.1", port });
  const timer = setTimeout(() => conn.close(), timeout);
  const chunks: Uint8Array[] = [];
  try {
    await conn.write(typeof request === "string" ? encoder.encode(request) : request);
    const buf = new Uint8Array(65536);
    while (true) {
      const n = await conn.read(buf).catch(() => null);
      if (n === null) break;
      chunks.push(buf.slice(0, n));
    }
  } finally {
    clearTimeout(timer);
    try {
      conn.close();
    } catch {
      // Closed by the timer.
    }
  }
  const all = concat(...chunks);
  const end = indexOfSeq(all, CRLF_CRLF);
  if (end < 0) return { ...parseHead(decoder.decode(all)), headers: [], body: new Uint8Array() };
  return { ...parseHead(decoder.decode(all.subarray(0, end))), body: all.slice(end + 4) };
}

/**
 * A raw HTTP/1.1 client connection: writes bytes, reads responses one at a time (pipelining
 * works: whatever arrives after one response stays buffered for the next), and notices when the
 * server closes. Every read has a deadline; on expiry the connection is closed and the read fails.
 */
export class Wire {
  readonly #conn: Deno.Conn;
  #buf: Uint8Array = new Uint8Array(0);
  #eof = false;
  #closed = false;

  constructor(conn: Deno.Conn) {
    this.#conn = conn;
  }

  /** Writes all of `data`. */
  async send(data: string | Uint8Array): Promise<void> {
    const bytes = typeof data === "string" ? encoder.encode(data) : data;
    let at = 0;
    while (at < bytes.length) at += await this.#conn.write(bytes.subarray(at));
  }

  /** Reads more bytes; false at end of stream (a reset counts as the end). */
  async #fill(deadline: number): Promise<boolean> {
    if (this.#eof || this.#closed) return false;
    const chunk = new Uint8Array(64 * 1024);
    let timedOut = false;
    const timer = setTimeout(() => {
      timedOut = true;
      this.close();
    }, Math.max(0, deadline - Date.now()));
    try {
      const n = await this.#conn.read(chunk);
      if (n === null) {
        this.#eof = true;
        return false;
      }
      this.#buf = concat(this.#buf, chunk.subarray(0, n));
      return true;
    } catch (error) {
      if (timedOut) {
        throw new Error(`timed out waiting for the server; buffered: ${JSON.stringify(this.text)}`);
      }
      if (error instanceof Deno.errors.ConnectionReset) {
        this.#eof = true;
        return false;
      }
      throw error;
    } finally {
      clearTimeout(timer);
    }
  }

  /** Reads until `text` has arrived, without consuming anything; returns what is buffered. */
  async peek(text: string, timeout = 2000): Promise<string> {
    const deadline = Date.now() + timeout;
    while (!this.text.includes(text)) {
      if (!(await this.#fill(deadline))) throw new Error(`connection ended before ${text}`);
    }
    return this.text;
  }

  /** What is buffered and not yet consumed. */
  get text(): string {
    return decoder.decode(this.#buf);
  }

  #take(n: number): Uint8Array {
    const out = this.#buf.slice(0, n);
    this.#buf = this.#buf.slice(n);
    return out;
  }

  /** Takes up to `n` bytes, fewer only if the connection ends first. */
  async #bytes(n: number, deadline: number): Promise<Uint8Array> {
    while (this.#buf.length < n && (await this.#fill(deadline)));
    return this.#take(Math.min(n, this.#buf.length));
  }

  /** Takes a CRLF-terminated line (with its CRLF), or `null` if the connection ends first. */
  async #line(deadline: number): Promise<Uint8Array | null> {
    let at: number;
    while ((at = indexOfSeq(this.#buf, CRLF)) < 0) {
      if (!(await this.#fill(deadline))) return null;
    }
    return this.#take(at + 2);
  }

  /**
   * Reads one response.
   *
   * @param method The request's method (a response to HEAD has no body).
   * @param timeout Longest wait, ms.
   */
  async response(method = "GET", timeout = 3000): Promise<WireResponse> {
    const deadline = Date.now() + timeout;
    let end: number;
    while ((end = indexOfSeq(this.#buf, CRLF_CRLF)) < 0) {
      if (!(await this.#fill(deadline))) {
        throw new Error(
          `connection ended before a response head; got ${JSON.stringify(this.text)}`,
        );
      }
    }
    const base = parseHead(decoder.decode(this.#take(end + 4).subarray(0, end)));
    const { status, headers } = base;
    if (method === "HEAD" || status < 200 || status === 204 || status === 304) {
      return { ...base, body: "", raw: "", complete: true };
    }
    const te = headers.find(([n]) => n === "transfer-encoding")?.[1];
    const length = headers.find(([n]) => n === "content-length")?.[1];
    if (te !== undefined) {
      assert(/chunked$/i.test(te), `unexpected transfer-encoding ${te}`);
      let raw = new Uint8Array(0);
      let body = new Uint8Array(0);
      const done = (complete: boolean): WireResponse => ({
        ...base,
        body: decoder.decode(body),
        raw: decoder.decode(raw),
        complete,
      });
      while (true) {
        const line = await this.#line(deadline);
        if (line === null) return done(false);
        raw = concat(raw, line);
        const size = parseInt(decoder.decode(line).split(";")[0]!, 16);
        assert(
          Number.isInteger(size),
          `bad chunk size line ${JSON.stringify(decoder.decode(line))}`,
        );
        if (size === 0) {
          while (true) {
            const trailer = await this.#line(deadline);
            if (trailer === null) return done(false);
            raw = concat(raw, trailer);
            if (trailer.length === 2) return done(true);
          }
        }
        const data = await this.#bytes(size + 2, deadline);
        raw = concat(raw, data);
        body = concat(body, data.subarray(0, size));
        if (data.length < size + 2) return done(false);
        equal(decoder.decode(data.subarray(size)), "\r\n", "chunk data ends with CRLF");
      }
    }
    if (length !== undefined) {
      const data = await this.#bytes(Number(length), deadline);
      const text = decoder.decode(data);
      return { ...base, body: text, raw: text, complete: data.length === Number(length) };
    }
    // Close-delimited.
    while (await this.#fill(deadline));
    const text = decoder.decode(this.#take(this.#buf.length));
    return { ...base, body: text, raw: text, complete: true };
  }

  /**
   * Waits until the server closes the connection and returns what arrived before; fails if it
   * stays open for `timeout` ms.
   */
  async closed(timeout = 1500): Promise<string> {
    const deadline = Date.now() + timeout;
    while (await this.#fill(deadline));
    return decoder.decode(this.#take(this.#buf.length));
  }

  /** Closes the client side. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    try {
      this.#conn.close();
    } catch {
      // Already closed.
    }
  }
}
