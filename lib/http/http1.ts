/**
 * HTTP/1.1 wire format (RFC 9112), for both sides: parsing and checking a client's request head,
 * serialising the request head sent to a backend, parsing its response head, deciding how a body
 * is framed, and decoding chunked bodies. Pure functions over bytes; no I/O.
 *
 * @module
 */

import { HOP_BY_HOP } from "./headers.ts";
import { isHostPortAt, targetProblem } from "./request_target.ts";

/** How a response body is delimited (RFC 9112 §6.3). */
export type Framing =
  | { readonly kind: "none" }
  | { readonly kind: "length"; readonly length: number }
  | { readonly kind: "chunked" }
  | { readonly kind: "close" };

/** A parsed response head. */
export interface ResponseHead {
  /** HTTP minor version: 0 or 1. */
  readonly minor: number;
  /** Status code, 100-599. */
  readonly status: number;
  /** Reason phrase (informational only). */
  readonly reason: string;
  /** Header fields in order, names lowercased, values trimmed (decoded from {@linkcode raw}
   * on first use: the goround front copies the field lines as bytes and never needs them). */
  readonly headers: [string, string][];
  /** Bytes the head took, including the blank line. */
  readonly size: number;
  /** Whether the connection must be closed after this response. */
  readonly close: boolean;
  /** The field lines as received. */
  readonly raw: RawFields;
  /** The `Content-Length`: its value when one field line holds one plain number (the usual
   * case, read without making a string), -1 when there is none, -2 when there are several
   * lines or a list, which {@linkcode responseFraming} reads from `headers`. */
  readonly contentLength: number;
  /** The `Transfer-Encoding` values, joined with ", " (`null`: none). */
  readonly transferEncoding: string | null;
}

/** Kinds of field a response's field lines are sorted into while parsing. */
export const FIELD_PLAIN = 0;
/** A hop-by-hop field (RFC 9110 §7.6.1), never passed on. */
export const FIELD_HOP = 1;
/** `Content-Length`, passed on only where it describes what the client gets. */
export const FIELD_LENGTH = 2;

/**
 * The field lines of a head as bytes: `spans` has five numbers per field, the offsets in
 * `bytes` of the line's start, the name's end, the value's start and end (trimmed), and the
 * field's kind (`FIELD_PLAIN`, `FIELD_HOP` or `FIELD_LENGTH`).
 */
export interface RawFields {
  /** The buffer the head was read into. Its bytes are only good until the buffer is reused:
   * for a backend response, until the response's `release`. */
  readonly bytes: Uint8Array;
  /** Five numbers per field line, in order (entries past `count` fields are stale). */
  readonly spans: readonly number[];
  /** How many field lines there are. */
  readonly count: number;
  /** Bytes the field lines take, with their line ends and the blank line. */
  readonly size: number;
  /** Whether `Connection` names fields beyond the hop-by-hop ones (these must be dropped too,
   * so the field lines cannot be copied as they are). */
  readonly namesOthers: boolean;
}

/** Largest response head accepted from a backend (a larger one is a protocol error). */
export const MAX_HEAD_BYTES = 64 * 1024;

const DIGITS = /^\d{1,15}$/;

/** Character classes for the head parsers, by code below 128 (checked with loops over char
 * codes, not regular expressions: a head has a dozen names and values to check, and the regex
 * calls showed in the profile). `TCHAR`: a token character (RFC 9110 §5.6.2), `UPPER`: one that
 * is an uppercase letter too, `UNDERSCORE`: `_` (a name with one is dropped by default, see
 * {@linkcode RequestHead.underscores}). */
const TCHAR = 1;
const UPPER = 2;
const UNDERSCORE = 4;
const CHAR_CLASS = new Uint8Array(128);
for (const c of "!#$%&'*+-.^`|~0123456789abcdefghijklmnopqrstuvwxyz") {
  CHAR_CLASS[c.charCodeAt(0)] = TCHAR;
}
for (const c of "ABCDEFGHIJKLMNOPQRSTUVWXYZ") CHAR_CLASS[c.charCodeAt(0)] = TCHAR | UPPER;
CHAR_CLASS["_".charCodeAt(0)] = TCHAR | UNDERSCORE;

/** Whether `text` has a character a request-target may not: controls, SP, DEL, and bytes
 * 0x80-0xFF (a URI is ASCII, RFC 3986 §2; a client percent-encodes the rest). */
function hasBadTargetChar(text: string): boolean {
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (c <= 32 || c >= 127) return true;
  }
  return false;
}

/** A response the parser refused (garbage, bad framing, over-large head). */
export class ProtocolError extends Error {
  /**
   * Creates the error.
   *
   * @param message What was wrong.
   */
  constructor(message: string) {
    super(message);
    this.name = "ProtocolError";
  }
}

const ASCII_ENCODER = new TextEncoder();
const ASCII_DECODER = new TextDecoder();

/**
 * Writes `text` as ISO-8859-1 bytes (header values are byte strings, RFC 9110 §5.5; UTF-8
 * encoding would turn obs-text bytes 0x80-0xFF into two bytes each).
 *
 * @param text Characters all below U+0100.
 * @returns The bytes.
 */
export function encodeLatin1(text: string): Uint8Array<ArrayBuffer> {
  const out = new Uint8Array(text.length);
  writeLatin1(text, out, 0);
  return out;
}

/**
 * Writes `text` as ISO-8859-1 into `out` at `offset` (which must have room for `text.length`
 * bytes). ASCII text, the usual case, is encoded natively.
 *
 * @param text Characters all below U+0100.
 * @param out The buffer.
 * @param offset Where to start.
 * @returns The offset after the text.
 */
