import { useMutation, useQuery, useQueryClient } from "@tanstack/react-query";
import { useState, type FormEvent } from "react";
import { Link, useNavigate } from "react-router-dom";

import { api, must } from "../../api/client";
import { ProblemView } from "../../components/ProblemView";
import { when } from "../../format";

function CreateAgent() {
  const client = useQueryClient();
  const navigate = useNavigate();
  const personas = useQuery({ queryKey: ["personas"], queryFn: () => must(api.GET("/personas")) });
  const create = useMutation({
    mutationFn: (body: { name: string; persona_name?: string }) => must(api.POST("/agents", { body })),
    onSuccess: async (agent) => {
      await client.invalidateQueries({ queryKey: ["agents"] });
      navigate(`/agents/${agent.id}`);
    },
  });
  const [open, setOpen] = useState(false);

  function submit(event: FormEvent<HTMLFormElement>) {
    event.preventDefault();
    const form = new FormData(event.currentTarget);
    const persona = String(form.get("persona") ?? "");
    create.mutate({ name: String(form.get("name")).trim(), ...(persona ? { persona_name: persona } : {}) });
  }

  if (!open) {
    return (
      <button type="button" className="primary" onClick={() => setOpen(true)}>
        New agent
      </button>
    );
  }
  return (
    <form className="card stack" onSubmit={submit} aria-label="New agent">
      <label>
        Name
        <input name="name" required maxLength={100} autoFocus />
      </label>
      <label>
        Persona
        <select name="persona" defaultValue="">
          <option value="">None (a plain assistant)</option>
          {(personas.data ?? []).map((persona) => (
            <option key={persona.name} value={persona.name}>
              {persona.name}
            </option>
          ))}
        </select>
      </label>
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

export default function AgentsPage() {
  const client = useQueryClient();
  const agents = useQuery({ queryKey: ["agents"], queryFn: () => must(api.GET("/agents")) });
  const remove = useMutation({
    mutationFn: (id: number) => must(api.DELETE("/agents/{agent_id}", { params: { path: { agent_id: id } } })),
    onSuccess: () => client.invalidateQueries({ queryKey: ["agents"] }),
  });
  return (
    <section className="stack">
      <h1>Agents</h1>
      <CreateAgent />
      {remove.error ? <ProblemView error={remove.error} /> : null}
      {agents.isPending ? <p aria-busy="true">Loading…</p> : null}
      {agents.error ? <ProblemView error={agents.error} /> : null}
      {agents.data && !agents.data.length ? <p className="muted">No agent yet: create one.</p> : null}
      {agents.data?.length ? (
        <table>
          <thead>
            <tr>
              <th scope="col">Name</th>
              <th scope="col">Model</th>
              <th scope="col">Created</th>
              <th scope="col">
                <span className="muted">Actions</span>
              </th>
            </tr>
          </thead>
          <tbody>
            {agents.data.map((agent) => (
              <tr key={agent.id}>
                <td>
                  <Link to={`/agents/${agent.id}`}>{agent.name}</Link>
                </td>
                <td>
                  {agent.provider} / {agent.model}
                </td>
                <td>{when(agent.created_at)}</td>
                <td className="row">
                  <Link to={`/agents/${agent.id}/settings`} aria-label={`Settings of ${agent.name}`}>
                    Settings
                  </Link>
                  <button
                    type="button"
                    aria-label={`Delete ${agent.name}`}
                    onClick={() => {
                      if (confirm(`Delete the agent ${agent.name} and its conversations?`)) remove.mutate(agent.id);
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
