/**
 * Tests for goround's own HTTP/1.1 front end, `serveHttp1()` (`lib/front/server.ts`), run in-process
 * with a forwarder written here, over real loopback sockets and raw bytes.
 *
 * @module
 */

import { deepEqual, equal, match, ok as assert } from "node:assert/strict";
import type { Framing } from "../../lib/http/http1.ts";
import { type Forwarder, type Incoming, localReply, type Reply } from "../../lib/proxy/forward.ts";
import { type Http1Server, serveHttp1, type ServerOptions } from "../../lib/front/server.ts";
import type { Bytes } from "../../lib/upstream/client.ts";
import { waitFor } from "../support/helpers.ts";
import { field, fields, Wire } from "../support/raw_client.ts";

const encoder = new TextEncoder();
const decoder = new TextDecoder();

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** A server under test, with what its forwarder saw. */
interface Harness {
  readonly port: number;
  readonly server: Http1Server;
  /** Every request the forwarder was given (headers copied), in order. */
  readonly seen: Incoming[];
  /** What `onError` was called with. */
  readonly errors: unknown[];
  /** Opens a client connection (closed when the test ends). */
  readonly connect: () => Promise<Wire>;
}

/**
 * Runs `fn` against a fresh `serveHttp1()` on a free loopback port, then closes every client
 * connection and shuts the server down. `onError` must not have been called.
 */
async function withServer(
  forward: (incoming: Incoming) => Reply | Promise<Reply>,
  fn: (harness: Harness) => Promise<void>,
  options: Partial<Omit<ServerOptions, "forward" | "onError">> = {},
): Promise<void> {
  const seen: Incoming[] = [];
  const errors: unknown[] = [];
  const wires: Wire[] = [];
  const forwarder: Forwarder = async (incoming) => {
    seen.push({ ...incoming, headers: [...incoming.headers] });
    return await forward(incoming);
  };
  const server = serveHttp1(Deno.listen({ hostname: "127.0.0.1", port: 0 }), {
    forward: forwarder,
    headerTimeout: 3000,
    keepAliveTimeout: 3000,
    sendTimeout: 3000,
    requestBuffer: 1024 * 1024,
    bodyTimeout: 3000,
    bodyMinRate: 0,
    ...options,
    onError: (error) => errors.push(error),
  });
  const port = server.addr.port;
  const connect = async () => {
    const wire = new Wire(await Deno.connect({ hostname: "127.0.0.1", port }));
    wires.push(wire);
    return wire;
  };
  let hung = false;
  try {
    await fn({ port, server, seen, errors, connect });
  } finally {
    for (const wire of wires) wire.close();
    hung = !(await shutdownWithin(server, 3000));
  }
  // A shutdown that hangs would hang the whole run; it was aborted instead.
  assert(!hung, "shutdown() did not finish within 3 s after every client closed");
  deepEqual(errors, [], "onError was called");
}

/** Shuts `server` down; aborts it and returns false if that takes longer than `ms`. */
async function shutdownWithin(server: Http1Server, ms: number): Promise<boolean> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const late = new Promise<false>((resolve) => (timer = setTimeout(() => resolve(false), ms)));
  const finished = await Promise.race([server.shutdown().then(() => true), late]);
  clearTimeout(timer);
  if (!finished) server.abort();
  return finished;
}

/** A test with the op and resource sanitizers on, whatever the command line says. */
function test(name: string, fn: (t: Deno.TestContext) => Promise<void>): void {
  Deno.test({ name, sanitizeOps: true, sanitizeResources: true, fn });
}

/** The default forwarder: a local reply naming the request. */
function echo(incoming: Incoming): Reply {
  return localReply(200, `${incoming.method} ${incoming.target}`);
}

/** A reply as the upstream client would hand it over. */
function upstream(
  status: number,
  options: {
    headers?: [string, string][];
    body?: Bytes | ReadableStream<Bytes> | null;
    framing?: Framing;
    reason?: string;
  } = {},
): Reply {
  const body = options.body ?? null;
  const framing: Framing = options.framing ??
    (body === null
      ? { kind: "none" }
      : body instanceof Uint8Array
      ? { kind: "length", length: body.length }
      : { kind: "chunked" });
  return {
    kind: "upstream",
    response: {
      status,
      reason: options.reason ?? "OK",
      headers: options.headers ?? [],
      framing,
      body,
      reused: false,
      release: () => {},
    },
  };
}

/** A stream of `parts`; it ends with an error instead of closing when `fail` is set. */
function streamOf(
  parts: readonly string[],
  options: { fail?: boolean; onCancel?: () => void } = {},
): ReadableStream<Bytes> {
  let i = 0;
  return new ReadableStream<Bytes>({
    pull(controller) {
      const part = parts[i++];
      if (part !== undefined) controller.enqueue(encoder.encode(part));
      else if (options.fail) controller.error(new Error("backend broke off"));
      else controller.close();
    },
    cancel() {
      options.onCancel?.();
    },
  });
}

/** How a body reached the forwarder. */
function kindOf(body: Incoming["body"]): string {
  return body === null
    ? "null"
    : body instanceof Uint8Array
    ? "bytes"
    : Array.isArray(body)
    ? "parts"
    : "stream";
}

async function bodyText(body: Incoming["body"]): Promise<string> {
  if (body === null) return "";
  if (body instanceof Uint8Array) return decoder.decode(body);
  if (Array.isArray(body)) return body.map((part) => decoder.decode(part)).join("");
  const reader = (body as ReadableStream<Bytes>).getReader();
  let text = "";
  while (true) {
    const { done, value } = await reader.read();
    if (done) return text;
    text += decoder.decode(value, { stream: true });
  }
}

/** A GET request head. */
function get(target: string, extra = "", version = "1.1"): string {
  return `GET ${target} HTTP/${version}\r\nHost: test.example\r\n${extra}\r\n`;
}

