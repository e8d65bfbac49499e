/**
 * goround's own listen address refused as a backend: a pool that contains goround itself turns
 * one request into an endless chain of requests to itself, each holding two file descriptors,
 * until there are none left. Told from the address alone (without enumerating the machine's
 * interfaces); `Via` (`proxy/via.ts`) catches the rest.
 *
 * @module
 */

/** A host and port: a backend's, or where goround listens. */
export interface Address {
  /** Host name or address (IPv6 without brackets). */
  readonly hostname: string;
  /** TCP port. */
  readonly port: number;
}

/** Whether a host is the wildcard: as a destination it is this machine. */
function isWildcard(host: string): boolean {
  return host === "0.0.0.0" || host === "::" || host === "";
}

/** Loopback names and addresses: 127.0.0.0/8, ::1, `localhost`. */
function isLoopbackHost(host: string): boolean {
  return host === "localhost" || host === "::1" || /^127\.\d+\.\d+\.\d+$/.test(host);
}

/** A host as compared here: lowercase, and an IPv4-mapped IPv6 address as its IPv4 address
 * (`::ffff:7f00:1`, as `URL` writes `[::ffff:127.0.0.1]`, is 127.0.0.1). */
function canonical(host: string): string {
  const lower = host.toLowerCase();
  const dotted = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/.exec(lower);
  if (dotted) return dotted[1]!;
  const hex = /^::ffff:([0-9a-f]{1,4}):([0-9a-f]{1,4})$/.exec(lower);
  if (!hex) return lower;
  const [high, low] = [parseInt(hex[1]!, 16), parseInt(hex[2]!, 16)];
  return `${high >> 8}.${high & 255}.${low >> 8}.${low & 255}`;
}

/** The other hosts that reach a listener bound to `bound` (not the wildcard): `localhost`
 * and the wildcard reach the loopback address of their family. */
function otherNames(bound: string): readonly string[] {
  if (bound === "localhost") return ["127.0.0.1", "::1", "0.0.0.0", "::"];
  if (bound === "127.0.0.1") return ["localhost", "0.0.0.0"];
  if (bound === "::1") return ["localhost", "::"];
  return [];
}

/**
 * Whether a backend address is goround's own listener: the same port, and a host that reaches
 * it. A listener on the wildcard (`:8000`) takes every local address, so any loopback host or
 * the wildcard itself is goround; a listener on one address is reached through that address
 * (and `localhost` and the wildcard, for 127.0.0.1 and ::1), not through another loopback
 * address. A local interface's address, or a name for one, is not seen here; `Via` catches
 * those.
 *
 * @param backend The backend's host (IPv6 without brackets) and port.
 * @param listen Where goround listens, with the port it got (0: not known yet, never own).
 * @returns `true` when requests to the backend would come back to goround.
 * @example
 * ```ts
 * isOwnAddress({ hostname: "localhost", port: 8000 }, { hostname: "0.0.0.0", port: 8000 }); // true
 * isOwnAddress({ hostname: "127.0.0.2", port: 8000 }, { hostname: "127.0.0.1", port: 8000 }); // false
 * ```
 */
export function isOwnAddress(backend: Address, listen: Address): boolean {
  if (listen.port === 0 || backend.port !== listen.port) return false;
  const host = canonical(backend.hostname);
  const bound = canonical(listen.hostname);
  if (host === bound) return true;
  if (isWildcard(bound)) return isWildcard(host) || isLoopbackHost(host);
  return otherNames(bound).includes(host);
}

/** One of goround's own listeners, and how a message names it. */
export interface OwnListener extends Address {
  /** `it` for the proxy, `its admin API`, `its HTTP redirect`. */
  readonly role: string;
}

/**
 * goround's own listeners, none of which may be a backend: through the admin address a client
 * of the proxy would drive the admin API (drain, add, take over).
 *
 * @param config `admin` and `redirectHttp` as configured (`null`: off).
 * @param listening Where the proxy listens, with the port it got.
 * @returns The listeners.
 */
export function ownListeners(
  config: { readonly admin: Address | null; readonly redirectHttp: Address | null },
  listening: Address,
): readonly OwnListener[] {
  return [
    { ...listening, role: "it" },
    ...(config.admin ? [{ ...config.admin, role: "its admin API" }] : []),
    ...(config.redirectHttp ? [{ ...config.redirectHttp, role: "its HTTP redirect" }] : []),
  ];
}

/** A single address is the proxy's listener. */
function listenersOf(listen: Address | readonly OwnListener[]): readonly OwnListener[] {
  return "port" in listen ? [{ ...(listen as Address), role: "it" }] : listen;
}

/** The own listener that `backend` reaches, if any. */
function reached(
  backend: Address,
  listen: Address | readonly OwnListener[],
): OwnListener | undefined {
  return listenersOf(listen).find((own) => isOwnAddress(backend, own));
}

/**
 * The first backend that is one of goround's own listeners, if any.
 *
 * @param backends The pool.
 * @param listen Where goround listens, with the port it got, or all its listeners.
 * @returns The backend, or `undefined`.
 */
export function ownBackend<T extends Address>(
  backends: readonly T[],
  listen: Address | readonly OwnListener[],
): T | undefined {
  return backends.find((backend) => reached(backend, listen) !== undefined);
}

/**
 * Whether a backend is one of goround's own listeners.
 *
 * @param backend The backend.
 * @param listen goround's listeners.
 * @returns `true` when requests to it would reach goround itself.
 */
export function isOwnListener(backend: Address, listen: readonly OwnListener[]): boolean {
  return reached(backend, listen) !== undefined;
}

/**
 * The message for a backend refused as goround's own address.
 *
 * @param backend The backend.
 * @param listen Where goround listens, or all its listeners.
 * @returns For example `"http://localhost:8000" is goround's own address (it listens on
 *   :8000): expected another server`.
 */
export function ownAddressMessage(
  backend: Address & { readonly url: string },
  listen: Address | readonly OwnListener[],
): string {
  const own = reached(backend, listen) ?? listenersOf(listen)[0]!;
  const host = isWildcard(own.hostname) ? "" : own.hostname;
  const at = `${host.includes(":") ? `[${host}]` : host}:${own.port}`;
  return `"${backend.url}" is goround's own address (${own.role} listens on ${at}): expected another server`;
}
