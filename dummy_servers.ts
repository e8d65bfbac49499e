/**
 * Dummy backends for demos, tests and chaos runs. Each backend is its own process (so any one
 * can be killed alone) answering every path with `Hello from Server <port>`.
 *
 * ```sh
 * deno task backends            # 8081, 8082 and 8083
 * deno task backends 8082       # just 8082
 * deno task demo                # the three backends and goround on :8000
 * ```
 *
 * A backend can misbehave on purpose (`--mode`, or at run time with
 * `curl -X POST -H 'Connection: x-dummy-control' -H 'X-Dummy-Control: 1'
 * localhost:8082/_dummy/mode/hang`):
 *
 * - `ok`: answer at once (the default);
 * - `hang`: accept requests and never answer;
 * - `500`: answer `500 Internal Server Error`;
 * - `slow=200ms`: answer after the delay;
 * - `reset`: accept connections and close them without answering.
 *
 * A mode switch must carry `X-Dummy-Control` and name it in `Connection`, which makes it a
 * hop-by-hop field (RFC 9110 §7.6.1): a proxy drops both, goround included, so a visitor of a
 * demo cannot switch a backend through goround; without them the switch is 403.
 *
 * `GET /_dummy/stats` returns the request counts (and request body bytes received) as JSON;
 * `GET /_dummy/bytes/<n>` answers with `n` bytes, for download tests. With `--record`, the backend prints
 * `seen <id>` for each request carrying an `X-Chaos-Id` field, so a harness can prove no request
 * reached two backends even if one is killed. A path under `/attack/500` is an application route
 * that always fails (500), for the poison requests of `deno task chaos --load`.
 *
 * @module
 */

import { parseArgs } from "node:util";
import { parseDuration } from "./lib/config/duration.ts";
import { connectionTokens } from "./lib/http/headers.ts";

/** The fields a mode switch must carry (see the module's notes): `X-Dummy-Control`, named in
 * `Connection` so that any proxy on the way drops it. */
export const CONTROL_HEADERS: Readonly<Record<string, string>> = {
  connection: "x-dummy-control",
  "x-dummy-control": "1",
};

/**
 * Whether a request may switch the backend's mode: it came straight from a client that sent
 * `X-Dummy-Control` and named it in `Connection` (a proxy would have dropped both).
 *
 * @param get Reads a request field by lowercase name (`null` when absent).
 * @returns `true` for a control request.
 */
export function isControlRequest(get: (name: string) => string | null): boolean {
  return get("x-dummy-control") !== null &&
    connectionTokens(get("connection")).includes("x-dummy-control");
}

const NOT_CONTROL = "a mode switch needs the fields Connection: x-dummy-control and " +
  "X-Dummy-Control: 1 (a proxy drops them, so it cannot come through goround)\n";

/** How a dummy backend behaves. */
export type Mode =
  | { readonly kind: "ok" }
  | { readonly kind: "hang" }
  | { readonly kind: "500" }
  | { readonly kind: "slow"; readonly ms: number }
  | { readonly kind: "reset" };

/**
 * Parses a mode name: `ok`, `hang`, `500`, `slow=200ms` or `reset`.
 *
 * @param text The mode.
 * @returns The mode.
 * @throws {SyntaxError} For anything else.
 */
export function parseMode(text: string): Mode {
  if (text === "ok" || text === "hang" || text === "500" || text === "reset") return { kind: text };
  if (text.startsWith("slow=")) return { kind: "slow", ms: parseDuration(text.slice(5)) };
  throw new SyntaxError(`"${text}" is not a mode: expected ok, hang, 500, slow=200ms or reset`);
}

/** A field's value in a raw request head (values of repeated fields joined), or `null`. */
function rawField(head: string, name: string): string | null {
  const values = head.split("\r\n").slice(1)
    .filter((line) => line.slice(0, line.indexOf(":")).trim().toLowerCase() === name)
    .map((line) => line.slice(line.indexOf(":") + 1).trim());
  return values.length === 0 ? null : values.join(", ");
}

/** A stream of `size` bytes of "x", for download tests. */
function filler(size: number): ReadableStream<Uint8Array<ArrayBuffer>> {
  const block = new Uint8Array(64 * 1024).fill(120);
  let left = size;
  return new ReadableStream({
    pull(controller) {
      if (left <= 0) return controller.close();
      const n = Math.min(block.length, left);
      left -= n;
      controller.enqueue(block.slice(0, n));
    },
  });
}

/** Request counts of one backend. */
export interface Stats {
  /** The port it serves. */
  readonly port: number;
  /** Requests answered or held, by method. */
  readonly methods: Record<string, number>;
  /** All requests. */
  readonly requests: number;
  /** Request body bytes received. */
  readonly bodyBytes: number;
}

