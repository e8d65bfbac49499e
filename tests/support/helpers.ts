/**
 * Test helpers: run goround as a real process, backends under a test's control, wait on
 * conditions with a deadline. Everything stays on loopback; a raw client is in `raw_client.ts`.
 *
 * @module
 */

import { lineSplitter } from "../../dummy_servers.ts";

/** The repository root (where `main.ts` lives). */
export const ROOT: string = new URL("../..", import.meta.url).pathname;

/**
 * The flags `deno task start` gives `deno run` (permissions and V8 flags), read from `deno.json`
 * so that every test runs goround exactly as an operator does.
 *
 * @returns The flags, shell quotes removed.
 */
export function startTaskFlags(): string[] {
  const { tasks } = JSON.parse(Deno.readTextFileSync(`${ROOT}deno.json`));
  const words = (tasks.start as string).split(/\s+/);
  return words.slice(words.indexOf("run") + 1, words.indexOf("main.ts"))
    .map((word) => word.replaceAll("'", ""));
}

/** Deno's flags for a goround process, as the `start` task grants them. */
export const GOROUND_FLAGS: readonly string[] = startTaskFlags();

/** A goround process under test. */
export interface Goround {
  /** The port it serves. */
  readonly port: number;
  /** `http://127.0.0.1:<port>`. */
  readonly url: string;
  /** The admin API's base URL (`http://127.0.0.1:<port>`), or `""` when it is off. */
  readonly adminUrl: string;
  /** Its process id. */
  readonly pid: number;
  /** Lines it printed to stdout so far. */
  readonly stdout: string[];
  /** Lines it printed to stderr so far. */
  readonly stderr: string[];
  /** Sends SIGTERM and waits for the exit status. */
  readonly stop: () => Promise<Deno.CommandStatus>;
  /** Resolves with the exit status once the process exits. */
  readonly exited: Promise<Deno.CommandStatus>;
}

async function collect(stream: ReadableStream<Uint8Array>, into: string[]): Promise<void> {
  const lines = stream.pipeThrough(new TextDecoderStream()).pipeThrough(lineSplitter());
  for await (const line of lines) into.push(line);
}

/** A stderr line as text: the message of a `--log-format json` line, else the line itself. */
export function plainLine(line: string): string {
  if (!line.startsWith('{"time"')) return line;
  try {
    return String(JSON.parse(line).msg ?? line);
  } catch {
    return line;
  }
}

function entryPath(entry: string): string {
  return entry.startsWith("/") ? entry : `${ROOT}${entry}`;
}

/**
 * Where goround's banner begins among its stderr lines (log lines may come before it).
 *
 * @param lines The lines goround wrote to stderr.
 * @returns The index of `Load Balancer started at …`.
 */
export function bannerAt(lines: readonly string[]): number {
  const at = lines.findIndex((line) => line.startsWith("Load Balancer started at"));
  if (at < 0) throw new Error(`no banner in: ${lines.join("\n")}`);
  return at;
}

/**
 * Starts goround on a free loopback port with `args` and waits for its banner.
 *
 * @param args Flags (the listen address is added unless given).
 * @param options Extra environment variables; more paths to read; the entry point instead of
 *   `main.ts` (a test fixture's), relative to the repository root unless absolute (another
 *   checkout's); `fdLimit`: the most file descriptors it may open (`ulimit -n`, set by `sh`
 *   before it becomes goround); `stderr`: the array its stderr lines go to, for a test that
 *   watches them before the banner; `spawned`: told the process id as soon as it runs.
 * @returns The running process.
 */
