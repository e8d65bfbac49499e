import { deepEqual, equal } from "node:assert/strict";
import {
  connectionTokens,
  forwardRequestFields,
  forwardRequestHeaders,
  forwardResponseHeaders,
} from "../../lib/http/headers.ts";

const via = "1.1 goround-3f9a1c2e";
const untrusted = {
  clientIp: "127.0.0.1",
  trusted: false,
  proto: "http",
  host: "shop.example",
  via,
};
const trusted = { ...untrusted, clientIp: "10.0.0.2", trusted: true };

function asMap(pairs: [string, string][]): Record<string, string> {
  return Object.fromEntries(pairs);
}

Deno.test("forwardRequestHeaders()", async (t) => {
  await t.step("replaces a forged X-Forwarded-For from an untrusted peer with the peer", () => {
    const out = asMap(
      forwardRequestHeaders(new Headers({ "x-forwarded-for": "6.6.6.6" }), untrusted),
    );
    deepEqual(out["x-forwarded-for"], "127.0.0.1");
  });

  await t.step("appends the peer to a trusted proxy's X-Forwarded-For", () => {
    const out = asMap(
      forwardRequestHeaders(new Headers({ "x-forwarded-for": "203.0.113.9, 10.0.0.1" }), trusted),
    );
    deepEqual(out["x-forwarded-for"], "203.0.113.9, 10.0.0.1, 10.0.0.2");
  });

  await t.step("sets X-Forwarded-Proto and X-Forwarded-Host; keeps a trusted proxy's", () => {
    const forged = new Headers({
      "x-forwarded-proto": "https",
      "x-forwarded-host": "evil.example",
    });
    const out = asMap(forwardRequestHeaders(forged, untrusted));
    deepEqual([out["x-forwarded-proto"], out["x-forwarded-host"]], ["http", "shop.example"]);
    const kept = asMap(forwardRequestHeaders(forged, trusted));
    deepEqual([kept["x-forwarded-proto"], kept["x-forwarded-host"]], ["https", "evil.example"]);
  });

  await t.step("drops Forwarded from untrusted peers only", () => {
    const headers = new Headers({ forwarded: "for=6.6.6.6" });
    deepEqual(asMap(forwardRequestHeaders(headers, untrusted)).forwarded, undefined);
    deepEqual(asMap(forwardRequestHeaders(headers, trusted)).forwarded, "for=6.6.6.6");
  });

  await t.step("strips hop-by-hop fields and those named in Connection (RFC 9110 §7.6.1)", () => {
    const headers = new Headers({
      connection: "keep-alive, X-Secret, x-other",
      "keep-alive": "timeout=5",
      "proxy-connection": "keep-alive",
      "proxy-authorization": "Basic Zm9v",
      te: "trailers",
      trailer: "x",
      upgrade: "h2c",
      "transfer-encoding": "chunked",
      "x-secret": "1",
      "x-other": "2",
      "x-kept": "3",
      accept: "*/*",
    });
    const names = forwardRequestHeaders(headers, untrusted).map(([name]) => name);
    deepEqual(names, [
      "host",
      "accept",
      "x-kept",
      "x-forwarded-for",
      "x-forwarded-proto",
      "x-forwarded-host",
      "via",
    ]);
  });

  await t.step("drops names with _ when told to, so X_Forwarded_For cannot pass for one", () => {
    const headers: [string, string][] = [
      ["x_forwarded_for", "6.6.6.6"],
      ["x_real_ip", "6.6.6.6"],
      ["x-kept", "1"],
    ];
    const names = (dropUnderscores: boolean) =>
      forwardRequestHeaders(headers, { ...untrusted, dropUnderscores }).map(([name]) => name);
    deepEqual(names(true), [
      "host",
      "x-kept",
      "x-forwarded-for",
      "x-forwarded-proto",
      "x-forwarded-host",
      "via",
    ]);
    deepEqual(names(false).slice(1, 4), ["x_forwarded_for", "x_real_ip", "x-kept"]);
  });

  await t.step("puts the client's Host first and drops its framing and Expect fields", () => {
    const headers = new Headers({ host: "ignored", "content-length": "5", expect: "100-continue" });
    deepEqual(forwardRequestHeaders(headers, untrusted)[0], ["host", "shop.example"]);
    deepEqual(forwardRequestHeaders(headers, untrusted).length, 5);
  });

  await t.step("appends goround's entry to Via (RFC 9110 §7.6.3), keeping earlier ones", () => {
    deepEqual(asMap(forwardRequestHeaders(new Headers(), untrusted)).via, via);
    const pairs: [string, string][] = [["via", "1.0 fred, 1.1 p.example"], ["via", "2 cdn"]];
    deepEqual(
      asMap(forwardRequestHeaders(pairs, untrusted)).via,
      `1.0 fred, 1.1 p.example, 2 cdn, ${via}`,
    );
    deepEqual(
      asMap(forwardRequestHeaders(pairs, trusted)).via,
      `1.0 fred, 1.1 p.example, 2 cdn, ${via}`,
    );
  });

  await t.step("reports a request whose Via already names this goround (a loop)", () => {
    const fields = (headers: [string, string][]) =>
      forwardRequestFields(headers, untrusted, () => {});
    equal(fields([["via", `1.1 cdn, ${via}`]]), true);
    equal(fields([["via", "1.1 goround-00000000"]]), false, "another goround");
    equal(fields([["via", "1.1 cdn"], ["via", via]]), true);
    equal(fields([]), false);
  });
});

Deno.test("forwardResponseHeaders()", async (t) => {
  const response: [string, string][] = [
    ["content-type", "text/html"],
    ["connection", "close, x-hop"],
    ["x-hop", "1"],
    ["keep-alive", "timeout=5"],
    ["transfer-encoding", "chunked"],
    ["content-length", "10"],
    ["set-cookie", "a=1"],
    ["set-cookie", "b=2"],
    ["location", "/next"],
  ];
  await t.step("strips hop-by-hop fields, keeps repeated end-to-end ones in order", () => {
    deepEqual(forwardResponseHeaders(response, true), [
      ["content-type", "text/html"],
      ["content-length", "10"],
      ["set-cookie", "a=1"],
      ["set-cookie", "b=2"],
      ["location", "/next"],
    ]);
  });
  await t.step("drops Content-Length when it does not describe the forwarded body", () => {
    deepEqual(forwardResponseHeaders(response, false).some(([n]) => n === "content-length"), false);
  });
});

Deno.test("connectionTokens() splits and lowercases", () => {
  deepEqual(connectionTokens(" Keep-Alive ,X-A,, "), ["keep-alive", "x-a"]);
  deepEqual(connectionTokens(null), []);
});
