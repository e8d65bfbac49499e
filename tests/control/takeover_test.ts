/**
 * Restart and upgrade without losing a request: `--takeover` under load (both front ends), the
 * ways it is refused, and the drain on SIGTERM. Real goround processes, real signals, loopback.
 *
 * @module
 */

import { deepEqual, equal, match, ok as assert } from "node:assert/strict";
import { type Goround, runGoround, sendSignal, startGoround, waitFor } from "../support/helpers.ts";
import { type RestartLoadReport, runRestartLoad } from "../../tools/restart_load.ts";
import { makeCa, makeServerCert } from "../support/certs.ts";
import { requestHandover } from "../../lib/control/takeover.ts";

/** A backend that answers at once. */
function quickBackend(): { url: string; close: () => Promise<void> } {
  const server = Deno.serve(
    { hostname: "127.0.0.1", port: 0, onListen: () => {} },
    () => new Response("ok"),
  );
  return { url: `http://127.0.0.1:${server.addr.port}`, close: () => server.shutdown() };
}

/** `net.ipv4.tcp_migrate_req`: whether connections queued on a closing listener move to
 * another one of its SO_REUSEPORT group (1) or are reset (0, the default). */
async function migrateReq(): Promise<string> {
  const { stdout } = await new Deno.Command("cat", {
    args: ["/proc/sys/net/ipv4/tcp_migrate_req"],
    stderr: "null",
  }).output().catch(() => ({ stdout: new Uint8Array() }));
  return new TextDecoder().decode(stdout).trim() || "absent";
}

/**
 * The failures left once those goround cannot prevent are taken out, all on connections that
 * had carried no request yet:
 * - with tcp_migrate_req off, a connection the kernel queued on the old listener but the
 *   process had not accepted yet is reset when that listener closes;
 * - `Deno.serve` (`--engine deno`) closes its listener only together with every connection
 *   not in a request, so one accepted in the instant before, its request not yet read, is cut.
 * Never a request on a connection that had carried one: that is the drain's promise.
 */
function avoidable(
  report: RestartLoadReport,
  options: { migrate: string; engine: string },
): Record<string, number> {
  const rest = { ...report.failures };
  if (options.migrate !== "1" || options.engine === "deno") {
    delete rest["lost on a new connection: reset"];
  }
  if (options.engine === "deno") delete rest["lost on a new connection: closed"];
  return rest;
}

/** Requests lost on connections that carried none before. */
function lostNew(report: RestartLoadReport): number {
  return Object.entries(report.failures)
    .filter(([kind]) => kind.startsWith("lost on a new connection"))
    .reduce((sum, [, n]) => sum + n, 0);
}

function portOf(url: string): number {
  return Number(new URL(url).port);
}

async function killQuietly(proc: Goround | null): Promise<void> {
  if (proc) await proc.stop();
}