export async function startGoround(
  args: readonly string[],
  options: {
    env?: Record<string, string>;
    readable?: string;
    entry?: string;
    fdLimit?: number;
    stderr?: string[];
    spawned?: (pid: number) => void;
  } = {},
): Promise<Goround> {
  const listen = [
    ...(args.includes("--listen") ? [] : ["--listen", "127.0.0.1:0"]),
    // Tests never take the default admin port 9000 (a demo may be using it).
    ...(args.includes("--admin") ? [] : ["--admin", "127.0.0.1:0"]),
  ];
  const flags = options.readable
    ? GOROUND_FLAGS.map((flag) =>
      flag.startsWith("--allow-read=") ? `${flag},${options.readable}` : flag
    )
    : GOROUND_FLAGS;
  const command = [
    Deno.execPath(),
    "run",
    ...flags,
    entryPath(options.entry ?? "main.ts"),
    ...listen,
    ...args,
  ];
  const limited = options.fdLimit === undefined
    ? command
    : ["sh", "-c", `ulimit -n ${options.fdLimit} && exec "$@"`, "sh", ...command];
  const child = new Deno.Command(limited[0]!, {
    args: limited.slice(1),
    stdout: "piped",
    stderr: "piped",
    stdin: "null",
    env: options.env ?? {},
  }).spawn();
  options.spawned?.(child.pid);
  const stdout: string[] = [];
  const stderr: string[] = options.stderr ?? [];
  const drained = Promise.all([collect(child.stdout, stdout), collect(child.stderr, stderr)]);
  const exited = drained.then(() => child.status);
  let port = 0;
  // The banner is on stderr (on stdout in checkouts before c553313, which --compare runs).
  const bannerLines = () => {
    const lines = stderr.map(plainLine);
    return lines.some((line) => line.startsWith("Load Balancer")) ? lines : stdout;
  };
  try {
    await waitFor(() => {
      const banner = bannerLines().map((line) => /^Load Balancer started at \S*:(\d+)/.exec(line))
        .find((m) => m);
      if (banner) port = Number(banner[1]);
      // The banner ends with the admin line; wait for all of it.
      return port > 0 && bannerLines().some((line) => line.startsWith("  admin: "));
    }, { timeout: 15_000, what: "goround's banner", exited });
  } catch (error) {
    try {
      child.kill("SIGKILL");
    } catch {
      // Already exited.
    }
    await exited;
    throw new Error(
      `${(error as Error).message}\nstdout: ${stdout.join("\n")}\nstderr: ${stderr.join("\n")}`,
    );
  }
  const admin = bannerLines().map((line) => /^ {2}admin: (http:\/\/\S+)\/$/.exec(line)).find((m) =>
    m
  );
  return {
    port,
    url: `http://127.0.0.1:${port}`,
    adminUrl: admin?.[1] ?? "",
    pid: child.pid,
    stdout,
    stderr,
    exited,
    stop: async () => {
      try {
        child.kill("SIGTERM");
      } catch {
        // Already exited.
      }
      return await exited;
    },
  };
}

/**
 * Sends a signal to a process with `kill` (Deno.kill needs unscoped --allow-run).
 *
 * @param pid The process.
 * @param signal For example `HUP`.
 */
export async function sendSignal(pid: number, signal: string): Promise<void> {
  const { code } = await new Deno.Command("kill", { args: [`-${signal}`, String(pid)] }).output();
  if (code !== 0) throw new Error(`kill -${signal} ${pid} failed`);
}

/**
 * Runs goround to completion (for flags that make it exit: errors, `--help`, `--version`). One
 * that is still running after 15 s (it started serving instead of refusing) is killed, and
 * its code is then 137.
 *
 * @param args Flags.
 * @param env Extra environment variables.
 * @returns Exit code and output.
 */
export async function runGoround(
  args: readonly string[],
  env: Record<string, string> = {},
): Promise<{ code: number; stdout: string; stderr: string }> {
  const admin = args.includes("--admin") ? [] : ["--admin", "127.0.0.1:0"];
  const abort = new AbortController();
  const timer = setTimeout(() => abort.abort(), 15_000);
  const output = await new Deno.Command(Deno.execPath(), {
    args: ["run", ...GOROUND_FLAGS, `${ROOT}main.ts`, ...args, ...admin],
    stdin: "null",
    env,
    signal: abort.signal,
  }).output().finally(() => clearTimeout(timer));
  const decoder = new TextDecoder();
  return {
    code: output.code,
    stdout: decoder.decode(output.stdout),
    stderr: decoder.decode(output.stderr),
  };
}

/**
 * Waits until `condition` holds, polling every 20 ms, or fails after the timeout.
 *
 * @param condition Checked repeatedly; may be async.
 * @param options Timeout (ms), a description for the error, and a promise that ends the wait
 *   early when it settles (a process that exited).
 */
