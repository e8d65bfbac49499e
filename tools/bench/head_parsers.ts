/**
 * Times goround's head parsers on typical heads, a million calls each in a loop, and prints
 * nanoseconds per call (the README's Performance section quotes these):
 *
 * ```sh
 * deno run tools/bench/head_parsers.ts
 * ```
 *
 * @module
 */

import { encodeLatin1, parseRequestHead, parseResponseHead } from "../../lib/http/http1.ts";

/** A request as `wrk` sends it by default. */
const WRK_REQUEST = "GET / HTTP/1.1\r\nHost: 127.0.0.1:8000\r\n\r\n";

/** A request as a browser sends it (8 fields, 480 bytes). */
const BROWSER_REQUEST = "GET / HTTP/1.1\r\nHost: 127.0.0.1:8000\r\nConnection: keep-alive\r\n" +
  "User-Agent: Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) " +
  "Chrome/131.0.0.0 Safari/537.36\r\n" +
  "Accept: text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,image/webp,*/*;q=0.8" +
  "\r\nAccept-Encoding: gzip, deflate, br, zstd\r\nAccept-Language: en-US,en;q=0.9\r\n" +
  "Sec-Fetch-Mode: navigate\r\nUpgrade-Insecure-Requests: 1\r\n\r\n";

/** A response as the benchmark's nginx backends send it. */
const NGINX_RESPONSE = "HTTP/1.1 200 OK\r\nServer: nginx/1.22.1\r\n" +
  "Date: Thu, 26 Nov 2026 03:40:00 GMT\r\nContent-Type: text/plain\r\nContent-Length: 22\r\n" +
  "Connection: keep-alive\r\n\r\nHello from Server 9091";

/** Nanoseconds per call of `parse` over `calls` calls, after as many to warm up. */
function time(parse: () => number, calls: number): number {
  let sink = 0;
  for (let i = 0; i < calls; i++) sink += parse();
  const start = performance.now();
  for (let i = 0; i < calls; i++) sink += parse();
  const ns = (performance.now() - start) * 1e6 / calls;
  if (sink === 0) throw new Error("nothing parsed");
  return ns;
}

if (import.meta.main) {
  const calls = 1_000_000;
  const wrk = encodeLatin1(WRK_REQUEST);
  const browser = encodeLatin1(BROWSER_REQUEST);
  const nginx = encodeLatin1(NGINX_RESPONSE);
  const spans: number[] = [];
  const cases: [string, () => number][] = [
    ["parseRequestHead, wrk's head", () => parseRequestHead(wrk, 0, wrk.length)!.size],
    [
      "parseRequestHead, a browser's head",
      () => parseRequestHead(browser, 0, browser.length)!.size,
    ],
    [
      "parseResponseHead, nginx's head",
      () => parseResponseHead(nginx, 0, nginx.length, spans)!.status,
    ],
  ];
  for (const [name, parse] of cases) {
    console.log(`${name}: ${time(parse, calls).toFixed(0)} ns per call`);
  }
}
