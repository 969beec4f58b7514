// One run, live: the graph of its version with each node coloured by its status as the
// pipeline's events arrive, a node's panel (inputs, output, attempts, error, timings, the
// answer a waiting node needs, a fork from it), a timeline, and cancel / retry.

import { useMutation, useQuery, useQueryClient } from "@tanstack/react-query";
import { ReactFlow, ReactFlowProvider, useNodesState, type OnSelectionChangeParams } from "@xyflow/react";
import { useEffect, useMemo, useState } from "react";
import { Link, useNavigate, useParams } from "react-router-dom";

import { api, must } from "../../api/client";
import { useLive, type LiveEvent } from "../../api/live";
import { ProblemView } from "../../components/ProblemView";
import { seconds, when } from "../../format";
import { nodesBefore, type Definition, type JsonObject } from "./definition";
import { Background, Controls, useColorMode, nodeTypes, stepLabel, toFlowEdges, toFlowNodes, type StepNode } from "./Graph";
import { PipelineHeader, usePipelineId } from "./PipelineHeader";
import { asBody, keys, savedLayout, span, useVersion, type NodeRun, type Run } from "./queries";
import { RunForm } from "./RunForm";
import { StatusBadge } from "./StatusBadge";
import { Timeline } from "./Timeline";
import "./pipelines.css";

function useRunId(): number {
  const { runId } = useParams();
  const id = Number(runId);
  return Number.isInteger(id) && id > 0 ? id : 0;
}

/** The node's state as an event says it, on the cached run (the refetch brings the rest). */
function patched(run: Run, event: LiveEvent): Run {
  const data = event.data;
  if (event.type.startsWith("pipeline_run.") && typeof data.status === "string") return { ...run, status: data.status };
  if (!event.type.startsWith("pipeline_node.") || typeof data.node !== "string") return run;
  const status = event.type === "pipeline_node.retrying" ? "queued" : String(data.status ?? "");
  return {
    ...run,
    nodes: (run.nodes ?? []).map((node) =>
      node.node_id === data.node
        ? { ...node, status: status || node.status, attempt: typeof data.attempt === "number" ? data.attempt : node.attempt }
        : node,
    ),
  };
}

function Json({ value }: { value: unknown }) {
  return <pre className="json-view">{typeof value === "string" ? value : JSON.stringify(value, null, 2)}</pre>;
}

function Resolve({ run, node, type }: { run: Run; node: NodeRun; type: string }) {
  const client = useQueryClient();
  const [comment, setComment] = useState("");
  const resolve = useMutation({
    mutationFn: (action: "approve" | "deny" | "retry" | "skip") =>
      must(
        api.POST("/pipelines/runs/{run_id}/nodes/{node_id}/resolve", {
          params: { path: { run_id: run.id, node_id: node.node_id } },
          body: { action, comment },
        }),
      ),
    onSuccess: (updated) => client.setQueryData(keys.run(run.id), updated),
  });
  const approval = type === "approval";
  const unknown = node.error?.code === "outcome_unknown" || (node.error !== null && node.error !== undefined && !approval);
  if (node.status !== "waiting" || (!approval && !unknown)) return null;
  return (
    <div className="card stack">
      <strong>{approval ? "This node waits for a decision" : "This node's outcome is unknown: decide"}</strong>
      {approval ? (
        <label>
          Comment (optional)
          <input value={comment} maxLength={2000} onChange={(event) => setComment(event.target.value)} />
        </label>
      ) : null}
      <div className="row">
        {approval ? (
          <>
            <button type="button" className="primary" disabled={resolve.isPending} onClick={() => resolve.mutate("approve")}>
              Approve
            </button>
            <button type="button" disabled={resolve.isPending} onClick={() => resolve.mutate("deny")}>
              Deny
            </button>
          </>
        ) : (
          <>
            <button type="button" className="primary" disabled={resolve.isPending} onClick={() => resolve.mutate("retry")}>
              Run it again
            </button>
            <button type="button" disabled={resolve.isPending} onClick={() => resolve.mutate("skip")}>
              Skip it
            </button>
          </>
        )}
      </div>
      {resolve.error ? <ProblemView error={resolve.error} /> : null}
    </div>
  );
}

function Fork({ run, node, schema }: { run: Run; node: string; schema: JsonObject | undefined }) {
  const navigate = useNavigate();
  const fork = useMutation({
    mutationFn: (input: JsonObject) =>
      must(api.POST("/pipelines/runs/{run_id}/fork", { params: { path: { run_id: run.id } }, body: { node, input: asBody(input) } })),
    onSuccess: (created) => navigate(`/pipelines/${run.pipeline_id}/runs/${created.id}`),
  });
  return (
    <details className="card">
      <summary>Fork from {node} with edited input</summary>
      <p className="muted">A new run that reuses the outputs before {node} and runs it and what follows again.</p>
      <RunForm
        key={`${run.id}:${node}`}
        schema={schema}
        initial={run.input as JsonObject}
        label={`Fork input from ${node}`}
        submitLabel={`Fork from ${node}`}
        pending={fork.isPending}
        onSubmit={(input) => fork.mutate(input)}
      />
      {fork.error ? <ProblemView error={fork.error} /> : null}
    </details>
  );
}

