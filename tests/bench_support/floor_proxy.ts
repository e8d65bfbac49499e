/**
 * The benchmark's floor row: the least work a Deno proxy can do per keep-alive GET, to show
 * what the runtime itself costs next to goround and nginx. Not a product and not goround: it
 * pins each client connection to one backend connection (round-robin per connection), passes
 * the request bytes on unread, and reads the reply until its `Content-Length` is in. Four
 * socket operations per request, each awaited directly, and no parsing, validation, header
 * rules, ids, metrics or retries. Only for the `get` scenario (bodiless requests, one per read).
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

const CRLFCRLF = [13, 10, 13, 10];
const latin1 = new TextDecoder("latin1");

/** The length of the whole reply in `bytes[0, end)`, or -1 while its head is incomplete. */
export function replyLength(bytes: Uint8Array, end: number): number {
  for (let i = 0; i + 3 < end; i++) {
    if (
      bytes[i] === CRLFCRLF[0] && bytes[i + 1] === CRLFCRLF[1] &&
      bytes[i + 2] === CRLFCRLF[2] && bytes[i + 3] === CRLFCRLF[3]
    ) {
      const head = latin1.decode(bytes.subarray(0, i));
      const length = /\r\ncontent-length:\s*(\d+)/i.exec(head);
      return i + 4 + (length ? Number(length[1]) : 0);
    }
  }
  return -1;
}

async function relay(client: Deno.TcpConn, backend: number): Promise<void> {
  let upstream: Deno.TcpConn | null = null;
  try {
    upstream = await Deno.connect({ hostname: "127.0.0.1", port: backend });
    client.setNoDelay(true);
    upstream.setNoDelay(true);
    const request = new Uint8Array(16 * 1024);
    let reply = new Uint8Array(16 * 1024);
    while (true) {
      const n = await client.read(request);
      if (n === null) return;
      await upstream.write(request.subarray(0, n));
      let got = 0;
      let need = -1;
      while (need < 0 || got < need) {
        if (got === reply.length) {
          const bigger = new Uint8Array(reply.length * 2);
          bigger.set(reply);
          reply = bigger;
        }
        const m = await upstream.read(reply.subarray(got));
        if (m === null) return;
        got += m;
        if (need < 0) need = replyLength(reply, got);
      }
      await client.write(reply.subarray(0, got));
    }
  } catch {
    // A connection went away: the floor proxy has no error handling to speak of.
  } finally {
    client.close();
    upstream?.close();
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
