// The visual editor of a pipeline: the graph (drag nodes, draw edges), a node's config form,
// the pipeline's settings, a check through the API and a save as a new version; the problems
// the API finds are shown on the nodes they name.

import { useMutation, useQuery, useQueryClient } from "@tanstack/react-query";
import {
  ReactFlow,
  ReactFlowProvider,
  useEdgesState,
  useNodesState,
  useReactFlow,
  type Connection,
  type OnSelectionChangeParams,
} from "@xyflow/react";
import { useCallback, useMemo, useRef, useState } from "react";

import { api, must } from "../../api/client";
import { ProblemError, toProblem } from "../../api/problem";
import { ProblemView } from "../../components/ProblemView";
import { when } from "../../format";
import {
  asDefinition,
  freshId,
  NODE_TYPES,
  problemsByNode,
  problemsOf,
  starterConfig,
  type Definition,
  type JsonObject,
  type NodeDef,
  type Point,
  type Problem,
} from "./definition";
import {
  Background,
  useColorMode,
  Controls,
  nodeTypes,
  stepLabel,
  toFlowEdge,
  toFlowEdges,
  toFlowNodes,
  type StepEdge,
  type StepNode,
} from "./Graph";
import { NodeEditor, type OutEdge } from "./NodeEditor";
import { PipelineHeader, usePipelineId } from "./PipelineHeader";
import { ProblemList } from "./ProblemList";
import { asBody, keys, nodeSchemas, saveLayout, savedLayout, useOpenApi, usePipeline } from "./queries";
import { JsonField } from "./SchemaForm";
import { parseDefinitionText } from "./yaml";

type Meta = Omit<Definition, "nodes" | "edges">;

function metaOf(definition: Definition): Meta {
  const { nodes: _nodes, edges: _edges, ...meta } = definition;
  void _nodes;
  void _edges;
  return meta;
}

function buildDefinition(meta: Meta, nodes: StepNode[], edges: StepEdge[]): Definition {
  const clean: Meta = { name: meta.name };
  if (meta.description) clean.description = meta.description;
  if (meta.input_schema !== undefined) clean.input_schema = meta.input_schema;
  if (typeof meta.timeout_seconds === "number") clean.timeout_seconds = meta.timeout_seconds;
  return {
    ...clean,
    nodes: nodes.map((node) => node.data.def),
    edges: edges.map((edge) => ({
      ...(edge.data?.edgeId ? { id: edge.data.edgeId } : {}),
      from: edge.source,
      to: edge.target,
      ...(edge.data?.condition ? { condition: edge.data.condition } : {}),
    })),
  };
}

function Settings({ meta, onChange }: { meta: Meta; onChange: (meta: Meta) => void }) {
  return (
    <section className="card stack" aria-labelledby="pipeline-settings">
      <h2 id="pipeline-settings">Pipeline settings</h2>
      <label>
        Name (required)
        <input value={meta.name} maxLength={100} required onChange={(event) => onChange({ ...meta, name: event.target.value })} />
      </label>
      <label>
        Description
        <textarea rows={2} value={meta.description ?? ""} onChange={(event) => onChange({ ...meta, description: event.target.value })} />
      </label>
      <label>
        Run timeout (seconds)
        <input
          type="number"
          min={1}
          step="any"
          value={typeof meta.timeout_seconds === "number" ? meta.timeout_seconds : ""}
          onChange={(event) =>
            onChange({ ...meta, timeout_seconds: event.target.value === "" ? null : Number(event.target.value) })
          }
        />
      </label>
      <JsonField
        text="Input schema"
        value={meta.input_schema}
        rows={6}
        hint="A JSON Schema for a run's input: the run form is made from it."
        onChange={(next) => onChange({ ...meta, input_schema: (next ?? undefined) as JsonObject | undefined })}
      />
    </section>
  );
}

function DefinitionText({ current, onApply }: { current: () => Definition; onApply: (definition: Definition) => void }) {
  const [text, setText] = useState("");
  const [error, setError] = useState<string | null>(null);
  return (
    <details
      className="card"
      onToggle={(event) => {
        if ((event.target as HTMLDetailsElement).open) setText(JSON.stringify(current(), null, 2));
      }}
    >
      <summary>Definition as text (JSON or YAML)</summary>
      <div className="stack">
        <label>
          Definition
          <textarea className="json-field" rows={16} spellCheck={false} value={text} onChange={(event) => setText(event.target.value)} />
        </label>
        {error ? (
          <p className="problem" role="alert">
            <strong>{error}</strong>
          </p>
        ) : null}
        <div className="row">
          <button
            type="button"
            onClick={() => {
              try {
                onApply(asDefinition(parseDefinitionText(text)));
                setError(null);
              } catch (problem) {
                setError(`The text cannot be read: ${(problem as Error).message}`);
              }
            }}
          >
            Put this text in the graph
          </button>
          <button type="button" onClick={() => setText(JSON.stringify(current(), null, 2))}>
            Take the graph's text
          </button>
        </div>
      </div>
    </details>
  );
}

