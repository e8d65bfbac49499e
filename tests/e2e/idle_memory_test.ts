import { ok as assert } from "node:assert/strict";
import { measureIdleMemory } from "../../tools/idle_memory.ts";

const MIB = 1024 * 1024;
/** Few enough for the usual limit of 1,024 open files (this process holds the client side and
 * the backend's), more than `RECLAIM_AFTER`. */
const CONNECTIONS = 800;

// What each idle connection costs is held to bytes by tests/front/server_test.ts ("holds about
// 1 KiB"), and measured in RSS by `deno task idle-memory`: an RSS slope over 800 connections is
// as noisy as the difference it would look for (a heap step costs megabytes).
Deno.test({
  name: "idle keep-alive connections give their memory back once they close",
  sanitizeOps: true,
  sanitizeResources: true,
  fn: async () => {
    // One worker, so that all of them close on the front end that then gives memory back.
    const report = await measureIdleMemory({
      target: "goround",
      connections: CONNECTIONS,
      step: 100,
      workers: 1,
      watchMs: 8000,
      fallBack: 0.5,
    });
    const growth = report.open - report.before;
    const mib = (bytes: number) => `${(bytes / MIB).toFixed(1)} MiB`;
    assert(
      report.closed <= report.before + growth / 2,
      `after they closed RSS stayed at ${mib(report.closed)}: from ${mib(report.before)} it ` +
        `had grown to ${mib(report.open)}, and less than half of that came back in 8 s`,
    );
  },
});
