/**
 * The admin dashboard: one HTML page with inline CSS and JavaScript and no external assets (no
 * CDN, no web fonts), served by the admin listener at `GET /`.
 *
 * The page holds no data itself. Its script polls `GET /status` every second and shows each
 * backend as a card, under a heading per pool when there are several; the Drain and Enable
 * buttons call `POST /pools/{pool}/backends/{id}/drain` and `…/enable` (as `application/json`,
 * which the admin API requires of every change). When the page is opened as `/#token=<token>`, every request it
 * makes sends `Authorization: Bearer <token>` (the fragment never leaves the browser, so the
 * token is not in any access log). A failed poll (401, goround gone) shows an error banner.
 *
 * Hooks for tests and scripts: each card is `[data-backend="<id>"][data-pool="<pool>"]` with
 * `data-state="up|down|ejected|draining|drained"`; its fields are `[data-field="…"]`; its button is
 * `[data-action="drain|enable"]`; the banner is `#error`. Charts (inline SVG, drawn from
 * `GET /history` every few seconds) are `[data-chart="backend"]` in each card, with
 * `data-last-rps` (the last second's requests per second), and `[data-chart="pool"]`; a pool's
 * heading is `[data-pool-heading="<pool>"]`.
 *
 * @module
 */

/**
 * The dashboard page: a complete HTML document with inline CSS and JavaScript.
 *
 * It shows a header (version, uptime, listen address, workers, algorithm, engine) and one card
 * per backend: URL, state as a coloured label (`up` green, `down` red, `ejected` and `draining`
 * amber, `drained` grey), requests in flight, requests per second (from the change in the `requests`
 * counter between two polls), failures, retries, the last up/down transition, the health check
 * streak, why it is down (only while it is), and its last error with its time. Nothing in it is fetched from anywhere but the admin listener.
 *
 * @example Serve it
 * ```ts
 * import { DASHBOARD_HTML } from "./dashboard.ts";
 *
 * Deno.serve(() =>
 *   new Response(DASHBOARD_HTML, { headers: { "content-type": "text/html; charset=utf-8" } })
 * );
 * ```
 */
