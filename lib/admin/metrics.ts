/**
 * Prometheus metrics, text exposition format 0.0.4, rendered from the shared memory (so the
 * numbers are the same whichever worker served the traffic).
 *
 * @module
 */

import {
  DURATION_BUCKETS,
  inFlight,
  noBackendCount,
  responseStats,
  totals,
} from "../balance/pool.ts";
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
  const backends = sup.slots.map((slot) => ({ slot, url: label(sup.table[slot]!.url) }));

  family(
    "goround_requests_total",
    "counter",
    "Client requests answered, by the backend that answered and status class.",
  );
  for (const { slot, url } of backends) {
    const stats = responseStats(sup.pool, slot);
    stats.classes.forEach((n, i) =>
      out.push(`goround_requests_total{backend="${url}",code="${CLASSES[i]}"} ${n}`)
    );
  }
  out.push(`goround_requests_total{backend="none",code="5xx"} ${noBackendCount(sup.pool)}`);

  family(
    "goround_request_duration_seconds",
    "histogram",
    "Time from a request's arrival until its response head was ready, by backend.",
  );
  for (const { slot, url } of backends) {
    const stats = responseStats(sup.pool, slot);
    let cumulative = 0n;
    DURATION_BUCKETS.forEach((bound, i) => {
      cumulative += stats.buckets[i] ?? 0n;
      out.push(
        `goround_request_duration_seconds_bucket{backend="${url}",le="${bound}"} ${cumulative}`,
      );
    });
    out.push(`goround_request_duration_seconds_bucket{backend="${url}",le="+Inf"} ${stats.count}`);
    out.push(
      `goround_request_duration_seconds_sum{backend="${url}"} ${Number(stats.sumMicros) / 1e6}`,
    );
    out.push(`goround_request_duration_seconds_count{backend="${url}"} ${stats.count}`);
  }

  family("goround_in_flight_requests", "gauge", "Requests being forwarded to the backend now.");
  for (const { slot, url } of backends) {
    out.push(`goround_in_flight_requests{backend="${url}"} ${inFlight(sup.pool, slot)}`);
  }

  family(
    "goround_backend_up",
    "gauge",
    "1 when the backend takes requests (healthy, not ejected, not drained), else 0.",
  );
  for (const { slot, url } of backends) {
    out.push(`goround_backend_up{backend="${url}"} ${backendState(sup, slot) === "up" ? 1 : 0}`);
  }

  family(
    "goround_backend_attempts_total",
    "counter",
    "Attempts to forward a request to the backend, retries included.",
  );
  for (const { slot, url } of backends) {
    out.push(`goround_backend_attempts_total{backend="${url}"} ${totals(sup.pool, slot).requests}`);
  }

  family(
    "goround_backend_failures_total",
    "counter",
    "Attempts that failed: no connection, reset, timeout, bad response.",
  );
  for (const { slot, url } of backends) {
    out.push(`goround_backend_failures_total{backend="${url}"} ${totals(sup.pool, slot).failures}`);
  }

  family(
    "goround_retries_total",
    "counter",
    "Attempts that retried a request another backend failed.",
  );
  for (const { slot, url } of backends) {
    out.push(`goround_retries_total{backend="${url}"} ${totals(sup.pool, slot).retries}`);
  }

  family(
    "goround_passive_ejections_total",
    "counter",
    "Times passive failures (--max-fails) took the backend out.",
  );
  for (const { slot, url } of backends) {
    out.push(
      `goround_passive_ejections_total{backend="${url}"} ${totals(sup.pool, slot).ejections}`,
    );
  }

  family("goround_health_checks_total", "counter", "Active health checks, by result.");
  for (const { slot, url } of backends) {
    const t = totals(sup.pool, slot);
    out.push(`goround_health_checks_total{backend="${url}",result="pass"} ${t.probesOk}`);
    out.push(`goround_health_checks_total{backend="${url}",result="fail"} ${t.probesFailed}`);
  }

  family("goround_uptime_seconds", "gauge", "Seconds since goround started.");
  out.push(`goround_uptime_seconds ${Math.floor((Date.now() - sup.started) / 1000)}`);
  return out.join("\n") + "\n";
}
