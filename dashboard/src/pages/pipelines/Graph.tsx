// The pipeline's graph drawn with React Flow: one card per node (its type, id, name, and in a
// run its status, coloured and written), edges with their conditions as labels.

import {
  Background,
  Controls,
  Handle,
  MarkerType,
  Position,
  type Edge,
  type Node,
  type NodeProps,
  type NodeTypes,
} from "@xyflow/react";
import "@xyflow/react/dist/style.css";
import { useSyncExternalStore } from "react";

import { autoLayout, type Definition, type NodeDef, type Point, type Problem } from "./definition";
import "./pipelines.css";

export interface StepData extends Record<string, unknown> {
  def: NodeDef;
  status?: string;
  attempt?: number;
  problems?: Problem[];
}

export type StepNode = Node<StepData, "step">;

export interface EdgeData extends Record<string, unknown> {
  edgeId?: string | null;
  condition?: string | null;
}

export type StepEdge = Edge<EdgeData>;

function StepView({ id, data }: NodeProps<StepNode>) {
  const problems = data.problems ?? [];
  const status = data.status;
  return (
    <div
      className={`step${status ? ` status-${status}` : ""}${problems.length ? " has-problems" : ""}`}
      data-status={status}
      data-problems={problems.length || undefined}
    >
      {data.def.type === "trigger" ? null : <Handle type="target" position={Position.Left} />}
      <span className="step-type">{data.def.type}</span>
      <strong className="step-id">{data.def.name || id}</strong>
      {data.def.name ? <code className="step-sub">{id}</code> : null}
      {status ? (
        <span className="step-status">
          {status}
          {data.attempt && data.attempt > 1 ? ` · attempt ${data.attempt}` : ""}
        </span>
      ) : null}
      {problems.length ? (
        <span className="step-problems" title={problems.map((problem) => problem.message).join("\n")}>
          ⚠ {problems.length} problem{problems.length > 1 ? "s" : ""}: {problems[0]?.message}
        </span>
      ) : null}
      <Handle type="source" position={Position.Right} />
    </div>
  );
}

export const nodeTypes: NodeTypes = { step: StepView };

/** The accessible name of a node's card. */
export function stepLabel(def: NodeDef, status?: string, problems?: number): string {
  return [
    `${def.type} node ${def.id}`,
    def.name ? `(${def.name})` : "",
    status ? `: ${status}` : "",
    problems ? `, ${problems} problem${problems > 1 ? "s" : ""}` : "",
  ]
    .filter(Boolean)
    .join(" ");
}

export function toFlowNodes(definition: Definition, layout: Record<string, Point>): StepNode[] {
  const auto = autoLayout(definition.nodes, definition.edges ?? []);
  return definition.nodes.map((def) => ({
    id: def.id,
    type: "step",
    position: layout[def.id] ?? auto[def.id] ?? { x: 0, y: 0 },
    data: { def },
    ariaLabel: stepLabel(def),
  }));
}

export function edgeKey(from: string, to: string): string {
  return `edge:${from}->${to}`;
}

export function toFlowEdge(from: string, to: string, data: EdgeData = {}): StepEdge {
  return {
    id: edgeKey(from, to),
    source: from,
    target: to,
    data,
    label: data.condition || undefined,
    markerEnd: { type: MarkerType.ArrowClosed },
    ariaLabel: `Edge from ${from} to ${to}${data.condition ? ` when ${data.condition}` : ""}`,
  };
}

export function toFlowEdges(definition: Definition): StepEdge[] {
  return (definition.edges ?? []).map((edge) =>
    toFlowEdge(edge.from, edge.to, { edgeId: edge.id ?? null, condition: edge.condition ?? null }),
  );
}

/** The theme React Flow should draw in (the dashboard's, set on <html>). */
function colorMode(): "light" | "dark" {
  return document.documentElement.dataset.theme === "dark" ? "dark" : "light";
}

function onThemeChange(callback: () => void): () => void {
  const observer = new MutationObserver(callback);
  observer.observe(document.documentElement, { attributes: true, attributeFilter: ["data-theme"] });
  return () => observer.disconnect();
}

/** The dashboard's theme, following the toggle. */
export function useColorMode(): "light" | "dark" {
  return useSyncExternalStore(onThemeChange, colorMode);
}

export { Background, Controls };
