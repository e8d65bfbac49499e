import { equal, match } from "node:assert/strict";
import { ENGINES } from "../../lib/config/config.ts";
import { goroundFor, recordingBackend, startGoround } from "../support/helpers.ts";

/**
 * Bodies stream through recycled buffers (`lib/http/buffers.ts`): a buffer handed back a moment too
 * early would be overwritten by another transfer while its bytes were still on their way. So
 * many transfers of distinct random bytes run at once, both ways, with and without
 * `Content-Length`, and every byte is checked.
 */

/** Deterministic pseudo-random bytes (xorshift32), so both ends know what to expect. */
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

async function sha256(bytes: Uint8Array<ArrayBuffer> | ArrayBuffer): Promise<string> {
  const digest = new Uint8Array(await crypto.subtle.digest("SHA-256", bytes));
  return Array.from(digest, (b) => b.toString(16).padStart(2, "0")).join("");
}

/** A stream of `bytes` in pieces of uneven sizes (sent chunked: no length is known). */
function unevenStream(bytes: Uint8Array): ReadableStream<Uint8Array> {
  let at = 0;
  let n = 0;
  return new ReadableStream({
    pull(controller) {
      if (at >= bytes.length) return controller.close();
      const size = [1, 7_000, 65_536, 300_000, 123][n++ % 5]!;
      controller.enqueue(bytes.slice(at, at + size));
      at += size;
    },
  });
}

for (const engine of ENGINES) {
  Deno.test(`[${engine}] concurrent large bodies arrive byte for byte, both ways`, async () => {
    const backend = recordingBackend(async (req) => {
      const url = new URL(req.url);
      if (req.method === "POST") return new Response(await sha256(await req.arrayBuffer()));
      const [, seed, size] = url.pathname.split("/").map(Number);
      const bytes = randomBytes(seed!, size!);
      return new Response(url.searchParams.has("chunked") ? unevenStream(bytes) : bytes);
    });
    const proxy = await goroundFor(engine, backend.url);
    try {
      const job = async (i: number) => {
        const seed = 1000 + i;
        const size = 512 * 1024 + i * 97_531;
        const expected = await sha256(randomBytes(seed, size));
        switch (i % 4) {
          case 0:
          case 1: {
            const chunked = i % 4 === 1;
            const res = await fetch(`${proxy.url}/${seed}/${size}${chunked ? "?chunked" : ""}`);
            equal(res.status, 200);
            equal(res.headers.has("content-length"), !chunked, "framing passes through");
            equal(await sha256(await res.arrayBuffer()), expected, `download ${i}`);
            break;
          }
          default: {
            const bytes = randomBytes(seed, size);
            const chunked = i % 4 === 3;
            const res = await fetch(`${proxy.url}/upload`, {
              method: "POST",
              body: chunked ? unevenStream(bytes) : bytes,
            });
            equal(res.status, 200);
            equal(await res.text(), expected, `upload ${i} (${chunked ? "chunked" : "length"})`);
          }
        }
      };
      for (let round = 0; round < 2; round++) {
        await Promise.all(Array.from({ length: 16 }, (_, i) => job(i + round * 16)));
      }
    } finally {
      await proxy.stop();
      await backend.close();
    }
  });
}

for (const engine of ENGINES) {
  Deno.test(`[${engine}] concurrent small bodies, read whole and replayed on a retry, arrive byte for byte`, async () => {
    // One backend refuses every PUT with a retryable 502 after reading it, so about half of the
    // requests are replayed on the other: the whole body (kept in a recycled buffer) must
    // outlive the first try, and go back only when the exchange is over.
    const refusing = recordingBackend(async (req) => {
      await req.arrayBuffer();
      return new Response("try elsewhere", { status: 502 });
    });
    const echoing = recordingBackend(async (req) => {
      const bytes = await req.arrayBuffer();
      await new Promise((resolve) => setTimeout(resolve, bytes.byteLength % 5));
      return new Response(await sha256(bytes));
    });
    const proxy = await startGoround([
      "--engine",
      engine,
      "--backend",
      refusing.url,
      "--backend",
      echoing.url,
      "--workers",
      "1",
      "--access-log",
      "off",
      "--max-fails",
      "0",
    ]);
    try {
      const job = async (i: number) => {
        const size = 1 + ((i * 7_919) % 65_536);
        const bytes = randomBytes(5000 + i, size);
        const res = await fetch(`${proxy.url}/put/${i}`, { method: "PUT", body: bytes });
        equal(res.status, 200);
        equal(await res.text(), await sha256(bytes), `body ${i} (${size} bytes)`);
      };
      for (let round = 0; round < 4; round++) {
        await Promise.all(Array.from({ length: 32 }, (_, i) => job(i + round * 32)));
      }
      equal(refusing.requests.length > 20, true, "some requests were replayed");
    } finally {
      await proxy.stop();
      await refusing.close();
      await echoing.close();
    }
  });
}

