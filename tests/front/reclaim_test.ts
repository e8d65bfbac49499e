import { equal } from "node:assert/strict";
import {
  RECLAIM_AFTER,
  RECLAIM_INTERVAL_MS,
  reclaimed,
  type ReclaimState,
  shouldReclaim,
} from "../../lib/front/reclaim.ts";

Deno.test("shouldReclaim() asks once many connections closed, then waits for a new peak", () => {
  const state: ReclaimState = { peak: 0, last: 0 };
  let now = 1_000_000;
  for (const open of [10, 500, 3000, 5000]) equal(shouldReclaim(state, open, now), false);
  equal(state.peak, 5000, "the peak follows the most open");
  equal(shouldReclaim(state, 4000, now), false, "a fifth closed: most are still open");
  equal(shouldReclaim(state, 2500, now), true, "half closed");
  reclaimed(state, 2500, now);
  now += RECLAIM_INTERVAL_MS;
  equal(shouldReclaim(state, 2000, now), false, "counted again from what was open then");
  equal(shouldReclaim(state, 100, now), true);
});

Deno.test("shouldReclaim() ignores small servers and waits RECLAIM_INTERVAL_MS between two", () => {
  const small: ReclaimState = { peak: 0, last: 0 };
  equal(shouldReclaim(small, RECLAIM_AFTER - 1, 1_000_000), false);
  equal(shouldReclaim(small, 0, 1_000_000), false, `fewer than ${RECLAIM_AFTER} closed`);
  const state: ReclaimState = { peak: 0, last: 0 };
  shouldReclaim(state, 4000, 0);
  reclaimed(state, 4000, 50_000);
  equal(shouldReclaim(state, 0, 50_000 + RECLAIM_INTERVAL_MS - 1), false, "too soon");
  equal(shouldReclaim(state, 0, 50_000 + RECLAIM_INTERVAL_MS), true);
});
