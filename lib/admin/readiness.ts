/**
 * Whether goround is ready to take traffic (`GET /readyz`), decided from its backends alone: a
 * load balancer with no usable backend can only answer 503, so an orchestrator should send
 * traffic elsewhere until one is back (Envoy's and Kubernetes' readiness, as opposed to liveness).
 *
 * @module
 */

import type { BackendState } from "../control/supervisor.ts";

/** One backend, as readiness sees it. */
export interface ReadinessInput {
  /** Whether new requests may go to it now: up, enabled and not ejected. */
  readonly usable: boolean;
  /** Its state, for the reason. */
  readonly state: BackendState;
}

/** The verdict: `ready`, and one line saying why. */
export interface Readiness {
  /** `true` while at least one backend is usable. */
  readonly ready: boolean;
  /** `ready: 2 of 3 backends usable`, or `not ready: no usable backend (3 down)`. */
  readonly reason: string;
}

/** The states that keep a backend out, in the order the reason lists them. */
const OUT_STATES: readonly BackendState[] = ["down", "ejected", "draining", "drained"];

/**
 * Readiness from the pool's backends. Panic mode does not make goround ready: it tries backends
 * that look down, which only helps when the health view is wrong.
 *
 * @param backends Every member of the pool.
 * @param options `panic`: whether panic mode is on (named in the reason).
 * @returns The verdict.
 * @example
 * ```ts
 * readiness([{ usable: false, state: "down" }], { panic: false }).reason;
 * // "not ready: no usable backend (1 down)"
 * ```
 */
export function readiness(
  backends: readonly ReadinessInput[],
  options: { readonly panic: boolean },
): Readiness {
  const usable = backends.filter((b) => b.usable).length;
  if (usable > 0) {
    return {
      ready: true,
      reason: `ready: ${usable} of ${backends.length} backend${
        backends.length === 1 ? "" : "s"
      } usable`,
    };
  }
  // Requests still go to a backend out by passive verdict alone when nothing else is usable (a
  // passive verdict never empties the pool): goround serves, so it is ready.
  const ejected = backends.filter((b) => b.state === "ejected").length;
  if (ejected > 0) {
    return {
      ready: true,
      reason: `ready: 0 of ${backends.length} backends usable; ${ejected} ejected still ${
        ejected === 1 ? "takes" : "take"
      } requests (a passive verdict never empties the pool)`,
    };
  }
  if (backends.length === 0) return { ready: false, reason: "not ready: no backend in the pool" };
  const details = OUT_STATES
    .map((state) => [state, backends.filter((b) => b.state === state).length] as const)
    .filter(([, n]) => n > 0)
    .map(([state, n]) => `${n} ${state}`);
  if (options.panic) details.push("panic mode on");
  // None listed: an "up" one that is not usable, a moment before the health view catches up.
  const detail = details.length > 0 ? ` (${details.join(", ")})` : "";
  return { ready: false, reason: `not ready: no usable backend${detail}` };
}
