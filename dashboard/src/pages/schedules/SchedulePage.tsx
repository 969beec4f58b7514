import { useMutation, useQuery, useQueryClient } from "@tanstack/react-query";
import { useState } from "react";
import { Link, useNavigate, useParams } from "react-router-dom";

import { useLive } from "../../api/live";
import { api, must } from "../../api/client";
import type { components } from "../../api/schema";
import { ProblemView } from "../../components/ProblemView";
import { when } from "../../format";
import { tone } from "../tasks/shared";
import { draftOf, type ScheduleIn } from "./draft";
import { ScheduleControls, type Schedule } from "./ScheduleControls";
import { ScheduleForm } from "./ScheduleForm";
import { describeTiming } from "./timing";
import "./schedules.css";

type Run = components["schemas"]["ScheduleRunOut"];
const PAGE = 50;

/** The next instants as the server plans them for the saved schedule. */
function ServerPreview({ schedule }: { schedule: Schedule }) {
  const preview = useQuery({
    queryKey: ["schedules", schedule.id, "preview", schedule.updated_at],
    queryFn: () =>
      must(api.GET("/schedules/{schedule_id}/preview", { params: { path: { schedule_id: schedule.id }, query: { count: 5 } } })),
    enabled: schedule.spec.kind !== "event",
    refetchInterval: 60_000, // counted from now: it moves on as time does, not at each run
  });
  if (schedule.spec.kind === "event") {
    return <p className="muted">It fires on each {String(schedule.spec.event_type)} event: no time is known beforehand.</p>;
  }
  if (preview.isPending) return <p aria-busy="true">Loading…</p>;
  if (preview.error) return <ProblemView error={preview.error} />;
  if (!preview.data.length) return <p className="muted">It will not fire again.</p>;
  return (
    <ol aria-label="Upcoming runs">
      {preview.data.map((instant) => (
        <li key={instant}>
          <time dateTime={instant}>{when(instant)}</time>
        </li>
      ))}
    </ol>
  );
}

function RunError({ error }: { error: Run["error"] }) {
  if (!error) return null;
  const code = typeof error.code === "string" ? error.code : null;
  const message = typeof error.message === "string" ? error.message : JSON.stringify(error);
  return (
    <span className="bad">
      {code ? <code>{code}</code> : null} {message}
    </span>
  );
}

function RunHistory({ schedule }: { schedule: Schedule }) {
  const client = useQueryClient();
  const [limit, setLimit] = useState(PAGE);
  const live = useLive({
    patterns: ["schedule_run.*"],
    subjects: [`schedule:${schedule.id}`],
    // A run's events change its runs and the schedule's own counts, nothing else on the page.
    onEvent: () => {
      void client.invalidateQueries({ queryKey: ["schedules", schedule.id, "runs"] });
      void client.invalidateQueries({ queryKey: ["schedules", schedule.id], exact: true });
    },
  });
  const runs = useQuery({
    queryKey: ["schedules", schedule.id, "runs", limit],
    queryFn: () =>
      must(api.GET("/schedules/{schedule_id}/runs", { params: { path: { schedule_id: schedule.id }, query: { limit } } })),
    refetchInterval: live === "live" ? false : 5_000, // polling only while the live feed is down
  });
  return (
    <section className="stack runs" aria-labelledby="runs-heading">
      <div className="row">
        <h2 id="runs-heading">Runs</h2>
        <span className="muted small">{live === "live" ? "live" : `live updates: ${live}`}</span>
      </div>
      {runs.isPending ? <p aria-busy="true">Loading…</p> : null}
      {runs.error ? <ProblemView error={runs.error} /> : null}
      {runs.data && !runs.data.length ? <p className="muted">No run yet.</p> : null}
      {runs.data?.length ? (
        <table aria-label="Run history">
          <thead>
            <tr>
              <th scope="col">Slot</th>
              <th scope="col">Trigger</th>
              <th scope="col">Status</th>
              <th scope="col">Attempt</th>
              <th scope="col">Finished</th>
              <th scope="col">Output or error</th>
            </tr>
          </thead>
          <tbody>
            {runs.data.map((run) => (
              <tr key={run.id}>
                <td>{when(run.slot_time)}</td>
                <td>{run.trigger}</td>
                <td>
                  <span className={`badge ${tone(run.status)}`}>{run.status}</span>
                </td>
                <td>{run.attempt}</td>
                <td>{when(run.finished_at)}</td>
                <td>
                  <RunError error={run.error} />
                  {run.output !== null && run.output !== undefined ? <pre>{JSON.stringify(run.output, null, 2)}</pre> : null}
                  {run.pipeline_run_id ? <span className="muted">pipeline run {run.pipeline_run_id}</span> : null}
                </td>
              </tr>
            ))}
          </tbody>
        </table>
      ) : null}
      {runs.data && runs.data.length >= limit ? (
        <div>
          <button type="button" onClick={() => setLimit(limit + PAGE)}>
            Show older runs
          </button>
        </div>
      ) : null}
    </section>
  );
}

