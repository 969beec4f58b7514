// What of the knowledge base goes into the agent's prompt: nothing, every document it sees, or
// some categories and documents (the `knowledge` field of PATCH /agents/{id}).

import { useMutation, useQuery, useQueryClient } from "@tanstack/react-query";
import { useState, type FormEvent } from "react";
import { Link } from "react-router-dom";

import { api, must } from "../../api/client";
import { ProblemView } from "../../components/ProblemView";
import { knowledgeBody, knowledgeMode, splitList, type Agent, type KnowledgeMode } from "./settingsForms";

/** Starts from the stored setting; the page remounts it when that changes. */
export function KnowledgePanel({ agent, saved, setSaved }: { agent: Agent; saved: boolean; setSaved: (saved: boolean) => void }) {
  const client = useQueryClient();
  const stored = agent.config.knowledge;
  const selection = stored && stored !== "all" ? stored : { categories: [], documents: [] };
  const [mode, setMode] = useState<KnowledgeMode>(knowledgeMode(stored));
  const [documents, setDocuments] = useState<number[]>(selection.documents ?? []);
  const library = useQuery({
    queryKey: ["knowledge", "documents", { limit: 500 }],
    queryFn: () => must(api.GET("/knowledge", { params: { query: { limit: 500 } } })),
  });
  const save = useMutation({
    mutationFn: (knowledge: ReturnType<typeof knowledgeBody>) =>
      must(api.PATCH("/agents/{agent_id}", { params: { path: { agent_id: agent.id } }, body: { knowledge } })),
    onSuccess: (updated) => {
      setSaved(true);
      client.setQueryData(["agents", agent.id], updated);
    },
  });
  // What the agent sees: its owner's global documents and those scoped to it.
  const visible = (library.data ?? []).filter(
    (document) => document.scope === "global" || (document.scope === "agent" && document.scope_id === String(agent.id)),
  );
  const categories = [...new Set(visible.map((document) => document.category))].sort();
  const unseen = documents.filter((id) => !visible.some((document) => document.id === id));

  function submit(event: FormEvent<HTMLFormElement>) {
    event.preventDefault();
    setSaved(false);
    const chosen = splitList(String(new FormData(event.currentTarget).get("categories") ?? ""));
    save.mutate(knowledgeBody(mode, chosen, documents));
  }

  function toggle(id: number, on: boolean) {
    setDocuments((before) => (on ? [...before, id] : before.filter((other) => other !== id)));
  }

  return (
    <form className="card stack" onSubmit={submit} aria-labelledby="knowledge-heading">
      <h2 id="knowledge-heading">Knowledge</h2>
      <p className="muted small">
        Each turn, the passages of the <Link to="/knowledge">knowledge base</Link> that best answer the message go into the
        agent&apos;s prompt. It sees your global documents and those scoped to it.
      </p>
      <fieldset className="stack">
        <legend>Passages from</legend>
        {(
          [
            ["none", "No knowledge"],
            ["all", "Every document it sees"],
            ["some", "Some categories and documents"],
          ] as const
        ).map(([value, label]) => (
          <label key={value} className="inline">
            <input type="radio" name="mode" value={value} checked={mode === value} onChange={() => setMode(value)} />
            {label}
          </label>
        ))}
      </fieldset>
      {mode === "some" ? (
        <div className="stack">
          <label>
            Categories (separated by commas)
            <input name="categories" list="knowledge-categories" defaultValue={(selection.categories ?? []).join(", ")} />
            <datalist id="knowledge-categories">
              {categories.map((category) => (
                <option key={category} value={category} />
              ))}
            </datalist>
          </label>
          {categories.length ? <p className="muted small">Categories in use: {categories.join(", ")}</p> : null}
          <fieldset className="stack">
            <legend>Documents</legend>
            {library.isPending ? <p aria-busy="true">Loading…</p> : null}
            {library.error ? <ProblemView error={library.error} /> : null}
            {library.data && !visible.length ? <p className="muted">No document it can see.</p> : null}
            <div className="knowledge-documents">
              {visible.map((document) => (
                <label key={document.id} className="inline">
                  <input
                    type="checkbox"
                    checked={documents.includes(document.id)}
                    onChange={(event) => toggle(document.id, event.target.checked)}
                  />
                  {document.title}
                  <span className="muted small">
                    {document.category} · {document.scope === "agent" ? "this agent" : "global"}
                    {document.status !== "ready" ? ` · ${document.status}` : ""}
                  </span>
                </label>
              ))}
              {unseen.map((id) => (
                <label key={id} className="inline">
                  <input type="checkbox" checked onChange={(event) => toggle(id, event.target.checked)} />
                  Document {id}
                  <span className="muted small">not visible to this agent (never found)</span>
                </label>
              ))}
            </div>
          </fieldset>
        </div>
      ) : null}
      {save.error ? <ProblemView error={save.error} /> : null}
      <div className="row">
        <button type="submit" className="primary" disabled={save.isPending}>
          Save knowledge
        </button>
        {saved && !save.isPending ? (
          <span role="status" className="ok">
            Saved.
          </span>
        ) : null}
      </div>
    </form>
  );
}
