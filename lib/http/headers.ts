/**
 * Header rules for both directions, in the manner of Go's `httputil.ReverseProxy`: strip the
 * hop-by-hop fields (RFC 9110 §7.6.1), then set the forwarding fields, so nothing a client
 * forged survives.
 *
 * @module
 */

/**
 * Fields that describe one connection, never the message (RFC 9110 §7.6.1, RFC 9112 §6.1 and
 * §7.4), plus `Proxy-Connection`, a pre-standard twin of `Connection` that clients still send.
 */
export const HOP_BY_HOP: ReadonlySet<string> = new Set([
  "connection",
  "proxy-connection",
  "keep-alive",
  "proxy-authenticate",
  "proxy-authorization",
  "te",
  "trailer",
  "transfer-encoding",
  "upgrade",
]);

/** What the request-side rules need to know about the client connection. */
export interface ForwardContext {
  /** The peer's address (the TCP client). */
  readonly clientIp: string;
  /** Whether the peer is a trusted proxy, whose forwarding fields are kept and appended to. */
  readonly trusted: boolean;
  /** `http` or `https`: how the client reached goround. */
  readonly proto: string;
  /** The authority the client asked for (its `Host`). */
  readonly host: string;
  /** Drop fields whose name has a `_` (`--underscore-headers drop`). @default {false} */
  readonly dropUnderscores?: boolean;
  /** goround's own `Via` entry, e.g. `1.1 goround-3f9a1c2e` (see `proxy/via.ts`). */
  readonly via: string;
}

/**
 * The tokens listed in `Connection` fields (RFC 9110 §7.6.1): each names another hop-by-hop
 * field the sender wants removed.
 *
 * @param value The combined `Connection` value, or `null`.
 * @returns Lowercased field names.
 */
export function connectionTokens(value: string | null | undefined): string[] {
  if (!value) return [];
  return value.split(",").map((token) => token.trim().toLowerCase()).filter((t) => t !== "");
}

/** Whether a `Connection` value names no field beyond the hop-by-hop ones (the usual
 * `keep-alive` or `close`), so there is no list to split. */
function onlyHopByHop(value: string): boolean {
  return value === "keep-alive" || value === "close" || value === "Keep-Alive" ||
    value === "Close";
}

/**
 * The fields to send upstream for a client request. Drops hop-by-hop fields and those named in
 * `Connection`; drops `Host`, `Content-Length` and `Expect` (the caller writes the host and the
 * framing itself, and goround answers `100-continue` at the front); then sets
 * `X-Forwarded-For`, `X-Forwarded-Proto` and `X-Forwarded-Host`, and appends goround's entry
 * to `Via` (RFC 9110 §7.6.3: a proxy MUST; earlier entries are kept, from any peer).
 *
 * From an untrusted peer, incoming `X-Forwarded-*` and `Forwarded` fields are dropped and
 * replaced, since any client can forge them. From a trusted proxy they are kept, and the peer
 * is appended to `X-Forwarded-For`. With `dropUnderscores`, fields whose name has a `_` are
 * dropped: CGI-style backends (WSGI, Rack, PHP) fold `_` and `-` into one name, so
 * `X_Forwarded_For` would pass for `X-Forwarded-For` (nginx's `underscores_in_headers off`).
 *
 * @param headers The client's fields, names lowercased (a `Headers`, or pairs).
 * @param context The client connection.
 * @returns Name/value pairs (names lowercased), `Host` first.
 * @example
 * ```ts
 * const out = forwardRequestHeaders(new Headers({ "x-forwarded-for": "6.6.6.6" }), {
 *   clientIp: "127.0.0.1", trusted: false, proto: "http", host: "example.com",
 *   via: "1.1 goround-3f9a1c2e",
 * });
 * // [["host", "example.com"], ["x-forwarded-for", "127.0.0.1"], …]
 * ```
 */
