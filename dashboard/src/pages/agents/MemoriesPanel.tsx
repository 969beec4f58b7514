// The agent's long-term memories: the ones it sees (its own and its owner's global ones), a
// search by meaning or words (recall), remember one more, forget one.

import { useMutation, useQuery, useQueryClient } from "@tanstack/react-query";
import { useState, type FormEvent } from "react";

import { api, must } from "../../api/client";
import type { components } from "../../api/schema";
import { ProblemView } from "../../components/ProblemView";
import { when } from "../../format";
import { MEMORY_KINDS, snippet, splitList, type MemoryKind } from "./settingsForms";

type Memory = components["schemas"]["MemoryOut"];
type Scope = Memory["scope"];
type MemoryIn =
  | Omit<components["schemas"]["AgentMemoryIn"], "scope_id">
  | components["schemas"]["SharedMemoryIn"]
  | Omit<components["schemas"]["GlobalMemoryIn"], "scope_id">;

const PAGE = 50;

export function memoriesKey(agentId: number) {
  return ["agents", agentId, "memories"] as const;
}

function RememberForm({ agentId }: { agentId: number }) {
  const client = useQueryClient();
  const [scope, setScope] = useState<Scope>("agent");
  const add = useMutation({
    mutationFn: (body: MemoryIn) =>
      must(api.POST("/memories/agents/{agent_id}", { params: { path: { agent_id: agentId } }, body })),
    onSuccess: () => client.invalidateQueries({ queryKey: memoriesKey(agentId) }),
  });

  function submit(event: FormEvent<HTMLFormElement>) {
    event.preventDefault();
    const formElement = event.currentTarget;
    const form = new FormData(formElement);
    const common = {
      content: String(form.get("content") ?? "").trim(),
      kind: String(form.get("kind")) as MemoryKind,
      importance: Number(form.get("importance")),
      tags: splitList(String(form.get("tags") ?? "")),
    };
    const scopeId = String(form.get("scope_id") ?? "").trim();
    const body: MemoryIn =
      scope === "circle" || scope === "project"
        ? { ...common, scope, scope_id: scopeId }
        : scope === "global"
          ? { ...common, scope: "global" }
          : { ...common, scope: "agent" };
    add.mutate(body, { onSuccess: () => formElement.reset() });
  }

  return (
    <form className="stack remember" onSubmit={submit} aria-label="Remember">
      <label>
        New memory
        <textarea name="content" rows={2} required maxLength={8000} />
      </label>
      <div className="form-grid">
        <label>
          Kind
          <select name="kind" defaultValue="fact">
            {MEMORY_KINDS.map((kind) => (
              <option key={kind}>{kind}</option>
            ))}
          </select>
        </label>
        <label>
          Importance (0 to 1)
          <input name="importance" type="number" min={0} max={1} step={0.1} defaultValue={0.5} required />
        </label>
        <label>
          Tags (separated by commas)
          <input name="tags" />
        </label>
        <label>
          Who sees it
          <select name="scope" value={scope} onChange={(event) => setScope(event.target.value as Scope)}>
            <option value="agent">this agent only</option>
            <option value="global">every agent of mine</option>
            <option value="circle">a circle&apos;s agents</option>
            <option value="project">a project&apos;s agents</option>
          </select>
        </label>
        {scope === "circle" || scope === "project" ? (
          <label>
            {scope === "circle" ? "Circle id" : "Project id"}
            <input name="scope_id" required maxLength={200} />
          </label>
        ) : null}
      </div>
      {add.error ? <ProblemView error={add.error} /> : null}
      <div className="row">
        <button type="submit" className="primary" disabled={add.isPending}>
          Remember
        </button>
      </div>
    </form>
  );
}

function MemoryItem({ memory, onForget, busy }: { memory: Memory & { score?: number }; onForget: () => void; busy: boolean }) {
  return (
    <li className="memory">
      <p className="memory-content">{memory.content}</p>
      <div className="row muted small">
        <span className="badge">{memory.kind}</span>
        <span className="badge">{memory.scope === "agent" ? "this agent" : memory.scope}{memory.scope_id && memory.scope !== "agent" ? ` ${memory.scope_id}` : ""}</span>
        <span>importance {memory.importance}</span>
        {memory.tags.length ? <span>tags: {memory.tags.join(", ")}</span> : null}
        <span>{when(memory.created_at)}</span>
        <span>
          used {memory.access_count} {memory.access_count === 1 ? "time" : "times"}
        </span>
        {memory.score !== undefined ? <span>score {memory.score.toFixed(2)}</span> : null}
        <button type="button" disabled={busy} onClick={onForget} aria-label={`Forget “${snippet(memory.content)}”`}>
          Forget
        </button>
      </div>
    </li>
  );
}

