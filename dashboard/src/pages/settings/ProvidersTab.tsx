// Model providers: list, add, change, delete and test. A key is typed in, sent once, and never
// shown back (the server answers with a mask only).

import { useMutation, useQuery, useQueryClient } from "@tanstack/react-query";
import { useState, type FormEvent } from "react";

import { api, must } from "../../api/client";
import type { components, paths } from "../../api/schema";
import { ProblemView } from "../../components/ProblemView";
import { seconds, when } from "../../format";

type Provider = components["schemas"]["ProviderOut"];
type Kind = Provider["kind"];
type ProviderCreate = paths["/providers"]["post"]["requestBody"]["content"]["application/json"];
/** One of the API's change shapes (same kind, or a new kind with its fields), built field by field. */
type ProviderChange = Record<string, unknown>;

const KINDS: { value: Kind; label: string }[] = [
  { value: "anthropic", label: "Anthropic" },
  { value: "openai", label: "OpenAI" },
  { value: "openai-compatible", label: "OpenAI-compatible server" },
  { value: "ollama", label: "Ollama" },
  { value: "local", label: "Local (embedded model)" },
];

const hasAddress = (kind: Kind) => kind !== "local";
const hasKey = (kind: Kind) => kind !== "local" && kind !== "ollama";

function AddressField({ kind, defaultValue }: { kind: Kind; defaultValue?: string }) {
  if (!hasAddress(kind)) return null;
  const required = kind === "openai-compatible";
  return (
    <label>
      Address{required ? "" : " (optional)"}
      <input
        name="base_url"
        type="url"
        required={required}
        defaultValue={defaultValue}
        placeholder={kind === "ollama" ? "http://127.0.0.1:11434" : "https://host/v1"}
        autoComplete="off"
      />
    </label>
  );
}

function KeyField({ kind, stored }: { kind: Kind; stored?: string | null }) {
  if (!hasKey(kind)) return null;
  return (
    <label>
      API key{stored ? " (leave empty to keep the stored one)" : " (optional)"}
      <input name="key" type="password" autoComplete="new-password" spellCheck={false} maxLength={4096} />
    </label>
  );
}

function AddProvider({ onDone }: { onDone: () => void }) {
  const client = useQueryClient();
  const [kind, setKind] = useState<Kind>("openai-compatible");
  const add = useMutation({
    mutationFn: (body: ProviderCreate) => must(api.POST("/providers", { body })),
    onSuccess: async () => {
      await client.invalidateQueries({ queryKey: ["providers"] });
      onDone();
    },
  });
  function submit(event: FormEvent<HTMLFormElement>) {
    event.preventDefault();
    const form = new FormData(event.currentTarget);
    const body: Record<string, unknown> = { name: String(form.get("name")).trim(), kind };
    const url = String(form.get("base_url") ?? "").trim();
    const key = String(form.get("key") ?? "");
    if (hasAddress(kind) && url) body.base_url = url;
    if (hasKey(kind) && key) body.key = key;
    add.mutate(body as ProviderCreate);
  }
  return (
    <form className="card stack" onSubmit={submit} aria-label="New provider">
      <h3>New provider</h3>
      <p className="muted">A name of lower-case letters, digits, _ . or -.</p>
      <div className="form-grid">
        <label>
          Name
          <input name="name" required maxLength={63} autoComplete="off" />
        </label>
        <label>
          Kind
          <select value={kind} onChange={(event) => setKind(event.target.value as Kind)}>
            {KINDS.map((k) => (
              <option key={k.value} value={k.value}>
                {k.label}
              </option>
            ))}
          </select>
        </label>
        <AddressField kind={kind} />
        <KeyField kind={kind} />
      </div>
      {add.error ? <ProblemView error={add.error} /> : null}
      <div className="row">
        <button type="submit" className="primary" disabled={add.isPending}>
          Save provider
        </button>
        <button type="button" onClick={onDone}>
          Cancel
        </button>
      </div>
    </form>
  );
}

function ChangeProvider({ provider, onDone }: { provider: Provider; onDone: () => void }) {
  const client = useQueryClient();
  const [kind, setKind] = useState<Kind>(provider.kind);
  const change = useMutation({
    mutationFn: (body: ProviderChange) =>
      must(api.PATCH("/providers/{provider_id}", { params: { path: { provider_id: provider.id } }, body: body as never })),
    onSuccess: async () => {
      await client.invalidateQueries({ queryKey: ["providers"] });
      onDone();
    },
  });
  function submit(event: FormEvent<HTMLFormElement>) {
    event.preventDefault();
    const form = new FormData(event.currentTarget);
    const body: Record<string, unknown> = {};
    if (kind !== provider.kind) body.kind = kind;
    const name = String(form.get("name")).trim();
    if (name !== provider.name) body.name = name;
    if (hasAddress(kind)) {
      const url = String(form.get("base_url") ?? "").trim();
      if (url !== (provider.base_url ?? "") && (url || kind !== "openai-compatible")) body.base_url = url || null;
    }
    if (hasKey(kind)) {
      const key = String(form.get("key") ?? "");
      if (key) body.key = key;
      else if (form.get("remove_key")) body.key = null;
    }
    change.mutate(body);
  }
  return (
    <form className="card stack" onSubmit={submit} aria-label={`Change ${provider.name}`}>
      <h3>Change {provider.name}</h3>
      <div className="form-grid">
        <label>
          Name
          <input name="name" required maxLength={63} defaultValue={provider.name} autoComplete="off" />
        </label>
        <label>
          Kind
          <select value={kind} onChange={(event) => setKind(event.target.value as Kind)}>
            {KINDS.map((k) => (
              <option key={k.value} value={k.value}>
                {k.label}
              </option>
            ))}
          </select>
        </label>
        <AddressField kind={kind} defaultValue={provider.base_url ?? ""} />
        <KeyField kind={kind} stored={provider.key} />
      </div>
      {hasKey(kind) && provider.key ? (
        <label className="row">
          <input type="checkbox" name="remove_key" /> Remove the stored key ({provider.key})
        </label>
      ) : null}
      {change.error ? <ProblemView error={change.error} /> : null}
      <div className="row">
        <button type="submit" className="primary" disabled={change.isPending}>
          Save
        </button>
        <button type="button" onClick={onDone}>
          Cancel
        </button>
      </div>
    </form>
  );
}

