/**
 * Slow and stuck clients against real goround processes, both front ends: slow uploads hold
 * goround's memory and get 408, never a backend connection (`--request-buffer`,
 * `--body-timeout`, `--body-min-rate`); a malformed chunked body within the buffer never reaches
 * a backend; a client that stops reading a response is cut off and its backend let go
 * (`--send-timeout`); and the shared buffer budget (`--request-buffer-total`) bounds memory
 * without failing uploads.
 *
 * The backend sits behind a counting TCP relay, so a test sees every byte goround sends it.
 *
 * @module
 */

import { equal, ok as assert } from "node:assert/strict";
import { ENGINES } from "../../lib/config/config.ts";
import { type Goround, recordingBackend, startGoround, waitFor } from "../support/helpers.ts";

const encoder = new TextEncoder();
const decoder = new TextDecoder();
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/** A TCP relay in front of a backend that counts the connections and bytes toward it. */
interface Relay {
  readonly url: string;
  /** Connections goround opened to the backend. */
  readonly connections: () => number;
  /** Bytes goround sent the backend. */
  readonly bytesIn: () => number;
  readonly close: () => Promise<void>;
}

async function pipe(from: Deno.Conn, to: Deno.Conn, count: (n: number) => void): Promise<void> {
  const buf = new Uint8Array(64 * 1024);
  try {
    while (true) {
      const n = await from.read(buf);
      if (n === null) return;
      count(n);
      let at = 0;
      while (at < n) at += await to.write(buf.subarray(at, n));
    }
  } catch {
    // Either side went away: the relay closes both.
  }
}

function closeQuietly(conn: Deno.Conn): void {
  try {
    conn.close();
  } catch {
    // Closed already.
  }
}

function countingRelay(port: number): Relay {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  let connections = 0;
  let bytesIn = 0;
  const open = new Set<Deno.Conn>();
  const tasks = new Set<Promise<void>>();
  const loop = (async () => {
    for await (const conn of listener) {
      connections++;
      open.add(conn);
      const task = (async () => {
        const up = await Deno.connect({ hostname: "127.0.0.1", port });
        open.add(up);
        const both = [pipe(conn, up, (n) => (bytesIn += n)), pipe(up, conn, () => {})];
        await Promise.race(both);
        closeQuietly(conn);
        closeQuietly(up);
        await Promise.all(both);
        open.delete(conn);
        open.delete(up);
      })().catch(() => closeQuietly(conn));
      tasks.add(task);
      task.finally(() => tasks.delete(task));
    }
  })().catch(() => {});
  return {
    url: `http://127.0.0.1:${(listener.addr as Deno.NetAddr).port}`,
    connections: () => connections,
    bytesIn: () => bytesIn,
    close: async () => {
      listener.close();
      for (const conn of open) closeQuietly(conn);
      await loop;
      await Promise.all([...tasks]);
    },
  };
}

async function sha256(bytes: BufferSource): Promise<string> {
  const digest = new Uint8Array(await crypto.subtle.digest("SHA-256", bytes));
  return Array.from(digest, (b) => b.toString(16).padStart(2, "0")).join("");
}

/** Deterministic pseudo-random bytes (xorshift32). */
function randomBytes(seed: number, size: number): Uint8Array<ArrayBuffer> {
  const out = new Uint8Array(size);
  let x = seed | 1;
  for (let i = 0; i < size; i++) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    out[i] = x & 255;
  }
  return out;
}

/** A raw client connection: what it sent, and a reader for what comes back. */
class Client {
  #buf = "";
  #ended = false;
  private constructor(readonly conn: Deno.Conn) {}

  static async open(port: number): Promise<Client> {
    return new Client(await Deno.connect({ hostname: "127.0.0.1", port }));
  }

  /** Writes `text`; `false` when the connection is gone. */
  async send(text: string | Uint8Array): Promise<boolean> {
    const bytes = typeof text === "string" ? encoder.encode(text) : text;
    try {
      let at = 0;
      while (at < bytes.length) at += await this.conn.write(bytes.subarray(at));
      return true;
    } catch {
      return false;
    }
  }