for (const engine of ENGINES) {
  Deno.test(`[${engine}] a large Content-Length upload to a backend that reads slowly arrives intact`, async () => {
    // The backend reads in small pieces with pauses, so goround's writes to it wait while it keeps
    // reading the client's body ahead into recycled buffers: a buffer given back before its write
    // finished (or twice) would be lent again and overwritten mid-upload.
    const BLOCK = 128 * 1024;
    const size = 24 * 1024 * 1024;
    const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
    const served = (async () => {
      for await (const conn of listener) {
        (async () => {
          const buf = new Uint8Array(16 * 1024);
          let head = "";
          let at = -1;
          let leftover = new Uint8Array(0);
          while (at < 0) {
            const n = await conn.read(buf);
            if (n === null) return conn.close();
            const text = new TextDecoder("latin1").decode(buf.subarray(0, n));
            const end = (head + text).indexOf("\r\n\r\n");
            if (end >= 0) leftover = buf.slice(end + 4 - head.length, n);
            head += text;
            at = end;
          }
          const length = Number(/content-length: *(\d+)/i.exec(head)?.[1] ?? 0);
          let offset = 0;
          let wrong = 0;
          const check = (bytes: Uint8Array) => {
            for (let i = 0; i < bytes.length; i++, offset++) {
              if (bytes[i] !== ((offset / BLOCK) | 0) % 251) wrong++;
            }
          };
          check(leftover);
          for (let reads = 0; offset < length; reads++) {
            const n = await conn.read(buf);
            if (n === null) break;
            check(buf.subarray(0, n));
            if (reads % 4 === 0) await new Promise((resolve) => setTimeout(resolve, 1));
          }
          const text = `${offset} bytes, ${wrong} wrong`;
          await conn.write(
            new TextEncoder().encode(
              `HTTP/1.1 200 OK\r\ncontent-length: ${text.length}\r\nconnection: close\r\n\r\n${text}`,
            ),
          );
          conn.close();
        })();
      }
    })();
    const proxy = await goroundFor(
      engine,
      `http://127.0.0.1:${(listener.addr as Deno.NetAddr).port}`,
    );
    try {
      const body = new Uint8Array(size);
      for (let b = 0; b * BLOCK < size; b++) body.fill(b % 251, b * BLOCK, (b + 1) * BLOCK);
      const res = await fetch(`${proxy.url}/upload`, { method: "POST", body });
      equal(res.status, 200);
      equal(await res.text(), `${size} bytes, 0 wrong`);
    } finally {
      await proxy.stop();
      listener.close();
      await served;
    }
  });
}

for (const engine of ENGINES) {
  Deno.test(`[${engine}] a large download to a client that reads slowly arrives intact`, async () => {
    // The mirror image: goround's writes to the client wait while it reads the backend's body
    // ahead into recycled buffers.
    const BLOCK = 128 * 1024;
    const size = 24 * 1024 * 1024;
    const body = new Uint8Array(size);
    for (let b = 0; b * BLOCK < size; b++) body.fill(b % 251, b * BLOCK, (b + 1) * BLOCK);
    const backend = recordingBackend(() => new Response(body));
    const proxy = await goroundFor(engine, backend.url);
    const conn = await Deno.connect({
      hostname: "127.0.0.1",
      port: Number(new URL(proxy.url).port),
    });
    try {
      await conn.write(
        new TextEncoder().encode("GET /big HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"),
      );
      const buf = new Uint8Array(16 * 1024);
      let head = "";
      let offset = -1;
      let wrong = 0;
      for (let reads = 0;; reads++) {
        const n = await conn.read(buf);
        if (n === null) break;
        let from = 0;
        if (offset < 0) {
          head += new TextDecoder("latin1").decode(buf.subarray(0, n));
          const end = head.indexOf("\r\n\r\n");
          if (end < 0) continue;
          from = n - (head.length - end - 4);
          offset = 0;
        }
        for (let i = from; i < n; i++, offset++) {
          if (buf[i] !== ((offset / BLOCK) | 0) % 251) wrong++;
        }
        if (reads % 4 === 0) await new Promise((resolve) => setTimeout(resolve, 1));
      }
      match(head, /^HTTP\/1\.1 200 /);
      equal(`${offset} bytes, ${wrong} wrong`, `${size} bytes, 0 wrong`);
    } finally {
      conn.close();
      await proxy.stop();
      await backend.close();
    }
  });
}