/** A backend running in this process. */
export interface LocalBackend {
  /** The port it serves. */
  readonly port: number;
  /** Switches its behaviour. */
  readonly setMode: (mode: Mode) => Promise<void>;
  /** Its counts so far. */
  readonly stats: () => Stats;
  /** Stops it, releasing held requests. */
  readonly close: () => Promise<void>;
}

/** Options of {@linkcode serveBackend}. */
export interface BackendOptions {
  /** Interface to bind. @default {"127.0.0.1"} */
  readonly hostname?: string;
  /** Initial behaviour. @default {{ kind: "ok" }} */
  readonly mode?: Mode;
  /** Called with each request's `X-Chaos-Id` value. */
  readonly onId?: (id: string) => void;
}

/**
 * Serves one dummy backend in this process.
 *
 * @param port The port (0 for any free one).
 * @param options Interface, mode and id recorder.
 * @returns The running backend.
 * @example
 * ```ts ignore
 * const backend = serveBackend(0);
 * await fetch(`http://127.0.0.1:${backend.port}/`); // "Hello from Server <port>"
 * await backend.close();
 * ```
 */
export function serveBackend(port: number, options: BackendOptions = {}): LocalBackend {
  const hostname = options.hostname ?? "127.0.0.1";
  let mode: Mode = options.mode ?? { kind: "ok" };
  const methods: Record<string, number> = {};
  let requests = 0;
  const releases = new Set<() => void>();
  let closing = false;

  let bodyBytes = 0;
  const stats = (): Stats => ({ port: actualPort, methods: { ...methods }, requests, bodyBytes });
  const control = (req: Request, path: string): Response => {
    if (path === "/_dummy/stats") return Response.json(stats());
    const bytes = /^\/_dummy\/bytes\/(\d+)$/.exec(path);
    if (bytes) {
      return new Response(filler(Number(bytes[1])), { headers: { "content-length": bytes[1]! } });
    }
    const wanted = /^\/_dummy\/mode\/(.+)$/.exec(path);
    if (wanted && req.method === "POST") {
      if (!isControlRequest((name) => req.headers.get(name))) {
        return new Response(NOT_CONTROL, { status: 403 });
      }
      try {
        const next = parseMode(decodeURIComponent(wanted[1]!));
        // Answer first: in reset mode this very connection would be cut.
        queueMicrotask(() => void setMode(next));
        return new Response(`mode ${wanted[1]}\n`);
      } catch (error) {
        return new Response(`${(error as Error).message}\n`, { status: 400 });
      }
    }
    return new Response("unknown control path\n", { status: 404 });
  };

  const handler = async (req: Request): Promise<Response> => {
    const path = new URL(req.url).pathname;
    if (path.startsWith("/_dummy/")) return control(req, path);
    requests++;
    methods[req.method] = (methods[req.method] ?? 0) + 1;
    const id = req.headers.get("x-chaos-id");
    if (id !== null) options.onId?.(id);
    // Read the whole body, as a real application would, so uploads are measured end to end.
    if (req.body) {
      try {
        for await (const chunk of req.body) bodyBytes += chunk.length;
      } catch {
        return new Response(null, { status: 400 }); // the upload broke off
      }
    }
    // A hung backend holds requests until it recovers; then it answers them in its new mode,
    // as a real one that was stuck would.
    while (mode.kind === "hang" && !closing) {
      await new Promise<void>((resolve) => releases.add(resolve));
    }
    const current = mode;
    if (current.kind === "slow") await new Promise((resolve) => setTimeout(resolve, current.ms));
    // A route of the application that fails whatever the mode (`deno task chaos --load`'s
    // poison requests): an application's 500, not a sign the backend is down.
    if (current.kind === "500" || path.startsWith("/attack/500")) {
      return new Response(`Internal Server Error from ${actualPort}`, { status: 500 });
    }
    return new Response(`Hello from Server ${actualPort}`);
  };

  // In reset mode the port is served by a raw listener that closes every connection it accepts.
  let server: Deno.HttpServer<Deno.NetAddr> | null = null;
  let raw: Deno.TcpListener | null = null;
  let rawLoop: Promise<void> = Promise.resolve();
  const startHttp = (at: number) => {
    server = Deno.serve({ hostname, port: at, onListen: () => {} }, handler);
    return server.addr.port;
  };
  const startRaw = (at: number) => {
    const listener = Deno.listen({ hostname, port: at });
    raw = listener;
    rawLoop = (async () => {
      for await (const conn of listener) {
        const buf = new Uint8Array(4096);
        conn.read(buf).catch(() => null).then((n) => {
          const text = n ? new TextDecoder().decode(buf.subarray(0, n)) : "";
          const line = /^POST (\/_dummy\/mode\/[^ ]+) /.exec(text);
          if (line && isControlRequest((name) => rawField(text, name))) {
            const next = parseMode(decodeURIComponent(line[1]!.slice("/_dummy/mode/".length)));
            const body = `mode ${next.kind}\n`;
            conn.write(
              new TextEncoder().encode(
                `HTTP/1.1 200 OK\r\ncontent-length: ${body.length}\r\nconnection: close\r\n\r\n${body}`,
              ),
            ).catch(() => 0).finally(() => {
              conn.close();
              void setMode(next);
            });
            return;
          }
          if (n) {
            requests++;
            const method = text.slice(0, text.indexOf(" "));
            methods[method] = (methods[method] ?? 0) + 1;
          }
          try {
            conn.close();
          } catch {
            // Closed already.
          }
        });
      }
    })().catch(() => {});
  };
  const stopCurrent = async () => {
    for (const release of releases) release();
    releases.clear();
    if (server) {
      const stopping = server;
      server = null;
      await stopping.shutdown();
    }
    if (raw) {
      const listener = raw;
      raw = null;
      listener.close();
      await rawLoop;
    }
  };
  const setMode = async (next: Mode): Promise<void> => {
    const wasReset = mode.kind === "reset";
    mode = next;
    if (closing || wasReset === (next.kind === "reset")) {
      if (next.kind !== "hang") {
        for (const release of releases) release();
        releases.clear();
      }
      return;
    }
    await stopCurrent();
    if (next.kind === "reset") startRaw(actualPort);
    else startHttp(actualPort);
  };

  let actualPort = port;
  if (mode.kind === "reset") {
    startRaw(port);
    actualPort = (raw! as Deno.TcpListener).addr.port;
  } else {
    actualPort = startHttp(port);
  }
  return {
    get port() {
      return actualPort;
    },
    setMode,
    stats,
    close: async () => {
      closing = true;
      await stopCurrent();
    },
  };
}

