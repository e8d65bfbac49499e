import { deepEqual, equal, match, ok as assert } from "node:assert/strict";
import { ENGINES } from "../../lib/config/config.ts";
import { parseCommandLine } from "../../lib/config/command_line.ts";
import { createPool, setMembers } from "../../lib/balance/pool.ts";
import { createForwarder } from "../../lib/proxy/forward.ts";
import { closeUpstreams, createUpstreams } from "../../lib/upstream/client.ts";
import { gzipSync } from "node:zlib";
import {
  get,
  goroundFor,
  rawBackend,
  recordingBackend,
  startGoround,
  waitFor,
} from "../support/helpers.ts";
import { field, rawRequest } from "../support/raw_client.ts";

// Every behaviour here must hold whichever front end accepted the request.
for (const engine of ENGINES) {
  Deno.test(`[${engine}] forwarding keeps the request intact and adds X-Forwarded-*`, async (t) => {
    const backend = recordingBackend(async (req) => {
      const body = await req.text();
      return new Response(`${req.method} ${new URL(req.url).pathname} ${body}`, {
        status: 201,
        headers: { "x-backend": "yes" },
      });
    });
    const proxy = await startGoround([
      "--engine",
      engine,
      "--backend",
      backend.url,
      "--workers",
      "1",
    ]);
    try {
      await t.step(
        "method, path, query, body and status pass through; Host is the client's",
        async () => {
          const res = await rawRequest(
            proxy.port,
            "PUT /a/b?x=1&y=%20 HTTP/1.1\r\nHost: shop.example:8080\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello",
          );
          equal(res.status, 201);
          equal(new TextDecoder().decode(res.body), "PUT /a/b hello");
          equal(field(res, "x-backend"), "yes");
          const seen = backend.requests.at(-1)!;
          equal(seen.url, "http://shop.example:8080/a/b?x=1&y=%20");
          equal(seen.headers.get("host"), "shop.example:8080");
          equal(seen.headers.get("content-length"), "5");
          equal(seen.headers.get("x-forwarded-for"), "127.0.0.1");
          equal(seen.headers.get("x-forwarded-proto"), "http");
          equal(seen.headers.get("x-forwarded-host"), "shop.example:8080");
        },
      );

      await t.step(
        "a forged X-Forwarded-For and Forwarded from an untrusted client are replaced",
        async () => {
          await rawRequest(
            proxy.port,
            "GET / HTTP/1.1\r\nHost: a\r\nX-Forwarded-For: 6.6.6.6\r\nForwarded: for=6.6.6.6\r\nX-Forwarded-Host: evil\r\nConnection: close\r\n\r\n",
          );
          const seen = backend.requests.at(-1)!;
          equal(seen.headers.get("x-forwarded-for"), "127.0.0.1");
          equal(seen.headers.get("forwarded"), null);
          equal(seen.headers.get("x-forwarded-host"), "a");
        },
      );

      await t.step(
        "hop-by-hop fields and those named in Connection do not reach the backend",
        async () => {
          await rawRequest(
            proxy.port,
            "GET / HTTP/1.1\r\nHost: a\r\nConnection: close, X-Secret\r\nX-Secret: 1\r\nKeep-Alive: timeout=5\r\n" +
              "Proxy-Connection: keep-alive\r\nTE: trailers\r\nUpgrade: h2c\r\nX-Kept: yes\r\n\r\n",
          );
          const seen = backend.requests.at(-1)!;
          for (const name of ["x-secret", "keep-alive", "proxy-connection", "te", "upgrade"]) {
            equal(seen.headers.get(name), null, name);
          }
          equal(seen.headers.get("x-kept"), "yes");
        },
      );

      await t.step(
        "an absolute-form request goes to the pool, never to the named host",
        async () => {
          const res = await rawRequest(
            proxy.port,
            "GET http://other.example/steal?q=1 HTTP/1.1\r\nHost: other.example\r\nConnection: close\r\n\r\n",
          );
          equal(res.status, 201);
          equal(new TextDecoder().decode(res.body), "GET /steal ");
          equal(backend.requests.at(-1)!.url, "http://other.example/steal?q=1");
        },
      );

      await t.step("CONNECT is refused with 405 and reaches no backend", async () => {
        const before = backend.requests.length;
        const res = await rawRequest(
          proxy.port,
          "CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n",
          2000,
        );
        equal(res.status, 405);
        equal(backend.requests.length, before);
      });

      await t.step("a chunked upload arrives whole, buffered and re-framed", async () => {
        const res = await rawRequest(
          proxy.port,
          "POST /up HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n3\r\nabc\r\n4\r\ndefg\r\n0\r\n\r\n",
        );
        equal(new TextDecoder().decode(res.body), "POST /up abcdefg");
        // Read whole before forwarding (--request-buffer), it goes on with its length.
        equal(backend.requests.at(-1)!.headers.get("transfer-encoding"), null);
        equal(backend.requests.at(-1)!.headers.get("content-length"), "7");
      });

      await t.step(
        "conflicting Content-Length and Transfer-Encoding are rejected with 400 at the front",
        async () => {
          const before = backend.requests.length;
          const res = await rawRequest(
            proxy.port,
            "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
            2000,
          );
          equal(res.status, 400);
          equal(backend.requests.length, before);
        },
      );
    } finally {
      await proxy.stop();
      await backend.close();
    }
  });

  Deno.test(`[${engine}] responses pass through untouched: bytes, redirects, cookies, HEAD, 204, 304`, async (t) => {
    const gzipped = new Uint8Array(gzipSync(new TextEncoder().encode("hello ".repeat(1000))));
    const backend = recordingBackend((req) => {
      const path = new URL(req.url).pathname;
      switch (path) {
        case "/gzip":
          return new Response(gzipped, {
            headers: { "content-encoding": "gzip", "content-type": "text/plain" },
          });
        case "/redirect":
          return new Response(null, {
            status: 302,
            headers: { location: "http://elsewhere.example/x" },
          });
        case "/cookies": {
          const headers = new Headers([["set-cookie", "a=1; Path=/"], [
            "set-cookie",
            "b=2; HttpOnly",
          ]]);
          headers.set("connection", "x-drop");
          headers.set("x-drop", "1");
          headers.set("keep-alive", "timeout=1");
          return new Response("c", { headers });
        }
        case "/head":
          return new Response(req.method === "HEAD" ? null : "0123456789", {
            headers: { "content-length": "10" },
          });
        case "/204":
          return new Response(null, { status: 204 });
        case "/304":
          return new Response(null, { status: 304, headers: { etag: '"v1"' } });
        case "/stream":
          return new Response(
            new ReadableStream({
              start(c) {
                c.enqueue(new TextEncoder().encode("part1,"));
                c.enqueue(new TextEncoder().encode("part2"));
                c.close();
              },
            }),
          );
        default:
          return new Response("?", { status: 404 });
      }
    });
    const proxy = await startGoround([
      "--engine",
      engine,
      "--backend",
      backend.url,
      "--workers",
      "1",
    ]);
    const ask = (path: string, method = "GET", extra = "") =>
      rawRequest(
        proxy.port,
        `${method} ${path} HTTP/1.1\r\nHost: a\r\n${extra}Connection: close\r\n\r\n`,
      );
    try {
      await t.step(
        "a gzip body arrives byte-identical with its headers (never decompressed)",
        async () => {
          const res = await ask("/gzip", "GET", "Accept-Encoding: gzip\r\n");
          equal(field(res, "content-encoding"), "gzip");
          equal(field(res, "content-length"), String(gzipped.length));
          deepEqual(res.body, gzipped);
        },
      );
      await t.step("a redirect is passed through, not followed", async () => {
        const res = await ask("/redirect");
        equal(res.status, 302);
        equal(field(res, "location"), "http://elsewhere.example/x");
      });
      await t.step("repeated Set-Cookie survive; hop-by-hop response fields do not", async () => {
        const res = await ask("/cookies");
        deepEqual(res.headers.filter(([n]) => n === "set-cookie").map(([, v]) => v), [
          "a=1; Path=/",
          "b=2; HttpOnly",
        ]);
        equal(field(res, "x-drop"), undefined);
        equal(field(res, "keep-alive"), undefined);
      });
      await t.step("HEAD keeps Content-Length and has no body", async () => {
        const res = await ask("/head", "HEAD");
        equal(res.status, 200);
        equal(field(res, "content-length"), "10");
        equal(res.body.length, 0);
      });
      await t.step("204 and 304 pass with their fields", async () => {
        equal((await ask("/204")).status, 204);
        const notModified = await ask("/304", "GET", 'If-None-Match: "v1"\r\n');
        equal(notModified.status, 304);
        equal(field(notModified, "etag"), '"v1"');
      });
      await t.step("a streamed (chunked) response arrives whole", async () => {
        const res = await get(`${proxy.url}/stream`);
        equal(res.text, "part1,part2");
      });
      await t.step("404 from the backend is the client's 404", async () => {
        equal((await get(`${proxy.url}/nope`)).status, 404);
      });
    } finally {
      await proxy.stop();
      await backend.close();
    }
  });

  Deno.test(`[${engine}] --trusted-proxies: X-Forwarded-For is appended to for trusted peers`, async () => {
    const backend = recordingBackend();
    const proxy = await startGoround([
      "--engine",
      engine,
      "--backend",
      backend.url,
      "--workers",
      "1",
      "--trusted-proxies",
      "127.0.0.0/8",
    ]);
    try {
      await rawRequest(
        proxy.port,
        "GET / HTTP/1.1\r\nHost: a\r\nX-Forwarded-For: 203.0.113.7\r\nX-Forwarded-Proto: https\r\nConnection: close\r\n\r\n",
      );
      const seen = backend.requests.at(-1)!;
      equal(seen.headers.get("x-forwarded-for"), "203.0.113.7, 127.0.0.1");
      equal(seen.headers.get("x-forwarded-proto"), "https");
    } finally {
      await proxy.stop();
      await backend.close();
    }
  });

  Deno.test(`[${engine}] round-robin through the proxy: 600 concurrent requests split exactly 200/200/200 over 2 workers`, async () => {
    const backends = [0, 1, 2].map((i) => recordingBackend(() => new Response(`backend ${i}`)));
    const proxy = await startGoround([
      "--engine",
      engine,
      ...backends.flatMap((b) => ["--backend", b.url]),
      "--workers",
      "2",
    ]);
    try {
      const sequential: string[] = [];
      for (let i = 0; i < 6; i++) sequential.push((await get(proxy.url)).text);
      deepEqual(sequential, [
        "backend 0",
        "backend 1",
        "backend 2",
        "backend 0",
        "backend 1",
        "backend 2",
      ]);
      const before = backends.map((b) => b.requests.length);
      // Many connections at once, so both workers take a share.
      const results = await Promise.all(Array.from({ length: 600 }, () => get(proxy.url)));
      assert(results.every((r) => r.status === 200));
      deepEqual(backends.map((b, i) => b.requests.length - before[i]!), [200, 200, 200]);
    } finally {
      await proxy.stop();
      await Promise.all(backends.map((b) => b.close()));
    }
  });

  Deno.test(`[${engine}] no live backend: 503 with Retry-After and a short plain body`, async () => {
    const dead = rawBackend(() => {});
    const port = dead.port;
    await dead.close(); // nothing listens there any more
    const proxy = await startGoround([
      "--engine",
      engine,
      "--backend",
      `http://127.0.0.1:${port}`,
      "--workers",
      "1",
      "--health-interval",
      "3s",
    ]);
    try {
      await waitFor(() => proxy.stderr.some((l) => l.includes("DOWN: connection refused")), {
        what: "DOWN log",
      });
      const res = await get(proxy.url);
      equal(res.status, 503);
      equal(res.headers.get("retry-after"), "3");
      equal(res.text, "no backend available\n");
    } finally {
      await proxy.stop();
    }
  });

  Deno.test(`[${engine}] a backend that dies is skipped at once: the client sees no failure`, async () => {
    const a = recordingBackend(() => new Response("a"));
    const b = recordingBackend(() => new Response("b"));
    const c = recordingBackend(() => new Response("c"));
    // Long health interval: only passive detection can notice the death in time.
    const proxy = await startGoround([
      "--engine",
      engine,
      "--backend",
      a.url,
      "--backend",
      b.url,
      "--backend",
      c.url,
      "--workers",
      "1",
      "--health-interval",
      "1m",
    ]);
    try {
      deepEqual([
        (await get(proxy.url)).text,
        (await get(proxy.url)).text,
        (await get(proxy.url)).text,
      ], ["a", "b", "c"]);
      await b.close();
      const after: string[] = [];
      for (let i = 0; i < 6; i++) {
        const res = await get(proxy.url);
        equal(res.status, 200);
        after.push(res.text);
      }
      assert(!after.includes("b"), after.join());
      for (let i = 1; i < after.length; i++) {
        assert(after[i] !== after[i - 1], `alternates: ${after}`);
      }
      await waitFor(() => proxy.stderr.some((l) => l.includes(`backend ${b.url} DOWN`)), {
        what: "DOWN log",
      });
    } finally {
      await proxy.stop();
      await Promise.all([a.close(), c.close()]);
    }
  });

  Deno.test(`[${engine}] a POST whose backend resets after receiving it gets 502, and is not sent twice`, async () => {
    let received = 0;
    const resetting = rawBackend((request, conn) => {
      if (request.startsWith("POST")) received++; // health probes connect without a request
      conn.close();
    });
    const other = recordingBackend();
    const proxy = await startGoround([
      "--engine",
      engine,
      "--backend",
      resetting.url,
      "--backend",
      other.url,
      "--workers",
      "1",
      "--health-interval",
      "1m",
    ]);
    try {
      const res = await rawRequest(
        proxy.port,
        "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\nConnection: close\r\n\r\nhi",
      );
      equal(res.status, 502);
      equal(received, 1);
      equal(other.requests.length, 0, "a non-idempotent request is not replayed");
      // A GET on the same failure is retried on the other backend.
      const retried = await get(proxy.url);
      equal(retried.status, 200);
    } finally {
      await proxy.stop();
      await Promise.all([resetting.close(), other.close()]);
    }
  });

  Deno.test(`[${engine}] each response keeps its backend's status line and gets its own length`, async () => {
    // One backend answering each path with its own reason phrase and body length: the status
    // lines goround writes are kept per status, so one reason must not stick to the next.
    const backend = rawBackend(async (request, conn) => {
      const [, reason = "OK", size = "0"] = request.split(" ")[1]!.split("/");
      const body = "x".repeat(Number(size));
      const bytes = new TextEncoder().encode(
        `HTTP/1.1 200 ${decodeURIComponent(reason)}\r\nX-Kept: yes\r\n` +
          `Content-Length: ${body.length}\r\nConnection: close\r\n\r\n${body}`,
      );
      for (let at = 0; at < bytes.length;) at += await conn.write(bytes.subarray(at));
    });
    const proxy = await goroundFor(engine, backend.url);
    try {
      for (
        const [reason, size] of [
          ["Fine", 0],
          ["OK", 9],
          ["Fine", 10],
          ["All%20Good", 99],
          ["OK", 100_000],
          ["", 1],
        ] as const
      ) {
        const res = await rawRequest(
          proxy.port,
          `GET /${reason}/${size} HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n`,
        );
        // Deno's server (--engine deno) writes its own reason phrase for the status.
        const expected = engine === "deno"
          ? "HTTP/1.1 200 OK"
          : `HTTP/1.1 200 ${decodeURIComponent(reason)}`.trimEnd();
        equal(res.statusLine.trimEnd(), expected);
        equal(field(res, "content-length"), String(size));
        equal(field(res, "x-kept"), "yes");
        equal(field(res, "connection"), "close");
        equal(res.body.length, size);
        match(field(res, "x-request-id") ?? "", /^[\w-]+$/);
      }
    } finally {
      await proxy.stop();
      await backend.close();
    }
  });

  Deno.test(`[${engine}] a backend answering garbage gives 502, and goround keeps serving`, async () => {
    const garbage = rawBackend(async (_request, conn) => {
      await conn.write(new TextEncoder().encode("this is not http\r\n\r\n"));
    });
    const proxy = await startGoround([
      "--engine",
      engine,
      "--backend",
      garbage.url,
      "--workers",
      "1",
      "--retries",
      "0",
    ]);
    try {
      const res = await rawRequest(
        proxy.port,
        "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
      );
      equal(res.status, 502);
      match(proxy.stderr.join("\n"), /protocol error: invalid HTTP version/);
      equal(
        (await rawRequest(proxy.port, "GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"))
          .status,
        502,
      );
    } finally {
      await proxy.stop();
      await garbage.close();
    }
  });

  Deno.test(`[${engine}] a backend that breaks off mid-body: the client's response is cut, not completed, and it is logged`, async () => {
    const cut = rawBackend(async (request, conn) => {
      if (request === "") return; // a health probe
      await conn.write(
        new TextEncoder().encode("HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\nonly the start"),
      );
    });
    const proxy = await startGoround(["--engine", engine, "--backend", cut.url, "--workers", "1"]);
    try {
      const res = await fetch(proxy.url);
      equal(res.status, 200);
      let failed = false;
      try {
        await res.text();
      } catch {
        failed = true;
      }
      assert(failed, "reading the body fails instead of ending cleanly");
      await waitFor(
        () => proxy.stderr.some((l) => /closed the connection 986 bytes short \(GET \/\)/.test(l)),
        {
          what: "the mid-body log line",
        },
      );
      assert(!proxy.stderr.some((l) => l.includes("internal error")), "logged once, not as a bug");
    } finally {
      await proxy.stop();
      await cut.close();
    }
  });
}

