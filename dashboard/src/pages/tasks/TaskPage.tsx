import { useMutation, useQuery, useQueryClient } from "@tanstack/react-query";
import { Link, useParams } from "react-router-dom";

import { useLive, type LiveEvent } from "../../api/live";
import { api, must } from "../../api/client";
import { ProblemView } from "../../components/ProblemView";
import { money, seconds, when } from "../../format";
import { movesOf, tone, useAgents, type Move, type Task } from "./shared";
import { StatusBadge } from "./StatusBadge";
import { useStepLog, type Step } from "./useStepLog";
import "./tasks.css";

const MOVE_LABELS: Record<Move, string> = { pause: "Pause", resume: "Resume", cancel: "Cancel task" };

function Controls({ task }: { task: Task }) {
  const client = useQueryClient();
  const allowed = movesOf(task.status);
  const act = useMutation({
    mutationFn: (move: Move) => {
      const options = { params: { path: { task_id: task.id } } };
      if (move === "pause") return must(api.POST("/tasks/{task_id}/pause", options));
      if (move === "resume") return must(api.POST("/tasks/{task_id}/resume", options));
      return must(api.POST("/tasks/{task_id}/cancel", options));
    },
    onSuccess: (updated) => {
      client.setQueryData(["tasks", task.id], updated);
      void client.invalidateQueries({ queryKey: ["tasks"] });
    },
  });
  return (
    <div className="stack">
      <div className="row" role="group" aria-label="Task controls">
        {(Object.keys(MOVE_LABELS) as Move[]).map((move) => (
          <button
            key={move}
            type="button"
            disabled={act.isPending || !allowed.includes(move)}
            onClick={() => {
              if (move !== "cancel" || confirm(`Cancel task ${task.id}? It cannot be resumed.`)) act.mutate(move);
            }}
          >
            {MOVE_LABELS[move]}
          </button>
        ))}
      </div>
      {act.error ? <ProblemView error={act.error} /> : null}
    </div>
  );
}

function Budgets({ task }: { task: Task }) {
  return (
    <dl className="task-facts">
      <div>
        <dt>Steps</dt>
        <dd>
          {task.steps} / {task.max_steps}
        </dd>
      </div>
      <div>
        <dt>Tokens</dt>
        <dd>
          {(task.input_tokens + task.output_tokens).toLocaleString()} / {task.max_tokens.toLocaleString()}
        </dd>
      </div>
      <div>
        <dt>Time</dt>
        <dd>
          {seconds(task.active_seconds * 1000)} / {seconds(task.max_seconds * 1000)}
        </dd>
      </div>
      <div>
        <dt>Cost</dt>
        <dd>
          {money(task.cost_usd)}
          {task.max_cost_usd !== null ? ` / ${money(task.max_cost_usd)}` : ""}
        </dd>
      </div>
      <div>
        <dt>Started</dt>
        <dd>{when(task.started_at)}</dd>
      </div>
      <div>
        <dt>Finished</dt>
        <dd>{when(task.finished_at)}</dd>
      </div>
    </dl>
  );
}

function StepCard({ step }: { step: Step }) {
  return (
    <li className="card stack task-step" aria-label={`Step ${step.n}`}>
      <div className="row">
        <strong>Step {step.n}</strong>
        <span className={`badge ${step.status === "done" ? "ok" : ""}`}>{step.status}</span>
        <span className="muted small">
          {step.model ?? ""} · {step.input_tokens + step.output_tokens} tokens · {money(step.cost_usd)} · {seconds(step.duration_ms)}
        </span>
      </div>
      {step.thought ? <p className="task-thought">{step.thought}</p> : null}
      {step.calls.map((call) => (
        <details key={call.id} className="tool">
          <summary>
            <code>{call.name}</code> <span className={`badge ${tone(call.status === "finished" ? "succeeded" : call.status)}`}>{call.status}</span>
          </summary>
          <pre>{JSON.stringify(call.arguments, null, 2)}</pre>
          {call.result !== null ? <pre>{call.result}</pre> : null}
          {call.approval_id ? <Link to="/approvals">Approval {call.approval_id}</Link> : null}
        </details>
      ))}
    </li>
  );
}

function ErrorOf({ error }: { error: Task["error"] }) {
  if (!error) return null;
  const detail = typeof error.message === "string" ? error.message : JSON.stringify(error);
  return (
    <div className="problem" role="status">
      <strong>{typeof error.code === "string" ? `${error.code}: ` : ""}{detail}</strong>
    </div>
  );
}

export default function TaskPage() {
  const id = Number(useParams().taskId);
  const client = useQueryClient();
  const agents = useAgents();
  const log = useStepLog(id);
  const live = useLive({
    patterns: ["task.*"],
    subjects: [`task:${id}`],
    onEvent: (event: LiveEvent) => {
      void client.invalidateQueries({ queryKey: ["tasks", id] });
      const n = typeof event.data.n === "number" ? event.data.n : undefined;
      if (event.type === "task.step") log.refresh(n);
      else if (["task.finished", "task.paused", "task.waiting"].includes(event.type)) log.refresh();
    },
  });
  const task = useQuery({
    queryKey: ["tasks", id],
    queryFn: () => must(api.GET("/tasks/{task_id}", { params: { path: { task_id: id } } })),
    refetchInterval: live === "live" ? false : 5_000,
  });
  if (task.isPending) return <p aria-busy="true">Loading…</p>;
  if (task.error) {
    return (
      <section className="stack">
        <h1>Task {id}</h1>
        <ProblemView error={task.error} />
        <Link to="/tasks">All tasks</Link>
      </section>
    );
  }
  const data = task.data;
  const agent = agents.data?.find((one) => one.id === data.agent_id);
  return (
    <section className="stack">
      <p>
        <Link to="/tasks">All tasks</Link>
      </p>
      <h1>Task {id}</h1>
      <div className="card stack">
        <div className="row">
          <StatusBadge status={data.status} />
          <span className="muted">
            by {agent ? <Link to={`/agents/${agent.id}`}>{agent.name}</Link> : `agent ${data.agent_id}`} · {live === "live" ? "live" : `live updates: ${live}`}
          </span>
        </div>
        <p className="task-goal-full">{data.goal}</p>
        <Budgets task={data} />
        {data.status === "waiting_approval" ? (
          <p className="warn">
            Waiting for a decision: <Link to="/approvals">open the approvals</Link>.
          </p>
        ) : null}
        <ErrorOf error={data.error} />
        {data.result !== null ? (
          <section aria-labelledby="result-heading">
            <h2 id="result-heading">Result</h2>
            <p className="task-thought">{data.result}</p>
          </section>
        ) : null}
        <Controls task={data} />
      </div>
      <section className="stack" aria-labelledby="steps-heading">
        <h2 id="steps-heading">Steps</h2>
        {log.error ? <ProblemView error={log.error} /> : null}
        {!log.steps.length && !log.loading ? <p className="muted">No step yet.</p> : null}
        <ol className="task-steps" aria-label="Step log">
          {log.steps.map((step) => (
            <StepCard key={step.n} step={step} />
          ))}
        </ol>
        {log.more ? (
          <div>
            <button type="button" disabled={log.loading} onClick={log.loadMore}>
              Load more steps
            </button>
          </div>
        ) : null}
      </section>
    </section>
  );
}
