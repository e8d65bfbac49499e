import { ok as assert } from "node:assert/strict";
import { measureIdleMemory } from "../../tools/idle_memory.ts";

const MIB = 1024 * 1024;
/** Few enough for the usual limit of 1,024 open files (this process holds the client side and
 * the backend's), more than `RECLAIM_AFTER`. */
const CONNECTIONS = 800;
/** About 11.5 KiB per connection: 10,000 idle connections must cost at most 60 MiB (measured:
 * ~5-7 KiB each); with a 16 KiB read and a 4 KiB write buffer each they cost 15-17 KiB. */
const GROWTH_LIMIT = 9 * MIB;

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
    assert(
      growth < GROWTH_LIMIT,
      `${CONNECTIONS} idle connections grew RSS by ${mib(growth)} (limit ${mib(GROWTH_LIMIT)})`,
    );
    assert(
      report.closed <= report.before + growth / 2,
      `after they closed RSS stayed at ${mib(report.closed)}: from ${mib(report.before)} it ` +
        `had grown to ${mib(report.open)}, and less than half of that came back in 8 s`,
    );
  },
});
