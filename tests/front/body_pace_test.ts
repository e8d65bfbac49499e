import { equal } from "node:assert/strict";
import { noteRead, type Pace, readAllowance, resetPace } from "../../lib/front/body_pace.ts";

const limits = { bodyTimeout: 1000, bodyMinRate: 500 };

Deno.test("`readAllowance()` gives a read what is left of the window until it has its bytes", () => {
  const pace: Pace = { paceBytes: 0, paceWait: 0 };
  equal(readAllowance(pace, limits), 1000);
  noteRead(pace, 10, 300, limits);
  equal(readAllowance(pace, limits), 700, "10 of 500 bytes: the window's end is the deadline");
  noteRead(pace, 490, 100, limits);
  equal(readAllowance(pace, limits), 1000, "the window has its bytes: a whole pause is allowed");
});

Deno.test("`noteRead()` refuses a window that brought too few bytes, however short each wait", () => {
  const pace: Pace = { paceBytes: 0, paceWait: 0 };
  // One byte every 300 ms: each wait is well within the 1 s timeout.
  equal(noteRead(pace, 1, 300, limits), true);
  equal(noteRead(pace, 1, 300, limits), true);
  equal(noteRead(pace, 1, 300, limits), true);
  equal(noteRead(pace, 1, 300, limits), false, "4 bytes in 1.2 s of waiting, 500 needed");
});

Deno.test("`noteRead()` starts a new window once one is waited out with its bytes", () => {
  const pace: Pace = { paceBytes: 0, paceWait: 0 };
  equal(noteRead(pace, 600, 900, limits), true);
  equal(noteRead(pace, 0, 200, limits), true, "the window ends with 600 bytes: enough");
  equal(pace.paceBytes, 0);
  equal(pace.paceWait, 0);
  equal(noteRead(pace, 10, 999, limits), true);
  equal(noteRead(pace, 0, 1, limits), false, "the next window brought 10 bytes");
});

Deno.test("with no minimum rate only the pause between reads counts", () => {
  const open = { bodyTimeout: 1000, bodyMinRate: 0 };
  const pace: Pace = { paceBytes: 0, paceWait: 0 };
  for (let i = 0; i < 100; i++) equal(noteRead(pace, 1, 900, open), true);
  equal(readAllowance(pace, open), 1000);
  resetPace(pace);
  equal(pace.paceWait, 0);
});
