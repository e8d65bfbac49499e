/**
 * goround's settings: the {@linkcode Config} they make, and every flag that sets one of its
 * fields ({@linkcode FLAGS}), with its `GOROUND_*` environment twin, its key in a JSON config
 * file, its kind of value and its default. Reading them is in `command_line.ts`, the value
 * parsers in `values.ts`, the checks across settings in `rules.ts`, the texts in `help.ts`.
 *
 * @module
 */

import type { Cidr } from "./cidr.ts";
import type { DiscoverySpec, NameServer } from "./discovery_spec.ts";
import type { PoolSpec, Route } from "./routes.ts";

/** The names accepted by `--algorithm` (the policies are in `balance/selection.ts`). */
export const ALGORITHMS = ["round-robin", "weighted", "least-conn", "p2c", "hash"] as const;

/** A policy name. */
export type Algorithm = typeof ALGORITHMS[number];

/** Where the proxy listens. */
export interface Listen {
  /** Interface to bind (`0.0.0.0` for `:8000`). */
  readonly hostname: string;
  /** TCP port; 0 picks a free one. */
  readonly port: number;
}

/** One backend, as configured. */
export interface Backend {
  /** The normalised origin, e.g. `http://localhost:8081`; also its name in logs. */
  readonly url: string;
  /** Host to connect to (IPv6 without brackets). */
  readonly hostname: string;
  /** TCP port. */
  readonly port: number;
  /** Relative share for weighted policies. @default {1} */
  readonly weight: number;
  /** Whether goround talks HTTPS to it (`https://` URLs). @default {false} */
  readonly tls: boolean;
}

/** The front ends `--engine` chooses between. */
export const ENGINES = ["goround", "deno"] as const;

/** A front end. */
export type Engine = typeof ENGINES[number];

