import { deepEqual, equal, ok as assert } from "node:assert/strict";
import { ENGINES } from "../lib/config.ts";
import { get, rawRequest, recordingBackend, startGoround } from "./helpers.ts";

// Hostile input must not reach a backend, fool goround or crash it, whichever front end reads it.
for (const engine of ENGINES) {
  Deno.test(`[${engine}] hostile requests are refused at the front and never reach a backend`, async (t) => {
    const backend = recordingBackend(() => new Response("ok"));
    const proxy = await startGoround([
      "--engine",
      engine,
      "--backend",
      backend.url,
      "--workers",
      "1",
    ]);
    const refused = async (request: string, statuses: number[]) => {
      const before = backend.requests.length;
      const res = await rawRequest(proxy.port, request, 2000);
      assert(statuses.includes(res.status), `got ${res.statusLine || "no response"}`);
      equal(backend.requests.length, before, "nothing reached the backend");
    };
    try {
      await t.step("Content-Length with Transfer-Encoding (request smuggling)", () =>
        refused(
          "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: a\r\n\r\n",
          [400],
        ));
      await t.step(
        "two different Content-Length values",
        () =>
          refused(
            "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nContent-Length: 5\r\n\r\nabcde",
            [400],
          ),
      );
      await t.step(
        "obs-fold",
        () =>
          refused("GET / HTTP/1.1\r\nHost: a\r\nX-Folded: a\r\n b\r\nConnection: close\r\n\r\n", [
            400,
          ]),
      );
      await t.step(
        "a bare CR inside a field value (CR/LF injection)",
        () =>
          refused(
            "GET / HTTP/1.1\r\nHost: a\r\nX-Inject: a\rX-Evil: 1\r\nConnection: close\r\n\r\n",
            [400],
          ),
      );
      await t.step(
        "a NUL byte in a field value",
        () =>
          refused("GET / HTTP/1.1\r\nHost: a\r\nX-Nul: a\x00b\r\nConnection: close\r\n\r\n", [400]),
      );
      // goround's own front answers 431 (RFC 6585 §5); under Deno.serve, hyper answers 400 and
      // offers no way to change that. Either way nothing reaches the backend.
      const big = `GET / HTTP/1.1\r\nHost: a\r\nX-Big: ${"a".repeat(100 * 1024)}\r\n\r\n`;
      await t.step(
        "over-large headers get 431 (400 under Deno.serve)",
        () => refused(big, engine === "goround" ? [431] : [400]),
      );
      await t.step(
        "CONNECT (no tunnels)",
        () =>
          refused(
            "CONNECT internal.example:22 HTTP/1.1\r\nHost: internal.example:22\r\nConnection: close\r\n\r\n",
            [405],
          ),
      );
    } finally {
      await proxy.stop();
      await backend.close();
    }
  });

  Deno.test(`[${engine}] Host and absolute-form targets cannot choose the backend`, async () => {
    const backends = ["a", "b"].map((name) => recordingBackend(() => new Response(name)));
    const proxy = await startGoround([
      "--engine",
      engine,
      ...backends.flatMap((b) => ["--backend", b.url]),
      "--workers",
      "1",
    ]);
    try {
      const replies: string[] = [];
      const targets = [
        `GET / HTTP/1.1\r\nHost: ${backends[1]!.url.slice(7)}\r\nConnection: close\r\n\r\n`,
        `GET / HTTP/1.1\r\nHost: ${backends[1]!.url.slice(7)}\r\nConnection: close\r\n\r\n`,
        `GET ${backends[0]!.url}/ HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n`,
        `GET http://169.254.169.254/latest/meta-data HTTP/1.1\r\nHost: 169.254.169.254\r\nConnection: close\r\n\r\n`,
      ];
      for (const request of targets) {
        replies.push(new TextDecoder().decode((await rawRequest(proxy.port, request)).body));
      }
      deepEqual(replies, ["a", "b", "a", "b"], "plain round-robin, whatever the request names");
      equal(backends[1]!.requests.at(-1)!.headers.get("host"), "169.254.169.254");
    } finally {
      await proxy.stop();
      await Promise.all(backends.map((b) => b.close()));
    }
  });

  Deno.test(`[${engine}] a slowloris (many connections trickling headers) does not stop other clients`, async () => {
    const backend = recordingBackend(() => new Response("ok"));
    const proxy = await startGoround([
      "--engine",
      engine,
      "--backend",
      backend.url,
      "--workers",
      "1",
    ]);
    const slow: Deno.Conn[] = [];
    try {
      for (let i = 0; i < 200; i++) {
        const conn = await Deno.connect({ hostname: "127.0.0.1", port: proxy.port });
        await conn.write(new TextEncoder().encode("GET / HTTP/1.1\r\nHost: a\r\nX-Slow: "));
        slow.push(conn);
      }
      for (let round = 0; round < 3; round++) {
        for (const conn of slow) await conn.write(new TextEncoder().encode("a")).catch(() => 0);
        const started = Date.now();
        const res = await get(proxy.url);
        equal(res.text, "ok");
        assert(
          Date.now() - started < 1000,
          `served in ${Date.now() - started} ms beside 200 slow clients`,
        );
      }
    } finally {
      for (const conn of slow) {
        try {
          conn.close();
        } catch {
          // Closed by the server.
        }
      }
      await proxy.stop();
      await backend.close();
    }
  });
}

Deno.test("[goround] --header-timeout closes connections that trickle a head, freeing their resources", async () => {
  const backend = recordingBackend(() => new Response("ok"));
  const proxy = await startGoround([
    "--backend",
    backend.url,
    "--workers",
    "1",
    "--header-timeout",
    "300ms",
  ]);
  const conn = await Deno.connect({ hostname: "127.0.0.1", port: proxy.port });
  try {
    const started = Date.now();
    await conn.write(new TextEncoder().encode("GET / HTTP/1.1\r\nHost: a\r\n"));
    let closed = false;
    for (let i = 0; i < 30 && !closed; i++) {
      await new Promise((resolve) => setTimeout(resolve, 50));
      closed = (await conn.write(new TextEncoder().encode("X: y\r\n")).catch(() => -1)) === -1 ||
        Date.now() - started > 1200;
    }
    const buf = new Uint8Array(100);
    const n = await conn.read(buf).catch(() => null);
    equal(n, null, "the server closed the connection without answering");
    const took = Date.now() - started;
    assert(took >= 250 && took < 1500, `closed after ${took} ms`);
  } finally {
    try {
      conn.close();
    } catch {
      // Closed by the server.
    }
    await proxy.stop();
    await backend.close();
  }
});
