/**
 * Prometheus metrics, text exposition format 0.0.4, rendered from the shared memory (so the
 * numbers are the same whichever worker served the traffic).
 *
 * @module
 */

import { X509Certificate } from "node:crypto";
import process from "node:process";
import {
  DURATION_BUCKETS,
  gauges,
  inFlight,
  noBackendCount,
  REFUSALS,
  responseStats,
  routeHits,
  totals,
} from "../balance/pool.ts";
import { VERSION } from "../version.ts";
import { backendState, type Supervisor } from "../control/supervisor.ts";

/** Escapes a label value (backslash, double quote, newline). */
function label(value: string): string {
  return value.replaceAll("\\", "\\\\").replaceAll('"', '\\"').replaceAll("\n", "\\n");
}

const CLASSES = ["1xx", "2xx", "3xx", "4xx", "5xx"];

/**
 * Renders every metric.
 *
 * @param sup The supervisor (pool, backends).
 * @returns The exposition text, ending in a newline.
 */
export function renderMetrics(sup: Supervisor): string {
  const out: string[] = [];
  const family = (name: string, type: string, help: string) => {
    out.push(`# HELP ${name} ${help}`, `# TYPE ${name} ${type}`);
  };
  // Every backend series names its pool too (one URL may serve in two pools).
  const backends = sup.pools.flatMap((run) =>
    run.slots.map((slot) => ({
      run,
      slot,
      pool: run.pool,
      url: `pool="${label(run.name)}",backend="${label(run.table[slot]!.url)}"`,
    }))
  );

  family(
    "goround_requests_total",
    "counter",
    "Client requests answered, by the backend that answered and status class.",
  );
  for (const { slot, pool, url } of backends) {
    const stats = responseStats(pool, slot);
    stats.classes.forEach((n, i) =>
      out.push(`goround_requests_total{${url},code="${CLASSES[i]}"} ${n}`)
    );
  }
  for (const run of sup.pools) {
    out.push(
      `goround_requests_total{pool="${label(run.name)}",backend="none",code="5xx"} ${
        noBackendCount(run.pool)
      }`,
    );
  }

  family(
    "goround_request_duration_seconds",
    "histogram",
    "Time from a request's arrival until its response head was ready, by backend.",
  );
  for (const { slot, pool, url } of backends) {
    const stats = responseStats(pool, slot);
    let cumulative = 0n;
    DURATION_BUCKETS.forEach((bound, i) => {
      cumulative += stats.buckets[i] ?? 0n;
      out.push(
        `goround_request_duration_seconds_bucket{${url},le="${bound}"} ${cumulative}`,
      );
    });
    out.push(`goround_request_duration_seconds_bucket{${url},le="+Inf"} ${stats.count}`);
    out.push(
      `goround_request_duration_seconds_sum{${url}} ${Number(stats.sumMicros) / 1e6}`,
    );
    out.push(`goround_request_duration_seconds_count{${url}} ${stats.count}`);
  }

  family("goround_in_flight_requests", "gauge", "Requests being forwarded to the backend now.");
  for (const { slot, pool, url } of backends) {
    out.push(`goround_in_flight_requests{${url}} ${inFlight(pool, slot)}`);
  }

  family(
    "goround_backend_up",
    "gauge",
    "1 when the backend takes requests (healthy, not ejected, not drained), else 0.",
  );
  for (const { run, slot, url } of backends) {
    out.push(`goround_backend_up{${url}} ${backendState(run, slot) === "up" ? 1 : 0}`);
  }

  family(
    "goround_backend_attempts_total",
    "counter",
    "Attempts to forward a request to the backend, retries included.",
  );
  for (const { slot, pool, url } of backends) {
    out.push(`goround_backend_attempts_total{${url}} ${totals(pool, slot).requests}`);
  }

  family(
    "goround_backend_failures_total",
    "counter",
    "Attempts that failed: no connection, reset, timeout, bad response.",
  );
  for (const { slot, pool, url } of backends) {
    out.push(`goround_backend_failures_total{${url}} ${totals(pool, slot).failures}`);
  }

  family(
    "goround_retries_total",
    "counter",
    "Attempts that retried a request another backend failed.",
  );
  for (const { slot, pool, url } of backends) {
    out.push(`goround_retries_total{${url}} ${totals(pool, slot).retries}`);
  }

  family(
    "goround_passive_ejections_total",
    "counter",
    "Times passive failures (--max-fails) took the backend out.",
  );
  for (const { slot, pool, url } of backends) {
    out.push(
      `goround_passive_ejections_total{${url}} ${totals(pool, slot).ejections}`,
    );
  }

  family("goround_health_checks_total", "counter", "Active health checks, by result.");
  for (const { slot, pool, url } of backends) {
    const t = totals(pool, slot);
    out.push(`goround_health_checks_total{${url},result="pass"} ${t.probesOk}`);
    out.push(`goround_health_checks_total{${url},result="fail"} ${t.probesFailed}`);
  }

  family("goround_backend_bytes_in_total", "counter", "Request body bytes sent to the backend.");
  family(
    "goround_backend_bytes_out_total",
    "counter",
    "Response body bytes the backend sent (those of a length known before they were sent).",
  );
  for (const { slot, pool, url } of backends) {
    const t = totals(pool, slot);
    out.push(`goround_backend_bytes_in_total{${url}} ${t.bytesIn}`);
    out.push(`goround_backend_bytes_out_total{${url}} ${t.bytesOut}`);
  }

  const now = gauges(sup.process);
  const queued = sup.pools.reduce((sum, run) => sum + gauges(run.pool).queued, 0);
  const noBackend = sup.pools.reduce((sum, run) => sum + noBackendCount(run.pool), 0);
  family("goround_client_connections", "gauge", "Client connections open (goround's front).");
  out.push(`goround_client_connections ${now.clients}`);
  family("goround_queue_depth", "gauge", "Requests waiting for --max-conns room.");
  out.push(`goround_queue_depth ${queued}`);
  family("goround_requests_refused_total", "counter", "Requests goround refused itself.");
  for (const reason of REFUSALS) {
    out.push(`goround_requests_refused_total{reason="${reason}"} ${now.refused[reason]}`);
  }
  out.push(`goround_requests_refused_total{reason="no_backend"} ${noBackend}`);

  if (sup.config.routes.length > 0) {
    family("goround_route_requests_total", "counter", "Requests each route matched.");
    for (const route of sup.config.routes) {
      const hits = routeHits(sup.process, sup.routeSlots.get(route.name) ?? 0);
      out.push(`goround_route_requests_total{route="${label(route.name)}"} ${hits}`);
    }
  }

  family("goround_reloads_total", "counter", "Reloads (SIGHUP), by result.");
  out.push(`goround_reloads_total{result="success"} ${sup.reloads.ok}`);
  out.push(`goround_reloads_total{result="failure"} ${sup.reloads.failed}`);
  family(
    "goround_last_reload_success_timestamp_seconds",
    "gauge",
    "When the last reload succeeded (0: none yet).",
  );
  out.push(`goround_last_reload_success_timestamp_seconds ${sup.reloads.lastOk / 1000}`);

  const expiry = certificateExpiry(sup.config.pems?.cert ?? null);
  if (expiry !== null) {
    family(
      "goround_tls_certificate_expiry_timestamp_seconds",
      "gauge",
      "When the served TLS certificate expires.",
    );
    out.push(`goround_tls_certificate_expiry_timestamp_seconds ${expiry / 1000}`);
  }

  family("goround_build_info", "gauge", "goround's version and the Deno it runs on.");
  out.push(
    `goround_build_info{version="${label(VERSION)}",deno="${label(Deno.version.deno)}"} 1`,
  );
  family("goround_uptime_seconds", "gauge", "Seconds since goround started.");
  out.push(`goround_uptime_seconds ${Math.floor((Date.now() - sup.started) / 1000)}`);
  out.push(...processMetrics(sup.started));
  return out.join("\n") + "\n";
}

