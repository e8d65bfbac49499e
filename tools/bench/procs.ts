/**
 * Child processes for the benchmark: start one with its output drained (keeping the last
 * lines for error messages), find its process tree, sample the tree's resident memory, and
 * stop the whole tree for sure.
 *
 * Deno may not read another process's `/proc` entries without `--allow-all`, so the process
 * tree comes from `ps` and memory from `cat /proc/<pid>/status`; stray descendants are killed
 * with `sh -c kill`, since `Deno.kill` needs `--allow-run` for everything.
 *
 * @module
 */

import { lineSplitter } from "../../dummy_servers.ts";

/** How many output lines a managed process keeps. */
const TAIL_LINES = 40;

/** A long-running child process (a backend, a proxy). */
export interface Managed {
  /** Its name in messages. */
  readonly name: string;
  /** Its process id. */
  readonly pid: number;
  /** The process. */
  readonly child: Deno.ChildProcess;
  /** The last lines it printed, stdout and stderr together. */
  readonly tail: readonly string[];
  /** Resolves with its exit status (its output may still be draining). */
  readonly status: Promise<Deno.CommandStatus>;
  /** Resolves once stdout and stderr are closed (after its descendants are gone too). */
  readonly drained: Promise<void>;
  /** Whether it has exited. */
  readonly hasExited: () => boolean;
}

/** Options of {@linkcode spawnManaged}. */
export interface SpawnOptions {
  /** Its name in messages. */
  readonly name: string;
  /** Extra environment variables. */
  readonly env?: Record<string, string>;
  /** Called with each line it prints. */
  readonly onLine?: (line: string) => void;
}

/**
 * Starts a command with stdin closed and stdout and stderr drained line by line.
 *
 * @param command The program.
 * @param args Its arguments.
 * @param options Name, environment, a line callback.
 * @returns The running process.
 */
export function spawnManaged(
  command: string,
  args: readonly string[],
  options: SpawnOptions,
): Managed {
  const child = new Deno.Command(command, {
    args: [...args],
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
    ...(options.env ? { env: options.env } : {}),
  }).spawn();
  const tail: string[] = [];
  const collect = async (stream: ReadableStream<Uint8Array>) => {
    const lines = stream.pipeThrough(new TextDecoderStream()).pipeThrough(lineSplitter());
    for await (const line of lines) {
      tail.push(line);
      if (tail.length > TAIL_LINES) tail.shift();
      options.onLine?.(line);
    }
  };
  const drained = Promise.all([collect(child.stdout), collect(child.stderr)]).then(() => {});
  let exited = false;
  const status = child.status.then((s) => {
    exited = true;
    return s;
  });
  return {
    name: options.name,
    pid: child.pid,
    child,
    tail,
    status,
    drained,
    hasExited: () => exited,
  };
}

/** The result of a short command. */
export interface Captured {
  /** Exit code. */
  readonly code: number;
  /** What it printed on stdout. */
  readonly stdout: string;
  /** What it printed on stderr. */
  readonly stderr: string;
}

/**
 * Runs a short command to completion.
 *
 * @param command The program.
 * @param args Its arguments.
 * @param env Extra environment variables.
 * @returns Exit code and output.
 * @throws {Deno.errors.NotFound} When the program does not exist.
 */
export async function capture(
  command: string,
  args: readonly string[],
  env: Record<string, string> = {},
): Promise<Captured> {
  const output = await new Deno.Command(command, {
    args: [...args],
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
    env,
  }).output();
  const decoder = new TextDecoder();
  return {
    code: output.code,
    stdout: decoder.decode(output.stdout),
    stderr: decoder.decode(output.stderr),
  };
}

function delay(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** Resolves `true` if `promise` settles within `ms`, `false` otherwise (no timer is left). */
async function within(promise: Promise<unknown>, ms: number): Promise<boolean> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const timeout = new Promise<false>((resolve) => (timer = setTimeout(() => resolve(false), ms)));
  try {
    return await Promise.race([promise.then(() => true), timeout]);
  } finally {
    clearTimeout(timer);
  }
}

/**
 * The process ids of `root` and all its descendants, from `ps`.
 *
 * @param root The tree's root.
 * @returns Root first; just `[root]` if `ps` fails.
 */
export async function treePids(root: number): Promise<number[]> {
  let ps: Captured;
  try {
    ps = await capture("ps", ["-e", "-o", "pid=,ppid="]);
  } catch (error) {
    if (error instanceof Deno.errors.NotFound) return [root]; // no procps
    throw error;
  }
  if (ps.code !== 0) return [root];
  const children = new Map<number, number[]>();
  for (const line of ps.stdout.split("\n")) {
    const [pid, ppid] = line.trim().split(/\s+/).map(Number);
    if (pid === undefined || ppid === undefined || !pid) continue;
    children.set(ppid, [...(children.get(ppid) ?? []), pid]);
  }
  const tree = [root];
  for (let i = 0; i < tree.length; i++) tree.push(...(children.get(tree[i]!) ?? []));
  return tree;
}

/**
 * The summed resident memory (`VmRSS`) of some processes, from `/proc/<pid>/status`.
 *
 * @param pids The processes (ones that have exited count as 0).
 * @returns KiB, or `null` if none could be read.
 */
