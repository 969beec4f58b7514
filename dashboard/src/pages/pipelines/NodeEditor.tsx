// The side panel of the editor for one node: its id, name, retry and timeout, its type's
// config (a form generated from the node type's JSON Schema), and the edges out of it.

import { useEffect, useState } from "react";

import type { JsonObject, NodeDef, Problem } from "./definition";
import { JsonField, ObjectFields, resolve, type Schema } from "./SchemaForm";

const ID = /^[A-Za-z0-9_-]{1,64}$/;

export interface OutEdge {
  key: string;
  to: string;
  condition: string;
}

interface Props {
  def: NodeDef;
  schema: Schema | undefined;
  root: Schema;
  nodeIds: string[];
  outgoing: OutEdge[];
  problems: Problem[];
  onChange: (def: NodeDef) => void;
  onRename: (to: string) => string | null;
  onRemove: () => void;
  onConnect: (to: string) => void;
  onEdgeCondition: (key: string, condition: string) => void;
  onEdgeRemove: (key: string) => void;
}

function RenameField({ id, onRename }: { id: string; onRename: (to: string) => string | null }) {
  const [text, setText] = useState(id);
  const [error, setError] = useState<string | null>(null);
  useEffect(() => {
    setText(id);
    setError(null);
  }, [id]);
  const commit = () => {
    if (text === id) return;
    if (!ID.test(text)) {
      setError("1–64 letters, digits, _ or -");
      return;
    }
    setError(onRename(text));
  };
  return (
    <label>
      Id
      <input
        value={text}
        aria-invalid={error ? true : undefined}
        onChange={(event) => setText(event.target.value)}
        onBlur={commit}
        onKeyDown={(event) => {
          if (event.key === "Enter") {
            event.preventDefault();
            commit();
          }
        }}
      />
      {error ? <span className="bad field-hint">{error}</span> : null}
    </label>
  );
}

function EdgesOut({
  from,
  nodeIds,
  outgoing,
  onConnect,
  onEdgeCondition,
  onEdgeRemove,
}: Pick<Props, "nodeIds" | "outgoing" | "onConnect" | "onEdgeCondition" | "onEdgeRemove"> & { from: string }) {
  const targets = nodeIds.filter((id) => id !== from && !outgoing.some((edge) => edge.to === id));
  const [to, setTo] = useState("");
  return (
    <fieldset className="schema-object">
      <legend>Edges out of {from}</legend>
      {outgoing.length ? null : <p className="muted">None.</p>}
      {outgoing.map((edge) => (
        <div key={edge.key} className="edge-row">
          <label>
            To {edge.to}: condition (optional)
            <input
              value={edge.condition}
              placeholder="always"
              onChange={(event) => onEdgeCondition(edge.key, event.target.value)}
            />
          </label>
          <button type="button" aria-label={`Remove the edge from ${from} to ${edge.to}`} onClick={() => onEdgeRemove(edge.key)}>
            Remove
          </button>
        </div>
      ))}
      {targets.length ? (
        <div className="row">
          <label className="grow">
            Connect to
            <select value={to} onChange={(event) => setTo(event.target.value)}>
              <option value="">choose a node</option>
              {targets.map((id) => (
                <option key={id} value={id}>
                  {id}
                </option>
              ))}
            </select>
          </label>
          <button
            type="button"
            disabled={!to}
            onClick={() => {
              onConnect(to);
              setTo("");
            }}
          >
            Add edge
          </button>
        </div>
      ) : null}
    </fieldset>
  );
}

export function NodeEditor(props: Props) {
  const { def, schema, root, problems, onChange } = props;
  const properties = (schema?.properties ?? {}) as Record<string, Schema>;
  const config = (def.config ?? {}) as JsonObject;
  const invalid = problems
    .map((problem) => /\.config\.([A-Za-z_]+)/.exec(problem.path)?.[1])
    .filter((key): key is string => Boolean(key));
  const { id: _id, type: _type, config: _config, ...rest } = def;
  void _id;
  void _type;
  void _config;
  return (
    <div className="stack" aria-label={`Node ${def.id}`} role="group">
      <p className="muted">
        A <strong>{def.type}</strong> node
      </p>
      {problems.length ? (
        <ul className="problem problem-list" aria-label="This node's problems">
          {problems.map((problem, index) => (
            <li key={index}>
              <span className="badge">{problem.code}</span> {problem.message}
            </li>
          ))}
        </ul>
      ) : null}
      <RenameField id={def.id} onRename={props.onRename} />
      {schema ? (
        <>
          <ObjectFields
            schema={{ properties: Object.fromEntries(Object.entries(properties).filter(([key]) => key !== "config")) }}
            root={root}
            value={rest as JsonObject}
            exclude={["id", "type"]}
            onChange={(next) => onChange({ id: def.id, type: def.type, ...next, ...(def.config ? { config: def.config } : {}) })}
          />
          <fieldset className="schema-object">
            <legend>Config</legend>
            <ObjectFields
              schema={resolve(properties.config, root)}
              root={root}
              value={config}
              invalid={invalid}
              onChange={(next) => onChange({ ...def, config: next })}
            />
          </fieldset>
        </>
      ) : (
        <JsonField
          text="Config"
          value={def.config}
          hint="The node type's fields (docs/pipelines.md)."
          rows={8}
          onChange={(next) => onChange({ ...def, config: (next ?? {}) as JsonObject })}
        />
      )}
      <EdgesOut
        from={def.id}
        nodeIds={props.nodeIds}
        outgoing={props.outgoing}
        onConnect={props.onConnect}
        onEdgeCondition={props.onEdgeCondition}
        onEdgeRemove={props.onEdgeRemove}
      />
      <div className="row">
        <button type="button" onClick={props.onRemove}>
          Delete node {def.id}
        </button>
      </div>
    </div>
  );
}
