/**
 * stdout carries only the access log, so log tools read it as it is: `jq` a JSON log written
 * under traffic, with the banner and operational lines on stderr.
 */
import { equal, ok as assert } from "node:assert/strict";
import { ensureDebianPackage } from "../support/cdp.ts";
import { bannerAt, recordingBackend, startGoround } from "../support/helpers.ts";

const JQ = "/usr/bin/jq";

Deno.test("--access-log json: every stdout line is JSON that jq reads; the banner is on stderr", async () => {
  await ensureDebianPackage(JQ, "jq");
  const backend = recordingBackend(() => new Response("hi"));
  const proxy = await startGoround(["--backend", backend.url, "--access-log", "json"]);
  try {
    for (let i = 0; i < 20; i++) await (await fetch(`${proxy.url}/page/${i}`)).text();
  } finally {
    await proxy.stop();
    await backend.close();
  }
  assert(bannerAt(proxy.stderr) >= 0);
  const out = proxy.stdout.filter((line) => line !== "");
  equal(out.length, 20, `one line per request on stdout:\n${out.join("\n")}`);
  const jq = new Deno.Command(JQ, { args: ["-c", ".path"], stdin: "piped", stdout: "piped" })
    .spawn();
  const writer = jq.stdin.getWriter();
  await writer.write(new TextEncoder().encode(out.join("\n") + "\n"));
  await writer.close();
  const result = await jq.output();
  equal(result.code, 0, "jq parsed the whole log");
  const targets = new TextDecoder().decode(result.stdout).trim().split("\n");
  equal(targets[0], '"/page/0"');
  equal(targets.length, 20);
});
