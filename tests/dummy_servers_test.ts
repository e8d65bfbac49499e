import { deepEqual, equal, match, ok as assert, throws } from "node:assert/strict";
import {
  CONTROL_HEADERS,
  lineSplitter,
  parseMode,
  serveBackend,
  spawnBackend,
} from "../dummy_servers.ts";
import { get, ROOT, startGoround, waitFor } from "./support/helpers.ts";

const RUN = `--allow-run=${Deno.execPath()}`;

/** Starts `dummy_servers.ts` with `args` and collects its stdout lines. */
function startParent(args: string[]) {
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", "--allow-net=127.0.0.1", RUN, `${ROOT}dummy_servers.ts`, ...args],
    stdout: "piped",
    stderr: "piped",
    stdin: "null",
  }).spawn();
  const lines: string[] = [];
  const errors: string[] = [];
  const read = async (stream: ReadableStream<Uint8Array>, into: string[]) => {
    for await (
      const line of stream.pipeThrough(new TextDecoderStream()).pipeThrough(lineSplitter())
    ) into.push(line);
  };
  const done = Promise.all([read(child.stdout, lines), read(child.stderr, errors)]).then(() =>
    child.status
  );
  return { child, lines, errors, done };
}

async function listening(port: number): Promise<boolean> {
  try {
    (await Deno.connect({ hostname: "127.0.0.1", port })).close();
    return true;
  } catch {
    return false;
  }
}

Deno.test("serveBackend() answers every path with its port, and counts", async () => {
  const backend = serveBackend(0);
  try {
    equal(
      (await get(`http://127.0.0.1:${backend.port}/`)).text,
      `Hello from Server ${backend.port}`,
    );
    equal(
      (await get(`http://127.0.0.1:${backend.port}/any/path?q=1`)).text,
      `Hello from Server ${backend.port}`,
    );
    await get(`http://127.0.0.1:${backend.port}/`, { method: "POST", body: "12345" });
    deepEqual(backend.stats(), {
      port: backend.port,
      methods: { GET: 2, POST: 1 },
      requests: 3,
      bodyBytes: 5,
    });
  } finally {
    await backend.close();
  }
});

Deno.test("modes: 500, slow, hang, reset, switched at run time by the control path", async (t) => {
  const backend = serveBackend(0);
  const url = `http://127.0.0.1:${backend.port}`;
  const setMode = async (mode: string) => {
    const res = await get(`${url}/_dummy/mode/${mode}`, {
      method: "POST",
      headers: CONTROL_HEADERS,
    });
    equal(res.status, 200);
    await new Promise((resolve) => setTimeout(resolve, 20));
  };
  try {
    await t.step("500", async () => {
      await setMode("500");
      equal((await get(url)).status, 500);
    });
    await t.step("slow=150ms", async () => {
      await setMode("slow=150ms");
      const started = Date.now();
      equal((await get(url)).status, 200);
      assert(Date.now() - started >= 140);
    });
    await t.step("hang: no answer until healed", async () => {
      await setMode("hang");
      const held = get(url);
      const raced = await Promise.race([
        held.then(() => "answered"),
        new Promise((r) => setTimeout(() => r("held"), 200)),
      ]);
      equal(raced, "held");
      await setMode("ok");
      await held;
    });
    await t.step(
      "reset: connections are closed without an answer; the control path still works",
      async () => {
        await setMode("reset");
        let failed = false;
        try {
          await get(url);
        } catch {
          failed = true;
        }
        assert(failed);
        await setMode("ok");
        equal((await get(url)).text, `Hello from Server ${backend.port}`);
      },
    );
    await t.step("a bad mode is refused", async () => {
      const res = await get(`${url}/_dummy/mode/sideways`, {
        method: "POST",
        headers: CONTROL_HEADERS,
      });
      equal(res.status, 400);
    });
  } finally {
    await backend.close();
  }
  throws(() => parseMode("slow=fast"), /is not a duration/);
});

Deno.test("spawnBackend() runs a backend in its own process that can be killed alone", async () => {
  const a = await spawnBackend(0);
  const b = await spawnBackend(0);
  try {
    assert(a.pid !== b.pid && a.pid !== Deno.pid);
    a.child.kill("SIGKILL");
    await a.exited;
    equal((await get(`http://127.0.0.1:${b.port}/`)).text, `Hello from Server ${b.port}`);
  } finally {
    b.child.kill("SIGTERM");
    await b.exited;
  }
});

