import { deepEqual, equal, ok as assert } from "node:assert/strict";
import { type Config, FLAGS } from "../../lib/config/config.ts";
import { parseCommandLine } from "../../lib/config/command_line.ts";
import {
  describeReload,
  needsNewFront,
  planReload,
  RELOAD_RULES,
} from "../../lib/config/reload_plan.ts";

const PEMS = { cert: "", key: "", ca: "" };

function configOf(args: string[], pems: Partial<typeof PEMS> = {}): Config {
  const given = args.some((arg) => /^--(backend|discover)$/.test(arg));
  const pool = given ? [] : ["--backend", "http://127.0.0.1:1"];
  const command = parseCommandLine([...pool, ...args], () => undefined, 2);
  if (command.kind !== "run") throw new Error("not a run");
  return { ...command.config, pems: { ...PEMS, ...pems } };
}

const TLS = ["--tls-cert", "c.pem", "--tls-key", "k.pem"];
const PAIR = { cert: "CERT 1", key: "KEY 1" };

Deno.test("RELOAD_RULES: every flag has a rule, and the rules cover every setting", () => {
  const missing = FLAGS.map((f) => f.name).filter((name) => !(name in RELOAD_RULES));
  deepEqual(missing, [], "flags without a reload rule");
  const covered = new Set(Object.values(RELOAD_RULES).flatMap((rule) => rule.fields));
  // Not settings: the PEM texts (read from files the rules name) and the process's Via id;
  // pools and routes (the config file's own keys) are compared by planReload itself.
  const own = ["pems", "instanceId", "pools", "routes"];
  const fields = Object.keys(configOf([])).filter((key) => !own.includes(key));
  deepEqual(fields.filter((field) => !covered.has(field as keyof Config)), []);
});

