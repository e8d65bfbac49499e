/**
 * Test support: a real DNS server on loopback, Debian's `dnsmasq` on a free high port, serving
 * A/AAAA records from a hosts file and SRV records from a config file, both of which a test can
 * rewrite.
 *
 * How changes reach it (checked against dnsmasq 2.90):
 * - the hosts file (`--addn-hosts`) is re-read on SIGHUP, which also clears the cache; the
 *   reload is confirmed by the `read <file>` line dnsmasq logs each time;
 * - SRV records (`srv-host=` in `--conf-file`) are NOT re-read on SIGHUP (dnsmasq re-reads no
 *   config file then), so {@linkcode DnsServer.setSrv} restarts dnsmasq on the same port.
 *
 * The flags, one by one:
 * - `--no-daemon`: stay in the foreground (our child, so its pid is ours to signal), write no
 *   pid file, keep the user id (root here: it can read the test's 0700 temporary directory);
 * - `--log-facility=-`: log to stderr only (not syslog), where the reloads are read;
 * - `--conf-file=FILE`: that file only (never `/etc/dnsmasq.conf`), holding the `srv-host=`
 *   lines;
 * - `--port=N --listen-address=127.0.0.1 --bind-interfaces`: UDP and TCP on 127.0.0.1:N only;
 * - `--no-resolv --no-hosts --addn-hosts=FILE`: no upstream servers, not `/etc/hosts`, only the
 *   test's hosts file;
 * - `--local=/test/`: names under `.test` are answered here alone, so a missing name or type
 *   gets NXDOMAIN/NODATA rather than REFUSED (dnsmasq's answer when it has no upstream).
 *
 * @module
 */

import { lineSplitter } from "../../dummy_servers.ts";
import { waitFor } from "./helpers.ts";
import { ensureDebianPackage } from "./cdp.ts";

/** Where Debian's `dnsmasq-base` package puts the server. */
export const DNSMASQ_PATH = "/usr/sbin/dnsmasq";

/**
 * Makes sure dnsmasq can run, installing Debian's `dnsmasq-base` when it is missing (`apt-get
 * update`, `apt-get install -y`; needs root and `--allow-run=apt-get,/usr/sbin/dnsmasq`).
 * `dnsmasq-base` is the server alone: the `dnsmasq` package adds a system service that would
 * try to start a resolver on port 53.
 */
export async function ensureDnsmasq(): Promise<void> {
  await ensureDebianPackage(DNSMASQ_PATH, "dnsmasq-base");
}

/** What a {@linkcode DnsServer} serves. */
export interface DnsRecords {
  /** Hosts-file text: lines of `ADDRESS NAME...` (A or AAAA by the address's family). */
  readonly hosts: string;
  /** `srv-host=` values: `_service._proto.name,target,port,priority,weight`. @default {[]} */
  readonly srv?: readonly string[];
}

/** A running dnsmasq under test. */
export interface DnsServer {
  /** Its UDP/TCP port on 127.0.0.1 (kept across restarts). */
  readonly port: number;
  /** `{ ipAddr: "127.0.0.1", port }`, for `Deno.resolveDns`'s `nameServer` option. */
  readonly nameServer: { readonly ipAddr: string; readonly port: number };
  /** Every line dnsmasq logged, over all its runs. */
  readonly log: readonly string[];
  /** Rewrites the hosts file, sends SIGHUP and waits until dnsmasq has re-read it. */
  readonly setHosts: (hosts: string) => Promise<void>;
  /** Rewrites the SRV records and restarts dnsmasq on the same port (SIGHUP would not do). */
  readonly setSrv: (srv: readonly string[]) => Promise<void>;
  /** Stops dnsmasq (SIGTERM) and waits for it to exit: the port then answers nothing. */
  readonly kill: () => Promise<void>;
  /** Starts dnsmasq again on the same port with the current files, after {@linkcode kill}. */
  readonly restart: () => Promise<void>;
  /** Stops dnsmasq and removes its files. */
  readonly close: () => Promise<void>;
}

interface Running {
  readonly child: Deno.ChildProcess;
  readonly exited: Promise<void>;
}

