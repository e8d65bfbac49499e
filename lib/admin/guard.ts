/**
 * Which requests the admin listener answers at all, decided from the request head alone, before
 * any handler runs (Caddy's admin endpoint checks `Host` and `Origin` for the same reasons):
 *
 * - `Host` must be one of the listener's own names: its address, `localhost`, `127.0.0.1` or
 *   `[::1]` with its port, or one given with `--admin-hosts`. A page whose name an attacker has
 *   re-pointed at 127.0.0.1 (DNS rebinding) sends its own name, so it is refused: 403.
 * - A request that can change something (any method but `GET`, `HEAD`, `OPTIONS`) is refused
 *   with 403 when a browser says another page sent it: an `Origin` that is not one of those
 *   names, or `Sec-Fetch-Site: cross-site` or `same-site` (another port on localhost is the same
 *   site). It must also say `Content-Type: application/json` (else 415): a browser sends that
 *   cross-origin only after a CORS preflight, which the admin listener never grants, so no
 *   form post and no `fetch` in `no-cors` mode reaches a handler, even one that reads no body.
 *
 * @module
 */

/** A request the guard refused: the status and a one-line reason. */
export interface Refusal {
  /** 403 or 415. */
  readonly status: 400 | 403 | 415;
  /** Why, in one line. */
  readonly message: string;
}

/** What the guard looks at. */
export interface GuardedRequest {
  /** The method. */
  readonly method: string;
  /** The request's URL (its authority comes from an absolute-form target, else `Host`). */
  readonly url: string;
  /** The fields. */
  readonly headers: Headers;
}

/** Methods that change nothing (RFC 9110 §9.2.1); every other one must pass the origin checks. */
const SAFE_METHODS: ReadonlySet<string> = new Set(["GET", "HEAD", "OPTIONS"]);

/** A `Host` value: a name or IPv4 address, or an IPv6 address in brackets, and a port. */
const HOST_SYNTAX = /^(?:\[[0-9a-fA-F:.]+\]|[A-Za-z0-9.-]+)(?::\d{1,5})?$/;

/**
 * A host in the one spelling the guard compares: lowercase, without the default port 80.
 *
 * @param text A `Host` value, or a name from `--admin-hosts`.
 * @returns The normal form, or `null` when it is not a host.
 * @example
 * ```ts
 * normalHost("LocalHost:80"); // "localhost"
 * ```
 */
export function normalHost(text: string): string | null {
  if (!HOST_SYNTAX.test(text)) return null;
  // As written: `127.1` or `2130706433` name 127.0.0.1 only after a URL parser's rewriting.
  const lower = text.toLowerCase();
  return lower.endsWith(":80") ? lower.slice(0, -3) : lower;
}

/**
 * The names the admin listener answers to: its own address (unless it is a wildcard),
 * `localhost`, `127.0.0.1` and `[::1]`, each with its port, and each of `extra`. A name in
 * `extra` given without a port stands for that name with the listener's port or with none (as
 * a proxy in front of it on port 80 or 443 forwards it).
 *
 * @param hostname The address the listener is bound to.
 * @param port The port it is bound to.
 * @param extra Names from `--admin-hosts`, `host` or `host:port`.
 * @returns The names, in {@linkcode normalHost} form.
 */
export function adminNames(
  hostname: string,
  port: number,
  extra: readonly string[] = [],
): ReadonlySet<string> {
  const own = hostname === "0.0.0.0" || hostname === "::" ? [] : [hostname];
  const bracketed = [...own, "localhost", "127.0.0.1", "::1"]
    .map((name) => (name.includes(":") ? `[${name}]` : name));
  // IPv6 names are in brackets, so a colon and digits at the end can only be a port.
  const given = extra.flatMap((name) => /:\d+$/.test(name) ? [name] : [name, `${name}:${port}`]);
  const names = new Set<string>();
  for (const name of [...bracketed.map((name) => `${name}:${port}`), ...given]) {
    const normal = normalHost(name);
    if (normal !== null) names.add(normal);
  }
  return names;
}

function originHost(origin: string): string | null {
  try {
    const url = new URL(origin);
    return url.protocol === "http:" || url.protocol === "https:" ? url.host : null;
  } catch {
    return null; // "null" (a sandboxed frame, a file) or garbage
  }
}

function mediaType(contentType: string | null): string {
  return (contentType ?? "").split(";")[0]!.trim().toLowerCase();
}

function hostRefusal(req: GuardedRequest, names: ReadonlySet<string>): Refusal | null {
  const host = req.headers.get("host");
  // Without Host, Deno makes up http://localhost:port for the URL: that must not pass for one.
  if (host === null) {
    return {
      status: 403,
      message: "forbidden: no Host field: expected one of this listener's names",
    };
  }
  // A Host no URL can be made of (RFC 9112 §3.2: 400) cannot be one of the names either.
  if (!URL.canParse(req.url)) {
    return { status: 400, message: `bad request: Host ${JSON.stringify(host)} is not host[:port]` };
  }
  for (const given of [host, new URL(req.url).host]) {
    if (!names.has(normalHost(given) ?? "")) {
      return {
        status: 403,
        message: `forbidden: Host ${
          JSON.stringify(given)
        } is not a name of this admin listener (its address, localhost, 127.0.0.1, [::1], or one given with --admin-hosts)`,
      };
    }
  }
  return null;
}

function crossSiteRefusal(req: GuardedRequest, names: ReadonlySet<string>): Refusal | null {
  const origin = req.headers.get("origin");
  if (origin !== null && !names.has(originHost(origin) ?? "")) {
    return {
      status: 403,
      message: `forbidden: Origin ${
        JSON.stringify(origin)
      } is not this admin listener: only its own pages may change the pool`,
    };
  }
  const site = req.headers.get("sec-fetch-site")?.toLowerCase();
  if (site === "cross-site" || site === "same-site") {
    return {
      status: 403,
      message:
        `forbidden: Sec-Fetch-Site: ${site}: only this admin listener's own pages may change the pool`,
    };
  }
  return null;
}

/**
 * Whether the admin listener refuses `req` before any handler sees it, and how.
 *
 * @param req The request head.
 * @param names The listener's names ({@linkcode adminNames}).
 * @returns The refusal, or `null` to go on.
 * @example
 * ```ts
 * const names = adminNames("127.0.0.1", 9000);
 * const req = new Request("http://evil.example:9000/status", {
 *   headers: { host: "evil.example:9000" },
 * });
 * refusalOf(req, names)?.status; // 403
 * ```
 */
export function refusalOf(req: GuardedRequest, names: ReadonlySet<string>): Refusal | null {
  const refused = hostRefusal(req, names);
  if (refused || SAFE_METHODS.has(req.method)) return refused;
  const crossSite = crossSiteRefusal(req, names);
  if (crossSite) return crossSite;
  if (mediaType(req.headers.get("content-type")) !== "application/json") {
    return {
      status: 415,
      message:
        `unsupported media type: send Content-Type: application/json with every ${req.method} to the admin API (with or without a body)`,
    };
  }
  return null;
}
