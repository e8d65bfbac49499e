/**
 * Writing to a TCP connection: `Deno.Conn.write` may take only part of the bytes.
 *
 * @module
 */

/**
 * Writes all of `bytes` to `conn`, one write in the common case.
 *
 * @param conn The connection.
 * @param bytes What to write.
 * @returns Once every byte is written.
 * @throws When the connection breaks (as `Deno.Conn.write` does).
 */
export async function writeAll(
  conn: { write(bytes: Uint8Array): Promise<number> },
  bytes: Uint8Array,
): Promise<void> {
  let offset = await conn.write(bytes);
  while (offset < bytes.length) offset += await conn.write(bytes.subarray(offset));
}
