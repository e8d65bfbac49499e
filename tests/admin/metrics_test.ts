import { deepEqual, equal, match, ok as assert } from "node:assert/strict";
import {
  get,
  type Goround,
  recordingBackend,
  runGoround,
  startGoround,
  waitFor,
} from "../support/helpers.ts";
import { ensureDebianPackage } from "../support/cdp.ts";
import { VERSION } from "../../lib/version.ts";

const PROMTOOL = "/usr/bin/promtool";

/**
 * The admin base URL. `startGoround` reads it once, as soon as the banner's first line is in, and
 * the admin line (the banner's last) may not have arrived by then: wait for it.
 */
async function adminUrlOf(proxy: Goround): Promise<string> {
  let url = proxy.adminUrl;
  await waitFor(() => {
    url ||= proxy.stderr.map((line) => /^ {2}admin: (http:\/\/\S+)\/$/.exec(line)?.[1])
      .find((found) => found !== undefined) ?? "";
    return url !== "";
  }, { what: "goround's admin address", exited: proxy.exited });
  return url;
}

/** One sample of the exposition: name, labels, value. */
interface Sample {
  readonly name: string;
  readonly labels: Readonly<Record<string, string>>;
  readonly value: number;
}

/**
 * Parses the text exposition format's samples (comments skipped), strictly enough that a
 * malformed line fails the test.
 */
function parseSamples(text: string): Sample[] {
  const samples: Sample[] = [];
  for (const line of text.split("\n")) {
    if (line === "" || line.startsWith("#")) continue;
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$/.exec(line);
    assert(m, `a sample line: ${JSON.stringify(line)}`);
    const labels: Record<string, string> = {};
    for (const [, name, raw] of (m[2] ?? "").matchAll(/([a-zA-Z_]\w*)="((?:[^"\\]|\\.)*)",?/g)) {
      labels[name!] = raw!.replace(/\\(.)/g, (_, c: string) => (c === "n" ? "\n" : c));
    }
    const value = m[3] === "+Inf" ? Infinity : Number(m[3]);
    assert(!Number.isNaN(value), `a number in ${JSON.stringify(line)}`);
    samples.push({ name: m[1]!, labels, value });
  }
  return samples;
}

/** The value of the one sample with `name` whose labels include `labels`. */
function value(samples: Sample[], name: string, labels: Record<string, string> = {}): number {
  const found = samples.filter((s) =>
    s.name === name && Object.entries(labels).every(([k, v]) => s.labels[k] === v)
  );
  equal(found.length, 1, `one ${name}${JSON.stringify(labels)}`);
  return found[0]!.value;
}

async function metrics(adminUrl: string): Promise<{ text: string; samples: Sample[] }> {
  const res = await get(`${adminUrl}/metrics`);
  equal(res.status, 200, res.text);
  match(res.headers.get("content-type") ?? "", /^text\/plain; version=0\.0\.4/);
  return { text: res.text, samples: parseSamples(res.text) };
}

