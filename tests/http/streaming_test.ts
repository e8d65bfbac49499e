import { deepEqual, equal, ok as assert, rejects } from "node:assert/strict";
import {
  batches,
  FRAME_ROOM,
  joinParts,
  READ_AHEAD_BYTES,
  readAhead,
  readAheadFor,
} from "../../lib/http/streaming.ts";
import { BODY_BUFFER, borrow, footprint, giveBack } from "../../lib/http/buffers.ts";

const text = (parts: Uint8Array[]) => parts.map((p) => new TextDecoder().decode(p)).join("");

Deno.test("readAhead() hands over everything queued, in order, then null", async () => {
  const body = new ReadableStream<Uint8Array>({
    start(c) {
      for (const word of ["a", "bc", "", "def"]) c.enqueue(new TextEncoder().encode(word));
      c.close();
    },
  });
  const ahead = readAhead(body, 1024);
  let all = "";
  for (let parts; (parts = await ahead.next()) !== null;) all += text(parts);
  equal(all, "abcdef");
  equal(await ahead.next(), null);
});

Deno.test("readAhead() pauses at the limit until the consumer takes the queue", async () => {
  let pulled = 0;
  const body = new ReadableStream<Uint8Array>({
    pull(c) {
      pulled++;
      if (pulled > 100) return c.close();
      c.enqueue(new Uint8Array(10));
    },
  }, { highWaterMark: 0 });
  const ahead = readAhead(body, 35);
  await new Promise((resolve) => setTimeout(resolve, 20));
  equal(pulled, 4, "stopped after 40 bytes (the limit is 35)");
  const parts = await ahead.next();
  equal(parts!.length, 4);
  let rest = 0;
  for (let p; (p = await ahead.next()) !== null;) rest += p.length;
  equal(rest, 96);
});

Deno.test("readAheadFor(): goround's front reads one whole buffer ahead, Deno's server a deep queue", async () => {
  // A body stream as each front makes it: goround's hands over whole recycled buffers, Deno's
  // HTTP server small pieces (16 KiB here).
  const reading = async (piece: () => Uint8Array, limit: number) => {
    let pulled = 0;
    const body = new ReadableStream<Uint8Array>({
      pull(c) {
        pulled++;
        c.enqueue(piece());
      },
    }, { highWaterMark: 0 });
    const ahead = readAhead(body, limit);
    await new Promise((resolve) => setTimeout(resolve, 20));
    ahead.cancel("done");
    return pulled;
  };
  equal(readAheadFor("goround"), BODY_BUFFER);
  equal(await reading(borrow, readAheadFor("goround")), 1, "one buffer queued, then a pause");
  equal(readAheadFor("deno"), READ_AHEAD_BYTES);
  equal(
    await reading(() => new Uint8Array(16 * 1024), readAheadFor("deno")),
    READ_AHEAD_BYTES / (16 * 1024),
    "a megabyte of small pieces queued",
  );
});

Deno.test("readAhead() passes on the body's error (the client went away)", async () => {
  const body = new ReadableStream<Uint8Array>({
    start(c) {
      c.enqueue(new Uint8Array(1));
      c.error(new Error("client aborted"));
    },
  });
  const ahead = readAhead(body, 1024);
  await rejects(async () => {
    while ((await ahead.next()) !== null);
  }, /client aborted/);
});

Deno.test("readAhead().cancel() cancels the body", async () => {
  let cancelled: unknown = null;
  const body = new ReadableStream<Uint8Array>({
    pull() {
      return new Promise(() => {}); // a client that never sends more
    },
    cancel(reason) {
      cancelled = reason;
    },
  });
  const ahead = readAhead(body, 1024);
  ahead.cancel("backend gone");
  await new Promise((resolve) => setTimeout(resolve, 10));
  equal(cancelled, "backend gone");
});

Deno.test("joinParts() joins, and frames one chunk when asked", () => {
  const parts = [new TextEncoder().encode("hello "), new TextEncoder().encode("world")];
  equal(new TextDecoder().decode(joinParts(parts, false)), "hello world");
  equal(new TextDecoder().decode(joinParts(parts, true)), "b\r\nhello world\r\n");
  deepEqual(joinParts([], false), new Uint8Array());
});

Deno.test("batches() joins parts into buffers, framing each as one chunk when asked", () => {
  const text = (bytes: Uint8Array) => new TextDecoder().decode(bytes);
  const parts = ["ab", "", "cde"].map((p) => new TextEncoder().encode(p));
  deepEqual(batches(parts, false).map(text), ["abcde"]);
  deepEqual(batches(parts, true).map(text), ["5\r\nabcde\r\n"]);
  deepEqual(batches([], true), []);
});

Deno.test("batches() sends a lone part without a copy, unless it needs framing", () => {
  const part = new Uint8Array(1000).fill(1);
  const [plain] = batches([part], false);
  equal(plain, part);
  const [framed] = batches([part], true);
  equal(framed!.length, 1000 + "3e8\r\n\r\n".length);
});

Deno.test("batches() starts a new buffer where the next part would overflow one", () => {
  const big = new Uint8Array(BODY_BUFFER - FRAME_ROOM - 10).fill(2);
  const small = new Uint8Array(100).fill(3);
  for (const chunked of [false, true]) {
    const out = batches([small, big, small, small], chunked);
    const payload = (bytes: Uint8Array) => {
      if (!chunked) return bytes;
      const lineEnd = bytes.indexOf(10);
      return bytes.subarray(lineEnd + 1, bytes.length - 2);
    };
    deepEqual(out.map((b) => payload(b).length), [100, big.length, 200]);
    for (const bytes of out) assert(bytes.length <= BODY_BUFFER, "each write fits a buffer");
    for (const bytes of out) giveBack(bytes);
  }
});

Deno.test("batches() frames a part larger than a buffer in a buffer of its own", () => {
  const huge = new Uint8Array(BODY_BUFFER + 5).fill(4);
  const [framed] = batches([huge], true);
  equal(framed!.length, huge.length + (BODY_BUFFER + 5).toString(16).length + 4);
  deepEqual(framed!.subarray(framed!.length - 2), new Uint8Array([13, 10]));
});

Deno.test("batches() joins into recycled buffers", () => {
  const [joined] = batches([new Uint8Array(3), new Uint8Array(4)], false);
  equal(footprint(joined!), BODY_BUFFER, "the join is a view of a buffer lent by the pool");
  giveBack(joined!);
  equal(footprint(joined!), 7);
});
