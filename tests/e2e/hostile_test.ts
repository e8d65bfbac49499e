import { deepEqual, equal, ok as assert } from "node:assert/strict";
import { ENGINES } from "../../lib/config/config.ts";
import { encodeLatin1 } from "../../lib/http/http1.ts";
import {
  get,
  goroundFor,
  rawBackend,
  recordingBackend,
  runGoround,
  startGoround,
  waitFor,
} from "../support/helpers.ts";
import { rawRequest } from "../support/raw_client.ts";

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

/** Sends a request as bytes (each character one byte) and returns the response's status. */
async function statusOf(port: number, request: string): Promise<number> {
  return (await rawRequest(port, encodeLatin1(request), 2000)).status;
}

/** A backend that takes any request head it is sent (as nginx or hyper would not), answers
 * 200 and records the head as text: what goround forwards is seen as it went out. */
function lenientBackend() {
  const heads: string[] = [];
  const server = rawBackend(async (text, conn) => {
    heads.push(text);
    await conn.write(
      encodeLatin1("HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok"),
    );
  });
  return { ...server, heads };
}

/** A WebSocket handshake (RFC 6455 §4.1) for `target`, with `Host: host`. */
function handshake(target: string, host: string): string {
  return `GET ${target} HTTP/1.1\r\nHost: ${host}\r\nUpgrade: websocket\r\n` +
    "Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\n" +
    "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n";
}

/** Sends a request (a WebSocket handshake, say) and returns the status of the answer's head,
 * without waiting for the connection to close, then hangs up. */
async function headStatus(port: number, request: string): Promise<number> {
  const conn = await Deno.connect({ hostname: "127.0.0.1", port });
  try {
    await conn.write(encodeLatin1(request));
    let text = "";
    const buf = new Uint8Array(4096);
    while (!text.includes("\r\n\r\n")) {
      const n = await conn.read(buf);
      if (n === null) break;
      text += new TextDecoder().decode(buf.subarray(0, n));
    }
    return Number(text.split(" ")[1]);
  } finally {
    conn.close();
  }
}

