import { useMutation, useQuery, useQueryClient } from "@tanstack/react-query";
import { useState, type FormEvent } from "react";
import { Link } from "react-router-dom";

import { api, must } from "../../api/client";
import { useLive } from "../../api/live";
import { ProblemView } from "../../components/ProblemView";
import { when } from "../../format";
import { indexing, upload, type Document } from "./upload";
import "./knowledge.css";

const PAGE = 50;

interface Progress {
  status: Document["status"];
  chunks_done: number;
  chunks_total: number | null;
  error: string | null;
}

function useProjects() {
  return useQuery({ queryKey: ["projects"], queryFn: () => must(api.GET("/projects", { params: { query: { limit: 200 } } })) });
}

function ProjectSelect({ name, label, empty }: { name: string; label: string; empty: string }) {
  const projects = useProjects();
  return (
    <label>
      {label}
      <select name={name} defaultValue="">
        <option value="">{empty}</option>
        {(projects.data ?? []).map((project) => (
          <option key={project.id} value={project.id}>
            {project.name}
          </option>
        ))}
      </select>
    </label>
  );
}

function Search() {
  const search = useMutation({
    mutationFn: (body: { query: string; limit: number; project_id?: number; category?: string }) => must(api.POST("/knowledge/search", { body })),
  });
  function submit(event: FormEvent<HTMLFormElement>) {
    event.preventDefault();
    const form = new FormData(event.currentTarget);
    const project = Number(form.get("project") || 0);
    const category = String(form.get("category") ?? "").trim();
    search.mutate({
      query: String(form.get("query") ?? "").trim(),
      limit: 10,
      ...(project ? { project_id: project } : {}),
      ...(category ? { category } : {}),
    });
  }
  return (
    <section className="card stack" aria-labelledby="search-heading">
      <h2 id="search-heading">Search</h2>
      <form className="row search-form" onSubmit={submit} aria-label="Search the knowledge base">
        <label className="grow">
          Query
          <input name="query" type="search" required maxLength={4000} />
        </label>
        <label>
          Category
          <input name="category" maxLength={100} size={10} />
        </label>
        <ProjectSelect name="project" label="Project" empty="Any" />
        <button type="submit" className="primary" disabled={search.isPending}>
          Search
        </button>
      </form>
      {search.error ? <ProblemView error={search.error} /> : null}
      {search.data ? (
        <>
          <p className="muted">
            {search.data.results.length} passage{search.data.results.length === 1 ? "" : "s"} · {search.data.semantic ? "semantic and full-text" : "full-text only"}
          </p>
          <ol className="hits">
            {search.data.results.map((hit) => (
              <li key={hit.chunk_id}>
                <Link to={`/knowledge/${hit.document_id}`}>{hit.document_title}</Link>{" "}
                <span className="muted">
                  part {hit.seq + 1} · {hit.category} · score {hit.score.toFixed(3)}
                </span>
                <p className="hit-text">{hit.content}</p>
              </li>
            ))}
          </ol>
        </>
      ) : null}
    </section>
  );
}

function Upload() {
  const client = useQueryClient();
  const [sent, setSent] = useState<{ sent: number; total: number } | null>(null);
  const send = useMutation({
    mutationFn: (input: { files: File[]; category?: string; projectId?: number }) => upload(input, (done, total) => setSent({ sent: done, total })),
    onSuccess: () => client.invalidateQueries({ queryKey: ["knowledge"] }),
  });
  function submit(event: FormEvent<HTMLFormElement>) {
    event.preventDefault();
    const formElement = event.currentTarget;
    const form = new FormData(formElement);
    const files = form.getAll("files").filter((item): item is File => item instanceof File && item.name !== "");
    const category = String(form.get("category") ?? "").trim();
    const project = Number(form.get("project") || 0);
    setSent(null);
    send.mutate(
      { files, ...(category ? { category } : {}), ...(project ? { projectId: project } : {}) },
      { onSuccess: () => formElement.reset() },
    );
  }
  const percent = sent && sent.total ? Math.round((sent.sent / sent.total) * 100) : 0;
  return (
    <section className="card stack" aria-labelledby="upload-heading">
      <h2 id="upload-heading">Upload files</h2>
      <form className="stack" onSubmit={submit} aria-label="Upload files">
        <label>
          Files (Markdown, text, CSV, HTML, PDF; up to 50)
          <input name="files" type="file" multiple required accept=".md,.markdown,.txt,.text,.csv,.html,.htm,.pdf" />
        </label>
        <div className="row">
          <label>
            Category
            <input name="category" maxLength={100} placeholder="general" />
          </label>
          <ProjectSelect name="project" label="Project" empty="None (global)" />
        </div>
        <div className="row">
          <button type="submit" className="primary" disabled={send.isPending}>
            {send.isPending ? "Uploading…" : "Upload"}
          </button>
          {send.isPending || (sent && !send.isSuccess) ? (
            <label className="inline">
              Sent
              <progress max={100} value={percent} aria-label="Upload progress">
                {percent}%
              </progress>
              {percent}%
            </label>
          ) : null}
        </div>
      </form>
      {send.error ? <ProblemView error={send.error} /> : null}
      {send.data ? (
        <p className="ok" role="status">
          Stored {send.data.map((document) => document.title).join(", ")}: indexing below.
        </p>
      ) : null}
    </section>
  );
}