Deno.test("deno task backends: prints the banner and each PID; SIGTERM stops every backend", async () => {
  const parent = startParent(["0", "0"]);
  await waitFor(() => parent.lines.length >= 3, { what: "the banner", exited: parent.done });
  const ports = /^Listening on (\d+), (\d+)\.\.\.$/.exec(parent.lines[0]!)!.slice(1).map(Number);
  const pids = parent.lines.slice(1, 3).map((line) => Number(/pid (\d+)/.exec(line)![1]));
  for (const port of ports) {
    equal((await get(`http://127.0.0.1:${port}/`)).text, `Hello from Server ${port}`);
  }
  assert(pids.every((pid) => pid > 0 && pid !== Deno.pid));
  parent.child.kill("SIGTERM");
  equal((await parent.done).code, 0);
  for (const port of ports) equal(await listening(port), false, `port ${port} is closed`);
});

Deno.test("deno task demo: backends and goround together; Ctrl-C (SIGINT) stops everything", async () => {
  const parent = startParent([
    "0",
    "0",
    "0",
    "--demo",
    "--listen",
    "127.0.0.1:0",
    "--admin",
    "127.0.0.1:0",
    "--workers",
    "1",
  ]);
  // goround's banner is on its stderr, which the demo passes through.
  await waitFor(() => parent.errors.some((l) => l.startsWith("Load Balancer started at")), {
    what: "goround's banner",
    exited: parent.done,
    timeout: 20_000,
  });
  const port = Number(
    /:(\d+)$/.exec(parent.errors.find((l) => l.startsWith("Load Balancer"))!)![1],
  );
  const backendPorts = /^Listening on (\d+), (\d+), (\d+)\.\.\.$/.exec(parent.lines[0]!)!.slice(1);
  const replies = [];
  for (let i = 0; i < 4; i++) replies.push((await get(`http://127.0.0.1:${port}/`)).text);
  deepEqual(replies, [...backendPorts, backendPorts[0]].map((p) => `Hello from Server ${p}`));
  parent.child.kill("SIGINT");
  equal((await parent.done).code, 0);
  match(parent.errors.join("\n"), /stopped/);
});

Deno.test("a mode switch needs the control fields, so it cannot come through goround", async (t) => {
  const backend = serveBackend(0);
  const url = `http://127.0.0.1:${backend.port}`;
  const proxy = await startGoround(["--backend", url, "--workers", "1", "--access-log", "off"]);
  const switchTo = (base: string, mode: string, headers: Record<string, string>) =>
    get(`${base}/_dummy/mode/${mode}`, { method: "POST", headers });
  try {
    await t.step("without them: 403, and the backend keeps answering", async () => {
      const res = await switchTo(url, "500", { "x-dummy-control": "1" });
      equal(res.status, 403);
      match(res.text, /Connection: x-dummy-control/);
      equal((await get(url)).status, 200);
    });
    await t.step("through goround, even with both fields: 403 (goround drops them)", async () => {
      equal((await switchTo(proxy.url, "500", CONTROL_HEADERS)).status, 403);
      equal((await switchTo(proxy.url, "reset", CONTROL_HEADERS)).status, 403);
      for (let i = 0; i < 3; i++) equal((await get(proxy.url)).status, 200);
    });
    await t.step("straight to the backend, with both: switched", async () => {
      equal((await switchTo(url, "500", CONTROL_HEADERS)).status, 200);
      await waitFor(async () => (await get(url)).status === 500, { what: "mode 500" });
    });
    await t.step("in reset mode, a switch without them is cut off like any request", async () => {
      equal((await switchTo(url, "reset", CONTROL_HEADERS)).status, 200);
      await waitFor(async () => {
        try {
          await get(url);
          return false;
        } catch {
          return true;
        }
      }, { what: "reset mode" });
      let cut = false;
      try {
        await switchTo(url, "ok", {});
      } catch {
        cut = true;
      }
      assert(cut, "no answer");
      equal((await switchTo(url, "ok", CONTROL_HEADERS)).status, 200);
      await waitFor(async () => {
        try {
          return (await get(url)).status === 200;
        } catch {
          return false;
        }
      }, { what: "mode ok" });
    });
  } finally {
    await proxy.stop();
    await backend.close();
  }
});

Deno.test("dummy_servers.ts --help prints the usage and exits 0", async () => {
  const { code, stdout, stderr } = await new Deno.Command(Deno.execPath(), {
    args: ["run", "--allow-net=127.0.0.1", `${ROOT}dummy_servers.ts`, "--help"],
    stdin: "null",
  }).output();
  equal(code, 0, new TextDecoder().decode(stderr));
  const text = new TextDecoder().decode(stdout);
  match(text, /^usage: dummy_servers\.ts /);
  match(text, /--mode MODE/);
  match(text, /X-Dummy-Control/);
});
