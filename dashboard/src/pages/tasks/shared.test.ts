import { describe, expect, it } from "vitest";

import { movesOf } from "./shared";
import { mergeSteps, type Step } from "./useStepLog";

const step = (n: number, status: Step["status"] = "done"): Step => ({
  n,
  thought: `step ${n}`,
  calls: [],
  status,
  model: null,
  input_tokens: 0,
  output_tokens: 0,
  cost_usd: null,
  duration_ms: 0,
  created_at: "2026-01-01T00:00:00Z",
  finished_at: null,
});

describe("a task's moves", () => {
  it("follow the server's rules", () => {
    expect(movesOf("running")).toEqual(["pause", "cancel"]);
    expect(movesOf("queued")).toEqual(["pause", "cancel"]);
    expect(movesOf("paused")).toEqual(["resume", "cancel"]);
    expect(movesOf("waiting_budget")).toEqual(["pause", "resume", "cancel"]);
    expect(movesOf("waiting_approval")).toEqual(["pause", "cancel"]);
    expect(movesOf("succeeded")).toEqual([]);
    expect(movesOf("cancelled")).toEqual([]);
  });
});

describe("the step log", () => {
  it("puts steps in by number, a newer copy replacing the older", () => {
    const merged = mergeSteps([step(1), step(2, "acting")], [step(2), step(3)]);
    expect(merged.map((one) => [one.n, one.status])).toEqual([
      [1, "done"],
      [2, "done"],
      [3, "done"],
    ]);
  });
});
