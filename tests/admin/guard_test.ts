// The admin API cannot be read or steered by a web page the operator opens: not by a page on
// another port of this machine (no-cors fetch, fetch, form posts), not through DNS rebinding.
import { deepEqual, equal, match, ok as assert } from "node:assert/strict";
import { adminNames, normalHost, refusalOf } from "../../lib/admin/guard.ts";
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

function portOf(url: string): number {
  return Number(new URL(url).port);
}

/** One request on its own connection; `fields` are sent as given, `Host` among them. */
async function send(
  port: number,
  head: string,
  fields: Record<string, string>,
  body = "",
): Promise<RawResponse & { text: string }> {
  const lines = Object.entries(fields).map(([name, value]) => `${name}: ${value}\r\n`).join("");
  const length = body === "" ? "" : `Content-Length: ${new TextEncoder().encode(body).length}\r\n`;
  const response = await rawRequest(
    port,
    `${head} HTTP/1.1\r\n${lines}${length}Connection: close\r\n\r\n${body}`,
  );
  return { ...response, text: new TextDecoder().decode(response.body) };
}

/** The pool as `GET /status` shows it: url and state of each backend. */
async function pool(adminUrl: string): Promise<[string, string][]> {
  const res = await send(portOf(adminUrl), "GET /status", { Host: new URL(adminUrl).host });
  equal(res.status, 200, res.text);
  return (JSON.parse(res.text) as Json).backends.map((b: Json) => [b.url, b.state]);
}

/** The attacker's page: three ways to send a change the browser allows any page to send. */
function attackPage(adminUrl: string, victim: string): string {
  const body = JSON.stringify({ url: victim });
  // A text/plain form whose one field's name and value join into JSON: {"url":"…","x":"="}.
  const [name, value] = [body.slice(0, -1) + ',"x":"', '"}'];
  return `<!doctype html>
<html><head><meta charset="utf-8"><title>a page</title></head><body>
<form id="drain" method="post" action="${adminUrl}/backends/1/drain" target="drainSink"
  enctype="text/plain"><input type="hidden" name="x" value="y"></form>
<form id="add" method="post" action="${adminUrl}/backends" target="addSink"
  enctype="text/plain"><input type="hidden" name='${name}' value='${value}'></form>
<script>
"use strict";
const results = {};
async function attempt(name, run) {
  try {
    const res = await run();
    results[name] = res.type + " " + res.status;
  } catch (error) {
    results[name] = "refused by the browser: " + error.message;
  }
}
function submitInto(formId, sinkName) {
  const sink = document.createElement("iframe");
  sink.name = sinkName;
  document.body.append(sink);
  const loaded = new Promise((resolve) => sink.addEventListener("load", resolve, { once: true }));
  document.getElementById(formId).submit();
  return loaded;
}
(async () => {
  await attempt("no-cors drain", () => fetch(${JSON.stringify(adminUrl)} + "/backends/0/drain", {
    method: "POST", mode: "no-cors", body: "{}", headers: { "content-type": "text/plain" },
  }));
  await attempt("no-cors add", () => fetch(${JSON.stringify(adminUrl)} + "/backends", {
    method: "POST", mode: "no-cors", body: ${JSON.stringify(body)},
    headers: { "content-type": "text/plain" },
  }));
  await attempt("cors add", () => fetch(${JSON.stringify(adminUrl)} + "/backends", {
    method: "POST", body: ${JSON.stringify(body)}, headers: { "content-type": "application/json" },
  }));
  await submitInto("drain", "drainSink");
  await submitInto("add", "addSink");
  results.forms = "submitted";
  window.attacks = results;
})();
</script>
</body></html>
`;
}

