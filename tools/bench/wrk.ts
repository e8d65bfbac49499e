/**
 * The benchmark's workloads and the `wrk` runs that drive them: each scenario is one exact
 * HTTP/1.1 request, written to a file and sent by `wrk` over and over from a small Lua script,
 * whose `done()` hook prints the figures as one JSON line for {@linkcode parseWrkOutput}.
 *
 * The request is built here, byte for byte, rather than by `wrk`'s own `wrk.format()`, because
 * `wrk.format()` always adds `Content-Length` when there is a body, so it cannot send a chunked
 * upload; the same bytes also serve as a one-off probe of each target before the load starts.
 *
 * @module
 */

/** The workloads, in report order. */
export const SCENARIO_IDS = [
  "get",
  "close",
  "download-1m",
  "post-64k",
  "upload-1m",
  "upload-1m-chunked",
] as const;

/** One workload's name. */
export type ScenarioId = typeof SCENARIO_IDS[number];

/** A workload: one request, repeated by every `wrk` connection. */
export interface Scenario {
  /** Its name on the command line (`--scenarios`). */
  readonly id: ScenarioId;
  /** Its heading in the report. */
  readonly title: string;
  /** The request line's method. */
  readonly method: "GET" | "POST";
  /** The request target. */
  readonly path: string;
  /** Extra header fields, in order. */
  readonly headers: readonly (readonly [string, string])[];
  /** Request body size in bytes (0: none). */
  readonly bodySize: number;
  /** Whether the body is sent chunked (no `Content-Length`). */
  readonly chunked: boolean;
  /** Payload bytes per request for the MiB/s column (the body, up or down; 0: no column). */
  readonly payload: number;
}

const MIB = 1024 * 1024;

/** Size of each chunk of a chunked upload (as curl sends them). */
export const CHUNK_SIZE = 64 * 1024;

/** Every workload, in report order. */
export const SCENARIOS: readonly Scenario[] = [
  {
    id: "get",
    title: "Small GET, keep-alive",
    method: "GET",
    path: "/",
    headers: [],
    bodySize: 0,
    chunked: false,
    payload: 0,
  },
  {
    id: "close",
    title: "Small GET, a new connection per request (`Connection: close`)",
    method: "GET",
    path: "/",
    headers: [["Connection", "close"]],
    bodySize: 0,
    chunked: false,
    payload: 0,
  },
  {
    id: "download-1m",
    title: "1 MiB download (`GET /1m`)",
    method: "GET",
    path: "/1m",
    headers: [],
    bodySize: 0,
    chunked: false,
    payload: MIB,
  },
  {
    id: "post-64k",
    title: "64 KiB POST body, with `Content-Length`",
    method: "POST",
    path: "/upload",
    headers: [],
    bodySize: 64 * 1024,
    chunked: false,
    payload: 64 * 1024,
  },
  {
    id: "upload-1m",
    title: "1 MiB upload, with `Content-Length`",
    method: "POST",
    path: "/upload",
    headers: [],
    bodySize: MIB,
    chunked: false,
    payload: MIB,
  },
  {
    id: "upload-1m-chunked",
    title: "1 MiB upload, chunked (no `Content-Length`)",
    method: "POST",
    path: "/upload",
    headers: [],
    bodySize: MIB,
    chunked: true,
    payload: MIB,
  },
];

/**
 * Looks a scenario up by name.
 *
 * @param id The scenario's name.
 * @returns The scenario.
 */
export function scenario(id: ScenarioId): Scenario {
  const found = SCENARIOS.find((s) => s.id === id);
  if (!found) throw new RangeError(`"${id}" is not a scenario`);
  return found;
}

/**
 * Builds the exact bytes of a scenario's request: request line, `Host`, the scenario's fields,
 * then `Content-Length` and the body, or `Transfer-Encoding: chunked` and the body framed in
 * {@linkcode CHUNK_SIZE} chunks with the final zero-size chunk (RFC 9112 §7.1).
 *
 * @param scenario The workload.
 * @param host The `Host` field value, e.g. `127.0.0.1:8000`.
 * @returns The request, ready to send.
 * @example
 * ```ts
 * const bytes = buildRequest(scenario("get"), "127.0.0.1:8000");
 * // "GET / HTTP/1.1\r\nHost: 127.0.0.1:8000\r\n\r\n"
 * ```
 */