for (const engine of ["goround", "deno"]) {
  const promise = engine === "goround"
    ? "no request fails"
    : "no request on a kept-alive connection fails";
  Deno.test(`--takeover (engine ${engine}) under load: ${promise}, the old process exits 0, the new one serves and owns the admin port`, async () => {
    const backend = quickBackend();
    const migrate = await migrateReq();
    const common = [
      "--engine",
      engine,
      "--backend",
      backend.url,
      "--workers",
      "2",
      "--access-log",
      "off",
      "--drain-timeout",
      "5s",
    ];
    let old: Goround | null = null;
    let next: Goround | null = null;
    try {
      old = await startGoround(common);
      const port = old.port;
      const admin = `127.0.0.1:${portOf(old.adminUrl)}`;
      let oldExited: Deno.CommandStatus | null = null;
      old.exited.then((status) => (oldExited = status));
      let servedAfter = 0;
      let phase = "before";
      const load = runRestartLoad({
        port,
        keepAlive: 8,
        fresh: 2,
        paced: 4,
        // Until the new process has served a while on its own.
        until: () => phase === "done",
        maxDuration: 30_000,
      });
      // Load on the old process first.
      await new Promise((resolve) => setTimeout(resolve, 500));
      next = await startGoround([
        ...common,
        "--listen",
        `127.0.0.1:${port}`,
        "--admin",
        admin,
        "--takeover",
      ]);
      await waitFor(() => oldExited !== null, { timeout: 10_000, what: "the old process to exit" });
      phase = "after";
      // The new process alone serves the port now.
      const until = Date.now() + 500;
      await waitFor(() => Date.now() > until, { timeout: 2000 });
      phase = "done";
      const report = await load;
      console.log(`tcp_migrate_req ${migrate}: ${JSON.stringify(report)}`);
      servedAfter = report.keptAlive + report.fresh;

      deepEqual(
        avoidable(report, { migrate, engine }),
        {},
        `requests failed across the takeover: ${JSON.stringify(report)}`,
      );
      const total = report.keptAlive + report.fresh;
      assert(lostNew(report) < total / 100, `${lostNew(report)} of ${total} new connections cut`);
      equal(report.refused, 0, "the port was never closed");
      assert(report.told > 0, "the old process told its kept-alive connections to close");
      assert(servedAfter > 100, `only ${servedAfter} requests answered`);
      equal(oldExited!.code, 0);
      assert(old.stderr.some((l) => /takeover by pid \d+: draining 2 workers/.test(l)));
      assert(
        next.stderr.some((l) => /takeover: pid \d+ hands over/.test(l)),
        next.stderr.join("\n"),
      );
      // The admin port is the new process's.
      equal(next.adminUrl, `http://${admin}`);
      const status = await (await fetch(`${next.adminUrl}/status`)).json();
      equal(status.pid, next.pid);
      equal(await (await fetch(`${next.url}/`)).text(), "ok");
    } finally {
      await killQuietly(next);
      await killQuietly(old);
      await backend.close();
    }
  });
}

Deno.test("--takeover is refused with exit 2 and one line: --admin off, nothing to take over, another --listen", async (t) => {
  await t.step("--admin off", async () => {
    const { code, stdout, stderr } = await runGoround([
      "--listen",
      "127.0.0.1:8000",
      "--admin",
      "off",
      "--takeover",
    ]);
    equal(code, 2);
    equal(stdout, "");
    equal(
      stderr.trim(),
      "goround: --takeover: --admin is off: expected the admin address of the goround to take over from",
    );
  });

  await t.step("nothing answers at --admin, and something else holds --listen", async () => {
    // A port that was free a moment ago: nothing listens there.
    const probe = Deno.listen({ hostname: "127.0.0.1", port: 0 });
    const free = probe.addr.port;
    probe.close();
    const holder = Deno.listen({ hostname: "127.0.0.1", port: 0 });
    try {
      const { code, stdout, stderr } = await runGoround([
        "--listen",
        `127.0.0.1:${holder.addr.port}`,
        "--admin",
        `127.0.0.1:${free}`,
        "--takeover",
      ]);
      equal(code, 2);
      equal(stdout, "");
      equal(stderr.trim().split("\n").length, 1, stderr);
      match(
        stderr.trim(),
        new RegExp(
          `^goround: --takeover: nothing answers at http://127\\.0\\.0\\.1:${free} \\(connection refused\\): expected the admin API \\(--admin\\) of the running goround$`,
        ),
      );
    } finally {
      holder.close();
    }
  });

  await t.step("port 0", async () => {
    const { code, stderr } = await runGoround([
      "--listen",
      "127.0.0.1:0",
      "--admin",
      "127.0.0.1:9999",
      "--takeover",
    ]);
    equal(code, 2);
    equal(
      stderr.trim(),
      "goround: --takeover: --listen port is 0: expected the port the running goround uses",
    );
  });

  await t.step("a running goround on another --listen, and a wrong --admin-token", async () => {
    const backend = quickBackend();
    const old = await startGoround([
      "--backend",
      backend.url,
      "--workers",
      "1",
      "--admin-token",
      "sesame",
    ]);
    try {
      const admin = `127.0.0.1:${portOf(old.adminUrl)}`;
      const other = await runGoround([
        "--listen",
        `127.0.0.1:${old.port + 1}`,
        "--admin",
        admin,
        "--admin-token",
        "sesame",
        "--takeover",
      ]);
      equal(other.code, 2);
      equal(
        other.stderr.trim(),
        `goround: --takeover: the goround at http://${admin} serves "127.0.0.1:${old.port}", not "127.0.0.1:${
          old.port + 1
        }": expected the same --listen`,
      );
      const wrong = await runGoround([
        "--listen",
        `127.0.0.1:${old.port}`,
        "--admin",
        admin,
        "--admin-token",
        "open",
        "--takeover",
      ]);
      equal(wrong.code, 2);
      match(
        wrong.stderr.trim(),
        /^goround: --takeover: the goround at \S+ refused the admin token/,
      );
      // The running goround was not disturbed.
      equal(await (await fetch(old.url)).text(), "ok");
      assert(!old.stderr.some((l) => l.includes("draining")));
    } finally {
      await old.stop();
      await backend.close();
    }
  });
});

