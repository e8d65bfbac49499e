/**
 * Writes `docs/flags.md` from the flag definitions (`lib/config/help.ts`), formatted as
 * `deno fmt` would, so the file and `--help` agree.
 *
 * ```sh
 * deno task flags-doc          # rewrites docs/flags.md
 * deno task flags-doc --check  # exit 1 if docs/flags.md is out of date
 * ```
 *
 * @module
 */

import { flagsMarkdown } from "../lib/config/help.ts";

const FILE = new URL("../docs/flags.md", import.meta.url);

/**
 * The flags page as `deno fmt` leaves it.
 *
 * @returns The formatted Markdown.
 */
export async function formattedFlagsPage(): Promise<string> {
  const fmt = new Deno.Command(Deno.execPath(), {
    args: ["fmt", "--ext", "md", "-"],
    stdin: "piped",
    stdout: "piped",
    stderr: "inherit",
  }).spawn();
  const writer = fmt.stdin.getWriter();
  await writer.write(new TextEncoder().encode(flagsMarkdown()));
  await writer.close();
  const output = await fmt.output();
  if (!output.success) throw new Error("deno fmt failed on the flags page");
  return new TextDecoder().decode(output.stdout);
}

if (import.meta.main) {
  const page = await formattedFlagsPage();
  if (Deno.args.includes("--check")) {
    const now = await Deno.readTextFile(FILE).catch(() => "");
    if (now !== page) {
      console.error("docs/flags.md is out of date: run deno task flags-doc");
      Deno.exit(1);
    }
  } else {
    await Deno.writeTextFile(FILE, page);
    console.log("wrote docs/flags.md");
  }
}
