// Loops, overflows and floods (issue 13, items 3 and 5): a pool that contains goround itself,
// accept failing for want of file descriptors, connections reset before they are accepted.
// Real goround processes; the figures a user would notice (log lines, file descriptors, CPU,
// time to exit) are the assertions.
//
// Permissions: as the test task (sh and cat read /proc/<pid>, to count a process's file
// descriptors and CPU time).

import { deepEqual, equal, match, ok as assert } from "node:assert/strict";
import { ENGINES } from "../../lib/config/config.ts";
import {
  get,
  type Goround,
  recordingBackend,
  ROOT,
  sendSignal,
  startGoround,
  waitFor,
} from "../support/helpers.ts";
import { rawRequest } from "../support/raw_client.ts";
import { startDnsServer } from "../support/dns_server.ts";

/** Runs a command and returns its stdout. */
async function output(command: string, args: string[]): Promise<string> {
  const { code, stdout } = await new Deno.Command(command, { args, stdin: "null" }).output();
  equal(code, 0, `${command} ${args.join(" ")}`);
  return new TextDecoder().decode(stdout);
}

/** Open file descriptors of a process (`/proc/<pid>/fd`, listed by `sh`: Deno itself reads
 * another process's `/proc/<pid>` only with --allow-all). */
async function openFds(pid: number): Promise<number> {
  return Number(await output("sh", ["-c", 'ls "/proc/$1/fd" | wc -l', "sh", String(pid)]));
}

/** CPU time a process has used (user + system), in clock ticks (1/100 s on Linux). */
async function cpuTicks(pid: number): Promise<number> {
  const stat = await output("cat", [`/proc/${pid}/stat`]);
  // Fields after the command name, which is in parentheses and may hold spaces.
  const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  return Number(fields[11]) + Number(fields[12]);
}

/** Lines goround wrote to stderr that match `pattern`. */
function linesOf(proxy: Goround, pattern: RegExp): string[] {
  return proxy.stderr.filter((line) => pattern.test(line));
}

/** Opens `count` connections and keeps those that open (they send nothing). Under
 * `Deno.serve`, whose listener closes when accept fails, some are refused or reset. */
async function hold(port: number, count: number): Promise<Deno.Conn[]> {
  const conns: Deno.Conn[] = [];
  for (let i = 0; i < count; i++) {
    try {
      conns.push(await Deno.connect({ hostname: "127.0.0.1", port }));
    } catch (error) {
      // Refused, or reset (or already gone, NotConnected) while queued on a listener that
      // Deno.serve closed and opened again after a failed accept.
      const refused = error instanceof Deno.errors.ConnectionRefused ||
        error instanceof Deno.errors.ConnectionReset || error instanceof Deno.errors.NotConnected;
      if (!refused) throw error;
    }
  }
  return conns;
}

function closeAll(conns: Deno.Conn[]): void {
  for (const conn of conns) {
    try {
      conn.close();
    } catch {
      // Closed by goround.
    }
  }
}

/** Runs tests/support/reset_clients.ts: `count` connections to `port`, each reset at once. */
async function resetClients(port: number, count: number): Promise<void> {
  const { code, stdout } = await new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "--allow-net=127.0.0.1",
      `${ROOT}tests/support/reset_clients.ts`,
      String(port),
      String(count),
    ],
    stdin: "null",
    stderr: "inherit",
  }).output();
  equal(code, 0, new TextDecoder().decode(stdout));
}

