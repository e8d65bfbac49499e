/**
 * Opens connections to a loopback port and resets each one (RST, not FIN) as soon as it is
 * established, so most are gone before the server accepts them: what a client that gives up
 * at once, or a SYN-flooding scanner, leaves in a listener's queue. Deno's own sockets cannot
 * set `SO_LINGER` 0; `node:net`'s `resetAndDestroy()` does.
 *
 * ```sh
 * deno run --allow-net=127.0.0.1 tests/support/reset_clients.ts PORT COUNT
 * ```
 *
 * Prints `reset N` when every connection is closed.
 *
 * @module
 */

import net from "node:net";

/**
 * Opens `count` connections to `port`, at most `batch` at a time, and resets each.
 *
 * @param port The loopback port.
 * @param count How many connections.
 * @param batch Connections in flight at once.
 * @returns How many were established before they were reset.
 */
export async function resetConnections(port: number, count: number, batch = 500): Promise<number> {
  let established = 0;
  for (let done = 0; done < count;) {
    const size = Math.min(batch, count - done);
    await Promise.all(Array.from({ length: size }, () =>
      new Promise<void>((resolve) => {
        const socket = net.connect(port, "127.0.0.1", () => {
          established++;
          socket.resetAndDestroy();
        });
        socket.on("error", () => resolve());
        socket.on("close", () => resolve());
      })));
    done += size;
  }
  return established;
}

if (import.meta.main) {
  const [port, count] = Deno.args.map(Number);
  if (!port || !count) {
    console.error("usage: reset_clients.ts PORT COUNT");
    Deno.exit(2);
  }
  console.log(`reset ${await resetConnections(port, count)}`);
}
