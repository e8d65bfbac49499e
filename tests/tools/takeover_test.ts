import { deepEqual, equal, throws } from "node:assert/strict";
import { failuresOf, parseToolArgs, parseWrkText } from "../../tools/takeover.ts";

const WRK_WITH_ERRORS = `Running 10s test @ http://127.0.0.1:8000/
  2 threads and 64 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     1.63ms    1.02ms  40.61ms   91.05%
    Req/Sec    19.20k     1.87k   23.77k    70.50%
  382012 requests in 10.00s, 52.83MB read
  Socket errors: connect 0, read 85, write 2, timeout 1
  Non-2xx or 3xx responses: 3
Requests/sec:  38192.27
Transfer/sec:      5.28MB
`;

Deno.test("parseWrkText() reads wrk's requests and errors by kind", async (t) => {
  await t.step("with errors", () => {
    const figures = parseWrkText(WRK_WITH_ERRORS);
    deepEqual(figures, {
      requests: 382012,
      connect: 0,
      read: 85,
      write: 2,
      timeout: 1,
      non2xx: 3,
    });
    equal(failuresOf(figures), 91);
  });
  await t.step("without errors wrk prints no error lines: all 0", () => {
    const clean = WRK_WITH_ERRORS.split("\n").filter((l) => !/errors|Non-2xx/.test(l)).join("\n");
    equal(failuresOf(parseWrkText(clean)), 0);
    equal(parseWrkText(clean).requests, 382012);
  });
  await t.step("no figures at all is an error", () => {
    throws(
      () => parseWrkText("unable to connect to 127.0.0.1:1 Connection refused\n"),
      /no figures/,
    );
  });
});

Deno.test("parseToolArgs(): defaults, lists, and one line naming a bad flag", async (t) => {
  await t.step("defaults", () => {
    deepEqual(parseToolArgs([]), {
      duration: 10,
      at: 4,
      threads: 2,
      connections: 64,
      migrate: ["current"],
      engines: ["goround"],
      install: true,
    });
  });
  await t.step("lists", () => {
    const options = parseToolArgs(["--migrate-req", "0,1", "--engines", "goround,deno"]);
    if (options === "help") throw new Error("not help");
    deepEqual(options.migrate, ["0", "1"]);
    deepEqual(options.engines, ["goround", "deno"]);
  });
  await t.step("bad values", () => {
    throws(
      () => parseToolArgs(["--migrate-req", "2"]),
      /^RangeError: --migrate-req: "2" is not one of current, 0, 1$/,
    );
    throws(() => parseToolArgs(["--at", "10"]), /--at: "10" is not inside the run/);
    throws(() => parseToolArgs(["--threads", "0"]), /--threads: "0" is not a whole number/);
  });
  equal(parseToolArgs(["--help"]), "help");
});
