// The admin API is not reachable through the proxy (issue 12's review, H3 and M3): its address
// is refused as a backend, a request that came through goround is refused, and a huge body is
// refused before it holds the main thread. Real processes on loopback.
import { equal, match, ok as assert } from "node:assert/strict";
import { recordingBackend, runGoround, startGoround } from "../support/helpers.ts";
import { rawRequest } from "../support/raw_client.ts";

function portOf(url: string): number {
  return Number(new URL(url).port);
}

function freePort(): number {
  const probe = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = probe.addr.port;
  probe.close();
  return port;
}

Deno.test("the admin address as a backend exits 2 before anything starts", async () => {
  const [listen, admin] = [freePort(), freePort()];
  const { code, stdout, stderr } = await runGoround([
    "--listen",
    `127.0.0.1:${listen}`,
    "--admin",
    `127.0.0.1:${admin}`,
    "--backends",
    `http://localhost:${admin}`,
  ]);
  equal(code, 2);
  equal(stdout, "");
  equal(
    stderr.trim(),
    `goround: --backends: "http://localhost:${admin}" is goround's own address (its admin API listens on 127.0.0.1:${admin}): expected another server`,
  );
});

Deno.test("through the proxy, no client reaches the admin API: POST /backends refuses its address, and a request relayed to it is refused 403", async () => {
  let adminUrl = "";
  // Another proxy in front of the admin address (a relay the operator set up, an nginx).
  const relay = recordingBackend(async (req) => {
    const res = await fetch(`${adminUrl}/backends/0/drain`, {
      method: "POST",
      headers: { "content-type": "application/json", via: req.headers.get("via") ?? "" },
      body: "{}",
    });
    return new Response(await res.text(), { status: res.status });
  });
  const app = recordingBackend(() => new Response("app"));
  const proxy = await startGoround(["--backend", app.url, "--workers", "1"]);
  try {
    adminUrl = proxy.adminUrl;
    const json = { "content-type": "application/json" };
    const added = await fetch(`${proxy.adminUrl}/backends`, {
      method: "POST",
      headers: json,
      body: JSON.stringify({ url: proxy.adminUrl }),
    });
    assert(added.status >= 400 && added.status < 500, `POST /backends answered ${added.status}`);
    match(await added.text(), /its admin API listens on/);
    // The relay joins as a backend; a client's request through it reaches the admin port.
    const joined = await fetch(`${proxy.adminUrl}/backends`, {
      method: "POST",
      headers: json,
      body: JSON.stringify({ url: relay.url }),
    });
    equal(joined.status, 201, await joined.text());
    let relayed = "";
    for (let i = 0; i < 20 && relayed === ""; i++) {
      const res = await fetch(`${proxy.url}/`);
      const text = await res.text();
      if (text !== "app") relayed = `${res.status} ${text}`;
    }
    match(relayed, /^403 .*came through goround's proxy/);
    const status = await (await fetch(`${proxy.adminUrl}/status`)).json();
    equal(status.backends[0].state, "up", "the backend was not drained");
  } finally {
    await proxy.stop();
    await relay.close();
    await app.close();
  }
});

Deno.test("an admin request body over 64 KiB is refused 413 at once, and the health checks go on", async () => {
  const app = recordingBackend(() => new Response("app"));
  const proxy = await startGoround([
    "--backend",
    app.url,
    "--workers",
    "1",
    "--health-interval",
    "200ms",
  ]);
  try {
    const host = new URL(proxy.adminUrl).host;
    const port = portOf(proxy.adminUrl);
    // Declared huge: refused without reading it.
    const declared = await rawRequest(
      port,
      `POST /backends HTTP/1.1\r\nHost: ${host}\r\nContent-Type: application/json\r\n` +
        "Content-Length: 2147483648\r\nConnection: close\r\n\r\n{",
      // The answer comes at once; the connection stays open while the runtime waits for the body.
      1000,
    );
    equal(declared.status, 413);
    // Chunked, 10 MB: cut off at the limit.
    const chunk = "a".repeat(64 * 1024);
    const res = await fetch(`${proxy.adminUrl}/backends`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: new ReadableStream({
        start(controller) {
          for (let i = 0; i < 160; i++) controller.enqueue(new TextEncoder().encode(chunk));
          controller.close();
        },
      }),
    });
    equal(res.status, 413);
    match(await res.text(), /request body over 65536 bytes/);
    const status = await (await fetch(`${proxy.adminUrl}/status`)).json();
    equal(status.backends.length, 1);
    equal(status.backends[0].state, "up");
    assert(!proxy.stderr.some((l) => l.includes("DOWN")), proxy.stderr.join("\n"));
  } finally {
    await proxy.stop();
    await app.close();
  }
});
