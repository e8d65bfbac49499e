import { deepEqual, equal, ok as assert, rejects } from "node:assert/strict";
import type { Backend } from "../../lib/config/config.ts";
import { UpstreamError } from "../../lib/errors.ts";
import { encodeLatin1, requestHead } from "../../lib/http/http1.ts";
import {
  type Bytes,
  closeUpstreams,
  createUpstreams,
  idleCount,
  type OutgoingRequest,
  roundTrip,
  type UpstreamResponse,
  type Upstreams,
} from "../../lib/upstream/client.ts";
import { rawBackend, waitFor } from "../support/helpers.ts";

function backendAt(port: number): Backend {
  return { url: `http://127.0.0.1:${port}`, hostname: "127.0.0.1", port, weight: 1, tls: false };
}

function request(method = "GET", extra: [string, string][] = []): OutgoingRequest {
  return {
    method,
    head: requestHead(method, "/", [["host", "t"], ...extra]),
    body: null,
    chunked: false,
  };
}

/** Reads a response body as text, then releases the connection (as a front end does). */
async function bodyText(res: UpstreamResponse): Promise<string> {
  const { body } = res;
  try {
    if (body === null) return "";
    if (body instanceof Uint8Array) return new TextDecoder().decode(body);
    return await new Response(body).text();
  } finally {
    res.release();
  }
}

async function withUpstreams(
  fn: (upstreams: Upstreams) => Promise<void>,
  options: { responseTimeout?: number } = {},
): Promise<void> {
  const upstreams = createUpstreams({
    connectTimeout: 1000,
    responseTimeout: options.responseTimeout ?? 5000,
  });
  try {
    await fn(upstreams);
  } finally {
    closeUpstreams(upstreams);
  }
}

/** A raw backend that answers each request on a connection with `reply`, keeping it open. */
function keepAliveBackend(reply: (request: string, n: number) => string) {
  let served = 0;
  return rawBackend(async (first, conn) => {
    let text = first;
    const buf = new Uint8Array(65536);
    while (text !== "") {
      await conn.write(encodeLatin1(reply(text, served++)));
      const n = await conn.read(buf).catch(() => null);
      text = n === null ? "" : new TextDecoder().decode(buf.subarray(0, n));
    }
  });
}

Deno.test("roundTrip() reuses one keep-alive connection for sequential requests", async () => {
  const server = keepAliveBackend((_r, n) =>
    `HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n${String(n).padStart(2, "0")}`
  );
  try {
    await withUpstreams(async (upstreams) => {
      const backend = backendAt(server.port);
      const bodies: string[] = [];
      for (let i = 0; i < 3; i++) {
        const res = await roundTrip(upstreams, backend, request());
        bodies.push(await bodyText(res));
        equal(res.reused, i > 0);
      }
      deepEqual(bodies, ["00", "01", "02"]);
      equal(server.connections(), 1);
      equal(idleCount(upstreams, backend), 1);
    });
  } finally {
    await server.close();
  }
});

Deno.test("a connection is pooled after a framed response, closed after HEAD, 204 and 304", async (t) => {
  const replies: Record<string, string> = {
    "/200": "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
    "/head": "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n",
    "/204": "HTTP/1.1 204 No Content\r\n\r\n",
    "/304": 'HTTP/1.1 304 Not Modified\r\nETag: "x"\r\n\r\n',
  };
  const server = keepAliveBackend((text) => replies[text.split(" ")[1]!]!);
  try {
    await withUpstreams(async (upstreams) => {
      const backend = backendAt(server.port);
      const ask = async (path: string, method = "GET") => {
        const res = await roundTrip(upstreams, backend, {
          ...request(method),
          head: requestHead(method, path, [["host", "t"]]),
        });
        await bodyText(res);
        return res;
      };
      await t.step(
        "after a 200 the connection is pooled, and the next request reuses it",
        async () => {
          await ask("/200");
          equal(idleCount(upstreams, backend), 1);
          equal((await ask("/200")).reused, true);
          equal(idleCount(upstreams, backend), 1);
        },
      );
      for (const [path, method] of [["/head", "HEAD"], ["/204", "GET"], ["/304", "GET"]] as const) {
        await t.step(
          `after ${method} ${path} it is closed, and the next request dials`,
          async () => {
            const before = server.connections();
            equal((await ask(path, method)).reused, true);
            equal(idleCount(upstreams, backend), 0);
            equal((await ask("/200")).reused, false);
            equal(server.connections(), before + 1);
          },
        );
      }
    });
  } finally {
    await server.close();
  }
});

