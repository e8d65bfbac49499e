import { deepEqual, equal } from "node:assert/strict";
import { maskedFrame, MAX_MESSAGE, sendable, takeFrames } from "../../lib/proxy/ws_bridge.ts";

Deno.test("maskedFrame() frames are read back by takeFrames(), at each length form", () => {
  for (const size of [0, 5, 125, 126, 65535, 65536, 200_000]) {
    const payload = crypto.getRandomValues(new Uint8Array(Math.min(size, 65536)));
    const whole = size > 65536 ? new Uint8Array(size) : payload;
    const frame = maskedFrame(0x2, whole);
    const taken = takeFrames(frame)!;
    equal(taken.used, frame.length);
    equal(taken.frames.length, 1);
    equal(taken.frames[0]!.opcode, 0x2);
    deepEqual(taken.frames[0]!.payload, whole, `${size} bytes`);
  }
});

Deno.test("takeFrames() takes whole frames only, and leaves a partial one", () => {
  // "hel" + "lo" as a fragmented text message from a server (unmasked), then half a frame.
  const bytes = new Uint8Array([0x01, 3, 104, 101, 108, 0x80, 2, 108, 111, 0x81, 5, 104]);
  const taken = takeFrames(bytes)!;
  equal(taken.used, 9);
  deepEqual(taken.frames.map((f) => [f.fin, f.opcode]), [[false, 1], [true, 0]]);
});

Deno.test("takeFrames() refuses a frame longer than the largest message", () => {
  const head = new Uint8Array(10);
  head[0] = 0x82;
  head[1] = 127;
  new DataView(head.buffer).setBigUint64(2, BigInt(MAX_MESSAGE + 1));
  equal(takeFrames(head), null);
});

Deno.test("sendable(): codes that must not be sent become 1000", () => {
  deepEqual([1000, 1001, 1005, 1006, 1011, 1015, 4001, 2999].map(sendable), [
    1000,
    1001,
    1000,
    1000,
    1011,
    1000,
    4001,
    1000,
  ]);
});