/** A backend running in a child process. */
export interface BackendProcess {
  /** The port it serves. */
  readonly port: number;
  /** Its process id. */
  readonly pid: number;
  /** The child process. */
  readonly child: Deno.ChildProcess;
  /** Ids it reported (with `record`). */
  readonly ids: string[];
  /** Resolves when the process has exited. */
  readonly exited: Promise<Deno.CommandStatus>;
}

/**
 * Starts one backend in its own process and waits until it is listening.
 *
 * @param port The port (0 for any free one; the chosen port is reported back).
 * @param options Mode and whether to record `X-Chaos-Id` values.
 * @returns The running process.
 */
export async function spawnBackend(
  port: number,
  options: { mode?: string; record?: boolean } = {},
): Promise<BackendProcess> {
  const script = new URL(import.meta.url).pathname;
  const args = ["run", "--allow-net=127.0.0.1", script, "--serve", String(port)];
  if (options.mode) args.push("--mode", options.mode);
  if (options.record) args.push("--record");
  const child = new Deno.Command(Deno.execPath(), {
    args,
    stdout: "piped",
    stderr: "inherit",
    stdin: "null",
  })
    .spawn();
  const ids: string[] = [];
  const lines = child.stdout.pipeThrough(new TextDecoderStream()).pipeThrough(lineSplitter());
  const reader = lines.getReader();
  let ready: { port: number; pid: number } | null = null;
  while (ready === null) {
    const { done, value } = await reader.read();
    if (done) {
      const status = await child.status;
      throw new Error(`backend on port ${port} exited before listening (code ${status.code})`);
    }
    const match = /^ready (\d+) (\d+)$/.exec(value);
    if (match) ready = { port: Number(match[1]), pid: Number(match[2]) };
  }
  // Keep draining stdout (ids) for the life of the process.
  const drained = (async () => {
    while (true) {
      const { done, value } = await reader.read();
      if (done) return;
      if (value.startsWith("seen ")) ids.push(value.slice(5));
    }
  })();
  const exited = drained.then(() => child.status);
  return { ...ready, child, ids, exited };
}

/**
 * A transform stream from text chunks to lines (without line ends).
 *
 * @returns The stream.
 */
export function lineSplitter(): TransformStream<string, string> {
  let partial = "";
  return new TransformStream({
    transform(chunk, controller) {
      const parts = (partial + chunk).split("\n");
      partial = parts.pop()!;
      for (const part of parts) controller.enqueue(part.replace(/\r$/, ""));
    },
    flush(controller) {
      if (partial !== "") controller.enqueue(partial);
    },
  });
}

