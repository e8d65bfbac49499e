/**
 * The pools a {@linkcode Config} runs: each with the settings it is served by, the top-level
 * ones with the pool's own on top. The flags-only form is one pool, {@linkcode DEFAULT_POOL}, run
 * with the top-level settings as they are.
 *
 * @module
 */

import type { Config } from "./config.ts";
import { DEFAULT_POOL } from "./routes.ts";

/** A pool and the settings it runs with. */
export interface EffectivePool {
  /** The pool's name. */
  readonly name: string;
  /** The top-level settings with the pool's own on top (its backends, its discovery). */
  readonly config: Config;
}

/**
 * The pools of the settings, in their order (the first is the one the admin API's
 * `/backends` addresses).
 *
 * @param config The settings.
 * @returns Each pool with its settings.
 */
export function effectivePools(config: Config): EffectivePool[] {
  if (config.pools.length === 0) return [{ name: DEFAULT_POOL, config }];
  return config.pools.map((pool) => ({
    name: pool.name,
    // A pool's backends are its own, never the top level's.
    config: { ...config, backends: [], discover: null, ...pool.settings },
  }));
}

/**
 * The settings with one pool's own settings replaced by `pool` (a change of its backends
 * through the admin API or DNS); the flags-only pool is the top level.
 *
 * @param config The running settings.
 * @param name The pool.
 * @param pool The pool's new effective settings.
 * @returns The settings.
 */
export function withPool(config: Config, name: string, pool: Config): Config {
  if (config.pools.length === 0) return pool;
  return {
    ...config,
    pools: config.pools.map((spec) =>
      spec.name === name ? { name, settings: { ...spec.settings, backends: pool.backends } } : spec
    ),
  };
}
