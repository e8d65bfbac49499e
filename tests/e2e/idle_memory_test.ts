import { ok as assert } from "node:assert/strict";
import { measureIdleMemory } from "../../tools/idle_memory.ts";

const MIB = 1024 * 1024;
/** Few enough for the usual limit of 1,024 open files (this process holds the client side and
 * the backend's), more than `RECLAIM_AFTER`. */
const CONNECTIONS = 800;
/** Per idle connection, bytes: 10,000 must cost at most 60 MiB (about 6 KiB each; they cost
 * 5-6 KiB), where a fixed 16 KiB read and 4 KiB write buffer cost 15-17 KiB. Halfway, so that the
 * runtime's own noise (a heap that grows, JIT code) cannot decide it. */
const PER_CONNECTION_LIMIT = 11.5 * 1024;

Deno.test({
  name: "idle keep-alive connections cost little memory, and it falls back once they close",
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
    // The slope from the first quarter to all of them open: what each more connection costs,
    // without what the first ones cost the runtime once (buffer lists, compiled code).
    const quarter = report.samples.find((s) =>
      s.afterMs === 0 && s.connections >= CONNECTIONS / 4
    )!;
    const slope = (report.open - quarter.rss) / (CONNECTIONS - quarter.connections);
    assert(
      slope < PER_CONNECTION_LIMIT,
      `each idle connection cost ${(slope / 1024).toFixed(1)} KiB (limit ${
        PER_CONNECTION_LIMIT / 1024
      } KiB; from ${mib(quarter.rss)} at ${quarter.connections} to ${mib(report.open)})`,
    );
    assert(
      report.closed <= report.before + growth / 2,
      `after they closed RSS stayed at ${mib(report.closed)}: from ${mib(report.before)} it ` +
        `had grown to ${mib(report.open)}, and less than half of that came back in 8 s`,
    );
  },
});
