/**
 * SIGHUP, end to end: real goround processes, real signals, certificates made with openssl.
 * Each kind of setting is reloaded changed, unchanged and invalid; an invalid reload keeps the
 * old config running and logs exactly one line.
 */

import { deepEqual, equal, match, ok as assert } from "node:assert/strict";
import { createHmac } from "node:crypto";
import {
  get,
  type Goround,
  recordingBackend,
  runGoround,
  sendSignal,
  startGoround,
  waitFor,
} from "../support/helpers.ts";
import { measureReloads } from "../../tools/reload_load.ts";
import { startDnsServer } from "../support/dns_server.ts";
import {
  makeCa,
  makeServerCert,
  servedSerial,
  type TestCa,
  type TestCert,
} from "../support/certs.ts";

/** What a reload logged: the lines goround wrote to stderr from the signal on. */
async function reload(proxy: Goround): Promise<string> {
  const from = proxy.stderr.length;
  await sendSignal(proxy.pid, "HUP");
  let line = "";
  await waitFor(() => {
    line = proxy.stderr.slice(from).find((l) => /reloaded|reload failed/.test(l)) ?? "";
    return line !== "";
  }, { what: "the reload's log line", exited: proxy.exited });
  return line;
}

/** An HTTPS backend on loopback serving `cert`; `/healthz` is 200, everything else `text`. */
function httpsBackend(cert: TestCert, text = "tls backend"): Deno.HttpServer<Deno.NetAddr> {
  return Deno.serve(
    {
      hostname: "127.0.0.1",
      port: 0,
      cert: Deno.readTextFileSync(cert.cert),
      key: Deno.readTextFileSync(cert.key),
      onListen: () => {},
    },
    () => new Response(text),
  );
}

/** Status codes of `n` requests, each on a new connection. */
async function statuses(url: string, n: number, ca?: string): Promise<number[]> {
  const out: number[] = [];
  for (let i = 0; i < n; i++) {
    const client = Deno.createHttpClient({
      poolMaxIdlePerHost: 0,
      ...(ca ? { caCerts: [Deno.readTextFileSync(ca)] } : {}),
    });
    try {
      const res = await fetch(url, { client });
      await res.body?.cancel();
      out.push(res.status);
    } catch {
      out.push(0);
    } finally {
      client.close();
    }
  }
  return out;
}

interface BackendReport {
  url: string;
  state: string;
  checkPasses: number;
  checkFails: number;
}

async function backendsOf(proxy: Goround): Promise<BackendReport[]> {
  return (await (await fetch(`${proxy.adminUrl}/status`)).json()).backends;
}

/**
 * Keeps requesting while `probes` more health checks pass on every backend (or one fails), and
 * returns the statuses seen: the condition spans several health intervals, without a sleep.
 */
async function trafficOverProbes(
  proxy: Goround,
  probes: number,
  url = proxy.url,
): Promise<{ seen: number[]; backends: BackendReport[] }> {
  const start = await backendsOf(proxy);
  const seen: number[] = [];
  let backends = start;
  await waitFor(async () => {
    seen.push(...await statuses(url, 2));
    backends = await backendsOf(proxy);
    return backends.some((b) => b.checkFails > 0) ||
      backends.every((b, i) => b.checkPasses >= start[i]!.checkPasses + probes);
  }, { timeout: 15_000, what: `${probes} health checks after the reload` });
  return { seen, backends };
}

interface Setup {
  dir: string;
  file: string;
  ca: TestCa;
  write: (settings: Record<string, unknown>) => Promise<void>;
  cleanup: () => Promise<void>;
}

async function setup(): Promise<Setup> {
  const dir = await Deno.makeTempDir({ prefix: "goround-reload-" });
  const file = `${dir}/goround.json`;
  const ca = await makeCa(dir, "ca");
  return {
    dir,
    file,
    ca,
    write: (settings) => Deno.writeTextFile(file, JSON.stringify(settings)),
    cleanup: () => Deno.remove(dir, { recursive: true }),
  };
}

