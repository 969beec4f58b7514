// Who a task in review waits for: the members its attempt's review requests went to, or a
// person when the last request went to no member (no reviewer nor lead could take it): then
// the owner approves or asks for changes.

import { useQueries } from "@tanstack/react-query";

import { api, must } from "../../api/client";
import { keys, type Task, type TaskDetail } from "./types";

/** The members asked to review the current attempt (null: a person), in order; none when
 * the task is not in review. */
export function reviewersAsked(task: TaskDetail): (number | null)[] {
  if (task.status !== "in_review") return [];
  return task.decisions
    .filter((decision) => decision.iteration === task.iteration && (decision.kind === "review" || decision.kind === "escalation"))
    .map((decision) => decision.member_id);
}

export function waitsForPerson(task: TaskDetail): boolean {
  const asked = reviewersAsked(task);
  return asked.length > 0 && asked[asked.length - 1] === null;
}

/** For each task in review (its details are asked for), who its review waits for. */
export function useReviewers(circleId: number, tasks: Task[]): Map<number, (number | null)[]> {
  const inReview = tasks.filter((task) => task.status === "in_review");
  const details = useQueries({
    queries: inReview.map((task) => ({
      queryKey: keys.task(circleId, task.id),
      queryFn: () =>
        must(api.GET("/circles/{circle_id}/tasks/{task_id}", { params: { path: { circle_id: circleId, task_id: task.id } } })),
    })),
  });
  return new Map(details.flatMap((detail) => (detail.data ? [[detail.data.id, reviewersAsked(detail.data)] as const] : [])));
}
