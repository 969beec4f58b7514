// Files to `POST /knowledge/upload` (multipart) with the upload's progress, which `fetch` does
// not report: an XMLHttpRequest, with the token, and once more after a refresh on a 401.

import { authHeaders, refreshTokens } from "../../api/client";
import { ProblemError, toProblem } from "../../api/problem";
import type { components } from "../../api/schema";

export type Document = components["schemas"]["DocumentOut"];

export interface UploadInput {
  files: File[];
  category?: string;
  projectId?: number;
}

function send(input: UploadInput, onProgress: (sent: number, total: number) => void): Promise<{ status: number; body: unknown }> {
  const form = new FormData();
  for (const file of input.files) form.append("files", file, file.name);
  if (input.category) form.append("category", input.category);
  if (input.projectId) form.append("project_id", String(input.projectId));
  return new Promise((resolve, reject) => {
    const request = new XMLHttpRequest();
    request.open("POST", "/knowledge/upload");
    for (const [name, value] of Object.entries(authHeaders())) request.setRequestHeader(name, value);
    request.upload.onprogress = (event) => {
      if (event.lengthComputable) onProgress(event.loaded, event.total);
    };
    request.onload = () => {
      let body: unknown = request.responseText;
      try {
        body = JSON.parse(request.responseText);
      } catch {
        // not JSON: shown as it came
      }
      resolve({ status: request.status, body });
    };
    request.onerror = () => reject(new Error("the upload did not reach the server"));
    request.send(form);
  });
}

/** The documents the server stored (each `pending` until its job indexed it). */
export async function upload(input: UploadInput, onProgress: (sent: number, total: number) => void): Promise<Document[]> {
  let answer = await send(input, onProgress);
  if (answer.status === 401 && (await refreshTokens())) answer = await send(input, onProgress);
  if (answer.status < 200 || answer.status >= 300) throw new ProblemError(toProblem(answer.status, answer.body));
  return answer.body as Document[];
}

/** "12 of 40 chunks", "counting…" or "" for a document's indexing. */
export function indexing(document: Pick<Document, "status" | "chunks_done" | "chunks_total">): string {
  if (document.status !== "pending") return "";
  if (document.chunks_total === null || document.chunks_total === undefined) return "waiting for a worker…";
  return `${document.chunks_done} of ${document.chunks_total} chunks`;
}