for (const engine of ENGINES) {
  Deno.test(`[${engine}] a client leaving mid-download is not logged as the backend breaking off`, async () => {
    let cancelled = false;
    const backend = recordingBackend(() =>
      new Response(
        new ReadableStream<Uint8Array>({
          async pull(controller) {
            await new Promise((resolve) => setTimeout(resolve, 5));
            controller.enqueue(new Uint8Array(16 * 1024));
          },
          cancel() {
            cancelled = true;
          },
        }),
      )
    );
    const proxy = await goroundFor(engine, backend.url);
    try {
      const conn = await Deno.connect({ hostname: "127.0.0.1", port: proxy.port });
      await conn.write(new TextEncoder().encode("GET /endless HTTP/1.1\r\nHost: a\r\n\r\n"));
      const buf = new Uint8Array(64 * 1024);
      let got = 0;
      while (got < 100_000) got += (await conn.read(buf)) ?? 0;
      conn.close(); // the client leaves mid-way
      await waitFor(() => cancelled, { what: "the backend's stream to be cancelled" });
      // Once the request has ended (and status answered after it), the abort has been handled.
      await waitFor(async () => {
        const status = await (await fetch(`${proxy.adminUrl}/status`)).json();
        return status.backends[0].inFlight === 0;
      }, { what: "the request to end" });
      const logged = proxy.stderr.join("\n");
      assert(!/broke off|closed the connection/.test(logged), logged);
    } finally {
      await proxy.stop();
      await backend.close();
    }
  });
}

Deno.test("a member slot this worker has no backend for yet is skipped, not answered 503", async () => {
  // During a change of the backend set, a restarted worker may see a slot in the shared
  // membership before it learns the backend: the request goes to one it knows.
  const backend = recordingBackend(() => new Response("known"));
  const command = parseCommandLine(["--backend", backend.url], () => undefined, 1);
  if (command.kind !== "run") throw new Error("bad test settings");
  const pool = createPool(4);
  setMembers(pool, [0, 1]);
  const upstreams = createUpstreams({ connectTimeout: 1000, responseTimeout: 5000 });
  const forward = createForwarder({
    pool,
    config: command.config,
    backends: [command.config.backends[0], undefined],
    upstreams,
  });
  try {
    for (let i = 0; i < 4; i++) {
      const reply = await forward({
        method: "GET",
        target: "/",
        authority: "a",
        headers: [["host", "a"]],
        body: null,
        bodyLength: 0,
        clientIp: "127.0.0.1",
        proto: "http",
      });
      equal(reply.kind === "upstream" ? reply.response.status : reply.status, 200);
      if (reply.kind === "upstream") reply.response.release();
    }
    equal(backend.requests.length, 4);
  } finally {
    closeUpstreams(upstreams);
    await backend.close();
  }
});
