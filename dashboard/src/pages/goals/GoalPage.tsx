import { useMutation, useQuery, useQueryClient } from "@tanstack/react-query";
import { useState, type FormEvent } from "react";
import { Link, useNavigate, useParams } from "react-router-dom";

import { useLive } from "../../api/live";
import { api, must } from "../../api/client";
import { ProblemView } from "../../components/ProblemView";
import { when } from "../../format";
import { StatusBadge } from "../tasks/StatusBadge";
import { useAgents } from "../tasks/shared";
import { flatten, GoalFields, goalBody, GoalName, Progress, type GoalTree } from "./parts";
import "./goals.css";

/** A mutation on goals that refreshes every goal query once done. */
function useGoalChange<T>(call: (input: T) => Promise<unknown>, onDone?: () => void) {
  const client = useQueryClient();
  return useMutation({
    mutationFn: call,
    onSuccess: async () => {
      await client.invalidateQueries({ queryKey: ["goals"] });
      onDone?.();
    },
  });
}

const ENDED = ["done", "failed", "cancelled"];

function AddSubgoal({ goal, onClose }: { goal: GoalTree; onClose: () => void }) {
  const create = useGoalChange((form: FormData) => must(api.POST("/goals", { body: goalBody(form, goal.id) })), onClose);
  function submit(event: FormEvent<HTMLFormElement>) {
    event.preventDefault();
    create.mutate(new FormData(event.currentTarget));
  }
  return (
    <form className="stack goal-inline" aria-label={`New subgoal of ${goal.title}`} onSubmit={submit}>
      <GoalFields compact />
      {create.error ? <ProblemView error={create.error} /> : null}
      <div className="row">
        <button type="submit" className="primary" disabled={create.isPending}>
          Add subgoal
        </button>
        <button type="button" onClick={onClose}>
          Cancel
        </button>
      </div>
    </form>
  );
}

function AddDependency({ goal, candidates, onClose }: { goal: GoalTree; candidates: { id: number; title: string }[]; onClose: () => void }) {
  const add = useGoalChange(
    (blockedBy: number) =>
      must(api.POST("/goals/{goal_id}/dependencies", { params: { path: { goal_id: goal.id } }, body: { blocked_by: blockedBy } })),
    onClose,
  );
  function submit(event: FormEvent<HTMLFormElement>) {
    event.preventDefault();
    add.mutate(Number(new FormData(event.currentTarget).get("blocked_by")));
  }
  const choices = candidates.filter((one) => one.id !== goal.id && !goal.blocked_by.includes(one.id));
  return (
    <form className="stack goal-inline" aria-label={`New dependency of ${goal.title}`} onSubmit={submit}>
      <label>
        Wait for
        <select name="blocked_by" required defaultValue="">
          <option value="" disabled>
            Choose a goal
          </option>
          {choices.map((one) => (
            <option key={one.id} value={one.id}>
              {one.title}
            </option>
          ))}
        </select>
      </label>
      {add.error ? <ProblemView error={add.error} /> : null}
      <div className="row">
        <button type="submit" className="primary" disabled={add.isPending}>
          Add dependency
        </button>
        <button type="button" onClick={onClose}>
          Cancel
        </button>
      </div>
    </form>
  );
}

function Dependencies({ goal, known }: { goal: GoalTree; known: Map<number, string> }) {
  const remove = useGoalChange((blockedBy: number) =>
    must(api.DELETE("/goals/{goal_id}/dependencies/{blocked_by}", { params: { path: { goal_id: goal.id, blocked_by: blockedBy } } })),
  );
  if (!goal.blocked_by.length) return null;
  return (
    <div className="row small">
      <span>waits for</span>
      {goal.blocked_by.map((other) => (
        <span key={other} className="badge goal-dependency">
          <GoalName id={other} known={known} />
          {goal.status === "open" ? (
            <button
              type="button"
              className="goal-remove"
              aria-label={`Stop ${goal.title} waiting for ${known.get(other) ?? `goal ${other}`}`}
              disabled={remove.isPending}
              onClick={() => remove.mutate(other)}
            >
              ×
            </button>
          ) : null}
        </span>
      ))}
      {remove.error ? <ProblemView error={remove.error} /> : null}
    </div>
  );
}

type Panel = "subgoal" | "dependency" | "decompose" | "start" | null;

