import { deepEqual, equal, ok as assert } from "node:assert/strict";
import { ENGINES } from "../lib/config.ts";
import {
  get,
  goroundFor,
  rawBackend,
  rawRequest,
  recordingBackend,
  startGoround,
  waitFor,
} from "./helpers.ts";

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

/** A whole response a backend sends where none was asked for: the attack's payload. */
const STRAY = "HTTP/1.1 200 OK\r\nContent-Length: 8\r\n\r\npoisoned";
/** How long the backend waits before its stray write in the timed cases, ms. */
const STRAY_DELAY_MS = 30;

/**
 * A keep-alive backend that answers `/next` with "fine" and the other paths with a response
 * followed by STRAY: bytes a backend sends after the end of a response (a body after a 204, a
 * 304 or a HEAD response; bytes past its own framing), in the same write, a little later, or only
 * once the next request has arrived on the connection (the latest it could, beyond any delay
 * goround might wait). `closed` counts connections on which the backend saw goround hang up.
 */
function strayBackend() {
  let closed = 0;
  const heads: Record<string, string> = {
    "204": "HTTP/1.1 204 No Content\r\n\r\n",
    "304": 'HTTP/1.1 304 Not Modified\r\nETag: "x"\r\n\r\n',
    head: "HTTP/1.1 200 OK\r\nContent-Length: 8\r\n\r\n",
    length: "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
    big: `HTTP/1.1 200 OK\r\nContent-Length: 300000\r\n\r\n${"b".repeat(300_000)}`,
    chunked: "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n",
    idle: "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
  };
  const server = rawBackend(async (first, conn) => {
    const buf = new Uint8Array(65536);
    const next = async () => {
      const n = await conn.read(buf).catch(() => null);
      return n === null ? "" : new TextDecoder().decode(buf.subarray(0, n));
    };
    const write = (text: string) => conn.write(new TextEncoder().encode(text));
    let text = first;
    while (text !== "") {
      // The path is /KIND/WHEN: WHEN is "same" (one write), "later" or "next-request".
      const [, kind = "", when = ""] = (text.split(" ")[1] ?? "").split("/");
      if (kind === "next") {
        await write("HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nfine");
      } else if (when === "same") {
        await write(heads[kind]! + STRAY);
      } else if (when === "next-request") {
        await write(heads[kind]!);
        text = await next();
        if (text === "") break;
        await write(STRAY);
        continue; // then answer that request as usual
      } else {
        await write(heads[kind]!);
        await new Promise((resolve) => setTimeout(resolve, STRAY_DELAY_MS));
        await write(STRAY);
      }
      text = await next();
    }
    closed++;
  });
  return { ...server, closed: () => closed };
}

for (const engine of ENGINES) {
  Deno.test(`[${engine}] bytes a backend sends after a response never reach another client`, async (t) => {
    const backend = strayBackend();
    const proxy = await goroundFor(engine, backend.url);
    /** Client A asks `path`; client B asks right after, on its own connection. */
    const secondClientSees = async (path: string, method = "GET") => {
      const first = await get(`${proxy.url}${path}`, { method });
      assert(first.status < 400, `${method} ${path}: ${first.status}`);
      return (await get(`${proxy.url}/next/`)).text;
    };
    const TRIES = 10;
    try {
      for (
        const [path, method] of [
          ["/204", "GET"],
          ["/304", "GET"],
          ["/head", "HEAD"],
        ]
      ) {
        for (const when of ["later", "next-request"]) {
          await t.step(`${method} ${path}, the body sent ${when}`, async () => {
            const seen: string[] = [];
            for (let i = 0; i < TRIES; i++) {
              seen.push(await secondClientSees(`${path}/${when}`, method));
            }
            deepEqual(seen, Array(TRIES).fill("fine"));
          });
        }
      }
      for (const kind of ["length", "big", "chunked"]) {
        await t.step(`bytes past the end of a ${kind} body, in the same write`, async () => {
          const seen: string[] = [];
          for (let i = 0; i < TRIES; i++) seen.push(await secondClientSees(`/${kind}/same`));
          deepEqual(seen, Array(TRIES).fill("fine"));
        });
      }
      await t.step("bytes that arrive on an idle pooled connection close it", async () => {
        for (let i = 0; i < TRIES; i++) {
          const closed = backend.closed();
          equal((await get(`${proxy.url}/idle/later`)).text, "ok");
          await waitFor(() => backend.closed() > closed, {
            what: "goround to drop the connection",
          });
          equal((await get(`${proxy.url}/next/`)).text, "fine");
        }
      });
      await t.step("after ordinary responses the connection is still reused", async () => {
        const before = backend.connections();
        for (let i = 0; i < 20; i++) equal((await get(`${proxy.url}/next/`)).text, "fine");
        assert(backend.connections() - before <= 1, `${backend.connections() - before} new`);
      });
    } finally {
      await proxy.stop();
      await backend.close();
    }
  });
}
