import { deepEqual, equal } from "node:assert/strict";
import { isHostPort, isHostPortAt, targetProblem } from "../../lib/http/request_target.ts";
import { splitTarget } from "../../lib/proxy/forward.ts";

Deno.test("isHostPort() follows RFC 3986's host and port", async (t) => {
  const valid = [
    "a",
    "example.com",
    "example.com.",
    "EXAMPLE.com:8080",
    "a:",
    "localhost:0",
    "10.0.0.1",
    "999.1.1.1", // not an IPv4 address, but a valid reg-name
    "a_b~c-d",
    "a%41b",
    "!$&'()*+,;=",
    "[::1]",
    "[::1]:443",
    "[2001:db8::8a2e:370:7334]",
    "[1:2:3:4:5:6:7:8]",
    "[::ffff:192.0.2.1]:80",
    "[v1.fe80::a+en1]",
  ];
  const invalid = [
    "",
    ":80",
    "a b",
    "a/b",
    "a@b",
    "user:pw@a",
    "a:b",
    "a:123456",
    "a\\b",
    "a?b",
    "a#b",
    "a%4",
    "a%zz",
    "caf\xe9",
    "a\x00",
    "[zz]",
    "[::1",
    "[::1]x",
    "[1:2:3:4:5:6:7:8:9]",
    "[1::2::3]",
    "[1.2.3.4]",
    "[::1.2.3.256]",
    "[::1]:x",
    `[${"v1.".padEnd(70, "a")}]`,
    `[${"1".repeat(70_000)}]`,
  ];
  for (const text of valid) {
    await t.step(`valid: ${JSON.stringify(text)}`, () => equal(isHostPort(text), true));
  }
  for (const text of invalid) {
    await t.step(`invalid: ${JSON.stringify(text.slice(0, 40))}`, () => {
      equal(isHostPort(text), false);
    });
  }
});

Deno.test("isHostPortAt() looks only at its range of the buffer", () => {
  const bytes = new TextEncoder().encode("Host: [::1]:80 x]\r\nHost: a:8080\r\n");
  equal(isHostPortAt(bytes, 6, 14), true, "[::1]:80");
  equal(isHostPortAt(bytes, 6, 16), false, "[::1]:80 x");
  equal(isHostPortAt(bytes, 6, 10), false, "[::1, with a ] past the range");
  equal(isHostPortAt(bytes, 25, 31), true, "a:8080");
  equal(isHostPortAt(bytes, 25, 25), false, "empty");
});

Deno.test("targetProblem() admits the forms of RFC 9112 §3.2 a reverse proxy serves", async (t) => {
  const accepted: [string, string][] = [
    ["GET", "/"],
    ["GET", "//double/slash"],
    ["GET", "/file:///etc/passwd"],
    ["OPTIONS", "*"],
    ["CONNECT", "a:22"],
    ["GET", "http://a/x"],
    ["GET", "HTTPS://a:8443"],
    ["GET", "http://a?q"],
    ["GET", "http://[::1]:8080/x"],
  ];
  const refused: [string, string, RegExp][] = [
    ["GET", "abc", /neither origin-form nor absolute-form/],
    ["GET", "a:b/c", /neither origin-form nor absolute-form/],
    ["GET", "*", /only for OPTIONS/],
    ["GET", "file:///etc/passwd", /scheme "file"/],
    ["GET", "ws://a/", /scheme "ws"/],
    ["GET", "http:///x", /invalid host/],
    ["GET", "http://u:p@a/x", /invalid host/],
    ["GET", "http://a b/", /invalid host/],
  ];
  for (const [method, target] of accepted) {
    await t.step(`${method} ${target}`, () => equal(targetProblem(method, target), null));
  }
  for (const [method, target, reason] of refused) {
    await t.step(`${method} ${target}: refused`, () => {
      const problem = targetProblem(method, target);
      equal(reason.test(problem ?? ""), true, String(problem));
    });
  }
});

Deno.test("splitTarget() gives the origin-form target and the authority", () => {
  deepEqual(splitTarget("/x?y#f"), { target: "/x?y", authority: null });
  deepEqual(splitTarget("*"), { target: "*", authority: null });
  deepEqual(splitTarget("http://a.example/x?y"), { target: "/x?y", authority: "a.example" });
  deepEqual(splitTarget("http://a.example?y"), { target: "/?y", authority: "a.example" });
  deepEqual(splitTarget("http://a.example"), { target: "/", authority: "a.example" });
  deepEqual(splitTarget("http://a.example#f"), { target: "/", authority: "a.example" });
});