function NodePanel({ run, node, definition }: { run: Run; node: NodeRun; definition: Definition }) {
  const def = definition.nodes.find((item) => item.id === node.node_id);
  const before = nodesBefore(definition, node.node_id);
  const outputs = Object.fromEntries((run.nodes ?? []).map((item) => [item.node_id, item]));
  const took = span(node.started_at, node.finished_at);
  return (
    <div className="stack">
      <dl className="facts">
        <dt>Status</dt>
        <dd>
          <StatusBadge status={node.status} />
          {node.reused ? <span className="muted"> (reused from run {run.parent_run_id})</span> : null}
        </dd>
        <dt>Type</dt>
        <dd>{def?.type ?? "—"}</dd>
        <dt>Attempts</dt>
        <dd>{node.attempt}</dd>
        <dt>Started</dt>
        <dd>{when(node.started_at)}</dd>
        <dt>Finished</dt>
        <dd>{when(node.finished_at)}</dd>
        <dt>Took</dt>
        <dd>{took === null ? "—" : `${seconds(took)}${node.finished_at ? "" : " so far"}`}</dd>
        {node.wake_at ? (
          <>
            <dt>Wakes at</dt>
            <dd>{when(node.wake_at)}</dd>
          </>
        ) : null}
        {node.deadline ? (
          <>
            <dt>Deadline</dt>
            <dd>{when(node.deadline)}</dd>
          </>
        ) : null}
      </dl>
      <Resolve run={run} node={node} type={def?.type ?? ""} />
      {node.error ? (
        <div className="problem">
          <strong>
            Error{typeof node.error.code === "string" ? ` (${node.error.code})` : ""}:{" "}
            {typeof node.error.message === "string" ? node.error.message : ""}
          </strong>
          <Json value={node.error} />
        </div>
      ) : null}
      <h3>Inputs</h3>
      {def?.type === "trigger" ? (
        <>
          <p className="muted">The run&apos;s input:</p>
          <Json value={run.input} />
        </>
      ) : before.length ? (
        before.map((id) => (
          <div key={id}>
            <p className="muted">Output of {id}:</p>
            <Json value={outputs[id]?.output ?? null} />
          </div>
        ))
      ) : (
        <p className="muted">No node before it.</p>
      )}
      {def?.config ? (
        <>
          <p className="muted">Config (templates rendered over the input and these outputs):</p>
          <Json value={def.config} />
        </>
      ) : null}
      <h3>Output</h3>
      {node.output === null || node.output === undefined ? <p className="muted">None yet.</p> : <Json value={node.output} />}
      <Fork run={run} node={node.node_id} schema={definition.input_schema} />
    </div>
  );
}

function RunControls({ run }: { run: Run }) {
  const client = useQueryClient();
  const navigate = useNavigate();
  const cancel = useMutation({
    mutationFn: () => must(api.POST("/pipelines/runs/{run_id}/cancel", { params: { path: { run_id: run.id } } })),
    onSuccess: (updated) => client.setQueryData(keys.run(run.id), updated),
  });
  const retry = useMutation({
    mutationFn: () => must(api.POST("/pipelines/runs/{run_id}/retry", { params: { path: { run_id: run.id } } })),
    onSuccess: (created) => navigate(`/pipelines/${run.pipeline_id}/runs/${created.id}`),
  });
  return (
    <div className="stack">
      <div className="row" role="group" aria-label="Run controls">
        {run.status === "running" ? (
          <button type="button" disabled={cancel.isPending} onClick={() => cancel.mutate()}>
            Cancel run
          </button>
        ) : null}
        {run.status === "failed" || run.status === "cancelled" ? (
          <button type="button" className="primary" disabled={retry.isPending} onClick={() => retry.mutate()}>
            Retry from the failure
          </button>
        ) : null}
      </div>
      {cancel.error ? <ProblemView error={cancel.error} /> : null}
      {retry.error ? <ProblemView error={retry.error} /> : null}
    </div>
  );
}

function RunGraph({ run, definition, selected, onSelect }: { run: Run; definition: Definition; selected: string | null; onSelect: (id: string) => void }) {
  const states = useMemo(() => new Map((run.nodes ?? []).map((node) => [node.node_id, node])), [run.nodes]);
  const [nodes, setNodes, onNodesChange] = useNodesState<StepNode>(toFlowNodes(definition, savedLayout(run.pipeline_id)));
  const edges = useMemo(() => toFlowEdges(definition), [definition]);
  const theme = useColorMode();
  useEffect(() => {
    setNodes((all) =>
      all.map((node) => {
        const state = states.get(node.id);
        const status = state?.status ?? "pending";
        const attempt = state?.attempt ?? 0;
        if (node.data.status === status && node.data.attempt === attempt && node.selected === (node.id === selected)) return node;
        return {
          ...node,
          selected: node.id === selected,
          data: { ...node.data, status, attempt },
          ariaLabel: stepLabel(node.data.def, status),
        };
      }),
    );
  }, [states, selected, setNodes]);
  return (
    <div className="flow">
      <ReactFlow<StepNode>
        nodes={nodes}
        edges={edges}
        nodeTypes={nodeTypes}
        onNodesChange={onNodesChange}
        nodesConnectable={false}
        onSelectionChange={({ nodes: chosen }: OnSelectionChangeParams<StepNode>) => {
          if (chosen.length === 1 && chosen[0]) onSelect(chosen[0].id);
        }}
        colorMode={theme}
        fitView
        fitViewOptions={{ maxZoom: 1 }}
      >
        <Background />
        <Controls showInteractive={false} />
      </ReactFlow>
    </div>
  );
}