Deno.test("a page on another loopback port, in Chromium, cannot change the pool", async (t) => {
  await ensureDebianPackage(CHROMIUM_PATH, "chromium");
  const dir = await Deno.makeTempDir({ prefix: "goround-admin-attack-" });
  const [a, b, victim] = [recordingBackend(), recordingBackend(), recordingBackend()];
  let proxy: Goround | null = null;
  let browser: Chromium | null = null;
  let attacker: Deno.HttpServer<Deno.NetAddr> | null = null;
  try {
    proxy = await startGoround(["--backend", a.url, "--backend", b.url, "--workers", "1"]);
    const adminUrl = proxy.adminUrl;
    const before = await pool(adminUrl);
    deepEqual(before, [[a.url, "up"], [b.url, "up"]]);
    const page = attackPage(adminUrl, victim.url);
    attacker = Deno.serve(
      { hostname: "127.0.0.1", port: 0, onListen: () => {} },
      () => new Response(page, { headers: { "content-type": "text/html; charset=utf-8" } }),
    );
    const adminPort = portOf(adminUrl);
    browser = await launchChromium({
      userDataDir: `${dir}/profile`,
      // rebound.test stands for a name an attacker re-pointed at 127.0.0.1 (DNS rebinding).
      args: ["--host-resolver-rules=MAP rebound.test 127.0.0.1"],
    });

    await t.step("no-cors fetch, fetch and form posts leave the pool as it was", async () => {
      const tab = await browser!.cdp.open(`http://127.0.0.1:${attacker!.addr.port}/`);
      await tab.waitFor("window.attacks", "the page's attacks to finish");
      const results = await tab.evaluate<Record<string, string>>("window.attacks");
      // The browser sent the no-cors requests (their answers are opaque to the page).
      equal(results["no-cors drain"], "opaque 0");
      equal(results["no-cors add"], "opaque 0");
      match(results["cors add"]!, /^refused by the browser/);
      equal(results.forms, "submitted");
      await tab.close();
      const after = await pool(adminUrl);
      deepEqual(
        after,
        before,
        `every backend enabled and up, none added: ${JSON.stringify(after)}`,
      );
      equal(victim.requests.length, 0, "the backend the page named got nothing");
    });

    await t.step("a rebound name gets 403 for the dashboard, GET /status and a drain", async () => {
      const tab = await browser!.cdp.open(`http://rebound.test:${adminPort}/`);
      await tab.waitFor("document.body", "the page");
      match(await tab.evaluate<string>("document.body.innerText"), /^forbidden: Host/);
      // Same-origin now, as far as the browser knows: only the Host check stands in the way.
      const answers = await tab.evaluate<number[]>(`Promise.all([
        fetch("/status").then((r) => r.status),
        fetch("/backends/0/drain", {
          method: "POST", headers: { "content-type": "application/json" },
        }).then((r) => r.status),
      ])`);
      deepEqual(answers, [403, 403]);
      await tab.close();
      deepEqual(await pool(adminUrl), before);
    });
  } finally {
    await browser?.close();
    await attacker?.shutdown();
    await proxy?.stop();
    await Promise.all([a.close(), b.close(), victim.close()]);
    await Deno.remove(dir, { recursive: true }).catch(() => {});
  }
});