/** The validated settings; a plain record, so it can be posted to workers. */
export interface Config {
  /** Proxy listener. @default {":8000"} */
  readonly listen: Listen;
  /** The pool, in round-robin order. @default {localhost:8081, 8082, 8083} */
  readonly backends: readonly Backend[];
  /** Time between active health probes of one backend, ms. @default {10000} */
  readonly healthInterval: number;
  /** Time a probe may take before it counts as failed, ms. @default {2000} */
  readonly healthTimeout: number;
  /** Path of an HTTP health check; empty for a TCP connect check. @default {""} */
  readonly healthPath: string;
  /** Consecutive passed probes that bring a backend back up. @default {1} */
  readonly healthRise: number;
  /** Consecutive failed probes that take a backend down. @default {1} */
  readonly healthFall: number;
  /** Time to establish a backend connection, ms. @default {2000} */
  readonly connectTimeout: number;
  /** Time from sending a request to the backend's response headers, ms. @default {30000} */
  readonly responseTimeout: number;
  /** Extra attempts on other backends after a failure; -1 means pool size - 1. @default {-1} */
  readonly retries: number;
  /** Backend statuses retried elsewhere (idempotent requests); not counted as failures unless
   * also in `failStatuses`. @default {[500, 502, 503, 504]} */
  readonly retryStatuses: readonly number[];
  /** Passive failures (resets, timeouts, bad responses, `failStatuses`) within `failWindow`
   * that eject a backend for `ejectionTime` (0: never). @default {3} */
  readonly maxFails: number;
  /** Window for `maxFails`, ms. @default {10000} */
  readonly failWindow: number;
  /** Serving worker threads. @default {the number of cores} */
  readonly workers: number;
  /** Peers whose `X-Forwarded-For` is kept and appended to. @default {none} */
  readonly trustedProxies: readonly Cidr[];
  /** Selection policy. @default {"round-robin"} */
  readonly algorithm: Algorithm;
  /** Front end: goround's own HTTP/1.1 server, or `Deno.serve`. @default {"goround"} */
  readonly engine: Engine;
  /** Time a client has to send a request head, ms. @default {30000} */
  readonly headerTimeout: number;
  /** Time an idle client keep-alive connection is kept, ms. @default {60000} */
  readonly keepAliveTimeout: number;
  /** Longest wait for in-flight requests on SIGTERM/SIGINT, ms. @default {30000} */
  readonly drainTimeout: number;
  /** The JSON config file the settings were read from (re-read on SIGHUP), or `""`. */
  readonly configFile: string;
  /** Admin listener, or `null` when off. @default {127.0.0.1:9000} */
  readonly admin: Listen | null;
  /** Bearer token the admin API requires (required off loopback), or `""`. @default {""} */
  readonly adminToken: string;
  /** Access log format on stdout. @default {"combined"} */
  readonly accessLog: AccessLogFormat;
  /** Whether responses carry `X-Goround-Backend`. @default {false} */
  readonly exposeBackend: boolean;
  /** What the `hash` policy hashes. @default {{ kind: "ip" }} */
  readonly hashKey: HashKey;
  /** Requests in flight at which a backend takes no more (0: no limit). @default {0} */
  readonly maxConns: number;
  /** How long a request may wait for a backend below `maxConns`, ms. @default {1000} */
  readonly queueTimeout: number;
  /** Ramp-up time after a backend comes back up, ms (0: none). @default {0} */
  readonly slowStart: number;
  /** Sticky sessions: `cookie` or `off`. @default {"off"} */
  readonly sticky: "cookie" | "off";
  /** Key signing sticky cookies (`""`: a random one per start). @default {""} */
  readonly stickyKey: string;
  /** Probe interval while a backend is down, ms (0: the normal interval). @default {500} */
  readonly healthFastInterval: number;
  /** Whether to try every backend when all look down, instead of answering 503. @default {true} */
  readonly panic: boolean;
  /** PEM certificate file for TLS termination, or `""`. @default {""} */
  readonly tlsCert: string;
  /** PEM private key file for TLS termination, or `""`. @default {""} */
  readonly tlsKey: string;
  /** A plain-HTTP listener that redirects to HTTPS, or `null`. @default {null} */
  readonly redirectHttp: Listen | null;
  /** PEM file of the CA that signs HTTPS backends' certificates, or `""` (system roots). */
  readonly backendCa: string;
  /** DNS discovery of the backends (`--discover`), or `null`. @default {null} */
  readonly discover: DiscoverySpec | null;
  /** Time between DNS resolutions, ms. @default {10000} */
  readonly discoverInterval: number;
  /** The DNS server discovery asks, or `null` for the system's. @default {null} */
  readonly discoverNameServer: NameServer | null;
  /** The certificate, key and backend CA as read from those files (at start and on reload). */
  readonly pems?: { readonly cert: string; readonly key: string; readonly ca: string };
  /** More names (`host` or `host:port`, lowercase) the admin listener answers to, besides its
   * address, `localhost`, `127.0.0.1` and `[::1]`. @default {[]} */
  readonly adminHosts: readonly string[];
  /** Backend statuses that count toward `maxFails` (HAProxy's `observe layer7`). @default {[]} */
  readonly failStatuses: readonly number[];
  /** Share of the pool passive verdicts may eject at once, percent. @default {50} */
  readonly maxEjectionPercent: number;
  /** Base time a passive ejection lasts (× ejections in a row, at most 10×), ms.
   * @default {30000} */
  readonly ejectionTime: number;
  /** Request fields whose name has a `_`: dropped before forwarding, or kept. @default {"drop"} */
  readonly underscoreHeaders: UnderscoreHeaders;
  /** This goround process's random id, named in the `Via` it adds (`proxy/via.ts`); not a setting:
   * `""` until the supervisor makes one at start, then kept by every reload. */
  readonly instanceId: string;
  /** Whether to take over `listen` from the goround whose admin API is at `admin` (an upgrade
   * or restart without a gap). @default {false} */
  readonly takeover: boolean;
  /** Longest wait for a write to a client to make progress, ms. @default {60000} */
  readonly sendTimeout: number;
  /** Request body bytes read into memory before a backend is contacted (0: none, every body
   * streams). @default {1048576} */
  readonly requestBuffer: number;
  /** Request body bytes all workers may hold in memory together. @default {67108864} */
  readonly requestBufferTotal: number;
  /** Longest wait for more of a request body, and the window of `bodyMinRate`, ms.
   * @default {60000} */
  readonly bodyTimeout: number;
  /** Least bytes per second a request body must average over each `bodyTimeout` of waiting
   * (0: no minimum). @default {500} */
  readonly bodyMinRate: number;
  /** The operational log's format on stderr: `text` or `json` lines. @default {"text"} */
  readonly logFormat: LogFormat;
  /** Named pools from the config file's `pools`; empty for the flags-only form, whose one pool
   * is `backends` with the top-level settings. @default {[]} */
  readonly pools: readonly PoolSpec[];
  /** Routes from the config file's `routes`, in file order; empty: every request goes to the
   * one pool. @default {[]} */
  readonly routes: readonly Route[];
}

