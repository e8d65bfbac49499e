/**
 * Passive health: a failure seen on a request counts against its backend, and `--max-fails` of
 * them within `--fail-window` eject it (for `--ejection-time`, longer each time in a row),
 * unless `--max-ejection-percent` of the pool is out already (`balance/ejection.ts`).
 *
 * @module
 */

import type { Backend, Config } from "../config/config.ts";
import { formatDuration } from "../config/duration.ts";
import { ejectionLimit, nextEjection } from "../balance/ejection.ts";
import { eject, type Pool, poolSize, recordFailure } from "../balance/pool.ts";
import { logLine } from "../log.ts";

/** Counts one passive failure of the backend in `slot` (`reason`: what failed). */
export type PassiveJudge = (slot: number, backend: Backend, reason: string) => void;

/**
 * Creates a worker's passive judge.
 *
 * @param pool The shared pool.
 * @param config Settings.
 * @param options `onEject`: told when this thread ejects a backend. @default {logs it}
 * @returns The judge.
 */
export function createPassiveJudge(
  pool: Pool,
  config: Config,
  options: { readonly onEject?: (slot: number, backend: Backend, reason: string) => void } = {},
): PassiveJudge {
  const onEject = options.onEject ??
    ((_slot: number, backend: Backend, reason: string) =>
      logLine(`backend ${backend.url} EJECTED ${reason}`));
  const window = formatDuration(config.failWindow);
  const ejectionTime = config.ejectionTime;
  const plan = (streak: number, lastEnd: number, now: number) =>
    nextEjection(streak, lastEnd, now, ejectionTime);
  return (slot: number, backend: Backend, reason: string) => {
    if (config.maxFails === 0) return;
    const count = recordFailure(pool, slot, config.failWindow);
    if (count < config.maxFails) return;
    const size = poolSize(pool);
    const limit = ejectionLimit(size, config.maxEjectionPercent);
    const why = `${count} failures in ${window} (last: ${reason})`;
    const now = Date.now();
    const outcome = eject(pool, slot, { limit, now, plan });
    if (outcome.kind === "ejected") {
      onEject(slot, backend, `for ${formatDuration(outcome.until - now)}: ${why}`);
    } else if (outcome.kind === "refused" && limit > 0 && count === config.maxFails) {
      logLine(
        `backend ${backend.url} not ejected: ${outcome.out} of ${size} backends are out already (--max-ejection-percent ${config.maxEjectionPercent}); ${why}`,
      );
    }
  };
}