export async function rssKiB(pids: readonly number[]): Promise<number | null> {
  if (pids.length === 0) return null;
  const cat = await capture("cat", pids.map((pid) => `/proc/${pid}/status`));
  let total = 0;
  let found = false;
  for (const match of cat.stdout.matchAll(/^VmRSS:\s+(\d+)\s+kB$/gm)) {
    total += Number(match[1]);
    found = true;
  }
  return found ? total : null;
}

/** Clock ticks per second of `/proc/<pid>/stat`'s times (`USER_HZ`: 100 on Linux, whatever
 * the kernel's own tick rate). */
const USER_HZ = 100;

/**
 * The CPU time (user plus system, all threads) one `/proc/<pid>/stat` line reports, seconds.
 *
 * @param line The file's text.
 * @returns Seconds, or `null` if the line is not a stat line.
 * @example
 * ```ts
 * cpuSecondsOf("42 (deno) S 1 42 42 0 -1 4194560 9 0 0 0 150 37 0 0 20 0 3 0");
 * // 1.87
 * ```
 */
export function cpuSecondsOf(line: string): number | null {
  // The command name (field 2) is in parentheses and may itself hold spaces or parentheses:
  // the fields are counted from the last ")". utime and stime are fields 14 and 15.
  const close = line.lastIndexOf(")");
  if (close < 0) return null;
  const fields = line.slice(close + 2).trim().split(" ");
  const utime = Number(fields[11]);
  const stime = Number(fields[12]);
  if (!Number.isInteger(utime) || !Number.isInteger(stime)) return null;
  return (utime + stime) / USER_HZ;
}

/**
 * The CPU time some processes have used so far (user plus system, all threads), summed.
 *
 * @param pids The processes (ones that have exited count as 0).
 * @returns Seconds, or `null` if none could be read.
 */
export async function cpuSeconds(pids: readonly number[]): Promise<number | null> {
  if (pids.length === 0) return null;
  const cat = await capture("cat", pids.map((pid) => `/proc/${pid}/stat`));
  let total = 0;
  let found = false;
  for (const line of cat.stdout.split("\n")) {
    const seconds = cpuSecondsOf(line);
    if (seconds === null) continue;
    total += seconds;
    found = true;
  }
  return found ? total : null;
}

/** A running memory sampler. */
export interface RssSampler {
  /** Stops sampling (within one interval) and returns the peak, KiB, or `null` if none. */
  readonly stop: () => Promise<number | null>;
}

/**
 * Samples the summed resident memory of a process tree every `intervalMs` until stopped. The
 * tree is listed once at the start (proxies do not fork while serving).
 *
 * @param root The tree's root process.
 * @param intervalMs Time between samples.
 * @returns The sampler.
 */
export function sampleTreeRss(root: number, intervalMs: number): RssSampler {
  let running = true;
  let peak: number | null = null;
  let wake: (() => void) | null = null;
  const loop = (async () => {
    const pids = await treePids(root);
    while (running) {
      const kib = await rssKiB(pids);
      if (kib !== null) peak = Math.max(peak ?? 0, kib);
      if (!running) break;
      let timer: ReturnType<typeof setTimeout> | undefined;
      await new Promise<void>((resolve) => {
        wake = resolve;
        timer = setTimeout(resolve, intervalMs);
      });
      clearTimeout(timer);
      wake = null;
    }
  })();
  return {
    stop: async () => {
      running = false;
      (wake as (() => void) | null)?.();
      await loop;
      return peak;
    },
  };
}

/**
 * Stops a process and everything it started: SIGTERM to the root, SIGKILL after
 * `graceMs`, then SIGKILL to any descendant still alive (an nginx worker whose master was
 * killed would otherwise keep the port).
 *
 * @param proc The process.
 * @param graceMs How long it may take to exit after SIGTERM.
 * @returns When the process and its output are done.
 */
export async function stopManaged(proc: Managed, graceMs = 5_000): Promise<void> {
  const tree = proc.hasExited() ? [] : await treePids(proc.pid);
  if (!proc.hasExited()) {
    try {
      proc.child.kill("SIGTERM");
    } catch {
      // It exited meanwhile.
    }
    if (!(await within(proc.status, graceMs))) {
      try {
        proc.child.kill("SIGKILL");
      } catch {
        // It exited meanwhile.
      }
    }
  }
  await proc.status;
  const rest = tree.filter((pid) => pid !== proc.pid);
  if (rest.length > 0) { // (only with ps: without it the tree is the root alone)
    const ps = await capture("ps", ["-o", "pid=", "-p", rest.join(",")]);
    const alive = ps.stdout.split("\n").map((l) => l.trim()).filter((l) => /^\d+$/.test(l));
    if (alive.length > 0) await capture("sh", ["-c", `kill -KILL ${alive.join(" ")}`]);
  }
  // Descendants may hold the output pipes for a moment after they are killed.
  await within(proc.drained, 2_000);
}

/**
 * Waits until `check` resolves `true`, polling every 50 ms.
 *
 * @param what What is awaited, for the error message.
 * @param timeoutMs How long to wait.
 * @param check The condition; it may throw to give up at once.
 * @returns When the condition holds.
 * @throws {Error} After `timeoutMs`.
 */
export async function waitUntil(
  what: string,
  timeoutMs: number,
  check: () => Promise<boolean>,
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) {
      throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    }
    await delay(50);
  }
}