for (const engine of ENGINES) {
  Deno.test(`[${engine}] out of file descriptors, goround backs off: few log lines, little CPU, serves again`, async () => {
    const backend = recordingBackend(() => new Response("ok"));
    // Room for the runtime, one worker and a few dozen connections.
    const proxy = await startGoround([
      "--engine",
      engine,
      "--backend",
      backend.url,
      "--workers",
      "1",
      "--access-log",
      "off",
    ], { fdLimit: 96 });
    const held: Deno.Conn[] = [];
    try {
      const before = proxy.stderr.length;
      held.push(...await hold(proxy.port, 150)); // more than goround can take
      await waitFor(() => linesOf(proxy, /accept failed/).length > 0, {
        timeout: 5000,
        what: "the line that says accept fails",
      });
      const ticks = await cpuTicks(proxy.pid).catch((error) => {
        throw new Error(`${error}: goround gone?\n${proxy.stderr.join("\n")}`);
      });
      const started = Date.now();
      await waitFor(() => Date.now() - started >= 2000, { what: "two seconds at the limit" });
      const spent = (await cpuTicks(proxy.pid) - ticks) / 100;
      const seconds = (Date.now() - started) / 1000;
      assert(spent / seconds < 0.3, `goround used ${spent} s of CPU in ${seconds} s at the limit`);
      const written = proxy.stderr.slice(before);
      assert(written.length <= 4, `at most a few lines at the limit:\n${written.join("\n")}`);
      assert(!written.some((line) => /internal error/.test(line)), written.join("\n"));

      closeAll(held.splice(0));
      await waitFor(async () => {
        try {
          return (await get(proxy.url)).status === 200;
        } catch {
          return false; // still at the limit
        }
      }, { timeout: 5000, what: "goround to serve again" });
      // The episode is over at the first accept a second after the last that failed.
      await waitFor(async () => {
        // A request may still meet the listener between two tries while fds come back.
        const ok = await get(proxy.url).then((res) => res.status === 200, () => false);
        return ok && linesOf(proxy, /accepting again: \d+ accepts failed/).length > 0;
      }, { what: "the line that says accepting works again" });
    } finally {
      closeAll(held);
      await proxy.stop();
      await backend.close();
    }
  });

  Deno.test(`[${engine}] SIGTERM exits promptly while accept fails for want of file descriptors`, async () => {
    const backend = recordingBackend(() => new Response("ok"));
    const proxy = await startGoround([
      "--engine",
      engine,
      "--backend",
      backend.url,
      "--workers",
      "1",
      "--access-log",
      "off",
    ], { fdLimit: 96 });
    const held: Deno.Conn[] = [];
    try {
      held.push(...await hold(proxy.port, 150));
      await waitFor(() => linesOf(proxy, /accept failed/).length > 0, {
        timeout: 5000,
        what: "the line that says accept fails",
      });
      const started = Date.now();
      const status = await proxy.stop();
      const took = Date.now() - started;
      equal(status.code, 0, proxy.stderr.join("\n"));
      assert(took < 3000, `SIGTERM took ${took} ms`);
    } finally {
      closeAll(held);
      await proxy.stop();
      await backend.close();
    }
  });

  Deno.test(`[${engine}] 3,000 connections reset before accept are not logged`, async () => {
    const backend = recordingBackend(() => new Response("ok"));
    const proxy = await startGoround([
      "--engine",
      engine,
      "--backend",
      backend.url,
      "--workers",
      "1",
      "--access-log",
      "off",
    ]);
    try {
      const before = proxy.stderr.length;
      await resetClients(proxy.port, 3000);
      equal((await get(proxy.url)).status, 200, "goround still serves");
      const written = proxy.stderr.slice(before);
      assert(!written.some((line) => /internal error|NotConnected/.test(line)), written.join("\n"));
      assert(written.length <= 3, `at most a handful of lines:\n${written.join("\n")}`);
    } finally {
      await proxy.stop();
      await backend.close();
    }
  });
}

/**
 * A TCP relay on a loopback port to `target()` (a port forward, as NAT or a container runtime
 * makes one): a backend that is goround itself under another address, which the address check
 * cannot see. It takes at most `limit` connections at once and refuses the rest, so a loop
 * through it ends even without goround's own guard.
 */
function tcpRelay(target: () => number, limit = 200) {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const open = new Set<Deno.Conn>();
  const pipes = new Set<Promise<unknown>>();
  let accepted = 0;
  const closeQuietly = (conn: Deno.Conn) => {
    open.delete(conn);
    try {
      conn.close();
    } catch {
      // Closed already.
    }
  };
  const relay = async (front: Deno.Conn) => {
    let back: Deno.Conn | null = null;
    try {
      back = await Deno.connect({ hostname: "127.0.0.1", port: target() });
      open.add(back);
      const other = back;
      await Promise.race([
        front.readable.pipeTo(other.writable, { preventClose: true }),
        other.readable.pipeTo(front.writable, { preventClose: true }),
      ]).catch(() => {});
    } catch {
      // goround is out of descriptors, or gone.
    } finally {
      closeQuietly(front);
      if (back) closeQuietly(back);
    }
  };
  const loop = (async () => {
    for await (const conn of listener) {
      accepted++;
      if (open.size >= 2 * limit) {
        conn.close();
        continue;
      }
      open.add(conn);
      const piping = relay(conn);
      pipes.add(piping);
      piping.finally(() => pipes.delete(piping));
    }
  })().catch(() => {});
  const port = listener.addr.port;
  return {
    url: `http://127.0.0.1:${port}`,
    accepted: () => accepted,
    close: async () => {
      listener.close();
      for (const conn of [...open]) closeQuietly(conn);
      await loop;
      await Promise.allSettled([...pipes]);
    },
  };
}