test("`serveHttp1()` keeps a connection alive across requests", async (t) => {
  let n = 0;
  await withServer(async (incoming) => {
    const body = await bodyText(incoming.body);
    return localReply(200, `#${n++} ${incoming.method} ${incoming.target} ${body}`);
  }, async ({ connect, seen, server }) => {
    const wire = await connect();

    await t.step("sequential requests on one connection are answered in order", async () => {
      await wire.send(get("/a", "X-Mixed-Case: Value One\r\n"));
      const first = await wire.response();
      equal(first.status, 200);
      equal(first.body, "#0 GET /a \n");
      equal(field(first, "connection"), undefined, "HTTP/1.1 keep-alive needs no Connection");
      equal(field(first, "content-length"), String(first.body.length));
      await wire.send(
        "POST /b?q=1 HTTP/1.1\r\nHost: shop.example:8080\r\nContent-Length: 5\r\n\r\nhello",
      );
      equal((await wire.response()).body, "#1 POST /b?q=1 hello\n");
      await wire.send(get("/c"));
      equal((await wire.response()).body, "#2 GET /c \n");
      equal(server.connections(), 1);
    });

    await t.step("the forwarder sees method, target, authority, fields, peer and length", () => {
      equal(seen.length, 3);
      const [a, b] = seen;
      equal(a!.method, "GET");
      equal(a!.target, "/a");
      equal(a!.authority, "test.example");
      deepEqual(a!.headers, [["host", "test.example"], ["x-mixed-case", "Value One"]]);
      equal(a!.clientIp, "127.0.0.1");
      equal(a!.proto, "http");
      equal(a!.bodyLength, 0);
      equal(a!.body, null, "no body without Content-Length or Transfer-Encoding");
      equal(b!.method, "POST");
      equal(b!.target, "/b?q=1");
      equal(b!.authority, "shop.example:8080");
      deepEqual(b!.headers, [["host", "shop.example:8080"], ["content-length", "5"]]);
      equal(b!.bodyLength, 5);
    });
  });
});

test("`serveHttp1()` answers pipelined requests in order", async (t) => {
  await withServer(async (incoming) => {
    // The first request is the slowest: answers must still come back in request order.
    if (incoming.target === "/1") await sleep(60);
    const body = await bodyText(incoming.body);
    return localReply(200, `${incoming.target} ${body}`);
  }, async ({ connect, seen }) => {
    await t.step("three requests in one write, one with a body", async () => {
      const wire = await connect();
      await wire.send(
        get("/1") + "POST /2 HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabc" + get("/3"),
      );
      deepEqual(
        [(await wire.response()).body, (await wire.response()).body, (await wire.response()).body],
        ["/1 \n", "/2 abc\n", "/3 \n"],
      );
      deepEqual(seen.map((s) => s.target), ["/1", "/2", "/3"]);
    });

    await t.step("a pipelined Connection: close ends the connection after its answer", async () => {
      const wire = await connect();
      await wire.send(get("/4") + get("/5", "Connection: close\r\n") + get("/6"));
      equal((await wire.response()).body, "/4 \n");
      const last = await wire.response();
      equal(last.body, "/5 \n");
      equal(field(last, "connection"), "close");
      equal(await wire.closed(), "", "nothing is answered after Connection: close");
      equal(seen.at(-1)!.target, "/5");
    });
  });
});

test("`serveHttp1()` honours Connection and the HTTP version", async (t) => {
  await withServer(echo, async ({ connect, seen }) => {
    await t.step("Connection: close is answered with connection: close, then closed", async () => {
      const wire = await connect();
      await wire.send(get("/", "Connection: close\r\n"));
      const res = await wire.response();
      equal(res.status, 200);
      equal(field(res, "connection"), "close");
      equal(await wire.closed(), "");
    });

    await t.step("an HTTP/1.0 request without keep-alive is answered, then closed", async () => {
      const wire = await connect();
      await wire.send("GET /old HTTP/1.0\r\n\r\n");
      const res = await wire.response();
      equal(res.status, 200);
      match(res.statusLine, /^HTTP\/1\.1 200 /);
      equal(field(res, "connection"), "close");
      equal(res.body, "GET /old\n");
      equal(await wire.closed(), "");
      equal(seen.at(-1)!.authority, "", "HTTP/1.0 may omit Host");
    });

    await t.step("HTTP/1.0 with Connection: keep-alive is kept alive and says so", async () => {
      const wire = await connect();
      await wire.send(get("/k1", "Connection: keep-alive\r\n", "1.0"));
      const first = await wire.response();
      equal(first.body, "GET /k1\n");
      equal(field(first, "connection"), "keep-alive");
      await wire.send(get("/k2", "Connection: Keep-Alive\r\n", "1.0"));
      const second = await wire.response();
      equal(second.body, "GET /k2\n");
      equal(field(second, "connection"), "keep-alive");
      await wire.send(get("/k3", "", "1.0"));
      equal(field(await wire.response(), "connection"), "close");
      equal(await wire.closed(), "");
    });
  });
});

test("`serveHttp1()` keeps each connection's bytes its own as connections come and go", async () => {
  // Connection buffers are reused by later connections: each answer must still be built from
  // its own connection's request, head and body, however the requests arrive.
  await withServer(async (incoming) => {
    const body = await bodyText(incoming.body);
    return localReply(200, `${incoming.target} ${body}`);
  }, async ({ connect }) => {
    for (let round = 0; round < 3; round++) {
      await Promise.all(Array.from({ length: 30 }, async (_, i) => {
        const id = `r${round}c${i}`;
        const wire = await connect();
        const payload = id.repeat(50 + i);
        const half = `POST /${id} HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n`;
        await wire.send(half);
        await sleep(i % 3);
        await wire.send(`Connection: close\r\n\r\n${payload.length.toString(16)}\r\n`);
        await wire.send(`${payload}\r\n0\r\n\r\n`);
        equal((await wire.response()).body, `/${id} ${payload}\n`);
        wire.close();
      }));
    }
  });
});