function Definition({ schedule }: { schedule: Schedule }) {
  const spec = schedule.spec;
  return (
    <dl className="schedule-grid">
      <div>
        <dt className="muted">When</dt>
        <dd>{describeTiming(spec)}</dd>
      </div>
      <div>
        <dt className="muted">Action</dt>
        <dd>
          <code>{String(spec.action)}</code>
        </dd>
      </div>
      <div>
        <dt className="muted">State</dt>
        <dd>
          <span className={`badge ${tone(schedule.status)}`}>{schedule.status}</span>
        </dd>
      </div>
      <div>
        <dt className="muted">Next run</dt>
        <dd>{when(schedule.next_run_at)}</dd>
      </div>
      <div>
        <dt className="muted">Executions</dt>
        <dd>
          {schedule.executions}
          {spec.max_executions ? ` of ${String(spec.max_executions)}` : ""}
        </dd>
      </div>
      <div className="schedule-wide">
        <dt className="muted">Settings</dt>
        <dd>
          <pre>{JSON.stringify(spec.config, null, 2)}</pre>
        </dd>
      </div>
    </dl>
  );
}

export default function SchedulePage() {
  const id = Number(useParams().scheduleId);
  const client = useQueryClient();
  const navigate = useNavigate();
  const [editing, setEditing] = useState(false);
  const schedule = useQuery({
    queryKey: ["schedules", id],
    queryFn: () => must(api.GET("/schedules/{schedule_id}", { params: { path: { schedule_id: id } } })),
  });
  const save = useMutation({
    mutationFn: (body: ScheduleIn) => must(api.PUT("/schedules/{schedule_id}", { params: { path: { schedule_id: id } }, body })),
    onSuccess: async () => {
      await client.invalidateQueries({ queryKey: ["schedules"] });
      setEditing(false);
    },
  });
  const remove = useMutation({
    mutationFn: () => must(api.DELETE("/schedules/{schedule_id}", { params: { path: { schedule_id: id } } })),
    onSuccess: async () => {
      await client.invalidateQueries({ queryKey: ["schedules"] });
      navigate("/schedules");
    },
  });
  if (schedule.isPending) return <p aria-busy="true">Loading…</p>;
  if (schedule.error) {
    return (
      <section className="stack">
        <h1>Schedule {id}</h1>
        <ProblemView error={schedule.error} />
        <Link to="/schedules">All schedules</Link>
      </section>
    );
  }
  const data = schedule.data;
  const managed = data.name.startsWith("pipeline:");
  return (
    <section className="stack">
      <p>
        <Link to="/schedules">All schedules</Link>
      </p>
      <h1>{data.name}</h1>
      {editing ? (
        <ScheduleForm
          initial={draftOf(data.name, data.spec)}
          label={`Edit ${data.name}`}
          submitLabel="Save"
          pending={save.isPending}
          error={save.error}
          onSubmit={(body) => save.mutate(body)}
          onCancel={() => setEditing(false)}
        />
      ) : (
        <div className="card stack">
          <Definition schedule={data} />
          <ScheduleControls schedule={data}>
            {managed ? (
              <span className="muted">Kept by its pipeline: change it there.</span>
            ) : (
              <>
                <button type="button" onClick={() => setEditing(true)}>
                  Edit
                </button>
                <button
                  type="button"
                  disabled={remove.isPending}
                  onClick={() => {
                    if (confirm(`Delete the schedule ${data.name} and its runs?`)) remove.mutate();
                  }}
                >
                  Delete
                </button>
              </>
            )}
          </ScheduleControls>
          {remove.error ? <ProblemView error={remove.error} /> : null}
        </div>
      )}
      <section className="stack" aria-labelledby="upcoming-heading">
        <h2 id="upcoming-heading">Upcoming</h2>
        <ServerPreview schedule={data} />
      </section>
      <RunHistory schedule={data} />
    </section>
  );
}
