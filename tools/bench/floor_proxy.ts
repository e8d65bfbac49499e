/**
 * The benchmark's floor row: the least a Deno proxy can do, to show what the runtime itself
 * costs next to goround and nginx. Not a product and not goround: a TCP relay. Each client
 * connection is spliced to one backend connection (round-robin per connection), and bytes are
 * copied both ways as they come, with no HTTP at all: no parsing, framing, header rules, ids,
 * metrics, retries or health. For a small keep-alive GET that is four socket operations per
 * request, each awaited directly; for a large body, a read and a write per 128 KiB (goround's
 * body buffer size). It runs every scenario, so each table shows how close goround is to what
 * Deno's sockets allow.
 *
 * Usage: `deno run --unstable-net --allow-net=127.0.0.1 floor_proxy.ts PORT WORKERS BACKEND...`
 * (one Worker thread per worker, all listening on PORT with `reusePort`, as goround does).
 *
 * @module
 */

/** What a worker thread is told. */
interface Job {
  readonly port: number;
  readonly backends: readonly number[];
}

/** Bytes per read: goround's body buffer size. */
const CHUNK = 128 * 1024;

/**
 * Copies `from` to `to` until `from` ends or either fails.
 *
 * @param from The connection read.
 * @param to The connection written.
 */
export async function copy(from: Deno.Conn, to: Deno.Conn): Promise<void> {
  const buffer = new Uint8Array(CHUNK);
  while (true) {
    const n = await from.read(buffer);
    if (n === null) return;
    let sent = 0;
    while (sent < n) sent += await to.write(buffer.subarray(sent, n));
  }
}

/**
 * Relays one client connection to a backend until either side closes.
 *
 * @param client The accepted connection.
 * @param backend The backend's port on 127.0.0.1.
 */
export async function relay(client: Deno.TcpConn, backend: number): Promise<void> {
  let upstream: Deno.TcpConn | null = null;
  try {
    upstream = await Deno.connect({ hostname: "127.0.0.1", port: backend });
    client.setNoDelay(true);
    upstream.setNoDelay(true);
    // Whichever direction ends first ends the relay; closing both ends the other copy.
    await Promise.race([copy(client, upstream), copy(upstream, client)]);
  } catch {
    // A connection went away: the floor has no error handling to speak of.
  } finally {
    for (const conn of [client, upstream]) {
      try {
        conn?.close();
      } catch {
        // Closed already.
      }
    }
  }
}

async function serve(job: Job): Promise<void> {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: job.port, reusePort: true });
  let next = 0;
  for await (const client of listener) relay(client, job.backends[next++ % job.backends.length]!);
}

/** This module is both the launcher and its worker threads (told apart by the worker's name). */
const scope = self as unknown as {
  name?: string;
  onmessage: ((event: MessageEvent<Job>) => void) | null;
};
if (scope.name === "floor") {
  scope.onmessage = (event) => serve(event.data);
} else if (import.meta.main) {
  const [port, workers, ...backends] = Deno.args.map(Number);
  for (let i = 0; i < workers!; i++) {
    new Worker(import.meta.url, { type: "module", name: "floor" }).postMessage(
      { port: port!, backends } satisfies Job,
    );
  }
  console.log(`floor proxy on 127.0.0.1:${port}, ${workers} workers`);
}
