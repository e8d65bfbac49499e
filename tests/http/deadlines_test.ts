import { deepEqual, equal, ok as assert } from "node:assert/strict";
import { isPast, startSweep, stopSweep } from "../../lib/http/deadlines.ts";

Deno.test("isPast() is true only for a set deadline that the time has passed", () => {
  equal(isPast(0, Date.now()), false, "0 is no deadline");
  equal(isPast(1_000, 999), false);
  equal(isPast(1_000, 1_000), false, "at the deadline it has not passed yet");
  equal(isPast(1_000, 1_001), true);
});

Deno.test("startSweep() checks every member, then calls after, until stopped", async (t) => {
  interface Member {
    deadline: number;
    expired: boolean;
  }
  const members = new Set<Member>();
  const late: Member = { deadline: Date.now() - 1, expired: false };
  const later: Member = { deadline: Date.now() + 60_000, expired: false };
  const none: Member = { deadline: 0, expired: false };
  for (const member of [late, later, none]) members.add(member);
  const seen: number[] = [];
  let stopped: () => void = () => {};
  const done = new Promise<void>((resolve) => (stopped = resolve));
  const sweep = startSweep(members, {
    every: 10,
    check: (member, now) => {
      if (!isPast(member.deadline, now)) return;
      member.expired = true;
      members.delete(member); // a member may leave the set while it is walked
    },
    after: (now) => {
      seen.push(now);
      if (seen.length === 2) stopped();
    },
  });
  // The sweep's timer keeps nothing alive: this one holds the test open meanwhile.
  const open = setTimeout(() => {}, 5_000);
  await done;
  clearTimeout(open);
  stopSweep(sweep);

  await t.step("a member past its deadline is acted on once, the others not", () => {
    deepEqual([late.expired, later.expired, none.expired], [true, false, false]);
    deepEqual([...members], [later, none]);
  });
  await t.step("after is called once a sweep, with the sweep's time", () => {
    equal(seen.length, 2);
    assert(seen[1]! >= seen[0]!);
  });
  await t.step("a stopped sweep does nothing more", async () => {
    later.deadline = Date.now() - 1;
    await new Promise((resolve) => setTimeout(resolve, 40)); // four periods
    equal(later.expired, false);
    equal(seen.length, 2);
  });
});
