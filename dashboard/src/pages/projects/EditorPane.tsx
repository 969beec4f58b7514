import { useQueryClient } from "@tanstack/react-query";
import { useEffect, useImperativeHandle, useRef, useState, type Ref } from "react";

import { ProblemError } from "../../api/problem";
import { ProblemView } from "../../components/ProblemView";
import { CodeEditor, type EditorHandle } from "./CodeEditor";
import { changesOf, touches } from "./paths";
import { keys, readFile, StaleWrite, writeFile } from "./workspace";

interface OpenFile {
  path: string;
  version: string;
}

/** What the page asks of the editor pane. */
export interface PaneHandle {
  open: (path: string) => void;
  /** A `project.files_changed` event's data. */
  changedOnDisk: (data: Record<string, unknown>) => void;
  /** A file moved (to a new path) or deleted (null). */
  gone: (path: string, movedTo: string | null) => void;
  /** The open file and the selection in it, for the agent's context. */
  context: () => { path: string | null; selection: { text: string; lines: [number, number] } | null };
}

type Banner =
  | { kind: "conflict"; currentVersion: string | null }
  | { kind: "changed"; deleted: boolean }
  | null;

function isMissing(error: unknown): boolean {
  return error instanceof ProblemError && error.problem.status === 404;
}

/** The open file: Monaco, saving over the version read, conflicts and changes on disk. */
export function EditorPane({ ref, projectId, onOpened }: { ref: Ref<PaneHandle>; projectId: number; onOpened: (path: string | null) => void }) {
  const client = useQueryClient();
  const editor = useRef<EditorHandle>(null);
  const [file, setFile] = useState<OpenFile | null>(null);
  const fileRef = useRef<OpenFile | null>(null);
  fileRef.current = file;
  const [binary, setBinary] = useState<string | null>(null);
  const [dirty, setDirty] = useState(false);
  const dirtyRef = useRef(false);
  dirtyRef.current = dirty;
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<unknown>(null);
  const [banner, setBanner] = useState<Banner>(null);
  const [note, setNote] = useState<string | null>(null);

  function show(path: string, text: string, version: string) {
    editor.current?.load(path, text);
    setFile({ path, version });
    fileRef.current = { path, version };
    setBinary(null);
    setBanner(null);
    onOpened(path);
  }

  async function open(path: string) {
    if (fileRef.current?.path === path) {
      editor.current?.focus();
      return;
    }
    if (dirtyRef.current && fileRef.current?.path !== path && !confirm(`Discard your unsaved changes to ${fileRef.current?.path}?`)) return;
    setError(null);
    setNote(null);
    try {
      const read = await readFile(projectId, path);
      if (read.binary || read.text === null) {
        setFile(null);
        setBinary(read.path);
        onOpened(read.path);
        return;
      }
      show(read.path, read.text, read.version);
    } catch (caught) {
      setError(caught);
    }
  }

  async function reload() {
    const current = fileRef.current;
    if (!current) return;
    setError(null);
    try {
      const read = await readFile(projectId, current.path);
      show(read.path, read.text ?? "", read.version);
      setNote("Reloaded from disk.");
    } catch (caught) {
      setError(caught);
    }
  }

  async function save(version?: string) {
    const current = fileRef.current;
    if (!current || busy) return;
    setBusy(true);
    setError(null);
    setNote(null);
    try {
      const written = await writeFile(projectId, current.path, editor.current?.value() ?? "", version ?? current.version);
      setFile({ path: current.path, version: written });
      fileRef.current = { path: current.path, version: written };
      editor.current?.markSaved();
      setBanner(null);
      setNote("Saved.");
      void client.invalidateQueries({ queryKey: keys.git(projectId) });
    } catch (caught) {
      if (caught instanceof StaleWrite) setBanner({ kind: "conflict", currentVersion: caught.currentVersion });
      else setError(caught);
    } finally {
      setBusy(false);
    }
  }

  async function changedOnDisk(data: Record<string, unknown>) {
    const current = fileRef.current;
    if (!current || !touches(data, current.path)) return;
    if (changesOf(data).some((change) => change.path === current.path && change.change === "deleted")) {
      markDeleted();
      return;
    }
    try {
      const read = await readFile(projectId, current.path);
      if (read.version === fileRef.current?.version) return; // our own save, or no change
      if (!dirtyRef.current && read.text !== null) {
        show(read.path, read.text, read.version);
        setNote("The file changed on disk: reloaded.");
      } else {
        setBanner((before) => (before?.kind === "conflict" ? before : { kind: "changed", deleted: false }));
      }
    } catch (caught) {
      if (isMissing(caught)) markDeleted();
    }
  }

  function gone(path: string, movedTo: string | null) {
    const current = fileRef.current;
    if (!current || (current.path !== path && !current.path.startsWith(`${path}/`))) return;
    if (movedTo) {
      const moved = movedTo + current.path.slice(path.length);
      setFile({ ...current, path: moved });
      fileRef.current = { ...current, path: moved };
      onOpened(moved);
    } else {
      markDeleted();
    }
  }

  /** The open file is no longer on disk: the next save creates it. */
  function markDeleted() {
    const current = fileRef.current;
    if (!current) return;
    setFile({ ...current, version: "" });
    fileRef.current = { ...current, version: "" };
    setBanner({ kind: "changed", deleted: true });
  }

  useImperativeHandle(ref, () => ({
    open: (path) => void open(path),
    changedOnDisk: (data) => void changedOnDisk(data),
    gone,
    context: () => ({ path: fileRef.current?.path ?? null, selection: editor.current?.selection() ?? null }),
  }));

  // Leaving the page with unsaved changes asks first.
  useEffect(() => {
    if (!dirty) return;
    const warn = (event: BeforeUnloadEvent) => event.preventDefault();
    addEventListener("beforeunload", warn);
    return () => removeEventListener("beforeunload", warn);
  }, [dirty]);

  return (
    <section className="editor-pane" aria-labelledby="editor-heading">
      <div className="row editor-bar">
        <h2 id="editor-heading" className="editor-title">
          {file ? file.path : binary ?? "No file open"}
          {dirty ? <span className="badge warn">unsaved</span> : null}
        </h2>
        <button type="button" className="primary" disabled={!file || busy || (!dirty && file.version !== "")} onClick={() => void save()}>
          {busy ? "Saving…" : "Save"}
        </button>
        <span className="muted" role="status">
          {note}
        </span>
      </div>
      {banner?.kind === "conflict" ? (
        <div className="problem" role="alert">
          <strong>Conflict: {file?.path} changed on disk since you opened it. Your version was not saved.</strong>
          <p>Reload the file from disk (your edits are lost), or overwrite it with yours.</p>
          <div className="row">
            <button type="button" onClick={() => void reload()}>
              Reload from disk
            </button>
            <button type="button" onClick={() => void save(banner.currentVersion ?? "")}>
              Overwrite with mine
            </button>
          </div>
        </div>
      ) : null}
      {banner?.kind === "changed" ? (
        <div className="problem warn-box" role="alert">
          <strong>{banner.deleted ? `${file?.path} was deleted or moved on disk.` : `${file?.path} changed on disk while you were editing it.`}</strong>
          <p>{banner.deleted ? "Saving creates it again." : "Reload it (your edits are lost), or keep editing: saving then asks what to do."}</p>
          {banner.deleted ? null : (
            <div className="row">
              <button type="button" onClick={() => void reload()}>
                Reload from disk
              </button>
            </div>
          )}
        </div>
      ) : null}
      {error ? <ProblemView error={error} /> : null}
      {binary ? <p className="muted">{binary} is a binary file: it cannot be edited here.</p> : null}
      <div className="editor-frame" hidden={!file}>
        <CodeEditor ref={editor} label={file ? `Editor: ${file.path}` : "Editor"} onDirty={setDirty} onSave={() => void save()} />
      </div>
      {!file && !binary ? <p className="muted">Choose a file in the tree, or create one.</p> : null}
    </section>
  );
}
