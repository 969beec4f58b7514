import { useQuery } from "@tanstack/react-query";
import { Link, useParams } from "react-router-dom";

import { api, must } from "../../api/client";
import { useAuth } from "../../auth";
import { ProblemView } from "../../components/ProblemView";
import { when } from "../../format";
import { useCircle } from "./CircleLayout";
import { isStatus, STATUS_LABEL } from "./moves";
import { waitsForPerson } from "./personAwaited";
import { TaskSteps } from "./TaskSteps";
import { keys, memberNames, type TaskDetail } from "./types";

function statusLabel(status: string | null): string {
  if (status === null) return "—";
  return isStatus(status) ? STATUS_LABEL[status] : status;
}

function Result({ task }: { task: TaskDetail }) {
  const result = task.result as { text?: unknown; summary?: unknown; files?: unknown } | null;
  if (!result) return null;
  return (
    <section className="card stack" aria-labelledby="result">
      <h3 id="result">The work handed in (attempt {task.iteration})</h3>
      {typeof result.summary === "string" && result.summary && result.summary !== result.text ? <p>{result.summary}</p> : null}
      <pre>{String(result.text ?? "")}</pre>
      {Array.isArray(result.files) && result.files.length ? <p className="muted">Files: {result.files.join(", ")}</p> : null}
    </section>
  );
}

/** One task's story: what it is, its moves, its routing decisions and its reviews. */
export default function TaskPage() {
  const circle = useCircle();
  const { me } = useAuth();
  const taskId = Number(useParams().taskId);
  const task = useQuery({
    queryKey: keys.task(circle.id, taskId),
    queryFn: () =>
      must(api.GET("/circles/{circle_id}/tasks/{task_id}", { params: { path: { circle_id: circle.id, task_id: taskId } } })),
    enabled: Number.isInteger(taskId),
  });
  const members = useQuery({
    queryKey: keys.members(circle.id),
    queryFn: () => must(api.GET("/circles/{circle_id}/members", { params: { path: { circle_id: circle.id } } })),
  });
  const tasks = useQuery({
    queryKey: keys.tasks(circle.id),
    queryFn: () =>
      must(api.GET("/circles/{circle_id}/tasks", { params: { path: { circle_id: circle.id }, query: { limit: 1000 } } })),
  });
  const names = memberNames(members.data);
  const who = (member: number | null, user: number | null) =>
    member !== null ? (names.get(member) ?? `member ${member}`) : user === me.id ? "you" : user !== null ? `person ${user}` : "the circle";
  if (task.isPending) return <p aria-busy="true">Loading…</p>;
  if (task.error) return <ProblemView error={task.error} />;
  const found = task.data;
  return (
    <section className="stack" aria-labelledby="task">
      <p>
        <Link to={`/circles/${circle.id}/board`}>← Task board</Link>
      </p>
      <h2 id="task">
        #{found.id} {found.title}
      </h2>
      <div className="row">
        <span className="badge">{statusLabel(found.status)}</span>
        <span>
          attempt {found.iteration} of {circle.settings.max_attempts ?? 5}
        </span>
        <span className="muted">
          {found.task_type} · review: {found.review_type} · priority {found.priority}
        </span>
        {found.assignee_id !== null ? <span>assignee: {who(found.assignee_id, null)}</span> : null}
      </div>
      {waitsForPerson(found) ? <p className="badge warn">Waits for a person’s review: approve it, or ask for changes.</p> : null}
      {found.description ? <p>{found.description}</p> : null}
      {found.blocked_by.length ? <p>Waits for tasks {found.blocked_by.map((id) => `#${id}`).join(", ")}</p> : null}
      {found.feedback ? <p>Last changes asked: {found.feedback}</p> : null}
      {found.error ? <ProblemView error={new Error(found.error)} /> : null}
      <TaskSteps circle={circle} task={found} members={members.data ?? []} tasks={tasks.data ?? []} />
      <Result task={found} />
      <section className="stack" aria-labelledby="history">
        <h3 id="history">History</h3>
        <table>
          <thead>
            <tr>
              <th scope="col">From</th>
              <th scope="col">To</th>
              <th scope="col">By</th>
              <th scope="col">Why</th>
              <th scope="col">When</th>
            </tr>
          </thead>
          <tbody>
            {found.history.map((move) => (
              <tr key={move.id}>
                <td>{statusLabel(move.from_status)}</td>
                <td>{statusLabel(move.to_status)}</td>
                <td>{who(move.member_id, move.user_id)}</td>
                <td>{move.reason}</td>
                <td>{when(move.at)}</td>
              </tr>
            ))}
          </tbody>
        </table>
      </section>
      <section className="stack" aria-labelledby="decisions">
        <h3 id="decisions">Routing decisions</h3>
        {found.decisions.length ? (
          <ul className="feed">
            {found.decisions.map((decision) => (
              <li key={decision.id}>
                <strong>{decision.kind}</strong> (attempt {decision.iteration}):{" "}
                {decision.member_id !== null ? who(decision.member_id, null) : "no member"} — {decision.reason}
              </li>
            ))}
          </ul>
        ) : (
          <p className="muted">None yet.</p>
        )}
      </section>
      <section className="stack" aria-labelledby="reviews">
        <h3 id="reviews">Reviews</h3>
        {found.reviews.length ? (
          <ul className="feed">
            {found.reviews.map((review) => (
              <li key={review.id}>
                <strong>{review.verdict}</strong> on attempt {review.iteration} by {who(review.reviewer_id, review.user_id)}
                {review.feedback ? `: ${review.feedback}` : ""} <span className="muted">{when(review.at)}</span>
              </li>
            ))}
          </ul>
        ) : (
          <p className="muted">None yet.</p>
        )}
      </section>
    </section>
  );
}
