/**
 * Bodies on the `Deno.serve` front (`--engine deno`, and TLS): a request body is read into
 * memory up to the request buffer before the request is forwarded (`request_buffer.ts`), at the
 * pace `body_pace.ts` demands (else 408), and a streamed response body whose client stops
 * reading it is cut off after the send timeout, letting the backend go. `Deno.serve` gives no
 * socket to time, so both watch the streams instead: the request body's reads, and the pulls of
 * the body handed to `Response` (which stop when the client stops reading).
 *
 * @module
 */

import { BODY_BUFFER, borrow, giveBack } from "../http/buffers.ts";
import { noteRead, type Pace, type PaceLimits, readAllowance } from "./body_pace.ts";
import { ClientStalled } from "../errors.ts";
import { type BufferBudget, UNBOUNDED } from "./request_buffer.ts";
import type { Bytes } from "../upstream/client.ts";
import { unwatch, watch, type Watched } from "./watchdog.ts";

/** The limits on the `Deno.serve` front's bodies. */
export interface BodyLimits extends PaceLimits {
  /** Request body bytes read before the request is forwarded (0: every body streams). */
  readonly requestBuffer: number;
  /** Longest a streamed response may wait for its client to take more, ms. */
  readonly sendTimeout: number;
  /** The budget buffered bodies take from. @default {UNBOUNDED} */
  readonly budget?: BufferBudget;
}

/** A request body as read ahead: whole (`parts`, given back with {@linkcode BufferedBody.done}),
 * or the parts read and a stream of the rest; or refused (400, 408). */
export type BufferedBody =
  | {
    readonly kind: "whole";
    readonly parts: readonly Bytes[];
    readonly length: number;
    /** Gives the parts and their budget back once the exchange is over. */
    readonly done: () => void;
  }
  | {
    readonly kind: "stream";
    readonly body: ReadableStream<Bytes>;
    /** Whether the rest fell below its pace (the answer is then 408). */
    readonly timedOut: () => boolean;
    readonly done: () => void;
  }
  | { readonly kind: "refused"; readonly status: 400 | 408; readonly text: string };

/** Reads a body's stream at the pace the limits demand. */
class PacedReader implements Pace, Watched {
  paceBytes = 0;
  paceWait = 0;
  deadline = 0;
  timedOut = false;
  readonly #reader: ReadableStreamDefaultReader<Uint8Array>;
  readonly #limits: PaceLimits;

  constructor(stream: ReadableStream<Uint8Array>, limits: PaceLimits) {
    this.#reader = stream.getReader();
    this.#limits = limits;
  }

  expire = (): void => {
    this.timedOut = true;
    this.#reader.cancel("request body too slow").catch(() => {});
  };