function RunView({ run, definition }: { run: Run; definition: Definition }) {
  const [selected, setSelected] = useState<string | null>(null);
  const [now, setNow] = useState(() => Date.now());
  useEffect(() => {
    if (run.status !== "running") return;
    const timer = setInterval(() => setNow(Date.now()), 1000);
    return () => clearInterval(timer);
  }, [run.status]);
  const node = (run.nodes ?? []).find((item) => item.node_id === selected);
  const took = span(run.created_at, run.finished_at);
  return (
    <div className="stack">
      <div className="row">
        <StatusBadge status={run.status} />
        <span className="muted">
          version {run.version} · {run.trigger} · started {when(run.created_at)}
          {took !== null ? ` · ${seconds(run.finished_at ? took : now - Date.parse(run.created_at))}` : ""}
        </span>
        {run.parent_run_id ? (
          <Link to={`/pipelines/${run.pipeline_id}/runs/${run.parent_run_id}`}>
            {run.relation} of run {run.parent_run_id}
          </Link>
        ) : null}
      </div>
      {run.error ? (
        <div className="problem" role="alert">
          <strong>{typeof run.error.message === "string" ? run.error.message : "The run failed"}</strong>
          {typeof run.error.node === "string" ? <p>at node {run.error.node}</p> : null}
        </div>
      ) : null}
      <RunControls run={run} />
      <div className="editor-grid">
        <section className="card flow-card" aria-labelledby="run-graph-title">
          <h2 id="run-graph-title">Graph</h2>
          <RunGraph run={run} definition={definition} selected={selected} onSelect={setSelected} />
          <ul className="legend" aria-label="Node statuses">
            {(run.nodes ?? []).map((item) => (
              <li key={item.node_id}>
                <button type="button" aria-pressed={item.node_id === selected} onClick={() => setSelected(item.node_id)}>
                  {item.node_id}
                </button>{" "}
                <StatusBadge status={item.status} />
              </li>
            ))}
          </ul>
        </section>
        <section className="card stack side" aria-labelledby="run-node-title">
          <h2 id="run-node-title">{node ? `Node ${node.node_id}` : "Node"}</h2>
          {node ? (
            <NodePanel run={run} node={node} definition={definition} />
          ) : (
            <p className="muted">Choose a node on the graph or in the list under it.</p>
          )}
        </section>
      </div>
      <section className="card" aria-labelledby="timeline-title">
        <h2 id="timeline-title">Timeline</h2>
        <Timeline run={run} now={now} />
      </section>
    </div>
  );
}

export default function RunPage() {
  const pipelineId = usePipelineId();
  const runId = useRunId();
  const client = useQueryClient();
  const [liveOk, setLiveOk] = useState(false);
  const run = useQuery({
    queryKey: keys.run(runId),
    queryFn: () => must(api.GET("/pipelines/runs/{run_id}", { params: { path: { run_id: runId } } })),
    // Polling only while the live events are not coming (a fallback).
    refetchInterval: (query) => (!liveOk && query.state.data?.status === "running" ? 2000 : false),
  });
  const version = useVersion(pipelineId, run.data?.version);
  const live = useLive({
    patterns: ["pipeline_run.*", "pipeline_node.*"],
    subjects: [`pipeline:${pipelineId}`],
    onEvent: (event) => {
      if (event.data.run_id !== runId) {
        void client.invalidateQueries({ queryKey: keys.runs(pipelineId) });
        return;
      }
      client.setQueryData<Run>(keys.run(runId), (old) => (old ? patched(old, event) : old));
      void client.invalidateQueries({ queryKey: keys.run(runId) });
    },
    onState: (state) => setLiveOk(state === "live"),
  });
  return (
    <section className="stack">
      <PipelineHeader title={`Run ${runId}`} />
      <p className="muted">Live updates: {live}</p>
      {run.isPending ? <p aria-busy="true">Loading…</p> : null}
      {run.error ? <ProblemView error={run.error} /> : null}
      {version.error ? <ProblemView error={version.error} /> : null}
      {run.data && version.data ? (
        <ReactFlowProvider>
          <RunView run={run.data} definition={version.data.definition} />
        </ReactFlowProvider>
      ) : null}
    </section>
  );
}
