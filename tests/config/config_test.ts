import { deepEqual, equal, ok as assert, throws } from "node:assert/strict";
import { type Config, envName, FLAGS } from "../../lib/config/config.ts";
import { parseBackend, parseListen } from "../../lib/config/values.ts";
import { parseCommandLine } from "../../lib/config/command_line.ts";
import { helpText } from "../../lib/config/help.ts";
import { ConfigError } from "../../lib/errors.ts";

const noEnv = () => undefined;

function configOf(args: string[], env: Record<string, string> = {}): Config {
  const command = parseCommandLine(args, (name) => env[name], 4);
  if (command.kind !== "run") throw new Error(`expected run, got ${command.kind}`);
  return command.config;
}

Deno.test("defaults match the brief", () => {
  const config = configOf([]);
  deepEqual(config.listen, { hostname: "0.0.0.0", port: 8000 });
  deepEqual(config.backends.map((b) => b.url), [
    "http://localhost:8081",
    "http://localhost:8082",
    "http://localhost:8083",
  ]);
  equal(config.healthInterval, 10_000);
  equal(config.healthTimeout, 2_000);
  equal(config.workers, 4, "one per core");
  equal(config.retries, -1, "pool size - 1");
  equal(config.algorithm, "round-robin");
  deepEqual(config.trustedProxies, []);
  equal(config.underscoreHeaders, "drop");
  equal(configOf([], { GOROUND_UNDERSCORE_HEADERS: "keep" }).underscoreHeaders, "keep");
});

Deno.test("passive health defaults: statuses do not count, half the pool at most, 30s out", () => {
  const config = configOf([]);
  deepEqual(config.failStatuses, []);
  deepEqual(config.retryStatuses, [500, 502, 503, 504]);
  equal(config.maxFails, 3);
  equal(config.maxEjectionPercent, 50);
  equal(config.ejectionTime, 30_000);
  equal(config.healthFastInterval, 500, "a down backend is rechecked twice a second");
  equal(config.panic, true);
  const set = configOf([
    "--fail-statuses",
    "500,503",
    "--max-ejection-percent",
    "100",
    "--ejection-time",
    "1m",
    "--no-panic",
  ]);
  deepEqual(set.failStatuses, [500, 503]);
  equal(set.maxEjectionPercent, 100);
  equal(set.ejectionTime, 60_000);
  equal(set.panic, false);
  equal(configOf(["--panic", "false"]).panic, false);
  equal(configOf([], { GOROUND_MAX_EJECTION_PERCENT: "0" }).maxEjectionPercent, 0);
});

Deno.test("--backend repeats and combines with --backends", () => {
  const config = configOf([
    "--backend",
    "http://127.0.0.1:9001",
    "--backends",
    "http://a:1, http://[::1]:2",
    "--backend=http://b",
  ]);
  deepEqual(config.backends.map((b) => b.url), [
    "http://127.0.0.1:9001",
    "http://b",
    "http://a:1",
    "http://[::1]:2",
  ]);
  deepEqual(config.backends.map((b) => [b.hostname, b.port]), [["127.0.0.1", 9001], ["b", 80], [
    "a",
    1,
  ], ["::1", 2]]);
});

Deno.test("every flag has a GOROUND_* variable; flags win over it", () => {
  const env = {
    GOROUND_LISTEN: "127.0.0.1:9000",
    GOROUND_BACKENDS: "http://127.0.0.1:1,http://127.0.0.1:2",
    GOROUND_HEALTH_INTERVAL: "1s",
    GOROUND_HEALTH_TIMEOUT: "300ms",
    GOROUND_WORKERS: "3",
    GOROUND_TRUSTED_PROXIES: "10.0.0.0/8",
  };
  const fromEnv = configOf([], env);
  deepEqual(fromEnv.listen, { hostname: "127.0.0.1", port: 9000 });
  equal(fromEnv.backends.length, 2);
  equal(fromEnv.healthInterval, 1000);
  equal(fromEnv.healthTimeout, 300);
  equal(fromEnv.workers, 3);
  equal(fromEnv.trustedProxies[0]!.text, "10.0.0.0/8");
  equal(configOf(["--health-interval", "2s"], env).healthInterval, 2000);
  for (const flag of FLAGS) assert(helpText().includes(envName(flag.name)), flag.name);
});