/** Pick an agent, then run `verb` (decompose, start) with it. */
function WithAgent({ goal, verb, onClose }: { goal: GoalTree; verb: "decompose" | "start"; onClose: () => void }) {
  const agents = useAgents();
  const run = useGoalChange((agent: string): Promise<unknown> => {
    const options = { params: { path: { goal_id: goal.id } }, body: agent ? { agent } : null };
    return verb === "decompose"
      ? must(api.POST("/goals/{goal_id}/decompose", options))
      : must(api.POST("/goals/{goal_id}/start", options));
  }, onClose);
  function submit(event: FormEvent<HTMLFormElement>) {
    event.preventDefault();
    run.mutate(String(new FormData(event.currentTarget).get("agent") ?? ""));
  }
  const label = verb === "decompose" ? "Decompose" : "Start";
  return (
    <form className="stack goal-inline" aria-label={`${label} ${goal.title}`} onSubmit={submit}>
      <label>
        {verb === "decompose" ? "Agent that splits it" : "Agent for the goals that name none"}
        <select name="agent" defaultValue="">
          <option value="">{verb === "decompose" ? "the goal's own" : "none: each goal's own"}</option>
          {(agents.data ?? []).map((agent) => (
            <option key={agent.id} value={agent.name}>
              {agent.name}
            </option>
          ))}
        </select>
      </label>
      {run.isPending && verb === "decompose" ? <p aria-busy="true">Asking the agent…</p> : null}
      {run.error ? <ProblemView error={run.error} /> : null}
      <div className="row">
        <button type="submit" className="primary" disabled={run.isPending}>
          {label}
        </button>
        <button type="button" onClick={onClose}>
          Cancel
        </button>
      </div>
    </form>
  );
}

function GoalActions({ goal, candidates, isRoot }: { goal: GoalTree; candidates: { id: number; title: string }[]; isRoot: boolean }) {
  const navigate = useNavigate();
  const [panel, setPanel] = useState<Panel>(null);
  const cancel = useGoalChange(() => must(api.POST("/goals/{goal_id}/cancel", { params: { path: { goal_id: goal.id } } })));
  const remove = useGoalChange(
    () => must(api.DELETE("/goals/{goal_id}", { params: { path: { goal_id: goal.id } } })),
    () => (isRoot ? navigate("/goals") : undefined),
  );
  const ended = ENDED.includes(goal.status);
  const worksAlone = goal.task_id !== null || goal.pipeline_run_id !== null;
  const open = goal.status === "open";
  const toggle = (next: Panel) => setPanel(panel === next ? null : next);
  const named = (text: string) => `${text}: ${goal.title}`;
  return (
    <div className="stack">
      <div className="row goal-actions">
        {!ended && !worksAlone ? (
          <button type="button" aria-label={named("Add subgoal")} aria-expanded={panel === "subgoal"} onClick={() => toggle("subgoal")}>
            Add subgoal
          </button>
        ) : null}
        {open ? (
          <button type="button" aria-label={named("Add dependency")} aria-expanded={panel === "dependency"} onClick={() => toggle("dependency")}>
            Add dependency
          </button>
        ) : null}
        {open && !goal.subgoals.length ? (
          <button type="button" aria-label={named("Decompose")} aria-expanded={panel === "decompose"} onClick={() => toggle("decompose")}>
            Decompose
          </button>
        ) : null}
        {open ? (
          <button type="button" aria-label={named("Start")} aria-expanded={panel === "start"} onClick={() => toggle("start")}>
            Start
          </button>
        ) : null}
        {!ended && !open ? (
          <button type="button" aria-label={named("Cancel")} disabled={cancel.isPending} onClick={() => cancel.mutate(undefined)}>
            Cancel
          </button>
        ) : null}
        <button
          type="button"
          aria-label={named("Delete")}
          disabled={remove.isPending}
          onClick={() => {
            if (confirm(`Delete the goal ${goal.title} and its subgoals?`)) remove.mutate(undefined);
          }}
        >
          Delete
        </button>
      </div>
      {cancel.error ? <ProblemView error={cancel.error} /> : null}
      {remove.error ? <ProblemView error={remove.error} /> : null}
      {panel === "subgoal" ? <AddSubgoal goal={goal} onClose={() => setPanel(null)} /> : null}
      {panel === "dependency" ? <AddDependency goal={goal} candidates={candidates} onClose={() => setPanel(null)} /> : null}
      {panel === "decompose" || panel === "start" ? <WithAgent goal={goal} verb={panel} onClose={() => setPanel(null)} /> : null}
    </div>
  );
}

