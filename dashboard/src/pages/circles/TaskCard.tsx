import { Link } from "react-router-dom";

import { TaskSteps } from "./TaskSteps";
import type { Circle, Member, Task } from "./types";

/** A task on the board: its title, who has it, its attempts, and the moves it may make. */
export function TaskCard({
  circle,
  task,
  members,
  tasks,
  reviewers,
}: {
  circle: Circle;
  task: Task;
  members: Member[];
  tasks: Task[];
  /** Who its review waits for (null: a person), when it is in review. */
  reviewers: (number | null)[];
}) {
  const name = (id: number | null) => (id === null ? null : (members.find((member) => member.id === id)?.name ?? `member ${id}`));
  const assignee = name(task.assignee_id);
  const offeredTo = task.status === "offered" ? name(task.offered_to) : null;
  const requirements = Object.entries(task.requirements);
  const personAwaited = reviewers.length > 0 && reviewers[reviewers.length - 1] === null;
  const reviewing = reviewers.filter((id): id is number => id !== null).map(name);
  return (
    <article className="task-card" aria-label={`Task ${task.id}: ${task.title}`}>
      <h4>
        <Link to={`/circles/${circle.id}/tasks/${task.id}`}>{task.title}</Link> <span className="muted">#{task.id}</span>
      </h4>
      <dl className="facts">
        <dt>Assignee</dt>
        <dd>{assignee ?? <span className="muted">none</span>}</dd>
        {offeredTo ? (
          <>
            <dt>Offered to</dt>
            <dd>{offeredTo}</dd>
          </>
        ) : null}
        <dt>Attempts</dt>
        <dd>
          {task.iteration} of {circle.settings.max_attempts ?? 5}
        </dd>
        {reviewing.length && !personAwaited ? (
          <>
            <dt>Review by</dt>
            <dd>{reviewing.join(", ")}</dd>
          </>
        ) : null}
        {task.priority ? (
          <>
            <dt>Priority</dt>
            <dd>{task.priority}</dd>
          </>
        ) : null}
      </dl>
      {requirements.length ? (
        <p className="row tight" aria-label="Needs">
          {requirements.map(([tag, level]) => (
            <span key={tag} className="badge">
              {tag} ≥ {level}
            </span>
          ))}
        </p>
      ) : null}
      {personAwaited ? <p className="badge warn">Waits for a person’s review</p> : null}
      {task.status === "changes_requested" && task.feedback ? <p className="clip">Changes: {task.feedback}</p> : null}
      {task.error ? <p className="bad clip">{task.error}</p> : null}
      <TaskSteps circle={circle} task={task} members={members} tasks={tasks} />
    </article>
  );
}
