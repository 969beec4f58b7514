import { useQuery } from "@tanstack/react-query";

import { api, must } from "../../api/client";
import { ProblemView } from "../../components/ProblemView";
import { useCircle } from "./CircleLayout";
import { STATUS_LABEL, STATUSES } from "./moves";
import { NewTask } from "./NewTask";
import { useReviewers } from "./personAwaited";
import { TaskCard } from "./TaskCard";
import { keys } from "./types";

/** The circle's tasks in columns by state, moved live by the circle's events. */
export default function TaskBoard() {
  const circle = useCircle();
  const tasks = useQuery({
    queryKey: keys.tasks(circle.id),
    queryFn: () =>
      must(api.GET("/circles/{circle_id}/tasks", { params: { path: { circle_id: circle.id }, query: { limit: 1000 } } })),
  });
  const members = useQuery({
    queryKey: keys.members(circle.id),
    queryFn: () => must(api.GET("/circles/{circle_id}/members", { params: { path: { circle_id: circle.id } } })),
  });
  const all = tasks.data ?? [];
  const reviewers = useReviewers(circle.id, all);
  return (
    <section className="stack" aria-labelledby="board">
      <h2 id="board">Task board</h2>
      <NewTask circle={circle} tasks={all} />
      {tasks.isPending ? <p aria-busy="true">Loading…</p> : null}
      {tasks.error ? <ProblemView error={tasks.error} /> : null}
      {members.error ? <ProblemView error={members.error} /> : null}
      <div className="board">
        {STATUSES.map((status) => {
          const column = all.filter((task) => task.status === status).sort((a, b) => b.priority - a.priority || a.id - b.id);
          return (
            <section key={status} className="column" aria-labelledby={`column-${status}`}>
              <h3 id={`column-${status}`}>
                {STATUS_LABEL[status]} <span className="muted">{column.length}</span>
              </h3>
              {column.map((task) => (
                <TaskCard
                  key={task.id}
                  circle={circle}
                  task={task}
                  members={members.data ?? []}
                  tasks={all}
                  reviewers={reviewers.get(task.id) ?? []}
                />
              ))}
            </section>
          );
        })}
      </div>
    </section>
  );
}
