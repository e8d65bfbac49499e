import { deepEqual, equal, ok as assert, rejects, throws } from "node:assert/strict";
import type { Backend } from "../../lib/config/config.ts";
import { parseBackend } from "../../lib/config/values.ts";
import {
  backendAt,
  DiscoveryError,
  normaliseBackends,
  resolveBackends,
  sameBackends,
  startDiscovery,
  weightFromSrv,
} from "../../lib/control/discovery.ts";
import {
  formatDiscoverySpec,
  parseDiscoverySpec,
  parseNameServer,
} from "../../lib/config/discovery_spec.ts";
import { waitFor } from "../support/helpers.ts";
import { ValidationError } from "../../lib/errors.ts";
import { type DnsServer, startDnsServer } from "../support/dns_server.ts";

// Every test here runs against a real dnsmasq on 127.0.0.1 (tests/support/dns_server.ts), which
// it installs with apt-get when missing. Run with --allow-net --allow-read=. --allow-write=/tmp
// --allow-run=apt-get,/usr/sbin/dnsmasq.

function urls(backends: readonly Backend[]): string[] {
  return backends.map((b) => b.url);
}

function freePort(): number {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = listener.addr.port;
  listener.close();
  return port;
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** A fake "apply": records every set `onChange` gets and every `onError` message. */
function recorder() {
  const changes: string[][] = [];
  const weights: number[][] = [];
  const errors: string[] = [];
  return {
    changes,
    weights,
    errors,
    onChange: (backends: Backend[]) => {
      changes.push(urls(backends));
      weights.push(backends.map((b) => b.weight));
    },
    onError: (message: string) => {
      errors.push(message);
    },
  };
}

async function withDns(
  records: { hosts: string; srv?: readonly string[] },
  body: (dns: DnsServer) => Promise<void>,
): Promise<void> {
  const dns = await startDnsServer(records);
  try {
    await body(dns);
  } finally {
    await dns.close();
  }
}

Deno.test("parseDiscoverySpec() and parseNameServer() read the flags' values", async (t) => {
  await t.step("dns:NAME:PORT and srv:NAME", () => {
    deepEqual(parseDiscoverySpec("dns:app.internal:8080"), {
      kind: "dns",
      name: "app.internal",
      port: 8080,
    });
    deepEqual(parseDiscoverySpec(" srv:_http._tcp.app.service.consul "), {
      kind: "srv",
      name: "_http._tcp.app.service.consul",
    });
    deepEqual(parseDiscoverySpec("dns:app.test.:1"), { kind: "dns", name: "app.test.", port: 1 });
    for (const text of ["dns:app.internal:8080", "srv:_http._tcp.app.test"]) {
      equal(formatDiscoverySpec(parseDiscoverySpec(text)), text);
    }
  });
  await t.step("anything else is a ValidationError that quotes the value", () => {
    for (
      const text of [
        "",
        "app.test:8080",
        "dns:app.test",
        "dns:app.test:",
        "dns:app.test:0",
        "dns:app.test:65536",
        "dns:app.test:http",
        "dns::8080",
        "dns:-app.test:80",
        "dns:a..b:80",
        "dns:a b:80",
        "srv:",
        "srv:_http._tcp.app.test:80",
        "http://app.test:8080",
        "a".repeat(64).replace(/^/, "dns:") + ":80",
      ]
    ) {
      throws(() => parseDiscoverySpec(text), {
        name: "ValidationError",
        message: `"${text}" is not a discovery target: expected dns:NAME:PORT or srv:NAME`,
      });
    }
  });
  await t.step("name servers: an IP address and an optional port (53)", () => {
    deepEqual(parseNameServer("127.0.0.1:5353"), { ipAddr: "127.0.0.1", port: 5353 });
    deepEqual(parseNameServer("10.0.0.2"), { ipAddr: "10.0.0.2", port: 53 });
    deepEqual(parseNameServer("[::1]:5353"), { ipAddr: "::1", port: 5353 });
    deepEqual(parseNameServer("[fd00::2]"), { ipAddr: "fd00::2", port: 53 });
    deepEqual(parseNameServer("::1"), { ipAddr: "::1", port: 53 });
    for (
      const text of [
        "",
        "localhost:53",
        "dns.example",
        "256.0.0.1",
        "1.2.3",
        "127.0.0.1:0",
        "127.0.0.1:65536",
        "127.0.0.1:",
        "[127.0.0.1]:53",
        "[::1]x",
        "[::g]:53",
      ]
    ) {
      throws(() => parseNameServer(text), {
        name: "ValidationError",
        message: `"${text}" is not a name server: expected an IP address and optional port, ` +
          `like 127.0.0.1:5353 or [::1]:53`,
      });
    }
  });
  await t.step("backends are shaped as parseBackend() makes them", () => {
    deepEqual(backendAt("10.0.0.5", 8080), parseBackend("http://10.0.0.5:8080"));
    deepEqual(backendAt("fd00:0::5", 80, 7), parseBackend("http://[fd00::5]:80,weight=7"));
    const v6 = backendAt("fd00:0::5", 80, 7);
    deepEqual([v6.url, v6.hostname, v6.port, v6.weight], ["http://[fd00::5]", "fd00::5", 80, 7]);
  });
  await t.step("SRV weights become 1..1000; duplicates merge; order is by URL", () => {
    deepEqual([0, 1, 5, 1000, 1001, 65535].map(weightFromSrv), [1, 1, 5, 1000, 1000, 1000]);
    const merged = normaliseBackends([
      backendAt("10.0.0.2", 80, 900),
      backendAt("10.0.0.1", 80, 2),
      backendAt("10.0.0.2", 80, 300),
    ]);
    deepEqual(merged.map((b) => [b.url, b.weight]), [
      ["http://10.0.0.1", 2],
      ["http://10.0.0.2", 1000],
    ]);
    assert(sameBackends(merged, normaliseBackends([...merged].reverse())));
    assert(!sameBackends(merged, [merged[0]!, { ...merged[1]!, weight: 999 }]));
    assert(!sameBackends(merged, merged.slice(1)));
  });
});

Deno.test("resolveBackends() turns A and AAAA records into sorted backends", async (t) => {
  const hosts = [
    "127.0.0.2 app.test",
    "::1 app.test",
    "127.0.0.1 app.test",
    "127.0.0.9 v4only.test",
    "::9 v6only.test",
    "",
  ].join("\n");
  await withDns({ hosts }, async (dns) => {
    const options = { nameServer: dns.nameServer };
    await t.step("every address of the name, on the port, by URL", async () => {
      const backends = await resolveBackends(parseDiscoverySpec("dns:app.test:8080"), options);
      deepEqual(
        backends,
        ["http://127.0.0.1:8080", "http://127.0.0.2:8080", "http://[::1]:8080"].map(parseBackend),
      );
      deepEqual(backends.map((b) => [b.hostname, b.port]), [
        ["127.0.0.1", 8080],
        ["127.0.0.2", 8080],
        ["::1", 8080],
      ]);
    });
    await t.step("the same answer gives the same list, whatever order it came in", async () => {
      // dnsmasq rotates the order of the A records from one answer to the next.
      const first = await resolveBackends({ kind: "dns", name: "app.test", port: 80 }, options);
      for (let i = 0; i < 4; i++) {
        deepEqual(
          await resolveBackends({ kind: "dns", name: "app.test", port: 80 }, options),
          first,
        );
      }
    });
    await t.step("a name with only A, or only AAAA, records is fine", async () => {
      deepEqual(urls(await resolveBackends(parseDiscoverySpec("dns:v4only.test:81"), options)), [
        "http://127.0.0.9:81",
      ]);
      deepEqual(urls(await resolveBackends(parseDiscoverySpec("dns:v6only.test:81"), options)), [
        "http://[::9]:81",
      ]);
    });
    await t.step("a name without addresses is a DiscoveryError", async () => {
      await rejects(resolveBackends(parseDiscoverySpec("dns:nope.test:80"), options), {
        name: "DiscoveryError",
        message: "dns:nope.test:80: no A or AAAA records with an address",
      });
    });
  });
  await t.step("a server that does not answer is a DiscoveryError after the timeout", async () => {
    const started = Date.now();
    const error = await resolveBackends(parseDiscoverySpec("dns:app.test:80"), {
      nameServer: { ipAddr: "127.0.0.1", port: freePort() },
      timeout: 300,
    }).catch((e) => e);
    assert(error instanceof DiscoveryError, String(error));
    assert(
      /^dns:app\.test:80: A{1,4} lookup of app\.test failed: timed out after 300 ms$/.test(
        error.message,
      ),
      error.message,
    );
    assert(Date.now() - started < 2000);
  });
});

Deno.test("resolveBackends() follows SRV records to addresses, ports and weights", async (t) => {
  const hosts = [
    "127.0.0.3 app-a.test",
    "127.0.0.3 alias-a.test",
    "127.0.0.4 app-b.test",
    "::1 app-b.test",
    "127.0.0.5 app-c.test",
    "127.0.0.6 backup.test",
    "",
  ].join("\n");
  const srv = [
    "_http._tcp.app.test,app-a.test,9001,0,5",
    "_http._tcp.app.test,app-b.test,9002,0,0", // weight 0: 1
    "_http._tcp.app.test,app-c.test,9003,0,5000", // more than goround takes: 1000
    "_http._tcp.app.test,gone.test,9005,0,3", // a target without addresses adds nothing
    "_http._tcp.app.test,backup.test,9004,1,10", // a higher priority value: a fallback, left out
    "_dup._tcp.app.test,app-a.test,9001,0,5",
    "_dup._tcp.app.test,alias-a.test,9001,0,10", // the same address and port: weights add up
  ];
  await withDns({ hosts, srv }, async (dns) => {
    const options = { nameServer: dns.nameServer };
    const pairs = async (name: string) =>
      (await resolveBackends({ kind: "srv", name }, options)).map((b) => [b.url, b.weight]);
    await t.step("each target's addresses, on the record's port, with its weight", async () => {
      deepEqual(await pairs("_http._tcp.app.test"), [
        ["http://127.0.0.3:9001", 5],
        ["http://127.0.0.4:9002", 1],
        ["http://127.0.0.5:9003", 1000],
        ["http://[::1]:9002", 1],
      ]);
      const [first] = await resolveBackends(parseDiscoverySpec("srv:_http._tcp.app.test"), options);
      deepEqual(first, parseBackend("http://127.0.0.3:9001,weight=5"));
    });
    await t.step("two records for one address and port make one backend", async () => {
      deepEqual(await pairs("_dup._tcp.app.test"), [["http://127.0.0.3:9001", 15]]);
    });
    await t.step("no SRV records is a DiscoveryError", async () => {
      await rejects(resolveBackends(parseDiscoverySpec("srv:_none._tcp.app.test"), options), {
        name: "DiscoveryError",
        message: "srv:_none._tcp.app.test: no SRV records with an address",
      });
    });
    await t.step("changed SRV records (dnsmasq restarted on its port) are seen", async () => {
      await dns.setSrv(["_http._tcp.app.test,app-a.test,9011,0,2"]);
      deepEqual(await pairs("_http._tcp.app.test"), [["http://127.0.0.3:9011", 2]]);
    });
  });
});

Deno.test("startDiscovery() reports the first set, then each change exactly once", async () => {
  await withDns({ hosts: "127.0.0.1 app.test\n127.0.0.2 app.test\n" }, async (dns) => {
    const seen = recorder();
    const discovery = startDiscovery(parseDiscoverySpec("dns:app.test:8080"), {
      interval: 100,
      nameServer: dns.nameServer,
      onChange: seen.onChange,
      onError: seen.onError,
    });
    try {
      await waitFor(() => seen.changes.length === 1, { what: "the first set" });
      deepEqual(seen.changes, [["http://127.0.0.1:8080", "http://127.0.0.2:8080"]]);
      // Several resolutions (by the timer and by hand) of an unchanged answer: no call.
      await sleep(350);
      await discovery.refreshNow();
      await discovery.refreshNow();
      equal(seen.changes.length, 1);

      // One address added, one removed.
      await dns.setHosts("127.0.0.1 app.test\n127.0.0.3 app.test\n");
      await waitFor(() => seen.changes.length === 2, { what: "the changed set" });
      deepEqual(seen.changes[1], ["http://127.0.0.1:8080", "http://127.0.0.3:8080"]);
      await sleep(350);
      equal(seen.changes.length, 2);

      // An IPv6 address joins.
      await dns.setHosts("127.0.0.1 app.test\n127.0.0.3 app.test\n::1 app.test\n");
      await waitFor(() => seen.changes.length === 3, { what: "the set with ::1" });
      deepEqual(seen.changes[2], [
        "http://127.0.0.1:8080",
        "http://127.0.0.3:8080",
        "http://[::1]:8080",
      ]);
      await sleep(350);
      equal(seen.changes.length, 3);
      deepEqual(seen.errors, []);
    } finally {
      await discovery.stop();
    }
  });
});

Deno.test("startDiscovery() reports SRV weight changes", async () => {
  const hosts = "127.0.0.3 app-a.test\n127.0.0.4 app-b.test\n";
  const srv = [
    "_http._tcp.app.test,app-a.test,9001,0,5",
    "_http._tcp.app.test,app-b.test,9002,0,1",
  ];
  await withDns({ hosts, srv }, async (dns) => {
    const seen = recorder();
    const discovery = startDiscovery(parseDiscoverySpec("srv:_http._tcp.app.test"), {
      interval: 100,
      nameServer: dns.nameServer,
      onChange: seen.onChange,
      onError: seen.onError,
    });
    try {
      await waitFor(() => seen.changes.length === 1, { what: "the first set" });
      deepEqual(seen.weights, [[5, 1]]);
      // Only a weight changes: that is a change too. (dnsmasq restarts to take new SRV
      // records; a resolution that meets the gap fails and keeps the set.)
      await dns.setSrv([
        "_http._tcp.app.test,app-a.test,9001,0,5",
        "_http._tcp.app.test,app-b.test,9002,0,3",
      ]);
      await waitFor(() => seen.changes.length === 2, { what: "the new weights" });
      deepEqual(seen.changes[1], ["http://127.0.0.3:9001", "http://127.0.0.4:9002"]);
      deepEqual(seen.weights[1], [5, 3]);
      await sleep(300);
      equal(seen.changes.length, 2);
    } finally {
      await discovery.stop();
    }
  });
});

Deno.test("startDiscovery() keeps the last good set while DNS is down, then follows it again", async () => {
  await withDns({ hosts: "127.0.0.1 app.test\n127.0.0.2 app.test\n" }, async (dns) => {
    const seen = recorder();
    const discovery = startDiscovery(parseDiscoverySpec("dns:app.test:8080"), {
      interval: 100,
      timeout: 250,
      nameServer: dns.nameServer,
      onChange: seen.onChange,
      onError: seen.onError,
    });
    try {
      await waitFor(() => seen.changes.length === 1, { what: "the first set" });
      await dns.kill();
      await waitFor(() => seen.errors.length >= 3, { what: "three failed resolutions" });
      deepEqual(seen.changes, [["http://127.0.0.1:8080", "http://127.0.0.2:8080"]]);
      for (const message of seen.errors) {
        assert(
          /^dns:app\.test:8080: A{1,4} lookup of app\.test failed: timed out after 250 ms$/.test(
            message,
          ),
          message,
        );
      }
      // It comes back with different records: they flow again.
      await dns.setHosts("127.0.0.2 app.test\n127.0.0.3 app.test\n");
      await dns.restart();
      await waitFor(() => seen.changes.length === 2, { what: "the set after the outage" });
      deepEqual(seen.changes[1], ["http://127.0.0.2:8080", "http://127.0.0.3:8080"]);
    } finally {
      await discovery.stop();
    }
  });
});

Deno.test("startDiscovery() calls onError once per failed resolution, never onChange([])", async (t) => {
  await withDns({ hosts: "127.0.0.1 app.test\n" }, async (dns) => {
    const seen = recorder();
    // A long interval: only refreshNow() resolves after the first round.
    const discovery = startDiscovery(parseDiscoverySpec("dns:app.test:8080"), {
      interval: 60_000,
      timeout: 250,
      nameServer: dns.nameServer,
      onChange: seen.onChange,
      onError: seen.onError,
    });
    try {
      await discovery.refreshNow(); // runs after the first round
      deepEqual(seen.changes, [["http://127.0.0.1:8080"]]);
      await t.step("the name loses every address: an error, not an empty pool", async () => {
        await dns.setHosts("127.0.0.1 other.test\n");
        await discovery.refreshNow();
        deepEqual(seen.errors, ["dns:app.test:8080: no A or AAAA records with an address"]);
        equal(seen.changes.length, 1);
      });
      await t.step("the server is gone: one error per resolution", async () => {
        await dns.kill();
        await discovery.refreshNow();
        equal(seen.errors.length, 2);
        await discovery.refreshNow();
        equal(seen.errors.length, 3);
        equal(seen.changes.length, 1);
      });
      await t.step("back with the same set: no call; then a change is reported", async () => {
        await dns.setHosts("127.0.0.1 app.test\n");
        await dns.restart();
        await discovery.refreshNow();
        equal(seen.changes.length, 1);
        equal(seen.errors.length, 3);
        await dns.setHosts("127.0.0.1 app.test\n127.0.0.5 app.test\n");
        await discovery.refreshNow();
        deepEqual(seen.changes[1], ["http://127.0.0.1:8080", "http://127.0.0.5:8080"]);
      });
    } finally {
      await discovery.stop();
    }
  });
});

Deno.test("startDiscovery() offers a set again when onChange threw, and honours `initial`", async () => {
  await withDns({ hosts: "127.0.0.1 app.test\n127.0.0.2 app.test\n" }, async (dns) => {
    const spec = parseDiscoverySpec("dns:app.test:8080");
    const current = await resolveBackends(spec, { nameServer: dns.nameServer });
    const calls: string[][] = [];
    const errors: string[] = [];
    let fail = true;
    const discovery = startDiscovery(spec, {
      interval: 60_000,
      nameServer: dns.nameServer,
      initial: current,
      onChange: (backends) => {
        calls.push(urls(backends));
        if (fail) throw new ValidationError("more backends than the 16 slots");
      },
      onError: (message) => errors.push(message),
    });
    try {
      // DNS agrees with the initial set: nothing to apply.
      await discovery.refreshNow();
      deepEqual([calls, errors], [[], []]);
      await dns.setHosts("127.0.0.1 app.test\n");
      await discovery.refreshNow();
      deepEqual(calls, [["http://127.0.0.1:8080"]]);
      deepEqual(errors, [
        "dns:app.test:8080: applying the discovered backends failed: more backends than the 16 slots",
      ]);
      // Not applied, so offered again; once applied, not again.
      fail = false;
      await discovery.refreshNow();
      await discovery.refreshNow();
      deepEqual(calls, [["http://127.0.0.1:8080"], ["http://127.0.0.1:8080"]]);
      equal(errors.length, 1);
    } finally {
      await discovery.stop();
    }
  });
});

Deno.test("stop() abandons a resolution in flight at once and leaves no timer", async () => {
  const seen = recorder();
  // Nothing answers on this port: the first resolution would wait out its timeout.
  const discovery = startDiscovery(parseDiscoverySpec("dns:app.test:8080"), {
    interval: 50,
    timeout: 10_000,
    nameServer: { ipAddr: "127.0.0.1", port: freePort() },
    onChange: seen.onChange,
    onError: seen.onError,
  });
  await sleep(100);
  const started = Date.now();
  await discovery.stop();
  assert(Date.now() - started < 1000, `stop() took ${Date.now() - started} ms`);
  await discovery.refreshNow(); // after stop: does nothing
  deepEqual([seen.changes, seen.errors], [[], []]);
});
