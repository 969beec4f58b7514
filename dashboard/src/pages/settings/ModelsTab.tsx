// Models and prices: the shipped table merged with the admins' overrides; override a model's
// prices and limits, or reset it to the shipped values.

import { useMutation, useQuery, useQueryClient } from "@tanstack/react-query";
import { useDeferredValue, useState, type FormEvent } from "react";

import { api, must } from "../../api/client";
import type { components } from "../../api/schema";
import { ProblemView } from "../../components/ProblemView";
import { when } from "../../format";
import { overrideBody, type Override } from "./forms";

type Model = components["schemas"]["ModelOut"];

const SHOWN = 200;
const count = new Intl.NumberFormat();
const price = (value: number | null) => (value === null ? "—" : `$${value}`);

function OverrideForm({ model, onDone }: { model: Partial<Model>; onDone: () => void }) {
  const client = useQueryClient();
  const save = useMutation({
    mutationFn: ({ provider, name, body }: { provider: string; name: string; body: Override }) =>
      must(api.PUT("/models/{provider}/{model}", { params: { path: { provider, model: name } }, body })),
    onSuccess: async () => {
      await client.invalidateQueries({ queryKey: ["models"] });
      onDone();
    },
  });
  const known = Boolean(model.provider && model.model);
  function submit(event: FormEvent<HTMLFormElement>) {
    event.preventDefault();
    const form = new FormData(event.currentTarget);
    save.mutate({
      provider: String(form.get("provider")).trim(),
      name: String(form.get("model")).trim(),
      body: overrideBody(form, model),
    });
  }
  const title = known ? `Override ${model.provider} / ${model.model}` : "Override a model";
  return (
    <form className="card stack" onSubmit={submit} aria-label={title}>
      <h3>{title}</h3>
      <p className="muted">Prices in US dollars per million tokens. A field left empty keeps the shipped value.</p>
      <div className="form-grid">
        <label>
          Provider (a kind or a provider&apos;s name)
          <input name="provider" required defaultValue={model.provider} readOnly={known} autoComplete="off" />
        </label>
        <label>
          Model
          <input name="model" required defaultValue={model.model} readOnly={known} autoComplete="off" />
        </label>
        <label>
          Input price
          <input name="input_per_million" type="number" min={0} step="any" defaultValue={model.input_per_million ?? undefined} autoFocus={known} />
        </label>
        <label>
          Output price
          <input name="output_per_million" type="number" min={0} step="any" defaultValue={model.output_per_million ?? undefined} />
        </label>
        <label>
          Cached input price
          <input name="cached_input_per_million" type="number" min={0} step="any" defaultValue={model.cached_input_per_million ?? undefined} />
        </label>
        <label>
          Context window (tokens)
          <input name="context_window" type="number" min={1} step={1} defaultValue={model.context_window ?? undefined} />
        </label>
        <label>
          Max output (tokens)
          <input name="max_output" type="number" min={1} step={1} defaultValue={model.max_output ?? undefined} />
        </label>
      </div>
      {save.error ? <ProblemView error={save.error} /> : null}
      <div className="row">
        <button type="submit" className="primary" disabled={save.isPending}>
          Save override
        </button>
        <button type="button" onClick={onDone}>
          Cancel
        </button>
      </div>
    </form>
  );
}

