// Server-sent events from a POST (the chat stream): `fetch` and a line parser, since
// EventSource only does GET and cannot send the token.

import { authHeaders, refreshTokens } from "./client";
import { ProblemError, toProblem } from "./problem";

export interface StreamEvent {
  event: string;
  data: unknown;
}

/** POST `body` to `path` and yield each server-sent event until the server ends the stream. */
export async function* postStream(path: string, body: unknown, signal?: AbortSignal): AsyncGenerator<StreamEvent> {
  const send = () =>
    fetch(path, {
      method: "POST",
      headers: { "Content-Type": "application/json", Accept: "text/event-stream", ...authHeaders() },
      body: JSON.stringify(body),
      signal,
    });
  let response = await send();
  if (response.status === 401 && (await refreshTokens())) response = await send();
  if (!response.ok || !response.body) {
    const text = await response.text();
    let parsed: unknown = text;
    try {
      parsed = JSON.parse(text);
    } catch {
      // not JSON: shown as it came
    }
    throw new ProblemError(toProblem(response.status, parsed));
  }
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += value.replace(/\r\n?/g, "\n"); // SSE allows CRLF and CR line ends
    let end: number;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      const block = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      let event = "message";
      const data: string[] = [];
      for (const line of block.split("\n")) {
        if (line.startsWith("event:")) event = line.slice(6).trim();
        else if (line.startsWith("data:")) data.push(line.slice(5).trimStart());
      }
      if (!data.length) continue; // a comment or a keep-alive: no event
      yield { event, data: JSON.parse(data.join("\n")) };
    }
  }
}
