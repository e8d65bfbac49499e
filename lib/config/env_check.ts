/**
 * Warnings for `GOROUND_*` variables that are not settings: a typo such as
 * `GOROUND_HEALTH_INTERVALL` would otherwise be ignored without a word.
 *
 * goround runs with `--allow-env=GOROUND_*`, under which Deno 2.9.6 reads any one variable of
 * that prefix but cannot list them (`Deno.env.toObject()` throws `NotCapable`: it needs
 * `--allow-env` for every variable). So, with only that permission, goround asks for the names
 * one edit away from each setting's variable (a letter left out, doubled, swapped, changed or
 * added: the usual typos): tens of thousands of lookups, once, after the banner. Given the
 * whole environment (`--allow-env`), it lists the `GOROUND_*` names instead and names the
 * closest setting of any that is unknown. A name further from every setting, or with another
 * prefix, is not seen under `--allow-env=GOROUND_*`.
 *
 * @module
 */

/** The `GOROUND_*` variables read besides the settings' (test hooks and tools). */
const OTHER_VARIABLES: readonly string[] = ["GOROUND_TEST_CRASH_PATH", "GOROUND_STREAM_MB"];

const PREFIX = "GOROUND_";
const ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_";

/** How goround sees the environment. */
export interface EnvAccess {
  /** Every variable's name, or `null` when that is not permitted. */
  readonly names: () => string[] | null;
  /** Whether one variable is set. */
  readonly has: (name: string) => boolean;
}

/** An unknown variable and the setting it most likely meant. */
export interface UnknownVariable {
  /** The variable, e.g. `GOROUND_HEALTH_INTERVALL`. */
  readonly name: string;
  /** The closest setting's variable, or `null` when none is close. */
  readonly closest: string | null;
}

/**
 * The edit distance of two names: insertions, deletions, substitutions and swaps of two
 * neighbouring characters, each 1 (optimal string alignment).
 *
 * @param a One name.
 * @param b The other.
 * @returns The distance.
 * @example
 * ```ts
 * editDistance("INTERVALL", "INTERVAL"); // 1
 * ```
 */
export function editDistance(a: string, b: string): number {
  const rows: number[][] = [];
  for (let i = 0; i <= a.length; i++) {
    const row = [i];
    for (let j = 1; j <= b.length; j++) {
      if (i === 0) {
        row.push(j);
        continue;
      }
      const cost = a[i - 1] === b[j - 1] ? 0 : 1;
      let best = Math.min(rows[i - 1]![j]! + 1, row[j - 1]! + 1, rows[i - 1]![j - 1]! + cost);
      if (i > 1 && j > 1 && a[i - 1] === b[j - 2] && a[i - 2] === b[j - 1]) {
        best = Math.min(best, rows[i - 2]![j - 2]! + 1);
      }
      row.push(best);
    }
    rows.push(row);
  }
  return rows[a.length]![b.length]!;
}

/**
 * The known variable closest to `name`, if it is close: within 3 edits, and fewer than a third
 * of the name's own length after the prefix.
 *
 * @param name An unknown variable.
 * @param known The settings' variables.
 * @returns The closest, or `null`.
 */
export function closestVariable(name: string, known: readonly string[]): string | null {
  let best: string | null = null;
  let distance = Infinity;
  for (const candidate of known) {
    const d = editDistance(name, candidate);
    if (d < distance) [best, distance] = [candidate, d];
  }
  const limit = Math.min(3, Math.ceil((name.length - PREFIX.length) / 3));
  return distance <= limit ? best : null;
}

/**
 * Calls `visit` with every name one edit away from `name`, keeping its prefix: each character
 * left out, changed, or with one added before it, and each neighbouring pair swapped.
 *
 * @param name A variable, e.g. `GOROUND_WORKERS`.
 * @param visit Called with each variant (some more than once).
 */
export function forEachTypo(name: string, visit: (variant: string) => void): void {
  const tail = name.slice(PREFIX.length);
  for (let i = 0; i <= tail.length; i++) {
    const head = PREFIX + tail.slice(0, i);
    const rest = tail.slice(i);
    const after = tail.slice(i + 1);
    for (const c of ALPHABET) visit(head + c + rest);
    if (i === tail.length) break;
    visit(head + after);
    for (const c of ALPHABET) if (c !== tail[i]) visit(head + c + after);
    if (i + 1 < tail.length) visit(head + tail[i + 1] + tail[i] + tail.slice(i + 2));
  }
}

/**
 * The `GOROUND_*` variables that are set but are not goround's.
 *
 * @param settings The settings' variables (`GOROUND_LISTEN`, …).
 * @param env How to see the environment.
 * @returns Each unknown variable, with the setting it most likely meant.
 */
export function unknownVariables(
  settings: readonly string[],
  env: EnvAccess,
): UnknownVariable[] {
  const known = new Set([...settings, ...OTHER_VARIABLES]);
  const names = env.names();
  if (names !== null) {
    return names
      .filter((name) => name.startsWith(PREFIX) && !known.has(name))
      .sort()
      .map((name) => ({ name, closest: closestVariable(name, settings) }));
  }
  const found = new Map<string, string>();
  for (const setting of settings) {
    forEachTypo(setting, (variant) => {
      if (!known.has(variant) && !found.has(variant) && env.has(variant)) {
        found.set(variant, setting);
      }
    });
  }
  return [...found.keys()].sort().map((name) => ({
    name,
    closest: closestVariable(name, settings),
  }));
}

/**
 * The environment as goround's permission lets it see it.
 *
 * @returns Access through `Deno.env`.
 */
export function denoEnv(): EnvAccess {
  return {
    names: () => {
      try {
        return Object.keys(Deno.env.toObject());
      } catch {
        return null; // --allow-env=GOROUND_*: single variables only
      }
    },
    has: (name) => {
      try {
        return Deno.env.get(name) !== undefined;
      } catch {
        return false;
      }
    },
  };
}

/**
 * The warning line for an unknown variable.
 *
 * @param unknown The variable and its closest setting.
 * @returns For example `warning: GOROUND_HEALTH_INTERVALL is not a goround setting and is
 *   ignored: did you mean GOROUND_HEALTH_INTERVAL?`.
 */
export function unknownVariableWarning(unknown: UnknownVariable): string {
  const hint = unknown.closest
    ? `did you mean ${unknown.closest}?`
    : "see goround --help for the variables";
  return `warning: ${unknown.name} is not a goround setting and is ignored: ${hint}`;
}