function ModelRow({ model, onOverride }: { model: Model; onOverride: () => void }) {
  const client = useQueryClient();
  const reset = useMutation({
    mutationFn: () =>
      must(api.DELETE("/models/{provider}/{model}", { params: { path: { provider: model.provider, model: model.model } } })),
    onSuccess: () => client.invalidateQueries({ queryKey: ["models"] }),
  });
  const name = `${model.provider} / ${model.model}`;
  return (
    <tr>
      <td>{model.provider}</td>
      <th scope="row">
        <code>{model.model}</code>
      </th>
      <td>{price(model.input_per_million)}</td>
      <td>{price(model.output_per_million)}</td>
      <td>{price(model.cached_input_per_million)}</td>
      <td>{model.context_window === null ? "—" : count.format(model.context_window)}</td>
      <td>{model.max_output === null ? "—" : count.format(model.max_output)}</td>
      <td>
        {model.source === "catalog" ? (
          <span className="badge" title={model.updated_at ? `since ${when(model.updated_at)}` : undefined}>
            override
          </span>
        ) : (
          <span className="muted">shipped</span>
        )}
      </td>
      <td className="actions">
        <div className="row">
          <button type="button" onClick={onOverride} aria-label={`Override ${name}`}>
            Override
          </button>
          {model.source === "catalog" ? (
            <button
              type="button"
              disabled={reset.isPending}
              aria-label={`Reset ${name}`}
              onClick={() => {
                if (confirm(`Back to the shipped values of ${name}?`)) reset.mutate();
              }}
            >
              Reset
            </button>
          ) : null}
        </div>
        {reset.error ? <ProblemView error={reset.error} /> : null}
      </td>
    </tr>
  );
}

export default function ModelsTab() {
  const models = useQuery({ queryKey: ["models"], queryFn: () => must(api.GET("/models")) });
  const [provider, setProvider] = useState("");
  const [search, setSearch] = useState("");
  const [onlyOverrides, setOnlyOverrides] = useState(false);
  const [editing, setEditing] = useState<Partial<Model> | null>(null);
  const needle = useDeferredValue(search.trim().toLowerCase());

  const providers = [...new Set((models.data ?? []).map((m) => m.provider))].sort();
  const matching = (models.data ?? []).filter(
    (m) =>
      (!provider || m.provider === provider) &&
      (!onlyOverrides || m.source === "catalog") &&
      (!needle || m.model.toLowerCase().includes(needle)),
  );

  return (
    <section className="stack" aria-labelledby="models-heading">
      <h2 id="models-heading">Models and prices</h2>
      {editing === null ? (
        <div>
          <button type="button" className="primary" onClick={() => setEditing({})}>
            Override a model
          </button>
        </div>
      ) : (
        <OverrideForm key={`${editing.provider}/${editing.model}`} model={editing} onDone={() => setEditing(null)} />
      )}
      <form className="row" aria-label="Filter models" onSubmit={(event) => event.preventDefault()}>
        <label className="inline">
          Provider
          <select value={provider} onChange={(event) => setProvider(event.target.value)}>
            <option value="">all</option>
            {providers.map((p) => (
              <option key={p} value={p}>
                {p}
              </option>
            ))}
          </select>
        </label>
        <label className="inline">
          Model
          <input type="search" value={search} onChange={(event) => setSearch(event.target.value)} placeholder="gpt-4o" />
        </label>
        <label className="inline">
          <input type="checkbox" checked={onlyOverrides} onChange={(event) => setOnlyOverrides(event.target.checked)} /> Overrides only
        </label>
      </form>
      {models.isPending ? <p aria-busy="true">Loading…</p> : null}
      {models.error ? <ProblemView error={models.error} /> : null}
      {models.data ? (
        <p className="muted" aria-live="polite">
          {matching.length > SHOWN ? `The first ${SHOWN} of ${matching.length} models` : `${matching.length} model${matching.length === 1 ? "" : "s"}`}
        </p>
      ) : null}
      {matching.length ? (
        <div className="table-scroll">
          <table>
            <thead>
              <tr>
                <th scope="col">Provider</th>
                <th scope="col">Model</th>
                <th scope="col">Input $/M</th>
                <th scope="col">Output $/M</th>
                <th scope="col">Cached $/M</th>
                <th scope="col">Context</th>
                <th scope="col">Max output</th>
                <th scope="col">Source</th>
                <th scope="col">
                  <span className="muted">Actions</span>
                </th>
              </tr>
            </thead>
            <tbody>
              {matching.slice(0, SHOWN).map((model) => (
                <ModelRow key={`${model.provider}/${model.model}`} model={model} onOverride={() => setEditing(model)} />
              ))}
            </tbody>
          </table>
        </div>
      ) : null}
    </section>
  );
}
