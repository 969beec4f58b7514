import { describe, expect, it } from "vitest";

import { NEXT, STATUSES, stepsFrom } from "./moves";

describe("a task's steps", () => {
  it("follow the state machine from each status", () => {
    expect(stepsFrom("pending")).toEqual(["offer", "claim", "wait", "cancel"]);
    expect(stepsFrom("offered")).toEqual(["claim", "refuse", "cancel"]);
    expect(stepsFrom("in_progress")).toEqual(["submit", "cancel"]);
    expect(stepsFrom("in_review")).toEqual(["approve", "changes", "reject", "cancel"]);
    expect(stepsFrom("changes_requested")).toEqual(["claim", "cancel"]);
    expect(stepsFrom("blocked")).toEqual(["cancel"]);
    for (const status of ["completed", "failed", "cancelled"]) expect(stepsFrom(status)).toEqual([]);
  });

  it("narrow to the moves a refusal said are allowed", () => {
    expect(stepsFrom("in_review", ["cancelled"])).toEqual(["cancel"]);
    expect(stepsFrom("offered", ["pending"])).toEqual(["refuse"]);
    expect(stepsFrom("unknown")).toEqual([]);
  });

  it("know every status", () => {
    expect(Object.keys(NEXT).sort()).toEqual([...STATUSES].sort());
  });
});