export const DASHBOARD_HTML: string = `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>goround</title>
<style>
:root {
  --bg: #f6f8fa; --fg: #1f2328; --muted: #59636e; --card: #ffffff; --line: #d1d9e0;
  --up: #1a7f37; --down: #cf222e; --draining: #9a6700; --drained: #6e7781;
  --up-bg: #dafbe1; --down-bg: #ffebe9; --draining-bg: #fff8c5; --drained-bg: #eff2f5;
}
@media (prefers-color-scheme: dark) {
  :root {
    --bg: #0d1117; --fg: #e6edf3; --muted: #9198a1; --card: #151b23; --line: #3d444d;
    --up: #3fb950; --down: #f85149; --draining: #d29922; --drained: #9198a1;
    --up-bg: #12261e; --down-bg: #2d1214; --draining-bg: #272115; --drained-bg: #212830;
  }
}
* { box-sizing: border-box; }
body {
  margin: 0; background: var(--bg); color: var(--fg);
  font: 15px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial,
    sans-serif;
}
header {
  display: flex; flex-wrap: wrap; align-items: baseline; gap: 4px 24px;
  padding: 16px 24px; background: var(--card); border-bottom: 1px solid var(--line);
}
header h1 { margin: 0; font-size: 22px; letter-spacing: -0.01em; }
header dl { display: flex; flex-wrap: wrap; gap: 4px 20px; margin: 0; }
header dl div { display: flex; gap: 6px; }
header dt { color: var(--muted); }
header dd { margin: 0; font-weight: 600; font-variant-numeric: tabular-nums; }
#updated { margin-left: auto; color: var(--muted); font-size: 13px; }
#panic {
  padding: 2px 10px; border-radius: 999px; font-size: 13px; font-weight: 700;
  color: var(--down); background: var(--down-bg); border: 1px solid var(--down);
}
#panic[hidden] { display: none; }
main { padding: 20px 24px 32px; max-width: 1400px; }
#error {
  margin: 0 0 16px; padding: 12px 16px; border-radius: 8px; font-weight: 600;
  background: var(--down-bg); color: var(--down); border: 1px solid var(--down);
}
#error[hidden] { display: none; }
#summary { margin: 0 0 12px; color: var(--muted); }
#cards {
  display: grid; gap: 16px; grid-template-columns: repeat(auto-fill, minmax(320px, 1fr));
}
#cards > h2.pool { grid-column: 1 / -1; margin: 8px 0 0; font-size: 15px; color: var(--muted); }
.card {
  background: var(--card); border: 1px solid var(--line); border-left: 6px solid var(--c);
  border-radius: 8px; padding: 14px 16px; display: flex; flex-direction: column; gap: 10px;
}
.card[data-state="up"] { --c: var(--up); --c-bg: var(--up-bg); }
.card[data-state="down"] { --c: var(--down); --c-bg: var(--down-bg); }
.card[data-state="ejected"] { --c: var(--draining); --c-bg: var(--draining-bg); }
.card[data-state="draining"] { --c: var(--draining); --c-bg: var(--draining-bg); }
.card[data-state="drained"] { --c: var(--drained); --c-bg: var(--drained-bg); }
.top { display: flex; align-items: center; gap: 10px; }
.url {
  flex: 1; min-width: 0; margin: 0; font-size: 14px; font-weight: 600; overflow-wrap: anywhere;
  font-family: ui-monospace, SFMono-Regular, Menlo, Consolas, "DejaVu Sans Mono", monospace;
}
.state {
  padding: 2px 10px; border-radius: 999px; font-size: 13px; font-weight: 700;
  text-transform: uppercase; letter-spacing: 0.04em; color: var(--c); background: var(--c-bg);
  border: 1px solid var(--c);
}
.stats { display: grid; grid-template-columns: repeat(3, 1fr); gap: 8px; margin: 0; }
.stats div { display: flex; flex-direction: column; }
.stats dt { color: var(--muted); font-size: 12px; }
.stats dd { margin: 0; font-size: 18px; font-weight: 600; font-variant-numeric: tabular-nums; }
.meta { margin: 0; color: var(--muted); font-size: 13px; }
.why {
  margin: 0; padding: 6px 10px; border-radius: 6px; font-size: 13px;
  background: var(--down-bg); color: var(--down); overflow-wrap: anywhere;
}
.why[hidden] { display: none; }
button {
  align-self: flex-start; font: inherit; font-weight: 600; padding: 5px 14px; cursor: pointer;
  border-radius: 6px; border: 1px solid var(--line); background: var(--bg); color: var(--fg);
}
button:hover { border-color: var(--muted); }
button:disabled { opacity: 0.6; cursor: progress; }
.stale #cards { opacity: 0.55; }
.chart { width: 100%; height: 56px; display: block; }
.chart .rps { fill: none; stroke: var(--up); stroke-width: 1.5; }
.chart .p99 { fill: none; stroke: var(--draining); stroke-width: 1; }
.chart .p50 { fill: none; stroke: var(--muted); stroke-width: 1; }
.chart .err { fill: var(--down); }
.legend { margin: 0; color: var(--muted); font-size: 12px; }
.legend b { font-weight: 600; }
#pool { background: var(--card); border: 1px solid var(--line); border-radius: 8px;
  padding: 12px 16px; margin: 0 0 16px; }
#pool .chart { height: 72px; }
#pool .c2 { fill: var(--up); } #pool .c4 { fill: var(--draining); }
#pool .c5 { fill: var(--down); } #pool .refused { fill: var(--drained); }
</style>
</head>
<body>
<header>
  <h1>goround</h1>
  <dl>
    <div><dt>version</dt><dd id="version">–</dd></div>
    <div><dt>uptime</dt><dd id="uptime">–</dd></div>
    <div><dt>listen</dt><dd id="listen">–</dd></div>
    <div><dt>workers</dt><dd id="workers">–</dd></div>
    <div><dt>algorithm</dt><dd id="algorithm">–</dd></div>
    <div><dt>engine</dt><dd id="engine">–</dd></div>
    <div><dt>no backend (503)</dt><dd id="nobackend">–</dd></div>
  </dl>
  <span id="panic" role="status" hidden>panic mode: every backend looks down, so all are tried</span>
  <span id="updated">loading…</span>
</header>
<main>
  <div id="error" role="alert" hidden></div>
  <p id="summary"></p>
  <section id="pool">
    <p class="legend">last 15 minutes, responses per second by class:
      <b>2xx/3xx</b>, <b>4xx</b>, <b>5xx</b>, and refused (no backend)</p>
    <svg class="chart" data-chart="pool" viewBox="0 0 300 72" preserveAspectRatio="none"></svg>
  </section>
  <section id="cards" aria-live="polite"></section>
</main>
<script>
"use strict";
const POLL_MS = 1000;
let token = "";
let timer = 0;
const previous = new Map(); // id -> { requests, at, url } from the last poll, for requests per second
const cards = new Map(); // id -> card element

function readToken() {
  token = new URLSearchParams(location.hash.slice(1)).get("token") || "";
}

function headers() {
  return token ? { authorization: "Bearer " + token } : {};
}

// The banner shows why the last poll failed, else why the last action failed (for 10 s).
const errors = { status: "", action: "", actionUntil: 0 };

function paintError() {
  const banner = document.getElementById("error");
  const action = Date.now() < errors.actionUntil ? errors.action : "";
  const message = [errors.status, action].filter(Boolean).join(" ");
  banner.textContent = message;
  banner.hidden = message === "";
  // Cards from the last good poll stay, faded, while polls fail.
  document.body.classList.toggle("stale", errors.status !== "");
}

function statusError(message) {
  errors.status = message;
  paintError();
  const updated = document.getElementById("updated");
  if (message && updated.textContent === "loading…") updated.textContent = "no data";
}

function actionError(message) {
  errors.action = message;
  errors.actionUntil = message ? Date.now() + 10000 : 0;
  paintError();
}

async function failure(what, res) {
  let detail = "";
  try {
    detail = (await res.text()).trim();
  } catch (_) {
    // No body.
  }
  let message = what + " failed: HTTP " + res.status + (res.statusText ? " " + res.statusText : "");
  if (detail) message += " (" + detail + ")";
  if (res.status === 401) {
    message += token
      ? ". The token in the address (#token=…) was refused."
      : ". Unauthorized: open this page as /#token=<your admin token>.";
  }
  return message;
}

function duration(seconds) {
  const d = Math.floor(seconds / 86400);
  const h = Math.floor(seconds / 3600) % 24;
  const m = Math.floor(seconds / 60) % 60;
  const s = seconds % 60;
  const two = (n) => String(n).padStart(2, "0");
  if (d > 0) return d + "d " + two(h) + "h " + two(m) + "m";
  if (h > 0) return h + "h " + two(m) + "m " + two(s) + "s";
  if (m > 0) return m + "m " + two(s) + "s";
  return s + "s";
}

function since(iso) {
  if (!iso) return "never";
  const at = new Date(iso);
  const ago = Math.max(0, Math.round((Date.now() - at.getTime()) / 1000));
  return at.toLocaleTimeString() + " (" + duration(ago) + " ago)";
}

function element(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

function stat(list, field, label) {
  const box = element("div");
  box.append(element("dt", "", label));
  const value = element("dd", "", "–");
  value.dataset.field = field;
  box.append(value);
  list.append(box);
}

function newCard(id, pool) {
  const card = element("article", "card");
  card.dataset.backend = String(id);
  card.dataset.pool = pool;
  const top = element("div", "top");
  const url = element("h2", "url");
  url.dataset.field = "url";
  const state = element("span", "state");
  state.dataset.field = "state";
  top.append(url, state);
  const stats = element("dl", "stats");
  stat(stats, "inFlight", "in flight");
  stat(stats, "rps", "req/s");
  stat(stats, "requests", "requests");
  stat(stats, "failures", "failures");
  stat(stats, "retries", "retries");
  stat(stats, "ejections", "ejections");
  const transition = element("p", "meta");
  transition.dataset.field = "lastTransition";
  const checks = element("p", "meta");
  checks.dataset.field = "checks";
  const why = element("p", "why");
  why.dataset.field = "why";
  why.hidden = true;
  const lastError = element("p", "meta");
  lastError.dataset.field = "lastError";
  lastError.hidden = true;
  const chart = document.createElementNS(SVG, "svg");
  chart.setAttribute("class", "chart");
  chart.setAttribute("viewBox", "0 0 300 56");
  chart.setAttribute("preserveAspectRatio", "none");
  chart.dataset.chart = "backend";
  const legend = element("p", "legend", "req/s (green), p50 and p99 latency, errors (red)");
  legend.dataset.field = "chartLegend";
  const button = element("button");
  button.type = "button";
  button.addEventListener("click", () => act(card, button));
  card.append(top, stats, chart, legend, transition, checks, why, lastError, button);
  return card;
}

function field(card, name) {
  return card.querySelector('[data-field="' + name + '"]');
}

function update(card, backend, rps) {
  card.dataset.state = backend.state;
  card.dataset.url = backend.url;
  field(card, "url").textContent = backend.url;
  field(card, "state").textContent = backend.state;
  field(card, "inFlight").textContent = String(backend.inFlight);
  field(card, "rps").textContent = rps === null ? "–" : rps.toFixed(rps < 10 ? 1 : 0);
  field(card, "requests").textContent = String(backend.requests);
  field(card, "failures").textContent = String(backend.failures);
  field(card, "retries").textContent = String(backend.retries);
  field(card, "ejections").textContent = String(backend.ejections);
  field(card, "lastTransition").textContent = "last transition: " + since(backend.lastTransition);
  const latency = backend.checkLatencyMs === null ? "" : ", last took " + backend.checkLatencyMs +
    " ms";
  field(card, "checks").textContent = "health checks: " + backend.checkPasses + " passed, " +
    backend.checkFails + " failed in a row" + latency;
  const why = field(card, "why");
  why.textContent = backend.why ? "why: " + backend.why : "";
  why.hidden = !backend.why;
  const lastError = field(card, "lastError");
  const error = backend.lastError; // newer goround only
  lastError.textContent = error ? "last error: " + error.reason + ", " + since(error.at) : "";
  lastError.hidden = !error;
  const button = card.querySelector("button");
  const drain = backend.state === "up" || backend.state === "down" || backend.state === "ejected";
  if (!button.disabled) {
    button.dataset.action = drain ? "drain" : "enable";
    button.textContent = drain ? "Drain" : "Enable";
    button.title = drain
      ? "Stop sending new requests to this backend"
      : "Send requests to this backend again";
  }
}

// Each pool's heading (shown when there is more than one pool), by name.
const headings = new Map();
// A backend's key in GET /history: its URL, or pool/URL when there are several pools.
let historyKeys = (backend) => backend.url;

function poolHeading(pool) {
  let node = headings.get(pool.name);
  if (!node) {
    node = element("h2", "pool");
    node.dataset.poolHeading = pool.name;
    headings.set(pool.name, node);
  }
  node.textContent = "pool " + pool.name + (pool.algorithm ? " · " + pool.algorithm : "") +
    (pool.ready ? " · " + pool.ready : "");
  return node;
}

function render(status) {
  document.getElementById("version").textContent = status.version;
  document.getElementById("uptime").textContent = duration(status.uptimeSeconds);
  document.getElementById("listen").textContent = status.listen;
  document.getElementById("workers").textContent = String(status.workers);
  document.getElementById("algorithm").textContent = status.algorithm;
  document.getElementById("engine").textContent = status.engine;
  document.getElementById("nobackend").textContent = String(status.noBackend);
  document.getElementById("panic").hidden = status.panic !== true; // newer goround only
  const now = performance.now();
  const container = document.getElementById("cards");
  const seen = new Set();
  const counts = { up: 0, down: 0, draining: 0, drained: 0 };
  const pools = status.pools || [{ name: "default" }]; // older goround: one pool
  const grouped = pools.length > 1;
  historyKeys = (backend) => grouped ? backend.pool + "/" + backend.url : backend.url;
  let heading = null;
  for (const backend of status.backends) {
    const pool = backend.pool || "default";
    const key = pool + "/" + backend.id;
    seen.add(key);
    counts[backend.state] = (counts[backend.state] || 0) + 1;
    if (grouped && heading !== pool) {
      heading = pool;
      container.append(poolHeading(pools.find((p) => p.name === pool) || { name: pool }));
    }
    let card = cards.get(key);
    if (!card) {
      card = newCard(backend.id, pool);
      cards.set(key, card);
    }
    container.append(card); // keeps the round-robin order; a no-op move when already in place
    const last = previous.get(key);
    let rps = null;
    if (last && last.url === backend.url && now > last.at) {
      rps = Math.max(0, (backend.requests - last.requests) * 1000 / (now - last.at));
    }
    previous.set(key, { requests: backend.requests, at: now, url: backend.url });
    card.dataset.historyKey = historyKeys(backend);
    update(card, backend, rps);
  }
  for (const [key, card] of cards) {
    if (!seen.has(key)) {
      card.remove();
      cards.delete(key);
      previous.delete(key);
    }
  }
  for (const [name, node] of headings) {
    if (!grouped || !pools.some((p) => p.name === name)) {
      node.remove();
      headings.delete(name);
    }
  }
  const parts = Object.entries(counts).filter(([, n]) => n > 0).map(([s, n]) => n + " " + s);
  document.getElementById("summary").textContent = status.backends.length === 0
    ? "No backends."
    : status.backends.length + (status.backends.length === 1 ? " backend: " : " backends: ") +
      parts.join(", ");
  document.getElementById("updated").textContent = "updated " + new Date().toLocaleTimeString();
}

// The SVG namespace, from the page's own chart (no address written in the page).
const SVG = document.querySelector("svg").namespaceURI;
const WIDTH = 300;

// The time axis holds at least a minute, the newest point at the right edge.
const MIN_POINTS = 60;

function xOf(i, n) {
  return WIDTH - (n - 1 - i) * (WIDTH / Math.max(MIN_POINTS, n));
}

function path(values, max, height) {
  if (values.length === 0) return "";
  return values.map((v, i) =>
    (i === 0 ? "M" : "L") + xOf(i, values.length).toFixed(1) + " " +
    (height - 2 - (max > 0 ? (v / max) * (height - 4) : 0)).toFixed(1)
  ).join(" ");
}

function svgChild(svg, tag, attrs) {
  const node = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, String(v));
  svg.append(node);
  return node;
}

// One chart per backend: req/s, p50 and p99 (own scale), and 5xx as bars.
function drawBackend(svg, points, url) {
  svg.replaceChildren();
  const series = points.map((p) => p.backends[url] || { rps: 0, errors: 0, p50: null, p99: null });
  const rps = series.map((b) => b.rps);
  const p50 = series.map((b) => b.p50 || 0);
  const p99 = series.map((b) => b.p99 || 0);
  const maxLatency = Math.max(0, ...p99);
  const maxRps = Math.max(0, ...rps);
  const step = WIDTH / Math.max(MIN_POINTS, series.length);
  series.forEach((b, i) => {
    if (b.errors > 0 && maxRps > 0) {
      const h = Math.max(2, (b.errors / maxRps) * 52);
      svgChild(svg, "rect", { class: "err", x: xOf(i, series.length) - step, y: 54 - h, width: Math.max(1, step), height: h });
    }
  });
  svgChild(svg, "path", { class: "p50", d: path(p50, maxLatency, 56) });
  svgChild(svg, "path", { class: "p99", d: path(p99, maxLatency, 56) });
  svgChild(svg, "path", { class: "rps", d: path(rps, maxRps, 56) });
  const last = series[series.length - 1];
  svg.dataset.lastRps = last ? last.rps.toFixed(2) : "0";
  svg.dataset.points = String(series.length);
  return { maxRps, maxLatency, last };
}

// The pool: stacked bars of 2xx/3xx, 4xx, 5xx and refusals per second.
function drawPool(svg, points) {
  svg.replaceChildren();
  const totals = points.map((p) => p.classes[0] + p.classes[1] + p.classes[2] + p.refused);
  const max = Math.max(0, ...totals);
  const step = WIDTH / Math.max(MIN_POINTS, points.length);
  points.forEach((p, i) => {
    let y = 72;
    for (const [value, cls] of [[p.classes[0], "c2"], [p.classes[1], "c4"], [p.classes[2], "c5"], [p.refused, "refused"]]) {
      if (value <= 0 || max === 0) continue;
      const h = (value / max) * 70;
      y -= h;
      svgChild(svg, "rect", { class: cls, x: xOf(i, points.length) - step, y, width: Math.max(1, step * 0.9), height: h });
    }
  });
  svg.dataset.points = String(points.length);
}

function ms(seconds) {
  return seconds >= 1 ? seconds.toFixed(1) + " s" : (seconds * 1000).toFixed(seconds < 0.01 ? 2 : 0) + " ms";
}

let historyAt = 0;
async function pollHistory() {
  // Every few seconds is enough for 15 minutes of one-second points.
  if (performance.now() - historyAt < 3000) return;
  historyAt = performance.now();
  try {
    const res = await fetch("/history", { headers: headers(), cache: "no-store" });
    if (!res.ok) return; // an older goround has none; the cards still work
    const { points } = await res.json();
    drawPool(document.querySelector('[data-chart="pool"]'), points);
    for (const card of cards.values()) {
      const drawn = drawBackend(card.querySelector('[data-chart="backend"]'), points, card.dataset.historyKey || card.dataset.url);
      const last = drawn.last;
      field(card, "chartLegend").textContent = last
        ? "now " + last.rps.toFixed(1) + " req/s, p50 " + (last.p50 === null ? "–" : ms(last.p50)) +
          ", p99 " + (last.p99 === null ? "–" : ms(last.p99)) + ", " + last.errors.toFixed(1) +
          " errors/s (peak " + drawn.maxRps.toFixed(1) + " req/s)"
        : "no traffic yet";
    }
  } catch (_) {
    // The status poll reports an unreachable goround.
  }
}

async function poll() {
  clearTimeout(timer);
  try {
    const res = await fetch("/status", { headers: headers(), cache: "no-store" });
    if (!res.ok) {
      statusError(await failure("GET /status", res));
    } else {
      render(await res.json());
      statusError("");
      await pollHistory();
    }
  } catch (error) {
    statusError("GET /status failed: cannot reach goround's admin API (" + error.message + ").");
  }
  timer = setTimeout(poll, POLL_MS);
}

async function act(card, button) {
  const action = button.dataset.action;
  const id = card.dataset.backend;
  const path = "/pools/" + encodeURIComponent(card.dataset.pool) + "/backends/" + id + "/" + action;
  button.disabled = true;
  try {
    const res = await fetch(path, {
      method: "POST",
      headers: { ...headers(), "content-type": "application/json" },
      cache: "no-store",
    });
    actionError(res.ok ? "" : await failure("POST " + path, res));
  } catch (error) {
    actionError("POST " + path + " failed: " + error.message + ".");
  } finally {
    button.disabled = false;
  }
  await poll();
}

readToken();
addEventListener("hashchange", () => {
  readToken();
  poll();
});
poll();
</script>
</body>
</html>
`;
