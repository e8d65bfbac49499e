// How operators get goround (issue 16): a `goround` command from `deno task install` (deno compile
// needs a download this machine cannot make), a systemd unit systemd itself accepts, and an
// example config that `goround check` accepts.

import { equal, match, ok as assert } from "node:assert/strict";
import { ROOT, runGoround } from "../support/helpers.ts";
import { ensureDebianPackage } from "../support/cdp.ts";

const DENO_DIR = Deno.execPath().replace(/\/[^/]+$/, "");

/** Runs `deno task install` into `root` (DENO_INSTALL_ROOT), as an operator would. */
async function install(root: string): Promise<string> {
  const output = await new Deno.Command(Deno.execPath(), {
    args: ["task", "install"],
    cwd: ROOT,
    env: { DENO_INSTALL_ROOT: root },
    stdout: "piped",
    stderr: "piped",
  }).output();
  equal(output.code, 0, new TextDecoder().decode(output.stderr));
  return `${root}/bin/goround`;
}

/** The installed wrapper runs `deno` from PATH: make sure it finds this one. */
function pathWithDeno(): string {
  return `${DENO_DIR}:/usr/local/bin:/usr/bin:/bin`;
}

Deno.test("deno task install makes a goround command that runs the brief's chaos test", async (t) => {
  const root = await Deno.makeTempDir({ prefix: "goround-install-" });
  try {
    const goround = await install(root);
    await t.step("goround --version", async () => {
      // Through sh: the test may run sh, not a command at a path it learns only now.
      const output = await new Deno.Command("sh", {
        args: ["-c", '"$0" --version', goround],
        env: { PATH: pathWithDeno() },
        stdout: "piped",
        stderr: "piped",
      }).output();
      equal(output.code, 0, new TextDecoder().decode(output.stderr));
      match(new TextDecoder().decode(output.stdout), /^goround \d+\.\d+\.\d+\ndeno /);
    });
    await t.step("the chaos test through the installed command", async () => {
      const output = await new Deno.Command(Deno.execPath(), {
        args: [
          "run",
          "--allow-net=127.0.0.1",
          `--allow-read=${ROOT}deno.json`,
          `--allow-run=${Deno.execPath()},${goround}`,
          `${ROOT}tools/chaos.ts`,
          ...["--goround", goround, "--proxy-port", "0", "--ports", "0,0,0"],
          ...["--health-interval", "200ms", "--workers", "2"],
        ],
        env: { PATH: pathWithDeno() },
        stdout: "piped",
        stderr: "piped",
      }).output();
      const text = new TextDecoder().decode(output.stdout);
      equal(output.code, 0, `${text}\n${new TextDecoder().decode(output.stderr)}`);
      match(text, /Chaos test passed/);
    });
  } finally {
    await Deno.remove(root, { recursive: true });
  }
});

Deno.test("deploy/goround.service passes systemd-analyze verify", async () => {
  await ensureDebianPackage("systemd-analyze", "systemd");
  const root = await Deno.makeTempDir({ prefix: "goround-unit-" });
  try {
    const goround = await install(root);
    const unit = await Deno.readTextFile(`${ROOT}deploy/goround.service`);
    assert(
      unit.includes("ExecStart=/usr/local/bin/goround "),
      "the unit runs /usr/local/bin/goround",
    );
    for (const line of ["DynamicUser=yes", "AmbientCapabilities=CAP_NET_BIND_SERVICE"]) {
      assert(unit.includes(`\n${line}\n`), line);
    }
    match(unit, /\nExecReload=\/bin\/kill -HUP \$MAINPID\n/);
    // The one difference: the command's path, as installed here rather than in /usr/local.
    await Deno.writeTextFile(
      `${root}/goround.service`,
      unit.replace("ExecStart=/usr/local/bin/goround ", `ExecStart=${goround} `),
    );
    const output = await new Deno.Command("systemd-analyze", {
      args: ["verify", `${root}/goround.service`],
      stdout: "piped",
      stderr: "piped",
    }).output();
    const said = new TextDecoder().decode(output.stderr) + new TextDecoder().decode(output.stdout);
    equal(output.code, 0, said);
    equal(said.trim(), "", "systemd has no complaint");
  } finally {
    await Deno.remove(root, { recursive: true });
  }
});

for (const example of ["goround.json", "routes.json"]) {
  Deno.test(`examples/${example} passes goround check`, async () => {
    const { code, stdout, stderr } = await runGoround([
      "check",
      "--config",
      `${ROOT}examples/${example}`,
    ]);
    equal(code, 0, stderr);
    match(stdout, new RegExp(`examples/${example.replace(".", "\\.")}: valid`));
  });
}
