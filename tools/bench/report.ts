/**
 * The benchmark's results and how they are shown: one Markdown table per scenario, with
 * goround's ratio to every other row, and the sanity verdict that decides the exit status.
 *
 * @module
 */

import { scenario, type ScenarioId, totalErrors, type WrkErrors } from "./wrk.ts";

/** What is measured: one backend directly, goround's two front ends, goround from another
 * checkout (with `--compare`, to measure a change against it), its other policies, the
 * floor (a minimal Deno proxy: what the runtime itself costs), the ladder from the least HTTP
 * proxy on Deno up to goround (see `least_proxy.ts`; only with `--targets`), and the peers. */
export const TARGET_IDS = [
  "direct",
  "goround",
  "goround-compare",
  "goround-deno",
  "goround-least-conn",
  "goround-hash",
  "deno-floor",
  "deno-least",
  "goround-front",
  "goround-client",
  "nginx",
  "haproxy",
  "caddy",
] as const;

/** One thing measured. */
export type TargetId = typeof TARGET_IDS[number];

/** The ladder's rungs between the floor and goround: small GETs only, one thread each, run only
 * when named with `--targets`. */
export const LADDER_IDS: readonly TargetId[] = ["deno-least", "goround-front", "goround-client"];

/** The figures of one target in one scenario. */
export interface Measurement {
  /** Requests per second. */
  readonly rps: number;
  /** Median latency, ms. */
  readonly p50: number;
  /** 90th percentile latency, ms. */
  readonly p90: number;
  /** 99th percentile latency, ms. */
  readonly p99: number;
  /** Errors of the measured run. */
  readonly errors: WrkErrors;
  /** Errors of the warm-up run (not in the figures, but they count for the verdict). */
  readonly warmupErrors: number;
  /** Peak resident memory of the proxy's process tree during the run, KiB (`null`: n/a). */
  readonly peakRssKiB: number | null;
  /** CPU time (user + system) of the proxy's process tree per request over the run, µs
   * (`null`: n/a, e.g. the direct hit, which has no proxy). */
  readonly cpuPerRequest: number | null;
  /** Payload throughput, MiB/s (`null` for the small-request scenarios). */
  readonly mibPerSecond: number | null;
  /** The status line of a single probe request sent before the load. */
  readonly probe: string;
}

/** A measurement, or why there is none. */
export type Outcome =
  | { readonly kind: "measured"; readonly measurement: Measurement }
  | { readonly kind: "skipped"; readonly reason: string };

/** One cell of the results: a target in a scenario. */
export interface Row {
  /** What was measured. */
  readonly target: TargetId;
  /** Its label in the table. */
  readonly label: string;
  /** The workload. */
  readonly scenario: ScenarioId;
  /** The figures, or why there are none. */
  readonly outcome: Outcome;
  /** With `--rounds`: the req/s of every round, in run order (see {@linkcode combineRounds}). */
  readonly rounds?: readonly number[];
}

/** Where and how the benchmark ran, for the report's header. */
export interface RunInfo {
  /** ISO 8601 time of the start. */
  readonly date: string;
  /** `navigator.hardwareConcurrency`. */
  readonly cores: number;
  /** CPU model from `/proc/cpuinfo` (or "unknown"). */
  readonly cpu: string;
  /** Total memory from `/proc/meminfo` (or "unknown"). */
  readonly memory: string;
  /** Versions of Deno and the tools, one string each. */
  readonly versions: readonly string[];
  /** The exact command line of this run. */
  readonly command: string;
  /** Lines describing the settings (mode, durations, ports). */
  readonly settings: readonly string[];
}

/** The sanity check's outcome. */
export interface Verdict {
  /** Whether goround passed. */
  readonly ok: boolean;
  /** What was checked, one line each. */
  readonly lines: readonly string[];
}

/** The targets that are goround itself (their errors fail the run). */
const GOROUND_TARGETS: readonly TargetId[] = [
  "goround",
  "goround-deno",
  "goround-least-conn",
  "goround-hash",
];