export function writeLatin1(text: string, out: Uint8Array, offset: number): number {
  if (text.length <= 64) {
    // Short text (a status line, a few fields) is quicker copied here than by a call out.
    for (let i = 0; i < text.length; i++) out[offset + i] = text.charCodeAt(i);
    return offset + text.length;
  }
  // For ASCII, UTF-8 is the same bytes; any other character takes two bytes in UTF-8, so then
  // fewer characters than bytes are read, or not all of them fit.
  const { read, written } = ASCII_ENCODER.encodeInto(
    text,
    out.subarray(offset, offset + text.length),
  );
  if (read !== text.length || written !== text.length) {
    for (let i = 0; i < text.length; i++) out[offset + i] = text.charCodeAt(i);
  }
  return offset + text.length;
}

/**
 * Reads bytes as ISO-8859-1 text (the inverse of {@linkcode encodeLatin1}).
 *
 * @param bytes The buffer.
 * @param start First byte.
 * @param end One past the last byte.
 * @returns The text.
 */
export function decodeLatin1(bytes: Uint8Array, start: number, end: number): string {
  // The usual case, ASCII, decodes natively. Any other byte shows: as U+FFFD (invalid UTF-8,
  // one per byte) or as fewer characters than bytes (a valid multi-byte sequence).
  const text = ASCII_DECODER.decode(bytes.subarray(start, end));
  if (text.length === end - start && text.indexOf("\uFFFD") < 0) return text;
  let out = "";
  for (let at = start; at < end; at += 4096) {
    const part = bytes.subarray(at, Math.min(end, at + 4096));
    out += String.fromCharCode.apply(null, part as unknown as number[]);
  }
  return out;
}

/**
 * Serialises a request head: request line, fields, blank line.
 *
 * @param method The method.
 * @param target The origin-form target (`/path?query`).
 * @param headers Fields to send, already filtered.
 * @returns The head as a byte string (see {@linkcode encodeLatin1}).
 */
export function requestHead(
  method: string,
  target: string,
  headers: readonly [string, string][],
): string {
  let head = `${method} ${target} HTTP/1.1\r\n`;
  for (const [name, value] of headers) head += `${name}: ${value}\r\n`;
  return head + "\r\n";
}

/** Whether `text` is a token (RFC 9110 §5.6.2): a field name or a method. */
function isToken(text: string): boolean {
  if (text.length === 0) return false;
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (c >= 128 || CHAR_CLASS[c] === 0) return false;
  }
  return true;
}

/** Splits a comma-separated field value into lowercased, trimmed members. */
export function listMembers(value: string): string[] {
  const out: string[] = [];
  for (const member of value.split(",")) {
    const trimmed = member.trim().toLowerCase();
    if (trimmed !== "") out.push(trimmed);
  }
  return out;
}

/** A lowercase field name (letters, digits and `-`), as text and as bytes. */
interface Name {
  readonly text: string;
  readonly bytes: Uint8Array;
}

/** Names grouped by length, for matching a name sent in any case on its bytes ({@linkcode
 * nameIs}) without making a string. */
function byLength(names: Iterable<string>): ReadonlyMap<number, readonly Name[]> {
  const out = new Map<number, Name[]>();
  for (const text of names) {
    out.set(text.length, [...(out.get(text.length) ?? []), {
      text,
      bytes: ASCII_ENCODER.encode(text),
    }]);
  }
  return out;
}

/** Hop-by-hop field names (RFC 9110 §7.6.1, RFC 9112 §6.1, §7.4; and `Proxy-Connection`). */
const HOP_NAMES = byLength(HOP_BY_HOP);
const CONNECTION = ASCII_ENCODER.encode("connection");
const CONTENT_LENGTH = ASCII_ENCODER.encode("content-length");
const TRANSFER_ENCODING = ASCII_ENCODER.encode("transfer-encoding");

/** Whether `buf[at, at + name.length)` is `name` (lowercase) in any case. Only for token bytes,
 * where setting bit 0x20 lowercases a letter and changes nothing that could match. */
function nameIs(buf: Uint8Array, at: number, name: Uint8Array): boolean {
  for (let i = 0; i < name.length; i++) if ((buf[at + i]! | 0x20) !== name[i]) return false;
  return true;
}

/** The fields of raw field lines as strings, names lowercased: one decode, then slices. */
function fieldsOf(raw: RawFields): [string, string][] {
  const { bytes, spans, count } = raw;
  const out: [string, string][] = [];
  if (count === 0) return out;
  const base = spans[0]!;
  const text = decodeLatin1(bytes, base, spans[count * 5 - 2]!);
  for (let i = 0; i < count * 5; i += 5) {
    out.push([
      text.slice(spans[i]! - base, spans[i + 1]! - base).toLowerCase(),
      text.slice(spans[i + 2]! - base, spans[i + 3]! - base),
    ]);
  }
  return out;
}

/** The number a run of 1 to 15 decimal digits spells, or -1 for anything else. */
function plainNumber(bytes: Uint8Array, start: number, end: number): number {
  if (end <= start || end - start > 15) return -1;
  let value = 0;
  for (let i = start; i < end; i++) {
    const c = bytes[i]! - 48;
    if (c < 0 || c > 9) return -1;
    value = value * 10 + c;
  }
  return value;
}

/** Whether `bytes[start, end)` is `word` (lowercase letters and `-`) in any case. */
function bytesAre(bytes: Uint8Array, start: number, end: number, word: Uint8Array): boolean {
  return end - start === word.length && nameIs(bytes, start, word);
}

