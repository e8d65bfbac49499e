import { deepEqual, equal, match, ok as assert } from "node:assert/strict";
import type { Status } from "../../lib/admin/api.ts";
import { DASHBOARD_HTML } from "../../lib/admin/dashboard.ts";
import { type BackendProcess, spawnBackend } from "../../dummy_servers.ts";
import { get, type Goround, recordingBackend, startGoround, waitFor } from "../support/helpers.ts";
import {
  type Chromium,
  CHROMIUM_PATH,
  ensureDebianPackage,
  launchChromium,
  type Page,
} from "../support/cdp.ts";

const PNG_SIGNATURE = [0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a];

/** The label colours of the light scheme (headless Chromium does not prefer dark). */
const COLOURS: Record<string, string> = {
  up: "rgb(26, 127, 55)",
  down: "rgb(207, 34, 46)",
  draining: "rgb(154, 103, 0)",
  drained: "rgb(110, 119, 129)",
};

/**
 * The admin base URL. `startGoround` reads it once, as soon as the banner's first line is in, and
 * the admin line (the banner's last) may not have arrived by then: wait for it.
 */
async function adminUrlOf(proxy: Goround): Promise<string> {
  let url = proxy.adminUrl;
  await waitFor(() => {
    url ||= proxy.stderr.map((line) => /^ {2}admin: (http:\/\/\S+)\/$/.exec(line)?.[1])
      .find((found) => found !== undefined) ?? "";
    return url !== "";
  }, { what: "goround's admin address", exited: proxy.exited });
  return url;
}

async function status(adminUrl: string, token = ""): Promise<Status> {
  const res = await get(`${adminUrl}/status`, {
    headers: token ? { authorization: `Bearer ${token}` } : {},
  });
  equal(res.status, 200, res.text);
  return JSON.parse(res.text) as Status;
}

function idOf(report: Status, url: string): number {
  const found = report.backends.find((b) => b.url === url);
  assert(found, `${url} is in /status`);
  return found.id;
}

/** A JavaScript expression for the card of backend `id`. */
function card(id: number): string {
  return `document.querySelector('[data-backend="${id}"]')`;
}

/** What a card shows: its state attribute, its label and the label's colour, its button. */
async function cardView(
  page: Page,
  id: number,
): Promise<{ state: string; label: string; colour: string; action: string; button: string }> {
  return await page.evaluate(`(() => {
    const card = ${card(id)};
    const label = card.querySelector('[data-field="state"]');
    const button = card.querySelector("[data-action]");
    return {
      state: card.dataset.state,
      label: label.textContent,
      colour: getComputedStyle(label).color,
      action: button.dataset.action,
      button: button.textContent,
    };
  })()`);
}

async function field(page: Page, id: number, name: string): Promise<string> {
  return await page.evaluate(`${card(id)}.querySelector('[data-field="${name}"]').textContent`);
}

async function waitForState(page: Page, id: number, state: string): Promise<void> {
  await page.waitFor(`${card(id)}?.dataset.state === "${state}"`, `card ${id} to show ${state}`);
  const view = await cardView(page, id);
  equal(view.label, state, "the state is a visible text label");
  equal(view.colour, COLOURS[state], `the ${state} label's colour`);
  const drainable = state === "up" || state === "down";
  deepEqual(
    [view.action, view.button],
    drainable ? ["drain", "Drain"] : ["enable", "Enable"],
    `the button of a ${state} backend`,
  );
}

async function click(page: Page, id: number, action: string): Promise<void> {
  await page.evaluate(`${card(id)}.querySelector('[data-action="${action}"]').click()`);
}

