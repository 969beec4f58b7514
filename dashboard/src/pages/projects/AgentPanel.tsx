import { useMutation, useQuery, useQueryClient } from "@tanstack/react-query";
import { useRef, useState, type FormEvent } from "react";
import { Link } from "react-router-dom";

import { api, must } from "../../api/client";
import { ProblemError, toProblem } from "../../api/problem";
import { postStream } from "../../api/stream";
import { ProblemView } from "../../components/ProblemView";
import { withContext } from "./paths";
import { keys, type Project } from "./workspace";

interface Tool {
  id: string;
  name: string;
  path?: string;
  state: "running" | "done" | "failed";
}

interface Turn {
  message: string;
  context: string | null;
  reply: string;
  tools: Tool[];
  done: boolean;
}

export interface EditorContext {
  path: string | null;
  selection: { text: string; lines: [number, number] } | null;
}

function LinkAgent({ project }: { project: Project }) {
  const client = useQueryClient();
  const agents = useQuery({ queryKey: ["agents"], queryFn: () => must(api.GET("/agents")) });
  const link = useMutation({
    mutationFn: (agentId: number) =>
      must(api.PUT("/projects/{project_id}/{kind}/{linked_id}", { params: { path: { project_id: project.id, kind: "agents", linked_id: agentId } } })),
    onSuccess: (updated) => client.setQueryData(keys.project(project.id), updated),
  });
  const linked = new Set(project.agents.map((agent) => agent.id));
  const free = (agents.data ?? []).filter((agent) => !linked.has(agent.id));

  function submit(event: FormEvent<HTMLFormElement>) {
    event.preventDefault();
    const id = Number(new FormData(event.currentTarget).get("agent"));
    if (id) link.mutate(id);
  }

  if (agents.error) return <ProblemView error={agents.error} />;
  if (agents.data && !free.length) {
    return project.agents.length ? null : (
      <p className="muted">
        No agent to link: <Link to="/agents">create one</Link>.
      </p>
    );
  }
  return (
    <form className="row" onSubmit={submit} aria-label="Link an agent to this project">
      <label>
        Agent to link
        <select name="agent" required defaultValue="">
          <option value="" disabled>
            Choose…
          </option>
          {free.map((agent) => (
            <option key={agent.id} value={agent.id}>
              {agent.name}
            </option>
          ))}
        </select>
      </label>
      <button type="submit" disabled={link.isPending}>
        Link
      </button>
      {link.error ? <ProblemView error={link.error} /> : null}
      <p className="muted small">A linked agent's file, git and shell tools work in this project (and it may be linked to one project at a time).</p>
    </form>
  );
}

