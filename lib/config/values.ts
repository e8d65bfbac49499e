/**
 * The value parsers of the settings: each turns a flag's (or variable's, or file key's) text
 * into the value its `Config` field holds, or throws a {@linkcode ValidationError}
 * that quotes the text and says what was expected.
 *
 * @module
 */

import { type Cidr, parseCidr } from "./cidr.ts";
import {
  ACCESS_LOG_FORMATS,
  ALGORITHMS,
  type Backend,
  ENGINES,
  type HashKey,
  type Kind,
  type Listen,
  LOG_FORMATS,
  UNDERSCORE_HEADERS,
} from "./config.ts";
import { parseDuration } from "./duration.ts";
import {
  type DiscoverySpec,
  type NameServer,
  parseDiscoverySpec,
  parseNameServer,
} from "./discovery_spec.ts";
import { parseSize } from "./size.ts";
import { ValidationError } from "../errors.ts";

/**
 * Parses a listen address: `:8000`, `8000`, `host:8000`, `[::1]:8000`.
 *
 * @param text The address.
 * @returns Hostname (`0.0.0.0` when omitted) and port.
 * @throws {ValidationError} When it is not one of those forms.
 */
export function parseListen(text: string): Listen {
  const match = /^(?:(\[[0-9a-fA-F:.]+\]|[^:\s\[\]]*):)?(\d{1,5})$/.exec(text.trim());
  const port = match ? Number(match[2]) : NaN;
  if (!match || port > 65535) {
    throw new ValidationError(
      `"${text}" is not a listen address: expected :8000, 8000 or host:port`,
    );
  }
  const host = (match[1] ?? "").replace(/^\[|\]$/g, "");
  return { hostname: host === "" ? "0.0.0.0" : host, port };
}

/** A DNS name or IPv4 address, or an IPv6 address in brackets, then an optional port. */
const HOST_NAME =
  /^(?:\[[0-9a-f:.]+\]|[a-z0-9](?:[a-z0-9-]*[a-z0-9])?(?:\.[a-z0-9](?:[a-z0-9-]*[a-z0-9])?)*)(?::(\d{1,5}))?$/;

/**
 * Parses a name a `Host` field may carry: `admin.example.com`, `10.0.0.5:9000`, `[::1]:9000`.
 *
 * @param text The name.
 * @returns It, lowercased.
 * @throws {ValidationError} When it is not a host with an optional port from 1 to 65535.
 */
export function parseHostName(text: string): string {
  const host = text.trim().toLowerCase();
  const match = HOST_NAME.exec(host);
  const port = match?.[1] === undefined ? 1 : Number(match[1]);
  if (!match || port < 1 || port > 65535 || !URL.canParse(`http://${host}/`)) {
    throw new ValidationError(
      `"${text}" is not a host: expected host or host:port, comma-separated, like admin.example.com,10.0.0.5:9000`,
    );
  }
  return host;
}

/**
 * Parses a backend: an `http://` or `https://` origin (no path, query or credentials; the port
 * defaults to 80 or 443), optionally followed by `,weight=N`.
 *
 * @param text The backend, e.g. `http://localhost:8081` or `http://localhost:8081,weight=3`.
 * @returns The backend.
 * @throws {ValidationError} When the URL is not a plain http origin or an option is unknown.
 * @example
 * ```ts
 * parseBackend("http://10.0.0.5:8080,weight=3").weight; // 3
 * ```
 */
export function parseBackend(text: string): Backend {
  const [address = "", ...options] = text.split(",").map((part) => part.trim());
  let url: URL;
  try {
    url = new URL(address);
  } catch {
    throw new ValidationError(`"${text}" is not a URL: expected http://host:port`);
  }
  if (url.protocol !== "http:" && url.protocol !== "https:") {
    throw new ValidationError(
      `"${text}" has scheme ${
        url.protocol.slice(0, -1)
      }: expected http://host:port or https://host:port`,
    );
  }
  if (url.pathname !== "/" || url.search || url.hash || url.username || url.password) {
    throw new ValidationError(
      `"${text}" has a path, query or credentials: expected just http://host:port`,
    );
  }
  let weight = 1;
  for (const option of options) {
    const match = /^weight=(\d{1,4})$/.exec(option);
    if (!match || Number(match[1]) < 1 || Number(match[1]) > 1000) {
      throw new ValidationError(
        `"${option}" is not a backend option: expected weight=N (1 to 1000)`,
      );
    }
    weight = Number(match[1]);
  }
  const tls = url.protocol === "https:";
  return {
    url: url.origin,
    hostname: url.hostname.replace(/^\[|\]$/g, ""),
    port: url.port === "" ? (tls ? 443 : 80) : Number(url.port),
    weight,
    tls,
  };
}

/**
 * Splits a backend list: commas separate backends, except that `key=value` items belong to the
 * backend before them (`http://a:1,weight=3,http://b:2` is two backends).
 *
 * @param text The list.
 * @returns One text per backend.
 */
