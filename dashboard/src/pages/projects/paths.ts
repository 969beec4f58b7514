// Paths inside a project (relative, `/` between folders, "." for its directory) and what a
// `project.files_changed` event means for the page.

/** The folder a path is in ("." for the top). */
export function parentOf(path: string): string {
  const cut = path.replace(/\/+$/, "").lastIndexOf("/");
  return cut < 0 ? "." : path.slice(0, cut);
}

/** The last part of a path. */
export function baseName(path: string): string {
  const clean = path.replace(/\/+$/, "");
  return clean.slice(clean.lastIndexOf("/") + 1);
}

/** `name` inside `folder` ("." is the top). */
export function joinPath(folder: string, name: string): string {
  const clean = name.replace(/^\/+/, "");
  return folder === "." || folder === "" ? clean : `${folder}/${clean}`;
}

export interface FileChange {
  path: string;
  change: string;
}

/** The changes a `project.files_changed` event lists (none when its data is not that shape). */
export function changesOf(data: Record<string, unknown>): FileChange[] {
  const changes = data.changes;
  if (!Array.isArray(changes)) return [];
  return changes.flatMap((item: unknown) => {
    const entry = item as Record<string, unknown>;
    return typeof entry.path === "string" && typeof entry.change === "string" ? [{ path: entry.path, change: entry.change }] : [];
  });
}

/** Whether an event with these changes touches the file at `path` (a truncated list may hide it). */
export function touches(data: Record<string, unknown>, path: string): boolean {
  if (data.truncated === true) return true;
  return changesOf(data).some((change) => change.path === path);
}

/** The folders whose listings these changes alter: each path's folder, and an added folder itself. */
export function foldersToRefresh(changes: FileChange[]): string[] {
  const folders = new Set<string>();
  for (const change of changes) folders.add(parentOf(change.path));
  return [...folders];
}

/** A one-letter mark for an entry's git status, and its word for screen readers. */
export function gitMark(status: string | null | undefined): { letter: string; word: string } | null {
  switch (status) {
    case "modified":
      return { letter: "M", word: "modified" };
    case "added":
      return { letter: "A", word: "added" };
    case "deleted":
      return { letter: "D", word: "deleted" };
    case "renamed":
      return { letter: "R", word: "renamed" };
    case "copied":
      return { letter: "C", word: "copied" };
    case "untracked":
      return { letter: "U", word: "untracked" };
    case "ignored":
      return { letter: "I", word: "ignored" };
    case "conflicted":
      return { letter: "!", word: "conflicted" };
    default:
      return null;
  }
}

/** The message sent to an agent: what the person wrote, then where they are in the editor. */
export function withContext(message: string, file: string | null, selection: string | null, lines: [number, number] | null): string {
  if (!file) return message;
  const parts = [message, "", `(Context: I am in the project's file \`${file}\`.`];
  if (selection && lines) {
    parts[2] += ` I selected lines ${lines[0]}–${lines[1]}:`;
    parts.push("```", selection, "```");
    parts.push(")");
  } else {
    parts[2] += ")";
  }
  return parts.join("\n");
}
