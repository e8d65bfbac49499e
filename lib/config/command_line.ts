/**
 * Reads the settings from the command line, the `GOROUND_*` environment and the `--config`
 * JSON file, in that order of precedence over the defaults, into a {@linkcode Config}.
 *
 * @module
 */

import { parseArgs } from "node:util";
import { type Backend, type Config, envName, FLAGS, type FlagSpec } from "./config.ts";
import { ownAddressMessage, ownBackend, ownListeners } from "./own_address.ts";
import { checkRules } from "./rules.ts";
import type { PoolSpec, Route } from "./routes.ts";
import { readPoolsAndRoutes } from "./routes_file.ts";
import { parseBackend, type Parsed, parseValue, splitBackends } from "./values.ts";
import { ConfigError, ValidationError } from "../errors.ts";

/** Reads an environment variable; `undefined` when unset or not permitted. */
export type EnvReader = (name: string) => string | undefined;

/** Reads a file as text (throws when it cannot). */
export type FileReader = (path: string) => string;

/** The outcome of reading the command line: settings, or a request for help or the version. */
export type Command =
  | { readonly kind: "run"; readonly config: Config }
  | { readonly kind: "help" }
  | { readonly kind: "version" };

/** What the JSON file holds: values as text by setting name, and its pools and routes. */
interface FileValues {
  /** Values as text, by setting name. */
  readonly values: Map<string, string[]>;
  /** Its `pools` and `routes`, read and checked. */
  readonly pools: PoolSpec[];
  /** Its routes. */
  readonly routes: Route[];
}

/** Values from the JSON file, as text, by setting name, and its pools and routes. */
function readConfigFile(path: string, readFile: FileReader): FileValues {
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
  const { pools: poolData, routes: routeData, ...settings } = data as Record<string, unknown>;
  const { pools, routes } = readPoolsAndRoutes({ pools: poolData, routes: routeData }, path, text);
  for (const [key, value] of Object.entries(settings)) {
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
  return { values, pools, routes };
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
 * Turns the command line, environment and (with `--config`) a JSON file into a validated
 * {@linkcode Config}: each flag's value from the first source that has it (every source is
 * validated), then the backend list, then the rules across settings.
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
  const values = readArgs(args);
  if (values.help) return { kind: "help" };
  if (values.version) return { kind: "version" };
  const flagTexts = (flag: FlagSpec): string[] => {
    const raw = values[flag.name] as string | string[] | undefined;
    const texts = raw === undefined ? [] : Array.isArray(raw) ? raw : [raw];
    // `--no-panic` wins over any `--panic` beside it.
    return flag.kind === "switch" && values[`no-${flag.name}`] ? [...texts, "false"] : texts;
  };
  const configFlag = FLAGS.find((flag) => flag.name === "config")!;
  const configFile = flagTexts(configFlag).at(-1) ?? env(envName("config")) ?? "";
  const file: FileValues = configFile === ""
    ? { values: new Map(), pools: [], routes: [] }
    : readConfigFile(configFile, readFile);
  const fileValues = file.values;
  const sourcesOf = (flag: FlagSpec): Source[] => [
    [`--${flag.name}`, flagTexts(flag)],
    [envName(flag.name), [env(envName(flag.name)) ?? ""].filter((t) => t !== "")],
    [`${configFile}: ${flag.name}`, fileValues.get(flag.name) ?? []],
  ];
  const given = new Map(FLAGS.map((flag) => [flag.name, firstGiven(flag, sourcesOf(flag))]));
  // Pools and routes come only from the config file.
  const fields: Record<string, unknown> = {
    instanceId: "",
    pools: file.pools,
    routes: file.routes,
  };
  for (const flag of FLAGS) {
    if (flag.key === undefined) continue;
    // `undefined`: not given (`null` is a value: `--admin off`).
    const found = given.get(flag.name);
    fields[flag.key] = found !== undefined
      ? found
      : computed(flag, cores) ?? parseValue(flag.kind, flag.fallback);
  }
  fields.configFile = configFile;
  fields.backends = file.pools.length > 0
    ? noTopLevelBackends(given, sourcesOf)
    : backendsOf(given, fields as unknown as Config, sourcesOf);
  const config = fields as unknown as Config;
  checkRules(config);
  return { kind: "run", config };
}

