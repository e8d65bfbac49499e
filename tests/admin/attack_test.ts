// Attacks on the hardened admin API (issue 12 §1 and §6), each as a real process on loopback:
// what a page in the operator's browser, a script racing itself, or a careless operator can still
// do. Every test here failed on the commit it was written against; each names what a user sees.
import { deepEqual, equal, ok as assert } from "node:assert/strict";
import {
  type Goround,
  recordingBackend,
  runGoround,
  sendSignal,
  startGoround,
  waitFor,
} from "../support/helpers.ts";
import { rawRequest, type RawResponse } from "../support/raw_client.ts";
import {
  type Chromium,
  CHROMIUM_PATH,
  ensureDebianPackage,
  launchChromium,
} from "../support/cdp.ts";

// deno-lint-ignore no-explicit-any
type Json = any;

const JSON_TYPE = { "Content-Type": "application/json" };

function portOf(url: string): number {
  return Number(new URL(url).port);
}

/** One admin request on its own connection, with the right `Host`. */
async function admin(
  proxy: Goround,
  head: string,
  fields: Record<string, string> = {},
  body = "",
): Promise<RawResponse & { text: string }> {
  const host = new URL(proxy.adminUrl).host;
  const lines = Object.entries({ Host: host, ...fields })
    .map(([name, value]) => `${name}: ${value}\r\n`).join("");
  const length = `Content-Length: ${new TextEncoder().encode(body).length}\r\n`;
  const response = await rawRequest(
    portOf(proxy.adminUrl),
    `${head} HTTP/1.1\r\n${lines}${length}Connection: close\r\n\r\n${body}`,
    10_000,
  );
  return { ...response, text: new TextDecoder().decode(response.body) };
}

async function backends(proxy: Goround): Promise<Json[]> {
  const res = await admin(proxy, "GET /status");
  equal(res.status, 200, res.text);
  return JSON.parse(res.text).backends;
}

function add(proxy: Goround, url: string): Promise<RawResponse & { text: string }> {
  return admin(proxy, "POST /backends", JSON_TYPE, JSON.stringify({ url }));
}

Deno.test("clickjacking: one click on another page's bait does not drain a backend through a framed dashboard", async () => {
  await ensureDebianPackage(CHROMIUM_PATH, "chromium");
  const dir = await Deno.makeTempDir({ prefix: "goround-clickjack-" });
  const [a, b] = [recordingBackend(), recordingBackend()];
  let proxy: Goround | null = null;
  let browser: Chromium | null = null;
  let attacker: Deno.HttpServer<Deno.NetAddr> | null = null;
  try {
    proxy = await startGoround(["--backend", a.url, "--backend", b.url, "--workers", "1"]);
    deepEqual((await backends(proxy)).map((x) => x.state), ["up", "up"]);
    // The dashboard nearly invisible over a bait button, filling the viewport as a tab would.
    const page = `<!doctype html><html><head><meta charset="utf-8"><style>
body { margin: 0 } #bait { position: absolute; z-index: 1 }
iframe { position: absolute; inset: 0; width: 100vw; height: 100vh; border: 0; opacity: 0.01; z-index: 2 }
</style></head><body><button id="bait">Claim your prize</button>
<iframe src="${proxy.adminUrl}/" onload="window.framed = true"></iframe></body></html>`;
    attacker = Deno.serve(
      { hostname: "127.0.0.1", port: 0, onListen: () => {} },
      () => new Response(page, { headers: { "content-type": "text/html; charset=utf-8" } }),
    );
    browser = await launchChromium({ userDataDir: `${dir}/profile` });
    // The dashboard's layout is public: where its first Drain button is in a tab this size.
    const probe = await browser.cdp.open(`${proxy.adminUrl}/`);
    await probe.waitFor("document.querySelector('button[data-action=drain]')", "the dashboard");
    const at = await probe.evaluate<{ x: number; y: number }>(`(() => {
      const r = document.querySelector('button[data-action=drain]').getBoundingClientRect();
      return { x: r.x + r.width / 2, y: r.y + r.height / 2 };
    })()`);
    await probe.close();

    const tab = await browser.cdp.open(`http://127.0.0.1:${attacker.addr.port}/`);
    await tab.waitFor("window.framed", "the frame to load");
    // The victim clicks the bait a few times over 3 s (the frame renders its cards within ms).
    const deadline = Date.now() + 3000;
    let drained = false;
    while (!drained && Date.now() < deadline) {
      for (const type of ["mousePressed", "mouseReleased"]) {
        await tab.send("Input.dispatchMouseEvent", {
          type,
          x: at.x,
          y: at.y,
          button: "left",
          clickCount: 1,
        });
      }
      drained = (await backends(proxy)).some((x) => x.state !== "up");
      if (!drained) await new Promise((resolve) => setTimeout(resolve, 250));
    }
    await tab.close();
    deepEqual(
      (await backends(proxy)).map((x) => x.state),
      ["up", "up"],
      "a click on the bait drained a backend: the dashboard may be framed by any page",
    );
  } finally {
    await browser?.close();
    await attacker?.shutdown();
    await proxy?.stop();
    await Promise.all([a.close(), b.close()]);
    await Deno.remove(dir, { recursive: true }).catch(() => {});
  }
});

