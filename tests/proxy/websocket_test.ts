import { deepEqual, equal, match, ok as assert } from "node:assert/strict";
import { ENGINES } from "../../lib/config/config.ts";
import { field, Wire } from "../support/raw_client.ts";
import {
  rawBackend,
  recordingBackend,
  sendSignal,
  startGoround,
  waitFor,
} from "../support/helpers.ts";

/** An echo backend: text and binary come back as they went; the close code is recorded. */
function echoBackend(name: string) {
  const closes: { code: number; reason: string }[] = [];
  const backend = recordingBackend((req) => {
    if (req.headers.get("upgrade") !== "websocket") return new Response(`plain ${name}`);
    const protocol = req.headers.get("sec-websocket-protocol")?.split(",")[0]?.trim();
    const { socket, response } = Deno.upgradeWebSocket(req, protocol ? { protocol } : {});
    socket.onmessage = (event) => {
      if (event.data === "close-me") socket.close(4001, "as asked");
      else socket.send(typeof event.data === "string" ? `${name}: ${event.data}` : event.data);
    };
    socket.onclose = (event) => closes.push({ code: event.code, reason: event.reason });
    return response;
  });
  return { ...backend, closes };
}

function open(url: string, protocols?: string[]): Promise<WebSocket> {
  const ws = new WebSocket(url, protocols);
  ws.binaryType = "arraybuffer";
  return new Promise((resolve, reject) => {
    ws.onopen = () => resolve(ws);
    ws.onerror = (event) => reject(new Error(`websocket failed: ${(event as ErrorEvent).message}`));
  });
}

/** The next message; rejects if the socket closes first. */
function next(ws: WebSocket): Promise<string | ArrayBuffer> {
  return new Promise((resolve, reject) => {
    const early = (event: CloseEvent) => reject(new Error(`closed first (${event.code})`));
    if (ws.readyState > WebSocket.OPEN) reject(new Error("closed already"));
    ws.addEventListener("close", early, { once: true });
    ws.onmessage = (event) => {
      ws.removeEventListener("close", early);
      resolve(event.data);
    };
  });
}

function closed(ws: WebSocket): Promise<{ code: number; reason: string }> {
  if (ws.readyState === WebSocket.CLOSED) return Promise.resolve({ code: 1006, reason: "" });
  return new Promise((
    resolve,
  ) => (ws.onclose = (event) => resolve({ code: event.code, reason: event.reason })));
}

/** Reads one HTTP/1.1 answer with a Content-Length (the connection may stay open). */
async function readAnswer(conn: Deno.Conn): Promise<string> {
  const buf = new Uint8Array(4096);
  let text = "";
  while (true) {
    const n = await conn.read(buf);
    if (n === null) return text;
    text += new TextDecoder().decode(buf.subarray(0, n));
    const end = text.indexOf("\r\n\r\n");
    const length = /content-length: *(\d+)/i.exec(text)?.[1];
    if (end >= 0 && length !== undefined && text.length >= end + 4 + Number(length)) return text;
  }
}

