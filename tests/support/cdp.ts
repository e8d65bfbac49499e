/**
 * Test support: a headless Chromium driven over the Chrome DevTools Protocol (CDP) with nothing
 * but Deno's built-in `WebSocket`, and installing the Debian package of a tool a test needs.
 *
 * CDP is JSON over one WebSocket: a command is `{id, method, params, sessionId?}`, its answer
 * carries the same `id` with `result` or `error`; messages without an `id` are events (ignored
 * here: tests poll the page instead). A page is reached through a flat session
 * (`Target.attachToTarget` with `flatten: true`): commands for it carry its `sessionId`.
 *
 * @module
 */

import { lineSplitter } from "../../dummy_servers.ts";
import { waitFor } from "./helpers.ts";

/** Where Debian's `chromium` package puts the browser. */
export const CHROMIUM_PATH = "/usr/bin/chromium";

/**
 * Makes sure `binary` can run, installing Debian's `pkg` with apt-get when it is missing
 * (`apt-get update`, then `apt-get install -y`; needs root). Fails with a message that says
 * what to do when it cannot: tests that need the tool must not pass without it.
 *
 * The check runs `binary --version` rather than looking at the file, so it needs only
 * `--allow-run=<binary>` (an absolute path: Deno resolves a bare name at startup, before the
 * install) and `--allow-run=apt-get`.
 *
 * @param binary Absolute path of the program, e.g. `/usr/bin/chromium`.
 * @param pkg The Debian package that provides it.
 * @param options Extra `apt-get install` flags.
 */
export async function ensureDebianPackage(
  binary: string,
  pkg: string,
  options: { installFlags?: readonly string[] } = {},
): Promise<void> {
  if (await runs(binary)) return;
  const steps = [
    ["update"],
    ["install", "-y", "-o", "DPkg::Lock::Timeout=300", ...(options.installFlags ?? []), pkg],
  ];
  for (const args of steps) {
    const command = `apt-get ${args.join(" ")}`;
    let output: Deno.CommandOutput;
    try {
      console.log(`${binary} is missing: running ${command}`);
      output = await new Deno.Command("apt-get", {
        args,
        env: { DEBIAN_FRONTEND: "noninteractive" },
        stdin: "null",
      }).output();
    } catch (error) {
      const why = error instanceof Deno.errors.NotFound
        ? "apt-get is not on this machine"
        : error instanceof Deno.errors.NotCapable
        ? "the test may not run apt-get (grant --allow-run=apt-get)"
        : String(error);
      throw new Error(`${binary} is missing and cannot be installed: ${why}; install ${pkg}`);
    }
    if (!output.success) {
      const tail = new TextDecoder().decode(output.stderr).trim().split("\n").slice(-5).join("\n");
      throw new Error(
        `${binary} is missing and \`${command}\` failed (exit ${output.code}; root and the ` +
          `Debian package mirror are needed): install ${pkg} by hand\n${tail}`,
      );
    }
  }
  if (!(await runs(binary))) {
    throw new Error(`${binary} --version still does not run after installing ${pkg}`);
  }
}

async function runs(binary: string): Promise<boolean> {
  try {
    const { success } = await new Deno.Command(binary, {
      args: ["--version"],
      stdin: "null",
      stdout: "null",
      stderr: "null",
    }).output();
    return success;
  } catch (error) {
    if (error instanceof Deno.errors.NotFound) return false;
    if (error instanceof Deno.errors.NotCapable) {
      throw new Error(`the test may not run ${binary}: grant --allow-run=${binary}`);
    }
    throw error;
  }
}

interface Pending {
  readonly method: string;
  readonly resolve: (result: Record<string, unknown>) => void;
  readonly reject: (error: Error) => void;
}

/** A CDP connection (to the browser endpoint). */
export class Cdp {
  readonly #ws: WebSocket;
  readonly #pending = new Map<number, Pending>();
  readonly #closed: Promise<void>;
  #next = 1;