function Editor({ id, initial, version }: { id: number; initial: Definition; version: number }) {
  const client = useQueryClient();
  const openapi = useOpenApi();
  const schemas = useMemo(() => (openapi.data ? nodeSchemas(openapi.data) : null), [openapi.data]);
  const [meta, setMeta] = useState<Meta>(() => metaOf(initial));
  const [nodes, setNodes, onNodesChange] = useNodesState<StepNode>(toFlowNodes(initial, savedLayout(id)));
  const [edges, setEdges, onEdgesChange] = useEdgesState<StepEdge>(toFlowEdges(initial));
  const [selected, setSelected] = useState<string | null>(null);
  const [problems, setProblems] = useState<Problem[]>([]);
  const [notice, setNotice] = useState("");
  const [addType, setAddType] = useState<string>("agent");
  const [baseline, setBaseline] = useState(() => JSON.stringify(buildDefinition(metaOf(initial), toFlowNodes(initial, {}), toFlowEdges(initial))));
  const layout = useRef<Record<string, Point>>(savedLayout(id));
  const theme = useColorMode();
  const flow = useReactFlow<StepNode, StepEdge>();
  // Once the new nodes are drawn (and measured), show them all.
  const fitSoon = useCallback(() => setTimeout(() => void flow.fitView({ maxZoom: 1, duration: 200 }), 60), [flow]);

  const definition = useCallback(() => buildDefinition(meta, nodes, edges), [meta, nodes, edges]);
  const dirty = JSON.stringify(definition()) !== baseline;

  const rememberLayout = useCallback(
    (all: StepNode[]) => {
      layout.current = Object.fromEntries(all.map((node) => [node.id, node.position]));
      saveLayout(id, layout.current);
    },
    [id],
  );

  const showProblems = useCallback(
    (found: Problem[], sent: Definition) => {
      const grouped = problemsByNode(found, sent);
      setProblems(found);
      setNodes((all) =>
        all.map((node) => {
          const mine = grouped.nodes[node.id] ?? [];
          return { ...node, data: { ...node.data, problems: mine }, ariaLabel: stepLabel(node.data.def, undefined, mine.length) };
        }),
      );
      setEdges((all) => all.map((edge, index) => ({ ...edge, className: grouped.edges[index] ? "has-problems" : "" })));
    },
    [setNodes, setEdges],
  );

  const load = useCallback(
    (next: Definition) => {
      setMeta(metaOf(next));
      setNodes(toFlowNodes(next, layout.current));
      setEdges(toFlowEdges(next));
      setSelected(null);
      setProblems([]);
      fitSoon();
    },
    [setNodes, setEdges, fitSoon],
  );

  const check = useMutation({
    mutationFn: async () => {
      const sent = definition();
      const result = await must(api.POST("/pipelines/validate", { body: asBody(sent) }));
      return { result, sent };
    },
    onSuccess: ({ result, sent }) => {
      showProblems(result.problems, sent);
      setNotice(result.valid ? "No problem found." : `${result.problems.length} problem(s) found.`);
    },
  });

  const save = useMutation({
    mutationFn: async () => {
      const sent = definition();
      setNotice("");
      const { data, error, response } = await api.PUT("/pipelines/{pipeline_id}", {
        params: { path: { pipeline_id: id } },
        body: asBody(sent),
      });
      if (!response.ok || !data) {
        showProblems(problemsOf(error), sent);
        throw new ProblemError(toProblem(response.status, error));
      }
      return { data, sent };
    },
    onSuccess: async ({ data, sent }) => {
      showProblems([], sent);
      setBaseline(JSON.stringify(sent));
      setNotice(data.version > version ? `Saved as version ${data.version}.` : `No change: version ${data.version} is the same.`);
      client.setQueryData(keys.one(id), data);
      await client.invalidateQueries({ queryKey: keys.list, exact: true });
      await client.invalidateQueries({ queryKey: keys.versions(id) });
    },
  });

  const versions = useQuery({
    queryKey: keys.versions(id),
    queryFn: () => must(api.GET("/pipelines/{pipeline_id}/versions", { params: { path: { pipeline_id: id } } })),
  });
  const openVersion = useMutation({
    mutationFn: (number: number) =>
      must(api.GET("/pipelines/{pipeline_id}/versions/{version}", { params: { path: { pipeline_id: id, version: number } } })),
    onSuccess: (found) => {
      load(asDefinition(found.definition));
      setNotice(`Version ${found.version} is in the editor: save to make it the current one.`);
    },
  });

  const select = useCallback(
    (nodeId: string | null) => {
      setSelected(nodeId);
      setNodes((all) => all.map((node) => (node.selected === (node.id === nodeId) ? node : { ...node, selected: node.id === nodeId })));
    },
    [setNodes],
  );

  const connect = useCallback(
    (from: string, to: string) => {
      if (from === to) return;
      setEdges((all) => (all.some((edge) => edge.source === from && edge.target === to) ? all : [...all, toFlowEdge(from, to)]));
    },
    [setEdges],
  );

  function addNode() {
    const ids = nodes.map((node) => node.id);
    const nodeId = freshId(addType, ids);
    const after = nodes.find((node) => node.id === selected);
    const lowest = Math.max(0, ...nodes.map((node) => node.position.y));
    const position = after ? { x: after.position.x + 240, y: after.position.y } : { x: 0, y: lowest + 120 };
    const def: NodeDef = { id: nodeId, type: addType, config: starterConfig(addType) };
    setNodes((all) => [
      ...all.map((node) => ({ ...node, selected: false })),
      { id: nodeId, type: "step", position, data: { def }, ariaLabel: stepLabel(def), selected: true },
    ]);
    if (after && addType !== "trigger") connect(after.id, nodeId);
    layout.current = { ...layout.current, [nodeId]: position };
    saveLayout(id, layout.current);
    setSelected(nodeId);
    fitSoon();
    setNotice(after && addType !== "trigger" ? `Added ${nodeId} after ${after.id}.` : `Added ${nodeId}.`);
  }

  function rename(from: string, to: string): string | null {
    if (nodes.some((node) => node.id === to)) return `another node is ${to}`;
    setNodes((all) =>
      all.map((node) =>
        node.id === from ? { ...node, id: to, data: { ...node.data, def: { ...node.data.def, id: to } }, ariaLabel: stepLabel({ ...node.data.def, id: to }) } : node,
      ),
    );
    setEdges((all) =>
      all.map((edge) =>
        edge.source === from || edge.target === from
          ? toFlowEdge(edge.source === from ? to : edge.source, edge.target === from ? to : edge.target, edge.data)
          : edge,
      ),
    );
    const { [from]: position, ...others } = layout.current;
    layout.current = position ? { ...others, [to]: position } : others;
    saveLayout(id, layout.current);
    setSelected(to);
    return null;
  }

  const current = nodes.find((node) => node.id === selected);
  const outgoing: OutEdge[] = edges
    .filter((edge) => edge.source === selected)
    .map((edge) => ({ key: edge.id, to: edge.target, condition: edge.data?.condition ?? "" }));
  const other = problemsByNode(problems, definition()).other;

  return (
    <div className="stack">
      <div className="row toolbar" role="toolbar" aria-label="Editor">
        <label className="row">
          Node type
          <select value={addType} onChange={(event) => setAddType(event.target.value)}>
            {(schemas ? Object.keys(schemas) : [...NODE_TYPES]).map((type) => (
              <option key={type} value={type}>
                {type}
              </option>
            ))}
          </select>
        </label>
        <button type="button" onClick={addNode}>
          {current && addType !== "trigger" ? `Add after ${current.id}` : "Add node"}
        </button>
        <span className="spacer" />
        <button type="button" onClick={() => check.mutate()} disabled={check.isPending}>
          Check
        </button>
        <button type="button" className="primary" onClick={() => save.mutate()} disabled={save.isPending}>
          Save as new version
        </button>
        {dirty ? <span className="badge warn">unsaved changes</span> : null}
      </div>
      <p className="muted notice" role="status" aria-live="polite">
        {notice}
      </p>
      {check.error ? <ProblemView error={check.error} /> : null}
      {save.error ? <ProblemView error={save.error} /> : null}
      <ProblemList problems={other} title="Problems of the pipeline" />
      {openapi.error ? (
        <div className="stack">
          <p className="muted">The node forms come from the server's schema, which did not load: config is edited as JSON.</p>
          <ProblemView error={openapi.error} />
        </div>
      ) : null}
      <div className="editor-grid">
        <section className="card flow-card" aria-labelledby="graph-title">
          <h2 id="graph-title">Graph</h2>
          <p className="muted">
            Drag nodes to move them; drag from a node&apos;s right handle to another&apos;s left one to add an edge; select an
            edge and press Backspace to delete it.
          </p>
          <div className="flow">
            <ReactFlow<StepNode, StepEdge>
              nodes={nodes}
              edges={edges}
              nodeTypes={nodeTypes}
              onNodesChange={onNodesChange}
              onEdgesChange={onEdgesChange}
              onConnect={(connection: Connection) => connect(connection.source, connection.target)}
              onSelectionChange={({ nodes: chosen }: OnSelectionChangeParams<StepNode, StepEdge>) => {
                if (chosen.length === 1 && chosen[0]) setSelected(chosen[0].id);
              }}
              onNodeDragStop={(_event, _node, moved) => {
                const positions = new Map(moved.map((node) => [node.id, node.position]));
                rememberLayout(nodes.map((node) => ({ ...node, position: positions.get(node.id) ?? node.position })));
              }}
              onNodesDelete={(removed) => {
                if (removed.some((node) => node.id === selected)) setSelected(null);
              }}
              colorMode={theme}
              fitView
              fitViewOptions={{ maxZoom: 1 }}
            >
              <Background />
              <Controls />
            </ReactFlow>
          </div>
        </section>
        <section className="card stack side" aria-labelledby="node-title">
          <h2 id="node-title">{current ? `Node ${current.id}` : "Node"}</h2>
          <label>
            Edit node
            <select value={selected ?? ""} onChange={(event) => select(event.target.value || null)}>
              <option value="">choose a node</option>
              {nodes.map((node) => (
                <option key={node.id} value={node.id}>
                  {node.id} ({node.data.def.type})
                </option>
              ))}
            </select>
          </label>
          {current ? (
            <NodeEditor
              def={current.data.def}
              schema={schemas?.[current.data.def.type]}
              root={openapi.data ?? {}}
              nodeIds={nodes.map((node) => node.id)}
              outgoing={outgoing}
              problems={current.data.problems ?? []}
              onChange={(def) =>
                setNodes((all) => all.map((node) => (node.id === current.id ? { ...node, data: { ...node.data, def } } : node)))
              }
              onRename={(to) => rename(current.id, to)}
              onRemove={() => {
                setNodes((all) => all.filter((node) => node.id !== current.id));
                setEdges((all) => all.filter((edge) => edge.source !== current.id && edge.target !== current.id));
                setSelected(null);
              }}
              onConnect={(to) => connect(current.id, to)}
              onEdgeCondition={(key, condition) =>
                setEdges((all) =>
                  all.map((edge) =>
                    edge.id === key
                      ? toFlowEdge(edge.source, edge.target, { ...edge.data, condition: condition || null })
                      : edge,
                  ),
                )
              }
              onEdgeRemove={(key) => setEdges((all) => all.filter((edge) => edge.id !== key))}
            />
          ) : (
            <p className="muted">Choose a node here or on the graph to edit it.</p>
          )}
        </section>
      </div>
      <Settings meta={meta} onChange={setMeta} />
      <section className="card stack" aria-labelledby="versions-title">
        <h2 id="versions-title">Versions</h2>
        {versions.error ? <ProblemView error={versions.error} /> : null}
        {openVersion.error ? <ProblemView error={openVersion.error} /> : null}
        <ol className="versions">
          {(versions.data ?? []).map((item) => (
            <li key={item.version} className="row">
              <span>
                Version {item.version} · {item.name} · {when(item.created_at)}
              </span>
              <button
                type="button"
                aria-label={`Open version ${item.version} in the editor`}
                onClick={() => openVersion.mutate(item.version)}
                disabled={openVersion.isPending}
              >
                Open
              </button>
            </li>
          ))}
        </ol>
      </section>
      <DefinitionText current={definition} onApply={load} />
    </div>
  );
}

export default function EditorPage() {
  const id = usePipelineId();
  const pipeline = usePipeline(id);
  const initial = useMemo(() => {
    try {
      return pipeline.data ? asDefinition(pipeline.data.definition) : null;
    } catch {
      return null;
    }
    // The editor starts from the definition first loaded; saving updates the query, not the draft.
  }, [pipeline.data?.id]);
  return (
    <section className="stack">
      <PipelineHeader />
      {pipeline.isPending ? <p aria-busy="true">Loading…</p> : null}
      {pipeline.data && initial ? (
        <ReactFlowProvider>
          <Editor key={id} id={id} initial={initial} version={pipeline.data.version} />
        </ReactFlowProvider>
      ) : null}
    </section>
  );
}
