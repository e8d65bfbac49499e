/**
 * What a reload that replaces the front end (a new TLS certificate, or another `--engine`)
 * costs clients under load: goround on loopback with `--workers N`, clients sending requests
 * in a loop (a new connection each, or kept alive), a SIGHUP every `--every` with the
 * certificate (or engine) changed on disk, and every failed request counted by kind.
 *
 * ```sh
 * deno run --unstable-net --allow-net --allow-read --allow-write=/tmp \
 *   --allow-run="$(deno eval 'console.log(Deno.execPath())')",openssl,kill \
 *   tools/reload_load.ts --front tls|engine|none --reloads 20 --clients 8 [--keep-alive]
 * ```
 *
 * @module
 */

import { parseArgs } from "node:util";
import { sendSignal, startGoround, waitFor } from "../tests/support/helpers.ts";
import { makeCa, makeServerCert } from "../tests/support/certs.ts";

/** A run's settings. */
export interface ReloadLoadOptions {
  /** `tls`: a new certificate each reload; `engine`: goround and deno in turn, plain HTTP;
   * `none`: TLS, nothing changed (the baseline). */
  readonly front: "tls" | "engine" | "none";
  /** SIGHUPs, one after another. */
  readonly reloads: number;
  /** Time between two reloads, ms. */
  readonly every: number;
  /** Client loops running at once. */
  readonly clients: number;
  /** goround's `--workers`. */
  readonly workers: number;
  /** Whether a client keeps its connection for many requests (else one request each). */
  readonly keepAlive: boolean;
}

/** What the clients saw. */
export interface ReloadLoadResult {
  /** Requests answered 200. */
  readonly ok: number;
  /** Failed requests by kind: `refused`, `reset`, `closed before the answer (fresh|reused)`. */
  readonly failures: Record<string, number>;
}

/** Reads one response (the backend's two-byte `ok` body) or `""` if the server closed first. */
async function readAnswer(conn: Deno.Conn, buf: Uint8Array): Promise<string> {
  let text = "";
  while (!text.endsWith("\r\n\r\nok")) {
    const n = await conn.read(buf);
    if (n === null) return text;
    text += new TextDecoder().decode(buf.subarray(0, n));
  }
  return text;
}

/** fetch's failures carry the cause in their message only. */
function fetchFailure(error: unknown): string {
  const text = `${(error as Error).message} ${((error as Error).cause as Error)?.message ?? ""}`;
  if (/refused/i.test(text)) return "refused";
  if (/reset/i.test(text)) return "reset";
  return "closed before the answer (fresh)";
}

function kindOf(error: unknown): string {
  if (error instanceof Deno.errors.ConnectionRefused) return "refused";
  if (error instanceof Deno.errors.ConnectionReset) return "reset";
  return (error as Error).name;
}

/**
 * Runs the load and the reloads, and stops everything it started.
 *
 * @param options The run's settings.
 * @returns The clients' outcome.
 */