export function buildRequest(scenario: Scenario, host: string): Uint8Array<ArrayBuffer> {
  const lines = [`${scenario.method} ${scenario.path} HTTP/1.1`, `Host: ${host}`];
  for (const [name, value] of scenario.headers) lines.push(`${name}: ${value}`);
  const encoder = new TextEncoder();
  const parts: Uint8Array[] = [];
  if (scenario.bodySize === 0) {
    parts.push(encoder.encode(lines.join("\r\n") + "\r\n\r\n"));
  } else if (!scenario.chunked) {
    lines.push(`Content-Length: ${scenario.bodySize}`);
    parts.push(encoder.encode(lines.join("\r\n") + "\r\n\r\n"));
    parts.push(new Uint8Array(scenario.bodySize).fill(120)); // "x"
  } else {
    lines.push("Transfer-Encoding: chunked");
    parts.push(encoder.encode(lines.join("\r\n") + "\r\n\r\n"));
    for (let left = scenario.bodySize; left > 0; left -= CHUNK_SIZE) {
      const size = Math.min(CHUNK_SIZE, left);
      parts.push(encoder.encode(`${size.toString(16)}\r\n`));
      parts.push(new Uint8Array(size).fill(120));
      parts.push(encoder.encode("\r\n"));
    }
    parts.push(encoder.encode("0\r\n\r\n"));
  }
  const out = new Uint8Array(parts.reduce((sum, part) => sum + part.length, 0));
  let offset = 0;
  for (const part of parts) {
    out.set(part, offset);
    offset += part.length;
  }
  return out;
}

/** The marker before the JSON line the Lua `done()` hook prints. */
export const RESULT_MARKER = "GOROUND_BENCH_RESULT";

/**
 * The Lua script that makes `wrk` send the request stored in a file, unchanged, on every
 * connection, and print its figures as JSON when done. Replacing `wrk.format` (rather than
 * defining `request()`) keeps the request static, so `wrk` builds it once per thread.
 *
 * @param requestPath The file holding the request's bytes (see {@linkcode buildRequest}).
 * @returns The script's text.
 */
export function luaScript(requestPath: string): string {
  return `-- Generated by goround's tools/bench.ts: send the request in the file, report as JSON.
local file = assert(io.open(${JSON.stringify(requestPath)}, "rb"))
local raw = file:read("*a")
file:close()
wrk.format = function() return raw end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    "${RESULT_MARKER} {\\"requests\\":%d,\\"duration_us\\":%d,\\"bytes\\":%d," ..
    "\\"connect\\":%d,\\"read\\":%d,\\"write\\":%d,\\"timeout\\":%d,\\"status\\":%d," ..
    "\\"p50_us\\":%d,\\"p90_us\\":%d,\\"p99_us\\":%d}\\n",
    summary.requests, summary.duration, summary.bytes,
    e.connect, e.read, e.write, e.timeout, e.status,
    latency:percentile(50), latency:percentile(90), latency:percentile(99)))
end
`;
}

/** Error counts of one `wrk` run, as `wrk` reports them. */
export interface WrkErrors {
  /** Failed connection attempts. */
  readonly connect: number;
  /** Failed reads, including a connection closed before a response was complete. */
  readonly read: number;
  /** Failed writes. */
  readonly write: number;
  /** Responses slower than `wrk --timeout`. */
  readonly timeout: number;
  /** Responses with a status of 400 or more ("Non-2xx or 3xx responses"). */
  readonly status: number;
}

