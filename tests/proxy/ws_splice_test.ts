import { deepEqual, equal, match, ok as assert } from "node:assert/strict";
import { GOING_AWAY_GRACE, maskedFrame } from "../../lib/proxy/ws_bridge.ts";
import { closeFrame, frameTracker, splice } from "../../lib/proxy/ws_splice.ts";

Deno.test("closeFrame() and frameTracker() follow RFC 6455 framing", () => {
  deepEqual([...closeFrame(1011, "x")], [0x88, 3, 0x03, 0xf3, 0x78]);
  const tracker = frameTracker();
  // A text frame "hi", then a 200-byte binary frame (16-bit length), split at odd places.
  const text = [0x81, 2, 104, 105];
  const binary = [0x82, 126, 0, 200, ...new Array(200).fill(7)];
  const all = new Uint8Array([...text, ...binary]);
  tracker.feed(all.subarray(0, 3));
  tracker.feed(all.subarray(3, 7));
  tracker.feed(all.subarray(7));
  equal(tracker.closed(), false);
  tracker.feed(closeFrame(1000, "").subarray(0, 1));
  equal(tracker.closed(), false);
  tracker.feed(closeFrame(1000, "").subarray(1));
  equal(tracker.closed(), true);
});

Deno.test("frameTracker(): feed(bytes, true) stops at the end of the frame under way", () => {
  const tracker = frameTracker();
  equal(tracker.atBoundary(), true);
  const binary = [0x82, 5, 1, 2, 3, 4, 5];
  const text = [0x81, 2, 104, 105];
  equal(tracker.feed(new Uint8Array(binary.slice(0, 3))), 3);
  equal(tracker.atBoundary(), false);
  equal(tracker.feed(new Uint8Array([...binary.slice(3), ...text]), true), 4);
  equal(tracker.atBoundary(), true);
  equal(tracker.feed(new Uint8Array(text), true), 0, "nothing is read past a boundary");
  equal(tracker.bytes(), 7);
});

/** A connected pair of loopback TCP connections. */
async function tcpPair(): Promise<[Deno.TcpConn, Deno.TcpConn]> {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const near = await Deno.connect({ hostname: "127.0.0.1", port: listener.addr.port });
  const far = await listener.accept();
  listener.close();
  return [near, far];
}

/** Reads exactly `n` bytes. */
async function readExactly(conn: Deno.Conn, n: number): Promise<Uint8Array> {
  const out = new Uint8Array(n);
  let at = 0;
  while (at < n) {
    const got = await conn.read(out.subarray(at));
    if (got === null) throw new Error(`ended after ${at} of ${n} bytes`);
    at += got;
  }
  return out;
}

/** A masked close frame's code and reason. */
function unmaskClose(frame: Uint8Array): { code: number; reason: string } {
  const key = frame.subarray(2, 6);
  const payload = frame.subarray(6).map((byte, i) => byte ^ key[i & 3]!);
  return {
    code: (payload[0]! << 8) | payload[1]!,
    reason: new TextDecoder().decode(payload.subarray(2)),
  };
}

Deno.test("splice(): going away finishes the frame under way, then sends 1001 both ways", async () => {
  const [client, clientSide] = await tcpPair(); // the test's client, and goround's end of it
  const [backendSide, backend] = await tcpPair(); // goround's end, and the test's backend
  const away = new AbortController();
  const lines: string[] = [];
  const write = console.error;
  console.error = (...args: unknown[]) => lines.push(args.join(" "));
  try {
    const session = splice(
      { conn: clientSide, leftover: new Uint8Array() },
      { conn: backendSide, leftover: new Uint8Array() },
      { client: "127.0.0.1", backend: "http://b", requestId: "r1", goAway: away.signal },
    );
    // A 100-byte binary frame from the backend, its first 10 bytes through, then the deadline.
    const frame = new Uint8Array([0x82, 100, ...new Array(100).fill(9)]);
    await backend.write(frame.subarray(0, 10));
    deepEqual(await readExactly(client, 10), frame.subarray(0, 10));
    away.abort();
    // The rest of the frame, and a message after it that must not reach the client.
    await backend.write(
      new Uint8Array([...frame.subarray(10), 0x81, 4, ...new TextEncoder().encode("late")]),
    );
    deepEqual(await readExactly(client, 92), frame.subarray(10));
    const farewell = closeFrame(1001, "going away");
    deepEqual(await readExactly(client, farewell.length), farewell);
    // The backend got a masked close 1001 (nothing of the client's came before it).
    const toBackend = await readExactly(backend, 6 + 12);
    deepEqual([toBackend[0], toBackend[1]], [0x88, 0x80 | 12]);
    deepEqual(unmaskClose(toBackend), { code: 1001, reason: "going away" });
    // Both answer with their close; the session ends without waiting for the grace.
    const started = Date.now();
    await backend.write(closeFrame(1001, ""));
    await client.write(maskedFrame(0x8, new Uint8Array([0x03, 0xe9])));
    const end = await session;
    assert(Date.now() - started < 500, "ended on the close frames, not at the grace");
    equal(end.closeCode, 1001);
    equal(await client.read(new Uint8Array(16)), null, "nothing after the close frame");
    equal(lines.length, 1);
    match(
      lines[0]!,
      /drain deadline: closing the session of client 127\.0\.0\.1 with backend http:\/\/b \(id r1\): 1001 going away to the client and the backend$/,
    );
  } finally {
    console.error = write;
    client.close();
    backend.close();
  }
});

Deno.test("splice(): sides that never answer the going-away close are cut at the grace", async () => {
  const [client, clientSide] = await tcpPair();
  const [backendSide, backend] = await tcpPair();
  const away = new AbortController();
  const write = console.error;
  console.error = () => {};
  try {
    const session = splice(
      { conn: clientSide, leftover: new Uint8Array() },
      { conn: backendSide, leftover: new Uint8Array() },
      { client: "127.0.0.1", backend: "http://b", requestId: "r2", goAway: away.signal },
    );
    const started = Date.now();
    away.abort();
    const farewell = closeFrame(1001, "going away");
    deepEqual(await readExactly(client, farewell.length), farewell);
    deepEqual(unmaskClose(await readExactly(backend, 6 + 12)), {
      code: 1001,
      reason: "going away",
    });
    equal((await session).closeCode, 1001);
    const took = Date.now() - started;
    assert(took >= GOING_AWAY_GRACE - 50 && took < GOING_AWAY_GRACE + 500, `${took} ms`);
    equal(await client.read(new Uint8Array(16)), null);
    equal(await backend.read(new Uint8Array(16)), null);
  } finally {
    console.error = write;
    client.close();
    backend.close();
  }
});
