/**
 * What a reload (`SIGHUP`) changes. Given the running settings and the ones just read (with the
 * PEM files they name), {@linkcode planReload} says which settings take effect now, which wait
 * for a restart, and which settings to run with from now on; {@linkcode describeReload} writes
 * the reload's one log line. Every setting in `FLAGS` has a rule here (a test keeps it so).
 * Pure: no I/O.
 *
 * @module
 */

import { type Config, FLAGS, isLoopback } from "./config.ts";

/** When a changed setting takes effect. */
export type Effect = "reload" | "restart";

/** How one setting reloads. */
export interface ReloadRule {
  /** The `Config` fields the setting sets. */
  readonly fields: readonly (keyof Config)[];
  /** The PEM text read from the file the setting names, if it names one. */
  readonly pem?: "cert" | "key" | "ca";
  /** The name the log line uses (`backend` and `backends` both set the pool). */
  readonly shownAs?: string;
  /** When a change takes effect (it may depend on the other settings). */
  readonly effect: Effect | ((running: Config, next: Config) => Effect);
}

const onReload = (...fields: (keyof Config)[]): ReloadRule => ({ fields, effect: "reload" });
const onRestart = (...fields: (keyof Config)[]): ReloadRule => ({ fields, effect: "restart" });

/** Turning TLS on or off changes what the port speaks: that waits for a restart. Changing the
 * certificate or key of a TLS listener takes effect now. */
function tlsEffect(running: Config, next: Config): Effect {
  return (running.tlsCert === "") === (next.tlsCert === "") ? "reload" : "restart";
}

/** The admin listener stays where it is until a restart; off loopback it must keep a token. */
function adminTokenEffect(running: Config, next: Config): Effect {
  const exposed = running.admin !== null && !isLoopback(running.admin.hostname);
  return exposed && next.adminToken === "" ? "restart" : "reload";
}

/**
 * The reload rule of every setting, by flag name. Listeners (`listen`, `admin`,
 * `redirect-http`) and the thread count wait for a restart: a bind can fail, and a reload that
 * half applies would be worse than one that waits. Everything else takes effect now.
 */
export const RELOAD_RULES: Readonly<Record<string, ReloadRule>> = {
  listen: onRestart("listen"),
  backend: { ...onReload("backends"), shownAs: "backends" },
  backends: onReload("backends"),
  discover: onReload("discover"),
  "discover-interval": onReload("discoverInterval"),
  "discover-nameserver": onReload("discoverNameServer"),
  config: onRestart("configFile"),
  "health-interval": onReload("healthInterval"),
  "health-timeout": onReload("healthTimeout"),
  "health-path": onReload("healthPath"),
  "health-rise": onReload("healthRise"),
  "health-fall": onReload("healthFall"),
  "health-fast-interval": onReload("healthFastInterval"),
  "connect-timeout": onReload("connectTimeout"),
  "response-timeout": onReload("responseTimeout"),
  retries: onReload("retries"),
  "retry-statuses": onReload("retryStatuses"),
  "max-fails": onReload("maxFails"),
  "fail-window": onReload("failWindow"),
  algorithm: onReload("algorithm"),
  "hash-key": onReload("hashKey"),
  sticky: onReload("sticky"),
  "sticky-key": onReload("stickyKey"),
  "slow-start": onReload("slowStart"),
  "max-conns": onReload("maxConns"),
  "queue-timeout": onReload("queueTimeout"),
  panic: onReload("panic"),
  "trusted-proxies": onReload("trustedProxies"),
  workers: onRestart("workers"),
  engine: onReload("engine"),
  "header-timeout": onReload("headerTimeout"),
  "keepalive-timeout": onReload("keepAliveTimeout"),
  "drain-timeout": onReload("drainTimeout"),
  "tls-cert": { fields: ["tlsCert"], pem: "cert", effect: tlsEffect },
  "tls-key": { fields: ["tlsKey"], pem: "key", effect: tlsEffect },
  "redirect-http": onRestart("redirectHttp"),
  "backend-ca": { fields: ["backendCa"], pem: "ca", effect: "reload" },
  admin: onRestart("admin"),
  "admin-token": { fields: ["adminToken"], effect: adminTokenEffect },
  "access-log": onReload("accessLog"),
  "expose-backend": onReload("exposeBackend"),
  "admin-hosts": onReload("adminHosts"),
  "fail-statuses": onReload("failStatuses"),
  "max-ejection-percent": onReload("maxEjectionPercent"),
  "ejection-time": onReload("ejectionTime"),
  "underscore-headers": onReload("underscoreHeaders"),
  "log-format": onReload("logFormat"),
  // It acts once, at start: a reload that changes it names it as waiting for a restart.
  takeover: onRestart("takeover"),
  "send-timeout": onReload("sendTimeout"),
  "request-buffer": onReload("requestBuffer"),
  "request-buffer-total": onReload("requestBufferTotal"),
  "body-timeout": onReload("bodyTimeout"),
  "body-min-rate": onReload("bodyMinRate"),
};

/** What a reload does. */
export interface ReloadPlan {
  /** The settings to run with: the new ones, but those that wait for a restart keep their
   * running values. */
  readonly config: Config;
  /** Settings that changed and take effect now, in `--help` order. */
  readonly applied: readonly string[];
  /** Settings that changed and take effect on restart. */
  readonly onRestart: readonly string[];
  /** Whether the DNS discovery loop must restart (a `discover*` setting changed). */
  readonly rediscover: boolean;
}

