// The agent's tools: every registry tool, on or off for the agent, and the policy its calls
// run under (PUT /agents/{id}/tools/{name}). The page refreshes it on `agent.tools_changed`.

import { useMutation, useQuery, useQueryClient } from "@tanstack/react-query";
import { useState } from "react";

import { api, must } from "../../api/client";
import type { components } from "../../api/schema";
import { ProblemView } from "../../components/ProblemView";
import { POLICIES, policyChoice, type Policy } from "./settingsForms";

type AgentTool = components["schemas"]["AgentToolOut"];
type Change = { enabled?: boolean; policy?: Policy | null };

export function toolsKey(agentId: number) {
  return ["agents", agentId, "tools"] as const;
}

function ToolRow({ tool, busy, onChange }: { tool: AgentTool; busy: boolean; onChange: (change: Change) => void }) {
  return (
    <tr>
      <th scope="row">
        <code>{tool.name}</code>
        <div className="muted small">{tool.description}</div>
      </th>
      <td>
        <span className={`badge effect-${tool.effect}`}>{tool.effect}</span>
        <div className="muted small">
          {tool.category}
          {tool.plugin ? ` · ${tool.plugin}` : ""}
        </div>
      </td>
      <td>
        <label className="inline">
          <input
            type="checkbox"
            checked={tool.enabled}
            disabled={busy}
            onChange={(event) => onChange({ enabled: event.target.checked })}
            aria-label={`Enable ${tool.name}`}
          />
          <span className={tool.enabled ? "ok" : "muted"}>{tool.enabled ? "on" : "off"}</span>
        </label>
      </td>
      <td>
        <select
          aria-label={`Policy of ${tool.name}`}
          value={policyChoice(tool.policy_set)}
          disabled={busy}
          onChange={(event) => onChange({ policy: (event.target.value || null) as Policy | null })}
        >
          <option value="">default ({tool.default_policy})</option>
          {POLICIES.map((policy) => (
            <option key={policy} value={policy}>
              {policy}
            </option>
          ))}
        </select>
      </td>
      <td>
        <span className={`policy-${tool.policy}`}>{tool.enabled ? tool.policy : "—"}</span>
      </td>
    </tr>
  );
}

export function ToolsPanel({ agentId }: { agentId: number }) {
  const client = useQueryClient();
  const [filter, setFilter] = useState<"all" | "enabled">("all");
  const tools = useQuery({
    queryKey: toolsKey(agentId),
    queryFn: () => must(api.GET("/agents/{agent_id}/tools", { params: { path: { agent_id: agentId } } })),
  });
  const change = useMutation({
    mutationFn: ({ name, body }: { name: string; body: Change }) =>
      must(api.PUT("/agents/{agent_id}/tools/{name}", { params: { path: { agent_id: agentId, name } }, body })),
    // Shown at once; the answer (or, on a refusal, the list as stored) replaces it.
    onMutate: ({ name, body }) => {
      void client.cancelQueries({ queryKey: toolsKey(agentId) });
      client.setQueryData<AgentTool[]>(toolsKey(agentId), (before) =>
        before?.map((row) =>
          row.name !== name
            ? row
            : {
                ...row,
                ...(body.enabled !== undefined ? { enabled: body.enabled } : {}),
                ...(body.policy !== undefined ? { policy_set: body.policy, policy: body.policy ?? row.default_policy } : {}),
              },
        ),
      );
    },
    onSuccess: (tool) => {
      client.setQueryData<AgentTool[]>(toolsKey(agentId), (before) =>
        before?.map((row) => (row.name === tool.name ? tool : row)),
      );
    },
    onError: () => client.invalidateQueries({ queryKey: toolsKey(agentId) }),
  });
  const rows = (tools.data ?? []).filter((tool) => filter === "all" || tool.enabled);
  const enabled = (tools.data ?? []).filter((tool) => tool.enabled).length;
  return (
    <section className="card stack" aria-labelledby="tools-heading">
      <div className="row">
        <h2 id="tools-heading">Tools and policies</h2>
        {tools.data ? (
          <span className="muted">
            {enabled} of {tools.data.length} enabled
          </span>
        ) : null}
        <label className="inline">
          Show
          <select value={filter} onChange={(event) => setFilter(event.target.value as "all" | "enabled")}>
            <option value="all">every tool</option>
            <option value="enabled">enabled tools</option>
          </select>
        </label>
      </div>
      <p className="muted small">
        A tool is off until enabled. Its policy: allow runs a call, ask waits for an approval, deny refuses it. Changes
        apply from the agent&apos;s next turn.
      </p>
      {tools.isPending ? <p aria-busy="true">Loading…</p> : null}
      {tools.error ? <ProblemView error={tools.error} /> : null}
      {change.error ? <ProblemView error={change.error} /> : null}
      {tools.data && !rows.length ? <p className="muted">No tool enabled.</p> : null}
      {rows.length ? (
        <div className="table-scroll">
          <table aria-labelledby="tools-heading">
            <thead>
              <tr>
                <th scope="col">Tool</th>
                <th scope="col">Effect</th>
                <th scope="col">Enabled</th>
                <th scope="col">Policy set</th>
                <th scope="col">In force</th>
              </tr>
            </thead>
            <tbody>
              {rows.map((tool) => (
                <ToolRow
                  key={tool.name}
                  tool={tool}
                  busy={change.isPending && change.variables?.name === tool.name}
                  onChange={(body) => change.mutate({ name: tool.name, body })}
                />
              ))}
            </tbody>
          </table>
        </div>
      ) : null}
    </section>
  );
}
