import { equal, match, rejects } from "node:assert/strict";
import { createAdminHandler } from "../../lib/admin/api.ts";
import type { Supervisor } from "../../lib/control/supervisor.ts";

// A supervisor with settings and a pool's name, nothing else: any read of the pool is a bug (a
// TypeError).
const broken = {
  config: { adminHosts: [], adminToken: "" },
  pools: [{ name: "default" }],
} as unknown as Supervisor;
const handler = createAdminHandler(broken, { address: { hostname: "127.0.0.1", port: 9 } });
const at = (path: string, init?: RequestInit) =>
  new Request(`http://127.0.0.1:9${path}`, { headers: { host: "127.0.0.1:9" }, ...init });

Deno.test("a bug inside the admin API is not answered as bad input (400)", async () => {
  await rejects(handler(at("/status")), TypeError);
});

Deno.test("a bad value in an admin request is still a 400 that quotes it", async () => {
  const res = await handler(at("/backends", {
    method: "POST",
    headers: { host: "127.0.0.1:9", "content-type": "application/json" },
    body: JSON.stringify({ url: "ftp://x" }),
  }));
  equal(res.status, 400);
  match(await res.text(), /"ftp:\/\/x" has scheme ftp/);
});