const KEEP_ALIVE = ASCII_ENCODER.encode("keep-alive");
const CLOSE = ASCII_ENCODER.encode("close");

/**
 * Copies the field lines a client may get into `out` at `at`, as `name: value` CRLF lines:
 * every field but the hop-by-hop ones, and `Content-Length` only when `keepLength`. Only for
 * heads whose `Connection` names no other field (see {@linkcode RawFields.namesOthers}).
 *
 * @param raw The field lines.
 * @param keepLength Whether to copy `Content-Length`.
 * @param out The buffer; needs room for `raw.bytes.length` bytes from `at`.
 * @param at Where to start.
 * @returns The offset after the last line.
 */
export function copyFields(
  raw: RawFields,
  keepLength: boolean,
  out: Uint8Array,
  at: number,
): number {
  const { bytes, spans, count } = raw;
  for (let i = 0; i < count * 5; i += 5) {
    const kind = spans[i + 4]!;
    if (kind === FIELD_HOP || (kind === FIELD_LENGTH && !keepLength)) continue;
    // The line as sent (name, colon, leading OWS, value), without trailing OWS; then CRLF.
    for (let k = spans[i]!, end = spans[i + 3]!; k < end; k++) out[at++] = bytes[k]!;
    out[at++] = 13;
    out[at++] = 10;
  }
  return at;
}

/**
 * Parses a response head from `buf[start..end)`. The field lines are checked and sorted in one
 * pass over the bytes (token names, field-value characters, obs-fold refused), and kept as
 * bytes ({@linkcode RawFields}); strings are made only for the fields that decide framing and
 * the connection, and for the rest on first use of `headers`.
 *
 * @param buf The buffer.
 * @param start Where the head starts.
 * @param end One past the last byte read.
 * @param spans Where to put the field lines' offsets: a connection passes the same array for
 *   each response (overwritten, never shrunk), so reading a head does not grow a new one.
 * @returns The head, or `null` when more bytes are needed.
 * @throws {ProtocolError} When the bytes are not a valid HTTP/1.x response head.
 * @example
 * ```ts
 * const bytes = new TextEncoder().encode("HTTP/1.1 204 No Content\r\n\r\n");
 * parseResponseHead(bytes, 0, bytes.length)?.status; // 204
 * ```
 */