const USAGE = `usage: dummy_servers.ts [--mode MODE] [--demo [goround flags]] [PORT ...]

Starts one backend process per PORT (default 8081 8082 8083), each answering
"Hello from Server <port>"; with --demo, goround too, given the flags after it.

  --mode MODE   ok (default), hang, 500, slow=200ms or reset
  --demo        also start goround in front of the backends
  -h, --help    show this help

At run time (only straight to a backend, never through a proxy):
  curl -X POST -H 'Connection: x-dummy-control' -H 'X-Dummy-Control: 1' \\
    localhost:8082/_dummy/mode/hang
  GET /_dummy/stats     request counts as JSON
  GET /_dummy/bytes/N   N bytes, for download tests
  GET /attack/500       a route that always fails: 500`;

function usage(message: string): never {
  console.error(`dummy_servers: ${message}`);
  console.error(USAGE.split("\n")[0]);
  Deno.exit(2);
}

function runChild(port: number, mode: Mode, record: boolean): void {
  const encoder = new TextEncoder();
  const backend = serveBackend(port, {
    mode,
    ...(record
      ? { onId: (id: string) => Deno.stdout.writeSync(encoder.encode(`seen ${id}\n`)) }
      : {}),
  });
  console.log(`ready ${backend.port} ${Deno.pid}`);
  const stop = () => void backend.close().then(() => Deno.exit(0));
  Deno.addSignalListener("SIGINT", stop);
  Deno.addSignalListener("SIGTERM", stop);
}

async function runParent(
  ports: number[],
  mode: string | undefined,
  demo: string[] | null,
): Promise<void> {
  const procs = await Promise.all(ports.map((port) => spawnBackend(port, mode ? { mode } : {})));
  console.log(`Listening on ${procs.map((p) => p.port).join(", ")}...`);
  for (const proc of procs) {
    console.log(`  server ${proc.port}: pid ${proc.pid} (stop it with: kill ${proc.pid})`);
  }
  for (const proc of procs) {
    proc.exited.then((status) =>
      console.log(`server ${proc.port} (pid ${proc.pid}) exited, code ${status.code}`)
    );
  }
  let goround: Deno.ChildProcess | null = null;
  if (demo !== null) {
    const main = new URL("./main.ts", import.meta.url).pathname;
    const root = new URL(".", import.meta.url).pathname;
    const backends = procs.map((p) => `http://localhost:${p.port}`).join(",");
    goround = new Deno.Command(Deno.execPath(), {
      args: [
        "run",
        "--v8-flags=--max-semi-space-size=4",
        "--unstable-net",
        "--allow-net",
        `--allow-read=${root}`,
        "--allow-env=GOROUND_*",
        main,
        "--backends",
        backends,
        ...demo,
      ],
      stdin: "null",
    }).spawn();
  }
  const stopAll = async () => {
    for (const proc of procs) {
      try {
        proc.child.kill("SIGTERM");
      } catch {
        // Already gone (killed by hand).
      }
    }
    if (goround) {
      try {
        goround.kill("SIGTERM");
      } catch {
        // Already gone.
      }
      await goround.status;
    }
    await Promise.all(procs.map((p) => p.exited));
    Deno.exit(0);
  };
  Deno.addSignalListener("SIGINT", () => void stopAll());
  Deno.addSignalListener("SIGTERM", () => void stopAll());
  if (goround) {
    const status = await goround.status;
    console.log(`goround exited, code ${status.code}`);
    await stopAll();
  }
}

async function main(): Promise<void> {
  const demoAt = Deno.args.indexOf("--demo");
  const own = demoAt < 0 ? Deno.args : Deno.args.slice(0, demoAt);
  const demo = demoAt < 0 ? null : Deno.args.slice(demoAt + 1);
  let parsed;
  try {
    parsed = parseArgs({
      args: own,
      options: {
        serve: { type: "string" },
        mode: { type: "string" },
        record: { type: "boolean" },
        help: { type: "boolean", short: "h" },
      },
      allowPositionals: true,
      strict: true,
    });
  } catch (error) {
    usage((error as Error).message);
  }
  const { values, positionals } = parsed;
  if (values.help) {
    console.log(USAGE);
    return;
  }
  const mode = values.mode;
  if (mode !== undefined) {
    try {
      parseMode(mode);
    } catch (error) {
      usage(`--mode: ${(error as Error).message}`);
    }
  }
  const toPort = (text: string): number => {
    if (!/^\d+$/.test(text) || Number(text) > 65535) {
      usage(`"${text}" is not a port: expected 0-65535`);
    }
    return Number(text);
  };
  if (values.serve !== undefined) {
    runChild(toPort(values.serve), parseMode(mode ?? "ok"), values.record ?? false);
    return;
  }
  const ports = positionals.length > 0 ? positionals.map(toPort) : [8081, 8082, 8083];
  await runParent(ports, mode, demo);
}

if (import.meta.main) await main();
