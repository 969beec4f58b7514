// Form fields generated from a JSON Schema: a node type's config (from the API's own OpenAPI
// schema, so the form follows the server) and a run's input (the pipeline's `input_schema`).
// Scalars get inputs, enums selects, booleans checkboxes, variants (`oneOf`) a select of their
// tag, objects with properties nested fields, and anything freer a JSON text area.

import { useEffect, useId, useState } from "react";

import type { Json, JsonObject } from "./definition";

export type Schema = { [key: string]: unknown };

function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

/** `schema` with its `$ref` followed (`#/components/schemas/X`, `#/$defs/X`), in `root`. */
export function resolve(schema: unknown, root: Schema): Schema {
  let current: unknown = schema;
  for (let hops = 0; hops < 16 && isObject(current) && typeof current.$ref === "string"; hops += 1) {
    const parts = current.$ref.replace(/^#\//, "").split("/");
    let found: unknown = root;
    for (const part of parts) found = isObject(found) ? found[decodeURIComponent(part)] : undefined;
    const { $ref: _ignored, ...rest } = current;
    void _ignored;
    current = isObject(found) ? { ...found, ...rest } : {};
  }
  return isObject(current) ? current : {};
}

/** Without its `null` choice: `anyOf: [X, {type: null}]` is X. */
function unwrapNullable(schema: Schema, root: Schema): Schema {
  const choices = schema.anyOf;
  if (!Array.isArray(choices)) return schema;
  const real = choices.map((choice) => resolve(choice, root)).filter((choice) => choice.type !== "null");
  if (real.length === 1 && real[0]) {
    const { anyOf: _a, ...rest } = schema;
    void _a;
    return { ...real[0], ...rest };
  }
  return schema;
}

function typeOf(schema: Schema): string | undefined {
  if (typeof schema.type === "string") return schema.type;
  if (Array.isArray(schema.type)) return schema.type.find((type) => type !== "null") as string | undefined;
  if (Array.isArray(schema.anyOf)) {
    const types = new Set(schema.anyOf.map((choice) => (isObject(choice) ? choice.type : undefined)));
    types.delete("null");
    if ([...types].every((type) => type === "string" || type === "integer" || type === "number")) return "scalar";
  }
  return undefined;
}

/** The property that tells a `oneOf`'s variants apart, and each value's variant. */
export function variantsOf(schema: Schema, root: Schema): { tag: string; options: [string, Schema][] } | null {
  const list = Array.isArray(schema.oneOf) ? schema.oneOf.map((choice) => resolve(choice, root)) : [];
  if (!list.length) return null;
  const discriminator = isObject(schema.discriminator) ? schema.discriminator : null;
  const first = list[0];
  const tag =
    typeof discriminator?.propertyName === "string"
      ? discriminator.propertyName
      : Object.keys(isObject(first?.properties) ? first.properties : {}).find((key) =>
          list.every((variant) => {
            const property = isObject(variant.properties) ? resolve(variant.properties[key], root) : {};
            return "const" in property || Array.isArray(property.enum);
          }),
        );
  if (!tag) return null;
  const options: [string, Schema][] = [];
  for (const variant of list) {
    const property = isObject(variant.properties) ? resolve(variant.properties[tag], root) : {};
    const values = "const" in property ? [property.const] : Array.isArray(property.enum) ? property.enum : [];
    for (const value of values) options.push([String(value), variant]);
  }
  return { tag, options };
}

function label(key: string, schema: Schema): string {
  const words = key.replace(/_/g, " ");
  // A title a person wrote (an input schema's), not a model's name (`RetryIn`).
  const titled = typeof schema.title === "string" && !/^[A-Z][A-Za-z]*(In|Out)$/.test(schema.title);
  return titled ? String(schema.title) : (words[0]?.toUpperCase() ?? "") + words.slice(1);
}

function Description({ id, schema }: { id: string; schema: Schema }) {
  return typeof schema.description === "string" ? (
    <span id={id} className="muted field-hint">
      {schema.description}
    </span>
  ) : null;
}

interface FieldProps {
  name: string;
  schema: Schema;
  root: Schema;
  value: Json | undefined;
  required: boolean;
  invalid?: boolean;
  onChange: (value: Json | undefined) => void;
}

/** A JSON text area: the value when the text parses, a message when it does not. */
export function JsonField({
  text: title,
  value,
  onChange,
  required,
  hint,
  rows = 4,
}: {
  text: string;
  value: Json | undefined;
  onChange: (value: Json | undefined) => void;
  required?: boolean;
  hint?: string;
  rows?: number;
}) {
  const hintId = useId();
  const errorId = useId();
  const inputId = useId();
  const shown = (current: Json | undefined) => (current === undefined ? "" : JSON.stringify(current, null, 2));
  const [text, setText] = useState(() => shown(value));
  const [error, setError] = useState<string | null>(null);
  useEffect(() => {
    setText((before) => {
      try {
        const parsed: unknown = before.trim() ? JSON.parse(before) : undefined;
        return JSON.stringify(parsed) === JSON.stringify(value) ? before : shown(value);
      } catch {
        return before;
      }
    });
  }, [value]);
  return (
    <div className="field">
      <label htmlFor={inputId}>
        {title}
        {required ? " (required)" : ""}
      </label>
      <textarea
        id={inputId}
        className="json-field"
        rows={rows}
        value={text}
        spellCheck={false}
        aria-invalid={error ? true : undefined}
        aria-describedby={[hint ? hintId : "", error ? errorId : ""].filter(Boolean).join(" ") || undefined}
        onChange={(event) => {
          setText(event.target.value);
          if (!event.target.value.trim()) {
            setError(null);
            onChange(undefined);
            return;
          }
          try {
            onChange(JSON.parse(event.target.value) as Json);
            setError(null);
          } catch (problem) {
            setError(`not JSON yet: ${(problem as Error).message}`);
          }
        }}
      />
      {hint ? (
        <span id={hintId} className="muted field-hint">
          {hint}
        </span>
      ) : null}
      {error ? (
        <span id={errorId} className="bad field-hint">
          {error}
        </span>
      ) : null}
    </div>
  );
}

/** One property's field, chosen by its schema. */
export function SchemaField({ name, schema: given, root, value, required, invalid, onChange }: FieldProps) {
  const hintId = useId();
  const inputId = useId();
  const schema = unwrapNullable(resolve(given, root), root);
  const title = label(name, schema);
  const described = typeof schema.description === "string" ? hintId : undefined;
  const shownTitle = `${title}${required ? " (required)" : ""}`;

  if ("const" in schema) return null; // fixed: nothing to choose
  const variants = variantsOf(schema, root);
  if (variants) {
    return (
      <fieldset className="schema-object">
        <legend>{title}</legend>
        <VariantFields schema={schema} root={root} value={value} onChange={onChange} />
      </fieldset>
    );
  }
  if (Array.isArray(schema.enum)) {
    const options = schema.enum.map((option) => JSON.stringify(option));
    const current = value === undefined ? "" : JSON.stringify(value);
    return (
      <div className="field">
        <label htmlFor={inputId}>{shownTitle}</label>
        <select
          id={inputId}
          value={current}
          required={required}
          aria-describedby={described}
          aria-invalid={invalid || undefined}
          onChange={(event) => onChange(event.target.value ? (JSON.parse(event.target.value) as Json) : undefined)}
        >
          {required && value !== undefined ? null : <option value="">{schema.default === undefined ? "—" : `default (${String(schema.default)})`}</option>}
          {options.map((option) => (
            <option key={option} value={option}>
              {String(JSON.parse(option))}
            </option>
          ))}
        </select>
        <Description id={hintId} schema={schema} />
      </div>
    );
  }
  const type = typeOf(schema);
  if (type === "boolean") {
    return (
      <div className="field">
        <label className="check">
          <input
            type="checkbox"
            checked={value === true}
            aria-describedby={described}
            onChange={(event) => onChange(event.target.checked)}
          />{" "}
          {title}
        </label>
        <Description id={hintId} schema={schema} />
      </div>
    );
  }
  if (type === "integer" || type === "number") {
    return (
      <div className="field">
        <label htmlFor={inputId}>{shownTitle}</label>
        <input
          id={inputId}
          type="number"
          step={type === "integer" ? 1 : "any"}
          min={typeof schema.minimum === "number" ? schema.minimum : undefined}
          max={typeof schema.maximum === "number" ? schema.maximum : undefined}
          required={required}
          value={typeof value === "number" ? value : ""}
          placeholder={schema.default === undefined ? undefined : String(schema.default)}
          aria-describedby={described}
          aria-invalid={invalid || undefined}
          onChange={(event) => onChange(event.target.value === "" ? undefined : Number(event.target.value))}
        />
        <Description id={hintId} schema={schema} />
      </div>
    );
  }
  if (type === "string" || type === "scalar") {
    const long = typeof schema.maxLength === "number" && schema.maxLength > 2000;
    const common = {
      id: inputId,
      value: value === undefined || value === null ? "" : String(value),
      required,
      "aria-describedby": described,
      "aria-invalid": invalid || undefined,
      placeholder: schema.default === undefined ? undefined : String(schema.default),
      maxLength: typeof schema.maxLength === "number" ? schema.maxLength : undefined,
    };
    const set = (text: string) => onChange(text === "" ? undefined : text);
    return (
      <div className="field">
        <label htmlFor={inputId}>{shownTitle}</label>
        {long ? (
          <textarea rows={3} {...common} onChange={(event) => set(event.target.value)} />
        ) : (
          <input {...common} onChange={(event) => set(event.target.value)} />
        )}
        <Description id={hintId} schema={schema} />
      </div>
    );
  }
  if (type === "array" && resolve(schema.items, root).type === "string") {
    return (
      <div className="field">
        <label htmlFor={inputId}>
          {shownTitle} <span className="muted">(separated by commas)</span>
        </label>
        <input
          id={inputId}
          value={Array.isArray(value) ? value.join(", ") : ""}
          aria-describedby={described}
          onChange={(event) => {
            const items = event.target.value
              .split(",")
              .map((item) => item.trim())
              .filter(Boolean);
            onChange(items.length ? items : undefined);
          }}
        />
        <Description id={hintId} schema={schema} />
      </div>
    );
  }
  if (type === "object" && isObject(schema.properties) && Object.keys(schema.properties).length) {
    const present = isObject(value);
    return (
      <fieldset className="schema-object">
        <legend>{title}</legend>
        {required ? null : (
          <label className="check">
            <span>
              <input type="checkbox" checked={present} onChange={(event) => onChange(event.target.checked ? {} : undefined)} /> Set{" "}
              {title.toLowerCase()}
            </span>
          </label>
        )}
        {present || required ? (
          <ObjectFields schema={schema} root={root} value={(present ? value : {}) as JsonObject} onChange={onChange} />
        ) : null}
      </fieldset>
    );
  }
  return (
    <JsonField
      text={`${title} (JSON)`}
      value={value}
      required={required}
      onChange={onChange}
      {...(typeof schema.description === "string" ? { hint: schema.description } : {})}
    />
  );
}

/** A `oneOf`: a select of its tag, then the chosen variant's fields. */
function VariantFields({
  schema,
  root,
  value,
  onChange,
}: {
  schema: Schema;
  root: Schema;
  value: Json | undefined;
  onChange: (value: JsonObject) => void;
}) {
  const variants = variantsOf(schema, root);
  const current = (isObject(value) ? value : {}) as JsonObject;
  if (!variants) return null;
  const fallback = variants.options[0]?.[0] ?? "";
  const chosen = current[variants.tag] === undefined ? fallback : String(current[variants.tag]);
  const variant = variants.options.find(([tag]) => tag === chosen)?.[1] ?? variants.options[0]?.[1] ?? {};
  return (
    <>
      <label>
        {label(variants.tag, {})}
        <select
          value={chosen}
          onChange={(event) => {
            // Keep the fields the next variant has too; drop the others.
            const next = variants.options.find(([tag]) => tag === event.target.value)?.[1] ?? {};
            const keys = new Set(Object.keys(isObject(next.properties) ? next.properties : {}));
            const kept = Object.fromEntries(Object.entries(current).filter(([key]) => keys.has(key)));
            onChange({ ...kept, [variants.tag]: event.target.value });
          }}
        >
          {variants.options.map(([tag]) => (
            <option key={tag} value={tag}>
              {tag}
            </option>
          ))}
        </select>
      </label>
      <ObjectFields
        schema={variant}
        root={root}
        value={current}
        exclude={[variants.tag]}
        onChange={(next) => onChange({ ...next, [variants.tag]: chosen })}
      />
    </>
  );
}

/** The fields of an object schema's properties (less `exclude`), as one value. */
export function ObjectFields({
  schema: given,
  root,
  value,
  onChange,
  exclude = [],
  invalid = [],
}: {
  schema: Schema;
  root: Schema;
  value: JsonObject;
  onChange: (value: JsonObject) => void;
  exclude?: string[];
  invalid?: string[];
}) {
  const schema = resolve(given, root);
  const variants = variantsOf(schema, root);
  if (variants) return <VariantFields schema={schema} root={root} value={value} onChange={onChange} />;
  const properties = isObject(schema.properties) ? schema.properties : {};
  const required = new Set(Array.isArray(schema.required) ? (schema.required as string[]) : []);
  return (
    <>
      {Object.entries(properties)
        .filter(([key]) => !exclude.includes(key))
        .map(([key, property]) => (
          <SchemaField
            key={key}
            name={key}
            schema={resolve(property, root)}
            root={root}
            value={value[key]}
            required={required.has(key)}
            invalid={invalid.includes(key)}
            onChange={(next) => {
              const copy = { ...value };
              if (next === undefined) delete copy[key];
              else copy[key] = next;
              onChange(copy);
            }}
          />
        ))}
    </>
  );
}

/** Whether `schema` describes an object with fields a form can show. */
export function hasFields(schema: Schema, root: Schema): boolean {
  const resolved = resolve(schema, root);
  return isObject(resolved.properties) && Object.keys(resolved.properties).length > 0;
}

/** A schema's defaults for its properties (a run form's starting values). */
export function defaults(schema: Schema, root: Schema): JsonObject {
  const resolved = resolve(schema, root);
  const out: JsonObject = {};
  for (const [key, property] of Object.entries(isObject(resolved.properties) ? resolved.properties : {})) {
    const found = resolve(property, root);
    if (found.default !== undefined) out[key] = found.default as Json;
  }
  return out;
}