test("`serveHttp1()` hands request bodies to the forwarder", async (t) => {
  const bodies = new Map<string, { kind: string; text: string }>();
  await withServer(async (incoming) => {
    const text = await bodyText(incoming.body);
    bodies.set(incoming.target, { kind: kindOf(incoming.body), text });
    return localReply(200, `${incoming.target} ${text.length}`);
  }, async ({ connect, seen }) => {
    await t.step("a small Content-Length body arrives as bytes", async () => {
      const wire = await connect();
      const body = "x".repeat(1000);
      await wire.send(`POST /small HTTP/1.1\r\nHost: a\r\nContent-Length: 1000\r\n\r\n${body}`);
      equal((await wire.response()).body, "/small 1000\n");
      deepEqual(bodies.get("/small"), { kind: "bytes", text: body });
      equal(seen.at(-1)!.bodyLength, 1000);
    });

    await t.step("a body of exactly 64 KiB is still read whole", async () => {
      const wire = await connect();
      const body = "y".repeat(64 * 1024);
      await wire.send(`PUT /64k HTTP/1.1\r\nHost: a\r\nContent-Length: ${body.length}\r\n\r\n`);
      await wire.send(body);
      equal((await wire.response()).body, `/64k ${body.length}\n`);
      deepEqual(bodies.get("/64k"), { kind: "bytes", text: body });
    });

    await t.step(
      "a body up to the request buffer arrives whole; a pipelined request after it is kept",
      async () => {
        const wire = await connect();
        let body = "";
        for (let i = 0; body.length < 300_000; i++) body += `${i},`;
        await wire.send(
          `POST /large HTTP/1.1\r\nHost: a\r\nContent-Length: ${body.length}\r\n\r\n${body}` +
            get("/after-large"),
        );
        equal((await wire.response()).body, `/large ${body.length}\n`);
        equal(bodies.get("/large")?.kind, "parts", "300 KB is three recycled buffers");
        assert(bodies.get("/large")?.text === body, "the buffered body arrives intact");
        equal(seen.find((s) => s.target === "/large")?.bodyLength, body.length);
        equal((await wire.response()).body, "/after-large 0\n");
      },
    );

    await t.step(
      "a chunked body is decoded whole and goes on with its length; the next request is kept",
      async () => {
        const wire = await connect();
        await wire.send(
          "POST /chunked HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n" +
            "3\r\nabc\r\n5;ext=1\r\nde fg\r\n0\r\nX-Trailer: t\r\n\r\n" + get("/after-chunked"),
        );
        equal((await wire.response()).body, "/chunked 8\n");
        deepEqual(bodies.get("/chunked"), { kind: "bytes", text: "abcde fg" });
        equal(seen.find((s) => s.target === "/chunked")?.bodyLength, 8);
        equal((await wire.response()).body, "/after-chunked 0\n");
        equal(seen.at(-1)!.target, "/after-chunked");
      },
    );

    await t.step("an empty chunked body goes on as Content-Length: 0", async () => {
      const wire = await connect();
      await wire.send(
        "POST /empty-chunked HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
      );
      equal((await wire.response()).body, "/empty-chunked 0\n");
      const empty = seen.find((s) => s.target === "/empty-chunked")!;
      equal(empty.bodyLength, 0);
      assert(empty.body instanceof Uint8Array);
    });

    await t.step(
      "a large chunked body, read in large reads past its end, keeps the requests after it",
      async () => {
        const wire = await connect();
        const sizes = [1, 70_000, 3, 200_000, 16_384, 5, 300_000, 90_000];
        let body = "";
        let wireBody = "";
        for (const [i, size] of sizes.entries()) {
          const piece = Array.from({ length: size }, (_, j) => "abcdefghij"[(i + j) % 10])
            .join("");
          body += piece;
          wireBody += `${size.toString(16)}${i % 2 ? ";ext" : ""}\r\n${piece}\r\n`;
        }
        await wire.send(
          "POST /large-chunked HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n" +
            wireBody + "0\r\n\r\n" + get("/after-1") + get("/after-2"),
        );
        equal((await wire.response()).body, `/large-chunked ${body.length}\n`);
        assert(bodies.get("/large-chunked")?.text === body, "the decoded body arrives intact");
        equal((await wire.response()).body, "/after-1 0\n");
        equal((await wire.response()).body, "/after-2 0\n");
      },
    );

    await t.step(
      "a chunked body sent piece by piece is forwarded only once it has all arrived",
      async () => {
        const wire = await connect();
        const before = seen.length;
        await wire.send(
          "POST /slow-chunks HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n",
        );
        await wire.send("4\r\nab");
        await sleep(50);
        await wire.send("cd\r\n2\r\nef\r\n0\r\n");
        await sleep(50);
        equal(seen.length, before, "nothing is forwarded before the body's end");
        await wire.send("\r\n");
        equal((await wire.response()).body, "/slow-chunks 6\n");
        deepEqual(bodies.get("/slow-chunks"), { kind: "bytes", text: "abcdef" });
        await wire.send(get("/after-slow"));
        equal((await wire.response()).body, "/after-slow 0\n");
      },
    );

    await t.step("a malformed chunk gets 400 and is never forwarded", async () => {
      const wire = await connect();
      const before = seen.length;
      await wire.send(
        "POST /bad-chunk HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n" +
          "4\r\nabcd\r\nzz\r\nnope\r\n0\r\n\r\n",
      );
      const res = await wire.response();
      equal(res.status, 400);
      equal(await wire.closed(), "");
      equal(seen.length, before, "the forwarder never saw it");
    });

    await t.step("Content-Length: 0 gives an empty byte body; no framing gives none", async () => {
      const wire = await connect();
      await wire.send(
        "POST /empty HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n" + get("/none"),
      );
      equal((await wire.response()).body, "/empty 0\n");
      equal((await wire.response()).body, "/none 0\n");
      const [empty, none] = seen.slice(-2);
      assert(empty!.body instanceof Uint8Array, "Content-Length: 0 gives a Uint8Array");
      equal(empty!.body.length, 0);
      equal(empty!.bodyLength, 0);
      equal(none!.body, null);
    });
  });
});

test("`serveHttp1()` streams bodies beyond the request buffer", async (t) => {
  const bodies = new Map<string, { kind: string; text: string }>();
  await withServer(async (incoming) => {
    const text = await bodyText(incoming.body);
    bodies.set(incoming.target, { kind: kindOf(incoming.body), text });
    return localReply(200, `${incoming.target} ${text.length}`);
  }, async ({ connect, seen }) => {
    await t.step(
      "the buffered start, then the rest; a pipelined request after it is kept",
      async () => {
        const wire = await connect();
        let body = "";
        for (let i = 0; body.length < 100_000; i++) body += `${i},`;
        await wire.send(
          `POST /large HTTP/1.1\r\nHost: a\r\nContent-Length: ${body.length}\r\n\r\n${body}` +
            get("/after-large"),
        );
        equal((await wire.response()).body, `/large ${body.length}\n`);
        equal(bodies.get("/large")?.kind, "stream");
        assert(bodies.get("/large")?.text === body, "the streamed body arrives intact");
        equal(seen.find((s) => s.target === "/large")?.bodyLength, body.length);
        equal((await wire.response()).body, "/after-large 0\n");
      },
    );

    await t.step("a chunked body past the buffer streams on chunked", async () => {
      const wire = await connect();
      const piece = "z".repeat(40_000);
      await wire.send(
        "POST /chunked HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n" +
          `${piece.length.toString(16)}\r\n${piece}\r\n`.repeat(3) + "0\r\n\r\n" +
          get("/after-chunked"),
      );
      equal((await wire.response()).body, `/chunked ${piece.length * 3}\n`);
      deepEqual(bodies.get("/chunked"), { kind: "stream", text: piece.repeat(3) });
      equal(seen.find((s) => s.target === "/chunked")?.bodyLength, -1);
      equal((await wire.response()).body, "/after-chunked 0\n");
    });

    await t.step("a chunked body sent piece by piece streams once past the buffer", async () => {
      const wire = await connect();
      const before = seen.length;
      const piece = "q".repeat(70_000);
      await wire.send(
        "POST /slow-chunks HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n" +
          `${piece.length.toString(16)}\r\n${piece}\r\n`,
      );
      await waitFor(() => seen.length === before + 1, { timeout: 2000, what: "the forwarder" });
      await wire.send("2\r\nef\r\n0\r\n\r\n");
      equal((await wire.response()).body, `/slow-chunks ${piece.length + 2}\n`);
      equal(bodies.get("/slow-chunks")?.text, `${piece}ef`);
    });
  }, { requestBuffer: 64 * 1024 });
});

