/**
 * The floor for `idle_memory.ts`: a bare Deno HTTP/1.1 responder on loopback that answers each
 * request head with a fixed `200 ok` and then waits on every idle connection with a pending
 * 1-byte read, holding nothing else per connection. What it costs per connection is what Deno
 * itself costs for an open `TcpConn` with a read pending; no front end can go below it.
 *
 * ```sh
 * deno run --allow-net=127.0.0.1 tools/idle_floor.ts   # prints "listening on <port>"
 * ```
 *
 * @module
 */

const RESPONSE = new TextEncoder().encode(
  "HTTP/1.1 200 OK\r\ncontent-length: 3\r\n\r\nok\n",
);

/** Answers each request head (a GET without a body) and keeps the connection open. */
async function serve(conn: Deno.Conn): Promise<void> {
  // One byte at a time: the floor holds one byte per connection, and the end of a head is the
  // only thing it looks for.
  const byte = new Uint8Array(1);
  let tail = 0; // how much of "\r\n\r\n" was just seen
  try {
    while ((await conn.read(byte)) !== null) {
      const c = byte[0];
      tail = c === (tail % 2 === 0 ? 13 : 10) ? tail + 1 : c === 13 ? 1 : 0;
      if (tail < 4) continue;
      tail = 0;
      await conn.write(RESPONSE);
    }
  } catch {
    // Reset by the client: nothing to report.
  } finally {
    try {
      conn.close();
    } catch {
      // Closed already.
    }
  }
}

const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
console.log(`listening on ${listener.addr.port}`);
for await (const conn of listener) serve(conn);
