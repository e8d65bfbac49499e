/**
 * Parsing of DNS discovery settings (`--discover`, `--discover-nameserver`): what the settings
 * say, without any lookup (that is `control/discovery.ts`).
 *
 * @module
 */

import { ValidationError } from "../errors.ts";

/** What to discover: addresses of a name on a fixed port, or SRV records. */
export type DiscoverySpec =
  | { readonly kind: "dns"; readonly name: string; readonly port: number }
  | { readonly kind: "srv"; readonly name: string };

/** A DNS server to ask instead of the system's resolvers (`/etc/resolv.conf`). */
export interface NameServer {
  /** Its IP address (IPv6 without brackets), as `Deno.resolveDns` takes it. */
  readonly ipAddr: string;
  /** Its UDP/TCP port. @default {53} */
  readonly port: number;
}

/** One DNS label: letters, digits, `-`, and `_` (SRV names have `_http._tcp` labels). */
const LABEL = "[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?";

/** A DNS name: labels joined by dots, at most 253 characters, optionally fully qualified. */
const HOST_NAME = new RegExp(`^(?=.{1,253}\\.?$)${LABEL}(?:\\.${LABEL})*\\.?$`);

/**
 * Parses a discovery target: `dns:NAME:PORT` (A and AAAA records of `NAME`, on `PORT`) or
 * `srv:NAME` (SRV records of `NAME`).
 *
 * @param text The target, e.g. `dns:app.internal:8080` or `srv:_http._tcp.app.service.consul`.
 * @returns The parsed target.
 * @throws {ValidationError} When it is neither form, the name is not a DNS name, or the port is not
 *   1 to 65535.
 * @example
 * ```ts
 * parseDiscoverySpec("dns:app.internal:8080"); // { kind: "dns", name: "app.internal", port: 8080 }
 * parseDiscoverySpec("srv:_http._tcp.app.service.consul").kind; // "srv"
 * ```
 */
export function parseDiscoverySpec(text: string): DiscoverySpec {
  const trimmed = text.trim();
  const dns = /^dns:([^:]+):(\d{1,5})$/.exec(trimmed);
  if (dns && HOST_NAME.test(dns[1]!) && Number(dns[2]) >= 1 && Number(dns[2]) <= 65535) {
    return { kind: "dns", name: dns[1]!, port: Number(dns[2]) };
  }
  const srv = /^srv:(.+)$/.exec(trimmed);
  if (srv && HOST_NAME.test(srv[1]!)) return { kind: "srv", name: srv[1]! };
  throw new ValidationError(
    `"${text}" is not a discovery target: expected dns:NAME:PORT or srv:NAME`,
  );
}

/**
 * Writes a discovery target the way {@linkcode parseDiscoverySpec} reads it (for logs).
 *
 * @param spec The target.
 * @returns For example `dns:app.internal:8080`.
 */
export function formatDiscoverySpec(spec: DiscoverySpec): string {
  return spec.kind === "dns" ? `dns:${spec.name}:${spec.port}` : `srv:${spec.name}`;
}

function isIpv4(text: string): boolean {
  const parts = text.split(".");
  return parts.length === 4 && parts.every((p) => /^\d{1,3}$/.test(p) && Number(p) <= 255);
}

function isIpv6(text: string): boolean {
  if (!/^[0-9A-Fa-f:.]+$/.test(text) || !text.includes(":")) return false;
  try {
    new URL(`http://[${text}]/`);
    return true;
  } catch {
    return false;
  }
}

/**
 * Parses a name server address: an IP address with an optional port (default 53); an IPv6
 * address takes brackets when it has a port.
 *
 * @param text For example `127.0.0.1:5353`, `10.0.0.2`, `[::1]:5353` or `::1`.
 * @returns The address and port, as `Deno.resolveDns`'s `nameServer` option takes them.
 * @throws {ValidationError} When it is not an IP address, or the port is not 1 to 65535.
 * @example
 * ```ts
 * parseNameServer("127.0.0.1:5353"); // { ipAddr: "127.0.0.1", port: 5353 }
 * parseNameServer("[::1]"); // { ipAddr: "::1", port: 53 }
 * ```
 */
export function parseNameServer(text: string): NameServer {
  const trimmed = text.trim();
  const match = /^\[([^\]]+)\](?::(\d{1,5}))?$/.exec(trimmed) ??
    /^([^:\[\]]+)(?::(\d{1,5}))?$/.exec(trimmed) ??
    /^([0-9A-Fa-f:.]+)()$/.exec(trimmed);
  const address = match?.[1] ?? "";
  const bracketed = trimmed.startsWith("[");
  const port = match?.[2] ? Number(match[2]) : 53;
  const valid = bracketed || address.includes(":") ? isIpv6(address) : isIpv4(address);
  if (!match || !valid || port < 1 || port > 65535) {
    throw new ValidationError(
      `"${text}" is not a name server: expected an IP address and optional port, like ` +
        `127.0.0.1:5353 or [::1]:53`,
    );
  }
  return { ipAddr: address, port };
}
