import { equal, throws } from "node:assert/strict";
import { formatDuration, MAX_DURATION_MS, parseDuration } from "../../lib/config/duration.ts";

import { ValidationError } from "../../lib/errors.ts";
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

Deno.test("parseDuration() refuses what a timer cannot wait (above 2^31-1 ms)", () => {
  equal(parseDuration(`${MAX_DURATION_MS}ms`), 2_147_483_647);
  equal(parseDuration("596h"), 2_145_600_000);
  for (const long of ["999999h", "597h", "2147483648ms", `${"9".repeat(400)}s`]) {
    throws(
      () => parseDuration(long),
      (e) =>
        e instanceof ValidationError &&
        e.message ===
          `"${long}" is longer than a timer can wait: expected at most 2147483647ms (about 24.8 days)`,
      long,
    );
  }
});
