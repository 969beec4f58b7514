import { useMutation, useQuery, useQueryClient } from "@tanstack/react-query";
import { useRef, useState, type FormEvent } from "react";
import { Link, useNavigate, useParams } from "react-router-dom";

import { api, must } from "../../api/client";
import { useLive } from "../../api/live";
import { ProblemView } from "../../components/ProblemView";
import { when } from "../../format";
import { indexing, type Document } from "./upload";
import "./knowledge.css";

type Full = Document & { content?: string | null };

function Facts({ document }: { document: Full }) {
  const metadata = Object.entries(document.metadata ?? {});
  return (
    <dl className="facts">
      <dt>Status</dt>
      <dd>
        <span className={document.status === "ready" ? "ok" : document.status === "failed" ? "bad" : "warn"}>{document.status}</span>
        {document.status === "pending" ? ` (${indexing(document)})` : null}
        {document.error ? ` — ${document.error}` : null}
      </dd>
      <dt>Category</dt>
      <dd>{document.category}</dd>
      <dt>Scope</dt>
      <dd>
        {document.scope}
        {document.scope_id ? ` ${document.scope_id}` : ""}
      </dd>
      <dt>Chunks</dt>
      <dd>
        {document.chunk_count}
        {document.embedding_model ? ` · embedded with ${document.embedding_model}` : " · full-text only"}
      </dd>
      <dt>Size</dt>
      <dd>{document.size_chars.toLocaleString()} characters</dd>
      {document.source ? (
        <>
          <dt>Source</dt>
          <dd>{document.source}</dd>
        </>
      ) : null}
      {metadata.map(([key, value]) => (
        <FactRow key={key} name={key} value={value} />
      ))}
      <dt>Added</dt>
      <dd>{when(document.created_at)}</dd>
    </dl>
  );
}

function FactRow({ name, value }: { name: string; value: unknown }) {
  return (
    <>
      <dt>{name}</dt>
      <dd>{typeof value === "string" ? value : JSON.stringify(value)}</dd>
    </>
  );
}

function Edit({ document, onDone }: { document: Full; onDone: () => void }) {
  const client = useQueryClient();
  const save = useMutation({
    mutationFn: (body: { title?: string; category?: string; content?: string }) =>
      must(api.PATCH("/knowledge/{document_id}", { params: { path: { document_id: document.id } }, body })),
    onSuccess: async () => {
      await client.invalidateQueries({ queryKey: ["knowledge"] });
      onDone();
    },
  });
  function submit(event: FormEvent<HTMLFormElement>) {
    event.preventDefault();
    const form = new FormData(event.currentTarget);
    const title = String(form.get("title") ?? "").trim();
    const category = String(form.get("category") ?? "").trim();
    const content = String(form.get("content") ?? "");
    // Only what changed: a new title or content is cut and embedded again.
    save.mutate({
      ...(title !== document.title ? { title } : {}),
      ...(category !== document.category ? { category } : {}),
      ...(content !== (document.content ?? "") ? { content } : {}),
    });
  }
  return (
    <form className="stack document-edit" onSubmit={submit} aria-label="Edit the document">
      <label>
        Title
        <input name="title" required maxLength={500} defaultValue={document.title} />
      </label>
      <label>
        Category
        <input name="category" required maxLength={100} defaultValue={document.category} />
      </label>
      <label>
        Content
        <textarea name="content" required defaultValue={document.content ?? ""} />
      </label>
      {save.error ? <ProblemView error={save.error} /> : null}
      <div className="row">
        <button type="submit" className="primary" disabled={save.isPending}>
          {save.isPending ? "Saving and indexing…" : "Save"}
        </button>
        <button type="button" onClick={onDone}>
          Cancel
        </button>
      </div>
    </form>
  );
}

export default function DocumentPage() {
  const documentId = Number(useParams().documentId);
  const client = useQueryClient();
  const navigate = useNavigate();
  const [editing, setEditing] = useState(false);
  const document = useQuery({
    queryKey: ["knowledge", documentId],
    queryFn: () => must(api.GET("/knowledge/{document_id}", { params: { path: { document_id: documentId } } })) as Promise<Full>,
  });
  // Once its deletion is asked for, the document's own events (a re-index of an edit ending)
  // no longer read it again: that read would be a 404.
  const deleting = useRef(false);
  const remove = useMutation({
    mutationFn: () => {
      deleting.current = true;
      return must(api.DELETE("/knowledge/{document_id}", { params: { path: { document_id: documentId } } }));
    },
    onError: () => {
      deleting.current = false;
    },
    onSuccess: () => {
      // Leave, and leave the document's query alone: removing it while this page is still
      // mounted would read the deleted document again (a 404); unused, it is dropped later.
      navigate("/knowledge");
      void client.invalidateQueries({ queryKey: ["knowledge", "list"] });
    },
  });
  useLive({
    patterns: ["knowledge.document.*"],
    onEvent: (event) => {
      if (deleting.current || Number(event.data.document_id) !== documentId) return;
      void client.invalidateQueries({ queryKey: ["knowledge", documentId] });
    },
  });

  if (document.isPending) return <p aria-busy="true">Loading…</p>;
  if (document.error) {
    return (
      <section className="stack">
        <h1>Document</h1>
        <ProblemView error={document.error} />
        <Link to="/knowledge">All documents</Link>
      </section>
    );
  }
  const data = document.data;
  return (
    <section className="stack">
      <div className="row">
        <h1>{data.title}</h1>
        <Link to="/knowledge">All documents</Link>
      </div>
      <Facts document={data} />
      {remove.error ? <ProblemView error={remove.error} /> : null}
      {editing ? (
        <Edit document={data} onDone={() => setEditing(false)} />
      ) : (
        <>
          <div className="row">
            <button type="button" onClick={() => setEditing(true)}>
              Edit
            </button>
            <button
              type="button"
              disabled={remove.isPending}
              onClick={() => {
                if (confirm(`Delete the document ${data.title} and its chunks?`)) remove.mutate();
              }}
            >
              Delete
            </button>
          </div>
          <h2>Text</h2>
          <pre className="document-text" tabIndex={0} aria-label="The document's text">
            {data.content}
          </pre>
        </>
      )}
    </section>
  );
}