Deno.test("--takeover with no usable backend of its own exits 2 and the running goround keeps serving every request", async () => {
  const backend = quickBackend();
  const old = await startGoround(["--backend", backend.url, "--workers", "1"]);
  // A new connection per request: the kernel spreads them over every listener on the port.
  const client = Deno.createHttpClient({ poolMaxIdlePerHost: 0 });
  const dead = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const deadUrl = `http://127.0.0.1:${dead.addr.port}`;
  dead.close();
  let loading = true;
  const statuses: Record<number, number> = {};
  const load = (async () => {
    while (loading) {
      const res = await fetch(`${old.url}/`, { client }).catch(() => null);
      const status = res?.status ?? 0;
      await res?.body?.cancel();
      statuses[status] = (statuses[status] ?? 0) + 1;
    }
  })();
  try {
    // A typo in --backends: nothing listens there.
    const next = await runGoround([
      "--listen",
      `127.0.0.1:${old.port}`,
      "--admin",
      `127.0.0.1:${portOf(old.adminUrl)}`,
      "--backend",
      deadUrl,
      "--health-interval",
      "200ms",
      "--health-timeout",
      "100ms",
      "--takeover",
    ]);
    equal(next.code, 2, next.stderr);
    const last = next.stderr.trim().split("\n").at(-1)!;
    match(
      last,
      /^goround: --takeover: this goround has no usable backend \(1 down; .*refused.*\): the running goround keeps serving; expected a backend that passes its health check$/i,
    );
    loading = false;
    await load;
    deepEqual(Object.keys(statuses), ["200"], JSON.stringify(statuses));
    assert(!old.stderr.some((l) => l.includes("draining")), "the running goround did not drain");
    equal(await (await fetch(`${old.url}/`)).text(), "ok");
  } finally {
    loading = false;
    await load;
    client.close();
    await old.stop();
    await backend.close();
  }
});

for (const engine of ["goround", "deno"]) {
  Deno.test(`SIGTERM (engine ${engine}) under keep-alive load loses no request`, async () => {
    const backend = quickBackend();
    const proxy = await startGoround([
      "--engine",
      engine,
      "--backend",
      backend.url,
      "--workers",
      "2",
      "--access-log",
      "off",
      "--drain-timeout",
      "5s",
    ]);
    try {
      let exited: Deno.CommandStatus | null = null;
      proxy.exited.then((status) => (exited = status));
      let answered = 0;
      const load = runRestartLoad({
        port: proxy.port,
        keepAlive: 12,
        fresh: 0,
        paced: 4,
        until: () => exited !== null,
        maxDuration: 20_000,
      });
      await new Promise((resolve) => setTimeout(resolve, 500));
      const stopped = proxy.stop();
      const report = await load;
      answered = report.keptAlive;
      console.log(JSON.stringify(report));
      // With no successor, a connection opened as the last listener closes fails like a refused
      // one (only Deno.serve keeps accepting through the grace, see avoidable()); so does one
      // reset while it waited in the closing listener's queue: nothing was sent on it.
      const { ["connect: reset"]: _resetAtConnect, ...lost } = avoidable(report, {
        migrate: "0",
        engine,
      });
      deepEqual(lost, {}, "requests on kept-alive connections were lost");
      assert(answered > 100, `only ${answered} requests answered`);
      assert(report.told > 0, "kept-alive connections were told to close");
      equal((await stopped).code, 0);
    } finally {
      await proxy.stop();
      await backend.close();
    }
  });
}