  /** The next piece, or `null` at the end. Throws what the stream threw; `timedOut` tells a
   * body cut for its pace (which then ends early). */
  async next(): Promise<Uint8Array | null> {
    const since = Date.now();
    this.deadline = since + readAllowance(this, this.#limits);
    watch(this);
    try {
      const { done, value } = await this.#reader.read();
      if (this.timedOut) return null;
      if (!noteRead(this, done ? 0 : value.length, Date.now() - since, this.#limits)) {
        this.expire();
        return null;
      }
      return done ? null : value;
    } finally {
      this.deadline = 0;
      unwatch(this);
    }
  }

  cancel(reason: unknown): void {
    this.#reader.cancel(reason).catch(() => {});
  }
}

/** Budget and parts of a body being buffered. */
class Parts {
  readonly list: Bytes[] = [];
  length = 0;
  reserved = 0;
  #out: Bytes | null = null;
  #used = 0;
  readonly #budget: BufferBudget;

  constructor(budget: BufferBudget) {
    this.#budget = budget;
  }

  /** Copies `piece` into recycled buffers, each taken from the budget first. Returns what the
   * spent budget left untaken of it, or `null` when all of it was. */
  add(piece: Uint8Array): Uint8Array | null {
    let at = 0;
    while (at < piece.length) {
      if (this.#out === null || this.#used === BODY_BUFFER) {
        this.#flush();
        if (!this.#budget.take(BODY_BUFFER)) return piece.subarray(at);
        this.reserved += BODY_BUFFER;
        this.#out = borrow();
        this.#used = 0;
      }
      const take = Math.min(piece.length - at, BODY_BUFFER - this.#used);
      this.#out.set(piece.subarray(at, at + take), this.#used);
      this.#used += take;
      this.length += take;
      at += take;
    }
    return null;
  }

  /** Ends the parts: the last one is cut to what it holds, and the budget to the length. */
  finish(): void {
    this.#flush();
    this.#budget.give(this.reserved - this.length);
    this.reserved = this.length;
  }

  #flush(): void {
    if (this.#out !== null && this.#used > 0) this.list.push(this.#out.subarray(0, this.#used));
    else if (this.#out !== null) giveBack(this.#out);
    this.#out = null;
  }

  /** Gives the budget back (once). */
  release(): void {
    this.#budget.give(this.reserved);
    this.reserved = 0;
  }

  /** Gives the parts and the budget back. */
  dispose(): void {
    this.release();
    for (const part of this.list) giveBack(part);
  }
}

/**
 * Reads a request body ahead of forwarding it: until it ends (whole) or more than
 * `limits.requestBuffer` has arrived, or the budget is spent (then the rest streams).
 *
 * @param stream The request's body.
 * @param limits Buffer size, pace and budget.
 * @returns The body as read, or why it is refused.
 */
export async function bufferRequestBody(
  stream: ReadableStream<Uint8Array>,
  limits: BodyLimits,
): Promise<BufferedBody> {
  const reader = new PacedReader(stream, limits);
  const parts = new Parts(limits.budget ?? UNBOUNDED);
  let rest: Uint8Array | null = null;
  try {
    while (limits.requestBuffer > 0 && parts.length <= limits.requestBuffer) {
      const piece = await reader.next();
      if (piece === null) {
        if (reader.timedOut) {
          parts.dispose();
          return { kind: "refused", status: 408, text: "request body too slow" };
        }
        parts.finish();
        return {
          kind: "whole",
          parts: parts.list,
          length: parts.length,
          done: () => parts.dispose(),
        };
      }
      rest = parts.add(piece);
      if (rest !== null) break;
    }
  } catch {
    // The client went away, or its chunked framing was malformed (hyper ends the stream so).
    parts.dispose();
    reader.cancel("bad body");
    return { kind: "refused", status: 400, text: "bad request body" };
  }
  parts.finish();
  return {
    kind: "stream",
    body: restOf(reader, parts, rest),
    timedOut: () => reader.timedOut,
    done: () => parts.release(),
  };
}

/** The parts read, any piece the budget did not take, then the rest of the body as it comes. */
function restOf(reader: PacedReader, parts: Parts, rest: Uint8Array | null): ReadableStream<Bytes> {
  return new ReadableStream<Bytes>({
    start(controller) {
      for (const part of parts.list) controller.enqueue(part);
      if (rest !== null) controller.enqueue(rest.slice());
    },
    async pull(controller) {
      // What was buffered has been taken by the writer: its budget is free again.
      parts.release();
      let piece: Uint8Array | null;
      try {
        piece = await reader.next();
      } catch (error) {
        controller.error(error);
        return;
      }
      if (piece !== null) controller.enqueue(piece as Bytes);
      else if (reader.timedOut) controller.error(new Error("request body too slow"));
      else controller.close();
    },
    cancel(reason) {
      reader.cancel(reason);
    },
  }, { highWaterMark: 0 });
}

/**
 * Hands a streamed response body to `Response` under a send timeout: once a piece has been
 * taken, the next pull must come within `sendTimeout` (it stops coming when the client stops
 * reading). Past it, the backend's body is cancelled (its connection closed, its in-flight count
 * ended), the stream errors with {@linkcode ClientStalled} (so `Deno.serve` closes the client's
 * connection), and `onStall` says so once.
 *
 * @param body The backend's response body.
 * @param options `sendTimeout` in ms (read at each piece); `onStall` gives the log line.
 * @returns The stream to respond with.
 */
export function sendWatched(
  body: ReadableStream<Bytes>,
  options: { readonly sendTimeout: () => number; readonly onStall: () => string },
): ReadableStream<Bytes> {
  const reader = body.getReader();
  let controller: ReadableStreamDefaultController<Bytes> | null = null;
  const entry: Watched = {
    deadline: 0,
    expire: () => {
      const line = options.onStall();
      reader.cancel(line).catch(() => {});
      controller?.error(new ClientStalled(line));
    },
  };
  return new ReadableStream<Bytes>({
    start(c) {
      controller = c;
    },
    async pull(c) {
      // Waiting on the backend now: not the client's time.
      entry.deadline = 0;
      unwatch(entry);
      let result: ReadableStreamReadResult<Bytes>;
      try {
        result = await reader.read();
      } catch (error) {
        c.error(error);
        return;
      }
      if (result.done) {
        c.close();
        return;
      }
      c.enqueue(result.value);
      entry.deadline = Date.now() + options.sendTimeout();
      watch(entry);
    },
    cancel(reason) {
      unwatch(entry);
      return reader.cancel(reason);
    },
  }, { highWaterMark: 0 });
}