Deno.test("bytes past a streamed Content-Length body, in the read that ends it, close the connection", async () => {
  const size = 300_000;
  const server = rawBackend(async (_r, conn) => {
    const body = "b".repeat(size);
    await conn.write(
      encodeLatin1(`HTTP/1.1 200 OK\r\nContent-Length: ${size}\r\n\r\n${body}EXTRA`),
    );
    await conn.read(new Uint8Array(1024)).catch(() => null);
  });
  try {
    await withUpstreams(async (upstreams) => {
      const backend = backendAt(server.port);
      const res = await roundTrip(upstreams, backend, request());
      assert(res.body instanceof ReadableStream);
      const reader = res.body.getReader();
      let length = 0;
      for (let part; !(part = await reader.read()).done;) length += part.value.length;
      // Checked as the body ends: a connection pooled now could be lent before a read shows them.
      equal(idleCount(upstreams, backend), 0);
      equal(length, size, "the body, without the extra bytes");
      res.release();
    });
  } finally {
    await server.close();
  }
});

Deno.test("an idle connection the backend closes is dropped from the pool at once", async () => {
  const server = rawBackend(async (_r, conn) => {
    await conn.write(encodeLatin1("HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nx"));
    // and close right away, as a backend with a short keep-alive timeout does
  });
  try {
    await withUpstreams(async (upstreams) => {
      const backend = backendAt(server.port);
      await roundTrip(upstreams, backend, request());
      await waitFor(() => idleCount(upstreams, backend) === 0, {
        what: "the stale connection to be dropped",
      });
      const res = await roundTrip(upstreams, backend, request());
      equal(res.reused, false);
      equal(await bodyText(res), "x");
    });
  } finally {
    await server.close();
  }
});

Deno.test("response framing: length, chunked, close-delimited, HEAD, 204, 304 and 1xx", async (t) => {
  const replies: Record<string, string> = {
    "/length": "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello",
    "/chunked":
      "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\nX-Trailer: 1\r\n\r\n",
    "/close": "HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nuntil the end",
    "/head": "HTTP/1.1 200 OK\r\nContent-Length: 99\r\n\r\n",
    "/204": "HTTP/1.1 204 No Content\r\n\r\n",
    "/304": "HTTP/1.1 304 Not Modified\r\nContent-Length: 99\r\n\r\n",
    "/1xx":
      "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
    "/http10": "HTTP/1.0 200 OK\r\n\r\nold style",
  };
  const server = rawBackend(async (text, conn) => {
    const path = text.split(" ")[1]!;
    // The server closes after each reply, and says so on the final response.
    const reply = replies[path]!.replace(
      /(HTTP\/1\.\d [2-5]\d\d [^\r]*\r\n)/,
      "$1Connection: close\r\n",
    );
    await conn.write(encodeLatin1(reply));
  });
  const ask = (upstreams: Upstreams, path: string, method = "GET") =>
    roundTrip(upstreams, backendAt(server.port), {
      ...request(method),
      head: requestHead(method, path, [["host", "t"]]),
    });
  try {
    await withUpstreams(async (upstreams) => {
      await t.step("Content-Length", async () => {
        const res = await ask(upstreams, "/length");
        deepEqual([res.framing, await bodyText(res)], [
          { kind: "length", length: 5 },
          "hello",
        ]);
      });
      await t.step("chunked (trailers dropped)", async () => {
        const res = await ask(upstreams, "/chunked");
        deepEqual([res.framing.kind, await bodyText(res)], ["chunked", "hello world"]);
      });
      await t.step("close-delimited", async () => {
        const res = await ask(upstreams, "/close");
        deepEqual([res.framing.kind, await bodyText(res)], ["close", "until the end"]);
      });
      await t.step("HEAD: no body whatever Content-Length says", async () => {
        const res = await ask(upstreams, "/head", "HEAD");
        deepEqual([res.framing.kind, res.body], ["none", null]);
      });
      await t.step("204 and 304: no body", async () => {
        equal((await ask(upstreams, "/204")).body, null);
        equal((await ask(upstreams, "/304")).body, null);
      });
      await t.step("interim 1xx responses are skipped", async () => {
        const res = await ask(upstreams, "/1xx");
        deepEqual([res.status, await bodyText(res)], [200, "ok"]);
      });
      await t.step("HTTP/1.0 without length reads to close", async () => {
        const res = await ask(upstreams, "/http10");
        equal(await bodyText(res), "old style");
      });
    });
  } finally {
    await server.close();
  }
});

Deno.test("a large body streams through in chunks, then the connection is reused", async () => {
  const size = 3 * 1024 * 1024 + 17;
  let conns = 0;
  const server = rawBackend(async (_text, conn) => {
    conns++;
    let text = _text;
    while (text !== "") {
      await conn.write(encodeLatin1(`HTTP/1.1 200 OK\r\nContent-Length: ${size}\r\n\r\n`));
      const chunk = new Uint8Array(64 * 1024).fill(97);
      for (let sent = 0; sent < size;) {
        const n = Math.min(chunk.length, size - sent);
        await conn.write(chunk.subarray(0, n));
        sent += n;
      }
      const buf = new Uint8Array(4096);
      const n = await conn.read(buf).catch(() => null);
      text = n === null ? "" : "again";
    }
  });
  try {
    await withUpstreams(async (upstreams) => {
      for (let i = 0; i < 2; i++) {
        const res = await roundTrip(upstreams, backendAt(server.port), request());
        assert(res.body instanceof ReadableStream);
        let total = 0;
        let chunks = 0;
        for await (const chunk of res.body) {
          total += chunk.length;
          chunks++;
        }
        equal(total, size);
        assert(chunks > 10, "streamed, not buffered");
      }
      equal(conns, 1);
    });
  } finally {
    await server.close();
  }
});