export function MemoriesPanel({ agentId }: { agentId: number }) {
  const client = useQueryClient();
  const [scope, setScope] = useState<"" | Scope>("");
  const [kind, setKind] = useState<"" | MemoryKind>("");
  const [limit, setLimit] = useState(PAGE);
  const [query, setQuery] = useState("");
  const memories = useQuery({
    queryKey: [...memoriesKey(agentId), { scope, kind, limit }],
    queryFn: () =>
      must(
        api.GET("/memories/agents/{agent_id}", {
          params: {
            path: { agent_id: agentId },
            query: { limit, ...(scope ? { scope: [scope] } : {}), ...(kind ? { kind: [kind] } : {}) },
          },
        }),
      ),
    enabled: !query,
  });
  const recall = useQuery({
    queryKey: [...memoriesKey(agentId), "recall", { query, scope, kind }],
    queryFn: () =>
      must(
        api.POST("/memories/agents/{agent_id}/recall", {
          params: { path: { agent_id: agentId } },
          body: { query, limit: 20, ...(scope ? { scopes: [scope] } : {}), ...(kind ? { kinds: [kind] } : {}) },
        }),
      ),
    enabled: Boolean(query),
  });
  const forget = useMutation({
    mutationFn: (id: number) => must(api.DELETE("/memories/{memory_id}", { params: { path: { memory_id: id } } })),
    onSuccess: () => client.invalidateQueries({ queryKey: memoriesKey(agentId) }),
  });

  function search(event: FormEvent<HTMLFormElement>) {
    event.preventDefault();
    setQuery(String(new FormData(event.currentTarget).get("query") ?? "").trim());
  }

  const shown: (Memory & { score?: number })[] = query ? (recall.data?.results ?? []) : (memories.data ?? []);
  const current = query ? recall : memories;
  return (
    <section className="card stack" aria-labelledby="memories-heading">
      <h2 id="memories-heading">Memories</h2>
      <RememberForm agentId={agentId} />
      <form className="row" role="search" aria-label="Search memories" onSubmit={search}>
        <label className="inline">
          Search
          <input name="query" type="search" maxLength={4000} defaultValue={query} />
        </label>
        <button type="submit">Search</button>
        {query ? (
          <button
            type="button"
            onClick={(event) => {
              const input = event.currentTarget.form?.elements.namedItem("query");
              if (input instanceof HTMLInputElement) input.value = "";
              setQuery("");
            }}
          >
            Show all
          </button>
        ) : null}
        <label className="inline">
          Filter: scope
          <select value={scope} onChange={(event) => setScope(event.target.value as "" | Scope)}>
            <option value="">any</option>
            <option value="agent">this agent</option>
            <option value="global">global</option>
          </select>
        </label>
        <label className="inline">
          Filter: kind
          <select value={kind} onChange={(event) => setKind(event.target.value as "" | MemoryKind)}>
            <option value="">any</option>
            {MEMORY_KINDS.map((value) => (
              <option key={value}>{value}</option>
            ))}
          </select>
        </label>
      </form>
      {query && recall.data ? (
        <p className="muted small">
          Best matches for “{query}”, by {recall.data.semantic ? "meaning and words" : "words only"}. A search counts as a use
          of each memory it finds.
        </p>
      ) : null}
      {current.isPending && current.fetchStatus !== "idle" ? <p aria-busy="true">Loading…</p> : null}
      {current.error ? <ProblemView error={current.error} /> : null}
      {forget.error ? <ProblemView error={forget.error} /> : null}
      {current.data && !shown.length ? (
        <p className="muted">{query ? "No memory matches." : "No memory yet."}</p>
      ) : null}
      {shown.length ? (
        <ul className="memories" aria-label="Memories">
          {shown.map((memory) => (
            <MemoryItem
              key={memory.id}
              memory={memory}
              busy={forget.isPending && forget.variables === memory.id}
              onForget={() => {
                if (confirm(`Forget this memory?\n\n${snippet(memory.content, 200)}`)) forget.mutate(memory.id);
              }}
            />
          ))}
        </ul>
      ) : null}
      {!query && memories.data && memories.data.length >= limit && limit < 500 ? (
        <button type="button" onClick={() => setLimit((before) => Math.min(before + PAGE, 500))}>
          Show more
        </button>
      ) : null}
    </section>
  );
}