Deno.test("parseListen() takes :port, port, host:port and [v6]:port", () => {
  deepEqual(parseListen(":8000"), { hostname: "0.0.0.0", port: 8000 });
  deepEqual(parseListen("8000"), { hostname: "0.0.0.0", port: 8000 });
  deepEqual(parseListen("localhost:1"), { hostname: "localhost", port: 1 });
  deepEqual(parseListen("[::1]:0"), { hostname: "::1", port: 0 });
});

Deno.test("parseBackend() accepts only plain http origins", () => {
  equal(parseBackend("http://LocalHost:8081/").url, "http://localhost:8081");
  throws(() => parseBackend("localhost:8081"), /has scheme localhost/);
  throws(() => parseBackend("ftp://a"), /has scheme ftp/);
  throws(() => parseBackend("http://a/path"), /has a path/);
  throws(() => parseBackend("http://u:p@a"), /credentials/);
  throws(() => parseBackend("not a url"), /is not a URL/);
});

Deno.test("bad values name the flag, the value and what is expected", async (t) => {
  const cases: [string[], RegExp][] = [
    [
      ["--listen", "abc"],
      /^--listen: "abc" is not a listen address: expected :8000, 8000 or host:port$/,
    ],
    [["--listen", ":70000"], /^--listen: ":70000" is not a listen address/],
    [["--backend", "nope"], /^--backend: "nope" is not a URL: expected http:\/\/host:port$/],
    [["--backends", "http://a:1,ws://b"], /^--backends: "ws:\/\/b" has scheme ws/],
    [
      ["--backend", "http://a:1,weight=0"],
      /^--backend: "weight=0" is not a backend option: expected weight=N \(1 to 1000\)$/,
    ],
    [["--backend", "http://a:1,colour=red"], /^--backend: "colour=red" is not a backend option/],
    [
      ["--hash-key", "header:"],
      /^--hash-key: "header:" is not a hash key: expected ip, header:NAME or cookie:NAME$/,
    ],
    [["--sticky", "ip"], /^--sticky: "ip" is not a sticky mode: expected one of cookie, off$/],
    [
      ["--underscore-headers", "yes"],
      /^--underscore-headers: "yes" is not an underscore-headers mode: expected one of drop, keep$/,
    ],
    [["--backends", " , "], /^--backends: the list is empty/],
    [
      ["--backend", "http://a:1", "--backend", "http://a:1/"],
      /^--backend: "http:\/\/a:1" is listed twice/,
    ],
    [
      ["--health-interval", "-1s"],
      /^--health-interval: "-1s" is not a duration: expected a non-negative number and a unit, like 500ms, 10s or 1m$/,
    ],
    [["--health-interval", "0s"], /^--health-interval: "0s" must be longer than 0ms$/],
    [["--health-timeout", "10"], /^--health-timeout: "10" is not a duration/],
    [
      ["--workers", "two"],
      /^--workers: "two" is not a count: expected a whole number from 1 to 1024$/,
    ],
    [["--workers", "0"], /^--workers: "0" is not a count: expected a whole number from 1 to 1024$/],
    [
      ["--retries", "-1"],
      /^--retries: "-1" is not a count: expected a whole number from 0 to 1024$/,
    ],
    [["--health-rise", "0"], /^--health-rise: "0" is not a count/],
    [
      ["--health-path", "healthz"],
      /^--health-path: "healthz" is not a path: expected one starting with \//,
    ],
    [
      ["--retry-statuses", "500,5xx"],
      /^--retry-statuses: "5xx" is not a status: expected codes like 502,503 or none$/,
    ],
    [["--engine", "nginx"], /^--engine: "nginx" is not an engine: expected one of goround, deno$/],
    [["--fail-window", "0ms"], /^--fail-window: "0ms" must be longer than 0ms$/],
    [
      ["--fail-statuses", "5xx"],
      /^--fail-statuses: "5xx" is not a status: expected codes like 502,503 or none$/,
    ],
    [
      ["--max-ejection-percent", "101"],
      /^--max-ejection-percent: "101" is not a percentage: expected a whole number from 0 to 100$/,
    ],
    [["--max-ejection-percent", "half"], /^--max-ejection-percent: "half" is not a percentage/],
    [["--ejection-time", "0s"], /^--ejection-time: "0s" must be longer than 0ms$/],
    [
      ["--trusted-proxies", "10.0.0.0/99"],
      /^--trusted-proxies: "10.0.0.0\/99" is not a CIDR range/,
    ],
    [
      ["--algorithm", "random"],
      /^--algorithm: "random" is not an algorithm: expected one of round-robin, weighted, least-conn, p2c, hash$/,
    ],
    [
      ["--admin-hosts", "admin.example,a b"],
      /^--admin-hosts: "a b" is not a host: expected host or host:port, comma-separated, like admin\.example\.com,10\.0\.0\.5:9000$/,
    ],
    [["--admin-hosts", "[::1]:0"], /^--admin-hosts: "\[::1\]:0" is not a host/],
    [["--bogus"], /^--bogus: unknown flag: see goround --help for the flags$/],
    [["--listen"], /^--listen: needs a value$/],
    [["stray"], /^"stray": unexpected argument: flags start with --$/],
  ];
  for (const [args, message] of cases) {
    await t.step(args.join(" "), () => {
      throws(
        () => parseCommandLine(args, noEnv, 2),
        (e) => e instanceof ConfigError && message.test(e.message),
      );
    });
  }
  await t.step("a bad variable is named as the variable", () => {
    throws(
      () =>
        parseCommandLine(
          [],
          (name) => (name === "GOROUND_HEALTH_INTERVAL" ? "soon" : undefined),
          2,
        ),
      (e) =>
        e instanceof ConfigError &&
        /^GOROUND_HEALTH_INTERVAL: "soon" is not a duration/.test(e.message),
    );
  });
});

