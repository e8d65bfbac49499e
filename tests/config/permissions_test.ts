// goround asks Deno for the least it needs: the network, reading the files an operator names
// (anywhere: /etc/goround, /etc/ssl), its own GOROUND_* variables, and nothing else (issue 12 §5).

import { deepEqual, equal, ok } from "node:assert/strict";
import { ROOT, startGoround, startTaskFlags } from "../support/helpers.ts";
import { serveBackend } from "../../dummy_servers.ts";

Deno.test("deno task start, install and compile ask for net, read and GOROUND_* only", () => {
  const flags = startTaskFlags();
  const permissions = flags.filter((flag) => flag.startsWith("--allow"));
  deepEqual(permissions.sort(), ["--allow-env=GOROUND_*", "--allow-net", "--allow-read"]);
  for (const flag of flags) {
    ok(!/^(-A|--allow-all|--allow-write|--allow-run|--allow-ffi|--allow-sys)/.test(flag), flag);
  }
  const { tasks } = JSON.parse(Deno.readTextFileSync(`${ROOT}deno.json`));
  const compiled = (tasks.compile as string).split(/\s+/).map((w) => w.replaceAll("'", ""));
  deepEqual(
    compiled.filter((w) => w.startsWith("--allow")).sort(),
    permissions,
    "the compiled binary bakes in the same permissions",
  );
  const installed = (tasks.install as string).split(/\s+/).map((w) => w.replaceAll("'", ""));
  deepEqual(
    installed.filter((w) => w.startsWith("--allow")).sort(),
    permissions,
    "the installed command asks for the same permissions",
  );
});

Deno.test("goround reads a config file and TLS files outside the repository", async () => {
  const dir = await Deno.makeTempDir({ prefix: "goround-etc-" });
  const backend = serveBackend(0);
  try {
    ok(!dir.startsWith(ROOT));
    const made = await new Deno.Command("openssl", {
      args: [
        ...[
          "req",
          "-x509",
          "-newkey",
          "rsa:2048",
          "-nodes",
          "-days",
          "1",
          "-subj",
          "/CN=localhost",
        ],
        ...["-keyout", `${dir}/key.pem`, "-out", `${dir}/cert.pem`],
        ...["-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"],
        ...["-addext", "basicConstraints=critical,CA:FALSE"],
      ],
      stdout: "null",
      stderr: "null",
    }).output();
    equal(made.code, 0, "openssl made a certificate");
    const file = `${dir}/goround.json`;
    await Deno.writeTextFile(
      file,
      JSON.stringify({
        backends: [`http://127.0.0.1:${backend.port}`],
        workers: 1,
        "tls-cert": `${dir}/cert.pem`,
        "tls-key": `${dir}/key.pem`,
      }),
    );
    const proxy = await startGoround(["--config", file, "--access-log", "off"]);
    const client = Deno.createHttpClient({
      caCerts: [await Deno.readTextFile(`${dir}/cert.pem`)],
      poolMaxIdlePerHost: 0,
    });
    try {
      const res = await fetch(`https://localhost:${proxy.port}/`, { client });
      equal(res.status, 200);
      equal(await res.text(), `Hello from Server ${backend.port}`);
    } finally {
      client.close();
      equal((await proxy.stop()).code, 0);
    }
  } finally {
    await backend.close();
    await Deno.remove(dir, { recursive: true });
  }
});