/**
 * Judges goround's results: the run fails if goround (either front end) did not start, had any
 * error (socket errors or responses of 400 and above, warm-up included) in any scenario, or if
 * goround's small-GET req/s is below `floor` times the direct hit's. This is a sanity floor,
 * not a timing test.
 *
 * @param rows Every result.
 * @param floor The minimum `goround req/s ÷ direct req/s` in the `get` scenario.
 * @returns The verdict.
 */
export function judge(rows: readonly Row[], floor: number): Verdict {
  const lines: string[] = [];
  let ok = true;
  let errorFree = 0;
  for (const row of rows) {
    if (!GOROUND_TARGETS.includes(row.target)) continue;
    if (row.outcome.kind === "skipped") {
      ok = false;
      lines.push(`FAIL: ${row.label}, ${row.scenario}: ${row.outcome.reason}`);
      continue;
    }
    const m = row.outcome.measurement;
    const errors = totalErrors(m.errors) + m.warmupErrors;
    if (errors > 0) {
      ok = false;
      lines.push(`FAIL: ${row.label}, ${row.scenario}: ${formatErrors(m)}`);
    } else {
      errorFree++;
    }
  }
  if (errorFree > 0) lines.push(`ok: goround had no error in ${errorFree} measured runs`);
  const direct = measured(rows, "direct", "get");
  const goround = measured(rows, "goround", "get");
  if (direct && goround) {
    const ratio = goround.rps / direct.rps;
    const pass = ratio >= floor;
    if (!pass) ok = false;
    lines.push(
      `${pass ? "ok" : "FAIL"}: goround's small-GET req/s is ${ratio.toFixed(2)}x the direct ` +
        `hit's (floor ${floor.toFixed(2)}x)`,
    );
  } else if (
    rows.some((r) => r.scenario === "get" && r.target === "goround") &&
    rows.some((r) => r.scenario === "get" && r.target === "direct")
  ) {
    ok = false;
    lines.push("FAIL: goround's small-GET req/s could not be compared with the direct hit's");
  } else {
    lines.push("not checked: the small-GET ratio (goround or direct not measured)");
  }
  for (const id of ["upload-1m", "upload-1m-chunked"] as const) {
    const up = measured(rows, "goround", id);
    const ceiling = measured(rows, "direct", id);
    if (!up || !ceiling) continue;
    lines.push(
      `info (not enforced): ${scenario(id).title.replaceAll("`", "")}: goround's throughput is ` +
        `${(up.rps / ceiling.rps).toFixed(2)}x the direct hit's (issue #3 aims at 0.90x or more)`,
    );
  }
  return { ok, lines };
}

function measured(rows: readonly Row[], target: TargetId, id: ScenarioId): Measurement | null {
  const row = rows.find((r) => r.target === target && r.scenario === id);
  return row?.outcome.kind === "measured" ? row.outcome.measurement : null;
}

/**
 * Formats a measurement's errors: `0`, or the total with its kinds, e.g.
 * `5 (read 3, status 2)`, and any warm-up errors.
 *
 * @param m The measurement.
 * @returns The text.
 */
export function formatErrors(m: Measurement): string {
  const total = totalErrors(m.errors);
  const kinds = Object.entries(m.errors).filter(([, n]) => n > 0).map(([k, n]) => `${k} ${n}`);
  let text = total === 0 ? "0" : `${total} (${kinds.join(", ")})`;
  if (m.warmupErrors > 0) text += `; warm-up ${m.warmupErrors}`;
  return text;
}

function formatMs(ms: number): string {
  return `${ms < 10 ? ms.toFixed(2) : ms.toFixed(1)} ms`;
}

/**
 * A CPU time per request, µs, to three significant figures.
 *
 * @param us Microseconds.
 * @returns The text.
 * @example
 * ```ts
 * formatMicros(25.34); // "25.3 µs"
 * ```
 */
export function formatMicros(us: number): string {
  return `${us < 100 ? us.toFixed(1) : Math.round(us).toLocaleString("en-US")} µs`;
}

function formatCount(n: number): string {
  return Math.round(n).toLocaleString("en-US");
}

function formatRatio(r: number): string {
  return Number.isFinite(r) ? `${r.toFixed(2)}x` : "—";
}

