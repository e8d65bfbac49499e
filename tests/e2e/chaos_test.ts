import { equal, match, ok as assert } from "node:assert/strict";
import { ROOT } from "../support/helpers.ts";

Deno.test("deno task chaos: the brief's Chaos Monkey sequence passes with a real kill and restart", async () => {
  const output = await new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "--allow-net=127.0.0.1",
      `--allow-read=${ROOT}deno.json`,
      `--allow-run=${Deno.execPath()}`,
      `${ROOT}tools/chaos.ts`,
      "--proxy-port",
      "0",
      "--ports",
      "0,0,0",
      "--health-interval",
      "200ms",
      "--workers",
      "2",
    ],
    stdin: "null",
  }).output();
  const text = new TextDecoder().decode(output.stdout);
  equal(output.code, 0, text + new TextDecoder().decode(output.stderr));
  const ports = /Listening on (\d+), (\d+), (\d+)\.\.\./.exec(text)!.slice(1);
  const [a, b, c] = ports;
  match(text, /^Load Balancer started at 127\.0\.0\.1:\d+$/m);
  // The happy path, then the kill, then only a and c, then b is back.
  const section = (from: string, to: string) => text.slice(text.indexOf(from), text.indexOf(to));
  const happy = section("# 3.", "# 4.").split("\n").filter((l) => l.startsWith("Hello"));
  equal(happy.join("|"), [a, b, c, a].map((p) => `Hello from Server ${p}`).join("|"));
  const after = section("# 5.", "# 6.").split("\n").filter((l) => l.startsWith("Hello"));
  equal(after.length, 4);
  assert(after.every((l) => !l.endsWith(` ${b}`)), after.join("|"));
  match(text, new RegExp(`backend http://127\\.0\\.0\\.1:${b} DOWN`));
  match(text, new RegExp(`backend http://127\\.0\\.0\\.1:${b} UP`));
  match(text, /Chaos test passed/);
});

Deno.test("the chaos script exits non-zero on a deviation (a port that is taken)", async () => {
  const blocker = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  try {
    const output = await new Deno.Command(Deno.execPath(), {
      args: [
        "run",
        "--allow-net=127.0.0.1",
        `--allow-read=${ROOT}deno.json`,
        `--allow-run=${Deno.execPath()}`,
        `${ROOT}tools/chaos.ts`,
        "--proxy-port",
        String(blocker.addr.port),
        "--ports",
        "0,0,0",
      ],
      stdin: "null",
      stderr: "piped",
    }).output();
    assert(output.code !== 0);
  } finally {
    blocker.close();
  }
});

Deno.test("deno task chaos --load: no failed GET and no POST delivered twice while backends are killed, hung, 500 and reset", async () => {
  const output = await new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "--allow-net=127.0.0.1",
      `--allow-read=${ROOT}deno.json`,
      `--allow-run=${Deno.execPath()}`,
      `${ROOT}tools/chaos.ts`,
      "--load",
      "--duration",
      "4s",
      "--connections",
      "32",
      "--proxy-port",
      "0",
      "--ports",
      "0,0,0",
      "--workers",
      "2",
    ],
    stdin: "null",
  }).output();
  const text = new TextDecoder().decode(output.stdout);
  equal(output.code, 0, text + new TextDecoder().decode(output.stderr));
  const getRun = /GET run: (\d+) requests, (\d+) succeeded, 0 failed/.exec(text);
  assert(getRun && Number(getRun[1]) > 1000 && getRun[1] === getRun[2], text);
  match(
    text,
    /POST run: \d+ requests[^\n]*\n(.|\n)*0 ids reached two backends(.|\n)*POST: no request reached two backends/,
  );
  for (const fault of ["kill", "restart", "hang", "500", "reset"]) {
    match(text, new RegExp(`backend \\d+: ${fault}`));
  }
  // The kill shows as refused (new connections) or reset/closed (requests in flight on it).
  match(text, /DOWN: connection (refused|reset|closed before a response)/);
  match(text, /DOWN: .*(health check timed out|timed out waiting for the response)/);
  // An application's 500s are not counted against it by default: its health check takes it out.
  match(text, /DOWN: health check got HTTP 500/);
});
