// Usage: what was spent over a range, per period, per agent and per model, as charts; the
// report as CSV; and the budgets.

import { useMutation, useQuery, useQueryClient } from "@tanstack/react-query";
import { lazy, Suspense, useState } from "react";

import { api, must } from "../../api/client";
import type { components } from "../../api/schema";
import { useLive } from "../../api/live";
import { ProblemView } from "../../components/ProblemView";
import { money } from "../../format";
import { Budgets } from "./Budgets";
import { fetchUsageCsv, saveBlob } from "./csv";
import type { Measure } from "./UsageCharts";
import { byKey, byPeriod, RANGES, rangeStart, totals, type Step } from "./usageData";
import "./usage.css";

// Recharts comes with the charts, after the totals and budgets are on screen.
const UsageChart = lazy(() => import("./UsageCharts").then((module) => ({ default: module.UsageChart })));

type UsageReport = components["schemas"]["UsageReport"];
type GroupBy = "user" | "agent" | "circle" | "model" | "provider" | "kind";

const count = new Intl.NumberFormat();
const STEPS: Step[] = ["day", "week", "month"];

function useReport(by: GroupBy, period: Step, from: string) {
  return useQuery({
    queryKey: ["usage", by, period, from],
    // The JSON report (the CSV form of the same call goes through `fetchUsageCsv`).
    queryFn: async () => (await must(api.GET("/usage", { params: { query: { by, period, from, limit: 10000 } } }))) as UsageReport,
    refetchInterval: 60_000,
  });
}

function Totals({ rows }: { rows: Parameters<typeof totals>[0] }) {
  const sum = totals(rows);
  return (
    <div role="group" aria-label="Totals">
    <dl className="cards usage-totals">
      <div className="card">
        <dt className="muted">Cost</dt>
        <dd>{money(sum.cost_usd)}</dd>
      </div>
      <div className="card">
        <dt className="muted">Tokens</dt>
        <dd>
          {count.format(sum.input_tokens + sum.output_tokens)}{" "}
          <span className="muted">
            ({count.format(sum.input_tokens)} in, {count.format(sum.output_tokens)} out)
          </span>
        </dd>
      </div>
      <div className="card">
        <dt className="muted">Calls</dt>
        <dd>
          {count.format(sum.calls)}
          {sum.failed_calls ? <span className="bad"> · {count.format(sum.failed_calls)} failed</span> : null}
          {sum.unpriced_calls ? <span className="warn"> · {count.format(sum.unpriced_calls)} unpriced</span> : null}
        </dd>
      </div>
    </dl>
    </div>
  );
}

function CsvExport({ period, from }: { period: Step; from: string }) {
  const [by, setBy] = useState<GroupBy>("agent");
  const download = useMutation({
    mutationFn: async () => {
      saveBlob(await fetchUsageCsv({ by, period, from }), `usage-by-${by}-per-${period}-from-${from.slice(0, 10)}.csv`);
    },
  });
  return (
    <div className="stack">
      <div className="row">
        <label className="inline">
          CSV rows by
          <select value={by} onChange={(event) => setBy(event.target.value as GroupBy)}>
            {(["agent", "model", "provider", "user", "circle", "kind"] as GroupBy[]).map((value) => (
              <option key={value} value={value}>
                {value}
              </option>
            ))}
          </select>
        </label>
        <button type="button" onClick={() => download.mutate()} disabled={download.isPending}>
          Download CSV
        </button>
      </div>
      {download.error ? <ProblemView error={download.error} /> : null}
    </div>
  );
}

export default function UsagePage() {
  const client = useQueryClient();
  const [rangeIndex, setRangeIndex] = useState(0);
  const range = RANGES[rangeIndex] ?? RANGES[0]!;
  const [step, setStep] = useState<Step>(range.step);
  const [measure, setMeasure] = useState<Measure>("cost");
  const from = rangeStart(range.days);

  const perPeriod = useReport("kind", step, from);
  const perAgent = useReport("agent", step, from);
  const perModel = useReport("model", step, from);
  const agents = useQuery({ queryKey: ["agents"], queryFn: () => must(api.GET("/agents")) });

  useLive({
    patterns: ["turn.finished", "budget.*"],
    onEvent: (event) => {
      void client.invalidateQueries({ queryKey: [event.type.startsWith("budget.") ? "budgets" : "usage"] });
      if (event.type === "turn.finished") void client.invalidateQueries({ queryKey: ["budgets"] });
    },
  });

  const agentName = (key: string | null) => {
    if (key === null) return "no agent";
    const agent = agents.data?.find((a) => String(a.id) === key);
    return agent ? agent.name : `agent #${key}`;
  };
  const error = perPeriod.error ?? perAgent.error ?? perModel.error;

  return (
    <section className="stack">
      <h1>Usage</h1>
      <form className="row usage-controls" aria-label="Range" onSubmit={(event) => event.preventDefault()}>
        <label className="inline">
          Range
          <select
            value={rangeIndex}
            onChange={(event) => {
              const index = Number(event.target.value);
              setRangeIndex(index);
              setStep(RANGES[index]?.step ?? "day");
            }}
          >
            {RANGES.map((r, index) => (
              <option key={r.label} value={index}>
                {r.label}
              </option>
            ))}
          </select>
        </label>
        <label className="inline">
          Per
          <select value={step} onChange={(event) => setStep(event.target.value as Step)}>
            {STEPS.map((s) => (
              <option key={s} value={s}>
                {s}
              </option>
            ))}
          </select>
        </label>
        <label className="inline">
          Show
          <select value={measure} onChange={(event) => setMeasure(event.target.value as Measure)}>
            <option value="cost">cost</option>
            <option value="tokens">tokens</option>
          </select>
        </label>
        <span className="muted">UTC periods, from {from.slice(0, 10)}</span>
      </form>

      {error ? <ProblemView error={error} /> : null}
      {perPeriod.isPending ? <p aria-busy="true">Loading…</p> : null}
      {perPeriod.data ? <Totals rows={perPeriod.data.rows} /> : null}

      <Suspense fallback={<p aria-busy="true">Loading the charts…</p>}>
      <div className="usage-charts">
        {perPeriod.data ? (
          <UsageChart title={`${measure === "cost" ? "Cost" : "Tokens"} per ${step}`} what={step[0]!.toUpperCase() + step.slice(1)} points={byPeriod(perPeriod.data.rows, step)} measure={measure} />
        ) : null}
        {perAgent.data ? (
          <UsageChart title={`${measure === "cost" ? "Cost" : "Tokens"} by agent`} what="Agent" points={byKey(perAgent.data.rows, agentName)} measure={measure} horizontal />
        ) : null}
        {perModel.data ? (
          <UsageChart
            title={`${measure === "cost" ? "Cost" : "Tokens"} by model`}
            what="Model"
            points={byKey(perModel.data.rows, (key) => key ?? "no model")}
            measure={measure}
            horizontal
          />
        ) : null}
      </div>
      </Suspense>

      <h2>Export</h2>
      <CsvExport period={step} from={from} />

      <Budgets />
    </section>
  );
}