/** The formats of the operational log on stderr (`--log-format`). */
export const LOG_FORMATS = ["text", "json"] as const;

/** A `--log-format`. */
export type LogFormat = typeof LOG_FORMATS[number];

/** What `--underscore-headers` does with request fields whose name has a `_`. */
export const UNDERSCORE_HEADERS = ["drop", "keep"] as const;

/** A `--underscore-headers` mode. */
export type UnderscoreHeaders = typeof UNDERSCORE_HEADERS[number];

/** What the `hash` policy hashes: the client's address, a request field, or a cookie. */
export type HashKey =
  | { readonly kind: "ip" }
  | { readonly kind: "header"; readonly name: string }
  | { readonly kind: "cookie"; readonly name: string };

/** The access log formats. */
export const ACCESS_LOG_FORMATS = ["combined", "json", "off"] as const;

/** An access log format. */
export type AccessLogFormat = typeof ACCESS_LOG_FORMATS[number];

/** Whether `hostname` is a loopback address (127.0.0.0/8, ::1, localhost). */
export function isLoopback(hostname: string): boolean {
  return hostname === "localhost" || hostname === "::1" || /^127\.\d+\.\d+\.\d+$/.test(hostname);
}

/** What kind of value a setting takes. */
export type Kind =
  | "listen"
  | "urls"
  | "duration"
  | "count"
  | "positive"
  | "cidrs"
  | "algorithm"
  | "engine"
  | "path"
  | "file"
  | "statuses"
  | "admin"
  | "text"
  | "access-log"
  | "switch"
  | "hash-key"
  | "discover"
  | "nameserver"
  | "connections"
  | "duration-or-zero"
  | "sticky"
  | "hosts"
  | "percent"
  | "underscore-headers"
  | "log-format"
  | "size";

/** One setting: its flag, how its value is read, its default and its `--help` line. */
export interface FlagSpec {
  /** The flag without `--`; also the config-file key and, in capitals, the variable. */
  readonly name: string;
  /** How the value is read and checked. */
  readonly kind: Kind;
  /** Whether the flag may be given more than once (the values add up). */
  readonly multiple?: boolean;
  /** The value when none is given. */
  readonly fallback: string;
  /** The `--help` line. */
  readonly help: string;
  /** The {@linkcode Config} field it sets (`--backend` has none: it adds to `backends`). */
  readonly key?: keyof Config;
}

const DEFAULT_BACKENDS = "http://localhost:8081,http://localhost:8082,http://localhost:8083";

