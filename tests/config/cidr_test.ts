import { deepEqual, equal, throws } from "node:assert/strict";
import { ipInCidrs, parseCidr, parseIp } from "../../lib/config/cidr.ts";

Deno.test("parseIp() reads IPv4, IPv6 and IPv4-mapped IPv6", () => {
  deepEqual(parseIp("10.1.2.3"), [10, 1, 2, 3]);
  deepEqual(parseIp("::1"), [...new Array(15).fill(0), 1]);
  deepEqual(parseIp("[::ffff:192.0.2.1]"), [192, 0, 2, 1]);
  equal(parseIp("256.0.0.1"), null);
  equal(parseIp("1:2:3"), null);
  equal(parseIp("host"), null);
});

Deno.test("parseCidr() normalises and validates", () => {
  equal(parseCidr("10.9.8.7/8").text, "10.0.0.0/8");
  equal(parseCidr("127.0.0.1").bits, 32);
  equal(parseCidr("fd00::/8").bits, 8);
  throws(() => parseCidr("10.0.0.0/33"), /not a CIDR range/);
  throws(() => parseCidr("nope/8"), /not a CIDR range/);
  throws(() => parseCidr("1.2.3.4/8/9"), /not a CIDR range/);
});

Deno.test("ipInCidrs() matches by prefix and family", () => {
  const ranges = [parseCidr("10.0.0.0/8"), parseCidr("192.168.1.0/25"), parseCidr("::1/128")];
  equal(ipInCidrs("10.255.0.1", ranges), true);
  equal(ipInCidrs("192.168.1.127", ranges), true);
  equal(ipInCidrs("192.168.1.128", ranges), false);
  equal(ipInCidrs("::1", ranges), true);
  equal(ipInCidrs("::2", ranges), false);
  equal(ipInCidrs("11.0.0.1", ranges), false);
  equal(ipInCidrs("::ffff:10.0.0.1", ranges), true);
  equal(ipInCidrs("10.0.0.1", []), false);
});