export async function measureReloads(options: ReloadLoadOptions): Promise<ReloadLoadResult> {
  const dir = await Deno.makeTempDir({ prefix: "goround-reload-load-" });
  const ca = await makeCa(dir, "ca");
  const certs = [
    await makeServerCert(dir, { name: "even", ca, serial: "0E" }),
    await makeServerCert(dir, { name: "odd", ca, serial: "0D" }),
  ];
  const [cert, key, file] = [`${dir}/served.pem`, `${dir}/served.key`, `${dir}/goround.json`];
  await Deno.copyFile(certs[0]!.cert, cert);
  await Deno.copyFile(certs[0]!.key, key);
  await Deno.writeTextFile(file, JSON.stringify({ engine: "goround" }));
  const backend = Deno.serve(
    { hostname: "127.0.0.1", port: 0, onListen: () => {} },
    () => new Response("ok"),
  );
  const tls = options.front !== "engine";
  const proxy = await startGoround([
    "--config",
    file,
    "--backend",
    `http://127.0.0.1:${backend.addr.port}`,
    ...(tls ? ["--tls-cert", cert, "--tls-key", key] : []),
    "--workers",
    String(options.workers),
    "--access-log",
    "off",
  ]);
  const caCerts = [await Deno.readTextFile(ca.cert)];
  // TCP_NODELAY, as browsers and curl set it: with Nagle, a request written right after the
  // handshake waits for a delayed ACK (40 ms), and the connection looks idle all that time.
  const connect = async (): Promise<Deno.Conn> => {
    const tcp = await Deno.connect({ hostname: "127.0.0.1", port: proxy.port });
    tcp.setNoDelay(true);
    return tls ? await Deno.startTls(tcp, { hostname: "localhost", caCerts }) : tcp;
  };
  const request = new TextEncoder().encode("GET / HTTP/1.1\r\nHost: localhost\r\n\r\n");
  let ok = 0;
  let stop = false;
  const failures: Record<string, number> = {};
  const fail = (kind: string) => (failures[kind] = (failures[kind] ?? 0) + 1);
  /** One request on a new connection, as curl makes it (Deno's fetch sets TCP_NODELAY). */
  const once = async () => {
    const http = Deno.createHttpClient({ poolMaxIdlePerHost: 0, caCerts });
    try {
      const res = await fetch(`${tls ? "https://localhost" : "http://127.0.0.1"}:${proxy.port}/`, {
        client: http,
        headers: { connection: "close" },
      });
      await res.text();
      if (res.status === 200) ok++;
      else fail(`HTTP ${res.status}`);
    } catch (error) {
      fail(fetchFailure(error));
    } finally {
      http.close();
    }
  };
  /** Requests on one connection until the server closes it, then a new one. */
  const keptAlive = async () => {
    const buf = new Uint8Array(4096);
    let conn: Deno.Conn | null = null;
    let used = 0;
    try {
      conn = await connect();
      while (!stop) {
        await conn.write(request);
        const answer = await readAnswer(conn, buf);
        if (!answer.startsWith("HTTP/1.1 200")) {
          fail(`closed before the answer (${used ? "reused" : "fresh"})`);
          break;
        }
        ok++;
        used++;
        if (/\r\nconnection: close\r\n/i.test(answer)) break;
      }
    } catch (error) {
      fail(kindOf(error));
    } finally {
      try {
        conn?.close();
      } catch {
        // Closed by the server.
      }
    }
  };
  const client = async () => {
    while (!stop) await (options.keepAlive ? keptAlive() : once());
  };
  const clients = Array.from({ length: options.clients }, client);
  try {
    for (let i = 1; i <= options.reloads; i++) {
      if (options.front === "tls") {
        await Deno.copyFile(certs[i % 2]!.cert, cert);
        await Deno.copyFile(certs[i % 2]!.key, key);
      } else if (options.front === "engine") {
        await Deno.writeTextFile(file, JSON.stringify({ engine: i % 2 ? "deno" : "goround" }));
      }
      const from = proxy.stderr.length;
      await sendSignal(proxy.pid, "HUP");
      await waitFor(() => proxy.stderr.slice(from).some((l) => l.includes("reloaded")), {
        what: `reload ${i}`,
        exited: proxy.exited,
      });
      await new Promise((resolve) => setTimeout(resolve, options.every));
    }
  } finally {
    stop = true;
    await Promise.all(clients);
    await proxy.stop();
    await backend.shutdown();
    await Deno.remove(dir, { recursive: true });
  }
  return { ok, failures };
}

if (import.meta.main) {
  const { values } = parseArgs({
    options: {
      front: { type: "string", default: "tls" },
      reloads: { type: "string", default: "20" },
      every: { type: "string", default: "200" },
      clients: { type: "string", default: "8" },
      workers: { type: "string", default: "2" },
      "keep-alive": { type: "boolean", default: false },
    },
  });
  if (values.front !== "tls" && values.front !== "engine" && values.front !== "none") {
    console.error(`--front: "${values.front}": expected tls, engine or none`);
    Deno.exit(2);
  }
  const options: ReloadLoadOptions = {
    front: values.front,
    reloads: Number(values.reloads),
    every: Number(values.every),
    clients: Number(values.clients),
    workers: Number(values.workers),
    keepAlive: values["keep-alive"],
  };
  const result = await measureReloads(options);
  console.log(JSON.stringify({ ...options, ...result }));
}