Deno.test("concurrent POST /backends: every 201 is a backend in the pool", async () => {
  const a = recordingBackend();
  const extra = Array.from({ length: 6 }, () => recordingBackend());
  const proxy = await startGoround(["--backend", a.url, "--workers", "1"]);
  try {
    const answers = await Promise.all(extra.map((b) => add(proxy, b.url)));
    for (const [i, res] of answers.entries()) {
      equal(res.status, 201, res.text);
      equal(JSON.parse(res.text)?.url, extra[i]!.url, `the 201 for ${extra[i]!.url}: ${res.text}`);
    }
    deepEqual(
      (await backends(proxy)).map((x) => x.url).sort(),
      [a, ...extra].map((b) => b.url).sort(),
      "each added backend is in the pool",
    );
  } finally {
    await proxy.stop();
    await Promise.all([a, ...extra].map((b) => b.close()));
  }
});

Deno.test("concurrent DELETE /backends/{id}: every 204 is a backend gone, and no other", async () => {
  const all = Array.from({ length: 4 }, () => recordingBackend());
  const proxy = await startGoround([...all.flatMap((b) => ["--backend", b.url]), "--workers", "1"]);
  try {
    const answers = await Promise.all(
      [0, 1, 2].map((id) => admin(proxy, `DELETE /backends/${id}`, JSON_TYPE)),
    );
    deepEqual(answers.map((res) => res.status), [204, 204, 204]);
    deepEqual((await backends(proxy)).map((x) => x.url), [all[3]!.url], "only the fourth is left");
  } finally {
    await proxy.stop();
    await Promise.all(all.map((b) => b.close()));
  }
});

Deno.test("POST /backends with goround's own address does not make requests loop", async () => {
  const dead = recordingBackend();
  await dead.close(); // its port now refuses
  const proxy = await startGoround([
    "--backend",
    dead.url,
    "--workers",
    "1",
    "--drain-timeout",
    "1s",
  ]);
  try {
    await add(proxy, proxy.url); // the operator pastes the proxy's address by mistake
    const started = Date.now();
    let answer: string;
    try {
      const res = await rawRequest(
        proxy.port,
        "GET /x HTTP/1.1\r\nHost: app.example\r\nConnection: close\r\n\r\n",
        5000,
      );
      answer = res.status > 0 ? String(res.status) : "no answer";
    } catch (error) {
      answer = `a failed connection (${(error as Error).message})`;
    }
    const took = Date.now() - started;
    const emfile = proxy.stderr.filter((l) => l.includes("Too many open files")).length;
    assert(
      /^\d+$/.test(answer) && took < 3000,
      `a client request got ${answer} after ${took} ms: it looped through goround itself ` +
        `(${emfile} "Too many open files" errors logged)`,
    );
  } finally {
    await proxy.stop();
  }
});