/** Pipes the exposition text into `promtool check metrics`. */
async function promtoolCheck(text: string): Promise<{ code: number; output: string }> {
  const child = new Deno.Command(PROMTOOL, {
    args: ["check", "metrics"],
    stdin: "piped",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const writer = child.stdin.getWriter();
  await writer.write(new TextEncoder().encode(text));
  await writer.close();
  const { code, stdout, stderr } = await child.output();
  const decoder = new TextDecoder();
  return { code, output: (decoder.decode(stdout) + decoder.decode(stderr)).trim() };
}

Deno.test("GET /metrics", async (t) => {
  await ensureDebianPackage(PROMTOOL, "prometheus", { installFlags: ["--no-install-recommends"] });
  // Both answer 404 on /missing, to see a second status class.
  const answer = (name: string) => (req: Request) =>
    new URL(req.url).pathname === "/missing"
      ? new Response("no", { status: 404 })
      : new Response(name);
  const a = recordingBackend(answer("a"));
  const b = recordingBackend(answer("b"));
  let aOpen = true;
  let proxy: Goround | null = null;
  try {
    proxy = await startGoround([
      "--backend",
      a.url,
      "--backend",
      b.url,
      "--health-interval",
      "200ms",
      "--workers",
      "1",
    ]);
    const adminUrl = await adminUrlOf(proxy);
    const sent = 6;
    for (let i = 0; i < sent; i++) equal((await get(proxy.url)).status, 200);
    for (let i = 0; i < 2; i++) equal((await get(`${proxy.url}/missing`)).status, 404);

    await t.step("passes promtool check metrics", async () => {
      const { text } = await metrics(adminUrl);
      const { code, output } = await promtoolCheck(text);
      if (output !== "") console.log(`promtool check metrics (exit ${code}):\n${output}`);
      // promtool exits 1 on a parse error and 3 on lint problems (naming advice, printed above);
      // goround's metrics have neither today, so both fail the test.
      assert(!/error|invalid|unexpected/i.test(output), `promtool found errors:\n${output}`);
      equal(code, 0, `promtool check metrics exits 0:\n${output}`);
    });

    await t.step("goround_requests_total counts what each backend answered", async () => {
      const { samples } = await metrics(adminUrl);
      const ok = (url: string) =>
        value(samples, "goround_requests_total", { backend: url, code: "2xx" });
      equal(ok(a.url) + ok(b.url), sent);
      deepEqual([ok(a.url), ok(b.url)], [sent / 2, sent / 2], "round-robin: half each");
      deepEqual([a.requests.length, b.requests.length], [sent / 2 + 1, sent / 2 + 1]);
      for (const url of [a.url, b.url]) {
        equal(value(samples, "goround_requests_total", { backend: url, code: "4xx" }), 1);
        for (const code of ["1xx", "3xx", "5xx"]) {
          equal(value(samples, "goround_requests_total", { backend: url, code }), 0);
        }
      }
      equal(value(samples, "goround_requests_total", { backend: "none", code: "5xx" }), 0);
    });

    await t.step("the duration histogram's _count is the backend's requests_total", async () => {
      const { samples } = await metrics(adminUrl);
      for (const url of [a.url, b.url]) {
        const answered = samples
          .filter((s) => s.name === "goround_requests_total" && s.labels.backend === url)
          .reduce((sum, s) => sum + s.value, 0);
        const count = value(samples, "goround_request_duration_seconds_count", { backend: url });
        equal(count, answered, `${url}: _count = sum of goround_requests_total`);
        const buckets = samples.filter((s) =>
          s.name === "goround_request_duration_seconds_bucket" && s.labels.backend === url
        );
        assert(buckets.length > 1, "buckets");
        equal(buckets.at(-1)?.labels.le, "+Inf");
        equal(buckets.at(-1)?.value, count, "the +Inf bucket is the count");
        for (let i = 1; i < buckets.length; i++) {
          assert(buckets[i]!.value >= buckets[i - 1]!.value, "buckets are cumulative");
        }
        const sum = value(samples, "goround_request_duration_seconds_sum", { backend: url });
        assert(sum > 0 && sum < count * 5, `a plausible _sum: ${sum}`);
      }
    });

    await t.step('goround_health_checks_total{result="pass"} grows', async () => {
      const passes = async () =>
        value((await metrics(adminUrl)).samples, "goround_health_checks_total", {
          backend: b.url,
          result: "pass",
        });
      const first = await passes();
      await waitFor(async () => (await passes()) > first, { what: "another passed check" });
    });

    await t.step("goround_backend_up is 1, and 0 once a closed backend is noticed", async () => {
      const up = async (url: string) =>
        value((await metrics(adminUrl)).samples, "goround_backend_up", { backend: url });
      deepEqual([await up(a.url), await up(b.url)], [1, 1]);
      await a.close();
      aOpen = false;
      await waitFor(async () => (await up(a.url)) === 0, { what: "goround_backend_up 0" });
      const res = await get(`${adminUrl}/status`);
      equal(
        (JSON.parse(res.text) as { backends: { url: string; state: string }[] }).backends
          .find((x) => x.url === a.url)?.state,
        "down",
        "GET /status agrees",
      );
      equal(await up(b.url), 1, "the other stays up");
      const { samples } = await metrics(adminUrl);
      assert(
        value(samples, "goround_health_checks_total", { backend: a.url, result: "fail" }) > 0,
        "its failed checks are counted",
      );
    });
  } finally {
    await proxy?.stop();
    await Promise.all([aOpen ? a.close() : undefined, b.close()]);
  }
});

Deno.test("the admin token: 401 without it or with a wrong one, 200 with it", async () => {
  const backend = recordingBackend();
  const proxy = await startGoround([
    "--backend",
    backend.url,
    "--workers",
    "1",
    "--admin-token",
    "secret",
  ]);
  try {
    const adminUrl = await adminUrlOf(proxy);
    const statusWith = async (authorization?: string) =>
      await get(`${adminUrl}/status`, { headers: authorization ? { authorization } : {} });
    const none = await statusWith();
    equal(none.status, 401, "no Authorization");
    match(none.headers.get("www-authenticate") ?? "", /^Bearer/);
    equal((await statusWith("Bearer wrong")).status, 401, "a wrong token");
    equal((await statusWith("Bearer secre")).status, 401, "a prefix of the token");
    equal((await statusWith("Basic c2VjcmV0")).status, 401, "another scheme");
    const right = await statusWith("Bearer secret");
    equal(right.status, 200, "the right token");
    equal((JSON.parse(right.text) as { backends: unknown[] }).backends.length, 1);
    equal((await get(`${adminUrl}/metrics`)).status, 401, "/metrics needs it too");
    const drain = await get(`${adminUrl}/backends/0/drain`, {
      method: "POST",
      headers: { "content-type": "application/json" },
    });
    equal(drain.status, 401, "and the actions");
    equal((await get(`${adminUrl}/`)).status, 200, "the dashboard page (no data) does not");
  } finally {
    await proxy.stop();
    await backend.close();
  }
});

Deno.test("--admin off loopback without --admin-token exits 2 with one line naming --admin-token", async () => {
  const { code, stdout, stderr } = await runGoround([
    "--admin",
    "0.0.0.0:0",
    "--listen",
    "127.0.0.1:0",
    "--backend",
    "http://127.0.0.1:1",
  ]);
  equal(code, 2);
  equal(stdout, "");
  const lines = stderr.trimEnd().split("\n");
  equal(lines.length, 1, `one line: ${stderr}`);
  match(lines[0]!, /--admin-token/);
  match(lines[0]!, /0\.0\.0\.0/);
});

Deno.test("/status and /metrics on the proxy port go to the backend, not the admin API", async () => {
  const backend = recordingBackend((req) =>
    new Response(`backend saw ${new URL(req.url).pathname}`)
  );
  const proxy = await startGoround(["--backend", backend.url, "--workers", "1"]);
  try {
    for (const path of ["/status", "/metrics", "/backends/0/drain"]) {
      const method = path.endsWith("drain") ? "POST" : "GET";
      const res = await get(`${proxy.url}${path}`, { method });
      deepEqual([res.status, res.text], [200, `backend saw ${path}`], `${method} ${path}`);
    }
    deepEqual(
      backend.requests.map((r) => `${r.method} ${new URL(r.url).pathname}`),
      ["GET /status", "GET /metrics", "POST /backends/0/drain"],
    );
    const adminUrl = await adminUrlOf(proxy);
    const status = JSON.parse((await get(`${adminUrl}/status`)).text) as {
      backends: { state: string }[];
    };
    equal(status.backends[0]?.state, "up", "the POST …/drain did not drain anything");
  } finally {
    await proxy.stop();
    await backend.close();
  }
});

Deno.test("/metrics: bytes per backend, refusals by reason, gauges, build and process metrics", async () => {
  const backend = recordingBackend(() => new Response("x".repeat(1000)));
  const proxy = await startGoround(["--backend", backend.url, "--workers", "1"]);
  try {
    const admin = await adminUrlOf(proxy);
    for (let i = 0; i < 5; i++) {
      await get(proxy.url, { method: "POST", body: "y".repeat(100) });
    }
    // A target that is not origin-form: refused (400) before any backend is asked.
    const conn = await Deno.connect({ hostname: "127.0.0.1", port: proxy.port });
    await conn.write(new TextEncoder().encode("GET abc HTTP/1.1\r\nHost: x\r\n\r\n"));
    await conn.read(new Uint8Array(512));
    conn.close();
    const value = (samples: Sample[], name: string, labels: Record<string, string> = {}) =>
      samples.find((s) =>
        s.name === name && Object.entries(labels).every(([k, v]) => s.labels[k] === v)
      )?.value;
    let samples: Sample[] = [];
    await waitFor(async () => {
      samples = (await metrics(admin)).samples;
      return (value(samples, "goround_requests_refused_total", { reason: "bad_request" }) ?? 0) >=
        1;
    }, { what: "the refusal to be counted" });
    equal(value(samples, "goround_backend_bytes_in_total", { backend: backend.url }), 500);
    equal(value(samples, "goround_backend_bytes_out_total", { backend: backend.url }), 5000);
    equal(value(samples, "goround_queue_depth"), 0);
    equal(value(samples, "goround_reloads_total", { result: "success" }), 0);
    equal(value(samples, "goround_build_info", { version: VERSION, deno: Deno.version.deno }), 1);
    assert((value(samples, "process_resident_memory_bytes") ?? 0) > 1_000_000);
    assert((value(samples, "process_cpu_seconds_total") ?? 0) > 0);
  } finally {
    await proxy.stop();
    await backend.close();
  }
});
