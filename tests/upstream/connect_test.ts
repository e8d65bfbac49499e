import { equal, ok as assert } from "node:assert/strict";
import { connectTcp, isSelfConnect } from "../../lib/upstream/connect.ts";
import { connectSourcePorts } from "../support/ephemeral.ts";

/** Connects per port tried before a self-connect counts as not happening on this machine (each
 * refused connect takes ~20 µs; 16 ports have met themselves within 1,826 rounds here). */
const ROUNDS = 4000;

const tcp = (hostname: string, port: number): Deno.NetAddr => ({
  transport: "tcp",
  hostname,
  port,
});

Deno.test("isSelfConnect() is true only when both ends are one address and port", () => {
  assert(isSelfConnect(tcp("127.0.0.1", 41000), tcp("127.0.0.1", 41000)));
  assert(isSelfConnect(tcp("::1", 41000), tcp("::1", 41000)));
  assert(!isSelfConnect(tcp("127.0.0.1", 41002), tcp("127.0.0.1", 41000)));
  assert(!isSelfConnect(tcp("127.0.0.2", 41000), tcp("127.0.0.1", 41000)));
  const unix: Deno.UnixAddr = { transport: "unix", path: "/tmp/s" };
  assert(!isSelfConnect(unix, unix));
});

Deno.test("connectTcp() hands over a connection to a listener", async () => {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const conn = await connectTcp({ hostname: "127.0.0.1", port: listener.addr.port });
  const accepted = await listener.accept();
  assert(!isSelfConnect(conn.localAddr, conn.remoteAddr));
  accepted.close();
  conn.close();
  listener.close();
});

/**
 * Connects round-robin to `ports`, where nothing listens, until `connect` returns a connection
 * or `ROUNDS` rounds pass; every failure must be a refusal.
 */
async function storm(
  ports: readonly number[],
  connect: (port: number) => Promise<Deno.TcpConn>,
): Promise<{ conn: Deno.TcpConn | null; refusals: string[] }> {
  const refusals: string[] = [];
  for (let round = 0; round < ROUNDS; round++) {
    for (const port of ports) {
      try {
        return { conn: await connect(port), refusals };
      } catch (error) {
        assert(error instanceof Deno.errors.ConnectionRefused, String(error));
        if (/self-connect/.test(error.message)) return { conn: null, refusals: [error.message] };
      }
    }
  }
  return { conn: null, refusals };
}

Deno.test("a storm of connects to free ephemeral ports meets itself: isSelfConnect() sees it", async () => {
  const ports = await connectSourcePorts(16);
  const { conn } = await storm(ports, (port) => Deno.connect({ hostname: "127.0.0.1", port }));
  if (conn === null) {
    console.log(`skipped: no self-connect in ${ROUNDS} rounds over ${ports.length} ports`);
    return;
  }
  assert(isSelfConnect(conn.localAddr, conn.remoteAddr));
  // Closed as connectTcp() closes one (with bytes unread: a reset, no TIME_WAIT left behind).
  await conn.write(new Uint8Array(1024 * 1024));
  conn.close();
});

Deno.test("connectTcp() refuses a self-connect and closes it, so the port can be bound", async () => {
  const ports = await connectSourcePorts(16);
  const { conn, refusals } = await storm(
    ports,
    (port) => connectTcp({ hostname: "127.0.0.1", port }),
  );
  equal(conn, null, "a connect to a port where nothing listens returned a connection");
  if (refusals.length === 0) {
    console.log(`skipped: no self-connect in ${ROUNDS} rounds over ${ports.length} ports`);
    return;
  }
  const port = Number(/port (\d+)/.exec(refusals[0]!)![1]);
  assert(ports.includes(port));
  // The self-connected socket is gone: a backend can take its port.
  Deno.listen({ hostname: "127.0.0.1", port }).close();
});