/** The expiry (epoch ms) of the first certificate in a PEM chain; `null` without one. */
function certificateExpiry(pem: string | null): number | null {
  if (pem === null || pem === "") return null;
  try {
    return Date.parse(new X509Certificate(pem).validTo);
  } catch {
    return null;
  }
}

/** The process metrics of the Prometheus client libraries that Deno can tell without more
 * permissions. */
function processMetrics(started: number): string[] {
  const memory = Deno.memoryUsage();
  const lines = [
    "# HELP process_resident_memory_bytes Resident memory size in bytes.",
    "# TYPE process_resident_memory_bytes gauge",
    `process_resident_memory_bytes ${memory.rss}`,
    "# HELP process_heap_bytes JavaScript heap in use by the main thread, bytes.",
    "# TYPE process_heap_bytes gauge",
    `process_heap_bytes ${memory.heapUsed}`,
    "# HELP process_start_time_seconds Start time of the process since the epoch, seconds.",
    "# TYPE process_start_time_seconds gauge",
    `process_start_time_seconds ${Math.floor(started / 1000)}`,
  ];
  // getrusage(2), through Node's API (Deno's /proc/self needs --allow-all, which goround never
  // asks for; so there is no count of open files).
  const cpu = process.cpuUsage();
  lines.push(
    "# HELP process_cpu_seconds_total Total user and system CPU time spent in seconds.",
    "# TYPE process_cpu_seconds_total counter",
    `process_cpu_seconds_total ${(cpu.user + cpu.system) / 1e6}`,
  );
  return lines;
}