test("`serveHttp1()` with no request buffer streams every body as it arrives", async (t) => {
  const bodies = new Map<string, { kind: string; text: string }>();
  await withServer(async (incoming) => {
    const text = await bodyText(incoming.body);
    bodies.set(incoming.target, { kind: kindOf(incoming.body), text });
    return localReply(200, `${incoming.target} ${text.length}`);
  }, async ({ connect, seen }) => {
    await t.step(
      "a chunked body sent piece by piece is streamed before it has all arrived",
      async () => {
        const wire = await connect();
        const before = seen.length;
        await wire.send(
          "POST /slow-chunks HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n",
        );
        await wire.send("4\r\nab");
        await waitFor(() => seen.length === before + 1, { timeout: 2000, what: "the forwarder" });
        await wire.send("cd\r\n2\r\nef\r\n0\r\n");
        await sleep(20);
        await wire.send("\r\n");
        equal((await wire.response()).body, "/slow-chunks 6\n");
        deepEqual(bodies.get("/slow-chunks"), { kind: "stream", text: "abcdef" });
        equal(seen.at(-1)!.bodyLength, -1);
      },
    );

    await t.step("a small Content-Length body streams too", async () => {
      const wire = await connect();
      await wire.send("POST /small HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabc");
      equal((await wire.response()).body, "/small 3\n");
      deepEqual(bodies.get("/small"), { kind: "stream", text: "abc" });
    });
  }, { requestBuffer: 0 });
});

test("`serveHttp1()` ends a connection whose streamed body the forwarder left unread", async () => {
  await withServer(() => localReply(413, "not reading that"), async ({ connect }) => {
    const wire = await connect();
    // Head and the start of a large body; the rest is never sent.
    await wire.send("POST /big HTTP/1.1\r\nHost: a\r\nContent-Length: 1000000\r\n\r\nabc");
    const res = await wire.response();
    equal(res.status, 413);
    equal(field(res, "connection"), "close", "the unread body cannot be skipped");
    equal(await wire.closed(), "");
  }, { requestBuffer: 0 });
});

test("`serveHttp1()` answers Expect: 100-continue", async (t) => {
  await withServer(async (incoming) => {
    return localReply(200, `got ${await bodyText(incoming.body)}`);
  }, async ({ connect }) => {
    await t.step("100 Continue comes before the body is sent, then the response", async () => {
      const wire = await connect();
      await wire.send(
        "POST /e HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n",
      );
      const interim = await wire.response();
      equal(interim.statusLine, "HTTP/1.1 100 Continue");
      await wire.send("hello");
      const final = await wire.response();
      equal(final.status, 200);
      equal(final.body, "got hello\n");
    });

    await t.step("for a chunked upload too", async () => {
      const wire = await connect();
      await wire.send(
        "POST /e HTTP/1.1\r\nHost: a\r\nExpect: 100-Continue\r\nTransfer-Encoding: chunked\r\n\r\n",
      );
      equal((await wire.response()).status, 100);
      await wire.send("2\r\nhi\r\n0\r\n\r\n");
      equal((await wire.response()).body, "got hi\n");
    });

    await t.step("a request without a body gets no 100 Continue", async () => {
      const wire = await connect();
      await wire.send(get("/", "Expect: 100-continue\r\n"));
      const res = await wire.response();
      equal(res.status, 200);
      equal(res.body, "got \n");
    });
  });
});

test("`serveHttp1()` frames response bodies for the client", async (t) => {
  let cancelled = 0;
  const replies: Record<string, () => Reply> = {
    "/bytes": () =>
      upstream(200, {
        // A stale Content-Length from the backend must not survive: goround frames the body.
        headers: [["content-length", "999"], ["x-kind", "bytes"]],
        body: encoder.encode("hello"),
      }),
    "/stream-length": () =>
      upstream(200, {
        headers: [["content-length", "11"]],
        body: streamOf(["hello", " world"]),
        framing: { kind: "length", length: 11 },
      }),
    "/stream-chunked": () =>
      upstream(200, {
        headers: [["transfer-encoding", "chunked"], ["x-kind", "chunked"]],
        body: streamOf(["hello", "", " world"]),
        framing: { kind: "chunked" },
      }),
    "/stream-close": () =>
      upstream(200, { body: streamOf(["until", " close"]), framing: { kind: "close" } }),
    "/head": () =>
      upstream(200, { headers: [["content-length", "1234"], ["etag", '"v1"']], body: null }),
    "/head-stream": () =>
      upstream(200, {
        headers: [["content-length", "5"]],
        body: streamOf(["never"], { onCancel: () => cancelled++ }),
        framing: { kind: "length", length: 5 },
      }),
    "/204": () =>
      upstream(204, {
        reason: "No Content",
        headers: [["content-length", "4"]],
        body: encoder.encode("oops"),
      }),
    "/304": () =>
      upstream(304, {
        reason: "Not Modified",
        headers: [["etag", '"v1"'], ["content-length", "1234"]],
        body: null,
      }),
    "/local": () => localReply(200, "local text"),
  };
  // How often each upstream response's release() was called.
  const releases: number[] = [];
  await withServer((incoming) => {
    const make = replies[incoming.target];
    const reply = make ? make() : localReply(404, "no such test path");
    if (reply.kind === "local") return reply;
    const index = releases.push(0) - 1;
    const release = () => releases[index]!++;
    return { kind: "upstream", response: { ...reply.response, release } };
  }, async ({ connect }) => {
    const wire = await connect();

    await t.step("a byte body gets its own content-length", async () => {
      await wire.send(get("/bytes"));
      const res = await wire.response();
      deepEqual(fields(res, "content-length"), ["5"]);
      equal(field(res, "transfer-encoding"), undefined);
      equal(field(res, "x-kind"), "bytes");
      equal(res.body, "hello");
    });

    await t.step("a stream with a known length gets content-length", async () => {
      await wire.send(get("/stream-length"));
      const res = await wire.response();
      deepEqual(fields(res, "content-length"), ["11"]);
      equal(field(res, "transfer-encoding"), undefined);
      equal(res.body, "hello world");
    });

    await t.step("a stream of unknown length is chunked to an HTTP/1.1 client", async () => {
      await wire.send(get("/stream-chunked"));
      const res = await wire.response();
      deepEqual(fields(res, "transfer-encoding"), ["chunked"]);
      equal(field(res, "content-length"), undefined);
      equal(res.raw, "5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n");
      assert(res.complete);
      await wire.send(get("/stream-close"));
      const closeFramed = await wire.response();
      deepEqual(fields(closeFramed, "transfer-encoding"), ["chunked"]);
      equal(closeFramed.raw, "5\r\nuntil\r\n6\r\n close\r\n0\r\n\r\n");
      // The connection is still good after both.
      await wire.send(get("/bytes"));
      equal((await wire.response()).body, "hello");
    });

    await t.step("HEAD gets the head with the upstream's content-length, no body", async () => {
      await wire.send(
        "HEAD /head HTTP/1.1\r\nHost: a\r\n\r\nHEAD /head-stream HTTP/1.1\r\nHost: a\r\n\r\n" +
          "HEAD /local HTTP/1.1\r\nHost: a\r\n\r\n" + get("/bytes"),
      );
      const head = await wire.response("HEAD");
      equal(head.status, 200);
      deepEqual(fields(head, "content-length"), ["1234"]);
      equal(field(head, "etag"), '"v1"');
      const headStream = await wire.response("HEAD");
      deepEqual(fields(headStream, "content-length"), ["5"]);
      equal(field(headStream, "transfer-encoding"), undefined);
      const local = await wire.response("HEAD");
      equal(field(local, "content-length"), "11");
      // A body byte after any of those heads would garble this response.
      const next = await wire.response();
      equal(next.statusLine, "HTTP/1.1 200 OK");
      equal(next.body, "hello");
      await waitFor(() => cancelled === 1, { timeout: 1000, what: "the HEAD body stream cancel" });
    });

    await t.step("204 and 304 have no body; 204 loses content-length, 304 keeps it", async () => {
      await wire.send(get("/204") + get("/304") + get("/bytes"));
      const noContent = await wire.response();
      equal(noContent.statusLine, "HTTP/1.1 204 No Content");
      equal(field(noContent, "content-length"), undefined);
      const notModified = await wire.response();
      equal(notModified.statusLine, "HTTP/1.1 304 Not Modified");
      deepEqual(fields(notModified, "content-length"), ["1234"]);
      equal(field(notModified, "etag"), '"v1"');
      const next = await wire.response();
      equal(next.statusLine, "HTTP/1.1 200 OK", "no body bytes after 204 or 304");
      equal(next.body, "hello");
    });

    await t.step("a stream of known length to an HTTP/1.0 client keeps it alive", async () => {
      const old = await connect();
      await old.send(get("/stream-length", "Connection: keep-alive\r\n", "1.0"));
      const res = await old.response();
      equal(field(res, "content-length"), "11");
      equal(field(res, "connection"), "keep-alive");
      equal(res.body, "hello world");
      await old.send(get("/bytes", "Connection: keep-alive\r\n", "1.0"));
      equal((await old.response()).body, "hello");
    });

    await t.step(
      "a stream of unknown length to an HTTP/1.0 client is close-delimited",
      async () => {
        const old = await connect();
        await old.send(get("/stream-chunked", "Connection: keep-alive\r\n", "1.0"));
        const res = await old.response();
        equal(field(res, "connection"), "close");
        equal(field(res, "transfer-encoding"), undefined, "HTTP/1.0 has no chunked coding");
        equal(field(res, "content-length"), undefined);
        equal(res.body, "hello world", "the body runs until the server closes");
      },
    );

    await t.step("every upstream response is released exactly once", async () => {
      // UpstreamResponse.release: "Call it exactly once, whatever happens to the response."
      await waitFor(() => releases.every((n) => n > 0), { timeout: 1000, what: "release()" });
      equal(releases.length, 14, "upstream replies");
      deepEqual(releases, releases.map(() => 1), "release() calls per response");
    });
  });
});

