import { useMutation, useQuery, useQueryClient } from "@tanstack/react-query";
import { useState, type FormEvent } from "react";

import { ProblemView } from "../../components/ProblemView";
import { baseName, gitMark, joinPath, parentOf } from "./paths";
import { createEntry, deleteEntry, keys, moveEntry, readFolder, type Entry } from "./workspace";

export interface Selected {
  path: string;
  kind: Entry["kind"];
}

interface TreeProps {
  projectId: number;
  openPath: string | null;
  selected: Selected | null;
  onSelect: (entry: Selected) => void;
  onOpen: (path: string) => void;
  /** Paths moved or deleted: the editor lets go of a file it had open there. */
  onGone: (path: string, movedTo: string | null) => void;
}

function GitMark({ status }: { status: string | null }) {
  const mark = gitMark(status);
  if (!mark) return null;
  return (
    <span className={`git-mark git-${mark.word}`} title={mark.word}>
      <span aria-hidden="true">{mark.letter}</span>
      <span className="sr-only">({mark.word})</span>
    </span>
  );
}

interface FolderProps extends Omit<TreeProps, "onGone"> {
  path: string;
  expanded: Set<string>;
  toggle: (path: string) => void;
}

function FolderList(props: FolderProps) {
  const { projectId, path, expanded, toggle, selected, onSelect, onOpen, openPath } = props;
  const folder = useQuery({ queryKey: keys.tree(projectId, path), queryFn: () => readFolder(projectId, path) });
  if (folder.isPending) return <p className="muted tree-note">Loading…</p>;
  if (folder.error) return <ProblemView error={folder.error} />;
  const { entries, truncated, git_problem: gitProblem } = folder.data;
  return (
    <>
      {path === "." && gitProblem ? <p className="muted tree-note">No git status: {gitProblem}</p> : null}
      {!entries.length ? <p className="muted tree-note">{path === "." ? "No file yet." : "Empty folder."}</p> : null}
      <ul className="tree">
        {entries.map((entry) => {
          const isFolder = entry.kind === "directory";
          const isOpen = expanded.has(entry.path);
          const isSelected = selected?.path === entry.path;
          return (
            <li key={entry.path}>
              <div className={`tree-row${isSelected ? " selected" : ""}`}>
                <button
                  type="button"
                  className="tree-entry"
                  aria-expanded={isFolder ? isOpen : undefined}
                  aria-current={!isFolder && openPath === entry.path ? "true" : undefined}
                  aria-label={isFolder ? `${entry.name} (folder)` : entry.name}
                  onClick={() => {
                    onSelect({ path: entry.path, kind: entry.kind });
                    if (isFolder) toggle(entry.path);
                    else if (entry.kind === "file" || entry.kind === "symlink") onOpen(entry.path);
                  }}
                >
                  <span aria-hidden="true" className="tree-icon">
                    {isFolder ? (isOpen ? "▾" : "▸") : "·"}
                  </span>
                  {entry.name}
                </button>
                <GitMark status={entry.git_status} />
              </div>
              {isFolder && isOpen ? <FolderList {...props} path={entry.path} /> : null}
            </li>
          );
        })}
      </ul>
      {truncated ? <p className="muted tree-note">More entries than are listed.</p> : null}
    </>
  );
}

type Action = { kind: "file" | "directory" | "rename" } | null;

/** The project's files, one folder listed at a time as it is opened, with git marks. */
export function FileTree(props: TreeProps) {
  const { projectId, selected, onGone } = props;
  const client = useQueryClient();
  const [expanded, setExpanded] = useState<Set<string>>(() => new Set());
  const [action, setAction] = useState<Action>(null);
  const refresh = () =>
    Promise.all([client.invalidateQueries({ queryKey: keys.tree(projectId) }), client.invalidateQueries({ queryKey: keys.git(projectId) })]);

  const target = !selected ? "." : selected.kind === "directory" ? selected.path : parentOf(selected.path);
  const change = useMutation({
    mutationFn: async (input: { action: NonNullable<Action>; value: string }) => {
      if (input.action.kind === "rename") {
        if (!selected) throw new Error("choose an entry first");
        await moveEntry(projectId, selected.path, input.value);
        return { path: input.value, kind: selected.kind, from: selected.path };
      }
      const path = joinPath(target, input.value);
      await createEntry(projectId, path, input.action.kind);
      return { path, kind: input.action.kind, from: null };
    },
    onSuccess: async (done) => {
      setAction(null);
      if (done.kind === "directory") setExpanded((before) => new Set(before).add(done.path));
      if (target !== ".") setExpanded((before) => new Set(before).add(target));
      props.onSelect({ path: done.path, kind: done.kind });
      if (done.from) onGone(done.from, done.path);
      else if (done.kind === "file") props.onOpen(done.path);
      await refresh();
    },
  });
  const remove = useMutation({
    mutationFn: (entry: Selected) => deleteEntry(projectId, entry.path, entry.kind === "directory"),
    onSuccess: async (_, entry) => {
      onGone(entry.path, null);
      await refresh();
    },
  });

  function submit(event: FormEvent<HTMLFormElement>) {
    event.preventDefault();
    if (!action) return;
    const value = String(new FormData(event.currentTarget).get("name") ?? "").trim();
    if (value) change.mutate({ action, value });
  }

  const toggle = (path: string) =>
    setExpanded((before) => {
      const next = new Set(before);
      if (next.has(path)) next.delete(path);
      else next.add(path);
      return next;
    });

  return (
    <nav className="files" aria-label="Files">
      <div className="row tree-tools">
        <button type="button" onClick={() => setAction({ kind: "file" })}>
          New file
        </button>
        <button type="button" onClick={() => setAction({ kind: "directory" })}>
          New folder
        </button>
        <button type="button" disabled={!selected} onClick={() => setAction({ kind: "rename" })}>
          Rename
        </button>
        <button
          type="button"
          disabled={!selected || remove.isPending}
          onClick={() => {
            if (!selected) return;
            const what = selected.kind === "directory" ? `the folder ${selected.path} and everything in it` : selected.path;
            if (confirm(`Delete ${what}?`)) remove.mutate(selected);
          }}
        >
          Delete
        </button>
      </div>
      {action ? (
        <form className="stack tree-form" onSubmit={submit} aria-label={action.kind === "rename" ? "Rename" : action.kind === "file" ? "New file" : "New folder"}>
          <label>
            {action.kind === "rename" ? `New path of ${selected ? baseName(selected.path) : ""}` : `Name (in ${target === "." ? "the top folder" : target})`}
            <input name="name" required autoFocus defaultValue={action.kind === "rename" ? selected?.path : ""} />
          </label>
          <div className="row">
            <button type="submit" className="primary" disabled={change.isPending}>
              {action.kind === "rename" ? "Rename" : "Create"}
            </button>
            <button type="button" onClick={() => setAction(null)}>
              Cancel
            </button>
          </div>
        </form>
      ) : null}
      {change.error ? <ProblemView error={change.error} /> : null}
      {remove.error ? <ProblemView error={remove.error} /> : null}
      <FolderList {...props} path="." expanded={expanded} toggle={toggle} />
    </nav>
  );
}
