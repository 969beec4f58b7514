import { useQuery, useQueryClient } from "@tanstack/react-query";
import { useRef, useState, type FormEvent } from "react";
import { Link, useParams } from "react-router-dom";

import { api, must } from "../../api/client";
import { useLive } from "../../api/live";
import { ProblemError, toProblem } from "../../api/problem";
import { postStream } from "../../api/stream";
import { ProblemView } from "../../components/ProblemView";
import { money, seconds } from "../../format";

interface ToolCard {
  id: string;
  name: string;
  arguments: unknown;
  result?: string;
  isError?: boolean;
  started: number;
  ms?: number;
}

interface Entry {
  role: string;
  text: string;
  tools: ToolCard[];
  meta?: string;
}

function ToolCards({ tools }: { tools: ToolCard[] }) {
  return (
    <>
      {tools.map((tool) => (
        <details key={tool.id} className="tool">
          <summary>
            <code>{tool.name}</code>{" "}
            {tool.result === undefined ? (
              <span className="muted">running…</span>
            ) : (
              <span className={tool.isError ? "bad" : "ok"}>
                {tool.isError ? "failed" : "done"}
                {tool.ms !== undefined ? ` in ${seconds(tool.ms)}` : ""}
              </span>
            )}
          </summary>
          <p className="muted">Arguments</p>
          <pre>{JSON.stringify(tool.arguments, null, 2)}</pre>
          {tool.result !== undefined ? (
            <>
              <p className="muted">Result</p>
              <pre>{tool.result}</pre>
            </>
          ) : null}
        </details>
      ))}
    </>
  );
}

function fromHistory(history: Awaited<ReturnType<typeof loadHistory>>): Entry[] {
  const entries: Entry[] = [];
  const cards = new Map<string, ToolCard>();
  for (const message of history) {
    if (message.role === "tool") {
      for (const result of message.tool_results ?? []) {
        const card = cards.get(result.call_id);
        if (card) {
          card.result = result.content;
          card.isError = Boolean(result.is_error);
        }
      }
      continue;
    }
    const tools = (message.tool_calls ?? []).map((call) => {
      const card: ToolCard = { id: call.id, name: call.name, arguments: call.arguments, started: 0 };
      cards.set(call.id, card);
      return card;
    });
    entries.push({ role: message.role, text: message.content, tools });
  }
  return entries;
}

function loadHistory(agentId: number) {
  return must(api.GET("/agents/{agent_id}/history", { params: { path: { agent_id: agentId } } }));
}