Deno.test("DASHBOARD_HTML is one self-contained page: no external script, style, font or image", () => {
  match(DASHBOARD_HTML, /^<!doctype html>/);
  match(DASHBOARD_HTML, /<style>/);
  match(DASHBOARD_HTML, /<script>/);
  for (
    const external of [
      /https?:\/\//i,
      /["'(]\/\//, // protocol-relative
      /<link\b/i,
      /<script\s+src/i,
      /\bsrc\s*=/i,
      /@import/i,
      /@font-face/i,
      /url\(/i,
    ]
  ) {
    assert(!external.test(DASHBOARD_HTML), `no ${external} in the page`);
  }
});

Deno.test("dashboard in headless Chromium", async (t) => {
  await ensureDebianPackage(CHROMIUM_PATH, "chromium");
  const dir = await Deno.makeTempDir({ prefix: "goround-dashboard-" });
  const profile = `${dir}/profile`;
  const screenshot = `${dir}/dashboard.png`;
  let release = () => {};
  const held = new Promise<void>((resolve) => (release = resolve));
  const a = recordingBackend();
  const b = recordingBackend(async (req) => {
    if (new URL(req.url).pathname === "/slow") await held;
    return new Response("b");
  });
  let aOpen = true;
  let proxy: Goround | null = null;
  let secured: Goround | null = null;
  let securedUrl = "";
  let shot = false;
  let browser: Chromium | null = null;
  let slow: Promise<unknown> = Promise.resolve();
  try {
    proxy = await startGoround([
      "--backend",
      a.url,
      "--backend",
      b.url,
      "--health-interval",
      "200ms",
      "--workers",
      "1",
    ]);
    const adminUrl = await adminUrlOf(proxy);
    const before = await status(adminUrl);
    const idA = idOf(before, a.url);
    const idB = idOf(before, b.url);
    browser = await launchChromium({ userDataDir: profile });
    const page = await browser.cdp.open(`${adminUrl}/`);

    await t.step("both cards show up, with the header filled in", async () => {
      await waitForState(page, idA, "up");
      await waitForState(page, idB, "up");
      equal(await field(page, idA, "url"), a.url);
      equal(await field(page, idB, "url"), b.url);
      const header = await page.evaluate<string[]>(
        `["version", "listen", "workers", "algorithm", "engine"]
          .map((id) => document.getElementById(id).textContent)`,
      );
      deepEqual(header, [before.version, before.listen, "1", "round-robin", "goround"]);
      match(await page.evaluate<string>(`document.getElementById("uptime").textContent`), /^\d+/);
      equal(await page.evaluate(`document.getElementById("error").hidden`), true);
      for (const id of [idA, idB]) {
        deepEqual(
          await page.evaluate(`["why", "lastError"]
            .map((name) => ${card(id)}.querySelector('[data-field="' + name + '"]').hidden)`),
          [true, true],
          "an up backend with no error shows neither a reason nor an error",
        );
      }
    });

    await t.step("a closed backend turns down, and its card says why", async () => {
      await a.close();
      aOpen = false;
      await waitForState(page, idA, "down");
      await page.waitFor(
        `!${card(idA)}.querySelector('[data-field="why"]').hidden`,
        "the why text on the down card",
      );
      match(await field(page, idA, "why"), /^why: \S/);
      await page.waitFor(
        `!${card(idA)}.querySelector('[data-field="lastError"]').hidden`,
        "the last error on the down card",
      );
      match(await field(page, idA, "lastError"), /^last error: connection refused, \S/);
      equal((await cardView(page, idB)).state, "up", "the other one stays up");
    });

    await t.step("traffic shows as requests, in flight and requests per second", async () => {
      for (let i = 0; i < 3; i++) equal((await get(proxy!.url)).text, "b");
      slow = get(`${proxy!.url}/slow`);
      await page.waitFor(
        `${card(idB)}.querySelector('[data-field="inFlight"]').textContent === "1"`,
        "one request in flight on b",
      );
      // The requests are counted when they are sent to b; the page shows the count and a rate.
      await page.waitFor(
        `Number(${card(idB)}.querySelector('[data-field="requests"]').textContent) >= 4`,
        "b's request count",
      );
      match(await field(page, idB, "rps"), /^(–|\d+(\.\d)?)$/);
    });

    await t.step("Drain: draining while a request is in flight, then drained", async () => {
      await click(page, idB, "drain");
      await waitForState(page, idB, "draining");
      release();
      equal(((await slow) as { status: number }).status, 200, "the held request completes");
      await waitForState(page, idB, "drained");
      const report = await status(adminUrl);
      equal(report.backends.find((x) => x.id === idB)?.state, "drained", "GET /status agrees");
      equal(report.backends.find((x) => x.id === idB)?.inFlight, 0);
    });

    await t.step("Enable brings it back up", async () => {
      await click(page, idB, "enable");
      await waitForState(page, idB, "up");
      equal((await status(adminUrl)).backends.find((x) => x.id === idB)?.state, "up");
      equal((await get(proxy!.url)).text, "b", "it takes requests again");
    });

    await t.step("a screenshot of the page is a PNG", async () => {
      await Deno.writeFile(screenshot, await page.screenshot());
      shot = true;
      // Read back with cat: the test may write /tmp but read only the repository.
      const { success, stdout: bytes } = await new Deno.Command("cat", { args: [screenshot] })
        .output();
      assert(success, `${screenshot} exists`);
      assert(bytes.length > 1000, `${bytes.length} bytes`);
      deepEqual([...bytes.subarray(0, 8)], PNG_SIGNATURE);
      console.log(`dashboard screenshot: ${screenshot}`);
    });
    await page.close();

    await t.step("with --admin-token, #token=… loads the cards and its buttons work", async () => {
      secured = await startGoround([
        "--backend",
        b.url,
        "--workers",
        "1",
        "--admin-token",
        "secret",
      ]);
      securedUrl = await adminUrlOf(secured);
      const id = idOf(await status(securedUrl, "secret"), b.url);
      const withToken = await browser!.cdp.open(`${securedUrl}/#token=secret`);
      await waitForState(withToken, id, "up");
      equal(await withToken.evaluate(`document.getElementById("error").hidden`), true);
      await click(withToken, id, "drain");
      await waitForState(withToken, id, "drained");
      equal((await status(securedUrl, "secret")).backends[0]?.state, "drained");
      await withToken.close();
    });

    await t.step("with --admin-token, no token shows a 401 banner instead of cards", async () => {
      const withoutToken = await browser!.cdp.open(`${securedUrl}/`);
      await withoutToken.waitFor(
        `!document.getElementById("error").hidden`,
        "the error banner",
      );
      const banner = await withoutToken.evaluate<string>(
        `document.getElementById("error").textContent`,
      );
      match(banner, /401/);
      match(banner, /unauthorized/i);
      equal(await withoutToken.evaluate(`document.querySelectorAll("[data-backend]").length`), 0);
      await withoutToken.close();
    });
  } finally {
    release();
    await slow.catch(() => {});
    await browser?.close();
    await proxy?.stop();
    await (secured as Goround | null)?.stop();
    await Promise.all([aOpen ? a.close() : undefined, b.close()]);
    // The profile goes; a screenshot stays for a person to look at (its path is printed).
    await Deno.remove(shot ? profile : dir, { recursive: true }).catch(() => {});
  }
});

Deno.test("dashboard charts: a killed backend's requests per second fall to zero, its card turns down", async () => {
  await ensureDebianPackage(CHROMIUM_PATH, "chromium");
  const dir = await Deno.makeTempDir({ prefix: "goround-charts-" });
  const backends: BackendProcess[] = await Promise.all([spawnBackend(0), spawnBackend(0)]);
  const urls = backends.map((b) => `http://127.0.0.1:${b.port}`);
  let browser: Chromium | null = null;
  let proxy: Goround | null = null;
  let sending = true;
  let traffic: Promise<void> = Promise.resolve();
  try {
    proxy = await startGoround([
      "--backends",
      urls.join(","),
      "--health-interval",
      "200ms",
      "--workers",
      "1",
      "--access-log",
      "off",
    ]);
    const adminUrl = await adminUrlOf(proxy);
    const before = await status(adminUrl);
    const [idA, idB] = urls.map((url) => idOf(before, url));
    const target = proxy.url;
    traffic = (async () => {
      for (let i = 0; sending && i < 100_000; i++) {
        await get(target).catch(() => {});
        await new Promise((resolve) => setTimeout(resolve, 5));
      }
    })();
    browser = await launchChromium({ userDataDir: `${dir}/profile` });
    const page = await browser.cdp.open(`${adminUrl}/`);
    const lastRps = (id: number) =>
      page.evaluate<number>(
        `Number(${card(id)}.querySelector('[data-chart="backend"]').dataset.lastRps || "-1")`,
      );
    await page.waitFor(
      `Number(${card(idA!)}.querySelector('[data-chart="backend"]').dataset.lastRps) > 1 &&
       Number(${card(idB!)}.querySelector('[data-chart="backend"]').dataset.lastRps) > 1`,
      "both charts to show traffic",
    );
    backends[0]!.child.kill("SIGKILL");
    await backends[0]!.exited;
    await waitForState(page, idA!, "down");
    await page.waitFor(
      `${card(idA!)}.querySelector('[data-chart="backend"]').dataset.lastRps === "0.00"`,
      "the killed backend's chart to fall to zero",
    );
    assert((await lastRps(idB!)) > 1, "the live backend's chart keeps its traffic");
    assert(
      await page.evaluate<boolean>(
        `document.querySelector('[data-chart="pool"]').querySelectorAll("rect").length > 0`,
      ),
      "the pool chart has bars",
    );
    const shot = `${dir}/dashboard.png`;
    await Deno.writeFile(shot, await page.screenshot());
    console.log(`dashboard screenshot: ${shot}`);
    await page.close();
  } finally {
    sending = false;
    await traffic;
    await browser?.close();
    await proxy?.stop();
    backends[1]!.child.kill("SIGKILL");
    await Promise.all(backends.map((b) => b.exited));
    await Deno.remove(`${dir}/profile`, { recursive: true }).catch(() => {});
  }
});

Deno.test("dashboard in headless Chromium: with pools, cards are grouped under each pool, and Drain acts within its pool", async () => {
  await ensureDebianPackage(CHROMIUM_PATH, "chromium");
  const dir = await Deno.makeTempDir({ prefix: "goround-dashboard-pools-" });
  const web = recordingBackend(() => new Response("web"));
  const api = recordingBackend(() => new Response("api"));
  const config = `${dir}/goround.json`;
  await Deno.writeTextFile(
    config,
    JSON.stringify({
      pools: { web: { backends: [web.url] }, api: { backends: [api.url] } },
      routes: [{ path: "/api/", pool: "api" }, { pool: "web" }],
    }),
  );
  let proxy: Goround | null = null;
  let browser: Chromium | null = null;
  try {
    proxy = await startGoround(["--config", config, "--workers", "1"]);
    const adminUrl = await adminUrlOf(proxy);
    browser = await launchChromium({ userDataDir: `${dir}/profile` });
    const page = await browser.cdp.open(`${adminUrl}/`);
    const inPool = (pool: string) =>
      `document.querySelector('[data-pool="${pool}"][data-backend="0"]')`;
    await page.waitFor(`${inPool("api")}?.dataset.state === "up"`, "the api card");
    // Both pools have a backend 0: each card is its own, under its pool's heading, in order.
    const layout = await page.evaluate<string[]>(`[...document.getElementById("cards").children]
      .map((n) => n.dataset.poolHeading ? "heading " + n.dataset.poolHeading : n.dataset.pool + " " + n.dataset.url)`);
    deepEqual(layout, ["heading web", `web ${web.url}`, "heading api", `api ${api.url}`]);
    await page.evaluate(`${inPool("api")}.querySelector('[data-action="drain"]').click()`);
    await page.waitFor(`${inPool("api")}.dataset.state === "drained"`, "the api card drained");
    const report = await status(adminUrl);
    deepEqual(
      report.backends.map((b) => [b.pool, b.state]),
      [["web", "up"], ["api", "drained"]],
      "the drain went to the api pool's backend 0 only",
    );
  } finally {
    await browser?.close();
    await proxy?.stop();
    await Promise.all([web.close(), api.close()]);
  }
});
