/**
 * Operational log lines (health transitions, errors) on stderr, one line each, timestamped.
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

function write(message: string): void {
  console.error(`${new Date().toISOString()} ${message}`);
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
 * Writes one timestamped line to stderr, unless the same line was written less than
 * {@linkcode REPEAT_WINDOW_MS} ago: then it is only counted.
 *
 * @param message The line, without a trailing newline.
 * @example
 * ```ts
 * logLine("backend http://localhost:8082 DOWN: connection refused");
 * // 2026-01-01T00:00:00.000Z backend http://localhost:8082 DOWN: connection refused
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
