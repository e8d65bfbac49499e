import { equal, ok as assert } from "node:assert/strict";
import { formattedFlagsPage } from "../../tools/flags_doc.ts";
import { ROOT, runGoround } from "../support/helpers.ts";

Deno.test("docs/flags.md is what deno task flags-doc makes, and lists every flag of --help", async () => {
  const page = await Deno.readTextFile(`${ROOT}docs/flags.md`);
  equal(page, await formattedFlagsPage(), "docs/flags.md is out of date: deno task flags-doc");
  const help = await runGoround(["--help"]);
  const flags = [...help.stdout.matchAll(/^ {2}(--[a-z-]+)/gm)].map((m) => m[1]!);
  assert(flags.length > 40, help.stdout);
  for (const flag of flags.filter((f) => f !== "--help" && f !== "--version")) {
    assert(page.includes(`\`${flag} `), `${flag} is missing from docs/flags.md`);
  }
});
