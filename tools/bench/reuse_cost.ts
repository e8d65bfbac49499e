/**
 * What closing a backend connection after a bodiless response costs: goround's upstream client
 * against a `Deno.serve` backend on loopback, one request at a time, `200` (the connection is
 * reused) against `204` (a new connection after each, see `reusableAfter` in lib/http/http1.ts).
 *
 * Run: `deno run --allow-net=127.0.0.1 tools/bench/reuse_cost.ts [requests] [rounds]`
 *
 * @module
 */

import { requestHead } from "../../lib/http/http1.ts";
import {
  closeUpstreams,
  createUpstreams,
  roundTrip,
  type Upstreams,
} from "../../lib/upstream/client.ts";
import type { Backend } from "../../lib/config/config.ts";

/** Mean µs per exchange of `count` sequential requests for `path`. */
async function perRequest(
  upstreams: Upstreams,
  backend: Backend,
  options: { path: string; count: number },
): Promise<number> {
  const head = requestHead("GET", options.path, [["host", "t"]]);
  const started = performance.now();
  for (let i = 0; i < options.count; i++) {
    const res = await roundTrip(upstreams, backend, {
      method: "GET",
      head,
      body: null,
      chunked: false,
    });
    if (res.body instanceof ReadableStream) await res.body.cancel();
    res.release();
  }
  return ((performance.now() - started) * 1000) / options.count;
}

if (import.meta.main) {
  const count = Number(Deno.args[0] ?? 5000);
  const rounds = Number(Deno.args[1] ?? 3);
  const server = Deno.serve(
    { hostname: "127.0.0.1", port: 0, onListen: () => {} },
    (req) =>
      new URL(req.url).pathname === "/204"
        ? new Response(null, { status: 204 })
        : new Response("ok"),
  );
  const { port } = server.addr;
  const backend = {
    url: `http://127.0.0.1:${port}`,
    hostname: "127.0.0.1",
    port,
    weight: 1,
    tls: false,
  };
  const upstreams = createUpstreams({ connectTimeout: 1000, responseTimeout: 5000 });
  try {
    for (let round = 1; round <= rounds; round++) {
      const reused = await perRequest(upstreams, backend, { path: "/200", count });
      const fresh = await perRequest(upstreams, backend, { path: "/204", count });
      console.log(
        `round ${round}: 200, connection reused: ${reused.toFixed(1)} µs; ` +
          `204, new connection each: ${fresh.toFixed(1)} µs (${count} requests each)`,
      );
    }
  } finally {
    closeUpstreams(upstreams);
    await server.shutdown();
  }
}
