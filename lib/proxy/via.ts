/**
 * `Via` (RFC 9110 §7.6.3): every forwarded request carries `Via: 1.1 goround-<id>`, `<id>`
 * random per goround process, and a request that already names this goround's entry came round
 * a loop (through another address of this machine, a port forward, a DNS name, another proxy):
 * it is answered 508 Loop Detected (RFC 5842 §7.2) before any backend is contacted. The other
 * guard, refusing goround's own listen address as a backend, is `config/own_address.ts`.
 *
 * @module
 */

/**
 * A random id for this goround process, made once (in the main thread) and shared by every
 * worker and every reload.
 *
 * @returns Eight hex digits.
 */
export function newInstanceId(): string {
  return crypto.randomUUID().slice(0, 8);
}

/**
 * This goround's `Via` entry: the protocol it forwards with and its pseudonym (RFC 9110
 * §7.6.3 allows a pseudonym in place of the host, which keeps the machine's name private).
 *
 * @param instanceId The process's id ({@linkcode newInstanceId}).
 * @returns For example `1.1 goround-3f9a1c2e`.
 */
export function viaEntry(instanceId: string): string {
  return `1.1 goround-${instanceId}`;
}

/** The path of the request a goround handing over sends to its own port, naming its successor
 * in `Via`: the successor answers it 508 like any loop, without the loop's log line. */
export const TAKEOVER_PROBE_PATH = "/.well-known/goround-takeover";
