import { afterEach, describe, expect, it, vi } from "vitest";

import { postStream, type StreamEvent } from "./stream";

function answer(chunks: string[]): Response {
  const body = new ReadableStream<Uint8Array>({
    start(controller) {
      for (const chunk of chunks) controller.enqueue(new TextEncoder().encode(chunk));
      controller.close();
    },
  });
  return new Response(body, { status: 200, headers: { "Content-Type": "text/event-stream" } });
}

async function read(chunks: string[]): Promise<StreamEvent[]> {
  vi.stubGlobal("fetch", vi.fn(async () => answer(chunks)));
  const events: StreamEvent[] = [];
  for await (const event of postStream("/agents/1/chat/stream", { message: "hi" })) events.push(event);
  return events;
}

afterEach(() => vi.unstubAllGlobals());

describe("postStream", () => {
  it("reads events split anywhere across chunks", async () => {
    const events = await read(['event: delta\ndata: {"te', 'xt": "Hel"}\n', '\nevent: done\ndata: {"reply": "Hello"}\n\n']);
    expect(events).toEqual([
      { event: "delta", data: { text: "Hel" } },
      { event: "done", data: { reply: "Hello" } },
    ]);
  });

  it("takes CRLF line ends and skips comments", async () => {
    const events = await read([': keep-alive\r\n\r\nevent: delta\r\ndata: {"text": "a"}\r\n\r\n']);
    expect(events).toEqual([{ event: "delta", data: { text: "a" } }]);
  });
});