Deno.test("raw requests: forged Host, foreign Origin, cross-site and non-JSON changes are refused", async (t) => {
  const [a, b] = [recordingBackend(), recordingBackend()];
  const proxy = await startGoround(["--backend", a.url, "--backend", b.url, "--workers", "1"]);
  const port = portOf(proxy.adminUrl);
  const own = `127.0.0.1:${port}`;
  const json = { "Content-Type": "application/json" };
  try {
    await t.step("Host must be one of the listener's names, with its port", async () => {
      for (const host of [own, `localhost:${port}`, `LocalHost:${port}`, `[::1]:${port}`]) {
        equal((await send(port, "GET /status", { Host: host })).status, 200, host);
      }
      for (
        const host of [`evil.example:${port}`, "evil.example", `127.0.0.1:${port + 1}`, "127.0.0.1"]
      ) {
        const res = await send(port, "GET /status", { Host: host });
        equal(res.status, 403, host);
        equal(
          res.text,
          `forbidden: Host "${host}" is not a name of this admin listener ` +
            `(its address, localhost, 127.0.0.1, [::1], or one given with --admin-hosts)\n`,
        );
      }
      equal((await send(port, "GET /", { Host: `evil.example:${port}` })).status, 403, "dashboard");
      const absolute = await send(port, `GET http://evil.example:${port}/status`, { Host: own });
      equal(absolute.status, 403, "an absolute-form target names another host");
      const none = await rawRequest(port, "GET /status HTTP/1.0\r\n\r\n");
      equal(none.status, 403, "no Host at all");
      // Names a URL parser rewrites to 127.0.0.1 are not names of the listener as written.
      for (const host of [`127.1:${port}`, `2130706433:${port}`, `0x7f.1:${port}`]) {
        equal((await send(port, "GET /status", { Host: host })).status, 403, host);
      }
      // A Host no URL can be made of is a bad request, not a crash (it was a 500 and a trace).
      const broken = await send(port, "GET /status", { Host: `127.0.0.1:${port}:${port}` });
      equal(broken.status, 400, "a Host with two ports");
      const twice = await rawRequest(
        port,
        `GET /status HTTP/1.1\r\nHost: ${own}\r\nHost: ${own}\r\nConnection: close\r\n\r\n`,
      );
      assert(twice.status === 400 || twice.status === 403, `two Host fields: ${twice.status}`);
    });

    await t.step("a change from another origin or site is 403", async () => {
      const cases: [Record<string, string>, RegExp][] = [
        [{ Origin: "http://evil.example" }, /^forbidden: Origin "http:\/\/evil\.example"/],
        [{ Origin: `http://127.0.0.1:${port + 1}` }, /^forbidden: Origin/],
        [{ Origin: "null" }, /^forbidden: Origin "null"/],
        [{ "Sec-Fetch-Site": "cross-site" }, /^forbidden: Sec-Fetch-Site: cross-site/],
        [{ "Sec-Fetch-Site": "same-site" }, /^forbidden: Sec-Fetch-Site: same-site/],
      ];
      for (const [fields, message] of cases) {
        const res = await send(port, "POST /backends/0/drain", { Host: own, ...json, ...fields });
        equal(res.status, 403, JSON.stringify(fields));
        match(res.text, message);
      }
    });

    await t.step("a change that is not application/json is 415", async () => {
      const cases: [string, Record<string, string>, string][] = [
        ["POST /backends/0/drain", { "Content-Type": "text/plain" }, "{}"],
        ["POST /backends/0/drain", { "Content-Type": "application/x-www-form-urlencoded" }, "a=b"],
        ["POST /backends/0/drain", {}, ""],
        ["POST /backends", { "Content-Type": "text/plain" }, '{"url": "http://127.0.0.1:1"}'],
        ["DELETE /backends/1", {}, ""],
      ];
      for (const [head, fields, body] of cases) {
        const res = await send(port, head, { Host: own, ...fields }, body);
        equal(res.status, 415, `${head} ${JSON.stringify(fields)}`);
        match(res.text, /send Content-Type: application\/json/);
      }
    });

    await t.step("none of that changed the pool", async () => {
      deepEqual(await pool(proxy.adminUrl), [[a.url, "up"], [b.url, "up"]]);
    });

    await t.step("the admin's own page, or curl, with application/json: 200", async () => {
      const fromPage = { Host: own, Origin: `http://${own}`, "Sec-Fetch-Site": "same-origin" };
      const drained = await send(port, "POST /backends/0/drain", { ...fromPage, ...json });
      equal(drained.status, 200, drained.text);
      equal(JSON.parse(drained.text).state, "drained");
      const enabled = await send(port, "POST /backends/0/enable", { Host: own, ...json });
      equal(enabled.status, 200, enabled.text);
      equal(JSON.parse(enabled.text).state, "up");
      const charset = { "Content-Type": "Application/JSON; charset=utf-8" };
      equal((await send(port, "POST /backends/0/enable", { Host: own, ...charset })).status, 200);
    });
  } finally {
    await proxy.stop();
    await Promise.all([a.close(), b.close()]);
  }
});

Deno.test("--admin-hosts lets the names it lists in, and only those", async () => {
  const backend = recordingBackend();
  const proxy = await startGoround([
    "--backend",
    backend.url,
    "--workers",
    "1",
    "--admin-hosts",
    "Admin.Example, 10.9.8.7:4444",
  ]);
  const port = portOf(proxy.adminUrl);
  try {
    const answers: Record<string, number> = {};
    for (
      const host of [
        `admin.example:${port}`,
        "admin.example", // through a proxy in front, on its default port
        "admin.example:1",
        "10.9.8.7:4444",
        `10.9.8.7:${port}`,
        `127.0.0.1:${port}`,
        `evil.example:${port}`,
      ]
    ) {
      answers[host] = (await send(port, "GET /status", { Host: host })).status;
    }
    deepEqual(answers, {
      [`admin.example:${port}`]: 200,
      "admin.example": 200,
      "admin.example:1": 403,
      "10.9.8.7:4444": 200,
      [`10.9.8.7:${port}`]: 403,
      [`127.0.0.1:${port}`]: 200,
      [`evil.example:${port}`]: 403,
    });
    const fromPage = {
      Host: `admin.example:${port}`,
      Origin: `https://admin.example:${port}`,
      "Content-Type": "application/json",
    };
    equal((await send(port, "POST /backends/0/drain", fromPage)).status, 200, "its pages too");
  } finally {
    await proxy.stop();
    await backend.close();
  }
});

