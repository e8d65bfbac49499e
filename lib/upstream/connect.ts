/**
 * Opening a TCP connection to a backend, refusing a TCP self-connect.
 *
 * When nothing listens on a port of the local ephemeral range (Linux: 32768-60999), the kernel
 * can pick that same port as the source of a connect to it; the SYN then meets itself and the
 * connect "succeeds" by simultaneous open (RFC 9293 §3.5) to nothing but itself. goround would
 * read its own request back as a response (502 instead of 503), a health probe would pass, and
 * while the connection lives the port is taken from the backend that wants to bind it. A
 * connection whose two ends are the same address is such a connect: it is closed at once and
 * reported as a refused one, which is what it stands for.
 *
 * A plain close would leave the self-connect in TIME_WAIT for a minute (Deno closes with a FIN,
 * and the socket receives its own), and that blocks the port's `bind` even with `SO_REUSEADDR`,
 * which the connecting socket did not set. So it is closed with a reset instead: Linux sends a
 * RST, and keeps no TIME_WAIT, when a socket is closed with unread bytes (RFC 2525 §2.17), and
 * holds the FIN back while the peer's window is shut. Writing more than the receive window to
 * itself does both.
 *
 * @module
 */

import { logLine } from "../log.ts";

/** Bytes a self-connect writes to itself before closing: more than its receive window (127 KiB
 * with Linux's default `tcp_rmem`), so some stay unread and some unsent. */
const SELF_FILL = 1024 * 1024;

/**
 * Whether a connection's two ends are the same address and port: a TCP self-connect.
 *
 * @param local The connection's local address.
 * @param remote The address it is connected to.
 * @returns `true` for a self-connect.
 * @example
 * ```ts
 * import { isSelfConnect } from "./connect.ts";
 * const addr = { transport: "tcp", hostname: "127.0.0.1", port: 41000 } as const;
 * isSelfConnect(addr, addr); // true
 * isSelfConnect({ ...addr, port: 41001 }, addr); // false
 * ```
 */
export function isSelfConnect(local: Deno.Addr, remote: Deno.Addr): boolean {
  return local.transport === "tcp" && remote.transport === "tcp" &&
    local.port === remote.port && local.hostname === remote.hostname;
}

/**
 * `Deno.connect`, except that a self-connect (see the module) is closed and thrown as
 * `Deno.errors.ConnectionRefused`, and logged (repeats are counted by `logLine`).
 *
 * @param options Where to connect, and the signal that gives up.
 * @returns The connection, to something other than itself.
 * @throws `Deno.errors.ConnectionRefused` for a self-connect; what `Deno.connect` throws.
 */
export async function connectTcp(options: Deno.ConnectOptions): Promise<Deno.TcpConn> {
  const conn = await Deno.connect(options);
  if (!isSelfConnect(conn.localAddr, conn.remoteAddr)) return conn;
  // A fresh socket's send buffer is empty, so this write takes at least part at once.
  await conn.write(new Uint8Array(SELF_FILL)).catch(() => 0);
  conn.close();
  const { hostname, port } = conn.remoteAddr;
  logLine(
    `self-connect: a connect to ${hostname}:${port} came back to itself (nothing listens ` +
      `there and the port is in the ephemeral range); closed, counted as connection refused`,
  );
  throw new Deno.errors.ConnectionRefused(`connection refused (self-connect to port ${port})`);
}
