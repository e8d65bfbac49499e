// Loops, overflows and floods (issue 13, items 3 and 5): a pool that contains goround itself,
// accept failing for want of file descriptors, connections reset before they are accepted.
// Real goround processes; the figures a user would notice (log lines, file descriptors, CPU,
// time to exit) are the assertions.
//
// Permissions: as the test task (sh and cat read /proc/<pid>, to count a process's file
// descriptors and CPU time).

import { equal, ok as assert } from "node:assert/strict";
import { ENGINES } from "../lib/config.ts";
import { get, type Goround, recordingBackend, ROOT, startGoround, waitFor } from "./helpers.ts";

/** Runs a command and returns its stdout. */
async function output(command: string, args: string[]): Promise<string> {
  const { code, stdout } = await new Deno.Command(command, { args, stdin: "null" }).output();
  equal(code, 0, `${command} ${args.join(" ")}`);
  return new TextDecoder().decode(stdout);
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
 * `Deno.serve`, whose listener closes when accept fails, some are refused. */
async function hold(port: number, count: number): Promise<Deno.Conn[]> {
  const conns: Deno.Conn[] = [];
  for (let i = 0; i < count; i++) {
    try {
      conns.push(await Deno.connect({ hostname: "127.0.0.1", port }));
    } catch (error) {
      if (!(error instanceof Deno.errors.ConnectionRefused)) throw error;
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
      const ticks = await cpuTicks(proxy.pid);
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
      await waitFor(() => linesOf(proxy, /accepting again after \d+ failed accepts/).length > 0, {
        what: "the line that says accepting works again",
      });
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
      equal(status.code, 0);
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