export function forwardRequestHeaders(
  headers: Iterable<readonly [string, string]>,
  context: ForwardContext,
): [string, string][] {
  const out: [string, string][] = [];
  forwardRequestFields(headers, context, (name, value) => out.push([name, value]));
  return out;
}

/**
 * The rules of {@linkcode forwardRequestHeaders}, handing each field to `emit` in order instead
 * of collecting pairs: the proxy writes them straight into the request head.
 *
 * @param headers The client's fields, names lowercased.
 * @param context The client connection.
 * @param emit Receives each field to send, `Host` first.
 * @returns `true` when the request's `Via` already holds `context.via`: it has been through
 *   this goround before (a loop), and must not be forwarded again.
 */
export function forwardRequestFields(
  headers: Iterable<readonly [string, string]>,
  context: ForwardContext,
  emit: (name: string, value: string) => void,
): boolean {
  let named: string[] | null = null;
  for (const [name, value] of headers) {
    if (name === "connection" && !onlyHopByHop(value)) {
      named = [...(named ?? []), ...connectionTokens(value)];
    }
  }
  emit("host", context.host);
  let priorFor: string | null = null;
  let proto: string | null = null;
  let host: string | null = null;
  const dropUnderscores = context.dropUnderscores === true;
  let via: string | null = null;
  let looped = false;
  for (const [name, value] of headers) {
    if (HOP_BY_HOP.has(name) || (named !== null && named.includes(name))) continue;
    if (dropUnderscores && name.includes("_")) continue;
    switch (name) {
      case "host":
      case "content-length": // framing is re-derived (RFC 9112 §6.3); duplicates are folded
      case "expect": // 100-continue is a hop-level handshake (RFC 9110 §10.1.1)
        continue;
      case "x-forwarded-for":
        if (context.trusted) priorFor = priorFor === null ? value : `${priorFor}, ${value}`;
        continue;
      case "x-forwarded-proto":
        if (context.trusted) proto = value;
        continue;
      case "x-forwarded-host":
        if (context.trusted) host = value;
        continue;
      case "forwarded": // RFC 7239: only a trusted proxy's claims are passed on
        if (!context.trusted) continue;
        break;
      case "x-request-id": // the caller sets the one it kept or made
        continue;
      case "via": // RFC 9110 §7.6.3: append to the list, as one field
        if (value.includes(context.via)) looped = true;
        via = via === null ? value : `${via}, ${value}`;
        continue;
    }
    emit(name, value);
  }
  // De-facto X-Forwarded-For: the client chain, then the peer (MDN; RFC 7239 §7.4 describes it).
  emit(
    "x-forwarded-for",
    priorFor === null ? context.clientIp : `${priorFor}, ${context.clientIp}`,
  );
  emit("x-forwarded-proto", proto ?? context.proto);
  emit("x-forwarded-host", host ?? context.host);
  emit("via", via === null ? context.via : `${via}, ${context.via}`);
  return looped;
}

/**
 * The fields to pass to the client from a backend response: everything except hop-by-hop
 * fields and those named in the response's `Connection` (RFC 9110 §7.6.1). `Content-Length` is
 * kept only when `keepLength` (it then describes the body the client gets).
 *
 * @param headers The backend's fields, names lowercased.
 * @param keepLength Whether to keep `Content-Length`.
 * @returns The filtered pairs.
 */
export function forwardResponseHeaders(
  headers: readonly [string, string][],
  keepLength: boolean,
): [string, string][] {
  let named: string[] | null = null;
  for (const [name, value] of headers) {
    if (name === "connection" && !onlyHopByHop(value)) {
      named = [...(named ?? []), ...connectionTokens(value)];
    }
  }
  const out: [string, string][] = [];
  for (const pair of headers) {
    const name = pair[0];
    if (HOP_BY_HOP.has(name) || (named !== null && named.includes(name))) continue;
    if (name === "content-length" && !keepLength) continue;
    out.push(pair);
  }
  return out;
}
