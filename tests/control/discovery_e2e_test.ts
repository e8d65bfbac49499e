// The end-to-end test of DNS discovery through goround (--discover, --discover-nameserver,
// --discover-interval), against a real dnsmasq on loopback.
//
// Permissions: --allow-net --allow-read=. --allow-write=/tmp
//   --allow-run=<deno>,apt-get,/usr/sbin/dnsmasq
//
// What it assumes of the wiring (adjust the marked lines if the choices differ):
// - with --discover, the pool is the discovered set only (the default backends 8081-8083 are
//   not added), resolved before goround serves;
// - a change is applied with applyConfig(), so a backend that stays keeps its slot (id) and
//   its counters; one that comes back later gets a fresh slot;
// - a failed resolution is logged (on stdout or stderr) and changes nothing.

import { deepEqual, equal, ok as assert } from "node:assert/strict";
import { get, runGoround, startGoround, waitFor } from "../support/helpers.ts";
import { startDnsServer } from "../support/dns_server.ts";

// deno-lint-ignore no-explicit-any
type Json = any;

async function status(adminUrl: string): Promise<Json> {
  const res = await fetch(`${adminUrl}/status`);
  equal(res.status, 200);
  return await res.json();
}

/** Counts the answers of `n` requests through the proxy by body. */
async function spread(url: string, n: number): Promise<Record<string, number>> {
  const counts: Record<string, number> = {};
  for (let i = 0; i < n; i++) {
    const { status, text } = await get(url);
    equal(status, 200, text);
    counts[text] = (counts[text] ?? 0) + 1;
  }
  return counts;
}

Deno.test("--discover dns: the pool follows A records, keeps counters and survives a DNS outage", async (t) => {
  // Two backends on the same port, on two loopback addresses (Linux routes all of 127/8 to lo).
  const one = Deno.serve(
    { hostname: "127.0.0.1", port: 0, onListen: () => {} },
    () => new Response("Hello from 127.0.0.1"),
  );
  const port = one.addr.port;
  const two = Deno.serve(
    { hostname: "127.0.0.2", port, onListen: () => {} },
    () => new Response("Hello from 127.0.0.2"),
  );
  const a = `http://127.0.0.1:${port}`;
  const b = `http://127.0.0.2:${port}`;
  const dns = await startDnsServer({ hosts: "127.0.0.1 app.test\n127.0.0.2 app.test\n" });
  const proxy = await startGoround([
    "--discover",
    `dns:app.test:${port}`,
    "--discover-nameserver",
    `127.0.0.1:${dns.port}`,
    "--discover-interval",
    "200ms",
    "--health-interval",
    "200ms",
    "--workers",
    "2",
  ]);
  const urlsNow = async () => (await status(proxy.adminUrl)).backends.map((x: Json) => x.url);
  try {
    await t.step("both addresses are in the pool and share the requests", async () => {
      deepEqual(await urlsNow(), [a, b]); // ASSUMES: discovered set only, in sorted order
      // Round-robin over one shared counter: exactly half each, whichever worker took them.
      deepEqual(await spread(proxy.url, 6), {
        "Hello from 127.0.0.1": 3,
        "Hello from 127.0.0.2": 3,
      });
    });

    let kept: Json;
    await t.step(
      "an address removed from DNS leaves the pool; the other keeps its counters",
      async () => {
        kept = (await status(proxy.adminUrl)).backends.find((x: Json) => x.url === a);
        await dns.setHosts("127.0.0.1 app.test\n");
        await waitFor(async () => (await urlsNow()).length === 1, {
          timeout: 5000,
          what: "127.0.0.2 to leave the pool",
        });
        deepEqual(await urlsNow(), [a]);
        deepEqual(await spread(proxy.url, 4), { "Hello from 127.0.0.1": 4 });
        const now = (await status(proxy.adminUrl)).backends[0];
        equal(now.id, kept.id); // the same slot...
        equal(now.requests, kept.requests + 4); // ...and its counters went on, not from 0
        equal(now.state, "up");
        // ASSUMES: the change is logged with the removed URL.
        assert(proxy.stdout.concat(proxy.stderr).some((line) => line.includes(b)));
      },
    );

    await t.step("with the DNS server gone, the pool stays as it was", async () => {
      await dns.kill();
      await waitFor(
        () =>
          proxy.stderr.some((line) =>
            line.includes(`discovery failed`) && line.includes(`dns:app.test:${port}`)
          ),
        {
          what: "a failed lookup to be logged",
          timeout: 5000,
        },
      );
      deepEqual(await urlsNow(), [a]);
      deepEqual(await spread(proxy.url, 4), { "Hello from 127.0.0.1": 4 });
    });

    await t.step("once DNS is back, changes flow again", async () => {
      await dns.setHosts("127.0.0.1 app.test\n127.0.0.2 app.test\n");
      await dns.restart();
      await waitFor(async () => (await urlsNow()).length === 2, {
        timeout: 5000,
        what: "127.0.0.2 to rejoin",
      });
      deepEqual(await urlsNow(), [a, b]);
      const back = (await status(proxy.adminUrl)).backends;
      equal(back[0].id, kept.id);
      assert(back[0].requests >= kept.requests + 8);
      await waitFor(async () => (await status(proxy.adminUrl)).backends[1].state === "up", {
        what: "127.0.0.2 up",
      });
      const counts = await spread(proxy.url, 6);
      deepEqual(Object.keys(counts).sort(), ["Hello from 127.0.0.1", "Hello from 127.0.0.2"]);
    });
  } finally {
    await proxy.stop();
    await dns.close();
    await one.shutdown();
    await two.shutdown();
  }
});

