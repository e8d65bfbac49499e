/**
 * goround's settings: every flag, its `GOROUND_*` environment twin, its key in a JSON config
 * file, its default, and the validation that turns text into a {@linkcode Config}. A flag wins
 * over its variable, which wins over the file, which wins over the default.
 *
 * @module
 */

import { parseArgs } from "node:util";
import { type Cidr, parseCidr } from "./cidr.ts";
import { formatDuration, parseDuration } from "./duration.ts";
import { formatSize, parseSize } from "./size.ts";
import {
  type DiscoverySpec,
  type NameServer,
  parseDiscoverySpec,
  parseNameServer,
} from "./discovery_spec.ts";
import { ConfigError, ValidationError } from "../errors.ts";
import { ownAddressMessage, ownBackend } from "./own_address.ts";

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
  /** This goround process's random id, named in the `Via` it adds (`loop.ts`); not a setting:
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
}

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
}

const DEFAULT_BACKENDS = "http://localhost:8081,http://localhost:8082,http://localhost:8083";

/** Every setting, in `--help` order. */
export const FLAGS: readonly FlagSpec[] = [
  {
    name: "listen",
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
    kind: "urls",
    fallback: DEFAULT_BACKENDS,
    help: "comma-separated backend URLs",
  },
  {
    name: "discover",
    kind: "discover",
    fallback: "",
    help: "follow backends in DNS: dns:NAME:PORT (A/AAAA) or srv:NAME (SRV)",
  },
  {
    name: "discover-interval",
    kind: "duration",
    fallback: "10s",
    help: "time between DNS lookups",
  },
  {
    name: "discover-nameserver",
    kind: "nameserver",
    fallback: "",
    help: "DNS server for --discover, e.g. 127.0.0.1:5353 (default: the system's)",
  },
  {
    name: "config",
    kind: "file",
    fallback: "",
    help: "JSON file with these settings (re-read on SIGHUP)",
  },
  {
    name: "health-interval",
    kind: "duration",
    fallback: "10s",
    help: "time between health probes",
  },
  {
    name: "health-timeout",
    kind: "duration",
    fallback: "2s",
    help: "time a health probe may take",
  },
  {
    name: "health-path",
    kind: "path",
    fallback: "",
    help: "HTTP check path (2xx/3xx is healthy); unset: TCP",
  },
  {
    name: "health-rise",
    kind: "positive",
    fallback: "1",
    help: "passed probes in a row that bring a backend up",
  },
  {
    name: "health-fall",
    kind: "positive",
    fallback: "1",
    help: "failed probes in a row that take it down",
  },
  {
    name: "health-fast-interval",
    kind: "duration-or-zero",
    fallback: "500ms",
    help: "probe interval while a backend is down (0s: the normal one)",
  },
  {
    name: "connect-timeout",
    kind: "duration",
    fallback: "2s",
    help: "time to connect to a backend",
  },
  {
    name: "response-timeout",
    kind: "duration",
    fallback: "30s",
    help: "time to a backend's response head",
  },
  {
    name: "retries",
    kind: "count",
    fallback: "",
    help: "retries on other backends (default: pool size - 1)",
  },
  {
    name: "retry-statuses",
    kind: "statuses",
    fallback: "500,502,503,504",
    help: "backend statuses retried elsewhere for idempotent requests (none: off)",
  },
  {
    name: "max-fails",
    kind: "count",
    fallback: "3",
    help: "passive failures in --fail-window that eject a backend (0: off)",
  },
  {
    name: "fail-window",
    kind: "duration",
    fallback: "10s",
    help: "window in which --max-fails are counted",
  },
  {
    name: "algorithm",
    kind: "algorithm",
    fallback: "round-robin",
    help: `selection: ${ALGORITHMS.join(", ")}`,
  },
  {
    name: "hash-key",
    kind: "hash-key",
    fallback: "ip",
    help: "what --algorithm hash hashes: ip, header:NAME or cookie:NAME",
  },
  { name: "sticky", kind: "sticky", fallback: "off", help: "sticky sessions: cookie or off" },
  {
    name: "sticky-key",
    kind: "text",
    fallback: "",
    help: "key signing sticky cookies (default: random per start)",
  },
  {
    name: "slow-start",
    kind: "duration-or-zero",
    fallback: "0s",
    help: "ramp-up time of a backend that came back up",
  },
  {
    name: "max-conns",
    kind: "connections",
    fallback: "0",
    help: "requests in flight per backend at most (0: no limit)",
  },
  {
    name: "queue-timeout",
    kind: "duration-or-zero",
    fallback: "1s",
    help: "how long a request waits when every backend is at --max-conns",
  },
  {
    name: "panic",
    kind: "switch",
    fallback: "true",
    help: "when every backend looks down, try them all (true/false)",
  },
  {
    name: "trusted-proxies",
    kind: "cidrs",
    fallback: "",
    help: "CIDRs whose X-Forwarded-For is appended to",
  },
  {
    name: "workers",
    kind: "positive",
    fallback: "",
    help: "serving threads (default: number of cores)",
  },
  {
    name: "engine",
    kind: "engine",
    fallback: "goround",
    help: "front end: goround (its own HTTP/1.1 server) or deno (Deno.serve)",
  },
  {
    name: "header-timeout",
    kind: "duration",
    fallback: "30s",
    help: "time a client has to send a request head",
  },
  {
    name: "keepalive-timeout",
    kind: "duration",
    fallback: "60s",
    help: "time an idle client connection stays open",
  },
  {
    name: "drain-timeout",
    kind: "duration",
    fallback: "30s",
    help: "longest wait for in-flight requests on exit",
  },
  {
    name: "tls-cert",
    kind: "file",
    fallback: "",
    help: "PEM certificate: serve HTTPS (HTTP/2 and HTTP/1.1 by ALPN)",
  },
  { name: "tls-key", kind: "file", fallback: "", help: "PEM private key for --tls-cert" },
  {
    name: "redirect-http",
    kind: "admin",
    fallback: "off",
    help: "plain-HTTP address that redirects to HTTPS, e.g. :80",
  },
  {
    name: "backend-ca",
    kind: "file",
    fallback: "",
    help: "PEM CA for https:// backends (default: system roots)",
  },
  {
    name: "admin",
    kind: "admin",
    fallback: "127.0.0.1:9000",
    help: "admin API and dashboard address, or off (off loopback it needs --admin-token)",
  },
  { name: "admin-token", kind: "text", fallback: "", help: "bearer token the admin API requires" },
  {
    name: "access-log",
    kind: "access-log",
    fallback: "combined",
    help: "access log on stdout: combined, json or off",
  },
  {
    name: "expose-backend",
    kind: "switch",
    fallback: "false",
    help: "add X-Goround-Backend to responses (true/false)",
  },
  {
    name: "admin-hosts",
    kind: "hosts",
    fallback: "",
    help: "more Host names the admin API answers to: host or host:port, comma-separated",
  },
  {
    name: "fail-statuses",
    kind: "statuses",
    fallback: "none",
    help: "backend statuses that count toward --max-fails, e.g. 500,503",
  },
  {
    name: "max-ejection-percent",
    kind: "percent",
    fallback: "50",
    help: "share of the pool passive failures may eject at once (0: none)",
  },
  {
    name: "ejection-time",
    kind: "duration",
    fallback: "30s",
    help: "how long an ejected backend stays out (× ejections in a row, at most 10×)",
  },
  {
    name: "underscore-headers",
    kind: "underscore-headers",
    fallback: "drop",
    help: "request fields named with _ (X_Forwarded_For): drop or keep",
  },
  {
    name: "takeover",
    kind: "switch",
    fallback: "false",
    help: "take over --listen from the goround whose admin API is at --admin (true/false)",
  },
  {
    name: "send-timeout",
    kind: "duration",
    fallback: "60s",
    help: "longest wait for a write to a client to make progress (then it is closed)",
  },
  {
    name: "request-buffer",
    kind: "size",
    fallback: "1MiB",
    help: "request body bytes read before a backend is contacted (0: stream every body)",
  },
  {
    name: "request-buffer-total",
    kind: "size",
    fallback: "64MiB",
    help: "request body bytes all workers may buffer at once (beyond it, bodies stream)",
  },
  {
    name: "body-timeout",
    kind: "duration",
    fallback: "60s",
    help: "longest wait for more of a request body (then 408)",
  },
  {
    name: "body-min-rate",
    kind: "size",
    fallback: "500",
    help: "bytes per second a request body must average over each --body-timeout (0: any)",
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

/**
 * Parses a listen address: `:8000`, `8000`, `host:8000`, `[::1]:8000`.
 *
 * @param text The address.
 * @returns Hostname (`0.0.0.0` when omitted) and port.
 * @throws {ValidationError} When it is not one of those forms.
 */
export function parseListen(text: string): Listen {
  const match = /^(?:(\[[0-9a-fA-F:.]+\]|[^:\s\[\]]*):)?(\d{1,5})$/.exec(text.trim());
  const port = match ? Number(match[2]) : NaN;
  if (!match || port > 65535) {
    throw new ValidationError(
      `"${text}" is not a listen address: expected :8000, 8000 or host:port`,
    );
  }
  const host = (match[1] ?? "").replace(/^\[|\]$/g, "");
  return { hostname: host === "" ? "0.0.0.0" : host, port };
}

/** A DNS name or IPv4 address, or an IPv6 address in brackets, then an optional port. */
const HOST_NAME =
  /^(?:\[[0-9a-f:.]+\]|[a-z0-9](?:[a-z0-9-]*[a-z0-9])?(?:\.[a-z0-9](?:[a-z0-9-]*[a-z0-9])?)*)(?::(\d{1,5}))?$/;

/**
 * Parses a name a `Host` field may carry: `admin.example.com`, `10.0.0.5:9000`, `[::1]:9000`.
 *
 * @param text The name.
 * @returns It, lowercased.
 * @throws {ValidationError} When it is not a host with an optional port from 1 to 65535.
 */
export function parseHostName(text: string): string {
  const host = text.trim().toLowerCase();
  const match = HOST_NAME.exec(host);
  const port = match?.[1] === undefined ? 1 : Number(match[1]);
  if (!match || port < 1 || port > 65535 || !URL.canParse(`http://${host}/`)) {
    throw new ValidationError(
      `"${text}" is not a host: expected host or host:port, comma-separated, like admin.example.com,10.0.0.5:9000`,
    );
  }
  return host;
}

/**
 * Parses a backend: an `http://` or `https://` origin (no path, query or credentials; the port
 * defaults to 80 or 443), optionally followed by `,weight=N`.
 *
 * @param text The backend, e.g. `http://localhost:8081` or `http://localhost:8081,weight=3`.
 * @returns The backend.
 * @throws {ValidationError} When the URL is not a plain http origin or an option is unknown.
 * @example
 * ```ts
 * parseBackend("http://10.0.0.5:8080,weight=3").weight; // 3
 * ```
 */
export function parseBackend(text: string): Backend {
  const [address = "", ...options] = text.split(",").map((part) => part.trim());
  let url: URL;
  try {
    url = new URL(address);
  } catch {
    throw new ValidationError(`"${text}" is not a URL: expected http://host:port`);
  }
  if (url.protocol !== "http:" && url.protocol !== "https:") {
    throw new ValidationError(
      `"${text}" has scheme ${
        url.protocol.slice(0, -1)
      }: expected http://host:port or https://host:port`,
    );
  }
  if (url.pathname !== "/" || url.search || url.hash || url.username || url.password) {
    throw new ValidationError(
      `"${text}" has a path, query or credentials: expected just http://host:port`,
    );
  }
  let weight = 1;
  for (const option of options) {
    const match = /^weight=(\d{1,4})$/.exec(option);
    if (!match || Number(match[1]) < 1 || Number(match[1]) > 1000) {
      throw new ValidationError(
        `"${option}" is not a backend option: expected weight=N (1 to 1000)`,
      );
    }
    weight = Number(match[1]);
  }
  const tls = url.protocol === "https:";
  return {
    url: url.origin,
    hostname: url.hostname.replace(/^\[|\]$/g, ""),
    port: url.port === "" ? (tls ? 443 : 80) : Number(url.port),
    weight,
    tls,
  };
}

/**
 * Splits a backend list: commas separate backends, except that `key=value` items belong to the
 * backend before them (`http://a:1,weight=3,http://b:2` is two backends).
 *
 * @param text The list.
 * @returns One text per backend.
 */
export function splitBackends(text: string): string[] {
  const out: string[] = [];
  for (const item of text.split(",").map((s) => s.trim()).filter((s) => s !== "")) {
    if (/^[a-z-]+=/.test(item) && out.length > 0) out[out.length - 1] += `,${item}`;
    else out.push(item);
  }
  return out;
}

function parseCount(text: string, min: number): number {
  if (!/^\d+$/.test(text.trim()) || Number(text) > 1024 || Number(text) < min) {
    throw new ValidationError(
      `"${text}" is not a count: expected a whole number from ${min} to 1024`,
    );
  }
  return Number(text);
}

function splitList(text: string): string[] {
  return text.split(",").map((s) => s.trim()).filter((s) => s !== "");
}

/** The values one setting can parse to. */
type Parsed = Listen | Backend[] | number | number[] | string | Cidr[] | string[];

function oneOf<T extends string>(text: string, allowed: readonly T[], what: string): T {
  if (!(allowed as readonly string[]).includes(text)) {
    throw new ValidationError(`"${text}" is not ${what}: expected one of ${allowed.join(", ")}`);
  }
  return text as T;
}

function parseValue(kind: Kind, text: string): Parsed {
  switch (kind) {
    case "listen":
      return parseListen(text);
    case "urls":
      return splitBackends(text).map(parseBackend);
    case "duration": {
      const ms = parseDuration(text);
      if (ms <= 0) throw new ValidationError(`"${text}" must be longer than 0ms`);
      return ms;
    }
    case "count":
      return parseCount(text, 0);
    case "positive":
      return parseCount(text, 1);
    case "cidrs":
      return splitList(text).map(parseCidr);
    case "algorithm":
      return oneOf(text, ALGORITHMS, "an algorithm");
    case "engine":
      return oneOf(text, ENGINES, "an engine");
    case "path":
      if (text !== "" && !/^\/[\x21-\x7e]*$/.test(text)) {
        throw new ValidationError(
          `"${text}" is not a path: expected one starting with /, like /healthz`,
        );
      }
      return text;
    case "file":
    case "text":
      return text;
    case "admin":
      return text.trim() === "off" ? "off" : parseListen(text);
    case "access-log":
      return oneOf(text, ACCESS_LOG_FORMATS, "an access log format");
    case "hash-key": {
      const match = /^(ip)$|^(header|cookie):([!#$%&'*+.^_`|~0-9A-Za-z-]+)$/.exec(text.trim());
      if (!match) {
        throw new ValidationError(
          `"${text}" is not a hash key: expected ip, header:NAME or cookie:NAME`,
        );
      }
      return text.trim();
    }
    case "connections": {
      if (!/^\d{1,7}$/.test(text.trim())) {
        throw new ValidationError(
          `"${text}" is not a count: expected a whole number from 0 to 9999999`,
        );
      }
      return Number(text);
    }
    case "duration-or-zero":
      return parseDuration(text);
    case "sticky":
      return oneOf(text, ["cookie", "off"], "a sticky mode");
    case "hosts":
      return splitList(text).map(parseHostName);
    case "percent":
      if (!/^\d{1,3}$/.test(text.trim()) || Number(text) > 100) {
        throw new ValidationError(
          `"${text}" is not a percentage: expected a whole number from 0 to 100`,
        );
      }
      return Number(text);
    case "underscore-headers":
      return oneOf(text, UNDERSCORE_HEADERS, "an underscore-headers mode");
    case "size":
      return parseSize(text);
    case "discover":
      if (text.trim() !== "") parseDiscoverySpec(text);
      return text.trim();
    case "nameserver":
      if (text.trim() !== "") parseNameServer(text);
      return text.trim();
    case "switch":
      if (!/^(true|false|1|0|yes|no|on|off)?$/i.test(text)) {
        throw new ValidationError(`"${text}" is not a switch: expected true or false`);
      }
      return /^(true|1|yes|on)?$/i.test(text) ? "true" : "false";
    case "statuses": {
      if (text.trim() === "none") return [];
      return splitList(text).map((item) => {
        if (!/^[1-5]\d\d$/.test(item)) {
          throw new ValidationError(
            `"${item}" is not a status: expected codes like 502,503 or none`,
          );
        }
        return Number(item);
      });
    }
  }
}

/** Reads an environment variable; `undefined` when unset or not permitted. */
export type EnvReader = (name: string) => string | undefined;

/** Reads a file as text (throws when it cannot). */
export type FileReader = (path: string) => string;

/** The outcome of reading the command line: settings, or a request for help or the version. */
export type Command =
  | { readonly kind: "run"; readonly config: Config }
  | { readonly kind: "help" }
  | { readonly kind: "version" };

/** Values from the JSON file, as text, by setting name. */
function readConfigFile(path: string, readFile: FileReader): Map<string, string[]> {
  let text: string;
  try {
    text = readFile(path);
  } catch (error) {
    const why = error instanceof Error ? error.message.split(":")[0]!.toLowerCase() : "unreadable";
    throw new ConfigError(
      `--config: "${path}" cannot be read (${why}): expected a readable JSON file`,
    );
  }
  let data: unknown;
  try {
    data = JSON.parse(text);
  } catch (error) {
    throw new ConfigError(`${path}: not valid JSON (${(error as Error).message.split("\n")[0]})`);
  }
  if (typeof data !== "object" || data === null || Array.isArray(data)) {
    throw new ConfigError(`${path}: expected a JSON object of settings, like {"backends": [...]}`);
  }
  const values = new Map<string, string[]>();
  for (const [key, value] of Object.entries(data)) {
    const flag = FLAGS.find((f) => f.name === key);
    if (!flag || key === "config") {
      throw new ConfigError(`${path}: "${key}" is not a setting: see goround --help for the names`);
    }
    const items = (Array.isArray(value) ? value : [value]).map((item) => {
      // A backend may be an object: {"url": "http://a:1", "weight": 3}.
      if (
        flag.kind === "urls" && typeof item === "object" && item !== null &&
        typeof item.url === "string"
      ) {
        const { url, ...options } = item as Record<string, unknown>;
        return [url, ...Object.entries(options).map(([k, v]) => `${k}=${v}`)].join(",");
      }
      return item;
    });
    if (!items.every((item) => typeof item === "string" || typeof item === "number")) {
      throw new ConfigError(`${path}: ${key}: expected a string, a number or a list of them`);
    }
    values.set(key, [items.map(String).join(",")]);
  }
  return values;
}

/**
 * Turns the command line, environment and (with `--config`) a JSON file into a validated
 * {@linkcode Config}.
 *
 * @param args The arguments after the program name.
 * @param env Reads `GOROUND_*` variables.
 * @param cores Default worker count.
 * @param readFile Reads the `--config` file.
 * @returns What to do.
 * @throws {ConfigError} Naming the flag (or variable, or file and key), the value and what
 *   was expected.
 * @example
 * ```ts
 * const cmd = parseCommandLine(["--listen", ":9000"], () => undefined, 2);
 * ```
 */
export function parseCommandLine(
  args: readonly string[],
  env: EnvReader,
  cores: number,
  readFile: FileReader = () => {
    throw new Error("no file reader");
  },
): Command {
  const options: Record<
    string,
    { type: "string" | "boolean"; multiple?: boolean; short?: string }
  > = {
    help: { type: "boolean", short: "h" },
    version: { type: "boolean" },
  };
  for (const flag of FLAGS) {
    options[flag.name] = flag.multiple ? { type: "string", multiple: true } : { type: "string" };
    // A switch may be given bare (`--expose-backend`) or with a value (`--expose-backend=false`).
    if (flag.kind === "switch") options[`no-${flag.name}`] = { type: "boolean" };
  }
  // "--health-interval -1s": parseArgs refuses a value that starts with "-" as ambiguous; join
  // such a value to its flag so the value itself gets validated (and reported) instead.
  const joined: string[] = [];
  for (let i = 0; i < args.length; i++) {
    const arg = args[i]!;
    const next = args[i + 1];
    const takesValue = options[arg.slice(2)]?.type === "string";
    const isSwitch = FLAGS.some((f) => f.kind === "switch" && `--${f.name}` === arg);
    if (isSwitch && (next === undefined || next.startsWith("--"))) {
      joined.push(`${arg}=true`);
      continue;
    }
    if (arg.startsWith("--") && takesValue && next !== undefined && /^-(?!-)/.test(next)) {
      joined.push(`${arg}=${next}`);
      i++;
    } else {
      joined.push(arg);
    }
  }
  let values: Record<string, unknown>;
  try {
    ({ values } = parseArgs({ args: joined, options, strict: true, allowPositionals: false }));
  } catch (error) {
    throw new ConfigError(cliMessage(error));
  }
  if (values.help) return { kind: "help" };
  if (values.version) return { kind: "version" };

  const flagTexts = (name: string): string[] => {
    const raw = values[name] as string | string[] | undefined;
    return raw === undefined ? [] : Array.isArray(raw) ? raw : [raw];
  };
  const configFile = flagTexts("config").at(-1) ?? env(envName("config")) ?? "";
  const fileValues = configFile === ""
    ? new Map<string, string[]>()
    : readConfigFile(configFile, readFile);

  /** Where a setting can come from, highest first: the name to report and its texts. */
  const sourcesOf = (flag: FlagSpec): [string, string[]][] => [
    [`--${flag.name}`, flagTexts(flag.name)],
    [envName(flag.name), [env(envName(flag.name)) ?? ""].filter((t) => t !== "")],
    [`${configFile}: ${flag.name}`, fileValues.get(flag.name) ?? []],
  ];
  /** The value of a setting from the first source that has it, or `undefined`. */
  const read = (flag: FlagSpec): Parsed | undefined => {
    const sources = sourcesOf(flag);
    // Every source is validated, even one that a higher source overrides: a bad value in the
    // file is an error now, not a surprise when the flag is dropped later.
    let found: Parsed | undefined;
    for (const [source, texts] of sources) {
      if (texts.length === 0) continue;
      const parsed = texts.map((text) => parseOne(flag, source, text));
      found ??= flag.kind === "urls" ? (parsed as Backend[][]).flat() : parsed.at(-1);
    }
    return found;
  };
  const get = new Map(FLAGS.map((flag) => [flag.name, read(flag)]));
  const value = <T extends Parsed>(name: string): T => {
    const found = get.get(name);
    if (found !== undefined) return found as T;
    const flag = FLAGS.find((f) => f.name === name)!;
    return parseValue(flag.kind, flag.fallback) as T;
  };

  const given = [get.get("backend"), get.get("backends")] as (Backend[] | undefined)[];
  const backends = given.some((list) => list !== undefined)
    ? given.flatMap((list) => list ?? [])
    : value<Backend[]>("backends");
  const seen = new Set<string>();
  for (const backend of backends) {
    if (seen.has(backend.url)) {
      throw new ConfigError(
        `--backend: "${backend.url}" is listed twice: expected each backend once`,
      );
    }
    seen.add(backend.url);
  }
  if (backends.length === 0) {
    throw new ConfigError(`--backends: the list is empty: expected at least one http://host:port`);
  }
  const listen = value<Listen>("listen");
  const own = ownBackend(backends, listen);
  if (own) {
    // Named by the source that listed it: a flag, a variable, or the file and key (each was
    // parsed above already, so parsing again cannot fail).
    const lists = (text: string) =>
      splitBackends(text).some((b) => parseBackend(b).url === own.url);
    const source = ["backend", "backends"]
      .flatMap((name) => sourcesOf(FLAGS.find((f) => f.name === name)!))
      .find(([, texts]) => texts.some(lists));
    throw new ConfigError(`${source?.[0] ?? "--backends"}: ${ownAddressMessage(own, listen)}`);
  }
  const switchValue = (name: string) => !values[`no-${name}`] && value<string>(name) === "true";
  const discover = value<string>("discover");
  const nameServer = value<string>("discover-nameserver");
  if (discover !== "" && given.some((list) => list !== undefined)) {
    throw new ConfigError(
      `--discover: also given --backend/--backends: expected one source of backends`,
    );
  }
  const tlsCert = value<string>("tls-cert");
  const tlsKey = value<string>("tls-key");
  if ((tlsCert === "") !== (tlsKey === "")) {
    throw new ConfigError(
      `--${tlsCert ? "tls-key" : "tls-cert"}: missing: expected both --tls-cert and --tls-key`,
    );
  }
  const redirect = value<Listen | "off">("redirect-http");
  if (redirect !== "off" && tlsCert === "") {
    throw new ConfigError(
      `--redirect-http: needs --tls-cert and --tls-key: expected HTTPS to redirect to`,
    );
  }
  const admin = value<Listen | "off">("admin");
  const adminToken = value<string>("admin-token");
  if (admin !== "off" && !isLoopback(admin.hostname) && adminToken === "") {
    throw new ConfigError(
      `--admin: "${admin.hostname}:${admin.port}" is not a loopback address: expected --admin-token (or GOROUND_ADMIN_TOKEN) too`,
    );
  }
  const takeover = switchValue("takeover");
  if (takeover) checkTakeover(value<Listen>("listen"), admin);
  const requestBuffer = value<number>("request-buffer");
  const requestBufferTotal = value<number>("request-buffer-total");
  if (requestBuffer > requestBufferTotal) {
    throw new ConfigError(
      `--request-buffer: "${formatSize(requestBuffer)}" is more than --request-buffer-total ${
        formatSize(requestBufferTotal)
      }: expected at most the total`,
    );
  }
  return {
    kind: "run",
    config: {
      listen,
      backends,
      healthInterval: value<number>("health-interval"),
      healthTimeout: value<number>("health-timeout"),
      healthPath: value<string>("health-path"),
      healthRise: value<number>("health-rise"),
      healthFall: value<number>("health-fall"),
      connectTimeout: value<number>("connect-timeout"),
      responseTimeout: value<number>("response-timeout"),
      retries: (get.get("retries") as number | undefined) ?? -1,
      retryStatuses: value<number[]>("retry-statuses"),
      maxFails: value<number>("max-fails"),
      failWindow: value<number>("fail-window"),
      workers: (get.get("workers") as number | undefined) ?? Math.max(1, cores),
      trustedProxies: value<Cidr[]>("trusted-proxies"),
      algorithm: value<Algorithm>("algorithm"),
      engine: value<Engine>("engine"),
      headerTimeout: value<number>("header-timeout"),
      keepAliveTimeout: value<number>("keepalive-timeout"),
      drainTimeout: value<number>("drain-timeout"),
      configFile,
      admin: admin === "off" ? null : admin,
      adminToken,
      accessLog: value<AccessLogFormat>("access-log"),
      exposeBackend: switchValue("expose-backend"),
      hashKey: hashKeyOf(value<string>("hash-key")),
      maxConns: value<number>("max-conns"),
      queueTimeout: value<number>("queue-timeout"),
      slowStart: value<number>("slow-start"),
      sticky: value<"cookie" | "off">("sticky"),
      stickyKey: value<string>("sticky-key"),
      healthFastInterval: value<number>("health-fast-interval"),
      panic: switchValue("panic"),
      tlsCert,
      tlsKey,
      redirectHttp: redirect === "off" ? null : redirect,
      backendCa: value<string>("backend-ca"),
      discover: discover === "" ? null : parseDiscoverySpec(discover),
      discoverInterval: value<number>("discover-interval"),
      discoverNameServer: nameServer === "" ? null : parseNameServer(nameServer),
      adminHosts: value<string[]>("admin-hosts"),
      failStatuses: value<number[]>("fail-statuses"),
      maxEjectionPercent: value<number>("max-ejection-percent"),
      ejectionTime: value<number>("ejection-time"),
      underscoreHeaders: value<UnderscoreHeaders>("underscore-headers"),
      instanceId: "",
      takeover,
      sendTimeout: value<number>("send-timeout"),
      requestBuffer,
      requestBufferTotal,
      bodyTimeout: value<number>("body-timeout"),
      bodyMinRate: value<number>("body-min-rate"),
    },
  };
}

/** A takeover needs both ports of the running goround: it finds it through its admin API. */
function checkTakeover(listen: Listen, admin: Listen | "off"): void {
  if (admin === "off") {
    throw new ConfigError(
      `--takeover: --admin is off: expected the admin address of the goround to take over from`,
    );
  }
  for (const [flag, where] of [["--listen", listen], ["--admin", admin]] as const) {
    if (where.port === 0) {
      throw new ConfigError(
        `--takeover: ${flag} port is 0: expected the port the running goround uses`,
      );
    }
  }
}

function hashKeyOf(text: string): HashKey {
  if (text === "ip") return { kind: "ip" };
  const [kind, name] = text.split(":") as ["header" | "cookie", string];
  return { kind, name: kind === "header" ? name.toLowerCase() : name };
}

function parseOne(flag: FlagSpec, source: string, text: string): Parsed {
  try {
    return parseValue(flag.kind, text);
  } catch (error) {
    if (error instanceof ValidationError) {
      throw new ConfigError(`${source}: ${error.message}`);
    }
    throw error;
  }
}

function cliMessage(error: unknown): string {
  const message = error instanceof Error ? error.message : String(error);
  const unknown = /Unknown option '([^']+)'/.exec(message);
  if (unknown) return `${unknown[1]}: unknown flag: see goround --help for the flags`;
  const missing = /Option '(?:-\w, )?(--[\w-]+)(?: <value>)?' argument missing/.exec(message);
  if (missing) return `${missing[1]}: needs a value`;
  const positional = /Unexpected argument '([^']+)'/.exec(message);
  if (positional) return `"${positional[1]}": unexpected argument: flags start with --`;
  return message.split("\n")[0]!;
}

/**
 * A short multi-line summary of the effective settings, for the startup banner.
 *
 * @param config The settings.
 * @returns Lines without trailing newline.
 */
export function describeConfig(config: Config): string[] {
  const check = config.healthPath === "" ? "TCP" : `HTTP GET ${config.healthPath}`;
  return [
    `  backends: ${config.backends.map((b) => b.url).join(", ")}`,
    `  algorithm: ${config.algorithm}, workers: ${config.workers}, engine: ${config.engine}`,
    `  health: ${check} every ${formatDuration(config.healthInterval)} (timeout ${
      formatDuration(config.healthTimeout)
    }, rise ${config.healthRise}, fall ${config.healthFall})`,
  ];
}
