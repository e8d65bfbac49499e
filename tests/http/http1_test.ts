import { deepEqual, equal, ok as assert, throws } from "node:assert/strict";
import {
  chunkedDecoder,
  copyFields,
  decodeChunked,
  decodeChunkedInPlace,
  decodeLatin1,
  encodeLatin1,
  type Framing,
  LAST_CHUNK,
  MAX_FIELDS,
  MAX_HEAD_BYTES,
  parseRequestHead,
  parseResponseHead,
  ProtocolError,
  RequestError,
  requestHead,
  responseFraming,
  reusableAfter,
} from "../../lib/http/http1.ts";
import { joinParts } from "../../lib/http/streaming.ts";
import { forwardResponseHeaders } from "../../lib/http/headers.ts";

const bytes = (text: string) => encodeLatin1(text);

function parse(text: string) {
  const buf = bytes(text);
  return parseResponseHead(buf, 0, buf.length);
}

/** Checks that a head parser sees no head in any cut of `text`, though the bytes past the cut
 * hold a complete head (a parser that read past its end would see it), then the fields of the
 * whole head. */
function everyCutIncomplete(
  parse: (buf: Uint8Array, start: number, end: number) => {
    size: number;
    headers: [string, string][];
  } | null,
  text: string,
  fields: [string, string][],
): void {
  const buf = encodeLatin1(text + text);
  for (let cut = 0; cut < text.length; cut++) equal(parse(buf, 0, cut), null, `cut at ${cut}`);
  const head = parse(buf, 0, text.length)!;
  equal(head.size, text.length);
  deepEqual(head.headers, fields);
}

Deno.test("parseResponseHead()", async (t) => {
  await t.step("reads status, reason and fields, names lowercased, values trimmed", () => {
    const head = parse(
      "HTTP/1.1 200 OK\r\nContent-Type:  text/plain \r\nX-A: 1\r\nx-a: 2\r\n\r\nbody",
    )!;
    equal(head.status, 200);
    equal(head.reason, "OK");
    deepEqual(head.headers, [["content-type", "text/plain"], ["x-a", "1"], ["x-a", "2"]]);
    equal(
      head.size,
      "HTTP/1.1 200 OK\r\nContent-Type:  text/plain \r\nX-A: 1\r\nx-a: 2\r\n\r\n".length,
    );
    equal(head.close, false);
  });

  await t.step("returns null until the blank line arrives", () => {
    equal(parse("HTTP/1.1 200 OK\r\nA: b\r\n"), null);
    equal(parse("HTTP/1."), null);
  });

  await t.step("is null for every cut of a head, whatever lies past the cut", () => {
    everyCutIncomplete(
      parseResponseHead,
      "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nConnection: keep-alive\r\nA:\tb\r\n\r\n",
      [["content-length", "5"], ["connection", "keep-alive"], ["a", "b"]],
    );
  });

  await t.step("accepts bare LF line ends (RFC 9112 §2.2)", () => {
    equal(parse("HTTP/1.1 204 No Content\nA: b\n\n")!.status, 204);
  });

  await t.step("keeps obs-text bytes in values as byte-string characters", () => {
    const head = parse("HTTP/1.1 200 OK\r\nX-Name: caf\xe9\r\n\r\n")!;
    equal(head.headers[0]![1], "caf\xe9");
  });

  await t.step("knows when the connection closes after the response", () => {
    assert(parse("HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n")!.close);
    assert(parse("HTTP/1.0 200 OK\r\n\r\n")!.close);
    assert(!parse("HTTP/1.0 200 OK\r\nConnection: keep-alive\r\n\r\n")!.close);
    assert(parse("HTTP/1.1 200 OK\r\nConnection: foo, close\r\n\r\n")!.close);
    // One list across field lines: a later keep-alive does not take the close back.
    assert(parse("HTTP/1.1 200 OK\r\nConnection: close\r\nConnection: keep-alive\r\n\r\n")!.close);
  });

  const bad: [string, string, RegExp][] = [
    ["garbage", "garbage bytes\r\n\r\n", /invalid HTTP version/],
    ["garbage without a blank line", "\x00\x01\x02", /invalid HTTP version/],
    ["HTTP/2 status line", "HTTP/2 200\r\n\r\n", /invalid status line/],
    ["no status code", "HTTP/1.1 OK\r\n\r\n", /invalid status line/],
    ["status out of range", "HTTP/1.1 999 Nope\r\n\r\n", /invalid status code/],
    ["space before colon", "HTTP/1.1 200 OK\r\nA : b\r\n\r\n", /invalid header name/],
    ["no colon", "HTTP/1.1 200 OK\r\nnocolon\r\n\r\n", /invalid header name/],
    ["obs-fold", "HTTP/1.1 200 OK\r\nA: b\r\n c\r\n\r\n", /obsolete line folding/],
    ["NUL in a value", "HTTP/1.1 200 OK\r\nA: b\x00c\r\n\r\n", /invalid header value/],
    ["bare CR in a value", "HTTP/1.1 200 OK\r\nA: b\rc\r\n\r\n", /invalid header value/],
  ];
  for (const [name, text, message] of bad) {
    await t.step(
      `rejects ${name}`,
      () => throws(() => parse(text), (e) => e instanceof ProtocolError && message.test(e.message)),
    );
  }

  await t.step("rejects a head over MAX_HEAD_BYTES", () => {
    const big = "HTTP/1.1 200 OK\r\n" + "X: " + "a".repeat(MAX_HEAD_BYTES) + "\r\n";
    throws(() => parse(big), /too large/);
    throws(() => parse(big + "\r\n"), /too large/);
  });
});