Deno.test("SIGHUP, unchanged: an https:// backend checked with --backend-ca and --health-path stays up and keeps answering 200", async () => {
  const s = await setup();
  const backendCert = await makeServerCert(s.dir, { name: "backend", ca: s.ca, serial: "B0" });
  const backend = httpsBackend(backendCert);
  await s.write({ backends: [`https://localhost:${backend.addr.port}`] });
  const proxy = await startGoround([
    "--config",
    s.file,
    "--backend-ca",
    s.ca.cert,
    "--health-path",
    "/healthz",
    "--health-interval",
    "100ms",
    "--workers",
    "2",
    "--access-log",
    "off",
  ]);
  try {
    deepEqual(await statuses(proxy.url, 4), [200, 200, 200, 200]);
    const line = await reload(proxy);
    match(line, /reloaded .*goround\.json: 1 backend; no change$/);
    const { seen, backends } = await trafficOverProbes(proxy, 5);
    deepEqual(seen.filter((status) => status !== 200), [], "every request after the reload: 200");
    deepEqual(backends.map((b) => [b.state, b.checkFails]), [["up", 0]]);
    assert(seen.length >= 10, `${seen.length} requests`);
    assert(!proxy.stderr.some((l) => l.includes("DOWN")), proxy.stderr.join("\n"));
  } finally {
    await proxy.stop();
    await backend.shutdown();
    await s.cleanup();
  }
});

Deno.test("SIGHUP, --backend-ca changed on disk: the health checker and every worker's client use the new CA", async () => {
  const s = await setup();
  const other = await makeCa(s.dir, "other-ca");
  const backendCert = await makeServerCert(s.dir, { name: "backend", ca: s.ca, serial: "B1" });
  const backend = httpsBackend(backendCert);
  const caFile = `${s.dir}/backend-ca.pem`;
  await Deno.copyFile(other.cert, caFile); // the wrong CA: the backend's certificate is refused
  await s.write({
    backends: [`https://localhost:${backend.addr.port}`],
    "backend-ca": caFile,
    "health-path": "/healthz",
    "health-interval": "100ms",
  });
  const proxy = await startGoround(["--config", s.file, "--workers", "2", "--access-log", "off"]);
  try {
    // Refused by the CA: 503 when the backend is down, 502 when panic mode tries it anyway.
    const before = await statuses(proxy.url, 2);
    assert(before.every((status) => status === 502 || status === 503), `${before}`);
    await Deno.copyFile(s.ca.cert, caFile);
    match(await reload(proxy), /reloaded .*: 1 backend; changed: backend-ca$/);
    await waitFor(async () => (await backendsOf(proxy))[0]!.state === "up", {
      what: "the backend UP with the new CA",
    });
    // New connections: the kernel spreads them over both workers.
    deepEqual(await statuses(proxy.url, 8), Array(8).fill(200));
  } finally {
    await proxy.stop();
    await backend.shutdown();
    await s.cleanup();
  }
});