/**
 * Renders a Markdown table with padded columns.
 *
 * @param header Column titles.
 * @param rows Cells, row by row.
 * @param right Which columns are right-aligned.
 * @returns The table's lines.
 */
export function markdownTable(
  header: readonly string[],
  rows: readonly (readonly string[])[],
  right: readonly boolean[],
): string[] {
  const widths = header.map((h, i) =>
    Math.max(3, h.length, ...rows.map((r) => (r[i] ?? "").length))
  );
  const line = (cells: readonly string[]) =>
    `| ${
      widths.map((w, i) => right[i] ? (cells[i] ?? "").padStart(w) : (cells[i] ?? "").padEnd(w))
        .join(" | ")
    } |`;
  const rule = `| ${
    widths.map((w, i) => right[i] ? "-".repeat(w - 1) + ":" : "-".repeat(w)).join(" | ")
  } |`;
  return [line(header), rule, ...rows.map(line)];
}

/**
 * Renders one scenario's table: a row per target with req/s, latency percentiles, errors,
 * peak RSS, CPU time per request and goround's ratios to it, followed by notes on failed probes and skipped rows.
 *
 * @param id The scenario.
 * @param rows That scenario's results, in order.
 * @returns Markdown lines.
 */
export function scenarioTable(id: ScenarioId, rows: readonly Row[]): string[] {
  const s = scenario(id);
  const goround = measured(rows, "goround", id);
  const header = ["proxy", "req/s"];
  if (s.payload > 0) header.push("MiB/s");
  header.push(
    "p50",
    "p90",
    "p99",
    "errors",
    "peak RSS",
    "CPU/req",
    "goround ÷ this, req/s",
    "goround ÷ this, p99",
  );
  const cells: string[][] = [];
  const notes: string[] = [];
  for (const row of rows) {
    const label = row.target === "goround" ? `**${row.label}**` : row.label;
    if (row.outcome.kind === "skipped") {
      // "failed to start: haproxy exited: …" shows as "failed to start", the rest in a note.
      const reason = row.outcome.reason;
      const short = reason.split(": ")[0] ?? reason;
      cells.push([label, short, ...header.slice(2).map(() => "")]);
      if (short !== reason) notes.push(`- ${row.label}: ${reason}`);
      continue;
    }
    const m = row.outcome.measurement;
    const line = [label, formatCount(m.rps)];
    if (s.payload > 0) line.push(m.mibPerSecond === null ? "—" : formatCount(m.mibPerSecond));
    line.push(
      formatMs(m.p50),
      formatMs(m.p90),
      formatMs(m.p99),
      formatErrors(m),
      m.peakRssKiB === null ? "—" : `${(m.peakRssKiB / 1024).toFixed(1)} MiB`,
      m.cpuPerRequest === null ? "—" : formatMicros(m.cpuPerRequest),
      goround ? formatRatio(goround.rps / m.rps) : "—",
      goround ? formatRatio(goround.p99 / m.p99) : "—",
    );
    cells.push(line);
    if (!/^HTTP\/1\.[01] 2\d\d/.test(m.probe)) {
      notes.push(`- ${row.label}: a single probe request got \`${m.probe}\``);
    }
  }
  const right = header.map((_, i) => i > 0);
  return [
    `## ${s.title}`,
    "",
    ...markdownTable(header, cells, right),
    ...(notes.length ? ["", ...notes] : []),
  ];
}

/**
 * Folds the rows of several rounds (the plan run again, targets restarted) into one row per
 * target and scenario: the figures of the round with the median req/s (the lower middle for an
 * even count), with the errors of every round added up, so the verdict sees them all, and every
 * round's req/s in `rounds`. A target skipped in any round is reported skipped, with the reason.
 *
 * @param rounds The rows of each round, in run order.
 * @returns One row per target and scenario, in the first round's order.
 */
