/**
 * Operational log lines (health transitions, errors) on stderr, one line each, timestamped,
 * with a level (`info`, `warn`, `error`), as text or, with `--log-format json`, as one JSON
 * object per line with the backend, client and reason a line names as fields of their own.
 *
 * A line repeated within a second is not written again: it is counted, and once the second is
 * over one `(repeated N times)` line says how often it came. A flood (a client resetting
 * thousands of connections, a loop) so writes about one line a second per distinct message
 * per thread, not one per event.
 *
 * @module
 */

/** How long a written line suppresses its repeats, ms. */
export const REPEAT_WINDOW_MS = 1000;

/** Distinct lines tracked at once; past that the oldest is settled early. */
const TRACKED = 256;

/** A line written within the window, and how often it came again since. */
interface Recent {
  /** When its window ends (epoch ms). */
  until: number;
  /** Repeats not written. */
  repeats: number;
}

/** Lines of the current windows, oldest first (a `Map` keeps insertion order). */
const recent = new Map<string, Recent>();

/** How bad a line is. */
export type Level = "info" | "warn" | "error";

let format: "text" | "json" = "text";

/**
 * Sets the format of this thread's lines (each worker and the main thread have their own).
 *
 * @param next `text` or `json`.
 */
export function setLogFormat(next: "text" | "json"): void {
  format = next;
}

const ERROR = /internal error|crashed|reload failed|cannot|failed to start/i;
const WARN =
  / DOWN|EJECTED|not ejected|loop detected|panic:|too slowly|stopped reading|went away|not retried|accept failed|broke off|closed the connection|error:|is not a setting|unknown|self-connect|drain deadline/i;

/**
 * The level of a line, from what it says: a bug or a failed reload is an error; a backend taken
 * out, a refused or failed request, a client cut off, a typo is a warning; the rest is info.
 *
 * @param message The line.
 * @returns Its level.
 * @example
 * ```ts
 * import { levelOf } from "./log.ts";
 * levelOf("backend http://a:1 DOWN: connection refused"); // "warn"
 * ```
 */
export function levelOf(message: string): Level {
  if (ERROR.test(message)) return "error";
  return WARN.test(message) ? "warn" : "info";
}

/**
 * The fields a JSON line carries besides its message: the backend and the client it names, and
 * the reason (what follows its first `: `).
 *
 * @param message The line.
 * @returns The fields found.
 */
export function fieldsOf(message: string): Record<string, string> {
  const fields: Record<string, string> = {};
  const backend = /\bbackend (https?:\/\/[^\s:/]+(?::\d+)?)/.exec(message);
  if (backend) fields.backend = backend[1]!;
  const pool = /\(pool ([\w-]+)\)/.exec(message);
  if (pool) fields.pool = pool[1]!;
  const client = /\bclient (\S+?)[: ]/.exec(message);
  if (client) fields.client = client[1]!;
  const colon = message.indexOf(": ");
  if (colon >= 0) fields.reason = message.slice(colon + 2);
  return fields;
}

/**
 * Writes a line of the startup banner to stderr: as it is in the text format (the brief's
 * `Load Balancer started at :8000` is its first line), as an `info` object in the JSON one.
 *
 * @param line The line.
 */
export function bannerLine(line: string): void {
  console.error(
    format === "json"
      ? JSON.stringify({ time: new Date().toISOString(), level: "info", msg: line })
      : line,
  );
}

function write(message: string): void {
  const time = new Date().toISOString();
  const level = levelOf(message);
  console.error(
    format === "json"
      ? JSON.stringify({ time, level, msg: message, ...fieldsOf(message) })
      : `${time} ${level} ${message}`,
  );
}

/** Ends one line's window: says how often it was repeated, and keeps suppressing it for
 * another window if it was (so a steady flood is one line a second). */
function settle(message: string, entry: Recent, now: number): void {
  recent.delete(message);
  if (entry.repeats === 0) return;
  write(`${message} (repeated ${entry.repeats} times)`);
  recent.set(message, { until: now + REPEAT_WINDOW_MS, repeats: 0 });
}

/**
 * Writes the `(repeated N times)` lines of every window that has ended. {@linkcode logLine}
 * does it too; a thread that logs calls this now and then (workers do, from a timer) so the
 * count of a flood that stopped is not held back until the next line.
 *
 * @param now The time (epoch ms); `Infinity` ends every window (before exiting).
 */
export function flushRepeats(now: number = Date.now()): void {
  for (const [message, entry] of recent) {
    if (entry.until > now) return; // windows end in the order they began
    settle(message, entry, now);
  }
}

/**
 * Writes one timestamped line to stderr at once, never held back as a repeat: for the outcome of
 * what an operator asked for (a reload), which they read right after asking.
 *
 * @param message The line, without a trailing newline.
 */
export function logOutcome(message: string): void {
  if (recent.size > 0) flushRepeats(Date.now());
  write(message);
}

/**
 * Writes one timestamped line to stderr, unless the same line was written less than
 * {@linkcode REPEAT_WINDOW_MS} ago: then it is only counted.
 *
 * @param message The line, without a trailing newline.
 * @example
 * ```ts
 * logLine("backend http://localhost:8082 DOWN: connection refused");
 * // 2026-01-01T00:00:00.000Z warn backend http://localhost:8082 DOWN: connection refused
 * ```
 */
export function logLine(message: string): void {
  const now = Date.now();
  if (recent.size > 0) flushRepeats(now);
  const entry = recent.get(message);
  if (entry !== undefined) {
    entry.repeats++;
    return;
  }
  write(message);
  recent.set(message, { until: now + REPEAT_WINDOW_MS, repeats: 0 });
  if (recent.size > TRACKED) {
    const [oldest, first] = recent.entries().next().value!;
    settle(oldest, first, now);
    recent.delete(oldest);
  }
}
