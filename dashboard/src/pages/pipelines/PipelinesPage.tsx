import { useMutation, useQuery, useQueryClient } from "@tanstack/react-query";
import { useState, type FormEvent } from "react";
import { Link, useNavigate } from "react-router-dom";

import { api, must } from "../../api/client";
import { ProblemError, toProblem } from "../../api/problem";
import { ProblemView } from "../../components/ProblemView";
import { when } from "../../format";
import { asDefinition, emptyDefinition, problemsOf, type Definition, type Problem } from "./definition";
import { ProblemList } from "./ProblemList";
import { asBody, keys } from "./queries";
import { parseDefinitionText } from "./yaml";
import "./pipelines.css";

type Start = "empty" | "text";

function CreatePipeline() {
  const client = useQueryClient();
  const navigate = useNavigate();
  const [open, setOpen] = useState(false);
  const [start, setStart] = useState<Start>("empty");
  const [problems, setProblems] = useState<Problem[]>([]);
  const create = useMutation({
    mutationFn: async (definition: Definition) => {
      setProblems([]);
      const { data, error, response } = await api.POST("/pipelines", { body: asBody(definition) });
      if (!response.ok || !data) {
        setProblems(problemsOf(error));
        throw new ProblemError(toProblem(response.status, error));
      }
      return data;
    },
    onSuccess: async (pipeline) => {
      await client.invalidateQueries({ queryKey: keys.list });
      navigate(`/pipelines/${pipeline.id}`);
    },
  });
  const [readError, setReadError] = useState<string | null>(null);

  function submit(event: FormEvent<HTMLFormElement>) {
    event.preventDefault();
    const form = new FormData(event.currentTarget);
    const name = String(form.get("name") ?? "").trim();
    setReadError(null);
    if (start === "empty") {
      create.mutate(emptyDefinition(name));
      return;
    }
    try {
      const definition = asDefinition(parseDefinitionText(String(form.get("definition") ?? "")));
      create.mutate(name && !definition.name ? { ...definition, name } : definition);
    } catch (error) {
      setReadError((error as Error).message);
    }
  }

  if (!open) {
    return (
      <button type="button" className="primary" onClick={() => setOpen(true)}>
        New pipeline
      </button>
    );
  }
  return (
    <form className="card stack" onSubmit={submit} aria-label="New pipeline">
      <fieldset className="row plain">
        <legend>Start from</legend>
        <label className="check">
          <span>
            <input type="radio" name="start" checked={start === "empty"} onChange={() => setStart("empty")} /> An empty
            graph (one manual trigger)
          </span>
        </label>
        <label className="check">
          <span>
            <input type="radio" name="start" checked={start === "text"} onChange={() => setStart("text")} /> A definition
            (JSON or YAML)
          </span>
        </label>
      </fieldset>
      <label>
        Name{start === "text" ? " (when the definition has none)" : ""}
        <input name="name" required={start === "empty"} maxLength={100} autoFocus />
      </label>
      {start === "text" ? (
        <label>
          Definition
          <textarea
            name="definition"
            required
            rows={14}
            className="json-field"
            spellCheck={false}
            placeholder={"name: triage\nnodes:\n  - id: start\n    type: trigger\n  - ...\nedges:\n  - {from: start, to: ...}"}
          />
        </label>
      ) : null}
      {readError ? (
        <p className="problem" role="alert">
          <strong>The definition cannot be read: {readError}</strong>
        </p>
      ) : null}
      {create.error ? <ProblemView error={create.error} /> : null}
      <ProblemList problems={problems} />
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

export default function PipelinesPage() {
  const client = useQueryClient();
  const pipelines = useQuery({
    queryKey: keys.list,
    queryFn: () => must(api.GET("/pipelines", { params: { query: { limit: 1000 } } })),
  });
  const remove = useMutation({
    mutationFn: (id: number) => must(api.DELETE("/pipelines/{pipeline_id}", { params: { path: { pipeline_id: id } } })),
    onSuccess: () => client.invalidateQueries({ queryKey: keys.list }),
  });
  return (
    <section className="stack">
      <h1>Pipelines</h1>
      <CreatePipeline />
      {remove.error ? <ProblemView error={remove.error} /> : null}
      {pipelines.isPending ? <p aria-busy="true">Loading…</p> : null}
      {pipelines.error ? <ProblemView error={pipelines.error} /> : null}
      {pipelines.data && !pipelines.data.length ? <p className="muted">No pipeline yet: create one.</p> : null}
      {pipelines.data?.length ? (
        <table>
          <thead>
            <tr>
              <th scope="col">Name</th>
              <th scope="col">Version</th>
              <th scope="col">Nodes</th>
              <th scope="col">Updated</th>
              <th scope="col">
                <span className="muted">Actions</span>
              </th>
            </tr>
          </thead>
          <tbody>
            {pipelines.data.map((pipeline) => (
              <tr key={pipeline.id}>
                <td>
                  <Link to={`/pipelines/${pipeline.id}`}>{pipeline.name}</Link>
                  {pipeline.description ? <div className="muted">{pipeline.description}</div> : null}
                </td>
                <td>{pipeline.version}</td>
                <td>{pipeline.nodes}</td>
                <td>{when(pipeline.updated_at)}</td>
                <td className="row">
                  <Link to={`/pipelines/${pipeline.id}/runs`} aria-label={`Runs of ${pipeline.name}`}>
                    Runs
                  </Link>
                  <button
                    type="button"
                    aria-label={`Delete ${pipeline.name}`}
                    disabled={remove.isPending}
                    onClick={() => {
                      if (confirm(`Delete the pipeline ${pipeline.name} and all its versions?`)) remove.mutate(pipeline.id);
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