export function parseResponseHead(
  buf: Uint8Array,
  start: number,
  end: number,
  spans: number[] = [],
): ResponseHead | null {
  // One pass over the bytes finds the end of the head and checks and sorts its lines; running
  // out of bytes anywhere before the blank line means the head is not complete yet.
  const bytes = buf;
  let lf = bytes.indexOf(10, start);
  if (lf < 0 || lf >= end) return incompleteHead(bytes, start, end);
  // status-line = HTTP-version SP status-code SP [ reason-phrase ] (RFC 9112 §4)
  for (let i = 0; i < 5; i++) {
    if (bytes[start + i] !== HTTP_SLASH[i]) throw new ProtocolError("invalid HTTP version");
  }
  const minor = bytes[start + 5] === 49 && bytes[start + 6] === 46 && bytes[start + 8] === 32
    ? bytes[start + 7] === 49 ? 1 : bytes[start + 7] === 48 ? 0 : -1
    : -1;
  const lineEnd = lf > start && bytes[lf - 1] === 13 ? lf - 1 : lf;
  const status = lineEnd < start + 12 ? NaN : digit(bytes[start + 9]) * 100 +
    digit(bytes[start + 10]) * 10 + digit(bytes[start + 11]);
  if (minor < 0 || !(status >= 0) || (lineEnd > start + 12 && bytes[start + 12] !== 32)) {
    throw new ProtocolError("invalid status line");
  }
  if (status < 100 || status > 599) throw new ProtocolError(`invalid status code ${status}`);
  const reasonStart = start + 13;
  for (let i = reasonStart; i < lineEnd; i++) {
    const c = bytes[i]!;
    if ((c < 32 && c !== 9) || c === 127) throw new ProtocolError("invalid status line");
  }
  const reason = lineEnd <= reasonStart
    ? ""
    : lineEnd === reasonStart + 2 && bytes[reasonStart] === 79 && bytes[reasonStart + 1] === 75
    ? "OK"
    : decodeLatin1(bytes, reasonStart, lineEnd);

  let count = 0;
  let contentLength = -1;
  let transferEncoding: string | null = null;
  // Connection is one list across all its field lines (RFC 9110 §5.3): "close" anywhere in it
  // closes (§9.6), whatever else is said; HTTP/1.0 keeps alive only when asked to.
  let keepAlive = minor === 1;
  let close = false;
  let namesOthers = false;
  const fieldsStart = lf + 1;
  let i = fieldsStart;
  let headEnd = -1;
  while (true) {
    if (i >= end) return incompleteHead(bytes, start, end);
    const first = bytes[i]!;
    // The blank line ends the head.
    if (first === 10) {
      headEnd = i + 1;
      break;
    }
    if (first === 13) {
      if (i + 1 >= end) return incompleteHead(bytes, start, end);
      if (bytes[i + 1] === 10) {
        headEnd = i + 2;
        break;
      }
    }
    // obs-fold (RFC 9112 §5.2): refused rather than guessing how the next hop would join it.
    if (first === 32 || first === 9) throw new ProtocolError("obsolete line folding in a response");
    // The name: token characters up to the colon (no whitespace before it: RFC 9112 §5.1).
    let colon = i;
    while (colon < end) {
      const c = bytes[colon]!;
      if (c >= 128 || CHAR_CLASS[c] === 0) break;
      colon++;
    }
    if (colon >= end) return incompleteHead(bytes, start, end);
    if (colon === i || bytes[colon] !== 58) {
      const stop = bytes.indexOf(10, i);
      const shown = decodeLatin1(bytes, i, Math.min(stop < 0 || stop > end ? end : stop, i + 40))
        .replace(/\r$/, "");
      throw new ProtocolError(`invalid header name "${shown}" in a response`);
    }
    // The value: OWS, then field-value characters up to the line end (RFC 9110 §5.5).
    let valueStart = colon + 1;
    while (valueStart < end && (bytes[valueStart] === 32 || bytes[valueStart] === 9)) valueStart++;
    let at = valueStart;
    while (true) {
      if (at >= end) return incompleteHead(bytes, start, end);
      const c = bytes[at]!;
      if (c === 10) break;
      if ((c < 32 && c !== 9) || c === 127) {
        if (c === 13 && at + 1 >= end) return incompleteHead(bytes, start, end);
        if (c === 13 && bytes[at + 1] === 10) break;
        throw new ProtocolError(
          `invalid header value for ${decodeLatin1(bytes, i, colon).toLowerCase()} in a response`,
        );
      }
      at++;
    }
    lf = bytes[at] === 10 ? at : at + 1;
    let valueEnd = at;
    while (valueEnd > valueStart && (bytes[valueEnd - 1] === 32 || bytes[valueEnd - 1] === 9)) {
      valueEnd--;
    }
    const kind = fieldKind(bytes, i, colon - i);
    if (kind === FIELD_LENGTH) {
      const value = plainNumber(bytes, valueStart, valueEnd);
      contentLength = contentLength === -1 && value >= 0 ? value : -2;
    } else if (kind === FIELD_HOP) {
      if (colon - i === 17 && nameIs(bytes, i, TRANSFER_ENCODING)) {
        const value = decodeLatin1(bytes, valueStart, valueEnd);
        transferEncoding = transferEncoding === null ? value : `${transferEncoding}, ${value}`;
      } else if (colon - i === 10 && nameIs(bytes, i, CONNECTION)) {
        if (bytesAre(bytes, valueStart, valueEnd, KEEP_ALIVE)) { // the usual cases, as bytes
          keepAlive = true;
        } else if (bytesAre(bytes, valueStart, valueEnd, CLOSE)) {
          close = true;
        } else {
          const tokens = listMembers(decodeLatin1(bytes, valueStart, valueEnd));
          if (tokens.includes("close")) close = true;
          else if (tokens.includes("keep-alive")) keepAlive = true;
          // "close" is an option, not a field; any other name is a field to drop too.
          if (tokens.some((token) => token !== "close" && !HOP_BY_HOP.has(token))) {
            namesOthers = true;
          }
        }
      }
    }
    const at5 = count++ * 5;
    spans[at5] = i;
    spans[at5 + 1] = colon;
    spans[at5 + 2] = valueStart;
    spans[at5 + 3] = valueEnd;
    spans[at5 + 4] = kind;
    i = lf + 1;
  }
  if (headEnd - start > MAX_HEAD_BYTES) throw new ProtocolError("response head too large");
  const raw: RawFields = { bytes, spans, count, size: headEnd - fieldsStart, namesOthers };
  return new WireHead(
    minor,
    status,
    reason,
    headEnd - start,
    close || !keepAlive,
    raw,
    contentLength,
    transferEncoding,
  );
}

/** A field's kind, by its name: `Content-Length`, hop-by-hop or any other. */
function fieldKind(bytes: Uint8Array, at: number, length: number): number {
  if (length === 14 && nameIs(bytes, at, CONTENT_LENGTH)) return FIELD_LENGTH;
  const names = HOP_NAMES.get(length);
  if (names !== undefined) {
    for (const name of names) if (nameIs(bytes, at, name.bytes)) return FIELD_HOP;
  }
  return FIELD_PLAIN;
}

/**
 * A response head read off the wire. A class only so that `headers` can be decoded on first
 * use by a getter on the prototype (a getter in an object literal is built per object, and
 * that showed in the profile).
 */
class WireHead implements ResponseHead {
  #headers: [string, string][] | null = null;

  constructor(
    readonly minor: number,
    readonly status: number,
    readonly reason: string,
    readonly size: number,
    readonly close: boolean,
    readonly raw: RawFields,
    readonly contentLength: number,
    readonly transferEncoding: string | null,
  ) {}

  get headers(): [string, string][] {
    return (this.#headers ??= fieldsOf(this.raw));
  }
}

const HTTP_SLASH = ASCII_ENCODER.encode("HTTP/");

/** What {@linkcode parseResponseHead} says of a head not complete yet: `null` (read more),
 * unless it is already too large or does not begin like a response at all. */
function incompleteHead(bytes: Uint8Array, start: number, end: number): null {
  if (end - start > MAX_HEAD_BYTES) throw new ProtocolError("response head too large");
  // Fail fast on garbage rather than waiting for a blank line that never comes.
  const probe = Math.min(end - start, 5);
  for (let i = 0; i < probe; i++) {
    if (bytes[start + i] !== HTTP_SLASH[i]) throw new ProtocolError("invalid HTTP version");
  }
  return null;
}

/** The value of a decimal digit byte, or NaN (which fails any comparison). */
function digit(byte: number | undefined): number {
  return byte !== undefined && byte >= 48 && byte <= 57 ? byte - 48 : NaN;
}

/** A request the front refuses, with the status to answer (RFC 9112, RFC 9110 §15.5). */
export class RequestError extends Error {
  /** 400, 417, 431, 501 or 505. */
  readonly status: number;