/** The figures of one `wrk` run. */
export interface WrkResult {
  /** Responses received. */
  readonly requests: number;
  /** Length of the run, seconds. */
  readonly seconds: number;
  /** Response bytes read (headers and bodies). */
  readonly bytes: number;
  /** Latency percentiles, milliseconds. */
  readonly p50: number;
  /** 90th percentile latency, ms. */
  readonly p90: number;
  /** 99th percentile latency, ms. */
  readonly p99: number;
  /** Error counts. */
  readonly errors: WrkErrors;
}

/**
 * Finds the JSON line of {@linkcode luaScript}'s `done()` hook in `wrk`'s output.
 *
 * @param stdout Everything `wrk` printed.
 * @returns The figures.
 * @throws {SyntaxError} When the line is missing or malformed.
 */
export function parseWrkOutput(stdout: string): WrkResult {
  const line = stdout.split("\n").find((l) => l.startsWith(RESULT_MARKER + " "));
  if (line === undefined) throw new SyntaxError("wrk printed no result line");
  const raw = JSON.parse(line.slice(RESULT_MARKER.length + 1)) as Record<string, unknown>;
  const number = (name: string): number => {
    const value = raw[name];
    if (typeof value !== "number" || !Number.isFinite(value)) {
      throw new SyntaxError(`wrk result: "${name}" is ${JSON.stringify(value)}: expected a number`);
    }
    return value;
  };
  return {
    requests: number("requests"),
    seconds: number("duration_us") / 1e6,
    bytes: number("bytes"),
    p50: number("p50_us") / 1000,
    p90: number("p90_us") / 1000,
    p99: number("p99_us") / 1000,
    errors: {
      connect: number("connect"),
      read: number("read"),
      write: number("write"),
      timeout: number("timeout"),
      status: number("status"),
    },
  };
}

/**
 * The total of a run's errors: socket errors (connect, read, write, timeout) and responses with
 * a status of 400 or more.
 *
 * @param errors The counts.
 * @returns Their sum.
 */
export function totalErrors(errors: WrkErrors): number {
  return errors.connect + errors.read + errors.write + errors.timeout + errors.status;
}

/** How to run `wrk`. */
export interface WrkOptions {
  /** `wrk -t`. */
  readonly threads: number;
  /** `wrk -c`. */
  readonly connections: number;
  /** Length of the run, whole seconds (`wrk -d`). */
  readonly seconds: number;
  /** Seconds after which a response counts as a timeout error (`wrk --timeout`). */
  readonly timeout: number;
  /** Stops `wrk` early (it is killed). */
  readonly signal?: AbortSignal;
  /** The cores `wrk` may run on (`taskset -c`), e.g. `1`; unset: any. */
  readonly cpus?: string;
}

/**
 * Runs `wrk --latency` with a script from {@linkcode luaScript} against a URL.
 *
 * @param url Where to send the load, e.g. `http://127.0.0.1:8000/`.
 * @param scriptPath The Lua script.
 * @param options Threads, connections, duration.
 * @returns The figures.
 * @throws {Error} When `wrk` fails or prints no result.
 */
export async function runWrk(
  url: string,
  scriptPath: string,
  options: WrkOptions,
): Promise<WrkResult> {
  const args = [
    "-t",
    String(options.threads),
    "-c",
    String(options.connections),
    "-d",
    `${options.seconds}s`,
    "--timeout",
    `${options.timeout}s`,
    "--latency",
    "-s",
    scriptPath,
    url,
  ];
  const output = await new Deno.Command(options.cpus ? "taskset" : "wrk", {
    args: options.cpus ? ["-c", options.cpus, "wrk", ...args] : args,
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
    ...(options.signal ? { signal: options.signal } : {}),
  }).output();
  options.signal?.throwIfAborted();
  const stdout = new TextDecoder().decode(output.stdout);
  const stderr = new TextDecoder().decode(output.stderr).trim();
  try {
    return parseWrkOutput(stdout);
  } catch (error) {
    if (!(error instanceof SyntaxError)) throw error;
    const detail = stderr || stdout.trim().split("\n").at(-1) || "no output";
    throw new Error(`wrk ${args.join(" ")} failed (exit ${output.code}): ${detail}`);
  }
}
