/**
 * Ports of the local ephemeral range where a connect can meet itself (a TCP self-connect), for
 * the tests of `lib/upstream/connect.ts`.
 *
 * @module
 */

/**
 * Free ports of the ephemeral range that the kernel picks as connects' source ports: the local
 * ports of connections to a listener on port 0 (Linux gives connects even ports first and
 * `bind` odd ones, so a listener's own port would rarely be picked as a source). Each is free
 * once returned: its connection is closed, the accepted side first, and it was bound again.
 *
 * @param count How many.
 * @returns Distinct ports.
 */
export async function connectSourcePorts(count: number): Promise<number[]> {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const ports = new Set<number>();
  try {
    for (let tries = 0; ports.size < count && tries < count * 32; tries++) {
      const client = await Deno.connect({ hostname: "127.0.0.1", port: listener.addr.port });
      const accepted = await listener.accept();
      const port = client.localAddr.port;
      accepted.close();
      // Closed second, after the FIN arrived, so the TIME_WAIT is the listener's side.
      await client.read(new Uint8Array(1));
      client.close();
      try {
        Deno.listen({ hostname: "127.0.0.1", port }).close();
        ports.add(port);
      } catch {
        // Held by another connection's TIME_WAIT (Linux reuses a source port for other
        // destinations): take another.
      }
    }
  } finally {
    listener.close();
  }
  if (ports.size < count) throw new Error(`found ${ports.size} free source ports of ${count}`);
  return [...ports];
}