Deno.test("POST /takeover: POST only, JSON, the admin token; a stray one, with no successor on the port or its own instance, is refused 409 and goround keeps serving", async () => {
  // The backend sees goround's instance id in Via, as any backend (or header echo) would.
  let via = "";
  const server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen: () => {} }, (req) => {
    via = req.headers.get("via") ?? "";
    return new Response("ok");
  });
  const backend = { url: `http://127.0.0.1:${server.addr.port}`, close: () => server.shutdown() };
  const proxy = await startGoround([
    "--backend",
    backend.url,
    "--workers",
    "1",
    "--admin-token",
    "sesame",
  ]);
  try {
    const url = `${proxy.adminUrl}/takeover`;
    const auth = { authorization: "Bearer sesame" };
    const json = { ...auth, "content-type": "application/json" };
    const answer = async (init: RequestInit) => {
      const res = await fetch(url, init);
      return { status: res.status, text: await res.text() };
    };
    // The admin guard's rules come first: a change must be JSON (see docs/operations.md).
    equal((await answer({ method: "POST", headers: auth, body: "{}" })).status, 415);
    const noToken = { "content-type": "application/json" };
    equal((await answer({ method: "POST", headers: noToken, body: "{}" })).status, 401);
    equal((await answer({ headers: auth })).status, 405);
    equal((await answer({ method: "POST", headers: json, body: "[1" })).status, 400);
    equal((await answer({ method: "POST", headers: json, body: '{"pid": "x"}' })).status, 400);
    // Without the successor's instance id there is nothing to check that it serves the port.
    equal((await answer({ method: "POST", headers: json, body: '{"pid": 4242}' })).status, 400);
    const stray = await answer({
      method: "POST",
      headers: json,
      body: '{"pid": 4242, "instance": "deadbeef"}',
    });
    equal(stray.status, 409);
    match(stray.text, /no goround with instance deadbeef answers on port \d+/);
    // Its own instance, learnt from a backend: its own loop answer must not pass for a successor.
    equal(await (await fetch(`${proxy.url}/`)).text(), "ok");
    const own = /goround-([0-9a-f]{8})/.exec(via)?.[1];
    assert(own, via);
    const forged = await answer({
      method: "POST",
      headers: json,
      body: JSON.stringify({ pid: 4243, instance: own }),
    });
    equal(forged.status, 409, forged.text);
    match(forged.text, /this goround/);
    assert(!proxy.stderr.some((l) => l.includes("draining")), "nothing was handed over");
    await waitFor(() => proxy.stderr.some((l) => /takeover by pid 4242 refused/.test(l)), {
      what: "the refusal's log line",
    });
    // Still serving.
    equal(await (await fetch(`${proxy.url}/`)).text(), "ok");
    const status = await fetch(`${proxy.adminUrl}/status`, { headers: auth });
    equal(status.status, 200);
    equal((await status.json()).pid, proxy.pid);
  } finally {
    await proxy.stop();
    await backend.close();
  }
});

