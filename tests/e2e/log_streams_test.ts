/**
 * stdout carries only the access log, so log tools read it as it is: `jq` a JSON log written
 * under traffic, with the banner and operational lines on stderr.
 */
import { equal, ok as assert } from "node:assert/strict";
import { ensureDebianPackage } from "../support/cdp.ts";
import { bannerAt, recordingBackend, startGoround, waitFor } from "../support/helpers.ts";
import { ENGINES } from "../../lib/config/config.ts";

const JQ = "/usr/bin/jq";

Deno.test("--access-log json: every stdout line is JSON that jq reads; the banner is on stderr", async () => {
  await ensureDebianPackage(JQ, "jq");
  const backend = recordingBackend(() => new Response("hi"));
  const proxy = await startGoround(["--backend", backend.url, "--access-log", "json"]);
  try {
    for (let i = 0; i < 20; i++) await (await fetch(`${proxy.url}/page/${i}`)).text();
  } finally {
    await proxy.stop();
    await backend.close();
  }
  assert(bannerAt(proxy.stderr) >= 0);
  const out = proxy.stdout.filter((line) => line !== "");
  equal(out.length, 20, `one line per request on stdout:\n${out.join("\n")}`);
  const jq = new Deno.Command(JQ, { args: ["-c", ".path"], stdin: "piped", stdout: "piped" })
    .spawn();
  const writer = jq.stdin.getWriter();
  await writer.write(new TextEncoder().encode(out.join("\n") + "\n"));
  await writer.close();
  const result = await jq.output();
  equal(result.code, 0, "jq parsed the whole log");
  const targets = new TextDecoder().decode(result.stdout).trim().split("\n");
  equal(targets[0], '"/page/0"');
  equal(targets.length, 20);
});

/** Sends raw bytes and reads the answer until the server closes or `ms` pass. */
async function raw(port: number, request: string, ms = 1000): Promise<string> {
  const conn = await Deno.connect({ hostname: "127.0.0.1", port });
  await conn.write(new TextEncoder().encode(request));
  let text = "";
  const buf = new Uint8Array(4096);
  const timer = setTimeout(() => conn.close(), ms);
  try {
    while (true) {
      const n = await conn.read(buf);
      if (n === null) break;
      text += new TextDecoder().decode(buf.subarray(0, n));
    }
  } catch {
    // Closed by the timer.
  } finally {
    clearTimeout(timer);
    try {
      conn.close();
    } catch {
      // Closed already.
    }
  }
  return text;
}