  /** Reads until the buffered text contains `text` or the connection ends; returns it all. */
  async readUntil(text: string, timeout: number): Promise<string> {
    const deadline = Date.now() + timeout;
    const chunk = new Uint8Array(64 * 1024);
    while (!this.#buf.includes(text) && !this.#ended) {
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`timed out waiting for ${JSON.stringify(text)}`);
      const timer = setTimeout(() => closeQuietly(this.conn), left);
      try {
        const n = await this.conn.read(chunk);
        if (n === null) this.#ended = true;
        else this.#buf += decoder.decode(chunk.subarray(0, n), { stream: true });
      } catch {
        this.#ended = true;
      } finally {
        clearTimeout(timer);
      }
    }
    return this.#buf;
  }

  /** Reads to the end of the connection; returns the bytes that came. */
  async drain(timeout: number): Promise<{ bytes: number; ended: boolean }> {
    const deadline = Date.now() + timeout;
    const chunk = new Uint8Array(1024 * 1024);
    let bytes = 0;
    while (Date.now() < deadline) {
      const timer = setTimeout(() => closeQuietly(this.conn), deadline - Date.now());
      try {
        const n = await this.conn.read(chunk);
        if (n === null) return { bytes, ended: true };
        bytes += n;
      } catch {
        return { bytes, ended: Date.now() < deadline };
      } finally {
        clearTimeout(timer);
      }
    }
    return { bytes, ended: false };
  }

  /** The status of the response read so far. */
  get status(): number {
    return Number(/^HTTP\/1\.1 (\d{3})/.exec(this.#buf)?.[1] ?? 0);
  }

  close(): void {
    closeQuietly(this.conn);
  }
}

/** The sum of `inFlight` over the backends, from `GET /status`. */
async function inFlight(proxy: Goround): Promise<number> {
  const status = await (await fetch(`${proxy.adminUrl}/status`)).json();
  return status.backends.reduce((sum: number, b: { inFlight: number }) => sum + b.inFlight, 0);
}

function start(engine: string, backend: string, extra: readonly string[]): Promise<Goround> {
  return startGoround([
    "--engine",
    engine,
    "--backend",
    backend,
    "--workers",
    "1",
    "--access-log",
    "off",
    "--health-interval",
    "1h",
    ...extra,
  ]);
}

/** A backend: `/upload` answers with the SHA-256 of the body (after `?wait=ms`), `/small` with
 * "ok", `/big?id=N` streams 32 MiB lazily and notes when it was cancelled. */
function testBackend() {
  const cancelled = new Map<string, number>();
  const broken: string[] = [];
  const backend = recordingBackend(async (req) => {
    const url = new URL(req.url);
    if (url.pathname === "/upload") {
      await sleep(Number(url.searchParams.get("wait") ?? 0));
      try {
        return new Response(await sha256(await req.arrayBuffer()));
      } catch (error) {
        broken.push(String(error));
        return new Response("broken body", { status: 400 });
      }
    }
    if (url.pathname === "/big") {
      const id = url.searchParams.get("id") ?? "";
      let sent = 0;
      return new Response(
        new ReadableStream<Uint8Array>({
          pull(controller) {
            if (sent >= 32 * 1024 * 1024) return controller.close();
            controller.enqueue(new Uint8Array(64 * 1024));
            sent += 64 * 1024;
          },
          cancel() {
            cancelled.set(id, Date.now());
          },
        }, { highWaterMark: 0 }),
      );
    }
    return new Response("ok");
  });
  return { backend, cancelled, broken };
}

for (const engine of ENGINES) {
  Deno.test(`[${engine}] slow uploaders get 408 and never reach a backend`, async (t) => {
    const { backend } = testBackend();
    const relay = countingRelay(backend.port);
    const proxy = await start(engine, relay.url, ["--body-timeout", "1s"]);
    try {
      equal(
        (await fetch(`${proxy.url}/small`).then(async (r) => [r.status, await r.text()]))[0],
        200,
      );
      const connections = relay.connections();
      const bytes = relay.bytesIn();

      await t.step(
        "10 clients sending one byte every 300 ms: 408, the backend sees nothing",
        async () => {
          // 100,000 bytes: over 64 KiB, which goround streamed at once before it buffered bodies.
          const clients = await Promise.all(
            Array.from({ length: 10 }, () => Client.open(proxy.port)),
          );
          const started = Date.now();
          const answered = await Promise.all(clients.map(async (client, i) => {
            await client.send(
              `POST /upload?slow=${i} HTTP/1.1\r\nHost: a\r\nContent-Length: 100000\r\n\r\n`,
            );
            let done = false;
            const trickle = (async () => {
              for (let sent = 0; sent < 30 && !done; sent++) {
                if (!(await client.send("x"))) return;
                await sleep(300);
              }
            })();
            const text = await client.readUntil("\r\n\r\n", 6000).catch(() => "");
            done = true;
            await trickle;
            return { status: client.status, text, after: Date.now() - started };
          }));
          for (const client of clients) client.close();
          for (const { status, text, after } of answered) {
            equal(status, 408, text);
            assert(after < 4000, `408 after ${after} ms`);
          }
          equal(relay.bytesIn(), bytes, "no byte of the slow requests reached the backend");
          equal(relay.connections(), connections, "no new backend connection");
        },
      );

      await t.step(
        "a slow but steady upload reaches the backend only once it is whole",
        async () => {
          const body = randomBytes(7, 2000);
          const client = await Client.open(proxy.port);
          await client.send(`POST /upload HTTP/1.1\r\nHost: a\r\nContent-Length: 2000\r\n\r\n`);
          const before = relay.bytesIn();
          for (let at = 0; at < 1800; at += 200) {
            await client.send(body.subarray(at, at + 200));
            await sleep(100); // 2,000 bytes per second: above --body-min-rate's 500
          }
          equal(relay.bytesIn(), before, "nothing reached the backend while the body came in");
          await client.send(body.subarray(1800));
          const text = await client.readUntil(await sha256(body), 5000);
          equal(client.status, 200, text);
          assert(relay.bytesIn() > before + 2000, "the whole request went out at once");
          client.close();
        },
      );
    } finally {
      await proxy.stop();
      await relay.close();
      await backend.close();
    }
  });
}

for (const engine of ENGINES) {
  Deno.test(`[${engine}] a malformed chunked body within the buffer never reaches a backend`, async (t) => {
    const { backend, broken } = testBackend();
    const relay = countingRelay(backend.port);
    const proxy = await start(engine, relay.url, ["--request-buffer", "64KiB"]);
    try {
      equal(await fetch(`${proxy.url}/small`).then((r) => r.text()), "ok");
      const bytes = relay.bytesIn();

      await t.step(
        "a bad chunk size after good chunks: 400, the backend sees nothing",
        async () => {
          const client = await Client.open(proxy.port);
          // The bad chunk comes in a later write, once the request is under way.
          await client.send(
            "POST /upload HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n" +
              `10\r\n${"a".repeat(16)}\r\n`,
          );
          await sleep(200);
          await client.send("zz\r\nnot a chunk\r\n0\r\n\r\n");
          const text = await client.readUntil("\r\n\r\n", 5000);
          // hyper (under Deno.serve) closes the connection on a framing error, unanswered.
          if (engine === "deno" && text === "") equal(client.status, 0);
          else equal(client.status, 400, text);
          client.close();
          await sleep(100); // a late byte would have shown by now (loopback)
          equal(relay.bytesIn(), bytes, "no byte of it reached the backend");
        },
      );

      await t.step(
        "past the buffer it streams; a bad chunk then cuts the upstream body",
        async () => {
          const piece = "b".repeat(32 * 1024);
          const client = await Client.open(proxy.port);
          await client.send(
            "POST /upload HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n" +
              `${piece.length.toString(16)}\r\n${piece}\r\n`.repeat(4) + "zz\r\n",
          );
          const text = await client.readUntil("\r\n\r\n", 5000);
          assert(client.status !== 200, text);
          client.close();
          // The backend got a chunked body that ends without its last chunk, and refused it.
          await waitFor(() => broken.length === 1, {
            timeout: 5000,
            what: "the backend's refusal",
          });
          assert(relay.bytesIn() > bytes + 64 * 1024, "the start of the body was streamed");
        },
      );
    } finally {
      await proxy.stop();
      await relay.close();
      await backend.close();
    }
  });
}

for (const engine of ENGINES) {
  Deno.test(`[${engine}] a large upload streams past the buffer and arrives intact`, async () => {
    const { backend } = testBackend();
    const relay = countingRelay(backend.port);
    const proxy = await start(engine, relay.url, []);
    try {
      await fetch(`${proxy.url}/small`).then((r) => r.text());
      for (const chunked of [false, true]) {
        const body = randomBytes(chunked ? 11 : 13, 8 * 1024 * 1024);
        const before = relay.bytesIn();
        let at = 0;
        const stream = new ReadableStream<Uint8Array>({
          async pull(controller) {
            if (at >= body.length) return controller.close();
            // Past 4 MiB sent, wait for 2 MiB to have reached the backend: only a body that
            // streams gets there (one buffered whole would wait here for ever).
            if (at >= 4 * 1024 * 1024) {
              await waitFor(() => relay.bytesIn() - before > 2 * 1024 * 1024, {
                timeout: 5000,
                what: "the upload to stream to the backend",
              });
            }
            controller.enqueue(body.slice(at, at + 256 * 1024));
            at += 256 * 1024;
          },
        });
        const res = await fetch(`${proxy.url}/upload`, {
          method: "POST",
          body: stream,
          headers: chunked ? {} : { "content-length": String(body.length) },
        });
        equal(res.status, 200);
        equal(await res.text(), await sha256(body), chunked ? "chunked" : "Content-Length");
      }
    } finally {
      await proxy.stop();
      await relay.close();
      await backend.close();
    }
  });
}

for (const engine of ENGINES) {
  Deno.test(`[${engine}] clients that stop reading are cut off and their backends let go`, async () => {
    const { backend, cancelled } = testBackend();
    const proxy = await start(engine, backend.url, [
      "--send-timeout",
      "1s",
      "--max-conns",
      "5",
      "--queue-timeout",
      "500ms",
    ]);
    const stallers: Client[] = [];
    try {
      // 20 clients read a response head, then stop reading a 32 MiB body.
      const heads = await Promise.all(Array.from({ length: 20 }, async (_, i) => {
        const client = await Client.open(proxy.port);
        stallers.push(client);
        await client.send(`GET /big?id=${i} HTTP/1.1\r\nHost: a\r\n\r\n`);
        await client.readUntil("\r\n\r\n", 5000);
        return { id: String(i), status: client.status, at: Date.now() };
      }));
      const stalled = heads.filter((h) => h.status === 200);
      assert(stalled.length >= 5, `${stalled.length} got a 200 head`);
      for (const head of heads) assert(head.status === 200 || head.status === 503);
      await waitFor(() => stalled.every((h) => cancelled.has(h.id)), {
        timeout: 6000,
        what: "every stalled response's backend body to be cancelled",
      });
      for (const head of stalled) {
        const after = cancelled.get(head.id)! - head.at;
        assert(after < 1000 + 1500, `backend let go ${after} ms after the head`);
      }
      await waitFor(async () => (await inFlight(proxy)) === 0, {
        timeout: 3000,
        what: "in-flight back to 0",
      });
      // The stalled clients were disconnected: reading now ends before the whole body.
      for (const [i, client] of stallers.entries()) {
        if (heads[i]!.status !== 200) continue;
        const { bytes, ended } = await client.drain(5000);
        assert(ended && bytes < 32 * 1024 * 1024, `client ${i}: ${bytes} bytes, ended ${ended}`);
      }
      // The slots are free again: other requests get 200.
      for (let i = 0; i < 10; i++) {
        const res = await fetch(`${proxy.url}/small`);
        equal(res.status, 200);
        await res.text();
      }
      assert(
        proxy.stderr.some((line) => line.includes("stopped reading the response for 1s")),
        proxy.stderr.join("\n"),
      );
      assert(
        !proxy.stderr.some((line) => line.includes("internal error")),
        proxy.stderr.join("\n"),
      );
    } finally {
      for (const client of stallers) client.close();
      await proxy.stop();
      await backend.close();
    }
  });
}

for (const engine of ENGINES) {
  Deno.test(`[${engine}] concurrent 1 MiB uploads within a small total: none fails, memory bounded`, async () => {
    const { backend } = testBackend();
    const proxy = await start(engine, backend.url, ["--request-buffer-total", "4MiB"]);
    let peak = 0;
    let sampling = true;
    const sampler = (async () => {
      while (sampling) {
        const status = await (await fetch(`${proxy.adminUrl}/status`)).json();
        peak = Math.max(peak, status.bufferedBytes);
        await sleep(10);
      }
    })();
    try {
      const results = await Promise.all(Array.from({ length: 32 }, async (_, i) => {
        const body = randomBytes(100 + i, 1024 * 1024);
        // The backend waits before reading, so buffered bodies are held a while.
        const res = await fetch(`${proxy.url}/upload?wait=100`, { method: "POST", body });
        return { status: res.status, text: await res.text(), expected: await sha256(body) };
      }));
      for (const { status, text, expected } of results) {
        equal(status, 200);
        equal(text, expected);
      }
      sampling = false;
      await sampler;
      assert(peak > 0, "bodies were buffered");
      assert(peak <= 4 * 1024 * 1024, `at most 4 MiB held at once (saw ${peak})`);
      const status = await (await fetch(`${proxy.adminUrl}/status`)).json();
      equal(status.bufferedBytes, 0, "every byte of the budget came back");
    } finally {
      sampling = false;
      await sampler;
      await proxy.stop();
      await backend.close();
    }
  });
}

for (const engine of ENGINES) {
  Deno.test(`[${engine}] bodies that fail while buffered give their budget back`, async () => {
    const { backend } = testBackend();
    const proxy = await start(engine, backend.url, ["--request-buffer-total", "1MiB"]);
    const send = async (request: string, closeEarly: boolean) => {
      const conn = await Deno.connect({ hostname: "127.0.0.1", port: proxy.port });
      await conn.write(encoder.encode(request));
      if (!closeEarly) await conn.read(new Uint8Array(1024)).catch(() => null);
      conn.close();
    };
    try {
      // Each would hold a 128 KiB buffer of a 1 MiB budget: 30 of them would spend it 4 times.
      for (let i = 0; i < 10; i++) {
        await send(
          "POST /u HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nbad\r\n",
          false,
        );
        await send("POST /u HTTP/1.1\r\nHost: x\r\nContent-Length: 5000\r\n\r\nshort", true);
        await send(
          "POST /u HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nab",
          true,
        );
      }
      await waitFor(async () => {
        const status = await (await fetch(`${proxy.adminUrl}/status`)).json();
        return status.bufferedBytes === 0;
      }, { what: "the budget to come back to 0" });
      // And bodies are still buffered (the budget is not spent): a small upload is retried-safe.
      const res = await fetch(`${proxy.url}/upload`, { method: "POST", body: "hello" });
      equal(res.status, 200);
      await res.text();
    } finally {
      await proxy.stop();
      await backend.close();
    }
  });
}
