import { useMutation, useQuery, useQueryClient } from "@tanstack/react-query";
import { useState, type FormEvent } from "react";
import { Link, useNavigate } from "react-router-dom";

import { useLive } from "../../api/live";
import { api, must } from "../../api/client";
import type { components } from "../../api/schema";
import { ProblemView } from "../../components/ProblemView";
import { money, when } from "../../format";
import { TASK_STATUSES, tone, useAgents, type TaskStatus } from "./shared";
import "./tasks.css";

type TaskSpec = components["schemas"]["TaskSpec"];

function optional(form: FormData, name: string): number | undefined {
  const value = String(form.get(name) ?? "").trim();
  return value ? Number(value) : undefined;
}

function StartTask() {
  const client = useQueryClient();
  const navigate = useNavigate();
  const agents = useAgents();
  const [open, setOpen] = useState(false);
  const start = useMutation({
    mutationFn: (body: TaskSpec) => must(api.POST("/tasks", { body })),
    onSuccess: async (task) => {
      await client.invalidateQueries({ queryKey: ["tasks"] });
      navigate(`/tasks/${task.id}`);
    },
  });

  function submit(event: FormEvent<HTMLFormElement>) {
    event.preventDefault();
    const form = new FormData(event.currentTarget);
    const body: TaskSpec = { agent: String(form.get("agent")), goal: String(form.get("goal")).trim() };
    const budgets = {
      max_steps: optional(form, "max_steps"),
      max_tokens: optional(form, "max_tokens"),
      max_seconds: optional(form, "max_seconds"),
      max_cost_usd: optional(form, "max_cost_usd"),
    };
    for (const [key, value] of Object.entries(budgets)) if (value !== undefined) Object.assign(body, { [key]: value });
    start.mutate(body);
  }

  if (!open) {
    return (
      <div>
        <button type="button" className="primary" onClick={() => setOpen(true)}>
          Start a task
        </button>
      </div>
    );
  }
  return (
    <form className="card stack" aria-label="Start a task" onSubmit={submit}>
      <label>
        Agent
        <select name="agent" required defaultValue="">
          <option value="" disabled>
            Choose an agent
          </option>
          {(agents.data ?? []).map((agent) => (
            <option key={agent.id} value={agent.name}>
              {agent.name}
            </option>
          ))}
        </select>
      </label>
      {agents.data && !agents.data.length ? (
        <p className="muted">
          No agent yet: <Link to="/agents">create one</Link> first.
        </p>
      ) : null}
      {agents.error ? <ProblemView error={agents.error} /> : null}
      <label>
        Goal
        <textarea name="goal" required maxLength={20000} rows={3} />
      </label>
      <fieldset className="task-budgets">
        <legend>Budgets (empty: the defaults)</legend>
        <label>
          Max steps
          <input name="max_steps" type="number" min={1} max={1000} placeholder="20" />
        </label>
        <label>
          Max tokens
          <input name="max_tokens" type="number" min={1} placeholder="200000" />
        </label>
        <label>
          Max seconds
          <input name="max_seconds" type="number" min={1} placeholder="900" />
        </label>
        <label>
          Max cost (USD)
          <input name="max_cost_usd" type="number" min={0.000001} step="any" placeholder="none" />
        </label>
      </fieldset>
      {start.error ? <ProblemView error={start.error} /> : null}
      <div className="row">
        <button type="submit" className="primary" disabled={start.isPending}>
          Start
        </button>
        <button type="button" onClick={() => setOpen(false)}>
          Cancel
        </button>
      </div>
    </form>
  );
}

export default function TasksPage() {
  const client = useQueryClient();
  const [status, setStatus] = useState<TaskStatus | "">("");
  const agents = useAgents();
  const live = useLive({
    patterns: ["task.*"],
    onEvent: () => void client.invalidateQueries({ queryKey: ["tasks"] }),
  });
  const tasks = useQuery({
    queryKey: ["tasks", "list", status],
    queryFn: () => must(api.GET("/tasks", { params: { query: { limit: 100, ...(status ? { status } : {}) } } })),
    refetchInterval: live === "live" ? false : 5_000,
  });
  const agentName = (id: number) => agents.data?.find((agent) => agent.id === id)?.name ?? `agent ${id}`;
  return (
    <section className="stack">
      <h1>Background tasks</h1>
      <StartTask />
      <label className="row">
        Show
        <select value={status} onChange={(event) => setStatus(event.target.value as TaskStatus | "")}>
          <option value="">every status</option>
          {TASK_STATUSES.map((one) => (
            <option key={one} value={one}>
              {one.replace("_", " ")}
            </option>
          ))}
        </select>
      </label>
      {tasks.isPending ? <p aria-busy="true">Loading…</p> : null}
      {tasks.error ? <ProblemView error={tasks.error} /> : null}
      {tasks.data && !tasks.data.length ? <p className="muted">No task{status ? ` ${status.replace("_", " ")}` : ""}.</p> : null}
      {tasks.data?.length ? (
        <table aria-label="Tasks">
          <thead>
            <tr>
              <th scope="col">Task</th>
              <th scope="col">Goal</th>
              <th scope="col">Agent</th>
              <th scope="col">Status</th>
              <th scope="col">Steps</th>
              <th scope="col">Cost</th>
              <th scope="col">Started</th>
            </tr>
          </thead>
          <tbody>
            {tasks.data.map((task) => (
              <tr key={task.id}>
                <td>
                  <Link to={`/tasks/${task.id}`}>Task {task.id}</Link>
                </td>
                <td className="task-goal">{task.goal}</td>
                <td>{agentName(task.agent_id)}</td>
                <td>
                  <span className={`badge ${tone(task.status)}`}>{task.status.replace("_", " ")}</span>
                </td>
                <td>
                  {task.steps} / {task.max_steps}
                </td>
                <td>{money(task.cost_usd)}</td>
                <td>{when(task.started_at ?? task.created_at)}</td>
              </tr>
            ))}
          </tbody>
        </table>
      ) : null}
    </section>
  );
}