/** The field lines `copyFields` passes on, as text. */
function copied(text: string, keepLength: boolean): string {
  const head = parse(text)!;
  const out = new Uint8Array(text.length * 2);
  return decodeLatin1(out, 0, copyFields(head.raw, keepLength, out, 0));
}

Deno.test("copyFields() passes a response's field lines on as bytes", async (t) => {
  await t.step("drops hop-by-hop fields, keeps case, obs-text and order", () => {
    const text = "HTTP/1.1 200 OK\r\nServer: nginx\r\nConnection: keep-alive\r\n" +
      "Keep-Alive: timeout=5\r\nX-Name: caf\xe9\r\nTransfer-Encoding: chunked\r\n" +
      "TE: trailers\r\nTrailer: x\r\nUpgrade: h2c\r\nProxy-Connection: x\r\nSet-Cookie: a=1\r\n\r\n";
    equal(copied(text, true), "Server: nginx\r\nX-Name: caf\xe9\r\nSet-Cookie: a=1\r\n");
  });

  await t.step("keeps Content-Length only when asked", () => {
    const text = "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nA: b\r\n\r\n";
    equal(copied(text, true), "Content-Length: 5\r\nA: b\r\n");
    equal(copied(text, false), "A: b\r\n");
  });

  await t.step("ends every line with CRLF and drops trailing whitespace", () => {
    equal(copied("HTTP/1.1 200 OK\nA:  b \t\nC:\n\n", true), "A:  b\r\nC:\r\n");
  });

  await t.step("says when Connection names fields the bytes cannot drop by themselves", () => {
    assert(!parse("HTTP/1.1 200 OK\r\nConnection: keep-alive, close\r\n\r\n")!.raw.namesOthers);
    assert(
      parse("HTTP/1.1 200 OK\r\nConnection: x-secret\r\nX-Secret: 1\r\n\r\n")!.raw.namesOthers,
    );
  });

  await t.step("fuzz: what it copies parses back to the fields the string rules keep", () => {
    let seed = 11;
    const random = () => (seed = (seed * 1103515245 + 12345) & 0x7fffffff) / 0x7fffffff;
    const names = ["A", "content-length", "Connection", "Keep-Alive", "TE", "Date", "X-\xe9"];
    const values = ["", " b ", "\t1", "close", "keep-alive", "caf\xe9", "5", "x, y"];
    for (let round = 0; round < 2000; round++) {
      let text = "HTTP/1.1 200 OK\r\n";
      for (let i = Math.floor(random() * 6); i > 0; i--) {
        const name = names[Math.floor(random() * names.length)]!;
        text += `${name}:${values[Math.floor(random() * values.length)]}${
          random() < 0.2 ? "\n" : "\r\n"
        }`;
      }
      text += "\r\n";
      let head;
      try {
        head = parse(text);
      } catch (error) {
        assert(error instanceof ProtocolError, `${JSON.stringify(text)}: ${error}`);
        continue;
      }
      if (head === null || head.raw.namesOthers) continue;
      const keepLength = random() < 0.5;
      const again = parse(`HTTP/1.1 200 OK\r\n${copied(text, keepLength)}\r\n`)!;
      deepEqual(
        again.headers,
        forwardResponseHeaders(head.headers, keepLength),
        JSON.stringify(text),
      );
    }
  });
});

