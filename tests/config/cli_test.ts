import { deepEqual, equal, match, ok as assert } from "node:assert/strict";
import { FLAGS } from "../../lib/config/config.ts";
import { VERSION } from "../../lib/version.ts";
import {
  bannerAt,
  recordingBackend,
  ROOT,
  runGoround,
  startGoround,
  waitFor,
} from "../support/helpers.ts";

Deno.test("--help lists every flag with its default and variable", async () => {
  const { code, stdout } = await runGoround(["--help"]);
  equal(code, 0);
  for (const flag of FLAGS) {
    assert(stdout.includes(`--${flag.name}`), flag.name);
    if (flag.fallback !== "") {
      assert(stdout.includes(`(default ${flag.fallback})`), `${flag.name} default`);
    }
  }
  match(stdout, /GOROUND_BACKENDS/);
});

Deno.test("--version prints goround's version from deno.json and the runtime's", async () => {
  const { code, stdout } = await runGoround(["--version"]);
  equal(code, 0);
  const manifest = JSON.parse(await Deno.readTextFile(`${ROOT}deno.json`));
  equal(VERSION, manifest.version);
  deepEqual(stdout.trim().split("\n"), [
    `goround ${manifest.version}`,
    `deno ${Deno.version.deno}`,
    `v8 ${Deno.version.v8}`,
    `typescript ${Deno.version.typescript}`,
  ]);
});

Deno.test("a bad value exits 2 with one line naming the flag, the value and what is expected", async (t) => {
  const cases: [string[], Record<string, string>, RegExp][] = [
    [
      ["--backend", "localhost:8081"],
      {},
      /^goround: --backend: "localhost:8081" has scheme localhost: expected http:\/\/host:port or https:\/\/host:port$/,
    ],
    [["--health-interval", "-5s"], {}, /^goround: --health-interval: "-5s" is not a duration/],
    [["--workers", "many"], {}, /^goround: --workers: "many" is not a count/],
    [["--frobnicate"], {}, /^goround: --frobnicate: unknown flag/],
    [["--request-buffer", "1XB"], {}, /^goround: --request-buffer: "1XB" is not a size: expected/],
    [
      ["--request-buffer-total", "3GiB"],
      {},
      /^goround: --request-buffer-total: "3GiB" is too large/,
    ],
    [
      ["--request-buffer", "2MiB", "--request-buffer-total", "1MiB"],
      {},
      /^goround: --request-buffer: "2MiB" is more than --request-buffer-total 1MiB: expected at most the total$/,
    ],
    [[], { GOROUND_BODY_MIN_RATE: "-1" }, /^goround: GOROUND_BODY_MIN_RATE: "-1" is not a size/],
    [["--send-timeout", "0s"], {}, /^goround: --send-timeout: "0s" must be longer than 0ms$/],
    [
      [],
      { GOROUND_BACKENDS: "http://ok:1,::bad" },
      /^goround: GOROUND_BACKENDS: "::bad" is not a URL/,
    ],
  ];
  for (const [args, env, message] of cases) {
    await t.step(args.join(" ") || JSON.stringify(env), async () => {
      const { code, stdout, stderr } = await runGoround(["--listen", "127.0.0.1:0", ...args], env);
      equal(code, 2);
      equal(stdout, "", "nothing starts");
      equal(stderr.trim().split("\n").length, 1, stderr);
      match(stderr.trim(), message);
    });
  }
});

Deno.test("a port in use exits 2 and says so", async () => {
  const blocker = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  try {
    const { code, stderr } = await runGoround(["--listen", `127.0.0.1:${blocker.addr.port}`]);
    equal(code, 2);
    equal(
      stderr.trim(),
      `goround: --listen: "127.0.0.1:${blocker.addr.port}" is in use: expected a free port`,
    );
  } finally {
    blocker.close();
  }
});

Deno.test("a second goround on the same port is refused, not silently sharing it", async () => {
  const backend = recordingBackend();
  const first = await startGoround(["--backend", backend.url, "--workers", "1"]);
  try {
    const { code, stderr } = await runGoround([
      "--listen",
      `127.0.0.1:${first.port}`,
      "--backend",
      backend.url,
    ]);
    equal(code, 2);
    match(stderr, /is in use/);
  } finally {
    await first.stop();
    await backend.close();
  }
});

Deno.test("the banner, then settings; SIGTERM exits 0", async () => {
  const backend = recordingBackend();
  const proxy = await startGoround([
    "--backend",
    backend.url,
    "--workers",
    "2",
    "--health-interval",
    "500ms",
  ]);
  try {
    match(proxy.stderr[bannerAt(proxy.stderr)]!, /^Load Balancer started at 127\.0\.0\.1:\d+$/);
    assert(proxy.stderr.some((l) => l.includes(`backends: ${backend.url}`)));
    assert(proxy.stderr.some((l) => l.includes("workers: 2")));
    assert(proxy.stderr.some((l) => l.includes("health: TCP every 500ms")));
  } finally {
    const status = await proxy.stop();
    equal(status.code, 0);
    await backend.close();
  }
});

