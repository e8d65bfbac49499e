import { equal, ok as assert } from "node:assert/strict";
import { spawnBackend } from "../../dummy_servers.ts";
import { startGoround } from "../support/helpers.ts";

/** The large transfer in MiB each way (GOROUND_STREAM_MB overrides it). */
const MB = Number(Deno.env.get("GOROUND_STREAM_MB") ?? "1024");
/** The warm-up transfer that sets the baseline, MiB. */
const WARMUP_MB = 256;
/** goround's peak memory must stay far below one body's size: nothing is buffered whole. */
const PEAK_LIMIT_MB = 256;
/** How much the peak may grow from the warm-up to the large transfer (garbage collection lags
 * behind fast streams, so a little growth is noise, not buffering), MiB. */
const GROWTH_LIMIT_MB = 64;

/** Peak resident memory of a process tree's main process, MiB. (Deno refuses to read another
 * process's /proc entries without --allow-all, so `cat` reads it.) */
async function peakRssMb(pid: number): Promise<number> {
  const output = await new Deno.Command("cat", { args: [`/proc/${pid}/status`] }).output();
  const status = new TextDecoder().decode(output.stdout);
  return Number(/VmHWM:\s+(\d+) kB/.exec(status)![1]) / 1024;
}

/** Runs curl with bytes from `head -c` (a real client: a Deno client writing faster than the
 * server reads spins its own CPU, which would measure the client). */
async function curl(script: string): Promise<string> {
  const output = await new Deno.Command("sh", {
    args: ["-c", script],
    stdout: "piped",
    stderr: "piped",
  }).output();
  equal(output.code, 0, new TextDecoder().decode(output.stderr));
  return new TextDecoder().decode(output.stdout);
}

function download(url: string, bytes: number): Promise<string> {
  return curl(`curl -sS --fail -o /dev/null -w '%{size_download}' ${url}/_dummy/bytes/${bytes}`);
}

function upload(url: string, bytes: number, chunked: boolean): Promise<string> {
  const framing = chunked ? "" : `-H 'Transfer-Encoding:' -H 'Content-Length: ${bytes}'`;
  return curl(`head -c ${bytes} /dev/zero | curl -sS --fail -T - ${framing} ${url}/up`);
}

async function bodyBytes(port: number): Promise<number> {
  const res = await fetch(`http://127.0.0.1:${port}/_dummy/stats`);
  return (await res.json()).bodyBytes;
}

Deno.test(`streaming: ${MB} MiB down, up with Content-Length and up chunked, in flat memory`, async (t) => {
  const backend = await spawnBackend(0);
  const proxy = await startGoround([
    "--backend",
    `http://127.0.0.1:${backend.port}`,
    "--workers",
    "1",
  ]);
  const transfer = async (mb: number) => {
    const bytes = mb * 1024 * 1024;
    equal(await download(proxy.url, bytes), String(bytes));
    const before = await bodyBytes(backend.port);
    equal(await upload(proxy.url, bytes, false), `Hello from Server ${backend.port}`);
    equal(await upload(proxy.url, bytes, true), `Hello from Server ${backend.port}`);
    equal(await bodyBytes(backend.port) - before, 2 * bytes, "the backend received every byte");
  };
  try {
    await t.step(`warm-up: ${WARMUP_MB} MiB each way`, () => transfer(WARMUP_MB));
    const baseline = await peakRssMb(proxy.pid);
    await t.step(`${MB} MiB each way`, () => transfer(MB));
    const peak = await peakRssMb(proxy.pid);
    console.log(
      `goround peak RSS: ${baseline.toFixed(1)} MiB after ${3 * WARMUP_MB} MiB, ` +
        `${peak.toFixed(1)} MiB after ${3 * MB} MiB more`,
    );
    assert(peak < PEAK_LIMIT_MB, `peak ${peak.toFixed(1)} MiB`);
    assert(peak - baseline < GROWTH_LIMIT_MB, `grew by ${(peak - baseline).toFixed(1)} MiB`);
  } finally {
    await proxy.stop();
    backend.child.kill("SIGTERM");
    await backend.exited;
  }
});
