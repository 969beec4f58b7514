// API keys: list (an admin sees everyone's), create (the secret is shown once, here), revoke.

import { useMutation, useQuery, useQueryClient } from "@tanstack/react-query";
import { useState, type FormEvent } from "react";

import { api, must } from "../../api/client";
import type { components } from "../../api/schema";
import { useAuth } from "../../auth";
import { ProblemView } from "../../components/ProblemView";
import { when } from "../../format";
import { scopesField } from "./forms";

type ApiKey = components["schemas"]["ApiKeyResponse"];
type Created = components["schemas"]["ApiKeyCreatedResponse"];

function NewSecret({ created, onDone }: { created: Created; onDone: () => void }) {
  const [copied, setCopied] = useState<string | null>(null);
  return (
    <section className="card stack notice" aria-labelledby="new-key-heading">
      <h3 id="new-key-heading">The key {created.name}: copy it now</h3>
      <p>This is the only time it is shown. Send it as the <code>X-API-Key</code> header.</p>
      <output className="secret" aria-label="The new key">
        {created.key}
      </output>
      <div className="row">
        <button
          type="button"
          onClick={() =>
            navigator.clipboard.writeText(created.key).then(
              () => setCopied("Copied."),
              () => setCopied("The browser refused the clipboard: select the key and copy it."),
            )
          }
        >
          Copy
        </button>
        <button type="button" className="primary" onClick={onDone}>
          I have saved it
        </button>
        <span role="status" className="muted">
          {copied}
        </span>
      </div>
    </section>
  );
}

function CreateKey({ onCreated, onCancel }: { onCreated: (created: Created) => void; onCancel: () => void }) {
  const client = useQueryClient();
  const create = useMutation({
    mutationFn: (body: components["schemas"]["ApiKeyCreateRequest"]) => must(api.POST("/auth/api-keys", { body })),
    onSuccess: async (created) => {
      await client.invalidateQueries({ queryKey: ["api-keys"] });
      onCreated(created);
    },
  });
  function submit(event: FormEvent<HTMLFormElement>) {
    event.preventDefault();
    const form = new FormData(event.currentTarget);
    const days = String(form.get("expires_in_days") ?? "").trim();
    create.mutate({
      name: String(form.get("name")).trim(),
      scopes: scopesField(String(form.get("scopes") ?? "")),
      expires_in_days: days ? Number(days) : null,
    });
  }
  return (
    <form className="card stack" onSubmit={submit} aria-label="New API key">
      <h3>New API key</h3>
      <div className="form-grid">
        <label>
          Name
          <input name="name" required maxLength={100} autoComplete="off" />
        </label>
        <label>
          Scopes (separated by spaces or commas)
          <input name="scopes" required placeholder="agents:read usage:read" autoComplete="off" />
        </label>
        <label>
          Expires after (days, optional)
          <input name="expires_in_days" type="number" min={1} max={3650} step={1} />
        </label>
      </div>
      <p className="muted">
        Scopes: <code>resource:action</code> (<code>agents:read</code>, <code>usage:read</code>), <code>resource:*</code>,{" "}
        <code>*:read</code>, <code>admin</code> or <code>*</code>. A key acts as you, limited to its scopes.
      </p>
      {create.error ? <ProblemView error={create.error} /> : null}
      <div className="row">
        <button type="submit" className="primary" disabled={create.isPending}>
          Create key
        </button>
        <button type="button" onClick={onCancel}>
          Cancel
        </button>
      </div>
    </form>
  );
}

function KeyRow({ apiKey, owner }: { apiKey: ApiKey; owner: string }) {
  const client = useQueryClient();
  const revoke = useMutation({
    mutationFn: () => must(api.DELETE("/auth/api-keys/{key_id}", { params: { path: { key_id: apiKey.id } } })),
    onSuccess: () => client.invalidateQueries({ queryKey: ["api-keys"] }),
  });
  const expired = apiKey.expires_at !== null && new Date(apiKey.expires_at).getTime() < Date.now();
  return (
    <tr>
      <th scope="row">{apiKey.name}</th>
      <td>
        <code>gth_{apiKey.prefix}_…</code>
      </td>
      <td>{owner}</td>
      <td>
        {apiKey.scopes.map((scope) => (
          <code key={scope} className="badge">
            {scope}
          </code>
        ))}
      </td>
      <td>{when(apiKey.created_at)}</td>
      <td>{apiKey.last_used_at ? when(apiKey.last_used_at) : <span className="muted">never</span>}</td>
      <td>
        {apiKey.revoked_at ? (
          <span className="bad">revoked {when(apiKey.revoked_at)}</span>
        ) : expired ? (
          <span className="warn">expired {when(apiKey.expires_at)}</span>
        ) : (
          <span className="ok">active{apiKey.expires_at ? ` until ${when(apiKey.expires_at)}` : ""}</span>
        )}
      </td>
      <td className="actions">
        {apiKey.revoked_at ? null : (
          <button
            type="button"
            disabled={revoke.isPending}
            aria-label={`Revoke ${apiKey.name}`}
            onClick={() => {
              if (confirm(`Revoke the key ${apiKey.name}? Whatever uses it stops working at once.`)) revoke.mutate();
            }}
          >
            Revoke
          </button>
        )}
        {revoke.error ? <ProblemView error={revoke.error} /> : null}
      </td>
    </tr>
  );
}

export default function ApiKeysTab() {
  const { me, singleUser } = useAuth();
  const keys = useQuery({ queryKey: ["api-keys"], queryFn: () => must(api.GET("/auth/api-keys")) });
  const users = useQuery({ queryKey: ["users"], queryFn: () => must(api.GET("/users")), enabled: !singleUser });
  const [state, setState] = useState<"list" | "new" | Created>("list");
  const owner = (id: number) =>
    id === me.id ? (singleUser ? "you" : `${me.email} (you)`) : (users.data?.find((u) => u.id === id)?.email ?? `user #${id}`);
  return (
    <section className="stack" aria-labelledby="keys-heading">
      <h2 id="keys-heading">API keys</h2>
      {state === "list" ? (
        <div>
          <button type="button" className="primary" onClick={() => setState("new")}>
            New API key
          </button>
        </div>
      ) : state === "new" ? (
        <CreateKey onCreated={setState} onCancel={() => setState("list")} />
      ) : (
        <NewSecret created={state} onDone={() => setState("list")} />
      )}
      {keys.isPending ? <p aria-busy="true">Loading…</p> : null}
      {keys.error ? <ProblemView error={keys.error} /> : null}
      {keys.data && !keys.data.length ? <p className="muted">No API key yet.</p> : null}
      {keys.data?.length ? (
        <div className="table-scroll">
          <table>
            <thead>
              <tr>
                <th scope="col">Name</th>
                <th scope="col">Key</th>
                <th scope="col">Owner</th>
                <th scope="col">Scopes</th>
                <th scope="col">Created</th>
                <th scope="col">Last used</th>
                <th scope="col">State</th>
                <th scope="col">
                  <span className="muted">Actions</span>
                </th>
              </tr>
            </thead>
            <tbody>
              {keys.data.map((apiKey) => (
                <KeyRow key={apiKey.id} apiKey={apiKey} owner={owner(apiKey.user_id)} />
              ))}
            </tbody>
          </table>
        </div>
      ) : null}
    </section>
  );
}