Deno.test("responseFraming() follows RFC 9112 §6.3", async (t) => {
  const cases: [string, string, string, Framing][] = [
    ["HEAD has no body", "HEAD", "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n", { kind: "none" }],
    ["204 has no body", "GET", "HTTP/1.1 204 No Content\r\n\r\n", { kind: "none" }],
    ["304 has no body", "GET", "HTTP/1.1 304 Not Modified\r\nContent-Length: 10\r\n\r\n", {
      kind: "none",
    }],
    ["Content-Length", "GET", "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n", {
      kind: "length",
      length: 10,
    }],
    [
      "identical Content-Length list",
      "GET",
      "HTTP/1.1 200 OK\r\nContent-Length: 7, 7\r\nContent-Length: 7\r\n\r\n",
      { kind: "length", length: 7 },
    ],
    ["chunked", "GET", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", {
      kind: "chunked",
    }],
    [
      "chunked overrides Content-Length",
      "GET",
      "HTTP/1.1 200 OK\r\nTransfer-Encoding: Chunked\r\nContent-Length: 3\r\n\r\n",
      { kind: "chunked" },
    ],
    ["neither: read to close", "GET", "HTTP/1.1 200 OK\r\n\r\n", { kind: "close" }],
  ];
  for (const [name, method, text, framing] of cases) {
    await t.step(name, () => deepEqual(responseFraming(parse(text)!, method), framing));
  }
  const bad: [string, string][] = [
    [
      "conflicting Content-Length",
      "HTTP/1.1 200 OK\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n",
    ],
    ["negative Content-Length", "HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n"],
    ["non-numeric Content-Length", "HTTP/1.1 200 OK\r\nContent-Length: 1e3\r\n\r\n"],
    ["unknown transfer coding", "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n"],
    ["gzip then chunked", "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n"],
  ];
  for (const [name, text] of bad) {
    await t.step(
      `rejects ${name}`,
      () => throws(() => responseFraming(parse(text)!, "GET"), ProtocolError),
    );
  }
});

