/**
 * Unit tests of the benchmark's pure parts (requests, wrk output, verdict, flags, configs); the
 * benchmark itself runs with `deno task bench`.
 *
 * @module
 */

import assert from "node:assert/strict";
import { allowedCpus, defaultOptions, parseBenchArgs, planFor } from "../../tools/bench.ts";
import { relay } from "../../tools/bench/floor_proxy.ts";
import { contentLength, headEnd, RUNGS } from "../../tools/bench/least_proxy.ts";
import { selfTimes } from "../../tools/bench/cpu_profile.ts";
import {
  caddyfile,
  haproxyConf,
  nginxBackendsConf,
  nginxProxyConf,
} from "../../tools/bench/configs.ts";
import {
  combineRounds,
  judge,
  LADDER_IDS,
  type Measurement,
  renderReport,
  type Row,
  type RunInfo,
  scenarioTable,
} from "../../tools/bench/report.ts";
import { cpuSeconds, cpuSecondsOf } from "../../tools/bench/procs.ts";
import { buildRequest, parseWrkOutput, RESULT_MARKER, scenario } from "../../tools/bench/wrk.ts";

const text = (bytes: Uint8Array) => new TextDecoder().decode(bytes);

Deno.test("buildRequest()", async (t) => {
  await t.step("a GET has only the request line and Host", () => {
    assert.equal(
      text(buildRequest(scenario("get"), "127.0.0.1:8000")),
      "GET / HTTP/1.1\r\nHost: 127.0.0.1:8000\r\n\r\n",
    );
  });
  await t.step("`close` asks for Connection: close", () => {
    assert.match(text(buildRequest(scenario("close"), "h")), /\r\nConnection: close\r\n\r\n$/);
  });
  await t.step("a sized upload has Content-Length and exactly that body", () => {
    const raw = text(buildRequest(scenario("post-64k"), "h"));
    const [head, body] = raw.split("\r\n\r\n") as [string, string];
    assert.match(head, /^POST \/upload HTTP\/1\.1\r\n.*Content-Length: 65536$/s);
    assert.equal(body.length, 65536);
  });
  await t.step("a chunked upload has no Content-Length and decodes to 1 MiB", () => {
    const raw = text(buildRequest(scenario("upload-1m-chunked"), "h"));
    const end = raw.indexOf("\r\n\r\n");
    const head = raw.slice(0, end);
    assert.match(head, /\r\nTransfer-Encoding: chunked$/);
    assert.doesNotMatch(head, /Content-Length/i);
    let rest = raw.slice(end + 4);
    let total = 0;
    while (true) {
      const lineEnd = rest.indexOf("\r\n");
      const size = parseInt(rest.slice(0, lineEnd), 16);
      rest = rest.slice(lineEnd + 2);
      if (size === 0) break;
      assert.equal(rest.slice(size, size + 2), "\r\n");
      total += size;
      rest = rest.slice(size + 2);
    }
    assert.equal(total, 1024 * 1024);
    assert.equal(rest, "\r\n");
  });
});

Deno.test("parseWrkOutput()", async (t) => {
  await t.step("reads the done() line among wrk's own output", () => {
    const line = `${RESULT_MARKER} {"requests":1000,"duration_us":2000000,"bytes":5000,` +
      `"connect":0,"read":1,"write":0,"timeout":0,"status":2,"p50_us":1500,"p90_us":2500,` +
      `"p99_us":9000}`;
    const result = parseWrkOutput(`Running 2s test @ http://127.0.0.1:8000/\n${line}\n`);
    assert.equal(result.requests, 1000);
    assert.equal(result.seconds, 2);
    assert.equal(result.p50, 1.5);
    assert.equal(result.p99, 9);
    assert.deepEqual(result.errors, { connect: 0, read: 1, write: 0, timeout: 0, status: 2 });
  });
  await t.step("throws SyntaxError without it", () => {
    assert.throws(() => parseWrkOutput("unable to connect to 127.0.0.1:8000"), SyntaxError);
  });
});

function row(
  target: Row["target"],
  rps: number,
  errors = 0,
  cpuPerRequest: number | null = null,
): Row {
  const measurement: Measurement = {
    rps,
    p50: 1,
    p90: 2,
    p99: 3,
    errors: { connect: 0, read: errors, write: 0, timeout: 0, status: 0 },
    warmupErrors: 0,
    peakRssKiB: null,
    cpuPerRequest,
    mibPerSecond: null,
    probe: "HTTP/1.1 200 OK",
  };
  return { target, label: target, scenario: "get", outcome: { kind: "measured", measurement } };
}