for (const engine of ENGINES) {
  Deno.test(`[${engine}] a pool that contains goround under another address answers 508, and stays small`, async (t) => {
    let proxyPort = 0;
    const relay = tcpRelay(() => proxyPort);
    const proxy = await startGoround([
      "--engine",
      engine,
      "--backend",
      relay.url,
      "--workers",
      "1",
      "--access-log",
      "off",
    ], { fdLimit: 512 });
    proxyPort = proxy.port;
    try {
      const fds = await openFds(proxy.pid);
      const before = proxy.stderr.length;
      await t.step("every request is answered 508 Loop Detected", async () => {
        for (let i = 0; i < 20; i++) {
          const res = await rawRequest(
            proxy.port,
            `GET /loop/${i} HTTP/1.1\r\nHost: shop.example\r\nConnection: close\r\n\r\n`,
          );
          equal(res.status, 508, res.statusLine);
          match(new TextDecoder().decode(res.body), /loop detected/);
        }
        // Two hops per request: the client's, and the one that came back.
        assert(relay.accepted() <= 20, `${relay.accepted()} connections through the relay`);
      });
      // Both fronts make the backend handshake themselves, so the 508 that comes back is read.
      await t.step("a WebSocket handshake too (508)", async () => {
        const res = await rawRequest(
          proxy.port,
          "GET /ws HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
            "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
          2000, // Deno.serve keeps the connection open after its answer
        );
        equal(res.status, 508, res.statusLine);
      });
      await t.step("one log line for all of them, not one per hop", async () => {
        await waitFor(() => linesOf(proxy, /repeated \d+ times/).length > 0, {
          what: "the count of the repeated loop line",
        });
        const written = proxy.stderr.slice(before);
        const loops = linesOf(proxy, /loop detected/).length;
        assert(loops >= 2 && loops <= 3, written.join("\n"));
        assert(written.length <= 4, written.join("\n"));
      });
      await t.step("its file descriptors stay where they were", async () => {
        const now = await openFds(proxy.pid);
        assert(now <= fds + 8, `${fds} file descriptors before, ${now} after`);
      });
      await t.step("SIGTERM exits promptly", async () => {
        const started = Date.now();
        const status = await proxy.stop();
        equal(status.code, 0);
        assert(Date.now() - started < 3000, `SIGTERM took ${Date.now() - started} ms`);
      });
    } finally {
      await proxy.stop();
      await relay.close();
    }
  });
}

Deno.test("goround's own address is refused through the admin API and a reload; DNS's is left out", async (t) => {
  const backend = recordingBackend(() => new Response("ok"));
  const dir = await Deno.makeTempDir({ prefix: "goround-loop-" });
  const file = `${dir}/goround.json`;
  await Deno.writeTextFile(file, JSON.stringify({ backends: [backend.url] }));
  const proxy = await startGoround(["--config", file, "--workers", "1", "--access-log", "off"], {
    readable: dir,
  });
  const own = `http://localhost:${proxy.port}`;
  const pool = async () => {
    const status = await (await fetch(`${proxy.adminUrl}/status`)).json();
    return status.backends.map((b: { url: string }) => b.url);
  };
  try {
    await t.step(
      "POST /backends with goround's own address is 400, and nothing changes",
      async () => {
        const res = await fetch(`${proxy.adminUrl}/backends`, {
          method: "POST",
          headers: { "content-type": "application/json" },
          body: JSON.stringify({ url: own }),
        });
        equal(res.status, 400);
        equal(
          (await res.text()).trim(),
          `"${own}" is goround's own address (it listens on 127.0.0.1:${proxy.port}): expected another server`,
        );
        deepEqual(await pool(), [backend.url]);
      },
    );
    await t.step("a reload that lists it keeps the running config, with one line", async () => {
      const before = proxy.stderr.length;
      await Deno.writeTextFile(file, JSON.stringify({ backends: [backend.url, own] }));
      await sendSignal(proxy.pid, "HUP");
      await waitFor(() => linesOf(proxy, /reload failed/).length > 0, { what: "the reload" });
      const written = proxy.stderr.slice(before);
      equal(written.length, 1, written.join("\n"));
      match(written[0]!, /reload failed, keeping the running config: .*goround's own address/);
      deepEqual(await pool(), [backend.url]);
      equal((await get(proxy.url)).status, 200);
    });
  } finally {
    await proxy.stop();
    await backend.close();
    await Deno.remove(dir, { recursive: true });
  }

  await t.step(
    "DNS discovery leaves goround's own address out, with one line per answer",
    async () => {
      // goround on 127.0.0.1:P, a backend on 127.0.0.2:P, and a name for both.
      const free = Deno.listen({ hostname: "127.0.0.1", port: 0 });
      const port = free.addr.port;
      free.close();
      const other = Deno.serve(
        { hostname: "127.0.0.2", port, onListen: () => {} },
        () => new Response("Hello from 127.0.0.2"),
      );
      const dns = await startDnsServer({ hosts: "127.0.0.1 app.test\n127.0.0.2 app.test\n" });
      const proxy = await startGoround([
        "--listen",
        `127.0.0.1:${port}`,
        "--discover",
        `dns:app.test:${port}`,
        "--discover-nameserver",
        `127.0.0.1:${dns.port}`,
        "--discover-interval",
        "200ms",
        "--workers",
        "1",
        "--access-log",
        "off",
      ]);
      try {
        const left = () => linesOf(proxy, /discovery: .* is goround's own address .*left out/);
        equal(left().length, 1, proxy.stderr.join("\n"));
        match(left()[0]!, new RegExp(`"http://127\\.0\\.0\\.1:${port}" is goround's own address`));
        const { status, text } = await get(proxy.url);
        equal(status, 200);
        equal(text, "Hello from 127.0.0.2");
        // Unchanged answers are not applied (nor logged) again.
        const resolved = proxy.stderr.length;
        const since = Date.now();
        await waitFor(() => Date.now() - since > 1000, { what: "five more lookups" });
        equal(proxy.stderr.length, resolved, proxy.stderr.slice(resolved).join("\n"));
      } finally {
        await proxy.stop();
        await dns.close();
        await other.shutdown();
      }
    },
  );
});