Deno.test("--admin-hosts from a config file takes effect on SIGHUP", async () => {
  const backend = recordingBackend();
  const dir = await Deno.makeTempDir();
  const file = `${dir}/goround.json`;
  const write = (hosts: string[]) =>
    Deno.writeTextFile(file, JSON.stringify({ backends: [backend.url], "admin-hosts": hosts }));
  await write(["before.example"]);
  const proxy = await startGoround(["--config", file, "--workers", "1"], { readable: dir });
  const port = portOf(proxy.adminUrl);
  const answer = async (host: string) => (await send(port, "GET /status", { Host: host })).status;
  try {
    deepEqual([await answer("before.example"), await answer("after.example")], [200, 403]);
    await write(["after.example"]);
    await sendSignal(proxy.pid, "HUP");
    await waitFor(() => proxy.stderr.some((l) => l.includes("reloaded")), { what: "the reload" });
    deepEqual([await answer("before.example"), await answer("after.example")], [403, 200]);
  } finally {
    await proxy.stop();
    await backend.close();
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("a bad --admin-hosts exits 2 with one line naming the flag, the value and the form", async () => {
  for (const value of ["evil example", "admin.example:99999", "http://admin.example", "a_b:1"]) {
    const { code, stdout, stderr } = await runGoround([
      "--listen",
      "127.0.0.1:0",
      "--backend",
      "http://127.0.0.1:1",
      "--admin-hosts",
      `ok.example,${value}`,
    ]);
    equal(code, 2, value);
    equal(stdout, "");
    equal(
      stderr,
      `goround: --admin-hosts: "${value}" is not a host: expected host or host:port, ` +
        `comma-separated, like admin.example.com,10.0.0.5:9000\n`,
    );
  }
});

Deno.test("refusalOf() decides from the head alone; adminNames() spells names one way", () => {
  const names = adminNames("127.0.0.1", 9000, ["admin.example", "[fd00::1]:9443"]);
  deepEqual([...names].sort(), [
    "127.0.0.1:9000",
    "[::1]:9000",
    "[fd00::1]:9443",
    "admin.example",
    "admin.example:9000",
    "localhost:9000",
  ]);
  deepEqual([...adminNames("0.0.0.0", 80)].sort(), ["127.0.0.1", "[::1]", "localhost"]);
  equal(normalHost("LOCALHOST:80"), "localhost");
  equal(normalHost("a@localhost:9000"), null);
  const ask = (method: string, fields: Record<string, string>) =>
    refusalOf({
      method,
      url: `http://${fields.host ?? "x"}/backends/0/drain`,
      headers: new Headers(fields),
    }, names)?.status ?? 200;
  const host = { host: "localhost:9000" };
  const typed = { ...host, "content-type": "application/json" };
  equal(ask("GET", host), 200);
  equal(ask("GET", { ...host, origin: "http://evil.example" }), 200, "reading is not changing");
  equal(ask("OPTIONS", host), 200);
  equal(ask("POST", host), 415);
  equal(ask("PUT", { ...host, "content-type": "text/json" }), 415);
  equal(ask("PATCH", typed), 200, "any unsafe method is checked; this one passes");
  equal(ask("POST", { ...typed, origin: "http://localhost:9000" }), 200);
  equal(ask("POST", { ...typed, origin: "https://admin.example" }), 200);
  equal(ask("POST", { ...typed, origin: "http://localhost:9001" }), 403);
  equal(ask("DELETE", { ...typed, "sec-fetch-site": "same-site" }), 403);
  equal(ask("POST", { ...typed, "sec-fetch-site": "same-origin" }), 200);
  equal(ask("POST", { ...typed, "sec-fetch-site": "none" }), 200);
  equal(ask("GET", { host: "evil.example:9000" }), 403);
  assert(ask("POST", { host: "evil.example:9000" }) === 403, "Host first, before 415");
});
