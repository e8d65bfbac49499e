/**
 * The admin dashboard: one HTML page with inline CSS and JavaScript and no external assets.
 *
 * @module
 */

/** The dashboard page (placeholder until the full page lands). */
export const DASHBOARD_HTML: string = `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>goround</title></head>
<body><h1>goround</h1><pre id="status">loading…</pre>
<script>
const token = new URLSearchParams(location.hash.slice(1)).get("token");
const headers = token ? { authorization: "Bearer " + token } : {};
async function tick() {
  const res = await fetch("/status", { headers });
  document.getElementById("status").textContent = await res.text();
}
tick();
setInterval(tick, 1000);
</script></body></html>
`;