function Status({ document, live }: { document: Document; live: Progress | undefined }) {
  // An event is newer than the list, unless the list already shows the end.
  const now = live && (live.status !== "pending" || document.status === "pending") ? live : document;
  if (now.status === "failed") {
    return (
      <span className="bad">
        failed{now.error ? `: ${now.error}` : ""}
      </span>
    );
  }
  if (now.status === "ready") return <span className="ok">ready</span>;
  const total = now.chunks_total;
  return (
    <span className="row">
      <span className="warn">indexing</span>
      {total ? <progress max={total} value={now.chunks_done} aria-label={`Indexing ${document.title}`} /> : null}
      <span className="muted">{indexing(now)}</span>
    </span>
  );
}

function Documents({ progress }: { progress: Record<number, Progress> }) {
  const [status, setStatus] = useState("");
  const [project, setProject] = useState("");
  const [offset, setOffset] = useState(0);
  const projects = useProjects();
  const documents = useQuery({
    queryKey: ["knowledge", "list", status, project, offset],
    queryFn: () =>
      must(
        api.GET("/knowledge", {
          params: {
            query: {
              limit: PAGE,
              offset,
              ...(status ? { status: status as Document["status"] } : {}),
              ...(project ? { project_id: Number(project) } : {}),
            },
          },
        }),
      ),
  });
  return (
    <section className="stack" aria-labelledby="documents-heading">
      <h2 id="documents-heading">Documents</h2>
      <div className="row">
        <label>
          Status
          <select
            value={status}
            onChange={(event) => {
              setStatus(event.target.value);
              setOffset(0);
            }}
          >
            <option value="">Any</option>
            <option value="pending">Indexing</option>
            <option value="ready">Ready</option>
            <option value="failed">Failed</option>
          </select>
        </label>
        <label>
          Project
          <select
            value={project}
            onChange={(event) => {
              setProject(event.target.value);
              setOffset(0);
            }}
          >
            <option value="">Any</option>
            {(projects.data ?? []).map((item) => (
              <option key={item.id} value={item.id}>
                {item.name}
              </option>
            ))}
          </select>
        </label>
      </div>
      {documents.isPending ? <p aria-busy="true">Loading…</p> : null}
      {documents.error ? <ProblemView error={documents.error} /> : null}
      {documents.data && !documents.data.length ? <p className="muted">No document{status || project ? " matches" : " yet: upload files above"}.</p> : null}
      {documents.data?.length ? (
        <table>
          <thead>
            <tr>
              <th scope="col">Title</th>
              <th scope="col">Category</th>
              <th scope="col">Scope</th>
              <th scope="col">Status</th>
              <th scope="col">Chunks</th>
              <th scope="col">Added</th>
            </tr>
          </thead>
          <tbody>
            {documents.data.map((document) => (
              <tr key={document.id}>
                <td>
                  <Link to={`/knowledge/${document.id}`}>{document.title}</Link>
                </td>
                <td>{document.category}</td>
                <td>
                  {document.scope}
                  {document.scope_id ? ` ${document.scope_id}` : ""}
                </td>
                <td>
                  <Status document={document} live={progress[document.id]} />
                </td>
                <td>{document.chunk_count}</td>
                <td>{when(document.created_at)}</td>
              </tr>
            ))}
          </tbody>
        </table>
      ) : null}
      <div className="row">
        <button type="button" disabled={offset === 0} onClick={() => setOffset(Math.max(0, offset - PAGE))}>
          Previous
        </button>
        <button type="button" disabled={(documents.data?.length ?? 0) < PAGE} onClick={() => setOffset(offset + PAGE)}>
          Next
        </button>
      </div>
    </section>
  );
}

export default function KnowledgePage() {
  const client = useQueryClient();
  const [progress, setProgress] = useState<Record<number, Progress>>({});
  useLive({
    patterns: ["knowledge.document.*"],
    onEvent: (event) => {
      const data = event.data;
      const id = Number(data.document_id);
      if (!id) return;
      const status: Document["status"] = event.type.endsWith(".ready") ? "ready" : event.type.endsWith(".failed") ? "failed" : "pending";
      setProgress((before) => ({
        ...before,
        [id]: {
          status,
          chunks_done: Number(data.chunks_done ?? before[id]?.chunks_done ?? 0),
          chunks_total: data.chunks_total === undefined || data.chunks_total === null ? (before[id]?.chunks_total ?? null) : Number(data.chunks_total),
          error: typeof data.error === "string" ? data.error : null,
        },
      }));
      if (status !== "pending") void client.invalidateQueries({ queryKey: ["knowledge"] });
    },
  });
  return (
    <section className="stack">
      <h1>Knowledge</h1>
      <Search />
      <Upload />
      <Documents progress={progress} />
    </section>
  );
}
