import { equal, match, ok as assert } from "node:assert/strict";
import {
  bannerAt,
  recordingBackend,
  ROOT,
  runGoround,
  startGoround,
  waitFor,
} from "../support/helpers.ts";

/** A self-signed certificate for localhost and 127.0.0.1, made with Debian's openssl. It is
 * an end-entity certificate (CA:FALSE): rustls refuses a CA certificate used as a server's. */
async function makeCertificate(dir: string): Promise<{ cert: string; key: string; pem: string }> {
  const cert = `${dir}/cert.pem`;
  const key = `${dir}/key.pem`;
  const output = await new Deno.Command("openssl", {
    args: [
      "req",
      "-x509",
      "-newkey",
      "rsa:2048",
      "-nodes",
      "-keyout",
      key,
      "-out",
      cert,
      "-days",
      "1",
      "-subj",
      "/CN=localhost",
      "-addext",
      "subjectAltName=DNS:localhost,IP:127.0.0.1",
      "-addext",
      "basicConstraints=critical,CA:FALSE",
    ],
    stdout: "null",
    stderr: "piped",
  }).output();
  equal(output.code, 0, new TextDecoder().decode(output.stderr));
  return { cert, key, pem: await Deno.readTextFile(cert) };
}

async function curl(args: string[]): Promise<{ code: number; out: string; err: string }> {
  const output = await new Deno.Command("curl", {
    args: ["-sS", ...args],
    stdout: "piped",
    stderr: "piped",
  }).output();
  return {
    code: output.code,
    out: new TextDecoder().decode(output.stdout),
    err: new TextDecoder().decode(output.stderr),
  };
}

function freePort(): number {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = listener.addr.port;
  listener.close();
  return port;
}

Deno.test("--tls-cert/--tls-key: HTTPS with HTTP/2 and HTTP/1.1 by ALPN; X-Forwarded-Proto is https; --redirect-http", async () => {
  const dir = await Deno.makeTempDir();
  const { cert, key } = await makeCertificate(dir);
  const backend = recordingBackend(() => new Response("secure hello"));
  const redirectPort = freePort();
  const proxy = await startGoround([
    "--tls-cert",
    cert,
    "--tls-key",
    key,
    "--redirect-http",
    `127.0.0.1:${redirectPort}`,
    "--backend",
    backend.url,
    "--workers",
    "1",
  ], { readable: dir });
  try {
    match(proxy.stderr[bannerAt(proxy.stderr)]!, /\(HTTPS\)$/);
    const url = `https://localhost:${proxy.port}/a?b=1`;
    const h2 = await curl(["--http2", "--cacert", cert, "-D", "-", url]);
    equal(h2.code, 0, h2.err);
    match(h2.out, /^HTTP\/2 200/);
    match(h2.out, /secure hello$/);
    const h1 = await curl(["--http1.1", "--cacert", cert, "-D", "-", url]);
    match(h1.out, /^HTTP\/1\.1 200/);
    const seen = backend.requests.at(-1)!;
    equal(seen.headers.get("x-forwarded-proto"), "https");
    equal(new URL(seen.url).pathname, "/a");
    equal(seen.headers.get("host"), `localhost:${proxy.port}`);
    const redirect = await curl([
      "-D",
      "-",
      "-o",
      "/dev/null",
      `http://localhost:${redirectPort}/x?y=2`,
    ]);
    match(redirect.out, /^HTTP\/1\.1 308/);
    match(redirect.out, new RegExp(`location: https://localhost:${proxy.port}/x\\?y=2`, "i"));
    const untrusted = await curl(["--http2", url]);
    assert(untrusted.code !== 0, "a client that does not trust the certificate refuses it");
  } finally {
    await proxy.stop();
    await backend.close();
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("https:// backends with --backend-ca; without the CA the backend's certificate is refused (502)", async () => {
  const dir = await Deno.makeTempDir();
  const { cert, key, pem } = await makeCertificate(dir);
  const server = Deno.serve(
    {
      hostname: "127.0.0.1",
      port: 0,
      cert: pem,
      key: await Deno.readTextFile(key),
      onListen: () => {},
    },
    (req) => new Response(`tls backend saw ${new URL(req.url).pathname}`),
  );
  const backendUrl = `https://localhost:${server.addr.port}`;
  try {
    const trusting = await startGoround([
      "--backend",
      backendUrl,
      "--backend-ca",
      cert,
      "--workers",
      "1",
    ], { readable: dir });
    try {
      const res = await fetch(`${trusting.url}/over-tls`);
      equal(await res.text(), "tls backend saw /over-tls");
    } finally {
      await trusting.stop();
    }
    const doubting = await startGoround([
      "--backend",
      backendUrl,
      "--workers",
      "1",
      "--retries",
      "0",
    ]);
    try {
      const res = await fetch(doubting.url);
      await res.body?.cancel();
      equal(res.status, 502);
      assert(
        doubting.stderr.some((l) => /certificate|UnknownIssuer|invalid peer/i.test(l)),
        doubting.stderr.join("\n"),
      );
    } finally {
      await doubting.stop();
    }
  } finally {
    await server.shutdown();
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("TLS settings that cannot work exit 2 with one line", async () => {
  const half = await runGoround(["--tls-cert", `${ROOT}deno.json`]);
  equal(half.code, 2);
  match(
    half.stderr.trim(),
    /^goround: --tls-key: missing: expected both --tls-cert and --tls-key$/,
  );
  const missing = await runGoround([
    "--tls-cert",
    "/nonexistent/cert.pem",
    "--tls-key",
    "/nonexistent/key.pem",
  ]);
  equal(missing.code, 2);
  match(missing.stderr.trim(), /^goround: --tls-cert: "\/nonexistent\/cert\.pem" cannot be read/);
  const notPem = await runGoround([
    "--tls-cert",
    `${ROOT}deno.json`,
    "--tls-key",
    `${ROOT}deno.json`,
  ]);
  equal(notPem.code, 2);
  match(notPem.stderr.trim(), /is not PEM/);
  const redirect = await runGoround(["--redirect-http", ":8080"]);
  equal(redirect.code, 2);
  match(redirect.stderr.trim(), /--redirect-http: needs --tls-cert and --tls-key/);
});

Deno.test("the access log names the protocol a TLS client used: HTTP/2.0 or HTTP/1.1", async () => {
  const dir = await Deno.makeTempDir();
  const { cert, key } = await makeCertificate(dir);
  const backend = recordingBackend(() => new Response("hello"));
  const proxy = await startGoround([
    "--tls-cert",
    cert,
    "--tls-key",
    key,
    "--backend",
    backend.url,
    "--access-log",
    "json",
    "--workers",
    "1",
  ], { readable: dir });
  try {
    const url = `https://127.0.0.1:${proxy.port}/`;
    equal((await curl(["-k", "--http2", `${url}h2`])).out, "hello");
    equal((await curl(["-k", "--http1.1", `${url}h1`])).out, "hello");
    const lines = () =>
      proxy.stdout.filter((line) => line.startsWith("{")).map((l) => JSON.parse(l));
    await waitFor(() => lines().length === 2, { what: "two access-log lines" });
    const byPath = Object.fromEntries(lines().map((entry) => [entry.path, entry.protocol]));
    equal(byPath["/h2"], "HTTP/2.0");
    equal(byPath["/h1"], "HTTP/1.1");
  } finally {
    await proxy.stop();
    await backend.close();
    await Deno.remove(dir, { recursive: true });
  }
});
