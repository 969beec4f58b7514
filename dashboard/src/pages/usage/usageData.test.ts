import { describe, expect, it } from "vitest";

import { byKey, byPeriod, rangeStart, totals, type UsageRow } from "./usageData";

function row(period_start: string, key: string | null, cost_usd: number, input_tokens = 10, output_tokens = 5): UsageRow {
  return { period_start, key, calls: 1, input_tokens, output_tokens, cost_usd, unpriced_calls: 0, failed_calls: 0 };
}

describe("usage data", () => {
  it("starts a range at UTC midnight, today counted", () => {
    expect(rangeStart(7, new Date("2026-03-10T15:30:00Z"))).toBe("2026-03-04T00:00:00Z");
    expect(rangeStart(1, new Date("2026-03-01T00:10:00Z"))).toBe("2026-03-01T00:00:00Z");
  });

  it("sums every group of a period, oldest period first", () => {
    const points = byPeriod(
      [row("2026-03-02T00:00:00Z", "model", 0.2), row("2026-03-01T00:00:00Z", "model", 0.1), row("2026-03-02T00:00:00+00:00", "tool", 0.0, 0, 0)],
      "day",
    );
    expect(points.map((p) => [p.key, p.calls, p.cost_usd, p.tokens])).toEqual([
      ["2026-03-01T00:00:00.000Z", 1, 0.1, 15],
      ["2026-03-02T00:00:00.000Z", 2, 0.2, 15],
    ]);
  });

  it("sums each group over the periods, costliest first, the rest as others", () => {
    const rows = [row("2026-03-01T00:00:00Z", "1", 0.1), row("2026-03-02T00:00:00Z", "1", 0.1), row("2026-03-01T00:00:00Z", null, 0.5)];
    const names = (key: string | null) => (key === null ? "none" : `agent ${key}`);
    expect(byKey(rows, names).map((p) => [p.label, p.cost_usd])).toEqual([
      ["none", 0.5],
      ["agent 1", 0.2],
    ]);
    const many = Array.from({ length: 5 }, (_, i) => row("2026-03-01T00:00:00Z", String(i), i + 1));
    expect(byKey(many, names, 3).map((p) => [p.label, p.cost_usd])).toEqual([
      ["agent 4", 5],
      ["agent 3", 4],
      ["3 others", 6],
    ]);
  });

  it("totals the rows without float noise", () => {
    expect(totals([row("2026-03-01T00:00:00Z", "a", 0.1), row("2026-03-01T00:00:00Z", "b", 0.2)]).cost_usd).toBe(0.3);
  });
});
