/**
 * The access log: one line per request on stdout, in the combined format (Apache/nginx, with
 * goround's fields appended) or as JSON. Lines are buffered and written in batches, so logging
 * costs a string per request, not a write.
 *
 * @module
 */

import type { AccessLogFormat } from "../config/config.ts";
import type { Reply } from "../proxy/forward.ts";
import type { SessionEnd } from "../proxy/ws_bridge.ts";

/** What one line says. */
export interface AccessEntry {
  /** When the request arrived (epoch ms). */
  readonly time: number;
  /** The client's address. */
  readonly client: string;
  /** The method. */
  readonly method: string;
  /** The request target as received. */
  readonly target: string;
  /** `HTTP/1.1`, `HTTP/1.0` or `HTTP/2`. */
  readonly protocol: string;
  /** The status sent. */
  readonly status: number;
  /** Body bytes sent, or `null` when unknown. */
  readonly bytes: number | null;
  /** Time until the response was written (the head, for a streamed body), ms. */
  readonly durationMs: number;
  /** The backend that answered, or `null`. */
  readonly backend: string | null;
  /** Retries on other backends. */
  readonly retries: number;
  /** The request id. */
  readonly requestId: string;
  /** The `Referer` field, or `null`. */
  readonly referer: string | null;
  /** The `User-Agent` field, or `null`. */
  readonly userAgent: string | null;
  /** Why goround answered by itself (a refusal, no backend, a loop), or `null`. */
  readonly reason: string | null;
  /** For a WebSocket session: bytes each way and the close code, once it has ended. */
  readonly session?: SessionEnd;
  /** With routes: the route that matched (`null`: none did). */
  readonly route?: string | null;
  /** With routes: the pool the request went to (`null`: none). */
  readonly pool?: string | null;
}

/** What a reply tells the access log: who answered, after how many retries, and why goround
 * answered by itself. */
export type ReplyFacts = Pick<
  AccessEntry,
  "backend" | "retries" | "requestId" | "reason" | "route" | "pool"
>;

/**
 * The access-log facts of a reply, the same for both front ends.
 *
 * @param reply The reply sent.
 * @returns Its facts.
 */
export function replyFacts(reply: Reply): ReplyFacts {
  return {
    backend: reply.trace?.backend ?? null,
    retries: reply.trace?.retries ?? 0,
    requestId: reply.trace?.requestId ?? "-",
    reason: reply.kind === "local" && !reply.trace?.byRoute ? reply.text.trim() : null,
    ...(reply.trace?.route === undefined ? {} : {
      route: reply.trace.route,
      pool: reply.trace.pool ?? null,
    }),
  };
}

const MONTHS = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];

let cachedSecond = -1;
let cachedStamp = "";

/** `25/Nov/2026:19:45:00 +0000`, computed once per second. */
function stamp(time: number): string {
  const second = Math.floor(time / 1000);
  if (second !== cachedSecond) {
    const d = new Date(second * 1000);
    const two = (n: number) => String(n).padStart(2, "0");
    cachedStamp = `${two(d.getUTCDate())}/${MONTHS[d.getUTCMonth()]}/${d.getUTCFullYear()}:` +
      `${two(d.getUTCHours())}:${two(d.getUTCMinutes())}:${two(d.getUTCSeconds())} +0000`;
    cachedSecond = second;
  }
  return cachedStamp;
}