Deno.test("failures are classified for the retry policy", async (t) => {
  await withUpstreams(async (upstreams) => {
    await t.step("refused: connect, nothing sent", async () => {
      const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
      const port = listener.addr.port;
      listener.close();
      await rejects(
        roundTrip(upstreams, backendAt(port), request()),
        (e) =>
          e instanceof UpstreamError && e.kind === "connect" && !e.sent &&
          e.message === "connection refused",
      );
    });
    await t.step("closed before answering: reset, sent", async () => {
      const server = rawBackend(() => {});
      try {
        await rejects(
          roundTrip(upstreams, backendAt(server.port), request()),
          (e) => e instanceof UpstreamError && e.kind === "reset" && e.sent && !e.reused,
        );
      } finally {
        await server.close();
      }
    });
    await t.step("garbage: protocol", async () => {
      const server = rawBackend(async (_r, conn) =>
        void await conn.write(encodeLatin1("SSH-2.0-OpenSSH\r\n"))
      );
      try {
        await rejects(
          roundTrip(upstreams, backendAt(server.port), request()),
          (e) =>
            e instanceof UpstreamError && e.kind === "protocol" &&
            /invalid HTTP version/.test(e.message),
        );
      } finally {
        await server.close();
      }
    });
    await t.step("an invalid status line: protocol", async () => {
      const server = rawBackend(async (_r, conn) =>
        void await conn.write(encodeLatin1("HTTP/1.1 abc\r\n\r\n"))
      );
      try {
        await rejects(
          roundTrip(upstreams, backendAt(server.port), request()),
          (e) => e instanceof UpstreamError && e.kind === "protocol",
        );
      } finally {
        await server.close();
      }
    });
  });
});

Deno.test("a backend that never answers times out after the response timeout", async () => {
  const releases: (() => void)[] = [];
  const server = rawBackend(() => new Promise((resolve) => releases.push(resolve)));
  try {
    await withUpstreams(async (upstreams) => {
      const started = Date.now();
      await rejects(
        roundTrip(upstreams, backendAt(server.port), request()),
        (e) => e instanceof UpstreamError && e.kind === "timeout",
      );
      const took = Date.now() - started;
      assert(took >= 300 && took < 1500, `took ${took} ms`);
    }, { responseTimeout: 300 });
  } finally {
    for (const release of releases) release();
    await server.close();
  }
});

Deno.test("a body cut short is an error on the stream, reported once, never a clean end", async () => {
  const server = rawBackend(async (_r, conn) => {
    await conn.write(encodeLatin1("HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly part"));
    await new Promise((resolve) => setTimeout(resolve, 50));
  });
  try {
    await withUpstreams(async (upstreams) => {
      const ends: (string | undefined)[] = [];
      const res = await roundTrip(upstreams, backendAt(server.port), {
        ...request(),
        onBodyEnd: (error) => ends.push(error),
      });
      await rejects(bodyText(res));
      equal(ends.length, 1);
      assert(/91 bytes short/.test(ends[0] ?? ""), String(ends[0]));
    });
  } finally {
    await server.close();
  }
});

Deno.test("a streamed request body is sent with chunked framing", async () => {
  let received = "";
  const server = rawBackend(async (text, conn) => {
    received = text;
    const buf = new Uint8Array(65536);
    while (!received.endsWith("0\r\n\r\n")) {
      const n = await conn.read(buf);
      if (n === null) break;
      received += new TextDecoder().decode(buf.subarray(0, n));
    }
    await conn.write(encodeLatin1("HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"));
  });
  try {
    await withUpstreams(async (upstreams) => {
      const body = new ReadableStream<Bytes>({
        start(c) {
          c.enqueue(encodeLatin1("abc"));
          c.enqueue(encodeLatin1("defgh"));
          c.close();
        },
      });
      const res = await roundTrip(upstreams, backendAt(server.port), {
        method: "POST",
        head: requestHead("POST", "/", [["host", "t"], ["transfer-encoding", "chunked"]]),
        body,
        chunked: true,
      });
      equal(res.status, 200);
      assert(
        received.endsWith("\r\n\r\n3\r\nabc\r\n5\r\ndefgh\r\n0\r\n\r\n"),
        JSON.stringify(received),
      );
    });
  } finally {
    await server.close();
  }
});