  /**
   * Creates the error.
   *
   * @param status The status to answer.
   * @param message What was wrong (sent to the client as the body).
   */
  constructor(status: number, message: string) {
    super(message);
    this.name = "RequestError";
    this.status = status;
  }
}

/** A parsed request head, with the framing and connection decisions derived from it. */
export interface RequestHead {
  /** The method (a token, case-sensitive). */
  readonly method: string;
  /** The request-target as sent. */
  readonly target: string;
  /** HTTP minor version: 0 or 1. */
  readonly minor: number;
  /** Fields in order, names lowercased. */
  readonly headers: [string, string][];
  /** Bytes the head took, including leading empty lines and the blank line. */
  readonly size: number;
  /** The one `Host` value, or `null` (allowed only for HTTP/1.0). */
  readonly host: string | null;
  /** Body framing: bytes of a `Content-Length` body, -1 for chunked, 0 for none. */
  readonly bodyLength: number;
  /** Whether the client wants the connection kept open after the response. */
  readonly keepAlive: boolean;
  /** Whether the client sent `Expect: 100-continue`. */
  readonly expectContinue: boolean;
  /** Whether some field name has a `_`: CGI-style backends read `X_Forwarded_For` as
   * `X-Forwarded-For`, so such fields are dropped before forwarding unless
   * `--underscore-headers keep` (found by the name scan, so most requests need no check). */
  readonly underscores: boolean;
}

/** Most fields accepted in a request head. */
export const MAX_FIELDS = 128;

/** Where a request head's field lines are, from {@linkcode scanRequestHead}. */
interface RequestLines {
  /** One past the blank line. */
  readonly end: number;
  /** Five numbers per field line: its start, the colon, the value's start and end (OWS
   * trimmed), and the name's marks: `UPPER` if it has an uppercase letter, `UNDERSCORE` if it
   * has a `_`. */
  readonly spans: number[];
  /** The marks of every name together. */
  readonly marks: number;
  /** The first malformed field line, as `[kind, start, colon, line end]` (kind: 1 obs-fold,
   * 2 a bad name, 3 a bad value), or `null`. Lines after it are not recorded. */
  readonly error: readonly [number, number, number, number] | null;
}

const OBS_FOLD = 1;
const BAD_NAME = 2;
const BAD_VALUE = 3;

/**
 * One pass over a request head's bytes after the leading empty lines: finds the blank line that
 * ends it (CRLF CRLF, or bare LF line ends, RFC 9112 §2.2) and checks each field line on the way
 * (RFC 9112 §5: obs-fold refused, a token name right before the colon, visible ASCII, obs-text,
 * SP and HTAB in the value).
 *
 * @returns The lines, or `null` while the head is incomplete.
 */
function scanRequestHead(buf: Uint8Array, from: number, end: number): RequestLines | null {
  // The request line is checked on its text, once the head is whole.
  let i = from;
  while (i < end && buf[i] !== 10) i++;
  i++;
  const spans: number[] = [];
  let error: [number, number, number, number] | null = null;
  let all = 0;
  while (i < end) {
    const first = buf[i]!;
    if (first === 10) return { end: i + 1, spans, marks: all, error };
    if (first === 13 && i + 1 < end && buf[i + 1] === 10) {
      return { end: i + 2, spans, marks: all, error };
    }
    const start = i;
    // The name: token characters up to the colon.
    let marks = 0;
    while (i < end) {
      const c = buf[i]!;
      const kind = c < 128 ? CHAR_CLASS[c]! : 0;
      if (kind === 0) break;
      marks |= kind & (UPPER | UNDERSCORE);
      i++;
    }
    const colon = i;
    // The rest of the line: the value, checked as it goes, up to the line feed.
    let bad = false;
    if (colon < end && buf[colon] !== 10) i++;
    for (; i < end; i++) {
      const c = buf[i]!;
      if (c >= 32) {
        if (c === 127) bad = true;
        continue; // the usual byte: visible ASCII, SP or obs-text
      }
      if (c === 10) break;
      if (c !== 9 && !(c === 13 && i + 1 < end && buf[i + 1] === 10)) bad = true;
    }
    if (i >= end) return null;
    const lineEnd = buf[i - 1] === 13 ? i - 1 : i;
    i++;
    if (error !== null) continue; // only the end is looked for now
    if (first === 32 || first === 9) {
      // obs-fold (RFC 9112 §5.2): refused rather than guessing how the next hop would join it.
      error = [OBS_FOLD, start, colon, lineEnd];
    } else if (colon === start || colon === lineEnd || buf[colon] !== 58) {
      // Whitespace before the colon is refused (RFC 9112 §5.1), as is any other non-token byte.
      error = [BAD_NAME, start, colon, lineEnd];
    } else if (bad) {
      error = [BAD_VALUE, start, colon, lineEnd];
    } else {
      let valueStart = colon + 1;
      let valueEnd = lineEnd;
      while (valueStart < valueEnd && (buf[valueStart] === 32 || buf[valueStart] === 9)) {
        valueStart++;
      }
      while (valueEnd > valueStart && (buf[valueEnd - 1] === 32 || buf[valueEnd - 1] === 9)) {
        valueEnd--;
      }
      spans.push(start, colon, valueStart, valueEnd, marks);
      all |= marks;
    }
  }
  return null;
}

/** Request field names common enough to keep one string each: a name the client sent in any
 * case is matched on its bytes, so it costs no string of its own. */
const KNOWN_NAMES = byLength([
  "host",
  "connection",
  "keep-alive",
  "user-agent",
  "accept",
  "accept-encoding",
  "accept-language",
  "cookie",
  "referer",
  "origin",
  "authorization",
  "cache-control",
  "pragma",
  "content-type",
  "content-length",
  "transfer-encoding",
  "te",
  "expect",
  "upgrade",
  "if-none-match",
  "if-modified-since",
  "range",
  "dnt",
  "priority",
  "upgrade-insecure-requests",
  "sec-fetch-site",
  "sec-fetch-mode",
  "sec-fetch-user",
  "sec-fetch-dest",
  "sec-ch-ua",
  "sec-ch-ua-mobile",
  "sec-ch-ua-platform",
  "x-requested-with",
  "x-forwarded-for",
  "x-forwarded-proto",
  "x-forwarded-host",
  "x-request-id",
  "forwarded",
]);

/** The lowercase name `buf[start, end)` spells in any case, if it is a known one. */
function knownName(buf: Uint8Array, start: number, end: number): string | null {
  const candidates = KNOWN_NAMES.get(end - start);
  if (candidates === undefined) return null;
  for (const name of candidates) if (nameIs(buf, start, name.bytes)) return name.text;
  return null;
}

/** The request's fields from the scanned lines (`text` is the head decoded from `from`), or
 * the error for its first malformed line. */
function requestFields(
  buf: Uint8Array,
  text: string,
  from: number,
  lines: RequestLines,
): [string, string][] {
  if (lines.error !== null) {
    const [kind, start, colon, lineEnd] = lines.error;
    const at = start - from;
    if (kind === OBS_FOLD) throw new RequestError(400, "obsolete line folding");
    if (kind === BAD_NAME) {
      const shown = text.slice(at, Math.min(lineEnd - from, at + 40));
      throw new RequestError(400, `invalid header name "${shown}"`);
    }
    throw new RequestError(400, `invalid header value for ${text.slice(at, colon - from)}`);
  }
  const { spans } = lines;
  const fields: [string, string][] = [];
  for (let i = 0; i < spans.length; i += 5) {
    const start = spans[i]!;
    const colon = spans[i + 1]!;
    let name = knownName(buf, start, colon);
    if (name === null) {
      name = text.slice(start - from, colon - from);
      if ((spans[i + 4]! & UPPER) !== 0) name = name.toLowerCase();
    } else if (name === "host" && !isHostPortAt(buf, spans[i + 2]!, spans[i + 3]!)) {
      // RFC 9110 §7.2: host[:port], checked on the bytes where they lie.
      throw new RequestError(400, "invalid Host");
    }
    fields.push([name, text.slice(spans[i + 2]! - from, spans[i + 3]! - from)]);
  }
  return fields;
}

/**
 * Parses a request head from `buf[start..end)`, refusing what could let the front and a backend
 * disagree about where a request ends (request smuggling): a `Transfer-Encoding` together with
 * `Content-Length`, differing `Content-Length` values, a transfer coding other than chunked,
 * obs-fold, or whitespace before a colon.
 *
 * @param buf The buffer.
 * @param start Where the head starts.
 * @param end One past the last byte read.
 * @returns The head, or `null` when more bytes are needed.
 * @throws {RequestError} With the status to answer: 400 malformed, 417 unknown expectation,
 *   431 too large, 501 unsupported transfer coding, 505 unsupported version.
 * @example
 * ```ts
 * const bytes = new TextEncoder().encode("GET /a HTTP/1.1\r\nHost: x\r\n\r\n");
 * parseRequestHead(bytes, 0, bytes.length)?.target; // "/a"
 * ```
 */
export function parseRequestHead(buf: Uint8Array, start: number, end: number): RequestHead | null {
  let from = start;
  // RFC 9112 §2.2: ignore empty lines before the request-line.
  while (from < end && (buf[from] === 13 || buf[from] === 10)) from++;
  // One pass over the bytes finds the end of the head and checks each field line, keeping where
  // its name and value are; strings are made once the head is whole.
  const lines = scanRequestHead(buf, from, end);
  if (lines === null) {
    if (end - start > MAX_HEAD_BYTES) throw new RequestError(431, "request head too large");
    return null;
  }
  const headEnd = lines.end;
  if (headEnd - from > MAX_HEAD_BYTES) throw new RequestError(431, "request head too large");
  const text = decodeLatin1(buf, from, headEnd);
  let lineEnd = text.indexOf("\n");
  if (text.charCodeAt(lineEnd - 1) === 13) lineEnd--;
  // request-line = method SP request-target SP HTTP-version (RFC 9112 §3)
  const sp1 = text.indexOf(" ");
  const sp2 = sp1 < 0 ? -1 : text.indexOf(" ", sp1 + 1);
  if (sp1 <= 0 || sp2 < 0 || sp2 >= lineEnd) throw new RequestError(400, "malformed request line");
  const method = text.slice(0, sp1);
  const target = text.slice(sp1 + 1, sp2);
  const version = text.slice(sp2 + 1, lineEnd);
  if (!isToken(method)) throw new RequestError(400, "malformed method");
  if (target === "" || hasBadTargetChar(target)) {
    throw new RequestError(400, "malformed request target");
  }
  const problem = targetProblem(method, target);
  if (problem !== null) throw new RequestError(400, problem);
  const minor = version === "HTTP/1.1" ? 1 : version === "HTTP/1.0" ? 0 : -1;
  if (minor < 0) {
    if (/^HTTP\/\d\.\d$/.test(version)) throw new RequestError(505, "HTTP version not supported");
    throw new RequestError(400, "malformed request line");
  }
  const headers = requestFields(buf, text, from, lines);
  if (headers.length > MAX_FIELDS) throw new RequestError(431, "too many header fields");

  let host: string | null = null;
  let hosts = 0;
  let length: string | null = null;
  let te: string | null = null;
  let connection: string[] = [];
  let expect: string | null = null;
  for (const [name, value] of headers) {
    switch (name) {
      case "host":
        hosts++;
        host = value;
        break;
      case "content-length":
        length = length === null ? value : `${length},${value}`;
        break;
      case "transfer-encoding":
        te = te === null ? value : `${te},${value}`;
        break;
      case "connection":
        connection = connection.concat(listMembers(value));
        break;
      case "expect":
        expect = value.toLowerCase();
        break;
    }
  }
  // RFC 9112 §3.2: exactly one Host in HTTP/1.1 (400 otherwise); at most one in HTTP/1.0.
  if (hosts > 1 || (hosts === 0 && minor === 1)) {
    throw new RequestError(400, "missing or repeated Host");
  }
  let bodyLength = 0;
  if (te !== null) {
    // RFC 9112 §6.1: with both, the message may be an attack; refuse it rather than pick one.
    if (length !== null) throw new RequestError(400, "both Transfer-Encoding and Content-Length");
    if (minor === 0) throw new RequestError(400, "Transfer-Encoding in an HTTP/1.0 request");
    const codings = listMembers(te);
    if (codings.at(-1) !== "chunked") {
      throw new RequestError(400, "Transfer-Encoding does not end in chunked");
    }
    if (codings.length !== 1) {
      throw new RequestError(501, `transfer coding "${te}" not implemented`);
    }
    bodyLength = -1;
  } else if (length !== null) {
    // RFC 9112 §6.3 rule 5: a list of identical valid values is one value; anything else is 400.
    const values = new Set(length.split(",").map((v) => v.trim()));
    const [only] = values;
    if (values.size !== 1 || !/^\d{1,15}$/.test(only!)) {
      throw new RequestError(400, "invalid Content-Length");
    }
    bodyLength = Number(only);
  }
  if (expect !== null && expect !== "100-continue") {
    throw new RequestError(417, "unsupported expectation");
  }
  const keepAlive = minor === 1 ? !connection.includes("close") : connection.includes("keep-alive");
  return {
    method,
    target,
    minor,
    headers,
    size: headEnd - start,
    host,
    bodyLength,
    keepAlive,
    expectContinue: expect === "100-continue" && minor === 1,
    underscores: (lines.marks & UNDERSCORE) !== 0,
  };
}

/**
 * Decides how the body of a response is delimited (RFC 9112 §6.3).
 *
 * @param head The response head.
 * @param method The request method (a response to HEAD has no body).
 * @returns The framing.
 * @throws {ProtocolError} For an unsupported transfer coding or an invalid `Content-Length`.
 */
export function responseFraming(head: ResponseHead, method: string): Framing {
  // §6.3 rule 1: HEAD, 1xx, 204 and 304 responses end at the head.
  if (method === "HEAD" || head.status < 200 || head.status === 204 || head.status === 304) {
    return { kind: "none" };
  }
  const te = head.transferEncoding;
  if (te !== null) {
    // §6.3 rule 3: Transfer-Encoding overrides Content-Length. Only "chunked" is decoded; any
    // other coding would reach the client mislabelled, so it is refused (as Go's client does).
    if (te.trim().toLowerCase() !== "chunked") {
      throw new ProtocolError(`unsupported transfer-encoding "${te}"`);
    }
    return { kind: "chunked" };
  }
  if (head.contentLength >= 0) return { kind: "length", length: head.contentLength };
  if (head.contentLength === -2) {
    // §6.3 rule 5: a list of identical values is one value; anything else is unrecoverable.
    const length = head.headers.filter(([name]) => name === "content-length")
      .map(([, value]) => value).join(", ");
    const values = new Set(length.split(",").map((v) => v.trim()));
    const [only] = values;
    if (values.size !== 1 || !DIGITS.test(only!)) {
      throw new ProtocolError(`invalid content-length "${length}"`);
    }
    return { kind: "length", length: Number(only) };
  }
  return { kind: "close" };
}

/**
 * Whether a backend connection may carry another request after this final response (goround
 * never pipelines, so any byte the backend sends past the response's end is one nobody asked
 * for). Not when the response or HTTP/1.0 says close; not when the response ends by rule rather
 * than by the backend's own framing (any response to HEAD, 204, 304: RFC 9112 §6.3 rule 1),
 * since a backend that sends a body anyway may send it in a later write, after the next request
 * went out, where it would be read as that request's response; and not when its framing is
 * ambiguous (both Transfer-Encoding and Content-Length: §6.3 rule 3, "ought to be handled as an
 * error").
 *
 * @param head The final response head.
 * @param method The request method.
 * @returns `true` when the connection can go back to the pool.
 */
export function reusableAfter(head: ResponseHead, method: string): boolean {
  if (head.close || method === "HEAD" || head.status === 204 || head.status === 304) return false;
  return head.transferEncoding === null || head.contentLength === -1;
}

/** State of an incremental chunked-body decoder. */
export interface ChunkedState {
  /** Where in the chunked grammar the decoder is. */
  phase:
    | "size"
    | "ext"
    | "size-lf"
    | "data"
    | "data-cr"
    | "data-lf"
    | "trailer"
    | "trailer-line"
    | "end-lf"
    | "done";
  /** Bytes left in the current chunk (phase `data`) or the size being read (phase `size`). */
  remaining: number;
  /** Hex digits read for the current size. */
  digits: number;
}

/**
 * A fresh chunked decoder state.
 *
 * @returns The state, at the first chunk size.
 */
export function chunkedDecoder(): ChunkedState {
  return { phase: "size", remaining: 0, digits: 0 };
}

/**
 * Feeds bytes to a chunked decoder (RFC 9112 §7.1). Payload bytes are passed to `emit` as
 * views of `input` (copy them if `input` will be reused). Chunk extensions and trailer fields
 * are read and dropped.
 *
 * @param state The decoder state (updated).
 * @param input Bytes read from the connection.
 * @param emit Receives each run of payload bytes.
 * @returns How many bytes of `input` were consumed (less than its length only when the body
 *   ended before the input did).
 * @throws {ProtocolError} On malformed framing.
 */
export function decodeChunked<B extends ArrayBufferLike>(
  state: ChunkedState,
  input: Uint8Array<B>,
  emit: (data: Uint8Array<B>) => void,
): number {
  let i = 0;
  const n = input.length;
  while (i < n && state.phase !== "done") {
    const byte = input[i]!;
    switch (state.phase) {
      case "size": {
        const digit = hexValue(byte);
        if (digit >= 0) {
          if (++state.digits > 13) throw new ProtocolError("chunk size too large");
          state.remaining = state.remaining * 16 + digit;
          i++;
        } else if (state.digits === 0) {
          throw new ProtocolError("invalid chunk size");
        } else if (byte === 13) {
          state.phase = "size-lf";
          i++;
        } else if (byte === 10) {
          i++;
          afterSize(state);
        } else if (byte === 59 || byte === 32 || byte === 9) {
          state.phase = "ext"; // ";" starts an extension; BWS before it is tolerated
          i++;
        } else {
          throw new ProtocolError("invalid chunk size");
        }
        break;
      }
      case "ext":
      case "trailer-line": {
        // The rest of a size line (its extension) or of a trailer field is read and dropped.
        const lf = input.indexOf(10, i);
        if (lf < 0) {
          i = n;
        } else {
          i = lf + 1;
          if (state.phase === "ext") afterSize(state);
          else state.phase = "trailer";
        }
        break;
      }
      case "size-lf":
        if (byte !== 10) throw new ProtocolError("invalid chunk size line");
        i++;
        afterSize(state);
        break;
      case "data": {
        const take = Math.min(state.remaining, n - i);
        emit(input.subarray(i, i + take));
        i += take;
        state.remaining -= take;
        if (state.remaining === 0) state.phase = "data-cr";
        break;
      }
      case "data-cr":
        if (byte === 13) state.phase = "data-lf";
        else if (byte === 10) state.phase = "size";
        else throw new ProtocolError("missing CRLF after chunk data");
        i++;
        break;
      case "data-lf":
        if (byte !== 10) throw new ProtocolError("missing CRLF after chunk data");
        state.phase = "size";
        i++;
        break;
      case "trailer":
        // At the start of a trailer line: an empty line ends the body.
        if (byte === 13) state.phase = "end-lf";
        else if (byte === 10) state.phase = "done";
        else state.phase = "trailer-line";
        i++;
        break;
      case "end-lf":
        if (byte !== 10) throw new ProtocolError("invalid end of chunked body");
        state.phase = "done";
        i++;
        break;
    }
  }
  return i;
}

/**
 * Decodes chunked bytes in place: the payload they carry is moved to the front of `bytes`
 * (each run of payload is never ahead of where it is moved to, so nothing unread is
 * overwritten). Lets a reader decode straight in the buffer it read into, with no copy out.
 *
 * @param state The decoder state (updated).
 * @param bytes Bytes read from the connection; overwritten with the payload.
 * @returns `payload`: the payload's length, at the front of `bytes`; `consumed`: how many
 *   bytes were chunked framing or payload (less than `bytes.length` only when the body ended
 *   first: the rest, from `consumed` on, is untouched).
 * @throws {ProtocolError} On malformed framing.
 * @example
 * ```ts
 * const bytes = new TextEncoder().encode("3\r\nabc\r\n0\r\n\r\nGET");
 * const { payload, consumed } = decodeChunkedInPlace(chunkedDecoder(), bytes);
 * console.log(new TextDecoder().decode(bytes.subarray(0, payload)), consumed); // "abc" 15
 * ```
 */
export function decodeChunkedInPlace(
  state: ChunkedState,
  bytes: Uint8Array,
): { payload: number; consumed: number } {
  let payload = 0;
  const consumed = decodeChunked(state, bytes, (data) => {
    const from = data.byteOffset - bytes.byteOffset;
    if (from !== payload) bytes.copyWithin(payload, from, from + data.length);
    payload += data.length;
  });
  return { payload, consumed };
}

function afterSize(state: ChunkedState): void {
  state.phase = state.remaining === 0 ? "trailer" : "data";
  state.digits = 0;
}

function hexValue(byte: number): number {
  if (byte >= 48 && byte <= 57) return byte - 48;
  if (byte >= 97 && byte <= 102) return byte - 87;
  if (byte >= 65 && byte <= 70) return byte - 55;
  return -1;
}

/** The last chunk and the empty trailer section that end a chunked body. */
export const LAST_CHUNK: Uint8Array = encodeLatin1("0\r\n\r\n");
