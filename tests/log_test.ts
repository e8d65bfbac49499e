import { deepEqual, equal, match } from "node:assert/strict";
import { fieldsOf, flushRepeats, levelOf, logLine, REPEAT_WINDOW_MS } from "../lib/log.ts";

/** Runs `body` with stderr lines captured (timestamps and levels cut off). */
function captured(body: () => void): string[] {
  const lines: string[] = [];
  const original = console.error;
  console.error = (line: string) => lines.push(line);
  try {
    body();
  } finally {
    console.error = original;
  }
  return lines.map((line) => {
    match(line, /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z (info|warn|error) /);
    return line.slice(25).replace(/^(info|warn|error) /, "");
  });
}

Deno.test("logLine() writes a repeated line once, then how often it came", async (t) => {
  await t.step("3,000 identical lines within a second are one line, then one count", () => {
    const lines = captured(() => {
      for (let i = 0; i < 3000; i++) logLine("test: a flood");
      logLine("test: something else");
      flushRepeats(Infinity);
    });
    deepEqual(lines, [
      "test: a flood",
      "test: something else",
      "test: a flood (repeated 2999 times)",
    ]);
  });

  await t.step("a line that is not repeated has no count", () => {
    const lines = captured(() => {
      logLine("test: once");
      flushRepeats(Infinity);
    });
    deepEqual(lines, ["test: once"]);
  });

  await t.step("the count comes when the window is over, not before", () => {
    const lines = captured(() => {
      logLine("test: twice");
      logLine("test: twice");
      flushRepeats(Date.now() + REPEAT_WINDOW_MS / 2);
    });
    deepEqual(lines, ["test: twice"]);
    const later = captured(() => flushRepeats(Date.now() + REPEAT_WINDOW_MS));
    deepEqual(later, ["test: twice (repeated 1 times)"]);
    // The count re-armed the window: a steady flood is one line per window.
    const quiet = captured(() => {
      logLine("test: twice");
      flushRepeats(Infinity);
    });
    deepEqual(quiet, ["test: twice (repeated 1 times)"]);
  });

  await t.step("different lines are all written", () => {
    const lines = captured(() => {
      for (let i = 0; i < 5; i++) logLine(`test: line ${i}`);
      flushRepeats(Infinity);
    });
    equal(lines.length, 5);
  });
});

Deno.test("levelOf(): errors, warnings and the rest", () => {
  equal(levelOf("internal error: TypeError: x"), "error");
  equal(levelOf("reload failed, keeping the running config: bad"), "error");
  equal(levelOf("backend http://a:1 DOWN: connection refused"), "warn");
  equal(levelOf("self-connect: a connect to 127.0.0.1:41000 came back to itself"), "warn");
  equal(levelOf("websocket: drain deadline: closing the session of client 127.0.0.1"), "warn");
  equal(levelOf("backend http://a:1 EJECTED for 30s: 3 failures in 10s"), "warn");
  equal(levelOf("backend http://a:1 UP"), "info");
  equal(levelOf("reloaded goround.json: 3 backends"), "info");
});

Deno.test("fieldsOf(): the backend, the client and the reason a line names", () => {
  deepEqual(fieldsOf("backend http://a:1 DOWN: connection refused"), {
    backend: "http://a:1",
    reason: "connection refused",
  });
  deepEqual(fieldsOf("client 10.0.0.9 sent its request body too slowly: 408"), {
    client: "10.0.0.9",
    reason: "408",
  });
  deepEqual(fieldsOf("panic over"), {});
});