Deno.test("--panic: a backend whose first health check has not passed gets no request", async () => {
  const a = recordingBackend();
  // Its health check answers only after the check's timeout; everything else answers at once.
  const b = recordingBackend(async (req) => {
    if (new URL(req.url).pathname === "/healthz") {
      await new Promise((resolve) => setTimeout(resolve, 1500));
    }
    return new Response("from b");
  });
  const proxy = await startGoround([
    "--backend",
    a.url,
    "--workers",
    "1",
    "--panic",
    "--health-path",
    "/healthz",
    "--health-timeout",
    "1s",
    "--health-interval",
    "10s",
  ]);
  try {
    await a.close(); // the only backend dies: panic mode
    const adding = add(proxy, b.url);
    await waitFor(async () => (await backends(proxy)).some((x) => x.url === b.url), {
      what: "the new backend to join",
    });
    for (let i = 0; i < 3; i++) {
      await rawRequest(proxy.port, "GET /p HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    }
    equal((await adding).status, 201);
    const sent = b.requests.filter((r) => new URL(r.url).pathname !== "/healthz");
    equal(sent.length, 0, `requests sent to a backend that never passed a check: ${sent.length}`);
  } finally {
    await proxy.stop();
    await b.close();
  }
});

Deno.test("POST /backends whose backend is removed during its first check does not answer 201 null", async () => {
  const a = recordingBackend();
  const slow = recordingBackend(async () => {
    await new Promise((resolve) => setTimeout(resolve, 1500));
    return new Response("late");
  });
  const proxy = await startGoround([
    "--backend",
    a.url,
    "--workers",
    "1",
    "--health-path",
    "/healthz",
    "--health-timeout",
    "1s",
  ]);
  try {
    const adding = add(proxy, slow.url);
    let id = -1;
    await waitFor(async () => {
      id = (await backends(proxy)).find((x) => x.url === slow.url)?.id ?? -1;
      return id >= 0;
    }, { what: "the new backend to join" });
    equal((await admin(proxy, `DELETE /backends/${id}`, JSON_TYPE)).status, 204);
    const res = await adding;
    assert(
      res.status !== 201 || JSON.parse(res.text) !== null,
      `POST /backends answered ${res.status} ${res.text.trim()}`,
    );
  } finally {
    await proxy.stop();
    await Promise.all([a.close(), slow.close()]);
  }
});

Deno.test("a reload that sets admin-token enforces it, or says it takes effect on restart", async () => {
  const backend = recordingBackend();
  const dir = await Deno.makeTempDir();
  const file = `${dir}/goround.json`;
  await Deno.writeTextFile(file, JSON.stringify({ backends: [backend.url] }));
  const proxy = await startGoround(["--config", file, "--workers", "1"], { readable: dir });
  try {
    await Deno.writeTextFile(
      file,
      JSON.stringify({ backends: [backend.url], "admin-token": "s3cret-token" }),
    );
    await sendSignal(proxy.pid, "HUP");
    await waitFor(() => proxy.stderr.some((l) => l.includes("reloaded")), { what: "the reload" });
    const open = (await admin(proxy, "GET /status")).status;
    const said = proxy.stderr.some((l) => /admin-?token.*restart/i.test(l));
    assert(
      open === 401 || said,
      `after the reload GET /status without the token is ${open}, and the log says only: ` +
        proxy.stderr.filter((l) => !l.startsWith("127.")).join(" / "),
    );
  } finally {
    await proxy.stop();
    await backend.close();
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("--admin-hosts refuses, with exit 2, names that can never match a Host", async () => {
  // `goround check` validates the flags and exits; a name it accepts is one goround runs with.
  for (const value of ["[1::2::3]", "[:]", "999.999.999.999"]) {
    const { code, stderr } = await runGoround([
      "check",
      "--backend",
      "http://127.0.0.1:1",
      "--admin-hosts",
      value,
    ]);
    equal(code, 2, `${value} was accepted (exit ${code}), then silently never matches${stderr}`);
    assert(stderr.includes("--admin-hosts"), stderr);
  }
});
