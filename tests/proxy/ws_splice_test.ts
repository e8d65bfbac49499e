import { deepEqual, equal } from "node:assert/strict";
import { closeFrame, frameTracker } from "../../lib/proxy/ws_splice.ts";

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