for (const engine of ENGINES) {
  Deno.test(`[${engine}] request targets and Host values nginx refuses get 400 before any backend`, async (t) => {
    const backend = lenientBackend();
    const proxy = await goroundFor(engine, backend.url);
    const line = (target: string, host = "a", method = "GET") =>
      `${method} ${target} HTTP/1.1\r\nHost: ${host}\r\nConnection: close\r\n\r\n`;
    const refused: [string, string][] = [
      ["a target that is neither origin-form nor absolute-form", line("abc")],
      ["* for a method other than OPTIONS", line("*")],
      ["a raw byte 0x80 in the target", line("/a\x80b")],
      ["a raw byte 0xE9 in the target", line("/caf\xe9")],
      ["absolute-form with the scheme file", line("file://localhost/etc/passwd")],
      ["absolute-form with the scheme ftp", line("ftp://x/y")],
      ["absolute-form with the scheme ws", line("ws://x/y")],
      ["absolute-form with userinfo (RFC 9110 §4.2.4)", line("http://user:pw@x/y")],
      ["Host: a b", line("/", "a b")],
      ["Host: a/b", line("/", "a/b")],
      ["Host: a@b", line("/", "a@b")],
      ["Host: a:b", line("/", "a:b")],
      ["an empty Host", line("/", "")],
      ["a raw byte in Host", line("/", "caf\xe9")],
      ["Host: [not-ipv6]", line("/", "[zz]:80")],
      ["Host: a\\b", line("/", "a\\b")],
      ["an invalid Host beside an absolute-form target", line("http://x/y", "a b")],
      ["a WebSocket handshake with Host: a b", handshake("/ws", "a b")],
      ["a WebSocket handshake to ws://x/ws", handshake("ws://x/ws", "a")],
    ];
    // goround sees the target as sent; under Deno.serve, hyper hands these two over as the
    // origin-form paths /file:///etc/passwd and /http:///x, with the client's Host.
    if (engine === "goround") {
      refused.push(
        ["absolute-form file:///etc/passwd", line("file:///etc/passwd")],
        ["absolute-form with an empty host (RFC 9110 §4.2.1)", line("http:///x")],
      );
    }
    try {
      for (const [name, request] of refused) {
        await t.step(name, async () => {
          const before = backend.heads.length;
          equal(await headStatus(proxy.port, request), 400);
          deepEqual(backend.heads.slice(before), [], "nothing reached the backend");
        });
      }
      await t.step(
        "file:///etc/passwd never goes out as /etc/passwd with an empty Host",
        async () => {
          const before = backend.heads.length;
          const status = await statusOf(proxy.port, line("file:///etc/passwd"));
          const sent = backend.heads.slice(before).map((head) => head.split("\r\n").slice(0, 2));
          if (engine === "goround") deepEqual([status, sent], [400, []]);
          else deepEqual(sent, [["GET /file:///etc/passwd HTTP/1.1", "host: a"]]);
        },
      );
      const accepted: [string, string, string][] = [
        ["OPTIONS *", line("*", "a", "OPTIONS"), engine === "goround" ? "OPTIONS *" : "OPTIONS /*"],
        ["an IPv6 literal Host", line("/v6", "[::1]:8080"), "GET /v6"],
        ["an IPv4 Host with a port", line("/v4", "10.0.0.1:80"), "GET /v4"],
        ["a reg-name with _ and ~", line("/name", "a_b~c.example"), "GET /name"],
        ["a pct-encoded reg-name", line("/pct", "a%41b"), "GET /pct"],
        ["absolute-form, a query, no path", line("HTTP://x.example?q=1"), "GET /?q=1"],
      ];
      for (const [name, request, sent] of accepted) {
        await t.step(`accepted: ${name}`, async () => {
          equal(await statusOf(proxy.port, request), 200);
          const host = /^HTTP:\/\/([^?]+)/.exec(request.split(" ")[1]!)?.[1] ??
            /\r\nHost: ([^\r]*)/.exec(request)![1]!;
          deepEqual(backend.heads.at(-1)!.split("\r\n").slice(0, 2), [
            `${sent} HTTP/1.1`,
            `host: ${host}`,
          ]);
        });
      }
    } finally {
      await proxy.stop();
      await backend.close();
    }
  });

  Deno.test(`[${engine}] header names with _ are dropped before forwarding unless --underscore-headers keep`, async (t) => {
    const backend = recordingBackend((req) => {
      if (req.headers.get("upgrade") !== "websocket") return new Response("ok");
      const { socket, response } = Deno.upgradeWebSocket(req);
      socket.onopen = () => socket.close(1000, "done");
      return response;
    });
    const forged = "X_Forwarded_For: 6.6.6.6\r\nX_Forwarded_Proto: https\r\nx-plain: 1\r\n";
    const plain = `GET / HTTP/1.1\r\nHost: a\r\n${forged}Connection: close\r\n\r\n`;
    const upgrade = handshake("/ws", `a\r\n${forged.slice(0, -2)}`);
    const names = (headers: Headers) =>
      [...headers.keys()].filter((n) => n.includes("forwarded") || n === "x-plain");
    for (const mode of ["drop", "keep"]) {
      const flags = mode === "drop" ? [] : ["--underscore-headers", "keep"];
      const proxy = await goroundFor(engine, backend.url, flags);
      const expected = mode === "drop"
        ? ["x-forwarded-for", "x-forwarded-host", "x-forwarded-proto", "x-plain"]
        : [
          "x-forwarded-for",
          "x-forwarded-host",
          "x-forwarded-proto",
          "x-plain",
          "x_forwarded_for",
          "x_forwarded_proto",
        ];
      try {
        await t.step(`${mode}: a plain request`, async () => {
          equal(await statusOf(proxy.port, plain), 200);
          const seen = backend.requests.at(-1)!.headers;
          deepEqual(names(seen).sort(), expected);
          equal(seen.get("x-forwarded-for"), "127.0.0.1");
        });
        await t.step(`${mode}: a WebSocket handshake`, async () => {
          const before = backend.requests.length;
          equal(await headStatus(proxy.port, upgrade), 101);
          await waitFor(() => backend.requests.length > before, { what: "the handshake" });
          deepEqual(names(backend.requests.at(-1)!.headers).sort(), expected);
        });
      } finally {
        await proxy.stop();
      }
    }
    await backend.close();
  });
}

Deno.test("--underscore-headers takes drop or keep, and says so otherwise", async () => {
  const { code, stderr } = await runGoround(["--underscore-headers", "allow"]);
  equal(code, 2);
  equal(
    stderr.trim(),
    'goround: --underscore-headers: "allow" is not an underscore-headers mode: expected one of drop, keep',
  );
});
