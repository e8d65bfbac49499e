/**
 * A backend with the bugs real applications have, on a raw keep-alive HTTP/1.1 socket, for the
 * attacks of `deno task chaos --load` (issue 13): every path answers `Hello from Server <port>`,
 * except
 *
 * - `/attack/500`: a route that fails, 500;
 * - `/attack/drop`: a handler that crashes and closes the connection without an answer;
 * - `/attack/stray`: a 204, then, a moment later on the same connection, a whole second
 *   response nobody asked for (`poisoned`), as a framework that writes a body after a 204 does.
 *
 * It records the `X-Chaos-Id` of every request, like the dummy backends' `--record`.
 *
 * @module
 */

/** A running buggy application. */
export interface BuggyApp {
  /** Its port. */
  readonly port: number;
  /** The `X-Chaos-Id` values received, in order. */
  readonly ids: string[];
  /** Requests per attack path. */
  readonly attacks: Record<string, number>;
  /** Stops it and closes every connection. */
  readonly close: () => Promise<void>;
}

const encoder = new TextEncoder();
const decoder = new TextDecoder();

/** The bytes a stray write carries: a whole response, so a pool that hands the connection on
 * would give it to the next request. */
const STRAY = "HTTP/1.1 200 OK\r\ncontent-length: 8\r\n\r\npoisoned";

function answer(status: string, body: string): Uint8Array {
  return encoder.encode(`HTTP/1.1 ${status}\r\ncontent-length: ${body.length}\r\n\r\n${body}`);
}

/**
 * Starts the buggy application on a free loopback port.
 *
 * @param options `strayDelay`: how long after a 204 the stray response follows, ms.
 * @returns The running application.
 */
export function serveBuggyApp(options: { strayDelay?: number } = {}): BuggyApp {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = listener.addr.port;
  const ids: string[] = [];
  const attacks: Record<string, number> = {};
  const open = new Set<Deno.Conn>();
  const serving = new Set<Promise<void>>();
  const timers = new Set<ReturnType<typeof setTimeout>>();
  const serveConn = async (conn: Deno.Conn) => {
    const buf = new Uint8Array(64 * 1024);
    let text = "";
    try {
      while (true) {
        const end = text.indexOf("\r\n\r\n");
        if (end < 0) {
          const n = await conn.read(buf);
          if (n === null) return;
          text += decoder.decode(buf.subarray(0, n));
          continue;
        }
        const head = text.slice(0, end);
        const length = Number(/\r\ncontent-length: *(\d+)/i.exec(head)?.[1] ?? 0);
        while (text.length < end + 4 + length) {
          const n = await conn.read(buf);
          if (n === null) return;
          text += decoder.decode(buf.subarray(0, n));
        }
        text = text.slice(end + 4 + length);
        const path = head.slice(head.indexOf(" ") + 1, head.indexOf(" ", head.indexOf(" ") + 1));
        const id = /\r\nx-chaos-id: *(\S+)/i.exec(head)?.[1];
        if (id) ids.push(id);
        if (path.startsWith("/attack/")) attacks[path] = (attacks[path] ?? 0) + 1;
        if (path === "/attack/drop") return; // closed without an answer (finally)
        if (path === "/attack/500") {
          await conn.write(answer("500 Internal Server Error", "route failed"));
        } else if (path === "/attack/stray") {
          await conn.write(encoder.encode("HTTP/1.1 204 No Content\r\n\r\n"));
          const timer = setTimeout(() => {
            timers.delete(timer);
            conn.write(encoder.encode(STRAY)).catch(() => 0);
          }, options.strayDelay ?? 20);
          timers.add(timer);
        } else {
          await conn.write(answer("200 OK", `Hello from Server ${port}`));
        }
      }
    } catch {
      // The peer went away.
    } finally {
      open.delete(conn);
      try {
        conn.close();
      } catch {
        // Closed already.
      }
    }
  };
  const loop = (async () => {
    for await (const conn of listener) {
      open.add(conn);
      const work = serveConn(conn);
      serving.add(work);
      work.finally(() => serving.delete(work));
    }
  })().catch(() => {});
  return {
    port,
    ids,
    attacks,
    close: async () => {
      listener.close();
      for (const timer of timers) clearTimeout(timer);
      for (const conn of open) {
        try {
          conn.close();
        } catch {
          // Closed already.
        }
      }
      await loop;
      await Promise.all([...serving]);
    },
  };
}
