/**
 * The text that describes the settings: `--help`, and `docs/flags.md` made from the same
 * definitions, so the two cannot drift apart (a test compares the file with this output).
 *
 * @module
 */

import { type Config, envName, FLAGS, type FlagSpec, type Kind } from "./config.ts";
import { formatDuration } from "./duration.ts";

/** How `--help` names each kind of value. */
const PLACEHOLDER: Partial<Record<Kind, string>> = {
  urls: "URL",
  duration: "DURATION",
  "duration-or-zero": "DURATION",
  file: "FILE",
  count: "N",
  positive: "N",
  connections: "N",
  percent: "N",
  switch: "[true|false]",
  listen: "ADDR",
  admin: "ADDR|off",
  cidrs: "CIDRS",
  hosts: "HOSTS",
  size: "SIZE",
};

const NOTES = [
  "Durations: 500ms, 10s, 1m, 1h. Sizes: 500, 64KiB, 1MiB (or 64k, 1m).",
  "Backends: http://host:port or https://host:port, with ,weight=N.",
];
const CONFIG_EXAMPLE =
  '{"backends": ["http://a:8081", {"url": "http://b:8081", "weight": 2}], "health-interval": "5s"}';

function usage(flag: FlagSpec): string {
  return `--${flag.name} ${PLACEHOLDER[flag.kind] ?? "VALUE"}`;
}

/**
 * The `--help` text: usage, then every flag with its variable and default.
 *
 * @returns The text, ending in a newline.
 */
export function helpText(): string {
  const lines = [
    "goround: an HTTP load balancer (round-robin, health checks, zero-loss failover)",
    "",
    "Usage: goround [flags]",
    "       goround check [flags]      validate the settings (e.g. --config FILE) and print them",
    "",
    "Flags (each also read from the environment variable shown, or from the --config file):",
  ];
  const names = FLAGS.map((flag) => `  ${usage(flag)}`);
  const width = Math.max(...names.map((n) => n.length)) + 2;
  for (const [i, flag] of FLAGS.entries()) {
    const fallback = flag.fallback === "" ? "" : ` (default ${flag.fallback})`;
    lines.push(`${names[i]!.padEnd(width)}${flag.help}${fallback} [${envName(flag.name)}]`);
  }
  lines.push("  -h, --help".padEnd(width) + "show this help");
  lines.push("  --version".padEnd(width) + "print the version");
  lines.push("", ...NOTES, `Config file: ${CONFIG_EXAMPLE}`);
  return lines.join("\n") + "\n";
}

/**
 * `docs/flags.md`: every flag as a table row, from the definitions `--help` prints.
 *
 * @returns The Markdown text, ending in a newline.
 */
export function flagsMarkdown(): string {
  const cell = (text: string) => text.replaceAll("|", "\\|");
  const rows = FLAGS.map((flag) =>
    `| \`${cell(usage(flag))}\` | \`${envName(flag.name)}\` | ${
      flag.fallback === "" ? "" : `\`${cell(flag.fallback)}\``
    } | ${cell(flag.help)} |`
  );
  return [
    "# Flags",
    "",
    "<!-- Made by `deno task flags-doc` from lib/config/config.ts; a test keeps it in step. -->",
    "",
    "Every flag can also be set by the environment variable shown, or by a key of the same name in",
    "the JSON file given with `--config`. A flag wins over its variable, which wins over the file.",
    "`goround check` validates the settings and prints them; a reload (SIGHUP) re-reads the file.",
    "",
    "| flag | variable | default | meaning |",
    "| --- | --- | --- | --- |",
    ...rows,
    "",
    ...NOTES.map((note) => `${note}`).join(" ").split("\n"),
    "",
    "A config file uses the flag names as keys:",
    "",
    "```json",
    JSON.stringify(JSON.parse(CONFIG_EXAMPLE), null, 2),
    "```",
    "",
  ].join("\n");
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