Deno.test("--admin-hosts: names with or without a port, lowercased; none by default", () => {
  deepEqual(configOf([]).adminHosts, []);
  deepEqual(configOf(["--admin-hosts", "Admin.Example, 10.0.0.5:9000,[fd00::1]:9443"]).adminHosts, [
    "admin.example",
    "10.0.0.5:9000",
    "[fd00::1]:9443",
  ]);
  deepEqual(configOf([], { GOROUND_ADMIN_HOSTS: "ops.example" }).adminHosts, ["ops.example"]);
});

Deno.test("--help and --version are commands", () => {
  equal(parseCommandLine(["--help"], noEnv, 1).kind, "help");
  equal(parseCommandLine(["-h"], noEnv, 1).kind, "help");
  equal(parseCommandLine(["--version"], noEnv, 1).kind, "version");
});

Deno.test("--config reads a JSON file; flags and variables win over it", () => {
  const files: Record<string, string> = {
    "goround.json": JSON.stringify({
      backends: ["http://127.0.0.1:1", { url: "http://127.0.0.1:2", weight: 4 }],
      "health-interval": "3s",
      "health-path": "/healthz",
      "max-fails": 5,
      "retry-statuses": [502, 503],
    }),
  };
  const readFile = (path: string) => {
    if (!(path in files)) {
      throw new Error(`No such file or directory (os error 2): readfile '${path}'`);
    }
    return files[path]!;
  };
  const command = parseCommandLine(
    ["--config", "goround.json", "--max-fails", "7"],
    noEnv,
    2,
    readFile,
  );
  if (command.kind !== "run") throw new Error("expected run");
  const { config } = command;
  deepEqual(config.backends.map((b) => [b.port, b.weight]), [[1, 1], [2, 4]]);
  equal(config.healthInterval, 3000);
  equal(config.healthPath, "/healthz");
  equal(config.maxFails, 7, "the flag wins");
  deepEqual(config.retryStatuses, [502, 503]);
  equal(config.configFile, "goround.json");
  const viaEnv = parseCommandLine(
    [],
    (name) => (name === "GOROUND_CONFIG" ? "goround.json" : undefined),
    2,
    readFile,
  );
  equal(viaEnv.kind === "run" && viaEnv.config.healthInterval, 3000);
});