Deno.test("combineRounds() and the report's Rounds section", async (t) => {
  const rounds = [
    [row("goround", 100), row("nginx", 250)],
    [row("goround", 300, 2), row("nginx", 200)],
    [row("goround", 200), row("nginx", 300)],
  ];
  const combined = combineRounds(rounds);
  await t.step("each row is the median round, with every round's req/s in run order", () => {
    const goround = combined.find((r) => r.target === "goround")!;
    assert.equal(goround.outcome.kind === "measured" && goround.outcome.measurement.rps, 200);
    assert.deepEqual(goround.rounds, [100, 300, 200]);
    const nginx = combined.find((r) => r.target === "nginx")!;
    assert.equal(nginx.outcome.kind === "measured" && nginx.outcome.measurement.rps, 250);
  });
  await t.step("the errors of every round count, so the verdict sees them", () => {
    const goround = combined.find((r) => r.target === "goround")!;
    assert.equal(goround.outcome.kind === "measured" && goround.outcome.measurement.errors.read, 2);
    assert.equal(judge([row("direct", 1000), ...combined], 0.1).ok, false);
  });
  await t.step("a target skipped in any round is reported skipped, saying which", () => {
    const skipped: Row = { ...row("nginx", 0), outcome: { kind: "skipped", reason: "exited" } };
    const out = combineRounds([[row("goround", 1), row("nginx", 1)], [row("goround", 1), skipped]]);
    assert.deepEqual(out[1]!.outcome, { kind: "skipped", reason: "round 2: exited" });
  });
  await t.step("the report lists every round and goround's ratio in each", () => {
    const info: RunInfo = {
      date: "d",
      cores: 2,
      cpu: "c",
      memory: "m",
      versions: [],
      command: "x",
      settings: [],
    };
    const report = renderReport(info, combined, judge(combined, 0));
    assert.match(report, /## Rounds/);
    assert.match(report, /\| nginx +\| +250 \| +200 \| +300 \| +0\.40x, 1\.50x, 0\.67x \|/);
    assert.doesNotMatch(renderReport(info, combineRounds([rounds[0]!]), judge([], 0)), /Rounds/);
  });
});

Deno.test("CPU time per request", async (t) => {
  await t.step("cpuSecondsOf() adds utime and stime, whatever the command name holds", () => {
    assert.equal(
      cpuSecondsOf("42 (deno) S 1 42 42 0 -1 4194560 9 0 0 0 150 37 0 0 20 0 3 0"),
      1.87,
    );
    assert.equal(
      cpuSecondsOf("7 (a) b (c)) R 1 7 7 0 -1 0 0 0 0 0 1200 300 0 0 20 0 1 0"),
      15,
      "fields are counted from the last parenthesis",
    );
    assert.equal(cpuSecondsOf(""), null);
    assert.equal(cpuSecondsOf("7 (x) R 1"), null);
  });
  await t.step("cpuSeconds() reads a live process, and counts the time it spends", async () => {
    const before = await cpuSeconds([Deno.pid]);
    assert.ok(before !== null && before > 0);
    // Spin until the counted time moves (the ticks are 10 ms), within a deadline.
    const deadline = Date.now() + 10_000;
    let after = before;
    while (after - before < 0.05 && Date.now() < deadline) {
      const until = performance.now() + 20;
      while (performance.now() < until);
      after = (await cpuSeconds([Deno.pid])) ?? before;
    }
    assert.ok(after - before >= 0.05, `${before} -> ${after}`);
    assert.equal(await cpuSeconds([]), null);
  });
  await t.step("the report has a CPU/req column, with a dash where there is no proxy", () => {
    const lines = scenarioTable("get", [row("direct", 1000), row("goround", 500, 0, 25.34)]);
    assert.match(lines.join("\n"), /\| CPU\/req \|/);
    assert.match(lines.find((l) => l.startsWith("| direct"))!, /\| +— +\| +0\.50x/);
    assert.match(lines.find((l) => l.startsWith("| **goround"))!, /\| 25\.3 µs \|/);
  });
});

Deno.test("judge()", async (t) => {
  await t.step("passes goround without errors above the floor", () => {
    assert.equal(judge([row("direct", 100), row("goround", 30)], 0.25).ok, true);
  });
  await t.step("fails goround below the floor", () => {
    assert.equal(judge([row("direct", 100), row("goround", 20)], 0.25).ok, false);
  });
  await t.step("fails on any goround error, either front end", () => {
    assert.equal(judge([row("direct", 100), row("goround", 90, 1)], 0.25).ok, false);
    assert.equal(
      judge([row("direct", 100), row("goround", 90), row("goround-deno", 90, 1)], 0.25).ok,
      false,
    );
  });
  await t.step("ignores the peers' errors", () => {
    assert.equal(
      judge([row("direct", 100), row("goround", 90), row("nginx", 90, 5)], 0.25).ok,
      true,
    );
  });
  await t.step("fails when goround did not start", () => {
    const skipped: Row = {
      target: "goround",
      label: "goround",
      scenario: "get",
      outcome: { kind: "skipped", reason: "failed to start: exited" },
    };
    assert.equal(judge([row("direct", 100), skipped], 0.25).ok, false);
  });
});

Deno.test("parseBenchArgs()", async (t) => {
  await t.step("--quick runs every scenario only for direct and goround", () => {
    const options = parseBenchArgs(["--quick"], 2);
    assert.notEqual(options, "help");
    if (options === "help") return;
    assert.equal(options.mode, "quick");
    assert.equal(options.workers, 2);
    for (const entry of options.plan) {
      const all = entry.target === "direct" || entry.target === "goround";
      assert.equal(entry.scenarios.length, all ? 6 : 1, entry.target);
    }
  });
  await t.step("--targets and --scenarios narrow the plan", () => {
    const options = parseBenchArgs(["--targets", "goround,nginx", "--scenarios", "close"], 2);
    assert.notEqual(options, "help");
    if (options === "help") return;
    assert.deepEqual(options.plan, [
      { target: "goround", scenarios: ["close"] },
      { target: "nginx", scenarios: ["close"] },
    ]);
  });
  await t.step("--full measures longer", () => {
    assert.equal(defaultOptions("full", 2).duration, 10);
  });
  await t.step("--rounds repeats the plan; one round by default", () => {
    assert.equal(defaultOptions("full", 2).rounds, 1);
    const options = parseBenchArgs(["--rounds", "3"], 2);
    assert.equal(options !== "help" && options.rounds, 3);
    assert.throws(() => parseBenchArgs(["--rounds", "0"], 2), /--rounds: "0"/);
  });
  await t.step("--pin: one worker, wrk -t1 -c32 unless told; the ladder only when named", () => {
    const options = parseBenchArgs(["--pin", "--targets", "deno-least,goround,nginx"], 2);
    assert.notEqual(options, "help");
    if (options === "help") return;
    assert.equal(options.pin, true);
    assert.equal(options.workers, 1);
    assert.equal(options.threads, 1);
    assert.equal(options.connections, 32);
    assert.deepEqual(options.plan.map((e) => [e.target, e.scenarios.length]), [
      ["goround", 6],
      ["deno-least", 1],
      ["nginx", 6],
    ]);
    const told = parseBenchArgs(["--pin", "--connections", "8", "--workers", "1"], 2);
    assert.equal(told !== "help" && told.connections, 8);
    assert.throws(
      () => parseBenchArgs(["--pin", "--workers", "2"], 2),
      /--workers: "2" with --pin/,
    );
    assert.equal(parseBenchArgs(["--pin", "--workers", "01"], 2) !== "help", true);
    assert.throws(
      () => parseBenchArgs(["--targets", "goround,deno-least"], 2),
      /--targets: deno-least runs on one thread: .* only with --pin/,
    );
    for (const mode of ["quick", "default", "full"] as const) {
      assert.ok(defaultOptions(mode, 2).plan.every((e) => !LADDER_IDS.includes(e.target)), mode);
    }
  });
  await t.step("--compare runs another checkout right after goround, with its scenarios", () => {
    const options = parseBenchArgs(
      ["--compare", "/tmp/old/", "--targets", "goround,nginx", "--scenarios", "get,close"],
      2,
    );
    assert.notEqual(options, "help");
    if (options === "help") return;
    assert.equal(options.compare, "/tmp/old");
    assert.deepEqual(options.plan.map((e) => [e.target, e.scenarios]), [
      ["goround", ["get", "close"]],
      ["goround-compare", ["get", "close"]],
      ["nginx", ["get", "close"]],
    ]);
    assert.throws(
      () => parseBenchArgs(["--compare", "/tmp/old", "--targets", "nginx"], 2),
      /--compare: goround is not among the --targets/,
    );
    assert.throws(
      () => parseBenchArgs(["--targets", "goround-compare"], 2),
      /--targets: "goround-compare" is not one of/,
    );
    assert.equal(defaultOptions("full", 2).plan.some((e) => e.target === "goround-compare"), false);
  });
  await t.step("bad values name the flag", () => {
    assert.throws(() => parseBenchArgs(["--port", "70000"], 2), /--port: "70000"/);
    assert.throws(() => parseBenchArgs(["--targets", "envoy"], 2), /--targets: "envoy"/);
    assert.throws(() => parseBenchArgs(["--quick", "--full"], 2), RangeError);
  });
});

Deno.test("configs listen on loopback only and use the issue's settings", () => {
  const options = { port: 8000, backends: [9081, 9082, 9083], workers: 2, dir: "/tmp/x" };
  const nginx = nginxProxyConf(options);
  assert.match(nginx, /worker_processes 2;/);
  assert.match(nginx, /keepalive 64;/);
  assert.match(nginx, /proxy_http_version 1\.1;/);
  assert.match(nginx, /proxy_set_header Connection "";/);
  assert.match(haproxyConf(options), /nbthread 2[\s\S]*http-reuse always[\s\S]*balance roundrobin/);
  assert.match(caddyfile(options), /lb_policy round_robin/);
  const backends = nginxBackendsConf({
    ports: options.backends,
    dir: "/tmp/x",
    root: "/tmp/x/www",
  });
  assert.match(backends, /worker_processes 1;/);
  for (const conf of [nginx, haproxyConf(options), caddyfile(options), backends]) {
    for (const match of conf.matchAll(/(?:listen|bind|server)\s+([\d.]+):\d+/g)) {
      assert.equal(match[1], "127.0.0.1", conf);
    }
  }
  assert.match(caddyfile(options), /bind 127\.0\.0\.1/);
});

Deno.test("the floor proxy relays bytes both ways, and runs every scenario", async () => {
  const body = "x".repeat(300_000); // more than one 128 KiB read each way
  const backend = Deno.serve(
    { hostname: "127.0.0.1", port: 0, onListen: () => {} },
    async (req) => new Response(`${(await req.text()).length} ${body}`),
  );
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const accepted = listener.accept().then((conn) => relay(conn, backend.addr.port));
  const client = await Deno.connect({ hostname: "127.0.0.1", port: listener.addr.port });
  const upload = "y".repeat(200_000);
  const request = `POST / HTTP/1.1\r\nHost: x\r\nContent-Length: ${upload.length}\r\n` +
    `Connection: close\r\n\r\n${upload}`;
  const writing = (async () => {
    const bytes = new TextEncoder().encode(request);
    for (let at = 0; at < bytes.length;) at += await client.write(bytes.subarray(at));
  })();
  const reply = await new Response(client.readable).text();
  await writing;
  await accepted;
  listener.close();
  await backend.shutdown();
  assert.match(reply, /^HTTP\/1\.1 200/);
  assert.ok(reply.endsWith(`\r\n\r\n200000 ${body}`), "the whole body came back through");
  const plan = planFor("full");
  assert.equal(plan.find((e) => e.target === "deno-floor")?.scenarios.length, 6);
  assert.deepEqual(planFor("quick").find((e) => e.target === "deno-floor")?.scenarios, ["get"]);
  assert.equal(plan.find((e) => e.target === "goround")?.scenarios.length, 6);
});

Deno.test("each rung of the ladder proxies keep-alive GETs to its backends in turn", async () => {
  // Two backends answering with their own name; each rung runs as the benchmark runs it.
  const backends = ["a", "b"].map((name) =>
    Deno.serve(
      { hostname: "127.0.0.1", port: 0, onListen: () => {} },
      (req) => new Response(`${name} ${new URL(req.url).pathname}`),
    )
  );
  try {
    for (const rung of RUNGS) {
      const port = freePort();
      const child = new Deno.Command(Deno.execPath(), {
        args: [
          "run",
          "--allow-net=127.0.0.1",
          new URL("../../tools/bench/least_proxy.ts", import.meta.url).pathname,
          rung,
          String(port),
          ...backends.map((b) => String(b.addr.port)),
        ],
        stdout: "piped",
        stderr: "inherit",
      }).spawn();
      const lines = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
      try {
        assert.match((await lines.read()).value ?? "", new RegExp(`${rung} rung on`));
        const client = Deno.createHttpClient({ poolMaxIdlePerHost: 1 });
        try {
          const bodies: string[] = [];
          for (const path of ["/x", "/y", "/z"]) {
            const res = await fetch(`http://127.0.0.1:${port}${path}`, { client });
            assert.equal(res.status, 200, rung);
            bodies.push((await res.text()).trim());
          }
          assert.deepEqual(bodies, ["a /x", "b /y", "a /z"], rung);
        } finally {
          client.close();
        }
      } finally {
        child.kill();
        await child.status;
        await lines.cancel(); // closes the pipe all the way down to the child's stdout
      }
    }
  } finally {
    await Promise.all(backends.map((b) => b.shutdown()));
  }
});

Deno.test("the least proxy's byte scans find a head's end and its Content-Length", () => {
  const bytes = new TextEncoder().encode(
    "HTTP/1.1 200 OK\r\nServer: x\r\nCONTENT-LENGTH:  1234\r\n\r\nbody",
  );
  const end = headEnd(bytes, 0, bytes.length);
  assert.equal(end, bytes.length - 4);
  assert.equal(contentLength(bytes, end), 1234);
  assert.equal(headEnd(bytes, 0, end - 1), -1, "a head cut before its blank line");
  const none = new TextEncoder().encode("HTTP/1.1 204 No Content\r\n\r\n");
  assert.equal(contentLength(none, none.length), 0);
});

/** A port that is free right now. */
function freePort(): number {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const { port } = listener.addr;
  listener.close();
  return port;
}

Deno.test("allowedCpus() reads the CPUs a process may use, ranges and lists alike", () => {
  const status = (list: string) => `Name:\tdeno\nCpus_allowed:\tff\nCpus_allowed_list:\t${list}\n`;
  assert.deepEqual(allowedCpus(status("0-1")), [0, 1]);
  assert.deepEqual(allowedCpus(status("2,4-6,9")), [2, 4, 5, 6, 9]);
  assert.deepEqual(allowedCpus(status("3")), [3]);
  assert.deepEqual(allowedCpus("Name:\tdeno\n"), []);
});

Deno.test("selfTimes() spreads a profile's samples over functions, per request", () => {
  const frame = (functionName: string, url: string) => ({ functionName, url });
  const profile = {
    nodes: [
      { id: 1, callFrame: frame("(root)", "") },
      { id: 2, callFrame: frame("answer", "file:///x/lib/server.ts") },
      { id: 3, callFrame: frame("", "file:///x/lib/proxy.ts") },
    ],
    samples: [2, 2, 3, 2],
    startTime: 0,
    endTime: 400, // four samples, 100 µs each
  };
  assert.deepEqual(selfTimes(profile, 10), [["answer server.ts", 30], [
    "(anonymous) proxy.ts",
    10,
  ]]);
});

Deno.test("--routes N: goround runs with N routes, and the bench's requests match the last", async () => {
  const { routesConfig } = await import("../../tools/bench/configs.ts");
  const { readPoolsAndRoutes } = await import("../../lib/config/routes_file.ts");
  const { compileRoutes } = await import("../../lib/proxy/router.ts");
  const routesOf = (args: string[]) => {
    const options = parseBenchArgs(args, 2);
    assert(options !== "help");
    return options.routes;
  };
  assert.equal(routesOf(["--routes", "50"]), 50);
  assert.equal(routesOf([]), 0, "flags-only by default");
  assert.throws(() => parseBenchArgs(["--routes", "many"], 2), /--routes/);
  const text = routesConfig(50, ["http://127.0.0.1:1", "http://127.0.0.1:2"]);
  const { routes } = readPoolsAndRoutes(JSON.parse(text), "routes.json", text);
  assert.equal(routes.length, 50);
  const kinds = new Set(
    routes.map((r) => r.host?.startsWith("*.") ? "wild" : r.host ? "exact" : "path"),
  );
  assert.deepEqual([...kinds].sort(), ["exact", "path", "wild"]);
  const matched = compileRoutes(routes).match("127.0.0.1:8000", "/", "GET", () => null);
  assert.equal(matched, routes.at(-1), "the catch-all, last in match order");
});
