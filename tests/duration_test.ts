import { equal, throws } from "node:assert/strict";
import { formatDuration, parseDuration } from "../lib/duration.ts";

Deno.test("parseDuration() reads ms, s, m and h", () => {
  equal(parseDuration("500ms"), 500);
  equal(parseDuration("10s"), 10_000);
  equal(parseDuration("1.5m"), 90_000);
  equal(parseDuration("1h"), 3_600_000);
  equal(parseDuration("0s"), 0);
});

Deno.test("parseDuration() rejects negatives, missing units and junk", () => {
  for (const bad of ["-1s", "10", "s", "1d", "ten seconds", ""]) {
    throws(() => parseDuration(bad), /is not a duration/, bad);
  }
});

Deno.test("formatDuration() picks the largest exact unit", () => {
  equal(formatDuration(10_000), "10s");
  equal(formatDuration(250), "250ms");
  equal(formatDuration(90_000), "90s");
  equal(formatDuration(120_000), "2m");
});
