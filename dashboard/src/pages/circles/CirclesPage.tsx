import { useMutation, useQuery, useQueryClient } from "@tanstack/react-query";
import { useState, type FormEvent } from "react";
import { Link, useNavigate } from "react-router-dom";

import { api, must } from "../../api/client";
import { ProblemView } from "../../components/ProblemView";
import { when } from "../../format";
import { CircleStatus } from "./CircleStatus";
import { readSettings, SettingsFields } from "./SettingsFields";
import { keys } from "./types";
import "./circles.css";

function CreateCircle() {
  const client = useQueryClient();
  const navigate = useNavigate();
  const [open, setOpen] = useState(false);
  const create = useMutation({
    mutationFn: (body: { name: string; description: string; settings: ReturnType<typeof readSettings> }) =>
      must(api.POST("/circles", { body })),
    onSuccess: async (circle) => {
      await client.invalidateQueries({ queryKey: keys.circles });
      navigate(`/circles/${circle.id}`);
    },
  });

  function submit(event: FormEvent<HTMLFormElement>) {
    event.preventDefault();
    const form = new FormData(event.currentTarget);
    create.mutate({
      name: String(form.get("name")).trim(),
      description: String(form.get("description") ?? ""),
      settings: readSettings(form),
    });
  }

  if (!open) {
    return (
      <button type="button" className="primary" onClick={() => setOpen(true)}>
        New circle
      </button>
    );
  }
  return (
    <form className="card stack" onSubmit={submit} aria-label="New circle">
      <label>
        Name
        <input
          name="name"
          required
          maxLength={63}
          pattern="[a-z0-9][a-z0-9_\-]{0,62}"
          title="lower-case letters, digits, - and _"
          autoFocus
        />
      </label>
      <label>
        Description
        <input name="description" maxLength={20000} />
      </label>
      <details>
        <summary>Settings</summary>
        <SettingsFields />
      </details>
      {create.error ? <ProblemView error={create.error} /> : null}
      <div className="row">
        <button type="submit" className="primary" disabled={create.isPending}>
          Create
        </button>
        <button type="button" onClick={() => setOpen(false)}>
          Close
        </button>
      </div>
    </form>
  );
}

export default function CirclesPage() {
  const circles = useQuery({
    queryKey: keys.circles,
    queryFn: () => must(api.GET("/circles", { params: { query: { limit: 1000 } } })),
  });
  return (
    <section className="stack">
      <h1>Circles</h1>
      <p className="muted">Teams of agents and people who take tasks, review each other’s work and talk things over.</p>
      <CreateCircle />
      {circles.isPending ? <p aria-busy="true">Loading…</p> : null}
      {circles.error ? <ProblemView error={circles.error} /> : null}
      {circles.data && !circles.data.length ? <p className="muted">No circle yet: create one.</p> : null}
      {circles.data?.length ? (
        <table>
          <thead>
            <tr>
              <th scope="col">Name</th>
              <th scope="col">Description</th>
              <th scope="col">Status</th>
              <th scope="col">Created</th>
            </tr>
          </thead>
          <tbody>
            {circles.data.map((circle) => (
              <tr key={circle.id}>
                <td>
                  <Link to={`/circles/${circle.id}`}>{circle.name}</Link>
                </td>
                <td>{circle.description || <span className="muted">—</span>}</td>
                <td>
                  <CircleStatus circle={circle} />
                </td>
                <td>{when(circle.created_at)}</td>
              </tr>
            ))}
          </tbody>
        </table>
      ) : null}
    </section>
  );
}
