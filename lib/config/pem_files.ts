/**
 * Reads the PEM files the settings name (`--tls-cert`, `--tls-key`, `--backend-ca`), at start
 * and on every reload, and checks them the way the TLS stack will use them, so a bad file is
 * one clear line before anything depends on it (at start: exit 2; on a reload: the old files
 * stay in use).
 *
 * @module
 */

import type { Config } from "./config.ts";
import { ConfigError } from "../errors.ts";

/** Reads a file as text (throws when it cannot). */
export type TextReader = (path: string) => string;

const CERTIFICATE = "-----BEGIN CERTIFICATE-----";

function readPem(flag: string, path: string, readFile: TextReader): string {
  if (path === "") return "";
  let text: string;
  try {
    text = readFile(path);
  } catch (error) {
    const why = error instanceof Error ? error.message.split(":")[0] : String(error);
    throw new ConfigError(
      `${flag}: "${path}" cannot be read (${why}): expected a readable PEM file`,
    );
  }
  if (!text.includes("-----BEGIN ")) {
    throw new ConfigError(`${flag}: "${path}" is not PEM: expected a -----BEGIN …----- block`);
  }
  return text;
}

/** The TLS stack's complaint, without its wrapping: "KeyMismatch", "BadEncoding". */
function reason(error: unknown): string {
  const message = error instanceof Error ? error.message : String(error);
  return /: (\w+)$/.exec(message)?.[1] ?? message;
}

/** Checks the pair as the listener will load it (rustls, through Deno's TLS client options). */
function checkPair(config: Config, cert: string, key: string): void {
  if (!cert.includes(CERTIFICATE)) {
    throw new ConfigError(
      `--tls-cert: "${config.tlsCert}" holds no certificate: expected a ${CERTIFICATE} block`,
    );
  }
  try {
    Deno.createHttpClient({ cert, key }).close();
  } catch (error) {
    const why = reason(error);
    if (/no keys found/i.test(why)) {
      throw new ConfigError(
        `--tls-key: "${config.tlsKey}" holds no private key: expected a PEM private key`,
      );
    }
    if (/KeyMismatch|not be consistent/i.test(why)) {
      throw new ConfigError(
        `--tls-key: "${config.tlsKey}" is not the key of --tls-cert "${config.tlsCert}": expected the certificate's private key`,
      );
    }
    throw new ConfigError(
      `--tls-cert: "${config.tlsCert}" was refused (${why}): expected a PEM certificate and its key in --tls-key`,
    );
  }
}

function checkCa(config: Config, ca: string): void {
  if (!ca.includes(CERTIFICATE)) {
    throw new ConfigError(
      `--backend-ca: "${config.backendCa}" holds no certificate: expected a ${CERTIFICATE} block`,
    );
  }
  try {
    Deno.createHttpClient({ caCerts: [ca] }).close();
  } catch (error) {
    throw new ConfigError(
      `--backend-ca: "${config.backendCa}" was refused (${
        reason(error)
      }): expected PEM CA certificates`,
    );
  }
}

/**
 * Reads and checks the files named by `--tls-cert`, `--tls-key` and `--backend-ca`.
 *
 * @param config The settings.
 * @param readFile Reads a file.
 * @returns The settings with `pems` filled in.
 * @throws {ConfigError} Naming the flag, the file and what is wrong with it.
 */
export function readPemFiles(config: Config, readFile: TextReader): Config {
  const cert = readPem("--tls-cert", config.tlsCert, readFile);
  const key = readPem("--tls-key", config.tlsKey, readFile);
  const ca = readPem("--backend-ca", config.backendCa, readFile);
  if (cert !== "") checkPair(config, cert, key);
  if (ca !== "") checkCa(config, ca);
  return { ...config, pems: { cert, key, ca } };
}