Deno.test("a bad config file is one line naming the file, the key and the problem", async (t) => {
  const cases: [string, RegExp][] = [
    ["{", /^bad\.json: not valid JSON \(/],
    ["[]", /^bad\.json: expected a JSON object of settings/],
    [
      '{"health-intervall": "1s"}',
      /^bad\.json: "health-intervall" is not a setting: see goround --help for the names$/,
    ],
    ['{"health-interval": "soon"}', /^bad\.json: health-interval: "soon" is not a duration/],
    ['{"health-interval": 5}', /^bad\.json: health-interval: "5" is not a duration/],
    [
      '{"backends": [{"url": 1}]}',
      /^bad\.json: backends: expected a string, a number or a list of them$/,
    ],
    ['{"backends": ["ftp://x"]}', /^bad\.json: backends: "ftp:\/\/x" has scheme ftp/],
    ['{"workers": 0}', /^bad\.json: workers: "0" is not a count/],
  ];
  for (const [text, message] of cases) {
    await t.step(text, () => {
      throws(
        () => parseCommandLine(["--config", "bad.json"], noEnv, 2, () => text),
        (e) => e instanceof ConfigError && message.test(e.message) && !e.message.includes("\n"),
      );
    });
  }
  await t.step("a missing file", () => {
    throws(
      () =>
        parseCommandLine(["--config", "nope.json"], noEnv, 2, () => {
          throw new Deno.errors.NotFound(
            "No such file or directory (os error 2): readfile 'nope.json'",
          );
        }),
      (e) =>
        e instanceof ConfigError &&
        /^--config: "nope\.json" cannot be read \(no such file or directory \(os error 2\)\)/.test(
          e.message,
        ),
    );
  });
});

Deno.test("goround's own listen address is refused as a backend, naming its source", async (t) => {
  const refused = (
    args: string[],
    message: string,
    env: Record<string, string> = {},
    file = "",
  ) =>
    throws(
      () => parseCommandLine(args, (name) => env[name], 2, () => file),
      (e) => e instanceof ConfigError && e.message === message,
    );
  await t.step("a flag", () =>
    refused(
      [
        "--listen",
        "127.0.0.1:8000",
        "--backend",
        "http://127.0.0.1:8001",
        "--backend",
        "http://localhost:8000",
      ],
      `--backend: "http://localhost:8000" is goround's own address (it listens on 127.0.0.1:8000): expected another server`,
    ));
  await t.step("the default listener (:8000) and a loopback backend on its port", () =>
    refused(
      ["--backends", "http://127.0.0.1:8000"],
      `--backends: "http://127.0.0.1:8000" is goround's own address (it listens on :8000): expected another server`,
    ));
  await t.step("a variable", () =>
    refused(
      [],
      `GOROUND_BACKENDS: "http://0.0.0.0:9999" is goround's own address (it listens on :9999): expected another server`,
      { GOROUND_LISTEN: ":9999", GOROUND_BACKENDS: "http://0.0.0.0:9999" },
    ));
  await t.step("a config file's key", () =>
    refused(
      ["--config", "g.json", "--listen", "[::1]:7000"],
      `g.json: backends: "http://localhost:7000" is goround's own address (it listens on [::1]:7000): expected another server`,
      {},
      JSON.stringify({ backends: ["http://localhost:7000"] }),
    ));
  await t.step("another loopback address on the same port is another server", () => {
    const config = configOf(["--listen", "127.0.0.1:8000", "--backend", "http://127.0.0.2:8000"]);
    equal(config.backends[0]!.url, "http://127.0.0.2:8000");
  });
  await t.step("with --listen :0 the port is not known yet: main checks once it is", () => {
    equal(configOf(["--listen", ":0", "--backend", "http://localhost:0"]).backends.length, 1);
  });
});

Deno.test("--takeover is a switch that needs both ports of the running goround", async (t) => {
  await t.step("off by default; bare, by value, or from GOROUND_TAKEOVER", () => {
    equal(configOf([]).takeover, false);
    equal(configOf(["--takeover"]).takeover, true);
    equal(configOf(["--takeover=false"]).takeover, false);
    equal(configOf([], { GOROUND_TAKEOVER: "yes" }).takeover, true);
  });
  const cases: [string[], string][] = [
    [
      ["--takeover", "--admin", "off"],
      "--takeover: --admin is off: expected the admin address of the goround to take over from",
    ],
    [
      ["--takeover", "--listen", "127.0.0.1:0"],
      "--takeover: --listen port is 0: expected the port the running goround uses",
    ],
    [
      ["--takeover", "--admin", "127.0.0.1:0"],
      "--takeover: --admin port is 0: expected the port the running goround uses",
    ],
    [["--takeover=maybe"], '--takeover: "maybe" is not a switch: expected true or false'],
  ];
  for (const [args, message] of cases) {
    await t.step(args.join(" "), () => {
      throws(
        () => configOf(args),
        (error) => error instanceof ConfigError && error.message === message,
      );
    });
  }
});

Deno.test("every setting but --backend sets one Config field of its own, and every field has one", () => {
  const keys = FLAGS.flatMap((flag) => (flag.key ? [flag.key] : []));
  equal(new Set(keys).size, keys.length, "no two flags set the same field");
  deepEqual(FLAGS.filter((flag) => !flag.key).map((flag) => flag.name), ["backend"]);
  const command = parseCommandLine([], () => undefined, 2);
  assert(command.kind === "run");
  deepEqual(Object.keys(command.config).sort(), [...keys, "instanceId", "pools", "routes"].sort());
});
