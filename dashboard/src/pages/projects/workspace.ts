// The project's files and git through the typed client: one place for the query keys, so a
// live change invalidates exactly what it alters.

import { api, must } from "../../api/client";
import { ProblemError, toProblem } from "../../api/problem";
import type { components } from "../../api/schema";

export type Project = components["schemas"]["ProjectDetailOut"];
export type Entry = components["schemas"]["EntryOut"];
export type Folder = components["schemas"]["FolderOut"];
export type FileRead = components["schemas"]["FileOut"];
export type GitStatus = components["schemas"]["GitStatusOut"];
export type GitFile = components["schemas"]["FileStatusOut"];

export const keys = {
  project: (id: number) => ["projects", id] as const,
  tree: (id: number, path?: string) => (path === undefined ? (["projects", id, "tree"] as const) : (["projects", id, "tree", path] as const)),
  git: (id: number) => ["projects", id, "git"] as const,
};

export function readFolder(projectId: number, path: string): Promise<Folder> {
  return must(api.GET("/projects/{project_id}/files/tree", { params: { path: { project_id: projectId }, query: { path } } }));
}

export function readFile(projectId: number, path: string): Promise<FileRead> {
  return must(api.GET("/projects/{project_id}/files/content", { params: { path: { project_id: projectId }, query: { path } } }));
}

/** A save refused because the file changed since it was read: the version on disk now. */
export class StaleWrite extends Error {
  constructor(readonly currentVersion: string | null) {
    super("The file changed on disk since you opened it");
  }
}

/** Write `text` over the version read (`If-Match`; "*" for any, "" for a file to create); a
 * `StaleWrite` when the file moved on. */
export async function writeFile(projectId: number, path: string, text: string, version: string): Promise<string> {
  const { data, error, response } = await api.PUT("/projects/{project_id}/files/content", {
    params: {
      path: { project_id: projectId },
      query: { path },
      header: version === "" ? {} : { "if-match": version === "*" ? "*" : `"${version}"` },
    },
    body: { text },
  });
  if (response.status === 412) {
    const details = (error as { details?: { current_version?: unknown } } | undefined)?.details;
    throw new StaleWrite(typeof details?.current_version === "string" ? details.current_version : null);
  }
  if (!response.ok) throw new ProblemError(toProblem(response.status, error));
  if (data) return data.version;
  return (response.headers.get("ETag") ?? "").replaceAll('"', "");
}

export function createEntry(projectId: number, path: string, kind: "file" | "directory") {
  return must(api.POST("/projects/{project_id}/files/entry", { params: { path: { project_id: projectId } }, body: { path, kind } }));
}

export function moveEntry(projectId: number, from: string, to: string) {
  return must(api.POST("/projects/{project_id}/files/move", { params: { path: { project_id: projectId } }, body: { from, to } }));
}

export function deleteEntry(projectId: number, path: string, recursive: boolean) {
  return must(api.DELETE("/projects/{project_id}/files/entry", { params: { path: { project_id: projectId }, query: { path, recursive } } }));
}

export function gitStatus(projectId: number): Promise<GitStatus> {
  return must(api.GET("/projects/{project_id}/git/status", { params: { path: { project_id: projectId } } }));
}