Deno.test("reusableAfter(): only a response the backend framed itself leaves the connection reusable", async (t) => {
  const cases: [string, string, string, boolean][] = [
    ["200 with Content-Length", "GET", "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n", true],
    ["200 chunked", "GET", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", true],
    [
      "a 404 with Content-Length",
      "POST",
      "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n",
      true,
    ],
    [
      "HTTP/1.0 asking to keep alive",
      "GET",
      "HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 2\r\n\r\n",
      true,
    ],
    [
      "Connection: close",
      "GET",
      "HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\n",
      false,
    ],
    ["HTTP/1.0 by default", "GET", "HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\n", false],
    ["a response to HEAD", "HEAD", "HTTP/1.1 200 OK\r\nContent-Length: 99\r\n\r\n", false],
    ["204", "DELETE", "HTTP/1.1 204 No Content\r\n\r\n", false],
    [
      "204 saying Content-Length: 0",
      "OPTIONS",
      "HTTP/1.1 204 No Content\r\nContent-Length: 0\r\n\r\n",
      false,
    ],
    ["304", "GET", 'HTTP/1.1 304 Not Modified\r\nETag: "x"\r\n\r\n', false],
    [
      "Transfer-Encoding with Content-Length",
      "GET",
      "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n",
      false,
    ],
  ];
  for (const [name, method, text, reusable] of cases) {
    await t.step(`${name}: ${reusable ? "reused" : "closed"}`, () => {
      equal(reusableAfter(parse(text)!, method), reusable);
    });
  }
});

function decodeAll(
  input: Uint8Array,
  split: number[],
): { data: string; consumed: number; done: boolean } {
  const state = chunkedDecoder();
  let data = "";
  let consumed = 0;
  let from = 0;
  for (const at of [...split, input.length]) {
    const piece = input.subarray(from, at);
    const used = decodeChunked(state, piece, (d) => (data += decodeLatin1(d, 0, d.length)));
    consumed += used;
    from = at;
    if (state.phase === "done") break;
  }
  return { data, consumed, done: state.phase === "done" };
}

Deno.test("decodeChunked()", async (t) => {
  const body = "5\r\nhello\r\n1;ext=1\r\n \r\nA\r\n0123456789\r\n0\r\nTrailer: x\r\n\r\n";

  await t.step("decodes sizes, extensions and trailers", () => {
    deepEqual(decodeAll(bytes(body), []), {
      data: "hello 0123456789",
      consumed: body.length,
      done: true,
    });
  });

  await t.step("gives the same result for every split point", () => {
    const input = bytes(body);
    for (let a = 0; a <= input.length; a++) {
      for (let b = a; b <= input.length; b += 7) {
        deepEqual(decodeAll(input, [a, b]), {
          data: "hello 0123456789",
          consumed: input.length,
          done: true,
        });
      }
    }
  });

  await t.step("stops at the end and leaves the next bytes unconsumed", () => {
    const result = decodeAll(bytes("3\r\nabc\r\n0\r\n\r\nHTTP/1.1"), []);
    equal(result.data, "abc");
    equal(result.consumed, "3\r\nabc\r\n0\r\n\r\n".length);
  });

  await t.step("accepts bare LF and upper-case hex", () => {
    equal(decodeAll(bytes("B\nhello world\n0\n\n"), []).data, "hello world");
  });

  await t.step("round-trips joinParts() chunk output of random payloads", () => {
    for (let round = 0; round < 50; round++) {
      const parts = Array.from(
        { length: 1 + (round % 5) },
        (_, i) => "x".repeat((round * 31 + i * 17) % 300 + 1),
      );
      const wire = [...parts.map((p) => joinParts([bytes(p)], true)), LAST_CHUNK];
      const all = new Uint8Array(wire.reduce((n, w) => n + w.length, 0));
      let at = 0;
      for (const w of wire) {
        all.set(w, at);
        at += w.length;
      }
      const cuts = [Math.floor(all.length / 3), Math.floor((2 * all.length) / 3)];
      equal(decodeAll(all, cuts).data, parts.join(""));
    }
  });

  await t.step("decodes in place as it decodes by copying, for every split point", () => {
    const input = bytes(body + "GET / HTTP/1.1\r\n");
    for (let a = 0; a <= input.length; a++) {
      const state = chunkedDecoder();
      const buffer = input.slice();
      let data = "";
      let consumed = 0;
      for (const [from, to] of [[0, a], [a, buffer.length]] as const) {
        if (state.phase === "done") break;
        const piece = buffer.subarray(from, to);
        const result = decodeChunkedInPlace(state, piece);
        data += decodeLatin1(piece, 0, result.payload);
        consumed += result.consumed;
      }
      equal(data, "hello 0123456789");
      equal(consumed, body.length);
      // What follows the body is left as it was, for the next request.
      equal(decodeLatin1(buffer, body.length, buffer.length), "GET / HTTP/1.1\r\n");
    }
  });

  await t.step("decodes random chunkings of random payloads in place", () => {
    let seed = 7;
    const random = (n: number) => (seed = (seed * 1103515245 + 12345) % 2 ** 31) % n;
    for (let round = 0; round < 100; round++) {
      const payload = Array.from({ length: random(2000) }, () => String.fromCharCode(random(256)))
        .join("");
      let wire = "";
      for (let at = 0; at < payload.length;) {
        const size = 1 + random(300);
        const piece = payload.slice(at, at + size);
        wire += `${piece.length.toString(16)}${random(4) === 0 ? ";x=y" : ""}\r\n${piece}\r\n`;
        at += size;
      }
      const input = bytes(wire + "0\r\n\r\n");
      const state = chunkedDecoder();
      let data = "";
      for (let from = 0; from < input.length && state.phase !== "done";) {
        const to = Math.min(input.length, from + 1 + random(700));
        const piece = input.subarray(from, to);
        const { payload: n, consumed } = decodeChunkedInPlace(state, piece);
        data += decodeLatin1(piece, 0, n);
        from += consumed;
      }
      equal(state.phase, "done");
      equal(data, payload);
    }
  });

  const bad: [string, string][] = [
    ["a non-hex size", "zz\r\n"],
    ["an empty size", "\r\n"],
    ["a size over 13 hex digits", "1234567890abcd\r\n"],
    ["missing CRLF after data", "3\r\nabcX"],
    ["garbage after the last chunk", "0\r\n\rX"],
  ];
  for (const [name, text] of bad) {
    await t.step(`rejects ${name}`, () => throws(() => decodeAll(bytes(text), []), ProtocolError));
  }

  await t.step("fuzz: random bytes never hang or throw anything but ProtocolError", () => {
    let seed = 42;
    const random = () => (seed = (seed * 1103515245 + 12345) & 0x7fffffff) / 0x7fffffff;
    const alphabet = "0123456789abcdefXYZ;= \r\n\t";
    for (let round = 0; round < 2000; round++) {
      const text = Array.from(
        { length: 1 + Math.floor(random() * 40) },
        () => alphabet[Math.floor(random() * alphabet.length)],
      ).join("");
      try {
        const result = decodeAll(bytes(text), [Math.floor(random() * text.length)]);
        assert(result.consumed <= text.length);
      } catch (error) {
        assert(error instanceof ProtocolError, `${JSON.stringify(text)}: ${error}`);
      }
    }
  });
});

Deno.test("fuzz: parseResponseHead() on random heads throws only ProtocolError", () => {
  let seed = 7;
  const random = () => (seed = (seed * 1103515245 + 12345) & 0x7fffffff) / 0x7fffffff;
  const pieces = [
    "HTTP/1.1 ",
    "200",
    " OK",
    "\r\n",
    "\n",
    "A: b",
    ":",
    " ",
    "\t",
    "\x00",
    "\xff",
    "Content-Length: 5",
    "HTTP/1.0 ",
  ];
  for (let round = 0; round < 3000; round++) {
    const text = Array.from(
      { length: 1 + Math.floor(random() * 12) },
      () => pieces[Math.floor(random() * pieces.length)],
    ).join("");
    try {
      const head = parse(text);
      if (head) {
        assert(head.status >= 100 && head.status <= 599);
        try {
          responseFraming(head, "GET");
        } catch (error) {
          assert(error instanceof ProtocolError);
        }
      }
    } catch (error) {
      assert(error instanceof ProtocolError, `${JSON.stringify(text)}: ${error}`);
    }
  }
});

Deno.test("requestHead() and encodeLatin1() write byte strings verbatim", () => {
  const head = requestHead("GET", "/a?b=1", [["host", "example.com"], ["x-name", "caf\xe9"]]);
  equal(head, "GET /a?b=1 HTTP/1.1\r\nhost: example.com\r\nx-name: caf\xe9\r\n\r\n");
  const wire = encodeLatin1(head);
  equal(wire.length, head.length);
  equal(wire[head.indexOf("\xe9")], 0xe9);
});

function request(text: string) {
  const buf = bytes(text);
  return parseRequestHead(buf, 0, buf.length);
}

Deno.test("parseRequestHead()", async (t) => {
  await t.step("reads the request line, fields, Host and framing", () => {
    const head = request(
      "POST /a?b=1 HTTP/1.1\r\nHost: x.example\r\nContent-Length: 5\r\nX-A:  1 \r\n\r\nhello",
    )!;
    deepEqual(
      [head.method, head.target, head.minor, head.host, head.bodyLength, head.keepAlive],
      ["POST", "/a?b=1", 1, "x.example", 5, true],
    );
    deepEqual(head.headers, [["host", "x.example"], ["content-length", "5"], ["x-a", "1"]]);
    equal(
      head.size,
      "POST /a?b=1 HTTP/1.1\r\nHost: x.example\r\nContent-Length: 5\r\nX-A:  1 \r\n\r\n".length,
    );
  });
  await t.step("returns null until the blank line arrives", () => {
    equal(request("GET / HTTP/1.1\r\nHost: a\r\n"), null);
    equal(request(""), null);
  });
  await t.step("is null for every cut of a head, whatever lies past the cut", () => {
    everyCutIncomplete(
      parseRequestHead,
      "GET / HTTP/1.1\r\nHost: a\r\nUser-Agent: t\nX-Y:\tz \r\n\r\n",
      [["host", "a"], ["user-agent", "t"], ["x-y", "z"]],
    );
  });
  await t.step("lowercases names in any case, common and uncommon ones alike", () => {
    const head = request(
      "GET / HTTP/1.1\r\nhOsT: a\r\nACCEPT-ENCODING: gzip\r\nSec-Ch-Ua-Mobile: ?0\r\n" +
        "X-Made-Up-Name: 1\r\nA^B: 2\r\nCONNECTIOn: keep-alive\r\n\r\n",
    )!;
    deepEqual(head.headers.map(([name]) => name), [
      "host",
      "accept-encoding",
      "sec-ch-ua-mobile",
      "x-made-up-name",
      "a^b", // not folded into "a~b": only letters change case
      "connection",
    ]);
    equal(head.host, "a");
  });
  await t.step("skips empty lines before the request line (RFC 9112 §2.2)", () => {
    const head = request("\r\n\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n")!;
    equal(head.method, "GET");
    equal(head.size, "\r\n\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n".length);
  });
  await t.step("keep-alive defaults: on for 1.1, off for 1.0, as Connection says", () => {
    equal(request("GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")!.keepAlive, false);
    equal(request("GET / HTTP/1.0\r\n\r\n")!.keepAlive, false);
    equal(request("GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n")!.keepAlive, true);
  });
  await t.step("chunked framing and Expect: 100-continue", () => {
    const head = request(
      "PUT / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nExpect: 100-continue\r\n\r\n",
    )!;
    deepEqual([head.bodyLength, head.expectContinue], [-1, true]);
  });
  await t.step("takes OPTIONS *, CONNECT's authority-form and http(s) absolute-form", () => {
    equal(request("OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n")!.target, "*");
    equal(request("CONNECT a:22 HTTP/1.1\r\nHost: a:22\r\n\r\n")!.target, "a:22");
    equal(request("GET HTTPS://b:8443?q HTTP/1.1\r\nHost: a\r\n\r\n")!.target, "HTTPS://b:8443?q");
    equal(request("GET / HTTP/1.0\r\n\r\n")!.host, null);
  });
  await t.step("marks a head with a field name that has _ (and only then)", () => {
    equal(request("GET / HTTP/1.1\r\nHost: a\r\nX-A: 1\r\n\r\n")!.underscores, false);
    const head = request("GET / HTTP/1.1\r\nHost: a\r\nX_Forwarded_For: 6.6.6.6\r\n\r\n")!;
    equal(head.underscores, true);
    deepEqual(head.headers[1], ["x_forwarded_for", "6.6.6.6"], "lowercased, kept for the policy");
    equal(request("GET / HTTP/1.1\r\nHost: a\r\nx_lower: 1\r\n\r\n")!.underscores, true);
  });
  await t.step("identical Content-Length values are one value", () => {
    equal(
      request("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3, 3\r\nContent-Length: 3\r\n\r\n")!
        .bodyLength,
      3,
    );
  });

  const refused: [string, string, number][] = [
    [
      "Content-Length with Transfer-Encoding (smuggling)",
      "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n",
      400,
    ],
    [
      "differing Content-Length values",
      "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n",
      400,
    ],
    ["a negative Content-Length", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: -1\r\n\r\n", 400],
    ["Content-Length with a sign", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: +3\r\n\r\n", 400],
    [
      "Transfer-Encoding not ending in chunked",
      "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, gzip\r\n\r\n",
      400,
    ],
    [
      "a transfer coding before chunked",
      "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
      501,
    ],
    ["Transfer-Encoding in HTTP/1.0", "POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n", 400],
    ["obs-fold", "GET / HTTP/1.1\r\nHost: a\r\nX-A: b\r\n c\r\n\r\n", 400],
    ["whitespace before the colon", "GET / HTTP/1.1\r\nHost: a\r\nX-A : b\r\n\r\n", 400],
    ["a bare CR inside a value", "GET / HTTP/1.1\r\nHost: a\r\nX-A: b\rc\r\n\r\n", 400],
    ["NUL in a value", "GET / HTTP/1.1\r\nHost: a\r\nX-A: b\x00\r\n\r\n", 400],
    ["a missing Host in HTTP/1.1", "GET / HTTP/1.1\r\n\r\n", 400],
    ["two Hosts", "GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400],
    ["a malformed request line", "GET /\r\nHost: a\r\n\r\n", 400],
    ["two spaces in the request line", "GET  / HTTP/1.1\r\nHost: a\r\n\r\n", 400],
    ["a control character in the target", "GET /a\x01b HTTP/1.1\r\nHost: a\r\n\r\n", 400],
    ["a raw byte 0x80 in the target", "GET /a\x80b HTTP/1.1\r\nHost: a\r\n\r\n", 400],
    ["a raw byte 0xFF in the target", "GET /\xff HTTP/1.1\r\nHost: a\r\n\r\n", 400],
    ["a target in no form", "GET abc HTTP/1.1\r\nHost: a\r\n\r\n", 400],
    ["* for GET", "GET * HTTP/1.1\r\nHost: a\r\n\r\n", 400],
    ["a file: target", "GET file:///etc/passwd HTTP/1.1\r\nHost: a\r\n\r\n", 400],
    ["an http target with no host", "GET http:///x HTTP/1.1\r\nHost: a\r\n\r\n", 400],
    ["Host: a b", "GET / HTTP/1.1\r\nHost: a b\r\n\r\n", 400],
    ["an empty Host", "GET / HTTP/1.1\r\nHost:\r\n\r\n", 400],
    ["an empty Host in HTTP/1.0", "GET / HTTP/1.0\r\nHost: \r\n\r\n", 400],
    ["a huge IP-literal Host", `GET / HTTP/1.1\r\nHost: [${"1".repeat(60_000)}]\r\n\r\n`, 400],
    ["HTTP/2.0 on an HTTP/1 connection", "GET / HTTP/2.0\r\nHost: a\r\n\r\n", 505],
    ["garbage", "\x16\x03\x01\x02\x00 tls hello\r\n\r\n", 400],
    ["an unknown expectation", "GET / HTTP/1.1\r\nHost: a\r\nExpect: teapot\r\n\r\n", 417],
    ["too many fields", `GET / HTTP/1.1\r\nHost: a\r\n${"X: 1\r\n".repeat(MAX_FIELDS)}\r\n`, 431],
    [
      "a head over MAX_HEAD_BYTES",
      `GET / HTTP/1.1\r\nHost: a\r\nX: ${"a".repeat(MAX_HEAD_BYTES)}\r\n\r\n`,
      431,
    ],
    ["a never-ending head", `GET / HTTP/1.1\r\nX: ${"a".repeat(MAX_HEAD_BYTES)}`, 431],
  ];
  for (const [name, text, status] of refused) {
    await t.step(`refuses ${name} with ${status}`, () => {
      throws(() => request(text), (e) => e instanceof RequestError && e.status === status);
    });
  }
});

Deno.test("fuzz: parseRequestHead() on random heads throws only RequestError", () => {
  let seed = 11;
  const random = () => (seed = (seed * 1103515245 + 12345) & 0x7fffffff) / 0x7fffffff;
  const pieces = [
    "GET ",
    "/",
    " HTTP/1.1",
    " HTTP/1.0",
    "\r\n",
    "\n",
    "Host: a",
    "Content-Length: 5",
    "Transfer-Encoding: chunked",
    ":",
    " ",
    "\t",
    "\x00",
    "\xff",
    "Connection: close",
  ];
  for (let round = 0; round < 3000; round++) {
    const text = Array.from(
      { length: 1 + Math.floor(random() * 12) },
      () => pieces[Math.floor(random() * pieces.length)],
    ).join("");
    try {
      const head = request(text);
      if (head) assert(head.bodyLength >= -1 && head.size <= text.length);
    } catch (error) {
      assert(error instanceof RequestError, `${JSON.stringify(text)}: ${error}`);
    }
  }
});
