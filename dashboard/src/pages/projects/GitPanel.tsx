import { useMutation, useQuery, useQueryClient } from "@tanstack/react-query";
import { useState, type FormEvent } from "react";

import { api, must } from "../../api/client";
import { ProblemView } from "../../components/ProblemView";
import { when } from "../../format";
import { gitStatus, keys, type GitFile } from "./workspace";

interface Shown {
  path: string;
  staged: boolean;
}

function DiffView({ projectId, shown }: { projectId: number; shown: Shown }) {
  const diff = useQuery({
    queryKey: [...keys.git(projectId), "diff", shown.path, shown.staged],
    queryFn: () =>
      must(
        api.GET("/projects/{project_id}/git/diff", {
          params: { path: { project_id: projectId }, query: { path: shown.path.replace(/\/$/, ""), staged: shown.staged } },
        }),
      ),
  });
  if (diff.isPending) return <p aria-busy="true">Loading the diff…</p>;
  if (diff.error) return <ProblemView error={diff.error} />;
  if (!diff.data.diff) {
    return <p className="muted">No difference to show{shown.staged ? " in what is staged" : " (a new file is shown once it is staged)"}.</p>;
  }
  return (
    <pre className="diff" aria-label={`Diff of ${shown.path}${shown.staged ? " (staged)" : ""}`} tabIndex={0}>
      {diff.data.diff.split("\n").map((line, index) => (
        <span
          key={index}
          className={line.startsWith("+") && !line.startsWith("+++") ? "add" : line.startsWith("-") && !line.startsWith("---") ? "del" : line.startsWith("@@") ? "hunk" : undefined}
        >
          {line}
          {"\n"}
        </span>
      ))}
      {diff.data.truncated ? <span className="muted">… cut at 256 KiB</span> : null}
    </pre>
  );
}

function FileList({
  title,
  files,
  staged,
  shown,
  onShow,
  onMove,
  busy,
}: {
  title: string;
  files: GitFile[];
  staged: boolean;
  shown: Shown | null;
  onShow: (shown: Shown) => void;
  onMove: (path: string) => void;
  busy: boolean;
}) {
  return (
    <div>
      <h3>
        {title} <span className="muted">({files.length})</span>
      </h3>
      {!files.length ? <p className="muted">Nothing.</p> : null}
      <ul className="git-files">
        {files.map((file) => {
          const state = staged ? file.index : file.worktree;
          const current = shown?.path === file.path && shown.staged === staged;
          return (
            <li key={file.path} className="row">
              <button type="button" className="linkish" aria-pressed={current} onClick={() => onShow({ path: file.path, staged })}>
                {file.original_path ? `${file.original_path} → ` : ""}
                {file.path}
              </button>
              <span className="badge">{state}</span>
              <button type="button" disabled={busy} aria-label={`${staged ? "Unstage" : "Stage"} ${file.path}`} onClick={() => onMove(file.path)}>
                {staged ? "Unstage" : "Stage"}
              </button>
            </li>
          );
        })}
      </ul>
    </div>
  );
}

function Commits({ projectId }: { projectId: number }) {
  const log = useQuery({
    queryKey: [...keys.git(projectId), "log"],
    queryFn: () => must(api.GET("/projects/{project_id}/git/log", { params: { path: { project_id: projectId }, query: { max_count: 10 } } })),
  });
  if (log.error) return <ProblemView error={log.error} />;
  if (!log.data?.length) return null;
  return (
    <div>
      <h3>Recent commits</h3>
      <ul className="feed">
        {log.data.map((commit) => (
          <li key={commit.sha}>
            <code>{commit.sha.slice(0, 8)}</code> {commit.subject} <span className="muted">— {commit.author_name}, {when(commit.committed_at)}</span>
          </li>
        ))}
      </ul>
    </div>
  );
}

