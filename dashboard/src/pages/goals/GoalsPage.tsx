import { useMutation, useQuery, useQueryClient } from "@tanstack/react-query";
import { useState, type FormEvent } from "react";
import { Link, useNavigate } from "react-router-dom";

import { useLive } from "../../api/live";
import { api, must } from "../../api/client";
import { ProblemView } from "../../components/ProblemView";
import { when } from "../../format";
import { tone } from "../tasks/shared";
import { GoalFields, goalBody, Progress, type GoalIn } from "./parts";
import "./goals.css";

function NewGoal() {
  const client = useQueryClient();
  const navigate = useNavigate();
  const [open, setOpen] = useState(false);
  const create = useMutation({
    mutationFn: (body: GoalIn) => must(api.POST("/goals", { body })),
    onSuccess: async (goal) => {
      await client.invalidateQueries({ queryKey: ["goals"] });
      navigate(`/goals/${goal.id}`);
    },
  });
  function submit(event: FormEvent<HTMLFormElement>) {
    event.preventDefault();
    create.mutate(goalBody(new FormData(event.currentTarget)));
  }
  if (!open) {
    return (
      <div>
        <button type="button" className="primary" onClick={() => setOpen(true)}>
          New goal
        </button>
      </div>
    );
  }
  return (
    <form className="card stack" aria-label="New goal" onSubmit={submit}>
      <GoalFields />
      {create.error ? <ProblemView error={create.error} /> : null}
      <div className="row">
        <button type="submit" className="primary" disabled={create.isPending}>
          Create
        </button>
        <button type="button" onClick={() => setOpen(false)}>
          Cancel
        </button>
      </div>
    </form>
  );
}

export default function GoalsPage() {
  const client = useQueryClient();
  const live = useLive({ patterns: ["goal.*"], onEvent: () => void client.invalidateQueries({ queryKey: ["goals"] }) });
  const goals = useQuery({
    queryKey: ["goals", "top"],
    queryFn: () => must(api.GET("/goals", { params: { query: { limit: 200 } } })),
    refetchInterval: live === "live" ? false : 5_000,
  });
  return (
    <section className="stack">
      <h1>Goals</h1>
      <NewGoal />
      {goals.isPending ? <p aria-busy="true">Loading…</p> : null}
      {goals.error ? <ProblemView error={goals.error} /> : null}
      {goals.data && !goals.data.length ? <p className="muted">No goal yet.</p> : null}
      {goals.data?.length ? (
        <ul className="goal-list" aria-label="Goals">
          {goals.data.map((goal) => (
            <li key={goal.id} className="card stack">
              <div className="row">
                <Link to={`/goals/${goal.id}`}>
                  <strong>{goal.title}</strong>
                </Link>
                <span className={`badge ${tone(goal.status)}`}>{goal.status}</span>
                <span className="muted small">created {when(goal.created_at)}</span>
              </div>
              <Progress title={goal.title} value={goal.progress} />
            </li>
          ))}
        </ul>
      ) : null}
    </section>
  );
}