/** Chat with an agent linked to the project; its edits reach the editor through the file events. */
export function AgentPanel({ project, context }: { project: Project; context: () => EditorContext }) {
  const client = useQueryClient();
  const [chosen, setChosen] = useState<number | null>(null);
  const agentId = chosen !== null && project.agents.some((agent) => agent.id === chosen) ? chosen : (project.agents[0]?.id ?? null);
  const [turns, setTurns] = useState<Turn[]>([]);
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<unknown>(null);
  const [withFile, setWithFile] = useState(true);
  const abort = useRef<AbortController | null>(null);
  const unlink = useMutation({
    mutationFn: (id: number) =>
      must(api.DELETE("/projects/{project_id}/{kind}/{linked_id}", { params: { path: { project_id: project.id, kind: "agents", linked_id: id } } })),
    onSuccess: () => client.invalidateQueries({ queryKey: keys.project(project.id) }),
  });

  async function send(text: string) {
    if (agentId === null) return;
    const where = withFile ? context() : { path: null, selection: null };
    const message = withContext(text, where.path, where.selection?.text ?? null, where.selection?.lines ?? null);
    const turn: Turn = {
      message: text,
      context: where.path ? `${where.path}${where.selection ? `, lines ${where.selection.lines[0]}–${where.selection.lines[1]}` : ""}` : null,
      reply: "",
      tools: [],
      done: false,
    };
    setTurns((before) => [...before, turn]);
    const update = () => setTurns((before) => [...before.slice(0, -1), { ...turn, tools: [...turn.tools] }]);
    setBusy(true);
    setError(null);
    abort.current = new AbortController();
    try {
      for await (const { event, data } of postStream(`/agents/${agentId}/chat/stream`, { message }, abort.current.signal)) {
        const body = (data ?? {}) as Record<string, unknown>;
        if (event === "delta") turn.reply += String(body.text ?? "");
        else if (event === "tool_call") {
          const args = (body.arguments ?? {}) as Record<string, unknown>;
          turn.tools.push({ id: String(body.id), name: String(body.name), state: "running", ...(typeof args.path === "string" ? { path: args.path } : {}) });
        } else if (event === "tool_result") {
          const tool = turn.tools.find((item) => item.id === body.call_id);
          if (tool) tool.state = body.is_error ? "failed" : "done";
        } else if (event === "done") {
          turn.reply = String(body.reply ?? turn.reply);
          turn.done = true;
        } else if (event === "error") {
          setError(new ProblemError(toProblem(0, { ...body, detail: body.detail ?? body.message })));
        }
        update();
      }
    } catch (caught) {
      if (!(caught instanceof DOMException && caught.name === "AbortError")) setError(caught);
    } finally {
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
    void send(text);
  }

  return (
    <div className="stack">
      {project.agents.length ? (
        <div className="row">
          <label>
            Agent
            <select value={agentId ?? ""} onChange={(event) => setChosen(Number(event.target.value))}>
              {project.agents.map((agent) => (
                <option key={agent.id} value={agent.id}>
                  {agent.name}
                </option>
              ))}
            </select>
          </label>
          {agentId !== null ? (
            <>
              <Link to={`/agents/${agentId}`}>Full conversation</Link>
              <button type="button" disabled={unlink.isPending || busy} onClick={() => unlink.mutate(agentId)}>
                Unlink
              </button>
            </>
          ) : null}
        </div>
      ) : (
        <p className="muted">No agent is linked to this project yet.</p>
      )}
      {unlink.error ? <ProblemView error={unlink.error} /> : null}
      <LinkAgent project={project} />
      {agentId !== null ? (
        <>
          <div className="messages" aria-live="polite" aria-label="Conversation with the agent">
            {turns.map((turn, index) => (
              <div key={index} className="stack">
                <article className="message user" aria-label="you">
                  <pre>{turn.message}</pre>
                  {turn.context ? <p className="meta">with {turn.context}</p> : null}
                </article>
                <article className="message assistant" aria-label="agent">
                  {turn.tools.map((tool) => (
                    <p key={tool.id} className="meta">
                      <code>{tool.name}</code>
                      {tool.path ? ` ${tool.path}` : ""} —{" "}
                      <span className={tool.state === "failed" ? "bad" : tool.state === "done" ? "ok" : "muted"}>{tool.state}</span>
                    </p>
                  ))}
                  {turn.reply ? <pre>{turn.reply}</pre> : turn.done ? null : <p className="muted">Working…</p>}
                </article>
              </div>
            ))}
          </div>
          {error ? <ProblemView error={error} /> : null}
          <form className="stack" onSubmit={submit} aria-label="Ask the agent">
            <label>
              Message to the agent
              <textarea
                name="message"
                required
                rows={3}
                onKeyDown={(event) => {
                  if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) event.currentTarget.form?.requestSubmit();
                }}
              />
            </label>
            <label className="inline">
              <input type="checkbox" checked={withFile} onChange={(event) => setWithFile(event.target.checked)} />
              Add the open file and the selection as context
            </label>
            <div className="row">
              <button type="submit" className="primary" disabled={busy}>
                {busy ? "Working…" : "Send"}
              </button>
              {busy ? (
                <button type="button" onClick={() => abort.current?.abort()}>
                  Stop following
                </button>
              ) : null}
            </div>
          </form>
        </>
      ) : null}
    </div>
  );
}
