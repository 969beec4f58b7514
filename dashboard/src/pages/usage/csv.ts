// The usage report as CSV: fetched with the access token (a plain link would carry none in
// multi-user mode), then saved through a blob: URL and an `<a download>`.

import { authHeaders, refreshTokens } from "../../api/client";
import { ProblemError, toProblem } from "../../api/problem";

async function get(url: string): Promise<Response> {
  return fetch(url, { headers: { ...authHeaders(), Accept: "text/csv" } });
}

/** The CSV of `GET /usage` with `query`, or a thrown `ProblemError`. */
export async function fetchUsageCsv(query: Record<string, string>): Promise<Blob> {
  const url = `/usage?${new URLSearchParams({ ...query, format: "csv" }).toString()}`;
  let response = await get(url);
  if (response.status === 401 && (await refreshTokens())) response = await get(url);
  if (!response.ok) {
    let body: unknown = null;
    try {
      body = await response.json();
    } catch {
      body = null;
    }
    throw new ProblemError(toProblem(response.status, body));
  }
  return response.blob();
}

/** Hand `blob` to the browser as a download named `filename`. */
export function saveBlob(blob: Blob, filename: string): void {
  const href = URL.createObjectURL(blob);
  const link = document.createElement("a");
  link.href = href;
  link.download = filename;
  link.hidden = true;
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(href), 10_000);
}