Deno.test("SIGHUP, --backend-ca invalid or gone: the old CA stays in use, and one line says why", async (t) => {
  const s = await setup();
  const backendCert = await makeServerCert(s.dir, { name: "backend", ca: s.ca, serial: "B2" });
  const backend = httpsBackend(backendCert);
  const caFile = `${s.dir}/backend-ca.pem`;
  await Deno.copyFile(s.ca.cert, caFile);
  await s.write({
    backends: [`https://localhost:${backend.addr.port}`],
    "backend-ca": caFile,
    "health-path": "/healthz",
    "health-interval": "100ms",
  });
  const proxy = await startGoround(["--config", s.file, "--workers", "2", "--access-log", "off"]);
  const cases: [string, () => Promise<void>, RegExp][] = [
    [
      "not a certificate",
      () =>
        Deno.writeTextFile(
          caFile,
          "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
        ),
      /reload failed, keeping the running config: --backend-ca: ".*backend-ca\.pem" was refused \(BadEncoding\): expected PEM CA certificates$/,
    ],
    [
      "no PEM at all",
      () => Deno.writeTextFile(caFile, "hello"),
      /reload failed, keeping the running config: --backend-ca: ".*backend-ca\.pem" is not PEM/,
    ],
    [
      "removed",
      () => Deno.remove(caFile),
      /reload failed, keeping the running config: --backend-ca: ".*backend-ca\.pem" cannot be read \(No such file or directory/,
    ],
  ];
  try {
    for (const [name, spoil, expected] of cases) {
      await t.step(name, async () => {
        await spoil();
        const from = proxy.stderr.length;
        match(await reload(proxy), expected);
        const { seen, backends } = await trafficOverProbes(proxy, 3);
        deepEqual(seen.filter((status) => status !== 200), []);
        deepEqual(backends.map((b) => [b.state, b.checkFails]), [["up", 0]]);
        equal(proxy.stderr.length - from, 1, proxy.stderr.slice(from).join("\n"));
      });
    }
  } finally {
    await proxy.stop();
    await backend.shutdown();
    await s.cleanup();
  }
});

Deno.test("SIGHUP, --tls-cert/--tls-key changed on disk: new connections get the new certificate; one opened before finishes its request", async (t) => {
  const s = await setup();
  const first = await makeServerCert(s.dir, { name: "first", ca: s.ca, serial: "A1" });
  const second = await makeServerCert(s.dir, { name: "second", ca: s.ca, serial: "A2" });
  const stray = await makeServerCert(s.dir, { name: "stray", ca: s.ca, serial: "A3" });
  const [cert, key] = [`${s.dir}/served.pem`, `${s.dir}/served.key`];
  await Deno.copyFile(first.cert, cert);
  await Deno.copyFile(first.key, key);
  let release = () => {};
  let arrived = false;
  const held = new Promise<void>((resolve) => (release = resolve));
  const backend = Deno.serve(
    { hostname: "127.0.0.1", port: 0, onListen: () => {} },
    async (req) => {
      if (new URL(req.url).pathname === "/slow") {
        arrived = true;
        await held;
      }
      return new Response(`answered ${new URL(req.url).pathname}`);
    },
  );
  // No --config: a SIGHUP still re-reads the files the flags name.
  const proxy = await startGoround([
    "--backend",
    `http://127.0.0.1:${backend.addr.port}`,
    "--tls-cert",
    cert,
    "--tls-key",
    key,
    "--workers",
    "2",
    "--access-log",
    "off",
  ]);
  const ca = Deno.readTextFileSync(s.ca.cert);
  let early: Deno.TlsConn | null = null;
  try {
    await t.step(
      "the new serial on new connections, the old connection's request answered",
      async () => {
        equal(await servedSerial(proxy.port), "A1");
        early = await Deno.connectTls({ hostname: "localhost", port: proxy.port, caCerts: [ca] });
        await early.write(new TextEncoder().encode(
          "GET /slow HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
        ));
        await waitFor(() => arrived, { what: "the slow request at the backend" });
        await Deno.copyFile(second.cert, cert);
        await Deno.copyFile(second.key, key);
        match(await reload(proxy), /reloaded: 1 backend; changed: tls-cert, tls-key$/);
        for (let i = 0; i < 6; i++) equal(await servedSerial(proxy.port), "A2", `connection ${i}`);
        deepEqual(await statuses(`https://localhost:${proxy.port}/`, 4, s.ca.cert), [
          200,
          200,
          200,
          200,
        ]);
        release();
        const answer = new TextDecoder().decode(await readAll(early));
        match(answer, /^HTTP\/1\.1 200 OK\r\n/);
        match(answer, /answered \/slow$/);
      },
    );
    await t.step("a key that does not match: the served certificate stays, one line", async () => {
      await Deno.copyFile(stray.key, key);
      const from = proxy.stderr.length;
      match(
        await reload(proxy),
        /reload failed, keeping the running config: --tls-key: ".*served\.key" is not the key of --tls-cert ".*served\.pem": expected the certificate's private key$/,
      );
      for (let i = 0; i < 4; i++) equal(await servedSerial(proxy.port), "A2");
      deepEqual(await statuses(`https://localhost:${proxy.port}/`, 2, s.ca.cert), [200, 200]);
      deepEqual(proxy.stderr.slice(from).length, 1, proxy.stderr.slice(from).join("\n"));
    });
  } finally {
    release();
    try {
      (early as Deno.TlsConn | null)?.close();
    } catch {
      // Closed by the server after its answer.
    }
    await proxy.stop();
    await backend.shutdown();
    await s.cleanup();
  }
});

/** Reads until the peer closes, or for at most 10 s. */
async function readAll(conn: Deno.Conn): Promise<Uint8Array> {
  const timer = setTimeout(() => conn.close(), 10_000);
  try {
    return await readToEnd(conn);
  } finally {
    clearTimeout(timer);
  }
}

async function readToEnd(conn: Deno.Conn): Promise<Uint8Array> {
  const chunks: Uint8Array[] = [];
  const buf = new Uint8Array(16 * 1024);
  while (true) {
    const n = await conn.read(buf).catch(() => null);
    if (n === null) break;
    chunks.push(buf.slice(0, n));
  }
  const all = new Uint8Array(chunks.reduce((sum, c) => sum + c.length, 0));
  let at = 0;
  for (const chunk of chunks) {
    all.set(chunk, at);
    at += chunk.length;
  }
  return all;
}

Deno.test("SIGHUP, access-log changed: the new format from the next request on; an invalid one is refused", async () => {
  const s = await setup();
  const backend = Deno.serve(
    { hostname: "127.0.0.1", port: 0, onListen: () => {} },
    () => new Response("ok"),
  );
  const settings = {
    backends: [`http://127.0.0.1:${backend.addr.port}`],
    "access-log": "combined",
  };
  await s.write(settings);
  const proxy = await startGoround(["--config", s.file, "--workers", "2"]);
  const logged = (path: string) => proxy.stdout.find((line) => line.includes(path));
  const request = async (path: string) =>
    deepEqual(await statuses(`${proxy.url}${path}`, 1), [200]);
  try {
    await request("/before");
    await waitFor(() => logged("/before") !== undefined, { what: "the combined line" });
    match(logged("/before")!, /^127\.0\.0\.1 - - \[.*\] "GET \/before HTTP\/1\.1" 200 2 /);

    await s.write({ ...settings, "access-log": "json" });
    match(await reload(proxy), /reloaded .*: 1 backend; changed: access-log$/);
    await request("/after");
    await waitFor(() => logged("/after") !== undefined, { what: "the JSON line" });
    equal(JSON.parse(logged("/after")!).path, "/after");

    await s.write({ ...settings, "access-log": "off" });
    // Two identical lines within a second are written as one, then "(repeated 1 times)".
    match(await reload(proxy), /changed: access-log( \(repeated \d+ times\))?$/);
    await request("/unlogged");
    await s.write({ ...settings, "access-log": "json" });
    // Two identical lines within a second are written as one, then "(repeated 1 times)".
    match(await reload(proxy), /changed: access-log( \(repeated \d+ times\))?$/);
    await request("/logged-again");
    await waitFor(() => logged("/logged-again") !== undefined, { what: "the JSON line again" });
    equal(logged("/unlogged"), undefined, "nothing logged while the log was off");

    await s.write({ ...settings, "access-log": "xml" });
    const from = proxy.stderr.length;
    match(
      await reload(proxy),
      /reload failed, keeping the running config: .*goround\.json: access-log: "xml" is not an access log format: expected one of combined, json, off$/,
    );
    await request("/still-json");
    await waitFor(() => logged("/still-json") !== undefined, {
      what: "a JSON line after the bad reload",
    });
    equal(JSON.parse(logged("/still-json")!).path, "/still-json");
    equal(proxy.stderr.length - from, 1, proxy.stderr.slice(from).join("\n"));
  } finally {
    await proxy.stop();
    await backend.shutdown();
    await s.cleanup();
  }
});

Deno.test("SIGHUP, a setting that waits for a restart: named in the reload's line, the running value kept", async () => {
  const s = await setup();
  const backend = Deno.serve(
    { hostname: "127.0.0.1", port: 0, onListen: () => {} },
    () => new Response("ok"),
  );
  const settings = {
    backends: [`http://127.0.0.1:${backend.addr.port}`],
    workers: 1,
    "max-fails": 3,
  };
  await s.write(settings);
  const proxy = await startGoround(["--config", s.file, "--access-log", "off"]);
  try {
    await s.write({ ...settings, workers: 3, "max-fails": 5 });
    match(
      await reload(proxy),
      /reloaded .*: 1 backend; changed: max-fails; changed, takes effect on restart: workers$/,
    );
    const status = await (await fetch(`${proxy.adminUrl}/status`)).json();
    equal(status.workers, 1);
    deepEqual(await statuses(proxy.url, 2), [200, 200]);
  } finally {
    await proxy.stop();
    await backend.shutdown();
    await s.cleanup();
  }
});

Deno.test("SIGHUP, admin-token changed: the admin API takes the new token at once", async () => {
  const s = await setup();
  const backend = Deno.serve(
    { hostname: "127.0.0.1", port: 0, onListen: () => {} },
    () => new Response("ok"),
  );
  const settings = { backends: [`http://127.0.0.1:${backend.addr.port}`], "admin-token": "first" };
  await s.write(settings);
  const proxy = await startGoround(["--config", s.file, "--workers", "1", "--access-log", "off"]);
  const statusWith = async (token: string) => {
    const res = await fetch(`${proxy.adminUrl}/status`, {
      headers: { authorization: `Bearer ${token}` },
    });
    await res.body?.cancel();
    return res.status;
  };
  try {
    deepEqual([await statusWith("first"), await statusWith("second")], [200, 401]);
    await s.write({ ...settings, "admin-token": "second" });
    match(await reload(proxy), /changed: admin-token$/);
    deepEqual([await statusWith("first"), await statusWith("second")], [401, 200]);
  } finally {
    await proxy.stop();
    await backend.shutdown();
    await s.cleanup();
  }
});

Deno.test("SIGHUP with --discover: the pool stays what DNS says; a new name takes effect", async () => {
  const one = Deno.serve(
    { hostname: "127.0.0.1", port: 0, onListen: () => {} },
    () => new Response("one"),
  );
  const port = one.addr.port;
  const two = Deno.serve(
    { hostname: "127.0.0.2", port, onListen: () => {} },
    () => new Response("two"),
  );
  const dns = await startDnsServer({ hosts: "127.0.0.1 app.test\n127.0.0.2 other.test\n" });
  const s = await setup();
  const settings = {
    discover: `dns:app.test:${port}`,
    "discover-nameserver": `127.0.0.1:${dns.port}`,
    "discover-interval": "200ms",
  };
  await s.write(settings);
  const proxy = await startGoround(["--config", s.file, "--workers", "2", "--access-log", "off"]);
  const answers = async () => {
    const seen = new Set<string>();
    for (let i = 0; i < 4; i++) seen.add((await get(proxy.url)).text);
    return [...seen];
  };
  try {
    deepEqual(await answers(), ["one"]);
    match(await reload(proxy), /reloaded .*: 1 backend; no change$/);
    deepEqual((await backendsOf(proxy)).map((b) => b.url), [`http://127.0.0.1:${port}`]);
    deepEqual(await answers(), ["one"]);

    await s.write({ ...settings, discover: `dns:other.test:${port}` });
    match(await reload(proxy), /changed: discover$/);
    await waitFor(
      async () => (await backendsOf(proxy)).map((b) => b.url).join() === `http://127.0.0.2:${port}`,
      { what: "the pool from the new name" },
    );
    deepEqual(await answers(), ["two"]);
  } finally {
    await proxy.stop();
    await dns.close();
    await Promise.all([one.shutdown(), two.shutdown()]);
    await s.cleanup();
  }
});

Deno.test("reload_load.ts: certificate swaps under load never refuse a connection", async () => {
  const result = await measureReloads({
    front: "tls",
    reloads: 3,
    every: 100,
    clients: 2,
    workers: 1,
    keepAlive: false,
  });
  assert(result.ok > 0, JSON.stringify(result));
  equal(result.failures.refused ?? 0, 0, JSON.stringify(result));
});

Deno.test("SIGHUP turning sticky cookies on without a key: cookies are signed with a random key, not an empty one", async () => {
  const s = await setup();
  const backend = Deno.serve(
    { hostname: "127.0.0.1", port: 0, onListen: () => {} },
    () => new Response("ok"),
  );
  const settings = { backends: [`http://127.0.0.1:${backend.addr.port}`] };
  await s.write(settings);
  const proxy = await startGoround(["--config", s.file, "--workers", "1", "--access-log", "off"]);
  try {
    await s.write({ ...settings, sticky: "cookie" });
    match(await reload(proxy), /changed: sticky$/);
    const { headers } = await get(proxy.url);
    const [id, mac] = /goround_sticky=([0-9a-f]{8})\.([0-9a-f]{32})/.exec(
      headers.get("set-cookie") ?? "",
    )!.slice(1);
    const unkeyed = createHmac("sha256", "").update(id!).digest("hex").slice(0, 32);
    assert(mac !== unkeyed, "the cookie is not signed with an empty key");
  } finally {
    await proxy.stop();
    await backend.shutdown();
    await s.cleanup();
  }
});

Deno.test("a --tls-key that is not the certificate's key: exit 2 at start, one line", async () => {
  const s = await setup();
  const one = await makeServerCert(s.dir, { name: "one", ca: s.ca, serial: "C1" });
  const two = await makeServerCert(s.dir, { name: "two", ca: s.ca, serial: "C2" });
  try {
    const { code, stderr } = await runGoround(["--tls-cert", one.cert, "--tls-key", two.key]);
    equal(code, 2);
    match(
      stderr,
      /^goround: --tls-key: ".*two\.key" is not the key of --tls-cert ".*one\.pem": expected the certificate's private key\n$/,
    );
  } finally {
    await s.cleanup();
  }
});

Deno.test("SIGHUP twice with the same outcome: each reload gets its own line at once", async () => {
  const s = await setup();
  const backend = recordingBackend();
  await s.write({ backends: [backend.url] });
  const proxy = await startGoround(["--config", s.file, "--access-log", "off"]);
  try {
    // Not held back as a repeat of the line a moment ago: the operator reads it right away.
    for (let i = 0; i < 2; i++) match(await reload(proxy), /reloaded[^()]*$/);
    await s.write({ backends: ["ftp://127.0.0.1:1"] });
    for (let i = 0; i < 2; i++) match(await reload(proxy), /reload failed.*ftp:[^()]*$/);
  } finally {
    await proxy.stop();
    await backend.close();
    await s.cleanup();
  }
});
