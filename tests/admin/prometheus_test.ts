/**
 * A real Prometheus server scrapes goround every 250 ms while traffic flows and a backend is
 * killed; its HTTP API must then answer what an operator would ask of it.
 */
import { ok as assert } from "node:assert/strict";
import { type BackendProcess, spawnBackend } from "../../dummy_servers.ts";
import { ensureDebianPackage } from "../support/cdp.ts";
import { get, startGoround, waitFor } from "../support/helpers.ts";

const PROMETHEUS = "/usr/bin/prometheus";

function freePort(): number {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const { port } = listener.addr;
  listener.close();
  return port;
}

/** One instant-query answer: the value of each series, by its `backend` label (or `""`). */
async function query(base: string, expr: string): Promise<Map<string, number>> {
  const values = new Map<string, number>();
  // Until Prometheus listens, nothing is known yet.
  const res = await get(`${base}/api/v1/query?query=${encodeURIComponent(expr)}`).catch(() => null);
  if (res === null || res.status !== 200) return values;
  const body = JSON.parse(res.text);
  if (body.status !== "success") return values;
  for (const series of body.data.result) {
    values.set(series.metric.backend ?? "", Number(series.value[1]));
  }
  return values;
}

Deno.test("Prometheus scrapes goround: rates, backend_up after a kill, a p99 near the measured one", async () => {
  await ensureDebianPackage(PROMETHEUS, "prometheus");
  const backends: BackendProcess[] = await Promise.all([spawnBackend(0), spawnBackend(0)]);
  const urls = backends.map((b) => `http://127.0.0.1:${b.port}`);
  const proxy = await startGoround([
    "--backends",
    urls.join(","),
    "--workers",
    "1",
    "--health-interval",
    "200ms",
    "--access-log",
    "off",
  ]);
  const dir = await Deno.makeTempDir();
  const port = freePort();
  const admin = new URL(proxy.adminUrl);
  await Deno.writeTextFile(
    `${dir}/prometheus.yml`,
    `global: {scrape_interval: 250ms, evaluation_interval: 250ms}\n` +
      `scrape_configs: [{job_name: goround, static_configs: [{targets: ["${admin.host}"]}]}]\n`,
  );
  const prometheus = new Deno.Command(PROMETHEUS, {
    args: [
      `--config.file=${dir}/prometheus.yml`,
      `--storage.tsdb.path=${dir}/data`,
      `--web.listen-address=127.0.0.1:${port}`,
    ],
    stdout: "null",
    stderr: "null",
  }).spawn();
  const base = `http://127.0.0.1:${port}`;
  let sending = true;
  const latencies: number[] = [];
  const traffic = (async () => {
    while (sending && latencies.length < 50_000) {
      const started = performance.now();
      const res = await get(proxy.url);
      if (res.status === 200) latencies.push(performance.now() - started);
    }
  })();
  try {
    await waitFor(async () => (await query(base, "up")).get("") === 1, {
      what: "Prometheus to scrape goround",
      timeout: 20_000,
    });
    await waitFor(async () => {
      const rate = await query(base, "sum(rate(goround_requests_total[2s]))");
      return (rate.get("") ?? 0) > 1;
    }, { what: "a request rate above 1/s", timeout: 15_000 });
    backends[0]!.child.kill("SIGKILL");
    await backends[0]!.exited;
    await waitFor(async () => {
      const up = await query(base, "goround_backend_up");
      return up.get(urls[0]!) === 0 && up.get(urls[1]!) === 1;
    }, { what: "goround_backend_up 0 for the killed backend, 1 for the other", timeout: 15_000 });
    const p99 = (await query(
      base,
      "histogram_quantile(0.99, sum by (le) (rate(goround_request_duration_seconds_bucket[5s])))",
    )).get("")!;
    const sorted = [...latencies].sort((a, b) => a - b);
    const measured = sorted[Math.floor(sorted.length * 0.99)]! / 1000;
    // The histogram sees goround's own time; the client adds its own: within a factor of 10.
    assert(p99 > 0 && p99 < measured * 10 + 0.0025, `p99 ${p99} s against ${measured} s measured`);
  } finally {
    sending = false;
    await traffic;
    prometheus.kill("SIGTERM");
    await prometheus.status;
    await proxy.stop();
    for (const backend of backends.slice(1)) backend.child.kill("SIGKILL");
    await Promise.all(backends.map((b) => b.exited));
    await Deno.remove(dir, { recursive: true });
  }
});
