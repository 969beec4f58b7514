// A run's input as a form made from the pipeline's `input_schema` (strings, numbers,
// booleans, enums, required fields; anything freer as JSON). Starts a run or a fork.

import { useState, type FormEvent } from "react";

import type { JsonObject } from "./definition";
import { defaults, hasFields, JsonField, ObjectFields, type Schema } from "./SchemaForm";

interface Props {
  schema: JsonObject | undefined;
  initial?: JsonObject;
  submitLabel: string;
  pending: boolean;
  onSubmit: (input: JsonObject) => void;
  label: string;
}

export function RunForm({ schema, initial, submitLabel, pending, onSubmit, label }: Props) {
  const root = (schema ?? {}) as Schema;
  const withFields = hasFields(root, root);
  const [input, setInput] = useState<JsonObject>(() => initial ?? defaults(root, root));
  const [raw, setRaw] = useState<JsonObject | undefined>(() => initial ?? {});

  function submit(event: FormEvent<HTMLFormElement>) {
    event.preventDefault();
    onSubmit(withFields ? input : (raw ?? {}));
  }

  return (
    <form className="stack" onSubmit={submit} aria-label={label}>
      {withFields ? (
        <ObjectFields schema={root} root={root} value={input} onChange={setInput} />
      ) : (
        <JsonField
          text="Input"
          value={raw}
          rows={5}
          hint="The pipeline takes any object (its input schema names no field)."
          onChange={(next) => setRaw((next ?? {}) as JsonObject)}
        />
      )}
      <div className="row">
        <button type="submit" className="primary" disabled={pending}>
          {submitLabel}
        </button>
      </div>
    </form>
  );
}
