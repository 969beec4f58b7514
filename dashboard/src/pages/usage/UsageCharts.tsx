// Recharts bar charts of the usage points, each with its numbers as a table for screen readers
// and anyone who wants the figures. Recharts loads with the usage page only.

import { Bar, BarChart, CartesianGrid, Legend, ResponsiveContainer, Tooltip, XAxis, YAxis } from "recharts";

import { money } from "../../format";
import type { Point } from "./usageData";

export type Measure = "cost" | "tokens";

const COLORS = { cost: "#3b7dd8", input: "#3a9a6a", output: "#d9822b" };
const count = new Intl.NumberFormat();
const compact = new Intl.NumberFormat(undefined, { notation: "compact", maximumFractionDigits: 1 });

const small = new Intl.NumberFormat(undefined, { maximumSignificantDigits: 2 });

function axisMoney(value: number): string {
  return `$${value < 1000 ? small.format(value) : compact.format(value)}`;
}

function tooltipValue(value: unknown, name: unknown): [string, string] {
  const label = String(name);
  const number = typeof value === "number" ? value : Number(value);
  return [label === "Cost" ? money(number) : count.format(number), label];
}

function Figures({ points, what }: { points: Point[]; what: string }) {
  return (
    <details>
      <summary>As a table</summary>
      <table>
        <thead>
          <tr>
            <th scope="col">{what}</th>
            <th scope="col">Cost</th>
            <th scope="col">Input tokens</th>
            <th scope="col">Output tokens</th>
            <th scope="col">Calls</th>
          </tr>
        </thead>
        <tbody>
          {points.map((point) => (
            <tr key={point.key}>
              <th scope="row">{point.label}</th>
              <td>{money(point.cost_usd)}</td>
              <td>{count.format(point.input_tokens)}</td>
              <td>{count.format(point.output_tokens)}</td>
              <td>{count.format(point.calls)}</td>
            </tr>
          ))}
        </tbody>
      </table>
    </details>
  );
}

interface ChartProps {
  title: string;
  /** What a point is: "Day", "Agent", "Model". */
  what: string;
  points: Point[];
  measure: Measure;
  /** Groups read better as horizontal bars, periods as columns. */
  horizontal?: boolean;
}

export function UsageChart({ title, what, points, measure, horizontal = false }: ChartProps) {
  const height = horizontal ? Math.max(160, 36 * points.length + 60) : 260;
  const valueAxis = {
    type: "number" as const,
    tick: { fill: "currentColor", fontSize: 12 },
    tickFormatter: measure === "cost" ? axisMoney : (value: number) => compact.format(value),
    allowDecimals: measure === "cost",
  };
  const labelAxis = {
    type: "category" as const,
    dataKey: "label",
    tick: { fill: "currentColor", fontSize: 12 },
    interval: 0 as const,
  };
  return (
    <figure className="card usage-chart" aria-label={title}>
      <figcaption>
        <h3>{title}</h3>
      </figcaption>
      {points.length ? (
        <div className="chart-box" style={{ height }}>
          <ResponsiveContainer width="100%" height="100%">
            <BarChart data={points} layout={horizontal ? "vertical" : "horizontal"} margin={{ top: 8, right: 16, bottom: 8, left: 8 }}>
              <CartesianGrid strokeDasharray="3 3" stroke="currentColor" strokeOpacity={0.15} />
              {horizontal ? (
                <>
                  <XAxis {...valueAxis} />
                  <YAxis {...labelAxis} width={140} />
                </>
              ) : (
                <>
                  <XAxis {...labelAxis} interval="preserveStartEnd" />
                  <YAxis {...valueAxis} width={64} />
                </>
              )}
              <Tooltip formatter={tooltipValue} contentStyle={{ background: "var(--panel)", border: "1px solid var(--line)" }} />
              {measure === "cost" ? (
                <Bar dataKey="cost_usd" name="Cost" fill={COLORS.cost} maxBarSize={48} isAnimationActive={false} />
              ) : (
                <>
                  <Legend />
                  <Bar dataKey="input_tokens" name="Input tokens" stackId="tokens" fill={COLORS.input} maxBarSize={48} isAnimationActive={false} />
                  <Bar dataKey="output_tokens" name="Output tokens" stackId="tokens" fill={COLORS.output} maxBarSize={48} isAnimationActive={false} />
                </>
              )}
            </BarChart>
          </ResponsiveContainer>
        </div>
      ) : (
        <p className="muted">Nothing in this range.</p>
      )}
      {points.length ? <Figures points={points} what={what} /> : null}
    </figure>
  );
}
