// A pipeline's runs: the form that starts one (made from its input schema) and the history,
// newest first, filtered by status, kept current by the pipeline's live events.

import { useMutation, useQuery, useQueryClient } from "@tanstack/react-query";
import { useState } from "react";
import { Link, useNavigate } from "react-router-dom";

import { api, must } from "../../api/client";
import { useLive } from "../../api/live";
import { ProblemView } from "../../components/ProblemView";
import { seconds, when } from "../../format";
import { asDefinition, type JsonObject } from "./definition";
import { PipelineHeader, usePipelineId } from "./PipelineHeader";
import { asBody, keys, RUN_STATUSES, span, usePipeline, type Run } from "./queries";
import { RunForm } from "./RunForm";
import { StatusBadge } from "./StatusBadge";
import "./pipelines.css";

const PAGE = 50;

function StartRun({ id }: { id: number }) {
  const navigate = useNavigate();
  const client = useQueryClient();
  const pipeline = usePipeline(id);
  const start = useMutation({
    mutationFn: (input: JsonObject) =>
      must(api.POST("/pipelines/{pipeline_id}/runs", { params: { path: { pipeline_id: id } }, body: { input: asBody(input) } })),
    onSuccess: async (run) => {
      await client.invalidateQueries({ queryKey: keys.runs(id) });
      navigate(`/pipelines/${id}/runs/${run.id}`);
    },
  });
  if (!pipeline.data) return null;
  let schema: JsonObject | undefined;
  try {
    schema = asDefinition(pipeline.data.definition).input_schema;
  } catch {
    schema = undefined;
  }
  return (
    <section className="card stack" aria-labelledby="start-title">
      <h2 id="start-title">Start a run</h2>
      <p className="muted">Runs the current version ({pipeline.data.version}).</p>
      <RunForm
        key={pipeline.data.version}
        schema={schema}
        label="Run input"
        submitLabel="Start run"
        pending={start.isPending}
        onSubmit={(input) => start.mutate(input)}
      />
      {start.error ? <ProblemView error={start.error} /> : null}
    </section>
  );
}

function History({ id }: { id: number }) {
  const client = useQueryClient();
  const [status, setStatus] = useState("");
  const [limit, setLimit] = useState(PAGE);
  const runs = useQuery({
    queryKey: [...keys.runs(id), limit],
    queryFn: () =>
      must(api.GET("/pipelines/{pipeline_id}/runs", { params: { path: { pipeline_id: id }, query: { limit } } })),
  });
  const live = useLive({
    patterns: ["pipeline_run.*"],
    subjects: [`pipeline:${id}`],
    onEvent: () => void client.invalidateQueries({ queryKey: keys.runs(id) }),
  });
  const shown: Run[] = (runs.data ?? []).filter((run) => !status || run.status === status);
  return (
    <section className="stack" aria-labelledby="history-title">
      <div className="row">
        <h2 id="history-title">Runs</h2>
        <span className="muted">{live === "live" ? "live" : live}</span>
      </div>
      <label className="row">
        Status
        <select value={status} onChange={(event) => setStatus(event.target.value)}>
          <option value="">any</option>
          {RUN_STATUSES.map((value) => (
            <option key={value} value={value}>
              {value}
            </option>
          ))}
        </select>
      </label>
      {runs.isPending ? <p aria-busy="true">Loading…</p> : null}
      {runs.error ? <ProblemView error={runs.error} /> : null}
      {runs.data && !shown.length ? <p className="muted">No run{status ? ` ${status}` : ""} yet.</p> : null}
      {shown.length ? (
        <table>
          <thead>
            <tr>
              <th scope="col">Run</th>
              <th scope="col">Status</th>
              <th scope="col">Version</th>
              <th scope="col">Trigger</th>
              <th scope="col">Started</th>
              <th scope="col">Took</th>
            </tr>
          </thead>
          <tbody>
            {shown.map((run) => {
              const took = span(run.created_at, run.finished_at);
              return (
                <tr key={run.id}>
                  <td>
                    <Link to={`/pipelines/${id}/runs/${run.id}`}>Run {run.id}</Link>
                    {run.parent_run_id ? (
                      <div className="muted">
                        {run.relation} of run {run.parent_run_id}
                      </div>
                    ) : null}
                  </td>
                  <td>
                    <StatusBadge status={run.status} />
                    {run.error && typeof run.error.message === "string" ? <div className="muted">{run.error.message}</div> : null}
                  </td>
                  <td>{run.version}</td>
                  <td>{run.trigger}</td>
                  <td>{when(run.created_at)}</td>
                  <td>{run.finished_at && took !== null ? seconds(took) : "—"}</td>
                </tr>
              );
            })}
          </tbody>
        </table>
      ) : null}
      {runs.data && runs.data.length >= limit ? (
        <button type="button" onClick={() => setLimit(limit + PAGE)}>
          Show older runs
        </button>
      ) : null}
    </section>
  );
}

export default function RunsPage() {
  const id = usePipelineId();
  return (
    <section className="stack">
      <PipelineHeader />
      <StartRun id={id} />
      <History id={id} />
    </section>
  );
}