export default function AgentChat() {
  const agentId = Number(useParams().agentId);
  const client = useQueryClient();
  const agent = useQuery({
    queryKey: ["agents", agentId],
    queryFn: () => must(api.GET("/agents/{agent_id}", { params: { path: { agent_id: agentId } } })),
  });
  const history = useQuery({ queryKey: ["agents", agentId, "history"], queryFn: () => loadHistory(agentId) });
  const [live, setLive] = useState<Entry[]>([]);
  const [error, setError] = useState<unknown>(null);
  const [busy, setBusy] = useState(false);
  const [fresh, setFresh] = useState(false);
  const abort = useRef<AbortController | null>(null);
  const streaming = useRef(false);
  const streamed = useRef(new Set<string>()); // turns this page streamed to their end
  const [waiting, setWaiting] = useState<number | null>(null);

  /** The stored conversation again, in place of what this page streamed. */
  async function reload() {
    await client.invalidateQueries({ queryKey: ["agents", agentId, "history"] });
    setLive([]);
  }

  // A turn that waited for an approval goes on elsewhere (the approvals duty, another tab):
  // its reply comes as events on the agent's subject.
  useLive({
    patterns: ["turn.resumed", "turn.finished"],
    subjects: [`agent:${agentId}`],
    onEvent: (event) => {
      const turn = String(event.data.turn_id ?? "");
      if (streaming.current || streamed.current.has(turn)) return; // this page has it already
      if (event.type === "turn.finished") setWaiting(null);
      void reload();
    },
  });

  async function send(message: string, newSession: boolean) {
    setBusy(true);
    streaming.current = true;
    setError(null);
    const reply: Entry = { role: "assistant", text: "", tools: [] };
    setLive((before) => [...before, { role: "user", text: message, tools: [] }, reply]);
    const update = () => setLive((before) => [...before.slice(0, -1), { ...reply, tools: [...reply.tools] }]);
    abort.current = new AbortController();
    try {
      for await (const { event, data } of postStream(
        `/agents/${agentId}/chat/stream`,
        { message, new_session: newSession },
        abort.current.signal,
      )) {
        const body = data as Record<string, unknown>;
        if (event === "delta") reply.text += String(body.text ?? "");
        else if (event === "tool_call") {
          reply.tools.push({ id: String(body.id), name: String(body.name), arguments: body.arguments, started: performance.now() });
        } else if (event === "tool_result") {
          const card = reply.tools.find((tool) => tool.id === body.call_id);
          if (card) {
            card.result = String(body.content ?? "");
            card.isError = Boolean(body.is_error);
            card.ms = performance.now() - card.started;
          }
        } else if (event === "done") {
          const usage = body.usage as { input_tokens: number; output_tokens: number };
          reply.text = String(body.reply ?? reply.text);
          reply.meta = [`${usage.input_tokens + usage.output_tokens} tokens`, money(body.cost_usd as number | null)]
            .filter(Boolean)
            .join(" · ");
          if (body.outcome === "waiting_approval") setWaiting(Number(body.approval_id));
          else if (body.turn_id) streamed.current.add(String(body.turn_id));
        } else if (event === "error") {
          setError(new ProblemError(toProblem(0, { ...body, detail: body.detail ?? body.message })));
        }
        update();
      }
    } catch (caught) {
      if (!(caught instanceof DOMException && caught.name === "AbortError")) setError(caught);
    } finally {
      streaming.current = false;
      setBusy(false);
      abort.current = null;
    }
  }

  function submit(event: FormEvent<HTMLFormElement>) {
    event.preventDefault();
    const form = event.currentTarget;
    const text = String(new FormData(form).get("message") ?? "").trim();
    if (!text || busy) return;
    form.reset();
    const newSession = fresh;
    setFresh(false);
    void send(text, newSession);
  }

  function newSession() {
    setLive([]);
    setFresh(true);
    client.setQueryData(["agents", agentId, "history"], []);
  }

  const shown = [...(fresh ? [] : fromHistory(history.data ?? [])), ...live];
  return (
    <section className="chat">
      <div className="stack">
        <div className="row">
          <h1>{agent.data ? agent.data.name : `Agent ${agentId}`}</h1>
          <span className="muted">{agent.data ? `${agent.data.provider} / ${agent.data.model}` : null}</span>
          <button type="button" onClick={newSession} disabled={busy}>
            New session
          </button>
          <Link to={`/agents/${agentId}/settings`}>Agent settings</Link>
          <Link to="/agents">All agents</Link>
        </div>
        {agent.error ? <ProblemView error={agent.error} /> : null}
        {history.error ? <ProblemView error={history.error} /> : null}
        <div className="messages" aria-live="polite" aria-label="Conversation">
          {shown.map((entry, index) => (
            <article key={index} className={`message ${entry.role}`} aria-label={entry.role}>
              {entry.text ? <pre>{entry.text}</pre> : null}
              <ToolCards tools={entry.tools} />
              {entry.meta ? <p className="meta">{entry.meta}</p> : null}
            </article>
          ))}
          {fresh && !live.length ? <p className="muted">A new session starts with your next message.</p> : null}
        </div>
        {waiting !== null ? (
          <p className="warn" role="status">
            A tool call waits for a decision: <Link to="/approvals">approval {waiting}</Link>. The reply comes here once it is
            decided.
          </p>
        ) : null}
        {error ? <ProblemView error={error} /> : null}
      </div>
      <form className="composer" onSubmit={submit} aria-label="Compose">
        <label>
          <span className="muted">Message</span>
          <textarea
            name="message"
            required
            onKeyDown={(event) => {
              if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) event.currentTarget.form?.requestSubmit();
            }}
          />
        </label>
        <div className="stack">
          <button type="submit" className="primary" disabled={busy}>
            {busy ? "Answering…" : "Send"}
          </button>
          {busy ? (
            <button type="button" onClick={() => abort.current?.abort()}>
              Stop following
            </button>
          ) : null}
        </div>
      </form>
    </section>
  );
}