// deno-lint-ignore no-control-regex
const UNSAFE = /["\\\x00-\x1f\x7f]/g;

/** Escapes `"` and `\` and control characters for a quoted combined-log field. */
function quoted(text: string | null): string {
  if (text === null || text === "") return '"-"';
  return `"${text.replace(UNSAFE, (c) => `\\x${c.charCodeAt(0).toString(16).padStart(2, "0")}`)}"`;
}

/**
 * Formats a combined-format line: `client - - [time] "request" status bytes "referer" "agent"`,
 * then `rt=` (seconds), `backend=`, `retries=` and `id=`; `reason="…"` when goround answered
 * by itself, `route="…" pool=…` when there are routes, and `ws_in=`, `ws_out=`, `ws_close=` for a WebSocket session.
 *
 * @param entry The request.
 * @returns The line, without a newline.
 * @example
 * ```ts ignore
 * formatCombined(entry);
 * // 127.0.0.1 - - [25/Nov/2026:19:45:00 +0000] "GET / HTTP/1.1" 200 22 "-" "curl/8.0" rt=0.002 backend=http://localhost:8081 retries=0 id=5f0c…
 * ```
 */
export function formatCombined(entry: AccessEntry): string {
  const request = quoted(`${entry.method} ${entry.target} ${entry.protocol}`);
  return `${entry.client} - - [${stamp(entry.time)}] ${request} ${entry.status} ${
    entry.bytes ?? "-"
  } ` +
    `${quoted(entry.referer)} ${quoted(entry.userAgent)} rt=${
      (entry.durationMs / 1000).toFixed(3)
    } ` +
    `backend=${entry.backend ?? "-"} retries=${entry.retries} id=${entry.requestId}` +
    (entry.reason === null ? "" : ` reason=${quoted(entry.reason)}`) +
    (entry.route === undefined ? "" : ` route=${quoted(entry.route)} pool=${entry.pool ?? "-"}`) +
    (entry.session === undefined
      ? ""
      : ` ws_in=${entry.session.bytesIn} ws_out=${entry.session.bytesOut} ws_close=${entry.session.closeCode}`);
}

/**
 * Formats a JSON line.
 *
 * @param entry The request.
 * @returns The line, without a newline.
 */
export function formatJson(entry: AccessEntry): string {
  return JSON.stringify({
    time: new Date(entry.time).toISOString(),
    client: entry.client,
    method: entry.method,
    path: entry.target,
    protocol: entry.protocol,
    status: entry.status,
    bytes: entry.bytes,
    duration_ms: Math.round(entry.durationMs * 1000) / 1000,
    backend: entry.backend,
    retries: entry.retries,
    request_id: entry.requestId,
    referer: entry.referer,
    user_agent: entry.userAgent,
    reason: entry.reason,
    ...(entry.route === undefined ? {} : { route: entry.route, pool: entry.pool ?? null }),
    ...(entry.session === undefined ? {} : {
      ws_bytes_in: entry.session.bytesIn,
      ws_bytes_out: entry.session.bytesOut,
      ws_close_code: entry.session.closeCode,
    }),
  });
}

/** A buffered access log. */
export interface AccessLog {
  /** Adds a line. */
  readonly log: (entry: AccessEntry) => void;
  /** Writes out what is buffered. */
  readonly flush: () => Promise<void>;
}

const FLUSH_MS = 50;
const FLUSH_BYTES = 32 * 1024;

/**
 * Creates a buffered access log writing to `write`, or `null` for `off`.
 *
 * @param format `combined`, `json` or `off`.
 * @param write Writes bytes (e.g. to stdout).
 * @returns The log, or `null`.
 */
export function createAccessLog(
  format: AccessLogFormat,
  write: (bytes: Uint8Array) => Promise<unknown>,
): AccessLog | null {
  if (format === "off") return null;
  const formatLine = format === "json" ? formatJson : formatCombined;
  const encoder = new TextEncoder();
  let lines: string[] = [];
  let size = 0;
  let timer: ReturnType<typeof setTimeout> | null = null;
  let writing: Promise<void> = Promise.resolve();

  const flush = (): Promise<void> => {
    if (timer !== null) {
      clearTimeout(timer);
      timer = null;
    }
    if (lines.length === 0) return writing;
    const bytes = encoder.encode(lines.join("\n") + "\n");
    lines = [];
    size = 0;
    // Writes stay in order, one after another.
    writing = writing.then(() => write(bytes)).then(() => {}, () => {});
    return writing;
  };
  return {
    log: (entry) => {
      const line = formatLine(entry);
      lines.push(line);
      size += line.length;
      if (size >= FLUSH_BYTES) void flush();
      else if (timer === null) timer = setTimeout(() => void flush(), FLUSH_MS);
    },
    flush,
  };
}

/**
 * Writes all of `bytes` to stdout.
 *
 * @param bytes The bytes.
 */
export async function writeStdout(bytes: Uint8Array): Promise<void> {
  for (let at = 0; at < bytes.length;) at += await Deno.stdout.write(bytes.subarray(at));
}
