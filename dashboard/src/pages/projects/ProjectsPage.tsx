import { useMutation, useQuery, useQueryClient } from "@tanstack/react-query";
import { useState, type FormEvent } from "react";
import { Link, useNavigate } from "react-router-dom";

import { api, must } from "../../api/client";
import { ProblemView } from "../../components/ProblemView";
import { when } from "../../format";

function CreateProject() {
  const client = useQueryClient();
  const navigate = useNavigate();
  const [open, setOpen] = useState(false);
  const create = useMutation({
    mutationFn: (body: { name: string; description: string; clone_from?: string }) => must(api.POST("/projects", { body })),
    onSuccess: async (project) => {
      await client.invalidateQueries({ queryKey: ["projects"] });
      navigate(`/projects/${project.id}`);
    },
  });

  function submit(event: FormEvent<HTMLFormElement>) {
    event.preventDefault();
    const form = new FormData(event.currentTarget);
    const clone = String(form.get("clone") ?? "").trim();
    create.mutate({
      name: String(form.get("name") ?? "").trim(),
      description: String(form.get("description") ?? "").trim(),
      ...(clone ? { clone_from: clone } : {}),
    });
  }

  if (!open) {
    return (
      <div>
        <button type="button" className="primary" onClick={() => setOpen(true)}>
          New project
        </button>
      </div>
    );
  }
  return (
    <form className="card stack" onSubmit={submit} aria-label="New project">
      <label>
        Name
        <input name="name" required pattern="[a-z0-9][a-z0-9_\-]{0,62}" autoFocus aria-describedby="project-name-rule" />
      </label>
      <span id="project-name-rule" className="muted">
        Lower-case letters, digits, - and _.
      </span>
      <label>
        Description
        <input name="description" maxLength={20000} />
      </label>
      <label>
        Clone from (optional)
        <input name="clone" type="text" placeholder="https://…" aria-describedby="project-clone-rule" />
      </label>
      <span id="project-clone-rule" className="muted">
        Leave empty for an empty folder. A URL must be on the server's clone allow-list (GATHERING_PROJECT_CLONE_ALLOWED).
      </span>
      {create.error ? <ProblemView error={create.error} /> : null}
      <div className="row">
        <button type="submit" className="primary" disabled={create.isPending}>
          {create.isPending ? "Creating…" : "Create"}
        </button>
        <button type="button" onClick={() => setOpen(false)}>
          Cancel
        </button>
      </div>
    </form>
  );
}

function languages(stack: Record<string, unknown>): string {
  const found = stack.languages;
  if (!Array.isArray(found)) return "—";
  const names = found.map((item: unknown) => (typeof item === "string" ? item : String((item as { name?: unknown }).name ?? ""))).filter(Boolean);
  return names.length ? names.slice(0, 3).join(", ") : "—";
}

export default function ProjectsPage() {
  const client = useQueryClient();
  const projects = useQuery({ queryKey: ["projects"], queryFn: () => must(api.GET("/projects", { params: { query: { limit: 200 } } })) });
  const remove = useMutation({
    mutationFn: (id: number) => must(api.DELETE("/projects/{project_id}", { params: { path: { project_id: id } } })),
    onSuccess: () => client.invalidateQueries({ queryKey: ["projects"] }),
  });
  return (
    <section className="stack">
      <h1>Projects</h1>
      <CreateProject />
      {remove.error ? <ProblemView error={remove.error} /> : null}
      {projects.isPending ? <p aria-busy="true">Loading…</p> : null}
      {projects.error ? <ProblemView error={projects.error} /> : null}
      {projects.data && !projects.data.length ? <p className="muted">No project yet: create one.</p> : null}
      {projects.data?.length ? (
        <table>
          <thead>
            <tr>
              <th scope="col">Name</th>
              <th scope="col">Description</th>
              <th scope="col">Origin</th>
              <th scope="col">Languages</th>
              <th scope="col">Created</th>
              <th scope="col">
                <span className="muted">Actions</span>
              </th>
            </tr>
          </thead>
          <tbody>
            {projects.data.map((project) => (
              <tr key={project.id}>
                <td>
                  <Link to={`/projects/${project.id}`}>{project.name}</Link>
                </td>
                <td>{project.description || <span className="muted">—</span>}</td>
                <td>{project.origin}</td>
                <td>{languages(project.stack)}</td>
                <td>{when(project.created_at)}</td>
                <td>
                  <button
                    type="button"
                    aria-label={`Delete ${project.name}`}
                    onClick={() => {
                      if (confirm(`Delete the project ${project.name}? A folder it made or cloned is deleted with it.`)) remove.mutate(project.id);
                    }}
                  >
                    Delete
                  </button>
                </td>
              </tr>
            ))}
          </tbody>
        </table>
      ) : null}
    </section>
  );
}
