// A pipeline's definition (docs/pipelines.md) as the editor and the run view handle it: its
// types, a layout for its graph, and the node or edge each problem the API names points at.

export type Json = null | boolean | number | string | Json[] | { [key: string]: Json };
export type JsonObject = { [key: string]: Json };

export interface NodeDef {
  id: string;
  type: string;
  name?: string | null;
  config?: JsonObject;
  retry?: JsonObject | null;
  timeout_seconds?: number | null;
  [key: string]: Json | undefined;
}

export interface EdgeDef {
  id?: string | null;
  from: string;
  to: string;
  condition?: string | null;
}

export interface Definition {
  name: string;
  description?: string;
  input_schema?: JsonObject;
  timeout_seconds?: number | null;
  nodes: NodeDef[];
  edges?: EdgeDef[];
}

export interface Problem {
  path: string;
  code: string;
  message: string;
}

export interface Point {
  x: number;
  y: number;
}

/** The nine node types, in the order the editor offers them. */
export const NODE_TYPES = [
  "trigger",
  "agent",
  "tool",
  "condition",
  "action",
  "parallel",
  "delay",
  "approval",
  "sub_pipeline",
] as const;

/** A config that fits each type (the editor's starting point for a new node). */
export function starterConfig(type: string): JsonObject {
  switch (type) {
    case "trigger":
      return { kind: "manual" };
    case "agent":
      return { prompt: "{{ input }}" };
    case "tool":
      return { arguments: {} };
    case "condition":
      return { expression: "true" };
    case "action":
      return { kind: "emit_event", event: "pipeline.step" };
    case "parallel":
      return { join: "all" };
    case "delay":
      return { seconds: 5 };
    case "approval":
      return { message: "Go on?" };
    case "sub_pipeline":
      return { input: {} };
    default:
      return {};
  }
}

/** The smallest definition the API takes: one manual trigger. */
export function emptyDefinition(name: string): Definition {
  return { name, nodes: [{ id: "start", type: "trigger", config: { kind: "manual" } }], edges: [] };
}

/** A node id not used yet, from the type's name: `agent_1`, `agent_2`, ... */
export function freshId(type: string, taken: Iterable<string>): string {
  const used = new Set(taken);
  for (let n = 1; ; n += 1) {
    const id = `${type}_${n}`;
    if (!used.has(id)) return id;
  }
}

/** Columns by longest path from a node without edges into it; rows in order within a column. */
export function autoLayout(nodes: NodeDef[], edges: EdgeDef[]): Record<string, Point> {
  const ids = nodes.map((node) => node.id);
  const into = new Map<string, string[]>(ids.map((id) => [id, []]));
  for (const edge of edges) into.get(edge.to)?.push(edge.from);
  const depth = new Map<string, number>();
  const visiting = new Set<string>();
  const depthOf = (id: string): number => {
    const known = depth.get(id);
    if (known !== undefined) return known;
    if (visiting.has(id)) return 0; // a cycle (the API refuses it): lay it out anyway
    visiting.add(id);
    const before = (into.get(id) ?? []).filter((from) => into.has(from));
    const value = before.length ? Math.max(...before.map(depthOf)) + 1 : 0;
    visiting.delete(id);
    depth.set(id, value);
    return value;
  };
  const rows = new Map<number, number>();
  const layout: Record<string, Point> = {};
  for (const id of ids) {
    const column = depthOf(id);
    const row = rows.get(column) ?? 0;
    rows.set(column, row + 1);
    layout[id] = { x: column * 240, y: row * 120 };
  }
  return layout;
}

/** Where a problem's path points: a node (by id) or an edge (by index), from `nodes[2]...`,
 * `edges[3].from`, or a request error's `loc` (`["body", "nodes", 2, "config"]`). */
export function problemTarget(
  path: string | (string | number)[],
  definition: Pick<Definition, "nodes" | "edges">,
): { node?: string; edge?: number } {
  const text = Array.isArray(path)
    ? path
        .filter((part, index) => !(index === 0 && part === "body"))
        .map((part) => (typeof part === "number" ? `[${part}]` : `.${part}`))
        .join("")
    : `.${path}`;
  const node = /^\.nodes\[(\d+)\]/.exec(text);
  if (node) {
    const found = definition.nodes[Number(node[1])];
    return found ? { node: found.id } : {};
  }
  const edge = /^\.edges\[(\d+)\]/.exec(text);
  if (edge) return { edge: Number(edge[1]) };
  return {};
}