export async function waitFor(
  condition: () => boolean | Promise<boolean>,
  options: { timeout?: number; what?: string; exited?: Promise<unknown> } = {},
): Promise<void> {
  const deadline = Date.now() + (options.timeout ?? 10_000);
  let gone = false;
  options.exited?.then(() => (gone = true), () => (gone = true));
  while (!(await condition())) {
    if (gone) throw new Error(`process exited while waiting for ${options.what ?? "a condition"}`);
    if (Date.now() > deadline) {
      throw new Error(`timed out waiting for ${options.what ?? "a condition"}`);
    }
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}

/** A backend under the test's control that records what it received. */
export interface RecordingBackend {
  /** Its port. */
  readonly port: number;
  /** `http://127.0.0.1:<port>`. */
  readonly url: string;
  /** Requests it received. */
  readonly requests: { method: string; url: string; headers: Headers; bodyLength: number }[];
  /** Stops it. */
  readonly close: () => Promise<void>;
}

/**
 * Starts an in-test backend with a custom handler; every request is recorded first.
 *
 * @param handler Answers each request (its body is already consumed when `consume` is set).
 * @returns The backend.
 */
export function recordingBackend(
  handler: (req: Request) => Response | Promise<Response> = () => new Response("ok"),
): RecordingBackend {
  const requests: RecordingBackend["requests"] = [];
  const server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen: () => {} }, async (req) => {
    // A copy: an upgraded request's own headers cannot be read once the socket is handed over.
    const entry = {
      method: req.method,
      url: req.url,
      headers: new Headers(req.headers),
      bodyLength: 0,
    };
    requests.push(entry);
    return await handler(req);
  });
  return {
    port: server.addr.port,
    url: `http://127.0.0.1:${server.addr.port}`,
    requests,
    close: () => server.shutdown(),
  };
}

/**
 * A raw TCP backend that answers each connection with `script` (for malformed responses).
 *
 * @param script Given the request bytes read so far, returns bytes to write, or `null` to
 *   close without answering; called once per connection after the first read.
 * @returns Port and a close function.
 */
export function rawBackend(
  script: (request: string, conn: Deno.Conn) => Promise<void> | void,
): { port: number; url: string; close: () => Promise<void>; connections: () => number } {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const open = new Set<Deno.Conn>();
  const handlers = new Set<Promise<void>>();
  let accepted = 0;
  const loop = (async () => {
    for await (const conn of listener) {
      accepted++;
      open.add(conn);
      const work = (async () => {
        const buf = new Uint8Array(65536);
        const n = await conn.read(buf).catch(() => null);
        const text = n === null ? "" : new TextDecoder().decode(buf.subarray(0, n));
        await Promise.resolve(script(text, conn)).catch(() => {});
      })().finally(() => {
        open.delete(conn);
        try {
          conn.close();
        } catch {
          // Closed by the script.
        }
      });
      handlers.add(work);
      work.finally(() => handlers.delete(work));
    }
  })().catch(() => {});
  const port = (listener.addr as Deno.NetAddr).port;
  return {
    port,
    url: `http://127.0.0.1:${port}`,
    connections: () => accepted,
    close: async () => {
      listener.close();
      for (const conn of open) {
        try {
          conn.close();
        } catch {
          // Already closed.
        }
      }
      await loop;
      await Promise.all([...handlers]);
    },
  };
}

/**
 * Fetches with a fresh connection each time (no client keep-alive between tests) and returns
 * status and text.
 *
 * @param url The URL.
 * @param init Fetch options.
 * @returns Status, headers and body text.
 */
export async function get(
  url: string,
  init: RequestInit = {},
): Promise<{ status: number; headers: Headers; text: string }> {
  const client = Deno.createHttpClient({ poolMaxIdlePerHost: 0 });
  try {
    const res = await fetch(url, { ...init, client });
    return { status: res.status, headers: res.headers, text: await res.text() };
  } finally {
    client.close();
  }
}

/**
 * One goround worker in front of one backend, with the given front end and no access log: the
 * setup most end-to-end tests share.
 *
 * @param engine `goround` or `deno`.
 * @param backend The backend's URL.
 * @param extra More flags.
 * @returns The running goround.
 */
export function goroundFor(
  engine: string,
  backend: string,
  extra: readonly string[] = [],
): Promise<Goround> {
  return startGoround([
    "--engine",
    engine,
    "--backend",
    backend,
    "--workers",
    "1",
    "--access-log",
    "off",
    ...extra,
  ]);
}