Deno.test("--discover and --discover-nameserver reject bad values with exit status 2", async () => {
  // ASSUMES: the config layer prefixes the flag name to parseDiscoverySpec's / parseNameServer's
  // SyntaxError message, like every other flag.
  const bad = await runGoround(["--discover", "app.test:8080"]);
  equal(bad.code, 2);
  equal(
    bad.stderr.trim(),
    'goround: --discover: "app.test:8080" is not a discovery target: expected dns:NAME:PORT ' +
      "or srv:NAME",
  );
  const ns = await runGoround(["--discover", "dns:app.test:80", "--discover-nameserver", "dns"]);
  equal(ns.code, 2);
  equal(
    ns.stderr.trim(),
    'goround: --discover-nameserver: "dns" is not a name server: expected an IP address and ' +
      "optional port, like 127.0.0.1:5353 or [::1]:53",
  );
});

Deno.test("--discover srv: targets, ports and weights from SRV records make the pool", async () => {
  const a = Deno.serve(
    { hostname: "127.0.0.1", port: 0, onListen: () => {} },
    () => new Response("a"),
  );
  const b = Deno.serve(
    { hostname: "127.0.0.1", port: 0, onListen: () => {} },
    () => new Response("b"),
  );
  const dns = await startDnsServer({
    hosts: "127.0.0.1 app-a.test\n127.0.0.1 app-b.test\n",
    srv: [
      `_http._tcp.app.test,app-a.test,${a.addr.port},0,3`,
      `_http._tcp.app.test,app-b.test,${b.addr.port},0,1`,
    ],
  });
  const proxy = await startGoround([
    "--discover",
    "srv:_http._tcp.app.test",
    "--discover-nameserver",
    `${dns.nameServer.ipAddr}:${dns.nameServer.port}`,
    "--algorithm",
    "weighted",
    "--workers",
    "1",
  ]);
  try {
    const pool = (await status(proxy.adminUrl)).backends.map((x: Json) => x.url).sort();
    deepEqual(pool, [`http://127.0.0.1:${a.addr.port}`, `http://127.0.0.1:${b.addr.port}`].sort());
    deepEqual(await spread(proxy.url, 8), { a: 6, b: 2 }, "SRV weights 3:1");
  } finally {
    await proxy.stop();
    await dns.close();
    await Promise.all([a.shutdown(), b.shutdown()]);
  }
});

Deno.test("a pool with `discover` follows DNS on its own, beside a pool of fixed backends", async () => {
  const one = Deno.serve(
    { hostname: "127.0.0.1", port: 0, onListen: () => {} },
    () => new Response("dns 127.0.0.1"),
  );
  const port = one.addr.port;
  const two = Deno.serve(
    { hostname: "127.0.0.2", port, onListen: () => {} },
    () => new Response("dns 127.0.0.2"),
  );
  const fixed = Deno.serve(
    { hostname: "127.0.0.1", port: 0, onListen: () => {} },
    () => new Response("fixed"),
  );
  const dns = await startDnsServer({ hosts: "127.0.0.1 app.test\n" });
  const dir = await Deno.makeTempDir({ prefix: "goround-pool-dns-" });
  const config = `${dir}/goround.json`;
  await Deno.writeTextFile(
    config,
    JSON.stringify({
      "discover-nameserver": `127.0.0.1:${dns.port}`,
      "health-interval": "200ms",
      pools: {
        app: { discover: `dns:app.test:${port}`, "discover-interval": "200ms" },
        web: { backends: [`http://127.0.0.1:${fixed.addr.port}`] },
      },
      routes: [{ path: "/app/", pool: "app" }, { pool: "web" }],
    }),
  );
  const proxy = await startGoround(["--config", config, "--workers", "1"]);
  const appUrls = async () =>
    (await status(proxy.adminUrl)).backends.filter((b: Json) => b.pool === "app").map((b: Json) =>
      b.url
    );
  try {
    deepEqual(await appUrls(), [`http://127.0.0.1:${port}`]);
    deepEqual(await spread(`${proxy.url}/app/`, 2), { "dns 127.0.0.1": 2 });
    await dns.setHosts("127.0.0.1 app.test\n127.0.0.2 app.test\n");
    await waitFor(async () => (await appUrls()).length === 2, {
      timeout: 5000,
      what: "127.0.0.2 to join the app pool",
    });
    await waitFor(
      async () => (await status(proxy.adminUrl)).backends.every((b: Json) => b.state === "up"),
      {
        what: "the new backend up",
      },
    );
    deepEqual(await spread(`${proxy.url}/app/`, 4), { "dns 127.0.0.1": 2, "dns 127.0.0.2": 2 });
    deepEqual(await spread(`${proxy.url}/`, 2), { fixed: 2 }, "the other pool is untouched");
    assert(
      proxy.stderr.some((line) => line.includes("discovery (pool app): 2 backends")),
      proxy.stderr.join("\n"),
    );
  } finally {
    await proxy.stop();
    await dns.close();
    await Promise.all([one.shutdown(), two.shutdown(), fixed.shutdown()]);
  }
});
