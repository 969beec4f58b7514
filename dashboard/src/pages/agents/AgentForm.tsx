// The agent itself: name, provider and model, persona, project and turn limits (PATCH /agents/{id}).

import { useMutation, useQuery, useQueryClient } from "@tanstack/react-query";
import { useState, type FormEvent } from "react";

import { api, must } from "../../api/client";
import type { components } from "../../api/schema";
import { ProblemView } from "../../components/ProblemView";
import { money } from "../../format";
import { agentChanges, PROVIDER_KINDS, type Agent } from "./settingsForms";

type ProviderOut = components["schemas"]["ProviderOut"];

/** Which configured provider an agent naming this kind calls (docs/catalog.md). */
function configuredFor(kind: string, providers: ProviderOut[]): ProviderOut | undefined {
  const talksTo = (provider: ProviderOut) =>
    provider.kind === kind || (kind === "openai" && provider.kind === "openai-compatible");
  return providers.find((provider) => provider.name === kind && talksTo(provider)) ?? providers.find((p) => p.kind === kind);
}

function ProviderChoice({ provider, onChange }: { provider: string; onChange: (value: string) => void }) {
  const providers = useQuery({ queryKey: ["providers"], queryFn: () => must(api.GET("/providers")) });
  const kinds: string[] = PROVIDER_KINDS.includes(provider as never) ? PROVIDER_KINDS : [provider, ...PROVIDER_KINDS];
  const configured = configuredFor(provider, providers.data ?? []);
  return (
    <label>
      Provider
      <select name="provider" value={provider} onChange={(event) => onChange(event.target.value)} aria-describedby="provider-note">
        {kinds.map((kind) => {
          const entry = configuredFor(kind, providers.data ?? []);
          return (
            <option key={kind} value={kind}>
              {entry ? `${kind} (configured: ${entry.name})` : kind}
            </option>
          );
        })}
      </select>
      <span id="provider-note" className="muted small">
        {providers.error
          ? "The configured providers could not be read."
          : configured
            ? `Calls go to ${configured.name}${configured.base_url ? ` at ${configured.base_url}` : ""}; key: ${configured.key_source ?? "none"}.`
            : "No configured provider of this kind: the server's environment decides."}
      </span>
    </label>
  );
}

function ModelChoice({ provider, model, onChange }: { provider: string; model: string; onChange: (value: string) => void }) {
  const models = useQuery({
    queryKey: ["models", provider],
    queryFn: () => must(api.GET("/models", { params: { query: { provider } } })),
  });
  const known = models.data?.find((row) => row.model === model);
  return (
    <label>
      Model
      <input
        name="model"
        list="model-choices"
        maxLength={200}
        value={model}
        placeholder="The provider's default model"
        onChange={(event) => onChange(event.target.value)}
        aria-describedby="model-note"
      />
      <datalist id="model-choices">
        {(models.data ?? []).map((row) => (
          <option key={row.model} value={row.model} />
        ))}
      </datalist>
      <span id="model-note" className="muted small">
        {known
          ? [
              known.context_window ? `${known.context_window.toLocaleString()} tokens of context` : null,
              known.input_per_million !== null
                ? `${money(known.input_per_million)} / ${money(known.output_per_million)} per million tokens in / out`
                : "unpriced",
            ]
              .filter(Boolean)
              .join(" · ")
          : `${models.data?.length ?? 0} known models for ${provider}; any other name is sent as is.`}
      </span>
    </label>
  );
}

/** The form starts from the agent as stored; the page remounts it when the agent changes. */
export function AgentForm({ agent, saved, setSaved }: { agent: Agent; saved: boolean; setSaved: (saved: boolean) => void }) {
  const client = useQueryClient();
  const [provider, setProvider] = useState(agent.provider);
  const [model, setModel] = useState(agent.model);
  const save = useMutation({
    mutationFn: (body: ReturnType<typeof agentChanges>) =>
      must(api.PATCH("/agents/{agent_id}", { params: { path: { agent_id: agent.id } }, body })),
    onSuccess: (updated) => {
      setSaved(true);
      client.setQueryData(["agents", agent.id], updated);
      void client.invalidateQueries({ queryKey: ["agents"], exact: true });
    },
  });

  function submit(event: FormEvent<HTMLFormElement>) {
    event.preventDefault();
    setSaved(false);
    const changes = agentChanges(agent, new FormData(event.currentTarget));
    if (!Object.keys(changes).length) {
      setSaved(true);
      return;
    }
    save.mutate(changes);
  }

  const persona = agent.persona;
  return (
    <form className="card stack" onSubmit={submit} aria-labelledby="agent-heading">
      <h2 id="agent-heading">Agent</h2>
      <div className="form-grid">
        <label>
          Name
          <input name="name" required maxLength={100} defaultValue={agent.name} />
        </label>
        <ProviderChoice
          provider={provider}
          onChange={(value) => {
            setProvider(value);
            setModel(value === agent.provider ? agent.model : "");
          }}
        />
        <ModelChoice provider={provider} model={model} onChange={setModel} />
        <label>
          Model calls per turn at most
          <input name="max_iterations" type="number" min={1} max={50} required defaultValue={agent.config.max_iterations} />
        </label>
      </div>
      <fieldset className="stack">
        <legend>Persona</legend>
        <div className="form-grid">
          <label>
            Role
            <input name="role" maxLength={200} defaultValue={persona.role ?? ""} />
          </label>
          <label>
            Language
            <input name="language" minLength={2} maxLength={35} defaultValue={persona.language ?? "en"} />
          </label>
          <label>
            Communication style
            <input name="communication_style" maxLength={500} defaultValue={persona.communication_style ?? ""} />
          </label>
        </div>
        <div className="form-grid">
          <label>
            Traits (one a line, or separated by commas)
            <textarea name="traits" rows={3} defaultValue={(persona.traits ?? []).join("\n")} />
          </label>
          <label>
            Specializations (one a line, or separated by commas)
            <textarea name="specializations" rows={3} defaultValue={(persona.specializations ?? []).join("\n")} />
          </label>
        </div>
        <label>
          Base prompt
          <textarea name="base_prompt" className="prompt" maxLength={20000} defaultValue={persona.base_prompt ?? ""} />
        </label>
      </fieldset>
      <label>
        Project (context added to the system prompt)
        <textarea name="project" rows={3} maxLength={4000} defaultValue={agent.config.project ?? ""} />
      </label>
      <RunLimits agent={agent} />
      {save.error ? <ProblemView error={save.error} /> : null}
      <div className="row">
        <button type="submit" className="primary" disabled={save.isPending}>
          {save.isPending ? "Saving…" : "Save"}
        </button>
        {saved && !save.isPending ? (
          <span role="status" className="ok">
            Saved.
          </span>
        ) : null}
      </div>
    </form>
  );
}

/** Settings the API shows but does not change. */
function RunLimits({ agent }: { agent: Agent }) {
  const options = Object.entries(agent.config.options ?? {});
  return (
    <dl className="agent-facts">
      <dt>Messages sent per turn</dt>
      <dd>{agent.config.history_window ?? "default (40)"}</dd>
      <dt>Prompt tokens at most</dt>
      <dd>{agent.config.prompt_budget ?? "the model's context window"}</dd>
      <dt>Provider options</dt>
      <dd>{options.length ? options.map(([key, value]) => `${key}: ${JSON.stringify(value)}`).join(", ") : "none"}</dd>
    </dl>
  );
}