Deno.test("planReload()", async (t) => {
  await t.step("nothing changed: nothing applied, nothing waits, the same settings", () => {
    const running = configOf(["--health-path", "/healthz"], { ca: "CA 1" });
    const plan = planReload(running, configOf(["--health-path", "/healthz"], { ca: "CA 1" }));
    deepEqual([plan.applied, plan.onRestart, plan.rediscover], [[], [], false]);
    deepEqual(plan.config, running);
  });

  await t.step("a setting that reloads takes its new value now", () => {
    const plan = planReload(
      configOf([]),
      configOf(["--access-log", "json", "--health-interval", "1s", "--admin-token", "t"]),
    );
    deepEqual(plan.applied, ["health-interval", "admin-token", "access-log"]);
    deepEqual([plan.config.accessLog, plan.config.healthInterval], ["json", 1000]);
    equal(plan.config.adminToken, "t");
  });

  await t.step("listeners and the thread count keep their running values, named", () => {
    const running = configOf(["--workers", "2", "--listen", "127.0.0.1:8000", ...TLS], PAIR);
    const read = configOf([
      "--workers",
      "4",
      "--listen",
      "127.0.0.1:9999",
      "--admin",
      "127.0.0.1:9001",
      "--redirect-http",
      "127.0.0.1:8080",
      "--max-fails",
      "9",
      ...TLS,
    ], PAIR);
    const plan = planReload(running, read);
    deepEqual(plan.onRestart, ["listen", "workers", "redirect-http", "admin"]);
    deepEqual(plan.applied, ["max-fails"]);
    deepEqual(
      [plan.config.workers, plan.config.listen, plan.config.admin, plan.config.redirectHttp],
      [running.workers, running.listen, running.admin, null],
    );
    equal(plan.config.maxFails, 9);
  });

  await t.step("a file whose content changed counts as changed, with the same path", () => {
    const running = configOf([...TLS, "--backend-ca", "ca.pem"], { ...PAIR, ca: "CA 1" });
    const read = configOf([...TLS, "--backend-ca", "ca.pem"], {
      cert: "CERT 2",
      key: "KEY 2",
      ca: "CA 2",
    });
    const plan = planReload(running, read);
    deepEqual(plan.applied, ["tls-cert", "tls-key", "backend-ca"]);
    deepEqual(plan.config.pems, { cert: "CERT 2", key: "KEY 2", ca: "CA 2" });
  });

  await t.step("turning TLS on (or off) waits for a restart; the port keeps its scheme", () => {
    const plan = planReload(configOf([]), configOf(TLS, PAIR));
    deepEqual(plan.onRestart, ["tls-cert", "tls-key"]);
    deepEqual([plan.config.tlsCert, plan.config.tlsKey, plan.config.pems], ["", "", PEMS]);
    const off = planReload(configOf(TLS, PAIR), configOf([]));
    deepEqual(off.onRestart, ["tls-cert", "tls-key"]);
    deepEqual(off.config.pems, { ...PEMS, ...PAIR });
  });

  await t.step("an admin listener off loopback never loses its token to a reload", () => {
    const exposed = ["--admin", "10.0.0.1:9000", "--admin-token", "old"];
    const dropped = planReload(configOf(exposed), configOf(["--admin", "127.0.0.1:9000"]));
    deepEqual(dropped.onRestart, ["admin", "admin-token"]);
    equal(dropped.config.adminToken, "old");
    const rotated = planReload(
      configOf(exposed),
      configOf(["--admin", "10.0.0.1:9000", "--admin-token", "new"]),
    );
    deepEqual([rotated.applied, rotated.config.adminToken], [["admin-token"], "new"]);
  });

  await t.step(
    "while DNS discovery runs, the pool is its own; new discovery settings restart it",
    () => {
      const dns = ["--discover", "dns:app.test:80"];
      const running = { ...configOf([]), discover: configOf(dns).discover };
      const read = { ...configOf([]), discover: configOf(dns).discover, backends: [] };
      const same = planReload(running, read);
      deepEqual([same.applied, same.rediscover], [[], false]);
      deepEqual(same.config.backends, running.backends);
      const moved = planReload(running, {
        ...read,
        discover: configOf(["--discover", "dns:other.test:80"]).discover,
      });
      deepEqual([moved.applied, moved.rediscover], [["discover"], true]);
      const stopped = planReload(running, configOf(["--backend", "http://127.0.0.1:2"]));
      deepEqual([stopped.applied, stopped.rediscover], [["backends", "discover"], true]);
    },
  );

  await t.step("an empty sticky key keeps the running one, so cookies stay valid", () => {
    const running = { ...configOf(["--sticky", "cookie"]), stickyKey: "random-at-start" };
    const plan = planReload(running, configOf(["--sticky", "cookie"]));
    deepEqual([plan.applied, plan.config.stickyKey], [[], "random-at-start"]);
  });
});

Deno.test("needsNewFront(): only the engine and the certificate or key need a new listener", () => {
  const running = configOf(TLS, PAIR);
  assert(!needsNewFront(running, configOf([...TLS, "--access-log", "json"], PAIR)));
  assert(!needsNewFront(running, configOf([...TLS, "--header-timeout", "5s"], PAIR)));
  assert(needsNewFront(running, configOf(TLS, { ...PAIR, cert: "CERT 2" })));
  assert(needsNewFront(running, configOf(TLS, { ...PAIR, key: "KEY 2" })));
  assert(needsNewFront(configOf([]), configOf(["--engine", "deno"])));
});

Deno.test("describeReload(): one line, naming what changed and what waits for a restart", () => {
  const plan = planReload(
    configOf(["--workers", "2"]),
    configOf(["--workers", "3", "--access-log", "json"]),
  );
  equal(
    describeReload(plan, {
      file: "goround.json",
      backends: 3,
      added: ["http://c:1"],
      removed: [],
      problems: ["worker 1: kept the old front end: address in use"],
    }),
    "reloaded goround.json: 3 backends, added http://c:1; changed: access-log; " +
      "changed, takes effect on restart: workers; worker 1: kept the old front end: address in use",
  );
  equal(
    describeReload(planReload(configOf([]), configOf([])), {
      file: "",
      backends: 1,
      added: [],
      removed: [],
    }),
    "reloaded: 1 backend; no change",
  );
});