test("`serveHttp1()` drops the upstream response's hop-by-hop fields", async () => {
  await withServer(() =>
    upstream(200, {
      headers: [
        ["connection", "close, X-Private"],
        ["keep-alive", "timeout=5"],
        ["transfer-encoding", "chunked"],
        ["x-private", "secret"],
        ["proxy-connection", "keep-alive"],
        ["upgrade", "h2c"],
        ["trailer", "x-t"],
        ["x-public", "yes"],
      ],
      body: encoder.encode("body"),
    }), async ({ connect }) => {
    const wire = await connect();
    await wire.send(get("/"));
    const res = await wire.response();
    equal(res.status, 200);
    deepEqual(
      res.headers.filter(([name]) => name !== "content-length"),
      [["x-public", "yes"]],
    );
    equal(field(res, "content-length"), "4");
    equal(res.body, "body");
    // The backend's "Connection: close" was about its own connection, not the client's.
    await wire.send(get("/again"));
    equal((await wire.response()).body, "body");
  });
});

test("`serveHttp1()` refuses malformed requests without forwarding them", async (t) => {
  const cases: [string, string | Uint8Array, number][] = [
    [
      "Content-Length with Transfer-Encoding",
      "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n" +
      "3\r\nabc\r\n0\r\n\r\n",
      400,
    ],
    [
      "two different Content-Length values",
      "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd",
      400,
    ],
    ["obs-fold", "GET / HTTP/1.1\r\nHost: a\r\nX-A: 1\r\n  folded\r\n\r\n", 400],
    ["a missing Host in HTTP/1.1", "GET / HTTP/1.1\r\nUser-Agent: t\r\n\r\n", 400],
    ["two Host fields", "GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400],
    ["a garbage request line", "HELLO\r\n\r\n", 400],
    ["whitespace before a colon", "GET / HTTP/1.1\r\nHost : a\r\n\r\n", 400],
    ["an HTTP/2.0 request line", "GET / HTTP/2.0\r\nHost: a\r\n\r\n", 505],
    ["an unknown expectation", "GET / HTTP/1.1\r\nHost: a\r\nExpect: teapot\r\n\r\n", 417],
    [
      "Transfer-Encoding: gzip, chunked",
      "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n",
      501,
    ],
    [
      "a request head over 64 KiB",
      `GET / HTTP/1.1\r\nHost: a\r\nX-Big: ${"a".repeat(66 * 1024)}\r\n\r\n`,
      431,
    ],
  ];
  await withServer(echo, async ({ connect, seen }) => {
    for (const [what, bytes, status] of cases) {
      await t.step(`${what} → ${status}, then the connection closes`, async () => {
        const wire = await connect();
        // The server may answer (and close) before it has read everything.
        await wire.send(bytes).catch(() => {});
        const res = await wire.response();
        equal(res.status, status, res.statusLine);
        equal(field(res, "connection"), "close");
        equal(await wire.closed(), "");
      });
    }
    equal(seen.length, 0, "the forwarder was never called");
  });
});

test("`serveHttp1()` refuses CONNECT with 405 and an allow field", async () => {
  await withServer(echo, async ({ connect, seen }) => {
    const wire = await connect();
    await wire.send("CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n");
    const res = await wire.response();
    equal(res.status, 405);
    const allow = field(res, "allow");
    assert(allow !== undefined, "405 carries allow");
    match(allow, /\bGET\b/);
    assert(!/CONNECT/.test(allow), "allow does not list CONNECT");
    equal(field(res, "connection"), "close");
    equal(await wire.closed(), "");
    equal(seen.length, 0);
  });
});

test("`serveHttp1()` turns an absolute-form target into target and authority", async () => {
  await withServer(echo, async ({ connect, seen }) => {
    const wire = await connect();
    await wire.send("GET http://other.example/x?y=1 HTTP/1.1\r\nHost: ignored.example\r\n\r\n");
    equal((await wire.response()).body, "GET /x?y=1\n");
    equal(seen.at(-1)!.target, "/x?y=1");
    equal(seen.at(-1)!.authority, "other.example", "the absolute-form authority wins over Host");
    await wire.send("OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n");
    equal((await wire.response()).body, "OPTIONS *\n");
    equal(seen.at(-1)!.target, "*");
  });
});

test("`serveHttp1()` cuts off slow request heads (slowloris)", async (t) => {
  await withServer(echo, async ({ connect }) => {
    await t.step("a partial head is closed at the header timeout; others are served", async () => {
      const slow = await connect();
      const started = Date.now();
      await slow.send("GET /slow HTTP/1.1\r\nHost: a\r\n");
      const closing = slow.closed(1500).then(() => Date.now() - started);
      const fresh = await connect();
      const asked = Date.now();
      await fresh.send(get("/fast"));
      equal((await fresh.response()).body, "GET /fast\n");
      assert(Date.now() - asked < 250, "a slow client does not hold up another");
      const elapsed = await closing;
      assert(elapsed >= 250 && elapsed < 1000, `closed after ${elapsed} ms`);
    });

    await t.step(
      "a new connection that sends nothing is closed at the header timeout",
      async () => {
        const silent = await connect();
        const started = Date.now();
        const outcome = await silent.closed(1500).then(
          () => Date.now() - started,
          (e) => e as Error,
        );
        assert(
          typeof outcome === "number",
          "a connection that never sent a byte was still open after 1.5 s (header timeout 300 ms)",
        );
        assert(outcome < 1000, `closed after ${outcome} ms`);
      },
    );

    await t.step(
      "a head trickled a byte at a time is still closed at the header timeout",
      async () => {
        const slow = await connect();
        const started = Date.now();
        let open = true;
        const closing = slow.closed(1500).then(
          () => Date.now() - started,
          (error) => error as Error,
        ).finally(() => (open = false));
        await slow.send("GET /trickle HTTP/1.1\r\nHost: a\r\nX-Slow: ");
        while (open && Date.now() - started < 1500) {
          await sleep(100);
          if (open) await slow.send("a").catch(() => {});
        }
        const elapsed = await closing;
        assert(
          typeof elapsed === "number",
          "a client sending one byte every 100 ms was never closed (header timeout 300 ms)",
        );
        assert(elapsed < 1000, `closed after ${elapsed} ms`);
      },
    );
  }, { headerTimeout: 300, keepAliveTimeout: 3000 });

  await withServer(echo, async ({ connect, server }) => {
    await t.step("50 trickling connections do not delay a normal request", async () => {
      const slow: Wire[] = [];
      for (let i = 0; i < 50; i++) {
        const wire = await connect();
        await wire.send(`GET /slow${i} HTTP/1.1\r\nHost: a\r\n`);
        slow.push(wire);
      }
      let trickling = true;
      const trickle = (async () => {
        while (trickling) {
          await sleep(50);
          for (const wire of slow) await wire.send("X-More: a\r\n");
        }
      })();
      try {
        await waitFor(() => server.connections() === 50, { timeout: 2000, what: "50 connections" });
        await sleep(120);
        const fresh = await connect();
        const asked = Date.now();
        await fresh.send(get("/fast"));
        equal((await fresh.response()).body, "GET /fast\n");
        const took = Date.now() - asked;
        assert(took < 300, `the normal request took ${took} ms`);
      } finally {
        trickling = false;
        await trickle;
      }
      for (const wire of slow) wire.close();
      await waitFor(() => server.connections() <= 1, { timeout: 2000, what: "the slow ones gone" });
    });
  }, { headerTimeout: 3000, keepAliveTimeout: 3000 });
});

test("`serveHttp1()` closes idle keep-alive connections", async (t) => {
  const bodyErrors: unknown[] = [];
  await withServer(async (incoming) => {
    if (incoming.target === "/slow") await sleep(500);
    await bodyText(incoming.body).catch((error) => bodyErrors.push(error));
    return echo(incoming);
  }, async ({ connect, seen }) => {
    await t.step("an idle connection is closed after the keep-alive timeout", async () => {
      const wire = await connect();
      await wire.send(get("/"));
      equal((await wire.response()).status, 200);
      const idleFrom = Date.now();
      equal(await wire.closed(1500), "");
      const idle = Date.now() - idleFrom;
      assert(idle >= 200 && idle < 1000, `closed after ${idle} ms idle`);
    });

    await t.step("a request that takes longer than the timeout is still answered", async () => {
      const wire = await connect();
      await wire.send(get("/slow"));
      const res = await wire.response();
      equal(res.body, "GET /slow\n");
      await wire.send(get("/next"));
      equal((await wire.response()).body, "GET /next\n");
    });

    await t.step("a client stalling mid-body gets 408 after the body timeout", async () => {
      const before = seen.length;
      const small = await connect();
      await small.send("POST /stall HTTP/1.1\r\nHost: a\r\nContent-Length: 1000\r\n\r\nabc");
      const large = await connect();
      await large.send(
        "POST /stall-large HTTP/1.1\r\nHost: a\r\nContent-Length: 100000\r\n\r\nabc",
      );
      const started = Date.now();
      for (const wire of [small, large]) {
        const res = await wire.response("POST", 1500);
        equal(res.status, 408);
        equal(field(res, "connection"), "close");
        equal(await wire.closed(1500), "");
      }
      const took = Date.now() - started;
      assert(took >= 400 && took < 1500, `answered after ${took} ms`);
      deepEqual(seen.slice(before), [], "a buffered body never reached the forwarder");
    });

    await t.step("a client trickling its body below the minimum rate gets 408", async () => {
      const before = seen.length;
      const wire = await connect();
      await wire.send("POST /trickle HTTP/1.1\r\nHost: a\r\nContent-Length: 1000\r\n\r\n");
      const started = Date.now();
      let trickling = true;
      const trickle = (async () => {
        while (trickling) {
          await wire.send("x").catch(() => (trickling = false));
          await sleep(100);
        }
      })();
      const res = await wire.response("POST", 3000);
      trickling = false;
      await trickle;
      equal(res.status, 408);
      const took = Date.now() - started;
      // Every wait is well within the 500 ms timeout: the rate rule cut it, at a window's end.
      assert(took >= 400 && took < 1500, `answered after ${took} ms`);
      deepEqual(seen.slice(before), []);
    });
  }, { headerTimeout: 3000, keepAliveTimeout: 300, bodyTimeout: 500, bodyMinRate: 100 });
});

test("`serveHttp1()` never ends a broken response body cleanly", async (t) => {
  await withServer((incoming) => {
    const body = streamOf(["hello"], { fail: true });
    return incoming.target === "/chunked"
      ? upstream(200, { body, framing: { kind: "chunked" } })
      : upstream(200, { body, framing: { kind: "length", length: 10 } });
  }, async ({ connect }) => {
    await t.step("chunked: no last chunk, and the connection closes", async () => {
      const wire = await connect();
      await wire.send(get("/chunked"));
      const res = await wire.response();
      equal(field(res, "transfer-encoding"), "chunked");
      equal(res.complete, false, "the body must not end cleanly");
      equal(res.raw, "5\r\nhello\r\n");
      assert(!res.raw.includes("0\r\n\r\n"));
      equal(await wire.closed(), "");
    });

    await t.step("length: the connection closes before all the bytes", async () => {
      const wire = await connect();
      await wire.send(get("/length"));
      const res = await wire.response();
      equal(field(res, "content-length"), "10");
      equal(res.complete, false);
      equal(res.body, "hello");
    });
  });
});

test("`serveHttp1()` shuts down gracefully", async (t) => {
  let slowCalled = false;
  await withServer(async (incoming) => {
    if (incoming.target === "/slow") {
      slowCalled = true;
      await sleep(200);
    }
    return echo(incoming);
  }, async ({ connect, port, server }) => {
    const idle = await connect();
    await idle.send(get("/first"));
    equal((await idle.response()).status, 200);
    const silent = await connect();
    await silent.send(get("/first"));
    equal((await silent.response()).status, 200);
    const busy = await connect();
    await busy.send(get("/slow"));
    await waitFor(() => slowCalled, { timeout: 2000, what: "the slow request" });

    const started = Date.now();
    const stopped = server.shutdown(600);
    let done = false;
    stopped.then(() => (done = true), () => {});

    await t.step("no new connection is served", async () => {
      const late = await Deno.connect({ hostname: "127.0.0.1", port }).then((c) => c, () => null);
      if (late === null) return;
      const wire = new Wire(late);
      try {
        await wire.send(get("/late")).catch(() => {});
        equal(await wire.closed(1000), "", "a connection after shutdown() is not served");
      } finally {
        wire.close();
      }
    });
    await t.step("the request in flight completes, told to close", async () => {
      const res = await busy.response();
      equal(res.status, 200);
      equal(res.body, "GET /slow\n");
      equal(field(res, "connection"), "close");
      equal(await busy.closed(), "");
    });
    await t.step(
      "an idle connection's next request, in the grace, is answered with close",
      async () => {
        await idle.send(get("/second"));
        const res = await idle.response();
        equal(res.status, 200);
        equal(res.body, "GET /second\n");
        equal(field(res, "connection"), "close");
        equal(await idle.closed(), "");
      },
    );
    await t.step("a connection idle for the whole grace is closed after it", async () => {
      equal(await silent.closed(2000), "");
      const after = Date.now() - started;
      assert(after >= 550, `closed ${after} ms into the shutdown, before the grace was over`);
    });
    await stopped;
    assert(done);
    equal(server.connections(), 0);
  });
});

test("`serveHttp1()` stopAccepting() closes the listener and keeps connections alive", async () => {
  await withServer(echo, async ({ connect, port, server }) => {
    const kept = await connect();
    await kept.send(get("/first"));
    equal((await kept.response()).status, 200);
    server.stopAccepting();
    // Refused, or reset once the closing socket is gone: either way, never served.
    const late = await Deno.connect({ hostname: "127.0.0.1", port }).then((c) => c, () => null);
    if (late !== null) {
      const wire = new Wire(late);
      try {
        await wire.send(get("/late")).catch(() => {});
        equal(await wire.closed(1000), "", "a connection after stopAccepting() is not served");
      } finally {
        wire.close();
      }
    }
    await kept.send(get("/second"));
    const res = await kept.response();
    equal(res.status, 200);
    equal(field(res, "connection"), undefined, "still kept alive");
  });
});

test("`serveHttp1()` abort() closes every connection at once", async () => {
  let finished = false;
  await withServer(async (incoming) => {
    await sleep(200);
    finished = true;
    return echo(incoming);
  }, async ({ connect, server, seen }) => {
    const idle = await connect();
    const busy = await connect();
    await busy.send(get("/slow"));
    await waitFor(() => seen.length === 1, { timeout: 2000, what: "the forwarder" });
    const started = Date.now();
    server.abort();
    equal(await busy.closed(1000), "", "the request in flight gets no response");
    equal(await idle.closed(1000), "");
    assert(Date.now() - started < 150, "closed before the forwarder finished");
    await waitFor(() => finished && server.connections() === 0, { timeout: 2000, what: "idle" });
  });
});

test("`serveHttp1()` reports a forwarder that throws, and keeps serving", async () => {
  await withServer((incoming) => {
    if (incoming.target === "/bug") throw new TypeError("a bug in the forwarder");
    return echo(incoming);
  }, async ({ connect, errors, server }) => {
    const wire = await connect();
    await wire.send(get("/bug"));
    equal(await wire.closed(), "", "no response can be trusted: the connection is closed");
    await waitFor(() => errors.length === 1, { timeout: 1000, what: "onError" });
    assert(errors[0] instanceof TypeError);
    equal(errors[0].message, "a bug in the forwarder");
    errors.length = 0;
    const next = await connect();
    await next.send(get("/ok"));
    equal((await next.response()).body, "GET /ok\n");
    equal(server.connections(), 1);
  });
});

test("`serveHttp1()` shrugs off clients that go away", async (t) => {
  const failures: string[] = [];
  let cancelled = 0;
  let lateCancelled = 0;
  await withServer(async (incoming) => {
    if (incoming.target === "/late") {
      // Answers once the client is long gone: writing the head fails.
      await bodyText(incoming.body);
      await sleep(150);
      return upstream(200, {
        body: new ReadableStream<Bytes>({
          pull(controller) {
            controller.enqueue(encoder.encode("never read"));
          },
          cancel() {
            lateCancelled++;
          },
        }),
        framing: { kind: "chunked" },
      });
    }
    if (incoming.target === "/endless") {
      let n = 0;
      return upstream(200, {
        body: new ReadableStream<Bytes>({
          async pull(controller) {
            await sleep(5);
            controller.enqueue(encoder.encode(`${n++}`.padEnd(1024, ".")));
          },
          cancel() {
            cancelled++;
          },
        }),
        framing: { kind: "chunked" },
      });
    }
    if (incoming.target === "/slow") await sleep(100);
    try {
      await bodyText(incoming.body);
    } catch (error) {
      failures.push(`${incoming.target}: ${error}`);
      return localReply(400, "body broke off");
    }
    return echo(incoming);
  }, async ({ connect, server, seen, errors }) => {
    const gone = async (what: string) => {
      await waitFor(() => server.connections() === 0, { timeout: 2000, what });
      const fresh = await connect();
      await fresh.send(get("/ok", "Connection: close\r\n"));
      equal((await fresh.response()).body, "GET /ok\n");
      fresh.close();
      deepEqual(errors, []);
    };

    await t.step("mid-way through a streamed Content-Length body", async () => {
      const wire = await connect();
      await wire.send(`POST /stream HTTP/1.1\r\nHost: a\r\nContent-Length: 200000\r\n\r\n`);
      await wire.send("z".repeat(1000));
      await waitFor(() => seen.at(-1)?.target === "/stream", { what: "the forwarder" });
      wire.close();
      await gone("the connection to end");
      equal(failures.length, 1, "the forwarder's body stream failed");
    });

    await t.step("mid-way through a small Content-Length body", async () => {
      const before = seen.length;
      const wire = await connect();
      await wire.send(`POST /small HTTP/1.1\r\nHost: a\r\nContent-Length: 1000\r\n\r\nabc`);
      await sleep(30);
      wire.close();
      await gone("the connection to end");
      equal(seen.length, before + 1, "only the follow-up request was forwarded");
    });

    await t.step("mid-way through a chunked body", async () => {
      const wire = await connect();
      // Past the 512-byte request buffer, so the body streams to the forwarder.
      await wire.send(
        `POST /chunks HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n400\r\n${
          "a".repeat(600)
        }`,
      );
      await waitFor(() => seen.at(-1)?.target === "/chunks", { what: "the forwarder" });
      wire.close();
      await gone("the connection to end");
      equal(failures.length, 2);
    });

    await t.step("mid-way through a request head", async () => {
      const wire = await connect();
      await wire.send("GET /half HTTP/1.1\r\nHo");
      await sleep(30);
      wire.close();
      await gone("the connection to end");
    });

    await t.step("before the response is written", async () => {
      const wire = await connect();
      await wire.send(get("/slow"));
      await waitFor(() => seen.at(-1)?.target === "/slow", { what: "the forwarder" });
      wire.close();
      await sleep(150);
      await gone("the connection to end");
    });

    await t.step(
      "before the head of a streamed response: the body stream is cancelled",
      async () => {
        // The "100 Continue" left unread makes the client's close a reset, so the head write
        // fails; the body must still be cancelled (it holds a backend connection and an
        // in-flight count).
        const wire = await connect();
        await wire.send(
          "POST /late HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\nhello",
        );
        await waitFor(() => seen.at(-1)?.target === "/late", { what: "the forwarder" });
        wire.close();
        await waitFor(() => lateCancelled === 1, {
          timeout: 2000,
          what: "the stream to be cancelled",
        });
        await gone("the connection to end");
      },
    );

    await t.step("mid-way through a streamed response: the body stream is cancelled", async () => {
      const wire = await connect();
      await wire.send(get("/endless"));
      match(await wire.peek("\r\n\r\n"), /^HTTP\/1\.1 200 /);
      wire.close();
      await waitFor(() => cancelled === 1, { timeout: 2000, what: "the stream to be cancelled" });
      await gone("the connection to end");
    });
  }, { requestBuffer: 512 });
});

test("`serveHttp1()` reads requests of any size on a connection that idled small", async (t) => {
  // An idle connection waits with a read buffer sized to its last request: a longer head, a body
  // that arrives with its head, pipelined requests and a long reply must all still come whole.
  await withServer(async (incoming) => {
    const body = await bodyText(incoming.body);
    const big = [...incoming.headers].find(([name]) => name === "x-big")?.[1] ?? "";
    if (incoming.target === "/long") return localReply(200, "z".repeat(20_000));
    return localReply(200, `${incoming.method} ${incoming.target} big=${big.length} ${body}`);
  }, async ({ connect }) => {
    const wire = await connect();
    const exchange = async (request: string, expected: string) => {
      await wire.send(request);
      equal((await wire.response()).body, `${expected}\n`);
    };

    await t.step("a small request, then a head far longer than the first", async () => {
      await exchange(get("/a"), "GET /a big=0 ");
      await exchange(get("/b"), "GET /b big=0 ");
      await exchange(get("/c", `X-Big: ${"x".repeat(12_000)}\r\n`), "GET /c big=12000 ");
      await exchange(get("/d"), "GET /d big=0 ");
    });

    await t.step("a body sent with its head, larger than the last request", async () => {
      const body = "b".repeat(3000);
      await exchange(
        `POST /e HTTP/1.1\r\nHost: a\r\nContent-Length: ${body.length}\r\n\r\n${body}`,
        `POST /e big=0 ${body}`,
      );
      await exchange(get("/f"), "GET /f big=0 ");
    });

    await t.step("pipelined requests in one write, after a small one", async () => {
      await wire.send(get("/g") + get("/h", `X-Big: ${"y".repeat(900)}\r\n`) + get("/i"));
      equal((await wire.response()).body, "GET /g big=0 \n");
      equal((await wire.response()).body, "GET /h big=900 \n");
      equal((await wire.response()).body, "GET /i big=0 \n");
    });

    await t.step("a reply longer than the write buffer, between short ones", async () => {
      await exchange(get("/j"), "GET /j big=0 ");
      await exchange(get("/long"), "z".repeat(20_000));
      await exchange(get("/k"), "GET /k big=0 ");
    });
    wire.close();
  });
});

test("an idle keep-alive connection holds about 1 KiB of buffers, whatever it carried", async () => {
  const big = "z".repeat(20_000);
  const forward = (incoming: Incoming) =>
    incoming.target === "/long" ? localReply(200, big) : echo(incoming);
  await withServer(forward, async ({ server, connect }) => {
    const wires: Wire[] = [];
    for (let i = 0; i < 100; i++) {
      const wire = await connect();
      // Every tenth carried a large head and a large reply before it went idle.
      if (i % 10 === 0) {
        await wire.send(`GET /long HTTP/1.1\r\nHost: a\r\nX-Big: ${"x".repeat(12_000)}\r\n\r\n`);
        equal((await wire.response()).body.length, big.length + 1);
      }
      await wire.send("GET /small HTTP/1.1\r\nHost: a\r\n\r\n");
      equal((await wire.response()).body, "GET /small\n");
      wires.push(wire);
    }
    // A fixed 16 KiB read and 4 KiB write buffer per connection would hold 2 MiB here.
    await waitFor(() => server.heldBytes() <= 100 * 1024, {
      timeout: 2000,
      what: "at most 100 KiB held by 100 idle connections",
    }).catch((error) => {
      throw new Error(`${error.message}: ${server.heldBytes()} bytes`);
    });
    equal(server.connections(), 100);
  });
});