function GoalNode({
  goal,
  known,
  candidates,
  isRoot,
}: {
  goal: GoalTree;
  known: Map<number, string>;
  candidates: { id: number; title: string }[];
  isRoot?: boolean;
}) {
  const agents = useAgents();
  const agent = agents.data?.find((one) => one.id === goal.agent_id);
  return (
    <li aria-label={goal.title} className="goal-node">
      <div className="card stack">
        <div className="row">
          <strong>{goal.title}</strong>
          <StatusBadge status={goal.status} of={goal.title} />
          {agent ? <span className="muted small">agent {agent.name}</span> : null}
          {goal.pipeline_id ? <span className="muted small">pipeline {goal.pipeline_id}</span> : null}
          {goal.task_id ? <Link to={`/tasks/${goal.task_id}`}>task {goal.task_id}</Link> : null}
        </div>
        {goal.description ? <p className="goal-text">{goal.description}</p> : null}
        {goal.success_criteria ? <p className="goal-text muted small">Done when: {goal.success_criteria}</p> : null}
        <Progress title={goal.title} value={goal.progress} />
        <Dependencies goal={goal} known={known} />
        <GoalActions goal={goal} candidates={candidates} isRoot={Boolean(isRoot)} />
      </div>
      {goal.subgoals.length ? (
        <ul className="goal-tree" aria-label={`Subgoals of ${goal.title}`}>
          {goal.subgoals.map((child) => (
            <GoalNode key={child.id} goal={child} known={known} candidates={candidates} />
          ))}
        </ul>
      ) : null}
    </li>
  );
}

function Activities({ goalId }: { goalId: number }) {
  const activities = useQuery({
    queryKey: ["goals", goalId, "activities"],
    queryFn: () => must(api.GET("/goals/{goal_id}/activities", { params: { path: { goal_id: goalId }, query: { limit: 200 } } })),
  });
  return (
    <section className="stack" aria-labelledby="activity-heading">
      <h2 id="activity-heading">Activity</h2>
      {activities.error ? <ProblemView error={activities.error} /> : null}
      {activities.data && !activities.data.length ? <p className="muted">Nothing yet.</p> : null}
      <ul className="feed" aria-label="Activity">
        {[...(activities.data ?? [])].reverse().map((activity) => (
          <li key={activity.id}>
            <span className="muted">{when(activity.created_at)}</span> <strong>{activity.kind.replaceAll("_", " ")}</strong>{" "}
            {Object.keys(activity.body).length ? <code>{JSON.stringify(activity.body)}</code> : null}
          </li>
        ))}
      </ul>
    </section>
  );
}

export default function GoalPage() {
  const id = Number(useParams().goalId);
  const client = useQueryClient();
  const live = useLive({ patterns: ["goal.*"], onEvent: () => void client.invalidateQueries({ queryKey: ["goals"] }) });
  const tree = useQuery({
    queryKey: ["goals", id, "tree"],
    queryFn: () => must(api.GET("/goals/{goal_id}/tree", { params: { path: { goal_id: id } } })),
    refetchInterval: live === "live" ? false : 5_000,
  });
  const top = useQuery({
    queryKey: ["goals", "top"],
    queryFn: () => must(api.GET("/goals", { params: { query: { limit: 200 } } })),
  });
  if (tree.isPending) return <p aria-busy="true">Loading…</p>;
  if (tree.error) {
    return (
      <section className="stack">
        <h1>Goal {id}</h1>
        <ProblemView error={tree.error} />
        <Link to="/goals">All goals</Link>
      </section>
    );
  }
  const goals = flatten(tree.data);
  const known = new Map<number, string>();
  for (const goal of [...(top.data ?? []), ...goals]) known.set(goal.id, goal.title);
  const candidates = [...known.entries()].map(([key, title]) => ({ id: key, title }));
  return (
    <section className="stack">
      <p className="row">
        <Link to="/goals">All goals</Link>
        {tree.data.parent_id ? <Link to={`/goals/${tree.data.parent_id}`}>Its parent</Link> : null}
      </p>
      <h1>{tree.data.title}</h1>
      <ul className="goal-tree goal-root" aria-label="Goal tree">
        <GoalNode goal={tree.data} known={known} candidates={candidates} isRoot />
      </ul>
      <Activities goalId={id} />
    </section>
  );
}