for (const engine of ENGINES) {
  Deno.test(`[${engine}] WebSocket: messages both ways, subprotocol, close codes, round-robin selection`, async () => {
    const a = echoBackend("a");
    const b = echoBackend("b");
    const proxy = await startGoround([
      "--engine",
      engine,
      "--backend",
      a.url,
      "--backend",
      b.url,
      "--workers",
      "1",
    ]);
    const wsUrl = `ws://127.0.0.1:${proxy.port}/chat?room=1`;
    try {
      const first = await open(wsUrl, ["chat.v1"]);
      equal(first.protocol, "chat.v1");
      const second = await open(wsUrl);
      first.send("hello");
      equal(await next(first), "a: hello");
      second.send("hi");
      equal(await next(second), "b: hi", "the second connection went to the other backend");
      first.send(new Uint8Array([1, 2, 3]));
      deepEqual(new Uint8Array(await next(first) as ArrayBuffer), new Uint8Array([1, 2, 3]));
      const handshake = a.requests.find((r) => r.headers.get("upgrade") === "websocket")!;
      equal(handshake.headers.get("x-forwarded-for"), "127.0.0.1");
      equal(new URL(handshake.url).pathname + new URL(handshake.url).search, "/chat?room=1");
      // The client closes with a code and reason: the backend sees them.
      const done = closed(first);
      first.close(4000, "bye");
      await done;
      await waitFor(() => a.closes.length === 1, { what: "the backend to see the close" });
      deepEqual(a.closes[0], { code: 4000, reason: "bye" });
      // The backend closes with a code and reason: the client sees them.
      const byBackend = closed(second);
      second.send("close-me");
      deepEqual(await byBackend, { code: 4001, reason: "as asked" });
    } finally {
      await proxy.stop();
      await Promise.all([a.close(), b.close()]);
    }
  });

  Deno.test(`[${engine}] WebSocket: a handshake the backend refuses gets its answer, and the backend stays up`, async () => {
    const backend = recordingBackend((req) =>
      req.headers.get("upgrade") === "websocket"
        ? new Response("not for you\n", { status: 403, headers: { "x-app": "refused" } })
        : new Response("plain")
    );
    const proxy = await startGoround(["--engine", engine, "--backend", backend.url]);
    try {
      for (let i = 0; i < 3; i++) {
        const conn = await Deno.connect({ hostname: "127.0.0.1", port: proxy.port });
        const key = btoa(String.fromCharCode(...crypto.getRandomValues(new Uint8Array(16))));
        await conn.write(new TextEncoder().encode(
          `GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n` +
            `Sec-WebSocket-Key: ${key}\r\nSec-WebSocket-Version: 13\r\n\r\n`,
        ));
        const answer = await readAnswer(conn);
        conn.close();
        assert(answer.startsWith("HTTP/1.1 403"), `refused handshake answered: ${answer}`);
        assert(/x-app: refused/i.test(answer) && answer.endsWith("not for you\n"), answer);
      }
      const status = await (await fetch(`${proxy.adminUrl}/status`)).json();
      equal(status.backends[0].state, "up", "a refusal is the application's answer, not a failure");
      equal(await (await fetch(proxy.url)).text(), "plain");
    } finally {
      await proxy.stop();
      await backend.close();
    }
  });

  Deno.test(`[${engine}] WebSocket: a 3 MiB message and a UTF-8 text cross intact both ways`, async () => {
    const a = echoBackend("a");
    const proxy = await startGoround(["--engine", engine, "--backend", a.url]);
    try {
      const ws = await open(`ws://127.0.0.1:${proxy.port}/`);
      const big = crypto.getRandomValues(new Uint8Array(65536));
      const message = new Uint8Array(3 * 1024 * 1024).map((_, i) => big[i % big.length]!);
      ws.send(message);
      deepEqual(new Uint8Array(await next(ws) as ArrayBuffer), message);
      ws.send("héllo ✓");
      equal(await next(ws), "a: héllo ✓");
      const done = closed(ws);
      ws.close(1000, "done");
      await done;
    } finally {
      await proxy.stop();
      await a.close();
    }
  });

  Deno.test(`[${engine}] WebSocket: --hash-key picks the backend of a handshake as for any request`, async () => {
    const a = echoBackend("a");
    const b = echoBackend("b");
    const proxy = await startGoround([
      "--engine",
      engine,
      "--backends",
      `${a.url},${b.url}`,
      "--algorithm",
      "hash",
      "--hash-key",
      "header:X-User",
    ]);
    try {
      const names = new Set<string>();
      for (let user = 0; user < 12; user++) {
        const headers = { "x-user": `user-${user}` };
        const plain = await (await fetch(proxy.url, { headers })).text();
        const ws = new WebSocket(`ws://127.0.0.1:${proxy.port}/`, { headers });
        await new Promise((resolve, reject) => {
          ws.onopen = resolve;
          ws.onerror = reject;
        });
        ws.send("hi");
        const echoed = await next(ws);
        const done = closed(ws);
        ws.close(1000);
        await done;
        const name = plain.replace("plain ", "");
        names.add(name);
        equal(echoed, `${name}: hi`, `user-${user}: the handshake went where its GET went`);
      }
      equal(names.size, 2, "the users spread over both backends");
    } finally {
      await proxy.stop();
      await Promise.all([a.close(), b.close()]);
    }
  });

  Deno.test(`[${engine}] WebSocket: a backend that dies mid-session closes the client with 1011`, async () => {
    const backend = rawBackend(async (request, conn) => {
      const key = /sec-websocket-key: *(\S+)/i.exec(request)?.[1];
      if (!key) return;
      const digest = await crypto.subtle.digest(
        "SHA-1",
        new TextEncoder().encode(`${key}258EAFA5-E914-47DA-95CA-C5AB0DC85B11`),
      );
      const accept = btoa(String.fromCharCode(...new Uint8Array(digest)));
      await conn.write(new TextEncoder().encode(
        `HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: ${accept}\r\n\r\n`,
      ));
      await new Promise((resolve) => setTimeout(resolve, 100));
      // …and the backend process "dies": the connection drops without a close frame.
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
      const ws = await open(`ws://127.0.0.1:${proxy.port}/`);
      const result = await closed(ws);
      equal(result.code, 1011);
      await waitFor(() => proxy.stderr.some((l) => /websocket: backend .* went away/.test(l)), {
        what: "the log",
      });
    } finally {
      await proxy.stop();
      await backend.close();
    }
  });

  Deno.test(`[${engine}] server-sent events reach the client chunk by chunk, without added delay`, async () => {
    const encoder = new TextEncoder();
    const backend = recordingBackend(() =>
      new Response(
        new ReadableStream({
          async start(controller) {
            controller.enqueue(encoder.encode("data: one\n\n"));
            await new Promise((resolve) => setTimeout(resolve, 400));
            controller.enqueue(encoder.encode("data: two\n\n"));
            controller.close();
          },
        }),
        { headers: { "content-type": "text/event-stream", "cache-control": "no-cache" } },
      )
    );
    const proxy = await startGoround([
      "--engine",
      engine,
      "--backend",
      backend.url,
      "--workers",
      "1",
    ]);
    try {
      const started = performance.now();
      const res = await fetch(proxy.url);
      equal(res.headers.get("content-type"), "text/event-stream");
      const reader = res.body!.getReader();
      const first = await reader.read();
      const firstAt = performance.now() - started;
      equal(new TextDecoder().decode(first.value), "data: one\n\n");
      assert(
        firstAt < 200,
        `first event after ${firstAt.toFixed(0)} ms (the second comes at 400 ms)`,
      );
      let rest = "";
      for (let part = await reader.read(); !part.done; part = await reader.read()) {
        rest += new TextDecoder().decode(part.value);
      }
      equal(rest, "data: two\n\n");
      assert(performance.now() - started >= 380);
    } finally {
      await proxy.stop();
      await backend.close();
    }
  });
}

/** An echo backend that also records when each session closed. */
function timedEchoBackend() {
  const closes: { code: number; reason: string; at: number }[] = [];
  const backend = recordingBackend((req) => {
    if (req.headers.get("upgrade") !== "websocket") return new Response("plain");
    const { socket, response } = Deno.upgradeWebSocket(req);
    socket.onmessage = (event) => socket.send(`echo ${event.data}`);
    socket.onclose = (event) =>
      closes.push({ code: event.code, reason: event.reason, at: Date.now() });
    return response;
  });
  return { ...backend, closes };
}

function deadlineLines(proxy: { stderr: string[] }): string[] {
  return proxy.stderr.filter((line) => line.includes("websocket: drain deadline"));
}

for (const engine of ENGINES) {
  Deno.test(`[${engine}] a drain lets a WebSocket session run; at its deadline both sides get 1001, logged once`, async () => {
    const backend = timedEchoBackend();
    const proxy = await startGoround([
      "--engine",
      engine,
      "--backend",
      backend.url,
      "--workers",
      "1",
      "--drain-timeout",
      "2500ms",
      "--access-log",
      "json",
    ]);
    try {
      const ws = await open(`ws://127.0.0.1:${proxy.port}/`);
      const result = closed(ws);
      await sendSignal(proxy.pid, "TERM");
      const termAt = Date.now();
      await waitFor(() => proxy.stderr.some((l) => l.includes("SIGTERM: draining")), {
        what: "the drain",
      });
      // Past the 1 s grace of idle connections: the session is still served.
      await new Promise((resolve) => setTimeout(resolve, 1500));
      ws.send("still there?");
      equal(await next(ws), "echo still there?");
      const end = await result;
      const at = Date.now() - termAt;
      deepEqual(end, { code: 1001, reason: "going away" });
      assert(at >= 2300 && at < 4500, `closed ${at} ms after SIGTERM (drain timeout 2500 ms)`);
      await waitFor(() => backend.closes.length > 0, { what: "the backend's close" });
      deepEqual(
        backend.closes.map(({ code, reason }) => ({ code, reason })),
        [{ code: 1001, reason: "going away" }],
        "the backend got a close frame too",
      );
      equal((await proxy.exited).code, 0);
      const lines = deadlineLines(proxy);
      equal(lines.length, 1, lines.join("\n"));
      match(
        lines[0]!,
        new RegExp(
          `warn websocket: drain deadline: closing the session of client 127\\.0\\.0\\.1 with backend ${backend.url} \\(id \\S+\\): 1001 going away to the client and the backend$`,
        ),
      );
      assert(!proxy.stderr.some((l) => l.includes("went away")), proxy.stderr.join("\n"));
      const session = proxy.stdout.map((line) => JSON.parse(line)).find((e) => e.status === 101);
      equal(session?.ws_close_code, 1001, proxy.stdout.join("\n"));
    } finally {
      await proxy.stop();
      await backend.close();
    }
  });

  Deno.test(`[${engine}] a WebSocket session that ends during the drain lets goround exit then`, async () => {
    const backend = timedEchoBackend();
    const proxy = await startGoround([
      "--engine",
      engine,
      "--backend",
      backend.url,
      "--workers",
      "1",
      "--drain-timeout",
      "20s",
    ]);
    try {
      const ws = await open(`ws://127.0.0.1:${proxy.port}/`);
      const result = closed(ws);
      await sendSignal(proxy.pid, "TERM");
      await waitFor(() => proxy.stderr.some((l) => l.includes("SIGTERM: draining")), {
        what: "the drain",
      });
      // Past the 1 s grace of idle connections, when Deno.serve would close its sessions.
      await new Promise((resolve) => setTimeout(resolve, 1500));
      ws.send("hello");
      equal(await next(ws), "echo hello");
      const closedAt = Date.now();
      ws.close(1000, "done");
      deepEqual(await result, { code: 1000, reason: "done" });
      equal((await proxy.exited).code, 0);
      const took = Date.now() - closedAt;
      assert(took < 5000, `exited ${took} ms after the session ended (drain timeout 20 s)`);
      await waitFor(() => backend.closes.length > 0, { what: "the backend's close" });
      equal(backend.closes[0]!.code, 1000);
      deepEqual(deadlineLines(proxy), []);
      assert(proxy.stderr.some((l) => l.endsWith(" stopped")), proxy.stderr.join("\n"));
    } finally {
      await proxy.stop();
      await backend.close();
    }
  });
}

Deno.test("[deno] while draining, a new WebSocket handshake gets 503 (the listener stays open for the sessions)", async () => {
  const backend = timedEchoBackend();
  const proxy = await startGoround([
    "--engine",
    "deno",
    "--backend",
    backend.url,
    "--workers",
    "1",
    "--drain-timeout",
    "10s",
  ]);
  try {
    const ws = await open(`ws://127.0.0.1:${proxy.port}/`);
    const result = closed(ws);
    await sendSignal(proxy.pid, "TERM");
    await waitFor(() => proxy.stderr.some((l) => l.includes("SIGTERM: draining")), {
      what: "the drain",
    });
    // The worker drains once its every reply says close.
    await waitFor(async () => {
      const plain = new Wire(await Deno.connect({ hostname: "127.0.0.1", port: proxy.port }));
      try {
        await plain.send("GET / HTTP/1.1\r\nHost: a\r\n\r\n");
        return field(await plain.response(), "connection") === "close";
      } finally {
        plain.close();
      }
    }, { what: "replies with Connection: close" });
    const wire = new Wire(await Deno.connect({ hostname: "127.0.0.1", port: proxy.port }));
    try {
      await wire.send(
        "GET / HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
          "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
      );
      const answer = await wire.response();
      equal(answer.status, 503, answer.statusLine);
      equal(field(answer, "retry-after"), "1");
      equal(field(answer, "connection"), "close");
    } finally {
      wire.close();
    }
    equal(
      backend.requests.filter((r) => r.headers.get("upgrade") === "websocket").length,
      1,
      "the backend saw only the first handshake",
    );
    ws.close(1000, "done");
    await result;
    equal((await proxy.exited).code, 0);
  } finally {
    await proxy.stop();
    await backend.close();
  }
});

Deno.test("[goround] ping and pong frames pass through the tunnel untouched", async () => {
  const backend = echoBackend("a");
  const proxy = await startGoround(["--backend", backend.url, "--workers", "1"]);
  const conn = await Deno.connect({ hostname: "127.0.0.1", port: proxy.port });
  try {
    await conn.write(new TextEncoder().encode(
      "GET /ws HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
    ));
    const buf = new Uint8Array(4096);
    let got = new Uint8Array();
    const readMore = async () => {
      const n = await conn.read(buf);
      if (n === null) throw new Error("closed");
      got = new Uint8Array([...got, ...buf.subarray(0, n)]);
    };
    while (!new TextDecoder().decode(got).includes("\r\n\r\n")) await readMore();
    const text = new TextDecoder().decode(got);
    equal(text.split("\r\n")[0], "HTTP/1.1 101 Switching Protocols");
    got = got.subarray(text.indexOf("\r\n\r\n") + 4);
    // A masked ping from the client (RFC 6455 §5.5.2) with payload "hb".
    const mask = [1, 2, 3, 4];
    const payload = [..."hb"].map((c, i) => c.charCodeAt(0) ^ mask[i % 4]!);
    await conn.write(new Uint8Array([0x89, 0x80 | 2, ...mask, ...payload]));
    while (got.length < 4) await readMore();
    deepEqual(
      [...got.subarray(0, 4)],
      [0x8a, 2, 104, 98],
      "the backend's pong, with the ping's payload",
    );
  } finally {
    conn.close();
    await proxy.stop();
    await backend.close();
  }
});

Deno.test("[goround] a tunnel relays bursts larger than its idle buffer, and small messages after", async () => {
  // Each direction of an idle tunnel reads with a small buffer and switches to body buffers
  // for a burst: large and small messages alternate here, byte for byte.
  const backend = echoBackend("e");
  const proxy = await startGoround(["--backend", backend.url, "--workers", "1"]);
  try {
    const ws = await open(`ws://127.0.0.1:${proxy.port}/`);
    for (const size of [5, 300_000, 7, 1024, 1025, 70_000, 3]) {
      const message = new Uint8Array(size).map((_, i) => (i * 31 + size) & 0xff);
      ws.send(message);
      deepEqual(new Uint8Array(await next(ws) as ArrayBuffer), message, `${size} bytes`);
    }
    ws.send("done?");
    equal(await next(ws), "e: done?");
    const done = closed(ws);
    ws.close(1000, "bye");
    await done;
  } finally {
    await proxy.stop();
    await backend.close();
  }
});