export function splitBackends(text: string): string[] {
  const out: string[] = [];
  for (const item of text.split(",").map((s) => s.trim()).filter((s) => s !== "")) {
    if (/^[a-z-]+=/.test(item) && out.length > 0) out[out.length - 1] += `,${item}`;
    else out.push(item);
  }
  return out;
}

function parseCount(text: string, min: number): number {
  if (!/^\d+$/.test(text.trim()) || Number(text) > 1024 || Number(text) < min) {
    throw new ValidationError(
      `"${text}" is not a count: expected a whole number from ${min} to 1024`,
    );
  }
  return Number(text);
}

function splitList(text: string): string[] {
  return text.split(",").map((s) => s.trim()).filter((s) => s !== "");
}

/** The values one setting can parse to. */
export type Parsed =
  | Listen
  | Backend[]
  | number
  | number[]
  | string
  | Cidr[]
  | string[]
  | boolean
  | HashKey
  | DiscoverySpec
  | NameServer
  | null;

function oneOf<T extends string>(text: string, allowed: readonly T[], what: string): T {
  if (!(allowed as readonly string[]).includes(text)) {
    throw new ValidationError(`"${text}" is not ${what}: expected one of ${allowed.join(", ")}`);
  }
  return text as T;
}

/**
 * Reads one setting's text as its kind of value.
 *
 * @param kind The kind of value.
 * @param text The text (a flag's, a variable's or the file's).
 * @returns The value, as the `Config` field holds it.
 * @throws {ValidationError} Quoting the text and saying what was expected.
 */
export function parseValue(kind: Kind, text: string): Parsed {
  switch (kind) {
    case "listen":
      return parseListen(text);
    case "urls":
      return splitBackends(text).map(parseBackend);
    case "duration": {
      const ms = parseDuration(text);
      if (ms <= 0) throw new ValidationError(`"${text}" must be longer than 0ms`);
      return ms;
    }
    case "count":
      return parseCount(text, 0);
    case "positive":
      return parseCount(text, 1);
    case "cidrs":
      return splitList(text).map(parseCidr);
    case "algorithm":
      return oneOf(text, ALGORITHMS, "an algorithm");
    case "engine":
      return oneOf(text, ENGINES, "an engine");
    case "path":
      if (text !== "" && !/^\/[\x21-\x7e]*$/.test(text)) {
        throw new ValidationError(
          `"${text}" is not a path: expected one starting with /, like /healthz`,
        );
      }
      return text;
    case "file":
    case "text":
      return text;
    case "admin":
      return text.trim() === "off" ? null : parseListen(text);
    case "access-log":
      return oneOf(text, ACCESS_LOG_FORMATS, "an access log format");
    case "hash-key": {
      const match = /^(ip)$|^(header|cookie):([!#$%&'*+.^_`|~0-9A-Za-z-]+)$/.exec(text.trim());
      if (!match) {
        throw new ValidationError(
          `"${text}" is not a hash key: expected ip, header:NAME or cookie:NAME`,
        );
      }
      return parseHashKey(text.trim());
    }
    case "connections": {
      if (!/^\d{1,7}$/.test(text.trim())) {
        throw new ValidationError(
          `"${text}" is not a count: expected a whole number from 0 to 9999999`,
        );
      }
      return Number(text);
    }
    case "duration-or-zero":
      return parseDuration(text);
    case "sticky":
      return oneOf(text, ["cookie", "off"], "a sticky mode");
    case "hosts":
      return splitList(text).map(parseHostName);
    case "percent":
      if (!/^\d{1,3}$/.test(text.trim()) || Number(text) > 100) {
        throw new ValidationError(
          `"${text}" is not a percentage: expected a whole number from 0 to 100`,
        );
      }
      return Number(text);
    case "log-format":
      return oneOf(text, LOG_FORMATS, "a log format");
    case "underscore-headers":
      return oneOf(text, UNDERSCORE_HEADERS, "an underscore-headers mode");
    case "size":
      return parseSize(text);
    case "discover":
      return text.trim() === "" ? null : parseDiscoverySpec(text);
    case "nameserver":
      return text.trim() === "" ? null : parseNameServer(text);
    case "switch":
      if (!/^(true|false|1|0|yes|no|on|off)?$/i.test(text)) {
        throw new ValidationError(`"${text}" is not a switch: expected true or false`);
      }
      return /^(true|1|yes|on)?$/i.test(text);
    case "statuses": {
      if (text.trim() === "none") return [];
      return splitList(text).map((item) => {
        if (!/^[1-5]\d\d$/.test(item)) {
          throw new ValidationError(
            `"${item}" is not a status: expected codes like 502,503 or none`,
          );
        }
        return Number(item);
      });
    }
  }
}

function parseHashKey(text: string): HashKey {
  if (text === "ip") return { kind: "ip" };
  const [kind, name] = text.split(":") as ["header" | "cookie", string];
  return { kind, name: kind === "header" ? name.toLowerCase() : name };
}
