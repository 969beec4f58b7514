// The usage report's rows, summed the ways the charts show them: per period (day, week or
// month) and per group (agent, model), with the totals of the whole range.

import type { components } from "../../api/schema";

export type UsageRow = components["schemas"]["UsageRow"];
export type Step = "day" | "week" | "month";

export interface Range {
  /** What the selector shows. */
  label: string;
  days: number;
  step: Step;
}

export const RANGES: Range[] = [
  { label: "Last 7 days", days: 7, step: "day" },
  { label: "Last 30 days", days: 30, step: "day" },
  { label: "Last 90 days", days: 90, step: "week" },
  { label: "Last 12 months", days: 365, step: "month" },
];

/** The start (UTC midnight) of a range of `days` days that ends today. */
export function rangeStart(days: number, now: Date = new Date()): string {
  const start = Date.UTC(now.getUTCFullYear(), now.getUTCMonth(), now.getUTCDate() - (days - 1));
  return new Date(start).toISOString().replace(".000Z", "Z");
}

export interface Sum {
  calls: number;
  input_tokens: number;
  output_tokens: number;
  cost_usd: number;
  unpriced_calls: number;
  failed_calls: number;
}

export interface Point extends Sum {
  /** The period's start, or the group's key. */
  key: string;
  label: string;
  tokens: number;
}

function empty(): Sum {
  return { calls: 0, input_tokens: 0, output_tokens: 0, cost_usd: 0, unpriced_calls: 0, failed_calls: 0 };
}

function add(sum: Sum, row: Sum): void {
  sum.calls += row.calls;
  sum.input_tokens += row.input_tokens;
  sum.output_tokens += row.output_tokens;
  sum.cost_usd += row.cost_usd;
  sum.unpriced_calls += row.unpriced_calls;
  sum.failed_calls += row.failed_calls;
}

function point(key: string, label: string, sum: Sum): Point {
  return { key, label, ...sum, cost_usd: round(sum.cost_usd), tokens: sum.input_tokens + sum.output_tokens };
}

function round(usd: number): number {
  return Math.round(usd * 1e6) / 1e6;
}

/** Everything the rows hold, summed. */
export function totals(rows: UsageRow[]): Sum {
  const sum = empty();
  for (const row of rows) add(sum, row);
  sum.cost_usd = round(sum.cost_usd);
  return sum;
}

/** How a period's start reads on an axis (UTC, as the server counts periods). */
export function periodLabel(iso: string, step: Step): string {
  const date = new Date(iso);
  if (Number.isNaN(date.getTime())) return iso;
  const options: Intl.DateTimeFormatOptions =
    step === "month" ? { month: "short", year: "numeric", timeZone: "UTC" } : { month: "short", day: "numeric", timeZone: "UTC" };
  return date.toLocaleDateString(undefined, options);
}

/** One point per period, oldest first, every group summed. */
export function byPeriod(rows: UsageRow[], step: Step): Point[] {
  const sums = new Map<string, Sum>();
  for (const row of rows) {
    const key = new Date(row.period_start).toISOString();
    const sum = sums.get(key) ?? empty();
    add(sum, row);
    sums.set(key, sum);
  }
  return [...sums.entries()]
    .sort(([a], [b]) => a.localeCompare(b))
    .map(([key, sum]) => point(key, periodLabel(key, step), sum));
}

/** One point per group (all periods summed), costliest first; past `top`, the rest as "others". */
export function byKey(rows: UsageRow[], name: (key: string | null) => string, top = 10): Point[] {
  const sums = new Map<string, Sum>();
  const NONE = "\u0000none";
  for (const row of rows) {
    const key = row.key ?? NONE;
    const sum = sums.get(key) ?? empty();
    add(sum, row);
    sums.set(key, sum);
  }
  const points = [...sums.entries()]
    .map(([key, sum]) => point(key, name(key === NONE ? null : key), sum))
    .sort((a, b) => b.cost_usd - a.cost_usd || b.tokens - a.tokens || a.label.localeCompare(b.label));
  if (points.length <= top) return points;
  const rest = empty();
  for (const other of points.slice(top - 1)) add(rest, other);
  return [...points.slice(0, top - 1), point("\u0000others", `${points.length - top + 1} others`, rest)];
}