Deno.test("deno task compile says plainly when denort is unavailable, and exits non-zero", async () => {
  const output = await new Deno.Command(Deno.execPath(), {
    args: ["task", "compile"],
    cwd: ROOT,
    env: { DENORT_BIN: "/nonexistent/denort" },
    stdin: "null",
  }).output();
  const text = new TextDecoder().decode(output.stdout) + new TextDecoder().decode(output.stderr);
  assert(output.code !== 0);
  match(text, /goround: deno compile needs the denort base binary/);
  match(text, /DENORT_BIN/);
});

Deno.test("an invalid --config file exits 2 with one line and starts nothing", async (t) => {
  const dir = await Deno.makeTempDir();
  try {
    const cases: [string, RegExp][] = [
      ["{not json", /^goround: .*bad\.json: not valid JSON/],
      ['{"listen": ":99999"}', /^goround: .*bad\.json: listen: ":99999" is not a listen address/],
      ['{"healthinterval": "1s"}', /^goround: .*bad\.json: "healthinterval" is not a setting/],
      ['{"max-fails": "many"}', /^goround: .*bad\.json: max-fails: "many" is not a count/],
    ];
    for (const [text, message] of cases) {
      await t.step(text, async () => {
        await Deno.writeTextFile(`${dir}/bad.json`, text);
        const output = await new Deno.Command(Deno.execPath(), {
          args: [
            "run",
            "--unstable-net",
            "--allow-net",
            `--allow-read=${ROOT},${dir}`,
            `${ROOT}main.ts`,
            "--config",
            `${dir}/bad.json`,
            "--listen",
            "127.0.0.1:0",
          ],
          stdin: "null",
        }).output();
        const stderr = new TextDecoder().decode(output.stderr).trim();
        equal(output.code, 2);
        equal(new TextDecoder().decode(output.stdout), "");
        equal(stderr.split("\n").length, 1, stderr);
        match(stderr, message);
      });
    }
    await t.step("a missing file", async () => {
      const { code, stderr } = await runGoround(["--config", `${dir}/missing.json`]);
      equal(code, 2);
      match(stderr.trim(), /^goround: --config: ".*missing\.json" cannot be read/);
    });
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("a duration longer than a timer can wait exits 2 for every duration flag", async (t) => {
  const durations = FLAGS.filter((f) => f.kind === "duration" || f.kind === "duration-or-zero");
  assert(durations.length >= 10, "the duration flags are found");
  for (const flag of durations) {
    await t.step(`--${flag.name} 999999h`, async () => {
      const { code, stdout, stderr } = await runGoround([
        "--listen",
        "127.0.0.1:0",
        `--${flag.name}`,
        "999999h",
      ]);
      equal(code, 2);
      equal(stdout, "", "nothing starts");
      equal(
        stderr.trim(),
        `goround: --${flag.name}: "999999h" is longer than a timer can wait: expected at most 2147483647ms (about 24.8 days)`,
      );
    });
  }
  await t.step("and as a GOROUND_* variable", async () => {
    const { code, stderr } = await runGoround(["--listen", "127.0.0.1:0"], {
      GOROUND_DRAIN_TIMEOUT: "2147483648ms",
    });
    equal(code, 2);
    match(stderr.trim(), /^goround: GOROUND_DRAIN_TIMEOUT: "2147483648ms" is longer than a timer/);
  });
});

Deno.test("goround's own address as a backend exits 2 before anything starts", async () => {
  const free = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = free.addr.port;
  free.close();
  const { code, stdout, stderr } = await runGoround([
    "--listen",
    `127.0.0.1:${port}`,
    "--backends",
    `http://127.0.0.2:${port},http://localhost:${port}`,
  ]);
  equal(code, 2);
  equal(stdout, "", "nothing starts");
  equal(
    stderr.trim(),
    `goround: --backends: "http://localhost:${port}" is goround's own address (it listens on 127.0.0.1:${port}): expected another server`,
  );
});

Deno.test("a GOROUND_* variable that is not a setting is warned of, naming the closest", async (t) => {
  const backend = recordingBackend(() => new Response("ok"));
  const env = { GOROUND_HEALTH_INTERVALL: "5s", GOROUND_WORKERS: "1" };
  const warning =
    "warning: GOROUND_HEALTH_INTERVALL is not a goround setting and is ignored: did you mean GOROUND_HEALTH_INTERVAL?";
  try {
    await t.step("at start (with --allow-env=GOROUND_* only)", async () => {
      const proxy = await startGoround(["--backend", backend.url, "--access-log", "off"], { env });
      try {
        await waitFor(() => proxy.stderr.some((line) => line.endsWith(warning)), {
          what: "the warning",
        });
        equal(proxy.stderr.filter((line) => line.includes("warning:")).length, 1);
      } finally {
        await proxy.stop();
      }
    });
    await t.step("by goround check", async () => {
      const { code, stderr } = await runGoround(["check", "--backend", backend.url], env);
      equal(code, 0);
      assert(stderr.trim().endsWith(warning), stderr);
    });
  } finally {
    await backend.close();
  }
});
