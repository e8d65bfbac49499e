import { deepEqual, equal } from "node:assert/strict";
import { envName, FLAGS } from "../../lib/config/config.ts";
import {
  closestVariable,
  editDistance,
  type EnvAccess,
  forEachTypo,
  unknownVariables,
  unknownVariableWarning,
} from "../../lib/config/env_check.ts";

const SETTINGS = FLAGS.map((flag) => envName(flag.name));

/** An environment of `vars`, listable or not. */
function envOf(vars: Record<string, string>, listable: boolean): EnvAccess & { lookups: number } {
  const access = {
    lookups: 0,
    names: () => (listable ? Object.keys(vars) : null),
    has: (name: string) => {
      access.lookups++;
      return name in vars;
    },
  };
  return access;
}

Deno.test("editDistance() counts insertions, deletions, changes and swaps", () => {
  equal(editDistance("INTERVALL", "INTERVAL"), 1);
  equal(editDistance("WROKERS", "WORKERS"), 1);
  equal(editDistance("WORKERS", "WORKERS"), 0);
  equal(editDistance("", "ABC"), 3);
  equal(editDistance("KITTEN", "SITTING"), 3);
});

Deno.test("forEachTypo() visits every name one edit away, and only those", () => {
  const seen = new Set<string>();
  forEachTypo("GOROUND_AB", (variant) => seen.add(variant));
  for (const typo of ["GOROUND_ABB", "GOROUND_A", "GOROUND_BA", "GOROUND_XB", "GOROUND__AB"]) {
    equal(seen.has(typo), true, typo);
  }
  equal(seen.has("GOROUND_AB"), false);
  for (const variant of seen) equal(editDistance(variant, "GOROUND_AB"), 1, variant);
});

Deno.test("unknownVariables() finds typos of the settings, naming the closest", async (t) => {
  const vars = {
    GOROUND_HEALTH_INTERVALL: "5s",
    GOROUND_WROKERS: "2",
    GOROUND_BACKEND: "http://a:1", // a setting (and one edit from GOROUND_BACKENDS)
    GOROUND_TEST_CRASH_PATH: "/x", // a test hook, known
    GOROUND_XYZZY: "1",
    HOME: "/root",
  };
  await t.step("with only GOROUND_* readable: the names one edit from a setting", () => {
    const env = envOf(vars, false);
    deepEqual(unknownVariables(SETTINGS, env), [
      { name: "GOROUND_HEALTH_INTERVALL", closest: "GOROUND_HEALTH_INTERVAL" },
      { name: "GOROUND_WROKERS", closest: "GOROUND_WORKERS" },
    ]);
    equal(env.lookups > 10_000, true, "it asks for each candidate");
  });
  await t.step("with the whole environment: every unknown GOROUND_* name", () => {
    deepEqual(unknownVariables(SETTINGS, envOf(vars, true)), [
      { name: "GOROUND_HEALTH_INTERVALL", closest: "GOROUND_HEALTH_INTERVAL" },
      { name: "GOROUND_WROKERS", closest: "GOROUND_WORKERS" },
      { name: "GOROUND_XYZZY", closest: null },
    ]);
  });
  await t.step("nothing to say about a clean environment", () => {
    deepEqual(unknownVariables(SETTINGS, envOf({ GOROUND_WORKERS: "2" }, false)), []);
  });
});

Deno.test("closestVariable() suggests only a close setting", () => {
  equal(closestVariable("GOROUND_HEALTHINTERVAL", SETTINGS), "GOROUND_HEALTH_INTERVAL");
  equal(closestVariable("GOROUND_ACCESSLOG", SETTINGS), "GOROUND_ACCESS_LOG");
  equal(closestVariable("GOROUND_XYZZY", SETTINGS), null);
  equal(
    unknownVariableWarning({ name: "GOROUND_WROKERS", closest: "GOROUND_WORKERS" }),
    "warning: GOROUND_WROKERS is not a goround setting and is ignored: did you mean GOROUND_WORKERS?",
  );
});