export function combineRounds(rounds: readonly (readonly Row[])[]): Row[] {
  return (rounds[0] ?? []).map((row) => {
    const same = rounds.map((round) =>
      round.find((r) => r.target === row.target && r.scenario === row.scenario)
    );
    const runs: Measurement[] = [];
    for (const [i, r] of same.entries()) {
      if (r === undefined) return skippedIn(row, i, "not run");
      if (r.outcome.kind === "skipped") return skippedIn(row, i, r.outcome.reason);
      runs.push(r.outcome.measurement);
    }
    const median = [...runs].sort((a, b) => a.rps - b.rps)[Math.floor((runs.length - 1) / 2)]!;
    const sum = (pick: (e: WrkErrors) => number) => runs.reduce((n, m) => n + pick(m.errors), 0);
    const measurement: Measurement = {
      ...median,
      errors: {
        connect: sum((e) => e.connect),
        read: sum((e) => e.read),
        write: sum((e) => e.write),
        timeout: sum((e) => e.timeout),
        status: sum((e) => e.status),
      },
      warmupErrors: runs.reduce((n, m) => n + m.warmupErrors, 0),
    };
    return { ...row, outcome: { kind: "measured", measurement }, rounds: runs.map((m) => m.rps) };
  });
}

function skippedIn(row: Row, round: number, reason: string): Row {
  return { ...row, outcome: { kind: "skipped", reason: `round ${round + 1}: ${reason}` } };
}

/**
 * The req/s of every round, per scenario, with goround's ratio to each target round by round
 * (empty when there was one round).
 *
 * @param rows Combined rows (see {@linkcode combineRounds}).
 * @returns Markdown lines.
 */
export function roundsSection(rows: readonly Row[]): string[] {
  const count = Math.max(0, ...rows.map((r) => r.rounds?.length ?? 0));
  if (count < 2) return [];
  const out = [
    "## Rounds",
    "",
    `Every target ran ${count} times, restarted each time, one round after another. The tables ` +
    "above show the round with the median req/s; here is each round's req/s, and goround's " +
    "ratio to the target in the same round.",
  ];
  for (const id of [...new Set(rows.map((r) => r.scenario))]) {
    const inScenario = rows.filter((r) => r.scenario === id && r.rounds !== undefined);
    const goround = inScenario.find((r) => r.target === "goround")?.rounds;
    const header = ["proxy", ...Array.from({ length: count }, (_, i) => `round ${i + 1}`)];
    header.push("goround ÷ this, per round");
    const cells = inScenario.map((row) => [
      row.target === "goround" ? `**${row.label}**` : row.label,
      ...row.rounds!.map(formatCount),
      goround ? row.rounds!.map((rps, i) => formatRatio(goround[i]! / rps)).join(", ") : "—",
    ]);
    out.push(
      "",
      `### ${scenario(id).title}`,
      "",
      ...markdownTable(header, cells, header.map((_, i) => i > 0)),
    );
  }
  return out;
}

/**
 * Renders the whole report: header (date, machine, versions, command, settings), one table per
 * scenario, and the verdict.
 *
 * @param info Where and how it ran.
 * @param rows Every result, in run order.
 * @param verdict The sanity check.
 * @returns The Markdown text.
 */
export function renderReport(info: RunInfo, rows: readonly Row[], verdict: Verdict): string {
  const out: string[] = [
    "# goround benchmark",
    "",
    `- Date: ${info.date}`,
    `- Machine: ${info.cores} cores (${info.cpu}), ${info.memory} RAM`,
    `- Versions: ${info.versions.join("; ")}`,
    `- Command: \`${info.command}\``,
    ...info.settings.map((line) => `- ${line}`),
    "- Ratios: goround ÷ this, req/s above 1.00x means goround serves more requests per second; " +
    "goround ÷ this, p99 below 1.00x means goround's tail latency is lower.",
  ];
  const ids = [...new Set(rows.map((r) => r.scenario))];
  for (const id of ids) {
    out.push("", ...scenarioTable(id, rows.filter((r) => r.scenario === id)));
  }
  const rounds = roundsSection(rows);
  if (rounds.length > 0) out.push("", ...rounds);
  out.push("", `## Verdict: ${verdict.ok ? "PASS" : "FAIL"}`, "");
  out.push(...verdict.lines.map((line) => `- ${line}`));
  return out.join("\n") + "\n";
}
