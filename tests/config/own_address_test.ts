import { equal, match } from "node:assert/strict";
import { isOwnAddress, ownAddressMessage, ownBackend } from "../../lib/config/own_address.ts";
import { newInstanceId, viaEntry } from "../../lib/proxy/via.ts";

Deno.test("isOwnAddress() knows goround's listener from the address alone", async (t) => {
  const cases: [string, number, string, number, boolean][] = [
    // backend host, backend port, listen host, listen port, own?
    ["localhost", 8000, "0.0.0.0", 8000, true],
    ["127.0.0.1", 8000, "0.0.0.0", 8000, true],
    ["127.9.9.9", 8000, "0.0.0.0", 8000, true],
    ["::1", 8000, "0.0.0.0", 8000, true],
    ["0.0.0.0", 8000, "0.0.0.0", 8000, true],
    ["::", 8000, "::", 8000, true],
    ["::ffff:7f00:1", 8000, "0.0.0.0", 8000, true],
    ["localhost", 8001, "0.0.0.0", 8000, false],
    ["10.1.2.3", 8000, "0.0.0.0", 8000, false], // an interface's address: Via catches it
    ["127.0.0.1", 8000, "127.0.0.1", 8000, true],
    ["localhost", 8000, "127.0.0.1", 8000, true],
    ["0.0.0.0", 8000, "127.0.0.1", 8000, true],
    ["::ffff:7f00:1", 8000, "127.0.0.1", 8000, true],
    ["127.0.0.2", 8000, "127.0.0.1", 8000, false], // another loopback address, another socket
    ["::1", 8000, "127.0.0.1", 8000, false],
    ["127.0.0.1", 8000, "localhost", 8000, true],
    ["::1", 8000, "localhost", 8000, true],
    ["localhost", 8000, "::1", 8000, true],
    ["127.0.0.1", 8000, "::1", 8000, false],
    ["10.1.2.3", 8000, "10.1.2.3", 8000, true],
    ["App.Example", 8000, "app.example", 8000, true],
    ["127.0.0.1", 8000, "10.1.2.3", 8000, false], // goround is not on loopback at all
    ["127.0.0.1", 0, "127.0.0.1", 0, false], // a port not chosen yet
  ];
  for (const [host, port, bound, at, own] of cases) {
    await t.step(`${host}:${port} against a listener on ${bound}:${at}: ${own}`, () => {
      equal(isOwnAddress({ hostname: host, port }, { hostname: bound, port: at }), own);
    });
  }
});

Deno.test("ownBackend() finds the first backend that is goround, and says why", () => {
  const backends = [
    { url: "http://127.0.0.2:8000", hostname: "127.0.0.2", port: 8000 },
    { url: "http://localhost:8000", hostname: "localhost", port: 8000 },
  ];
  const listen = { hostname: "127.0.0.1", port: 8000 };
  equal(ownBackend(backends, listen)?.url, "http://localhost:8000");
  equal(ownBackend(backends.slice(0, 1), listen), undefined);
  equal(
    ownAddressMessage(backends[1]!, listen),
    `"http://localhost:8000" is goround's own address (it listens on 127.0.0.1:8000): expected another server`,
  );
  equal(
    ownAddressMessage(backends[1]!, { hostname: "0.0.0.0", port: 8000 }),
    `"http://localhost:8000" is goround's own address (it listens on :8000): expected another server`,
  );
});

Deno.test("viaEntry() is goround's pseudonym with a random id per process", () => {
  const id = newInstanceId();
  match(id, /^[0-9a-f]{8}$/);
  equal(viaEntry(id), `1.1 goround-${id}`);
});