/** Where a setting's texts came from: the name to report, and the texts. */
type Source = [string, string[]];

/** The value of a setting from the first source that has it; every source is validated, even
 * one a higher source overrides (a bad value in the file is an error now, not later). */
function firstGiven(flag: FlagSpec, sources: readonly Source[]): Parsed | undefined {
  let found: Parsed | undefined;
  for (const [source, texts] of sources) {
    if (texts.length === 0) continue;
    const parsed = texts.map((text) => parseOne(flag, source, text));
    found ??= flag.kind === "urls" ? (parsed as Backend[][]).flat() : parsed.at(-1);
  }
  return found;
}

/** Defaults that depend on the machine or the pool: `--retries` (pool size - 1, as -1) and
 * `--workers` (the cores). */
function computed(flag: FlagSpec, cores: number): Parsed | undefined {
  if (flag.name === "retries") return -1;
  if (flag.name === "workers") return Math.max(1, cores);
  return undefined;
}

/** With pools, a backend belongs to a pool: the top level names none (its list is empty). */
function noTopLevelBackends(
  given: ReadonlyMap<string, Parsed | undefined>,
  sourcesOf: (flag: FlagSpec) => Source[],
): readonly Backend[] {
  for (const name of ["backend", "backends", "discover"]) {
    if (given.get(name) === undefined) continue;
    const flag = FLAGS.find((f) => f.name === name)!;
    const [source] = sourcesOf(flag).find(([, texts]) => texts.length > 0)!;
    throw new ConfigError(
      `${source}: given beside the config file's pools: expected the backends inside a pool`,
    );
  }
  return [];
}

/** The backend list: `--backend` and `--backends` together, checked as a whole. */
function backendsOf(
  given: ReadonlyMap<string, Parsed | undefined>,
  config: Config,
  sourcesOf: (flag: FlagSpec) => Source[],
): readonly Backend[] {
  const lists = [given.get("backend"), given.get("backends")] as (Backend[] | undefined)[];
  const named = lists.some((list) => list !== undefined);
  const backends = named ? lists.flatMap((list) => list ?? []) : config.backends;
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
  const listeners = ownListeners(config, config.listen);
  const own = ownBackend(backends, listeners);
  if (own) {
    // Named by the source that listed it: a flag, a variable, or the file and key.
    const lists = (text: string) =>
      splitBackends(text).some((b) => parseBackend(b).url === own.url);
    const source = ["backend", "backends"]
      .flatMap((name) => sourcesOf(FLAGS.find((f) => f.name === name)!))
      .find(([, texts]) => texts.some(lists));
    throw new ConfigError(
      `${source?.[0] ?? "--backends"}: ${ownAddressMessage(own, listeners)}`,
    );
  }
  if (config.discover !== null && named) {
    throw new ConfigError(
      `--discover: also given --backend/--backends: expected one source of backends`,
    );
  }
  return backends;
}

/** The command line as parsed by `parseArgs`: every flag's texts, by name. */
function readArgs(args: readonly string[]): Record<string, unknown> {
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
  try {
    return parseArgs({ args: joinValues(args, options), options, strict: true }).values;
  } catch (error) {
    throw new ConfigError(cliMessage(error));
  }
}

/** "--health-interval -1s": parseArgs refuses a value that starts with "-" as ambiguous; such
 * a value is joined to its flag so that the value itself gets validated (and reported). */
function joinValues(
  args: readonly string[],
  options: Record<string, { type: "string" | "boolean" }>,
): string[] {
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
  return joined;
}