  private constructor(ws: WebSocket) {
    this.#ws = ws;
    this.#closed = new Promise((resolve) => ws.addEventListener("close", () => resolve()));
    ws.addEventListener("message", (event) => this.#receive(String(event.data)));
    ws.addEventListener("close", () => {
      for (const [id, pending] of this.#pending) {
        pending.reject(new Error(`CDP connection closed before ${pending.method} answered`));
        this.#pending.delete(id);
      }
    });
  }

  /**
   * Opens a connection.
   *
   * @param url The `ws://…/devtools/browser/…` URL Chromium printed.
   * @returns The connection.
   */
  static async connect(url: string): Promise<Cdp> {
    const ws = new WebSocket(url);
    await new Promise<void>((resolve, reject) => {
      ws.addEventListener("open", () => resolve(), { once: true });
      ws.addEventListener("error", () => reject(new Error(`cannot open ${url}`)), { once: true });
    });
    return new Cdp(ws);
  }

  #receive(data: string): void {
    const message = JSON.parse(data) as {
      id?: number;
      result?: Record<string, unknown>;
      error?: { code: number; message: string };
    };
    if (message.id === undefined) return; // an event
    const pending = this.#pending.get(message.id);
    if (!pending) return;
    this.#pending.delete(message.id);
    if (message.error) {
      pending.reject(new Error(`${pending.method}: ${message.error.message}`));
    } else {
      pending.resolve(message.result ?? {});
    }
  }

  /**
   * Sends a command and waits for its answer.
   *
   * @param method For example `Target.createTarget`.
   * @param params Its parameters.
   * @param sessionId The page session it is for, or none for the browser.
   * @returns The command's `result`.
   */
  send(
    method: string,
    params: Record<string, unknown> = {},
    sessionId?: string,
  ): Promise<Record<string, unknown>> {
    const id = this.#next++;
    return new Promise((resolve, reject) => {
      this.#pending.set(id, { method, resolve, reject });
      this.#ws.send(JSON.stringify({ id, method, params, ...(sessionId ? { sessionId } : {}) }));
    });
  }

  /**
   * Opens a new tab, attaches to it and navigates it to `url`.
   *
   * @param url The page.
   * @returns The page.
   */
  async open(url: string): Promise<Page> {
    const { targetId } = await this.send("Target.createTarget", { url: "about:blank" });
    const { sessionId } = await this.send("Target.attachToTarget", { targetId, flatten: true });
    const page = new Page(this, String(targetId), String(sessionId));
    await page.navigate(url);
    return page;
  }

  /** Closes the connection and waits until it is closed. */
  async close(): Promise<void> {
    if (this.#ws.readyState !== WebSocket.CLOSED) this.#ws.close();
    await this.#closed;
  }
}

/** A tab, through its flat CDP session. */
export class Page {
  readonly #cdp: Cdp;
  readonly #targetId: string;
  readonly #sessionId: string;

  /**
   * @param cdp The browser connection.
   * @param targetId The tab's target.
   * @param sessionId The attached session.
   */
  constructor(cdp: Cdp, targetId: string, sessionId: string) {
    this.#cdp = cdp;
    this.#targetId = targetId;
    this.#sessionId = sessionId;
  }

  /**
   * Sends a command to this page.
   *
   * @param method The method.
   * @param params Its parameters.
   * @returns Its result.
   */
  send(method: string, params: Record<string, unknown> = {}): Promise<Record<string, unknown>> {
    return this.#cdp.send(method, params, this.#sessionId);
  }

  /**
   * Navigates (`Page.navigate`) and fails when the navigation does.
   *
   * @param url Where to.
   */
  async navigate(url: string): Promise<void> {
    const { errorText } = await this.send("Page.navigate", { url });
    if (errorText) throw new Error(`cannot open ${url}: ${errorText}`);
  }

  /**
   * Evaluates an expression in the page (`Runtime.evaluate`, by value, promises awaited).
   *
   * @param expression JavaScript.
   * @returns Its value, as JSON brings it over.
   */
  async evaluate<T = unknown>(expression: string): Promise<T> {
    const answer = await this.send("Runtime.evaluate", {
      expression,
      returnByValue: true,
      awaitPromise: true,
    }) as {
      result?: { value?: unknown };
      exceptionDetails?: { text?: string; exception?: { description?: string } };
    };
    if (answer.exceptionDetails) {
      const details = answer.exceptionDetails;
      throw new Error(
        `${expression}: ${details.exception?.description ?? details.text ?? "threw"}`,
      );
    }
    return answer.result?.value as T;
  }

  /**
   * Polls an expression until it is truthy, or fails after the timeout with the page's text.
   *
   * @param expression JavaScript.
   * @param what Said in the error.
   * @param timeout Longest wait, ms.
   */
  async waitFor(expression: string, what: string, timeout = 10_000): Promise<void> {
    try {
      // Before the document exists the evaluation may fail: that counts as "not yet".
      await waitFor(() => this.evaluate<boolean>(`!!(${expression})`).catch(() => false), {
        what,
        timeout,
      });
    } catch (error) {
      const text = await this.evaluate<string>("document.body?.innerText ?? ''").catch(() => "");
      throw new Error(`${(error as Error).message}; the page shows:\n${text}`);
    }
  }