Deno.test("--takeover over TLS: the old process finds its successor through the TLS port and hands over", async () => {
  const dir = await Deno.makeTempDir({ prefix: "goround-takeover-tls-" });
  const backend = quickBackend();
  let old: Goround | null = null;
  let next: Goround | null = null;
  try {
    const ca = await makeCa(dir, "ca");
    const served = await makeServerCert(dir, { name: "server", ca, serial: "7a01" });
    const common = ["--tls-cert", served.cert, "--tls-key", served.key, "--backend", backend.url];
    old = await startGoround([...common, "--workers", "1"], { readable: dir });
    let oldExited: Deno.CommandStatus | null = null;
    old.exited.then((status) => (oldExited = status));
    next = await startGoround([
      ...common,
      "--listen",
      `127.0.0.1:${old.port}`,
      "--admin",
      `127.0.0.1:${portOf(old.adminUrl)}`,
      "--takeover",
    ], { readable: dir });
    await waitFor(() => oldExited !== null, { timeout: 10_000, what: "the old process to exit" });
    equal(oldExited!.code, 0);
    assert(next.stderr.some((l) => /takeover: pid \d+ hands over/.test(l)), next.stderr.join("\n"));
    equal((await (await fetch(`${next.adminUrl}/status`)).json()).pid, next.pid);
  } finally {
    await killQuietly(next);
    await killQuietly(old);
    await backend.close();
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("--takeover with nothing running and the port free starts afresh: the same command works for the first start", async () => {
  const backend = quickBackend();
  const ports = [0, 0].map(() => {
    const probe = Deno.listen({ hostname: "127.0.0.1", port: 0 });
    const port = probe.addr.port;
    probe.close();
    return port;
  });
  let proxy: Goround | null = null;
  try {
    proxy = await startGoround([
      "--listen",
      `127.0.0.1:${ports[0]}`,
      "--admin",
      `127.0.0.1:${ports[1]}`,
      "--backend",
      backend.url,
      "--takeover",
    ]);
    assert(
      proxy.stderr.some((l) =>
        l.includes(`takeover: nothing runs at --admin 127.0.0.1:${ports[1]}: starting afresh`)
      ),
      proxy.stderr.join("\n"),
    );
    equal(await (await fetch(`${proxy.url}/`)).text(), "ok");
    equal(proxy.adminUrl, `http://127.0.0.1:${ports[1]}`);
  } finally {
    await killQuietly(proxy);
    await backend.close();
  }
});

/** Listening TCP sockets on `port` (IPv4), from `/proc/net/tcp`: one per worker of each process. */
async function listeners(port: number): Promise<number> {
  const { stdout } = await new Deno.Command("cat", { args: ["/proc/net/tcp"] }).output();
  const local = `:${port.toString(16).toUpperCase().padStart(4, "0")}`;
  return new TextDecoder().decode(stdout).split("\n")
    .filter((line) => line.trim().split(/\s+/)[1]?.endsWith(local) && line.includes(" 0A "))
    .length;
}

/** A backend that answers `ok`, and echoes WebSocket messages (`echo …`), noting each close. */
function echoBackend(): {
  server: Deno.HttpServer<Deno.NetAddr>;
  backend: string;
  backendCloses: { code: number; reason: string }[];
} {
  const backendCloses: { code: number; reason: string }[] = [];
  const server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen: () => {} }, (req) => {
    if (req.headers.get("upgrade") !== "websocket") return new Response("ok");
    const { socket, response } = Deno.upgradeWebSocket(req);
    socket.onmessage = (event) => socket.send(`echo ${event.data}`);
    socket.onclose = (event) => backendCloses.push({ code: event.code, reason: event.reason });
    return response;
  });
  return { server, backend: `http://127.0.0.1:${server.addr.port}`, backendCloses };
}

/** A WebSocket opened, with its messages and its close as promises. */
async function openSocket(url: string): Promise<{
  ws: WebSocket;
  echo: (text: string) => Promise<unknown>;
  closed: Promise<{ code: number; reason: string }>;
}> {
  const ws = new WebSocket(url);
  const closed = new Promise<{ code: number; reason: string }>((resolve) =>
    ws.onclose = (event) => resolve({ code: event.code, reason: event.reason })
  );
  await new Promise((resolve, reject) => {
    ws.onopen = resolve;
    ws.onerror = () => reject(new Error(`${url} did not open`));
  });
  const echo = (text: string) => {
    const answer = new Promise((resolve, reject) => {
      const early = (event: CloseEvent) => reject(new Error(`closed first (${event.code})`));
      if (ws.readyState > WebSocket.OPEN) reject(new Error("closed already"));
      ws.addEventListener("close", early, { once: true });
      ws.onmessage = (event) => {
        ws.removeEventListener("close", early);
        resolve(event.data);
      };
    });
    ws.send(text);
    return answer;
  };
  return { ws, echo, closed };
}

Deno.test("--takeover: a WebSocket on the old process keeps echoing, then gets 1001 at its drain deadline; new connections reach the new process", async () => {
  const { server, backend, backendCloses } = echoBackend();
  const common = ["--backend", backend, "--workers", "1", "--access-log", "json"];
  let old: Goround | null = null;
  let next: Goround | null = null;
  let later: Awaited<ReturnType<typeof openSocket>> | null = null;
  try {
    old = await startGoround([...common, "--drain-timeout", "3s"]);
    const port = old.port;
    const early = await openSocket(`ws://127.0.0.1:${port}/`);
    equal(await early.echo("before"), "echo before");
    equal(await listeners(port), 1);
    next = await startGoround([
      ...common,
      "--listen",
      `127.0.0.1:${port}`,
      "--admin",
      `127.0.0.1:${portOf(old.adminUrl)}`,
      "--takeover",
    ]);
    const handedOver = Date.now();
    const oldExited = old.exited;
    // The old process closes its listener: every new connection is the new process's.
    await waitFor(async () => (await listeners(port)) === 1, { what: "the old listener to close" });
    equal(await early.echo("during"), "echo during", "the old session is still served");
    later = await openSocket(`ws://127.0.0.1:${port}/`);
    equal(await later.echo("new"), "echo new");
    equal(await (await fetch(`http://127.0.0.1:${port}/`)).text(), "ok");
    const plain = (proc: Goround) =>
      proc.stdout.map((line) => JSON.parse(line)).filter((e) => e.status === 200).length;
    await waitFor(() => plain(next!) === 1, { what: "the new process's access log line" });
    equal(plain(old), 0, "the old process served no new connection");

    // At the old process's drain deadline: 1001 to the client and the backend, one line.
    deepEqual(await early.closed, { code: 1001, reason: "going away" });
    const at = Date.now() - handedOver;
    assert(at >= 2500 && at < 6000, `closed ${at} ms after the handover (drain timeout 3 s)`);
    equal((await oldExited).code, 0);
    await waitFor(() => backendCloses.length === 1, { what: "the backend's close" });
    deepEqual(backendCloses, [{ code: 1001, reason: "going away" }]);
    const deadline = old.stderr.filter((l) => l.includes("websocket: drain deadline"));
    equal(deadline.length, 1, old.stderr.join("\n"));
    assert(!old.stderr.some((l) => l.includes("went away")), old.stderr.join("\n"));
    const session = old.stdout.map((line) => JSON.parse(line)).find((e) => e.status === 101);
    equal(session?.ws_close_code, 1001);
    // The new process's session outlives the old process.
    equal(await later.echo("after"), "echo after");
    later.ws.close(1000, "done");
    deepEqual(await later.closed, { code: 1000, reason: "done" });
    later = null;
  } finally {
    later?.ws.close();
    await later?.closed;
    await killQuietly(next);
    await killQuietly(old);
    await server.shutdown();
  }
});

Deno.test("requestHandover(): a running goround that is stopping already (its admin gone, or 409 already stopping) lets this one serve alone", async () => {
  const listen = { hostname: "127.0.0.1", port: 1 };
  const stopping = Deno.serve(
    { hostname: "127.0.0.1", port: 0, onListen: () => {} },
    () => Response.json({ error: "already stopping" }, { status: 409 }),
  );
  const refusing = Deno.serve(
    { hostname: "127.0.0.1", port: 0, onListen: () => {} },
    () => Response.json({ error: "no goround with instance 1 answers" }, { status: 409 }),
  );
  const gone = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const gonePort = gone.addr.port;
  gone.close();
  try {
    const at = (port: number) => ({ listen, admin: { hostname: "127.0.0.1", port }, token: "" });
    deepEqual(await requestHandover(at(stopping.addr.port), "0badcafe"), {
      pid: null,
      drainTimeout: null,
    });
    deepEqual(await requestHandover(at(gonePort), "0badcafe"), { pid: null, drainTimeout: null });
    let refused = "";
    await requestHandover(at(refusing.addr.port), "0badcafe").catch((e) => (refused = e.message));
    match(refused, /answered HTTP 409 .*no goround/);
  } finally {
    await Promise.all([stopping.shutdown(), refusing.shutdown()]);
  }
});

Deno.test("--takeover with routes that would answer its probe themselves (a /.well-known/ route, host routes only) still hands over", async () => {
  const dir = await Deno.makeTempDir({ prefix: "goround-takeover-routes-" });
  const backend = quickBackend();
  const file = `${dir}/goround.json`;
  await Deno.writeTextFile(
    file,
    JSON.stringify({
      pools: { web: { backends: [backend.url] } },
      routes: [
        { name: "acme", path: "/.well-known/", respond: { status: 404, body: "none here" } },
        { name: "site", host: "a.test", pool: "web" },
      ],
    }),
  );
  let old: Goround | null = null;
  let next: Goround | null = null;
  try {
    old = await startGoround(["--config", file, "--workers", "1"], { readable: dir });
    let oldExited: Deno.CommandStatus | null = null;
    old.exited.then((status) => (oldExited = status));
    next = await startGoround([
      "--config",
      file,
      "--listen",
      `127.0.0.1:${old.port}`,
      "--admin",
      `127.0.0.1:${portOf(old.adminUrl)}`,
      "--takeover",
    ], { readable: dir });
    await waitFor(() => oldExited !== null, { timeout: 10_000, what: "the old process to exit" });
    equal(oldExited!.code, 0, old.stderr.join("\n"));
    assert(next.stderr.some((l) => /takeover: pid \d+ hands over/.test(l)), next.stderr.join("\n"));
    // Anyone else asking that path gets what the routes say.
    const res = await fetch(`${next.url}/.well-known/goround-takeover`);
    deepEqual([res.status, await res.text()], [404, "none here"]);
  } finally {
    await killQuietly(next);
    await killQuietly(old);
    await backend.close();
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("--takeover of a goround draining on SIGTERM (--engine deno, its listener held open by a WebSocket) serves the port alone", async () => {
  const { server, backend } = echoBackend();
  const common = ["--engine", "deno", "--backend", backend, "--workers", "1"];
  let old: Goround | null = null;
  let next: Goround | null = null;
  let session: Awaited<ReturnType<typeof openSocket>> | null = null;
  try {
    old = await startGoround([...common, "--drain-timeout", "6s"]);
    session = await openSocket(`ws://127.0.0.1:${old.port}/`);
    equal(await session.echo("before"), "echo before");
    await sendSignal(old.pid, "TERM");
    await waitFor(() => old!.stderr.some((l) => l.includes("SIGTERM: draining")), {
      what: "the old process's drain",
    });
    // Its admin API answers through the drain: the new process finds a goround stopping, not an
    // unknown holder of the port. It waits for the admin port however long the other's drain
    // (6 s), not its own (200 ms) plus 5 s.
    next = await startGoround([
      ...common,
      "--drain-timeout",
      "200ms",
      "--listen",
      `127.0.0.1:${old.port}`,
      "--admin",
      `127.0.0.1:${portOf(old.adminUrl)}`,
      "--takeover",
    ]);
    assert(
      next.stderr.some((l) => l.includes("is stopping already: this one serves the port alone")),
      next.stderr.join("\n"),
    );
    equal((await old.exited).code, 0);
    equal(await (await fetch(`${next.url}/`)).text(), "ok");
    await waitFor(
      async () => (await fetch(`${next!.adminUrl}/status`).then((r) => r.json())).pid === next!.pid,
      {
        what: "the new process's admin API",
      },
    );
  } finally {
    session?.ws.close();
    await session?.closed;
    await killQuietly(next);
    await killQuietly(old);
    await server.shutdown();
  }
});

Deno.test("--takeover: a SIGTERM while the new process asks waits for the answer; the old one agreed, so the new one keeps serving", async () => {
  const backend = quickBackend();
  const probe = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = probe.addr.port;
  probe.close();
  const lines: string[] = [];
  let asked = false;
  // Stands in for the running goround's admin API: it agrees only once the SIGTERM it sends to
  // the asking process has been taken in.
  const old = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen: () => {} }, async (req) => {
    if (req.method === "GET") return Response.json({ listen: `127.0.0.1:${port}`, pid: 1 });
    const { pid } = await req.json();
    await sendSignal(pid, "TERM");
    await waitFor(() => lines.some((l) => l.includes("SIGTERM while asking")), {
      what: "the SIGTERM to be held",
    });
    asked = true;
    return Response.json({ pid: 1, drainTimeout: 200 }, { status: 202 });
  });
  let next: Goround | null = null;
  try {
    const starting = startGoround([
      "--backend",
      backend.url,
      "--listen",
      `127.0.0.1:${port}`,
      "--admin",
      `127.0.0.1:${old.addr.port}`,
      "--takeover",
    ], { stderr: lines });
    starting.catch(() => {}); // awaited below, once the handover is done
    await waitFor(() => asked, { what: "the handover" });
    await old.shutdown(); // lets go of the admin port, as a goround handing over does
    next = await starting;
    assert(
      lines.some((l) =>
        l.includes("takeover: SIGTERM came while asking, and the running goround lets go")
      ),
      lines.join("\n"),
    );
    equal(await (await fetch(`${next.url}/`)).text(), "ok");
    equal((await next.stop()).code, 0);
    assert(lines.some((l) => l.includes("SIGTERM: draining")), lines.join("\n"));
  } finally {
    await killQuietly(next);
    await old.shutdown().catch(() => {});
    await backend.close();
  }
});

Deno.test("SIGTERM while the workers start (one already serves) drains them: its request is answered", async () => {
  const slow = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen: () => {} }, async () => {
    await new Promise((resolve) => setTimeout(resolve, 300));
    return new Response("finished");
  });
  let reached = 0;
  const backend = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen: () => {} }, (req) => {
    reached++;
    return fetch(`http://127.0.0.1:${slow.addr.port}/`, { signal: req.signal });
  });
  const probe = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = probe.addr.port;
  probe.close();
  const lines: string[] = [];
  let pid = 0;
  const starting = startGoround([
    "--backend",
    `http://127.0.0.1:${backend.addr.port}`,
    "--listen",
    `127.0.0.1:${port}`,
    "--workers",
    "4",
  ], { stderr: lines, spawned: (child) => (pid = child) });
  starting.catch(() => {});
  let conn: Deno.Conn | null = null;
  try {
    // The first worker listens while the others are still starting.
    await waitFor(async () => (await listeners(port)) > 0, { what: "the first worker's listener" });
    conn = await Deno.connect({ hostname: "127.0.0.1", port });
    await conn.write(new TextEncoder().encode("GET / HTTP/1.1\r\nHost: x\r\n\r\n"));
    await waitFor(() => reached === 1, { what: "the request at the backend" });
    await sendSignal(pid, "TERM");
    const buf = new Uint8Array(4096);
    let text = "";
    while (true) {
      const n = await conn.read(buf);
      if (n === null) break;
      text += new TextDecoder().decode(buf.subarray(0, n));
      if (text.includes("finished")) break;
    }
    match(text, /^HTTP\/1\.1 200[\s\S]*finished$/, `${text}\n${lines.join("\n")}`);
  } finally {
    conn?.close();
    const proc = await starting.catch(() => null);
    await killQuietly(proc);
    await slow.shutdown();
    await backend.shutdown();
  }
});

Deno.test("SIGTERM: an admin request whose body never comes does not hold the drain past its timeout", async () => {
  const backend = quickBackend();
  const proxy = await startGoround(["--backend", backend.url, "--drain-timeout", "500ms"]);
  const admin = await Deno.connect({ hostname: "127.0.0.1", port: portOf(proxy.adminUrl) });
  try {
    await admin.write(
      new TextEncoder().encode(
        `POST /backends HTTP/1.1\r\nHost: 127.0.0.1:${portOf(proxy.adminUrl)}\r\n` +
          "Content-Type: application/json\r\nContent-Length: 200\r\n\r\n{",
      ),
    );
    await sendSignal(proxy.pid, "TERM");
    let exited: Deno.CommandStatus | null = null;
    proxy.exited.then((status) => (exited = status));
    // The drain (500 ms) and the admin API's close (1 s) at most, while the client holds on.
    await waitFor(() => exited !== null, { timeout: 5000, what: "goround to exit" });
    equal(exited!.code, 0);
  } finally {
    admin.close();
    await proxy.stop();
    await backend.close();
  }
});