function freePort(): number {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = listener.addr.port;
  listener.close();
  return port;
}

/**
 * Starts dnsmasq on a free port of 127.0.0.1 serving `records`, installing it first if needed.
 *
 * @param records The hosts file and SRV records.
 * @returns The running server; {@linkcode DnsServer.close} it in a `finally`.
 * @example
 * ```ts ignore
 * const dns = await startDnsServer({ hosts: "127.0.0.1 app.test\n" });
 * try {
 *   await Deno.resolveDns("app.test", "A", { nameServer: dns.nameServer }); // ["127.0.0.1"]
 * } finally {
 *   await dns.close();
 * }
 * ```
 */
export async function startDnsServer(records: DnsRecords): Promise<DnsServer> {
  await ensureDnsmasq();
  const dir = await Deno.makeTempDir({ prefix: "goround-dns-" });
  const hostsFile = `${dir}/hosts`;
  const confFile = `${dir}/dnsmasq.conf`;
  const log: string[] = [];
  const reads = () => log.filter((line) => line.includes(`read ${hostsFile}`)).length;
  const writeSrv = (srv: readonly string[]) =>
    Deno.writeTextFile(confFile, srv.map((value) => `srv-host=${value}\n`).join(""));
  await Deno.writeTextFile(hostsFile, records.hosts);
  await writeSrv(records.srv ?? []);

  let running: Running | null = null;
  const launch = async (port: number): Promise<boolean> => {
    const before = reads();
    const child = new Deno.Command(DNSMASQ_PATH, {
      args: [
        "--no-daemon",
        "--log-facility=-",
        `--conf-file=${confFile}`,
        `--port=${port}`,
        "--listen-address=127.0.0.1",
        "--bind-interfaces",
        "--no-resolv",
        "--no-hosts",
        `--addn-hosts=${hostsFile}`,
        "--local=/test/",
      ],
      stdin: "null",
      stdout: "null",
      stderr: "piped",
    }).spawn();
    const exited = (async () => {
      const lines = child.stderr.pipeThrough(new TextDecoderStream()).pipeThrough(lineSplitter());
      for await (const line of lines) log.push(line);
      await child.status;
    })();
    running = { child, exited };
    // dnsmasq binds its sockets before it reads the hosts file, so the `read` line means it
    // answers. If the UDP port was taken it exits instead ("Address already in use").
    let gone = false;
    exited.then(() => (gone = true));
    await waitFor(() => gone || reads() > before, { timeout: 10_000, what: "dnsmasq to start" });
    if (gone) running = null;
    return !gone;
  };
  const stop = async (): Promise<void> => {
    const current = running;
    running = null;
    if (!current) return;
    try {
      current.child.kill("SIGTERM");
    } catch {
      // Exited already.
    }
    await current.exited;
  };

  let port = 0;
  for (let attempt = 0; attempt < 5 && port === 0; attempt++) {
    const candidate = freePort();
    if (await launch(candidate)) port = candidate;
  }
  if (port === 0) {
    await Deno.remove(dir, { recursive: true });
    throw new Error(`dnsmasq did not start on 127.0.0.1 (5 ports tried):\n${log.join("\n")}`);
  }

  const relaunch = async (): Promise<void> => {
    await stop();
    if (!(await launch(port))) {
      throw new Error(`dnsmasq did not restart on port ${port}:\n${log.slice(-5).join("\n")}`);
    }
  };
  return {
    port,
    nameServer: { ipAddr: "127.0.0.1", port },
    log,
    setHosts: async (hosts) => {
      await Deno.writeTextFile(hostsFile, hosts);
      if (!running) return; // read when it restarts
      const before = reads();
      running.child.kill("SIGHUP");
      await waitFor(() => reads() > before, { timeout: 10_000, what: "dnsmasq to re-read" });
    },
    setSrv: async (srv) => {
      await writeSrv(srv);
      if (running) await relaunch();
    },
    kill: stop,
    restart: relaunch,
    close: async () => {
      await stop();
      await Deno.remove(dir, { recursive: true });
    },
  };
}