/** The nodes named in a cycle message (`cycle: a -> b -> a`), which has no node path. */
export function cycleNodes(message: string): string[] {
  const match = /cycle:\s*(.+)$/.exec(message);
  return match?.[1] ? match[1].split("->").map((part) => part.trim()) : [];
}

/** Each node's problems, and the document's own (the name, the input schema, ...). */
export function problemsByNode(
  problems: Problem[],
  definition: Pick<Definition, "nodes" | "edges">,
): { nodes: Record<string, Problem[]>; edges: Record<number, Problem[]>; other: Problem[] } {
  const nodes: Record<string, Problem[]> = {};
  const edges: Record<number, Problem[]> = {};
  const other: Problem[] = [];
  for (const problem of problems) {
    const target = problemTarget(problem.path, definition);
    if (target.node !== undefined) (nodes[target.node] ??= []).push(problem);
    else if (target.edge !== undefined) {
      (edges[target.edge] ??= []).push(problem);
      const edge = definition.edges?.[target.edge];
      // An edge's problem shows on the nodes it joins too, where a person looks.
      for (const id of edge ? [edge.from, edge.to] : []) {
        if (definition.nodes.some((node) => node.id === id)) (nodes[id] ??= []).push(problem);
      }
    } else if (problem.code === "cycle") {
      for (const id of new Set(cycleNodes(problem.message))) (nodes[id] ??= []).push(problem);
      other.push(problem);
    } else other.push(problem);
  }
  return { nodes, edges, other };
}

/** The problems of a refused save: `details.problems` (graph checks) or `errors` (the
 * request's JSON Schema), each with the path it names. */
export function problemsOf(body: unknown): Problem[] {
  if (typeof body !== "object" || body === null) return [];
  const fields = body as { details?: { problems?: unknown }; errors?: unknown };
  const found: Problem[] = [];
  const listed = fields.details?.problems;
  if (Array.isArray(listed)) {
    for (const item of listed as Partial<Problem>[]) {
      found.push({ path: String(item.path ?? ""), code: String(item.code ?? ""), message: String(item.message ?? "") });
    }
  }
  if (Array.isArray(fields.errors)) {
    for (const item of fields.errors as { loc?: (string | number)[]; msg?: string; type?: string }[]) {
      const loc = (item.loc ?? []).filter((part, index) => !(index === 0 && part === "body"));
      // pydantic names the variant it tried (`nodes.2.agent.config`): keep what names fields.
      const path = loc
        .map((part) => (typeof part === "number" ? `[${part}]` : `.${part}`))
        .join("")
        .replace(/^\./, "");
      found.push({ path, code: item.type ?? "invalid_input", message: item.msg ?? "refused" });
    }
  }
  return found;
}

/** The definition with the node `from` renamed `to` (its edges follow). */
export function renameNode(definition: Definition, from: string, to: string): Definition {
  return {
    ...definition,
    nodes: definition.nodes.map((node) => (node.id === from ? { ...node, id: to } : node)),
    edges: (definition.edges ?? []).map((edge) => ({
      ...edge,
      from: edge.from === from ? to : edge.from,
      to: edge.to === from ? to : edge.to,
    })),
  };
}

/** The nodes with an edge into `id` (whose outputs are its inputs). */
export function nodesBefore(definition: Pick<Definition, "edges">, id: string): string[] {
  return (definition.edges ?? []).filter((edge) => edge.to === id).map((edge) => edge.from);
}

/** A definition as it came from the API or a text, checked just enough to draw. */
export function asDefinition(value: unknown): Definition {
  if (typeof value !== "object" || value === null || Array.isArray(value)) {
    throw new Error("a definition is an object with name, nodes and edges");
  }
  const document = value as Partial<Definition>;
  if (!Array.isArray(document.nodes)) throw new Error("the definition has no list of nodes");
  for (const [index, node] of document.nodes.entries()) {
    if (typeof node !== "object" || node === null || typeof node.id !== "string") {
      throw new Error(`nodes[${index}] has no id`);
    }
  }
  if (document.edges !== undefined && !Array.isArray(document.edges)) throw new Error("edges is not a list");
  return { ...document, name: String(document.name ?? ""), nodes: document.nodes, edges: document.edges ?? [] };
}
