import { deepEqual, equal, rejects } from "node:assert/strict";
import { joinParts, readAhead } from "../lib/streaming.ts";

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
