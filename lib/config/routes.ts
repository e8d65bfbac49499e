/**
 * Pools and routes as the config file declares them: several applications behind one goround.
 * A pool is a named set of backends with its own settings (a subset of the flags, see
 * {@linkcode POOL_FLAGS}); a route matches requests by host, path prefix, method and a header,
 * and forwards them to a pool, redirects them, or answers them itself. The flags-only form is one
 * implicit pool ({@linkcode DEFAULT_POOL}) and no routes: every request goes to it.
 *
 * @module
 */

import type { Config } from "./config.ts";

/** The name of the one pool of a flags-only config (and of `GET /status` for it). */
export const DEFAULT_POOL = "default";

/** The flags a pool may set for itself in the config file; the others are process-wide. */
export const POOL_FLAGS = [
  "backends",
  "discover",
  "discover-interval",
  "health-interval",
  "health-timeout",
  "health-path",
  "health-rise",
  "health-fall",
  "health-fast-interval",
  "connect-timeout",
  "response-timeout",
  "retries",
  "retry-statuses",
  "max-fails",
  "fail-window",
  "fail-statuses",
  "max-ejection-percent",
  "ejection-time",
  "algorithm",
  "hash-key",
  "sticky",
  "slow-start",
  "max-conns",
  "queue-timeout",
  "panic",
] as const;

/** A named pool: its own backends and the settings it overrides. */
export interface PoolSpec {
  /** Its name: letters, digits, `-` and `_`. */
  readonly name: string;
  /** The settings it sets itself (every other field comes from the top level). */
  readonly settings: Partial<Config>;
}

/** Header rules: fields to set (replacing any), to add, and to remove. Names lowercased. */
export interface HeaderRules {
  /** Fields replaced (or added when absent). */
  readonly set: readonly (readonly [string, string])[];
  /** Fields added beside any of the same name (requests only). */
  readonly add: readonly (readonly [string, string])[];
  /** Fields removed. */
  readonly remove: readonly string[];
}

/** What a route does with a request it matches. */
export type RouteAction =
  | {
    /** Forward to a pool. */
    readonly kind: "pool";
    /** The pool's name. */
    readonly pool: string;
    /** Taken off the start of the path (`""`: none). */
    readonly stripPrefix: string;
    /** Put before the path (after the strip; `""`: none). */
    readonly addPrefix: string;
  }
  | {
    /** Answer with a redirect. */
    readonly kind: "redirect";
    /** 301, 302, 303, 307 or 308. */
    readonly status: number;
    /** The `Location`; `{host}` and `{uri}` (path and query) are filled in. */
    readonly location: string;
  }
  | {
    /** Answer with a fixed response. */
    readonly kind: "respond";
    /** The status, 200-599. */
    readonly status: number;
    /** The body (text/plain). */
    readonly body: string;
  };

/** One route of the config file. */
export interface Route {
  /** Its position in `routes` (0-based), by which logs, metrics and errors name it. */
  readonly index: number;
  /** A name for logs and metrics (`"name"` key), else `routes[index]`. */
  readonly name: string;
  /** Exact host (lowercase, no port) or `*.suffix`; `null`: any host. */
  readonly host: string | null;
  /** Path prefix, starting with `/` (`"/"`: any path). */
  readonly path: string;
  /** Method (uppercase), or `null`: any. */
  readonly method: string | null;
  /** A field that must have this exact value (name lowercased), or `null`. */
  readonly header: readonly [string, string] | null;
  /** What it does. */
  readonly action: RouteAction;
  /** Rules for the request sent to the pool. */
  readonly requestHeaders: HeaderRules;
  /** Rules for the response sent to the client (`add` unused). */
  readonly responseHeaders: HeaderRules;
}

/** No header rules. */
export const NO_RULES: HeaderRules = { set: [], add: [], remove: [] };
