// The personas library: built-ins (read-only, copied to make a new one) and stored personas
// (created, changed, deleted).

import { useMutation, useQuery, useQueryClient } from "@tanstack/react-query";
import { useState, type FormEvent } from "react";

import { api, must } from "../../api/client";
import type { components } from "../../api/schema";
import { ProblemView } from "../../components/ProblemView";
import { when } from "../../format";
import { personaFromForm } from "./forms";

type PersonaOut = components["schemas"]["PersonaOut"];

type Editing = { mode: "new"; from?: PersonaOut } | { mode: "change"; persona: PersonaOut } | null;

function PersonaFields({ persona }: { persona?: components["schemas"]["Persona"] }) {
  return (
    <>
      <div className="form-grid">
        <label>
          Role
          <input name="role" maxLength={200} defaultValue={persona?.role} />
        </label>
        <label>
          Language
          <input name="language" minLength={2} maxLength={35} defaultValue={persona?.language ?? "en"} />
        </label>
        <label>
          Communication style
          <input name="communication_style" maxLength={500} defaultValue={persona?.communication_style} />
        </label>
      </div>
      <div className="form-grid">
        <label>
          Traits (one a line, or separated by commas)
          <textarea name="traits" rows={3} defaultValue={persona?.traits?.join("\n")} />
        </label>
        <label>
          Specializations (one a line, or separated by commas)
          <textarea name="specializations" rows={3} defaultValue={persona?.specializations?.join("\n")} />
        </label>
      </div>
      <label>
        Base prompt
        <textarea name="base_prompt" className="prompt" maxLength={20000} defaultValue={persona?.base_prompt} />
      </label>
    </>
  );
}

function PersonaForm({ editing, onDone }: { editing: NonNullable<Editing>; onDone: () => void }) {
  const client = useQueryClient();
  const changing = editing.mode === "change" ? editing.persona : null;
  const source = editing.mode === "change" ? editing.persona : editing.from;
  const save = useMutation({
    mutationFn: async (form: FormData) => {
      const description = String(form.get("description") ?? "");
      const persona = personaFromForm(form);
      if (changing) {
        return must(api.PATCH("/personas/{name}", { params: { path: { name: changing.name } }, body: { description, persona } }));
      }
      return must(api.POST("/personas", { body: { name: String(form.get("name")).trim(), description, persona } }));
    },
    onSuccess: async () => {
      await client.invalidateQueries({ queryKey: ["personas"] });
      onDone();
    },
  });
  function submit(event: FormEvent<HTMLFormElement>) {
    event.preventDefault();
    save.mutate(new FormData(event.currentTarget));
  }
  const title = changing ? `Change ${changing.name}` : source ? `New persona from ${source.name}` : "New persona";
  return (
    <form className="card stack" onSubmit={submit} aria-label={title}>
      <h3>{title}</h3>
      {changing ? null : (
        <label>
          Name (lower-case letters, digits, - and _, starting with a letter)
          <input name="name" required maxLength={63} autoComplete="off" defaultValue={source ? `${source.name}-copy` : ""} />
        </label>
      )}
      <label>
        Description
        <input name="description" maxLength={2000} defaultValue={source?.description} />
      </label>
      <PersonaFields persona={source?.persona} />
      {save.error ? <ProblemView error={save.error} /> : null}
      <div className="row">
        <button type="submit" className="primary" disabled={save.isPending}>
          {changing ? "Save" : "Create persona"}
        </button>
        <button type="button" onClick={onDone}>
          Cancel
        </button>
      </div>
    </form>
  );
}

function PersonaRow({ persona, onEdit }: { persona: PersonaOut; onEdit: (editing: Editing) => void }) {
  const client = useQueryClient();
  const remove = useMutation({
    mutationFn: () => must(api.DELETE("/personas/{name}", { params: { path: { name: persona.name } } })),
    onSuccess: () => client.invalidateQueries({ queryKey: ["personas"] }),
  });
  return (
    <tr>
      <th scope="row">
        {persona.name} {persona.builtin ? <span className="badge">built-in</span> : null}
      </th>
      <td>{persona.persona.role || <span className="muted">—</span>}</td>
      <td>{persona.description || <span className="muted">—</span>}</td>
      <td>{persona.builtin ? <span className="muted">shipped</span> : when(persona.updated_at)}</td>
      <td className="actions">
        <div className="row">
          <button type="button" onClick={() => onEdit({ mode: "new", from: persona })} aria-label={`Copy ${persona.name}`}>
            Copy
          </button>
          {persona.builtin ? null : (
            <>
              <button type="button" onClick={() => onEdit({ mode: "change", persona })} aria-label={`Change ${persona.name}`}>
                Change
              </button>
              <button
                type="button"
                disabled={remove.isPending}
                aria-label={`Delete ${persona.name}`}
                onClick={() => {
                  if (confirm(`Delete the persona ${persona.name}? Agents made from it keep their copy.`)) remove.mutate();
                }}
              >
                Delete
              </button>
            </>
          )}
        </div>
        {remove.error ? <ProblemView error={remove.error} /> : null}
      </td>
    </tr>
  );
}

export default function PersonasTab() {
  const personas = useQuery({ queryKey: ["personas"], queryFn: () => must(api.GET("/personas")) });
  const [editing, setEditing] = useState<Editing>(null);
  const key = editing === null ? "" : editing.mode === "change" ? `change-${editing.persona.name}` : `new-${editing.from?.name ?? ""}`;
  return (
    <section className="stack" aria-labelledby="personas-heading">
      <h2 id="personas-heading">Personas</h2>
      <p className="muted">Built-in personas are read-only: copy one to make your own. Agents keep a copy of the persona they were made from.</p>
      {editing === null ? (
        <div>
          <button type="button" className="primary" onClick={() => setEditing({ mode: "new" })}>
            New persona
          </button>
        </div>
      ) : (
        <PersonaForm key={key} editing={editing} onDone={() => setEditing(null)} />
      )}
      {personas.isPending ? <p aria-busy="true">Loading…</p> : null}
      {personas.error ? <ProblemView error={personas.error} /> : null}
      {personas.data?.length ? (
        <div className="table-scroll">
          <table>
            <thead>
              <tr>
                <th scope="col">Name</th>
                <th scope="col">Role</th>
                <th scope="col">Description</th>
                <th scope="col">Changed</th>
                <th scope="col">
                  <span className="muted">Actions</span>
                </th>
              </tr>
            </thead>
            <tbody>
              {personas.data.map((persona) => (
                <PersonaRow key={persona.name} persona={persona} onEdit={setEditing} />
              ))}
            </tbody>
          </table>
        </div>
      ) : null}
    </section>
  );
}
