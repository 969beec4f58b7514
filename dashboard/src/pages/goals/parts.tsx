// Small pieces of the goals pages: the fields of a new goal, a progress bar, a goal's name.

import { useQuery } from "@tanstack/react-query";
import { useId } from "react";

import { api, must } from "../../api/client";
import type { components } from "../../api/schema";
import { useAgents } from "../tasks/shared";

export type GoalIn = components["schemas"]["GoalIn"];
export type Goal = components["schemas"]["GoalOut"];
export type GoalTree = components["schemas"]["GoalTreeOut"];

/** The goal a form describes (empty texts left to the server's defaults). */
export function goalBody(form: FormData, parentId?: number): GoalIn {
  const text = (name: string) => String(form.get(name) ?? "").trim();
  const body: GoalIn = { title: text("title") };
  if (text("description")) body.description = text("description");
  if (text("success_criteria")) body.success_criteria = text("success_criteria");
  if (text("agent")) body.agent = text("agent");
  if (parentId !== undefined) body.parent_id = parentId;
  return body;
}

/** Title, description, success criteria and agent of a new goal. */
export function GoalFields({ compact }: { compact?: boolean }) {
  const agents = useAgents();
  return (
    <>
      <label>
        Title
        <input name="title" required maxLength={200} />
      </label>
      {compact ? null : (
        <>
          <label>
            Description
            <textarea name="description" rows={2} maxLength={10000} />
          </label>
          <label>
            Success criteria
            <textarea name="success_criteria" rows={2} maxLength={10000} />
          </label>
        </>
      )}
      <label>
        Agent
        <select name="agent" defaultValue="">
          <option value="">none yet</option>
          {(agents.data ?? []).map((agent) => (
            <option key={agent.id} value={agent.name}>
              {agent.name}
            </option>
          ))}
        </select>
      </label>
    </>
  );
}

export function Progress({ title, value }: { title: string; value: number }) {
  const id = useId();
  const percent = Math.round(value * 100);
  return (
    <div className="goal-progress">
      <progress id={id} max={1} value={value} aria-label={`Progress of ${title}`} />
      <span className="small">{percent}%</span>
    </div>
  );
}

/** A goal's title, read from the API when the page does not hold it. */
export function GoalName({ id, known }: { id: number; known: Map<number, string> }) {
  const title = known.get(id);
  const goal = useQuery({
    queryKey: ["goals", id, "one"],
    queryFn: () => must(api.GET("/goals/{goal_id}", { params: { path: { goal_id: id } } })),
    enabled: title === undefined,
  });
  return <>{title ?? goal.data?.title ?? `goal ${id}`}</>;
}

/** Every goal of a tree, depth first. */
export function flatten(tree: GoalTree): GoalTree[] {
  return [tree, ...tree.subgoals.flatMap(flatten)];
}