/** git for the project: status, diffs, stage and unstage, commit. */
export function GitPanel({ projectId, canWrite }: { projectId: number; canWrite: boolean }) {
  const client = useQueryClient();
  const status = useQuery({ queryKey: [...keys.git(projectId), "status"], queryFn: () => gitStatus(projectId) });
  const [shown, setShown] = useState<Shown | null>(null);
  const refresh = () =>
    Promise.all([client.invalidateQueries({ queryKey: keys.git(projectId) }), client.invalidateQueries({ queryKey: keys.tree(projectId) })]);
  const path = { project_id: projectId };
  const init = useMutation({ mutationFn: () => must(api.POST("/projects/{project_id}/git/init", { params: { path } })), onSuccess: refresh });
  const move = useMutation({
    mutationFn: ({ paths, stage }: { paths: string[]; stage: boolean }) =>
      must(api.POST(stage ? "/projects/{project_id}/git/stage" : "/projects/{project_id}/git/unstage", { params: { path }, body: { paths } })),
    onSuccess: refresh,
  });
  const commit = useMutation({
    mutationFn: (message: string) => must(api.POST("/projects/{project_id}/git/commit", { params: { path }, body: { message } })),
    onSuccess: refresh,
  });

  function submit(event: FormEvent<HTMLFormElement>) {
    event.preventDefault();
    const form = event.currentTarget;
    const message = String(new FormData(form).get("message") ?? "").trim();
    if (!message) return;
    commit.mutate(message, { onSuccess: () => form.reset() });
  }

  if (status.isPending) return <p aria-busy="true">Loading git status…</p>;
  if (status.error) return <ProblemView error={status.error} />;
  const data = status.data;
  if (!data.repository) {
    return (
      <div className="stack">
        <p>This project's folder is not a git repository.</p>
        {init.error ? <ProblemView error={init.error} /> : null}
        {canWrite ? (
          <div>
            <button type="button" className="primary" disabled={init.isPending} onClick={() => init.mutate()}>
              Initialize a repository
            </button>
          </div>
        ) : null}
      </div>
    );
  }
  const staged = data.files.filter((file) => file.index !== "unmodified" && file.index !== "untracked");
  const unstaged = data.files.filter((file) => file.worktree !== "unmodified");
  const error = move.error ?? commit.error;
  return (
    <div className="stack">
      <p>
        On <strong>{data.branch ?? (data.detached ? "a detached HEAD" : "no branch")}</strong>
        {data.head ? (
          <>
            {" "}
            at <code>{data.head.slice(0, 8)}</code>
          </>
        ) : (
          " — no commit yet"
        )}
        {data.upstream ? ` · ${data.upstream}: ${data.ahead ?? 0} ahead, ${data.behind ?? 0} behind` : null}
      </p>
      {data.truncated ? <p className="muted">The status is longer than the server keeps.</p> : null}
      {error ? <ProblemView error={error} /> : null}
      <div className="git-columns">
        <FileList
          title="Changes"
          files={unstaged}
          staged={false}
          shown={shown}
          onShow={setShown}
          onMove={(file) => move.mutate({ paths: [file], stage: true })}
          busy={!canWrite || move.isPending}
        />
        <FileList
          title="Staged"
          files={staged}
          staged
          shown={shown}
          onShow={setShown}
          onMove={(file) => move.mutate({ paths: [file], stage: false })}
          busy={!canWrite || move.isPending}
        />
      </div>
      {canWrite && unstaged.length ? (
        <div>
          <button type="button" disabled={move.isPending} onClick={() => move.mutate({ paths: ["."], stage: true })}>
            Stage all
          </button>
        </div>
      ) : null}
      {shown ? <DiffView projectId={projectId} shown={shown} /> : null}
      {canWrite ? (
        <form className="stack" onSubmit={submit} aria-label="Commit">
          <label>
            Commit message
            <textarea name="message" required rows={2} />
          </label>
          {commit.data ? (
            <p className="ok" role="status">
              Committed <code>{commit.data.sha.slice(0, 8)}</code>: {commit.data.subject}
            </p>
          ) : null}
          <div>
            <button type="submit" className="primary" disabled={commit.isPending || !staged.length}>
              Commit staged changes
            </button>
          </div>
        </form>
      ) : null}
      <Commits projectId={projectId} />
    </div>
  );
}