  /**
   * Takes a screenshot of the viewport (`Page.captureScreenshot`).
   *
   * @returns PNG bytes.
   */
  async screenshot(): Promise<Uint8Array> {
    const { data } = await this.send("Page.captureScreenshot", { format: "png" });
    return Uint8Array.from(atob(String(data)), (c) => c.charCodeAt(0));
  }

  /** Closes the tab. */
  async close(): Promise<void> {
    await this.#cdp.send("Target.closeTarget", { targetId: this.#targetId });
  }
}

/** A running headless Chromium. */
export interface Chromium {
  /** The CDP connection to the browser. */
  readonly cdp: Cdp;
  /** What Chromium printed on stderr so far. */
  readonly stderr: readonly string[];
  /** Closes the connection, stops Chromium and waits for it to exit. */
  readonly close: () => Promise<void>;
}

/**
 * Starts headless Chromium with a fresh profile and connects to it. It reaches nothing but
 * the pages it is sent to: the flags turn off its background calls to Google's services.
 *
 * @param options `userDataDir`: an empty directory for the profile; `timeout`: longest wait
 *   for its DevTools endpoint, ms; `args`: more command-line switches (e.g.
 *   `--host-resolver-rules=MAP name 127.0.0.1`).
 * @returns The browser.
 */
export async function launchChromium(
  options: { userDataDir: string; timeout?: number; args?: readonly string[] },
): Promise<Chromium> {
  // Chromium's own temporary files (its singleton socket) go inside the profile, so removing the
  // profile removes everything it left.
  const tmp = `${options.userDataDir}/tmp`;
  await Deno.mkdir(tmp, { recursive: true });
  const child = new Deno.Command(CHROMIUM_PATH, {
    args: [
      "--headless",
      "--no-sandbox",
      "--disable-gpu",
      "--disable-quic",
      "--no-first-run",
      "--no-default-browser-check",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
      "--disable-extensions",
      "--disable-breakpad",
      "--window-size=1280,860",
      "--remote-debugging-port=0",
      `--user-data-dir=${options.userDataDir}`,
      ...(options.args ?? []),
      "about:blank",
    ],
    env: { TMPDIR: tmp },
    stdin: "null",
    stdout: "null",
    stderr: "piped",
  }).spawn();
  const stderr: string[] = [];
  const lines = child.stderr.pipeThrough(new TextDecoderStream()).pipeThrough(lineSplitter());
  const reader = lines.getReader();
  const reading = (async () => {
    while (true) {
      const { done, value } = await reader.read();
      if (done) return;
      stderr.push(value);
    }
  })().catch(() => {});
  let exited = false;
  const status = child.status.finally(() => (exited = true));

  const signal = (name: Deno.Signal) => {
    try {
      child.kill(name);
    } catch {
      // Already exited.
    }
  };
  // After `Browser.close` (a clean exit) or from the start: SIGTERM, then SIGKILL 5 s later.
  const stop = async (grace = 0) => {
    const term = setTimeout(() => signal("SIGTERM"), grace);
    const kill = setTimeout(() => signal("SIGKILL"), grace + 5000);
    await status;
    clearTimeout(term);
    clearTimeout(kill);
    // Chromium's helper processes hold the pipe a moment longer; do not wait on them forever.
    const late = setTimeout(() => reader.cancel().catch(() => {}), 3000);
    await reading;
    clearTimeout(late);
  };

  let url = "";
  try {
    await waitFor(() => {
      url = stderr.map((line) => /DevTools listening on (ws:\/\/\S+)/.exec(line)?.[1])
        .find((found) => found !== undefined) ?? "";
      if (exited) throw new Error("chromium exited before it listened");
      return url !== "";
    }, { timeout: options.timeout ?? 20_000, what: "chromium's DevTools endpoint" });
  } catch (error) {
    await stop();
    throw new Error(`${(error as Error).message}\nchromium stderr:\n${stderr.join("\n")}`);
  }
  let cdp: Cdp;
  try {
    cdp = await Cdp.connect(url);
  } catch (error) {
    await stop();
    throw error;
  }
  return {
    cdp,
    stderr,
    close: async () => {
      // Ask for a clean exit first; the connection closes as the browser goes.
      cdp.send("Browser.close").catch(() => {});
      await stop(3000);
      await cdp.close();
    },
  };
}
