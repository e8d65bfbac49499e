import { equal, throws } from "node:assert/strict";
import { formatSize, MAX_SIZE, parseSize } from "../../lib/config/size.ts";

Deno.test("`parseSize()` reads bytes with nginx's and IEC units, powers of 1024", () => {
  equal(parseSize("0"), 0);
  equal(parseSize("500"), 500);
  equal(parseSize("64k"), 65_536);
  equal(parseSize("64KiB"), 65_536);
  equal(parseSize("1m"), 1_048_576);
  equal(parseSize(" 1 MiB "), 1_048_576);
  equal(parseSize("2GiB"), MAX_SIZE);
  throws(() => parseSize("1.5MiB"), /is not a size/);
  throws(() => parseSize("-1"), /is not a size/);
  throws(() => parseSize("1XB"), /is not a size/);
  throws(() => parseSize("3g"), /too large: expected at most 2GiB/);
});

Deno.test("`formatSize()` writes the largest exact unit, and `parseSize()` reads it back", () => {
  for (const bytes of [0, 500, 65_536, 1_048_576, 64 * 1_048_576, 1_572_864]) {
    equal(parseSize(formatSize(bytes)), bytes);
  }
  equal(formatSize(1_048_576), "1MiB");
  equal(formatSize(1_572_864), "1536KiB");
  equal(formatSize(500), "500");
});
