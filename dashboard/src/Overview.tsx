import { useQuery, useQueryClient } from "@tanstack/react-query";
import { useState } from "react";
import { Link } from "react-router-dom";

import { api, must } from "./api/client";
import { useLive, type LiveEvent } from "./api/live";
import { ProblemView } from "./components/ProblemView";
import { money, when } from "./format";

const FEED_SIZE = 100;

function Health() {
  const ready = useQuery({
    queryKey: ["health"],
    queryFn: async () => {
      const response = await fetch("/health/ready");
      return { ok: response.ok, body: (await response.json()) as { status?: string; reason?: string } };
    },
    refetchInterval: 15_000,
  });
  if (ready.isPending) return <p aria-busy="true">…</p>;
  if (ready.error) return <ProblemView error={ready.error} />;
  return (
    <p className={ready.data.ok ? "ok" : "bad"}>
      {ready.data.ok ? "Ready" : `Not ready${ready.data.body.reason ? `: ${ready.data.body.reason}` : ""}`}
    </p>
  );
}

function UsageToday() {
  const summary = useQuery({ queryKey: ["usage-summary"], queryFn: () => must(api.GET("/usage/summary")) });
  if (summary.isPending) return <p aria-busy="true">…</p>;
  if (summary.error) return <ProblemView error={summary.error} />;
  const { today, month } = summary.data;
  return (
    <dl className="stack">
      <div>
        <dt className="muted">Today</dt>
        <dd>
          {money(today.cost_usd)} · {today.model_calls} calls · {today.input_tokens + today.output_tokens} tokens
        </dd>
      </div>
      <div>
        <dt className="muted">This month</dt>
        <dd>{money(month.cost_usd)}</dd>
      </div>
    </dl>
  );
}

function RunningTasks() {
  const tasks = useQuery({
    queryKey: ["tasks", "running"],
    queryFn: () => must(api.GET("/tasks", { params: { query: { status: "running", limit: 10 } } })),
  });
  if (tasks.isPending) return <p aria-busy="true">…</p>;
  if (tasks.error) return <ProblemView error={tasks.error} />;
  if (!tasks.data.length) return <p className="muted">No task is running.</p>;
  return (
    <ul>
      {tasks.data.map((task) => (
        <li key={task.id}>
          #{task.id} {task.goal.slice(0, 80)} <span className="muted">({task.steps} steps)</span>
        </li>
      ))}
    </ul>
  );
}

function RunningRuns() {
  const runs = useQuery({
    queryKey: ["pipeline-runs", "running"],
    queryFn: () => must(api.GET("/pipelines/runs", { params: { query: { status: "running", limit: 10 } } })),
  });
  if (runs.isPending) return <p aria-busy="true">…</p>;
  if (runs.error) return <ProblemView error={runs.error} />;
  if (!runs.data.length) return <p className="muted">No pipeline is running.</p>;
  return (
    <ul>
      {runs.data.map((run) => (
        <li key={run.id}>
          <Link to={`/pipelines/${run.pipeline_id}/runs/${run.id}`}>Run {run.id}</Link>{" "}
          <span className="muted">since {when(run.created_at)}</span>
        </li>
      ))}
    </ul>
  );
}

function PendingApprovals() {
  const pending = useQuery({
    queryKey: ["approvals", "pending"],
    queryFn: () => must(api.GET("/approvals", { params: { query: { state: "pending", limit: 10 } } })),
  });
  if (pending.isPending) return <p aria-busy="true">…</p>;
  if (pending.error) return <ProblemView error={pending.error} />;
  if (!pending.data.length) return <p className="muted">Nothing waits for you.</p>;
  return (
    <p>
      <Link to="/approvals">
        {pending.data.length} tool call{pending.data.length === 1 ? "" : "s"} wait{pending.data.length === 1 ? "s" : ""} for
        a decision
      </Link>
    </p>
  );
}

/** The last events (a REST backfill), then the live ones from the socket, which starts right
 * after the newest event of the backfill: nothing missed, nothing twice. */
function Activity() {
  const backfill = useQuery({
    queryKey: ["events", "latest"],
    queryFn: () => must(api.GET("/events", { params: { query: { limit: FEED_SIZE } } })),
    gcTime: 0, // read again at each visit: the socket goes on from this read's newest event
    refetchOnWindowFocus: false,
  });
  if (backfill.isPending) return <p aria-busy="true">…</p>;
  if (backfill.error) return <ProblemView error={backfill.error} />;
  return <Feed key={backfill.dataUpdatedAt} initial={backfill.data as LiveEvent[]} />;
}

// What each kind of event may change on this page (the feed's one socket serves them all).
const REFRESHES: [string, string[]][] = [
  ["pipeline_run.", ["pipeline-runs"]],
  ["task.", ["tasks"]],
  ["approval.", ["approvals"]],
  ["turn.finished", ["usage-summary"]],
];

function Feed({ initial }: { initial: LiveEvent[] }) {
  const client = useQueryClient();
  const [events, setEvents] = useState<LiveEvent[]>(initial);
  const since = initial[0]?.cursor ?? undefined;
  const state = useLive({
    patterns: ["*"],
    ...(since !== undefined && since !== null ? { since } : {}),
    onEvent: (event) => {
      if (event.type.endsWith(".delta")) return; // token streams belong to their own views
      setEvents((before) => [event, ...before].slice(0, FEED_SIZE));
      for (const [prefix, keys] of REFRESHES) {
        if (event.type.startsWith(prefix)) void client.invalidateQueries({ queryKey: keys });
      }
    },
  });
  return (
    <>
      <p className="muted" aria-live="polite">
        {state === "live" ? "Live" : state === "refused" ? "Not allowed to follow events" : "Connecting…"}
      </p>
      {events.length ? (
        <ul className="feed" aria-label="Activity">
          {events.map((event) => (
            <li key={event.id}>
              <code>{event.type}</code> {event.subject ? <span className="muted">{event.subject}</span> : null}{" "}
              <time className="muted" dateTime={event.occurred_at}>
                {when(event.occurred_at)}
              </time>
            </li>
          ))}
        </ul>
      ) : (
        <p className="muted">Events appear here as they happen.</p>
      )}
    </>
  );
}

export function Overview() {
  return (
    <section>
      <h1>Overview</h1>
      <div className="cards">
        <div className="card">
          <h2>Health</h2>
          <Health />
        </div>
        <div className="card">
          <h2>Usage</h2>
          <UsageToday />
        </div>
        <div className="card">
          <h2>Running tasks</h2>
          <RunningTasks />
        </div>
        <div className="card">
          <h2>Running pipelines</h2>
          <RunningRuns />
        </div>
        <div className="card">
          <h2>Approvals</h2>
          <PendingApprovals />
        </div>
      </div>
      <h2>Activity</h2>
      <Activity />
    </section>
  );
}
