/**
 * Restart and upgrade without losing a request: `--takeover` under load (both front ends), the
 * ways it is refused, and the drain on SIGTERM. Real goround processes, real signals, loopback.
 *
 * @module
 */

import { deepEqual, equal, match, ok as assert } from "node:assert/strict";
import { type Goround, runGoround, startGoround, waitFor } from "../support/helpers.ts";
import { type RestartLoadReport, runRestartLoad } from "../../tools/restart_load.ts";
import { makeCa, makeServerCert } from "../support/certs.ts";

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
  const dead = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const deadUrl = `http://127.0.0.1:${dead.addr.port}`;
  dead.close();
  let loading = true;
  const statuses: Record<number, number> = {};
  const load = (async () => {
    while (loading) {
      const res = await fetch(`${old.url}/`).catch(() => null);
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

Deno.test("POST /takeover: POST only, JSON, the admin token; a stray one, with no successor on the port, is refused 409 and goround keeps serving", async () => {
  const backend = quickBackend();
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