for (const engine of ENGINES) {
  Deno.test(`[${engine}] requests goround refuses are in the access log, with the reason`, async () => {
    const dead = Deno.listen({ hostname: "127.0.0.1", port: 0 });
    const deadUrl = `http://127.0.0.1:${dead.addr.port}`;
    dead.close();
    const proxy = await startGoround([
      "--engine",
      engine,
      "--backend",
      deadUrl,
      "--access-log",
      "json",
      "--workers",
      "1",
    ]);
    try {
      await raw(proxy.port, "CONNECT a.example:443 HTTP/1.1\r\nHost: a.example:443\r\n\r\n");
      await raw(proxy.port, "GET /x HTTP/1.1\r\nHost: a b\r\n\r\n");
      await raw(proxy.port, "GET /nobody HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
      const entries = () =>
        proxy.stdout.filter((line) => line.startsWith("{")).map((line) => JSON.parse(line));
      await waitFor(() => entries().length >= 3, { what: "three access-log lines" });
      const byStatus = Object.fromEntries(entries().map((e) => [e.status, e]));
      equal(byStatus[405]?.method, "CONNECT");
      equal(byStatus[405]?.reason, "CONNECT is not supported");
      assert(/host/i.test(byStatus[400]?.reason ?? ""), JSON.stringify(byStatus[400]));
      equal(byStatus[503]?.path, "/nobody");
      equal(byStatus[503]?.reason, "no backend available");
    } finally {
      await proxy.stop();
    }
  });

  Deno.test(`[${engine}] a WebSocket session is logged when it ends: bytes each way, close code`, async () => {
    const backend = recordingBackend((req) => {
      const { socket, response } = Deno.upgradeWebSocket(req);
      socket.onmessage = (event) => socket.send(event.data);
      return response;
    });
    const proxy = await startGoround([
      "--engine",
      engine,
      "--backend",
      backend.url,
      "--access-log",
      "json",
      "--workers",
      "1",
    ]);
    try {
      const ws = new WebSocket(`ws://127.0.0.1:${proxy.port}/chat`);
      await new Promise((resolve, reject) => {
        ws.onopen = resolve;
        ws.onerror = reject;
      });
      const echoed = new Promise((resolve) => (ws.onmessage = resolve));
      ws.send("x".repeat(1000));
      await echoed;
      const closed = new Promise((resolve) => (ws.onclose = resolve));
      ws.close(4000, "bye");
      await closed;
      const sessions = () =>
        proxy.stdout.filter((line) => line.startsWith("{")).map((line) => JSON.parse(line))
          .filter((entry) => entry.status === 101);
      await waitFor(() => sessions().length === 1, { what: "the session's line" });
      const [entry] = sessions();
      equal(entry.path, "/chat");
      equal(entry.ws_close_code, 4000);
      assert(entry.ws_bytes_in >= 1000 && entry.ws_bytes_out >= 1000, JSON.stringify(entry));
      equal(entry.backend, backend.url);
    } finally {
      await proxy.stop();
      await backend.close();
    }
  });
}

const GOACCESS = "/usr/bin/goaccess";

Deno.test("goaccess reads goround's combined log, appended fields and all", async () => {
  await ensureDebianPackage(GOACCESS, "goaccess");
  const backend = recordingBackend(() => new Response("hi"));
  const proxy = await startGoround(["--backend", backend.url, "--access-log", "combined"]);
  try {
    for (let i = 0; i < 30; i++) await (await fetch(`${proxy.url}/page/${i % 3}`)).text();
  } finally {
    await proxy.stop();
    await backend.close();
  }
  const dir = await Deno.makeTempDir();
  try {
    const log = `${dir}/access.log`;
    await Deno.writeTextFile(log, proxy.stdout.filter((l) => l !== "").join("\n") + "\n");
    const report = `${dir}/report.json`;
    const output = await new Deno.Command(GOACCESS, {
      args: [log, "--log-format=COMBINED", "--no-global-config", "-o", report],
      stdout: "piped",
      stderr: "piped",
    }).output();
    equal(output.code, 0, new TextDecoder().decode(output.stderr));
    const general = JSON.parse(await Deno.readTextFile(report)).general;
    equal(general.total_requests, 30);
    equal(general.failed_requests, 0, "every line parsed");
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("--log-format json: every stderr line is a JSON object with a level; a DOWN names its backend", async () => {
  const dead = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const deadUrl = `http://127.0.0.1:${dead.addr.port}`;
  dead.close();
  const live = recordingBackend(() => new Response("ok"));
  const proxy = await startGoround([
    "--backends",
    `${live.url},${deadUrl}`,
    "--log-format",
    "json",
    "--workers",
    "1",
  ]);
  try {
    await waitFor(() => proxy.stderr.some((line) => line.includes("DOWN")), {
      what: "the dead backend's DOWN line",
    });
  } finally {
    await proxy.stop();
    await live.close();
  }
  const entries = proxy.stderr.filter((line) => line !== "").map((line) => JSON.parse(line));
  for (const entry of entries) {
    assert(["info", "warn", "error"].includes(entry.level), JSON.stringify(entry));
    assert(typeof entry.time === "string" && typeof entry.msg === "string");
  }
  assert(entries.some((entry) => entry.msg.startsWith("Load Balancer started at")), "the banner");
  const down = entries.find((entry) => entry.msg.includes("DOWN"))!;
  equal(down.level, "warn");
  equal(down.backend, deadUrl);
  equal(down.reason, "connection refused");
});

Deno.test("the text log says each line's level after its time", async () => {
  const proxy = await startGoround(["--backend", "http://127.0.0.1:9", "--workers", "1"]);
  try {
    await waitFor(() => proxy.stderr.some((line) => line.includes("DOWN")), {
      what: "a DOWN line",
    });
  } finally {
    await proxy.stop();
  }
  const line = proxy.stderr.find((l) => l.includes("DOWN"))!;
  assert(/^\d{4}-\d\d-\d\dT[\d:.]+Z warn backend http:\/\/127\.0\.0\.1:9 DOWN: /.test(line), line);
});