function valueOf(rule: ReloadRule, config: Config): string {
  const fields = rule.fields.map((field) => config[field]);
  return JSON.stringify(rule.pem ? [fields, config.pems?.[rule.pem] ?? ""] : fields);
}

function keep(rule: ReloadRule, config: Config, running: Config): Config {
  const kept: Record<string, unknown> = { ...config };
  for (const field of rule.fields) kept[field] = running[field];
  if (rule.pem) {
    const pems = { cert: "", key: "", ca: "", ...config.pems };
    kept.pems = { ...pems, [rule.pem]: running.pems?.[rule.pem] ?? "" };
  }
  return kept as unknown as Config;
}

/** A flag without a rule (one added since) waits for a restart: its field, by the usual naming
 * (`admin-hosts` sets `adminHosts`), is kept at its running value. */
function fallbackRule(flag: string): ReloadRule {
  const field = flag.replace(/-(\w)/g, (_, c: string) => c.toUpperCase()) as keyof Config;
  return onRestart(field);
}

/** Settings whose values the running process owns: DNS owns the pool while discovery is on; an
 * empty sticky key means the random one picked at start, so cookies stay valid. */
function owned(running: Config, next: Config): Config {
  return {
    ...next,
    ...(next.discover !== null ? { backends: running.backends } : {}),
    ...(next.stickyKey === "" ? { stickyKey: running.stickyKey } : {}),
    pools: next.pools.map((pool) => {
      const was = running.pools.find((p) => p.name === pool.name);
      // A pool that follows DNS keeps the backends DNS gave it, if it ran before.
      if (!pool.settings.discover || !was?.settings.backends) return pool;
      return { ...pool, settings: { ...pool.settings, backends: was.settings.backends } };
    }),
  };
}

/**
 * Decides what a reload changes.
 *
 * @param running The settings goround runs with.
 * @param read The settings just read (config file, flags, environment, PEM files).
 * @returns What to run with, what changed now and what waits for a restart.
 * @example
 * ```ts ignore
 * const plan = planReload(sup.config, next);
 * plan.onRestart; // ["workers"] when only the worker count changed
 * ```
 */
export function planReload(running: Config, read: Config): ReloadPlan {
  const target = owned(running, read);
  let config = target;
  const applied = new Set<string>();
  const waiting = new Set<string>();
  for (const flag of FLAGS) {
    const rule = RELOAD_RULES[flag.name] ?? fallbackRule(flag.name);
    if (valueOf(rule, target) === valueOf(rule, running)) continue;
    const name = rule.shownAs ?? flag.name;
    const effect = typeof rule.effect === "function" ? rule.effect(running, target) : rule.effect;
    if (effect === "reload") {
      applied.add(name);
    } else {
      waiting.add(name);
      config = keep(rule, config, running);
    }
  }
  // Pools and routes live only in the config file; they change on reload like the flags.
  for (const field of ["pools", "routes"] as const) {
    if (JSON.stringify(target[field]) !== JSON.stringify(running[field])) applied.add(field);
  }
  const rediscover = ["discover", "discover-interval", "discover-nameserver", "pools"]
    .some((name) => applied.has(name));
  return { config, applied: [...applied], onRestart: [...waiting], rediscover };
}

/**
 * Whether a worker must start a new front end (a second listener on the same port, then the
 * old one shut down): the engine or the TLS certificate or key changed. Everything else a
 * front end uses changes in place.
 *
 * @param running The worker's settings.
 * @param next The new settings.
 * @returns Whether to replace the front end.
 */
export function needsNewFront(running: Config, next: Config): boolean {
  return running.engine !== next.engine || running.pems?.cert !== next.pems?.cert ||
    running.pems?.key !== next.pems?.key;
}

/**
 * The reload's one log line.
 *
 * @param plan The plan that was applied.
 * @param outcome The config file (`""` for none: the flags and the files they name were
 *   re-read), the pool afterwards, and what a worker could not apply.
 * @returns The line, e.g. `reloaded goround.json: 3 backends, added http://c:1; changed:
 *   access-log; changed, takes effect on restart: workers`.
 */
export function describeReload(
  plan: ReloadPlan,
  outcome: {
    file: string;
    backends: number;
    added: readonly string[];
    removed: readonly string[];
    problems?: readonly string[];
  },
): string {
  const parts = [
    `reloaded${outcome.file ? ` ${outcome.file}` : ""}: ${outcome.backends} backend${
      outcome.backends === 1 ? "" : "s"
    }` +
    (outcome.added.length ? `, added ${outcome.added.join(", ")}` : "") +
    (outcome.removed.length ? `, removed ${outcome.removed.join(", ")}` : ""),
  ];
  if (plan.applied.length) parts.push(`changed: ${plan.applied.join(", ")}`);
  if (plan.onRestart.length) {
    parts.push(`changed, takes effect on restart: ${plan.onRestart.join(", ")}`);
  }
  if (!plan.applied.length && !plan.onRestart.length) parts.push("no change");
  parts.push(...(outcome.problems ?? []));
  return parts.join("; ");
}