/** Every setting, in `--help` order. */
export const FLAGS: readonly FlagSpec[] = [
  {
    name: "listen",
    key: "listen",
    kind: "listen",
    fallback: ":8000",
    help: "address to serve: :8000, 8000 or host:port",
  },
  {
    name: "backend",
    kind: "urls",
    multiple: true,
    fallback: "",
    help: "a backend URL; repeat for more",
  },
  {
    name: "backends",
    key: "backends",
    kind: "urls",
    fallback: DEFAULT_BACKENDS,
    help: "comma-separated backend URLs",
  },
  {
    name: "discover",
    key: "discover",
    kind: "discover",
    fallback: "",
    help: "follow backends in DNS: dns:NAME:PORT (A/AAAA) or srv:NAME (SRV)",
  },
  {
    name: "discover-interval",
    key: "discoverInterval",
    kind: "duration",
    fallback: "10s",
    help: "time between DNS lookups",
  },
  {
    name: "discover-nameserver",
    key: "discoverNameServer",
    kind: "nameserver",
    fallback: "",
    help: "DNS server for --discover, e.g. 127.0.0.1:5353 (default: the system's)",
  },
  {
    name: "config",
    key: "configFile",
    kind: "file",
    fallback: "",
    help: "JSON file with these settings (re-read on SIGHUP)",
  },
  {
    name: "health-interval",
    key: "healthInterval",
    kind: "duration",
    fallback: "10s",
    help: "time between health probes",
  },
  {
    name: "health-timeout",
    key: "healthTimeout",
    kind: "duration",
    fallback: "2s",
    help: "time a health probe may take",
  },
  {
    name: "health-path",
    key: "healthPath",
    kind: "path",
    fallback: "",
    help: "HTTP check path (2xx/3xx is healthy); unset: TCP",
  },
  {
    name: "health-rise",
    key: "healthRise",
    kind: "positive",
    fallback: "1",
    help: "passed probes in a row that bring a backend up",
  },
  {
    name: "health-fall",
    key: "healthFall",
    kind: "positive",
    fallback: "1",
    help: "failed probes in a row that take it down",
  },
  {
    name: "health-fast-interval",
    key: "healthFastInterval",
    kind: "duration-or-zero",
    fallback: "500ms",
    help: "probe interval while a backend is down (0s: the normal one)",
  },
  {
    name: "connect-timeout",
    key: "connectTimeout",
    kind: "duration",
    fallback: "2s",
    help: "time to connect to a backend",
  },
  {
    name: "response-timeout",
    key: "responseTimeout",
    kind: "duration",
    fallback: "30s",
    help: "time to a backend's response head",
  },
  {
    name: "retries",
    key: "retries",
    kind: "count",
    fallback: "",
    help: "retries on other backends (default: pool size - 1)",
  },
  {
    name: "retry-statuses",
    key: "retryStatuses",
    kind: "statuses",
    fallback: "500,502,503,504",
    help: "backend statuses retried elsewhere for idempotent requests (none: off)",
  },
  {
    name: "max-fails",
    key: "maxFails",
    kind: "count",
    fallback: "3",
    help: "passive failures in --fail-window that eject a backend (0: off)",
  },
  {
    name: "fail-window",
    key: "failWindow",
    kind: "duration",
    fallback: "10s",
    help: "window in which --max-fails are counted",
  },
  {
    name: "algorithm",
    key: "algorithm",
    kind: "algorithm",
    fallback: "round-robin",
    help: `selection: ${ALGORITHMS.join(", ")}`,
  },
  {
    name: "hash-key",
    key: "hashKey",
    kind: "hash-key",
    fallback: "ip",
    help: "what --algorithm hash hashes: ip, header:NAME or cookie:NAME",
  },
  {
    name: "sticky",
    key: "sticky",
    kind: "sticky",
    fallback: "off",
    help: "sticky sessions: cookie or off",
  },
  {
    name: "sticky-key",
    key: "stickyKey",
    kind: "text",
    fallback: "",
    help: "key signing sticky cookies (default: random per start)",
  },
  {
    name: "slow-start",
    key: "slowStart",
    kind: "duration-or-zero",
    fallback: "0s",
    help: "ramp-up time of a backend that came back up",
  },
  {
    name: "max-conns",
    key: "maxConns",
    kind: "connections",
    fallback: "0",
    help: "requests in flight per backend at most (0: no limit)",
  },
  {
    name: "queue-timeout",
    key: "queueTimeout",
    kind: "duration-or-zero",
    fallback: "1s",
    help: "how long a request waits when every backend is at --max-conns",
  },
  {
    name: "panic",
    key: "panic",
    kind: "switch",
    fallback: "true",
    help: "when every backend looks down, try them all (true/false)",
  },
  {
    name: "trusted-proxies",
    key: "trustedProxies",
    kind: "cidrs",
    fallback: "",
    help: "CIDRs whose X-Forwarded-For is appended to",
  },
  {
    name: "workers",
    key: "workers",
    kind: "positive",
    fallback: "",
    help: "serving threads (default: number of cores)",
  },
  {
    name: "engine",
    key: "engine",
    kind: "engine",
    fallback: "goround",
    help: "front end: goround (its own HTTP/1.1 server) or deno (Deno.serve)",
  },
  {
    name: "header-timeout",
    key: "headerTimeout",
    kind: "duration",
    fallback: "30s",
    help: "time a client has to send a request head",
  },
  {
    name: "keepalive-timeout",
    key: "keepAliveTimeout",
    kind: "duration",
    fallback: "60s",
    help: "time an idle client connection stays open",
  },
  {
    name: "drain-timeout",
    key: "drainTimeout",
    kind: "duration",
    fallback: "30s",
    help: "longest wait for in-flight requests and WebSocket sessions on exit",
  },
  {
    name: "tls-cert",
    key: "tlsCert",
    kind: "file",
    fallback: "",
    help: "PEM certificate: serve HTTPS (HTTP/2 and HTTP/1.1 by ALPN)",
  },
  {
    name: "tls-key",
    key: "tlsKey",
    kind: "file",
    fallback: "",
    help: "PEM private key for --tls-cert",
  },
  {
    name: "redirect-http",
    key: "redirectHttp",
    kind: "admin",
    fallback: "off",
    help: "plain-HTTP address that redirects to HTTPS, e.g. :80",
  },
  {
    name: "backend-ca",
    key: "backendCa",
    kind: "file",
    fallback: "",
    help: "PEM CA for https:// backends (default: system roots)",
  },
  {
    name: "admin",
    key: "admin",
    kind: "admin",
    fallback: "127.0.0.1:9000",
    help: "admin API and dashboard address, or off (off loopback it needs --admin-token)",
  },
  {
    name: "admin-token",
    key: "adminToken",
    kind: "text",
    fallback: "",
    help: "bearer token the admin API requires",
  },
  {
    name: "access-log",
    key: "accessLog",
    kind: "access-log",
    fallback: "combined",
    help: "access log on stdout: combined, json or off",
  },
  {
    name: "expose-backend",
    key: "exposeBackend",
    kind: "switch",
    fallback: "false",
    help: "add X-Goround-Backend to responses (true/false)",
  },
  {
    name: "admin-hosts",
    key: "adminHosts",
    kind: "hosts",
    fallback: "",
    help: "more Host names the admin API answers to: host or host:port, comma-separated",
  },
  {
    name: "fail-statuses",
    key: "failStatuses",
    kind: "statuses",
    fallback: "none",
    help: "backend statuses that count toward --max-fails, e.g. 500,503",
  },
  {
    name: "max-ejection-percent",
    key: "maxEjectionPercent",
    kind: "percent",
    fallback: "50",
    help: "share of the pool passive failures may eject at once (0: none)",
  },
  {
    name: "ejection-time",
    key: "ejectionTime",
    kind: "duration",
    fallback: "30s",
    help: "how long an ejected backend stays out (× ejections in a row, at most 10×)",
  },
  {
    name: "underscore-headers",
    key: "underscoreHeaders",
    kind: "underscore-headers",
    fallback: "drop",
    help: "request fields named with _ (X_Forwarded_For): drop or keep",
  },
  {
    name: "takeover",
    key: "takeover",
    kind: "switch",
    fallback: "false",
    help: "take over --listen from the goround whose admin API is at --admin (true/false)",
  },
  {
    name: "send-timeout",
    key: "sendTimeout",
    kind: "duration",
    fallback: "60s",
    help: "longest wait for a write to a client to make progress (then it is closed)",
  },
  {
    name: "request-buffer",
    key: "requestBuffer",
    kind: "size",
    fallback: "1MiB",
    help: "request body bytes read before a backend is contacted (0: stream every body)",
  },
  {
    name: "request-buffer-total",
    key: "requestBufferTotal",
    kind: "size",
    fallback: "64MiB",
    help: "request body bytes all workers may buffer at once (beyond it, bodies stream)",
  },
  {
    name: "body-timeout",
    key: "bodyTimeout",
    kind: "duration",
    fallback: "60s",
    help: "longest wait for more of a request body (then 408)",
  },
  {
    name: "body-min-rate",
    key: "bodyMinRate",
    kind: "size",
    fallback: "500",
    help: "bytes per second a request body must average over each --body-timeout (0: any)",
  },
  {
    name: "log-format",
    key: "logFormat",
    kind: "log-format",
    fallback: "text",
    help: "operational log on stderr: text or json lines, each with a level",
  },
];

/**
 * The environment variable that stands in for a flag: `health-interval` → `GOROUND_HEALTH_INTERVAL`.
 *
 * @param flag The flag name without dashes.
 * @returns The variable name.
 */
export function envName(flag: string): string {
  return `GOROUND_${flag.toUpperCase().replaceAll("-", "_")}`;
}
