/**
 * Test certificates made with Debian's openssl: a CA, and end-entity certificates it signs for
 * `localhost` and `127.0.0.1`, each with a serial the test chooses (so a test can tell which
 * certificate a server presents). P-256 keys: quick to make. The end-entity certificates say
 * `CA:FALSE`: rustls refuses a CA certificate used as a server's.
 *
 * @module
 */

import { equal } from "node:assert/strict";

/** A CA: its certificate and key files. */
export interface TestCa {
  /** PEM certificate file. */
  readonly cert: string;
  /** PEM key file. */
  readonly key: string;
}

/** A server certificate: files and the serial in hex (as `openssl x509 -serial` prints it). */
export interface TestCert {
  /** PEM certificate file. */
  readonly cert: string;
  /** PEM key file. */
  readonly key: string;
  /** The serial, upper-case hex. */
  readonly serial: string;
}

async function openssl(args: string[]): Promise<string> {
  const output = await new Deno.Command("openssl", {
    args,
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).output();
  equal(output.code, 0, `openssl ${args.join(" ")}: ${new TextDecoder().decode(output.stderr)}`);
  return new TextDecoder().decode(output.stdout);
}

const EC_KEY = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"];

/**
 * Makes a CA in `dir`.
 *
 * @param dir A writable directory.
 * @param name File name stem and common name.
 * @returns Its files.
 */
export async function makeCa(dir: string, name: string): Promise<TestCa> {
  const cert = `${dir}/${name}.pem`;
  const key = `${dir}/${name}.key`;
  await openssl([
    "req",
    "-x509",
    ...EC_KEY,
    "-keyout",
    key,
    "-out",
    cert,
    "-days",
    "1",
    "-subj",
    `/CN=${name}`,
    "-addext",
    "basicConstraints=critical,CA:TRUE",
    "-addext",
    "keyUsage=critical,keyCertSign",
  ]);
  return { cert, key };
}

/**
 * Makes a certificate for `localhost` and `127.0.0.1` signed by `ca`.
 *
 * @param dir A writable directory.
 * @param options File name stem, the CA, and the serial (hex).
 * @returns Its files and serial.
 */
export async function makeServerCert(
  dir: string,
  options: { name: string; ca: TestCa; serial: string },
): Promise<TestCert> {
  const cert = `${dir}/${options.name}.pem`;
  const key = `${dir}/${options.name}.key`;
  await openssl([
    "req",
    "-x509",
    "-CA",
    options.ca.cert,
    "-CAkey",
    options.ca.key,
    ...EC_KEY,
    "-keyout",
    key,
    "-out",
    cert,
    "-days",
    "1",
    "-subj",
    "/CN=localhost",
    "-set_serial",
    `0x${options.serial}`,
    "-addext",
    "subjectAltName=DNS:localhost,IP:127.0.0.1",
    "-addext",
    "basicConstraints=critical,CA:FALSE",
  ]);
  return { cert, key, serial: options.serial.toUpperCase() };
}

/**
 * The serial of the certificate a TLS server presents to a new connection, read with
 * `openssl s_client` (SNI `localhost`).
 *
 * @param port Loopback port.
 * @returns The serial, upper-case hex.
 */
export async function servedSerial(port: number): Promise<string> {
  const shown = await new Deno.Command("openssl", {
    args: ["s_client", "-connect", `127.0.0.1:${port}`, "-servername", "localhost"],
    // A server that does not answer a handshake must not hold the test up.
    signal: AbortSignal.timeout(10_000),
    stdin: "null",
    stdout: "piped",
    stderr: "null",
  }).output();
  const pem = /-----BEGIN CERTIFICATE-----[^]*?-----END CERTIFICATE-----/.exec(
    new TextDecoder().decode(shown.stdout),
  )?.[0];
  if (!pem) throw new Error(`openssl s_client got no certificate from port ${port}`);
  const child = new Deno.Command("openssl", {
    args: ["x509", "-noout", "-serial"],
    stdin: "piped",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const writer = child.stdin.getWriter();
  await writer.write(new TextEncoder().encode(pem));
  await writer.close();
  const output = await child.output();
  equal(output.code, 0, new TextDecoder().decode(output.stderr));
  return new TextDecoder().decode(output.stdout).trim().replace(/^serial=/, "");
}
