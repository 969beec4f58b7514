// An agent's settings: the agent itself, its tools and their policies, its memories and the
// knowledge it draws on. Live: the agent's subject (`agent:<id>`) refreshes what changed.

import { useQuery, useQueryClient } from "@tanstack/react-query";
import { useState } from "react";
import { Link, useParams } from "react-router-dom";

import { api, must } from "../../api/client";
import { useLive } from "../../api/live";
import { ProblemView } from "../../components/ProblemView";
import { AgentForm } from "./AgentForm";
import { KnowledgePanel } from "./KnowledgePanel";
import { MemoriesPanel, memoriesKey } from "./MemoriesPanel";
import { ToolsPanel, toolsKey } from "./ToolsPanel";
import "./agentSettings.css";

export default function AgentSettingsPage() {
  const agentId = Number(useParams().agentId);
  const client = useQueryClient();
  const [saved, setSaved] = useState<"agent" | "knowledge" | null>(null);
  const agent = useQuery({
    queryKey: ["agents", agentId],
    queryFn: () => must(api.GET("/agents/{agent_id}", { params: { path: { agent_id: agentId } } })),
  });
  const live = useLive({
    patterns: ["agent.updated", "agent.tools_changed", "turn.finished", "tool.invoked"],
    subjects: [`agent:${agentId}`],
    onEvent: (event) => {
      if (event.type === "agent.updated") void client.invalidateQueries({ queryKey: ["agents", agentId], exact: true });
      else if (event.type === "agent.tools_changed") void client.invalidateQueries({ queryKey: toolsKey(agentId) });
      // A turn or a tool call may have remembered something (the `remember` tool).
      else void client.invalidateQueries({ queryKey: memoriesKey(agentId) });
    },
  });

  const data = agent.data;
  const formKey = data
    ? JSON.stringify([data.name, data.provider, data.model, data.persona, data.config.max_iterations, data.config.project])
    : "";
  return (
    <section className="stack agent-settings">
      <div className="row">
        <h1>{data ? `${data.name}: settings` : `Agent ${agentId}: settings`}</h1>
        <Link to={`/agents/${agentId}`}>Chat</Link>
        <Link to="/agents">All agents</Link>
        <span className={live === "live" ? "muted small" : "warn small"} role="status">
          {live === "live" ? "Live" : live === "refused" ? "Not live" : "Connecting…"}
        </span>
      </div>
      {agent.isPending ? <p aria-busy="true">Loading…</p> : null}
      {agent.error ? <ProblemView error={agent.error} /> : null}
      {data ? (
        <>
          <AgentForm
            key={formKey}
            agent={data}
            saved={saved === "agent"}
            setSaved={(on) => setSaved(on ? "agent" : null)}
          />
          <ToolsPanel agentId={agentId} />
          <MemoriesPanel agentId={agentId} />
          <KnowledgePanel
            key={JSON.stringify(data.config.knowledge ?? null)}
            agent={data}
            saved={saved === "knowledge"}
            setSaved={(on) => setSaved(on ? "knowledge" : null)}
          />
        </>
      ) : null}
    </section>
  );
}