function TestProvider({ provider }: { provider: Provider }) {
  const [model, setModel] = useState("");
  const test = useMutation({
    mutationFn: () =>
      must(
        api.POST("/providers/{provider_id}/test", {
          params: { path: { provider_id: provider.id } },
          body: model.trim() ? { model: model.trim() } : null,
        }),
      ),
  });
  const result = test.data;
  return (
    <div className="stack">
      <div className="row">
        <input
          value={model}
          onChange={(event) => setModel(event.target.value)}
          aria-label={`Model to test ${provider.name} with`}
          placeholder="default model"
          size={14}
        />
        <button type="button" onClick={() => test.mutate()} disabled={test.isPending} aria-label={`Test ${provider.name}`}>
          {test.isPending ? "Testing…" : "Test"}
        </button>
      </div>
      <div role="status" className="test-result">
        {result?.ok ? (
          <span className="ok">
            OK in {seconds(result.latency_ms)} ({result.model})
          </span>
        ) : null}
        {result && !result.ok ? (
          <div className="problem">
            <strong>
              Failed after {seconds(result.latency_ms)} ({result.model}): {result.error?.message ?? "no answer"}
            </strong>
            {result.error ? (
              <p>
                <code>{result.error.code}</code>
                {result.error.hint ? ` — ${result.error.hint}` : ""}
              </p>
            ) : null}
          </div>
        ) : null}
      </div>
      {test.error ? <ProblemView error={test.error} /> : null}
    </div>
  );
}

function ProviderRow({ provider, onChange }: { provider: Provider; onChange: () => void }) {
  const client = useQueryClient();
  const remove = useMutation({
    mutationFn: () => must(api.DELETE("/providers/{provider_id}", { params: { path: { provider_id: provider.id } } })),
    onSuccess: () => client.invalidateQueries({ queryKey: ["providers"] }),
  });
  return (
    <tr>
      <th scope="row">{provider.name}</th>
      <td>{KINDS.find((k) => k.value === provider.kind)?.label ?? provider.kind}</td>
      <td>{provider.base_url ? <code>{provider.base_url}</code> : <span className="muted">default</span>}</td>
      <td>
        {provider.key ? <code>{provider.key}</code> : <span className="muted">none stored</span>}
        {provider.key_source ? <div className="muted">in use: {provider.key_source}</div> : null}
      </td>
      <td>{when(provider.updated_at)}</td>
      <td>
        <TestProvider provider={provider} />
      </td>
      <td className="actions">
        <div className="row">
          <button type="button" onClick={onChange} aria-label={`Change ${provider.name}`}>
            Change
          </button>
          <button
            type="button"
            disabled={remove.isPending}
            aria-label={`Delete ${provider.name}`}
            onClick={() => {
              if (confirm(`Delete the provider ${provider.name} and its stored key?`)) remove.mutate();
            }}
          >
            Delete
          </button>
        </div>
        {remove.error ? <ProblemView error={remove.error} /> : null}
      </td>
    </tr>
  );
}

export default function ProvidersTab() {
  const providers = useQuery({ queryKey: ["providers"], queryFn: () => must(api.GET("/providers")) });
  const [editing, setEditing] = useState<Provider | "new" | null>(null);
  return (
    <section className="stack" aria-labelledby="providers-heading">
      <h2 id="providers-heading">Providers</h2>
      <p className="muted">
        Agents naming a kind (anthropic, openai, …) use the provider of that name, else the first of that kind. Keys are
        stored encrypted and never shown again.
      </p>
      {editing === null ? (
        <div>
          <button type="button" className="primary" onClick={() => setEditing("new")}>
            Add provider
          </button>
        </div>
      ) : editing === "new" ? (
        <AddProvider onDone={() => setEditing(null)} />
      ) : (
        <ChangeProvider key={editing.id} provider={editing} onDone={() => setEditing(null)} />
      )}
      {providers.isPending ? <p aria-busy="true">Loading…</p> : null}
      {providers.error ? <ProblemView error={providers.error} /> : null}
      {providers.data && !providers.data.length ? (
        <p className="muted">No provider configured: agents use the environment's (ANTHROPIC_API_KEY, OPENAI_API_KEY, …).</p>
      ) : null}
      {providers.data?.length ? (
        <div className="table-scroll">
          <table>
            <thead>
              <tr>
                <th scope="col">Name</th>
                <th scope="col">Kind</th>
                <th scope="col">Address</th>
                <th scope="col">Key</th>
                <th scope="col">Changed</th>
                <th scope="col">Test</th>
                <th scope="col">
                  <span className="muted">Actions</span>
                </th>
              </tr>
            </thead>
            <tbody>
              {providers.data.map((provider) => (
                <ProviderRow key={provider.id} provider={provider} onChange={() => setEditing(provider)} />
              ))}
            </tbody>
          </table>
        </div>
      ) : null}
    </section>
  );
}
