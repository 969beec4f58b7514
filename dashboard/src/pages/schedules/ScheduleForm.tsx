import { useQuery } from "@tanstack/react-query";
import { useMemo, useState, type FormEvent } from "react";

import { api, must } from "../../api/client";
import { ProblemView } from "../../components/ProblemView";
import { localProblem, useAgents, useDebounced, type Agent } from "../tasks/shared";
import {
  bodyOf,
  browserZone,
  CRON_PRESETS,
  JSON_KEYS,
  timingOf,
  UNITS,
  type Action,
  type Draft,
  type Kind,
  type ScheduleIn,
  type Unit,
} from "./draft";

type Change = (patch: Partial<Draft>) => void;

function zones(): string[] {
  try {
    return ["UTC", ...Intl.supportedValuesOf("timeZone").filter((zone) => zone !== "UTC")];
  } catch {
    return ["UTC"];
  }
}

function CronHelper({ draft, change }: { draft: Draft; change: Change }) {
  const known = useMemo(zones, []);
  return (
    <div className="stack">
      <fieldset className="row schedule-presets">
        <legend>Presets</legend>
        {CRON_PRESETS.map((preset) => (
          <button
            key={preset.cron}
            type="button"
            aria-pressed={draft.cron === preset.cron}
            onClick={() => change({ cron: preset.cron })}
          >
            {preset.label}
          </button>
        ))}
      </fieldset>
      <div className="row">
        <label>
          Cron expression
          <input
            value={draft.cron}
            onChange={(event) => change({ cron: event.target.value })}
            required
            maxLength={200}
            spellCheck={false}
            aria-describedby="cron-help"
          />
        </label>
        <label>
          Time zone
          <input
            value={draft.timezone}
            onChange={(event) => change({ timezone: event.target.value })}
            list="schedule-zones"
            maxLength={64}
            spellCheck={false}
          />
        </label>
        <datalist id="schedule-zones">
          {known.map((zone) => (
            <option key={zone} value={zone} />
          ))}
        </datalist>
        {draft.timezone !== browserZone() ? (
          <button type="button" onClick={() => change({ timezone: browserZone() })}>
            Use my time zone ({browserZone()})
          </button>
        ) : null}
      </div>
      <p id="cron-help" className="muted">
        minute hour day-of-month month day-of-week (or 6 fields, seconds first): e.g. <code>*/15 9-17 * * MON-FRI</code>
      </p>
    </div>
  );
}

function TimingFields({ draft, change }: { draft: Draft; change: Change }) {
  return (
    <fieldset className="stack">
      <legend>When</legend>
      <label>
        Kind
        <select value={draft.kind} onChange={(event) => change({ kind: event.target.value as Kind })}>
          <option value="cron">cron: at set times</option>
          <option value="interval">interval: every so often</option>
          <option value="once">once</option>
          <option value="event">event: when an event happens</option>
        </select>
      </label>
      {draft.kind === "cron" ? <CronHelper draft={draft} change={change} /> : null}
      {draft.kind === "interval" ? (
        <div className="row">
          <label>
            Every
            <input
              type="number"
              min={1}
              step="any"
              required
              value={draft.every}
              onChange={(event) => change({ every: event.target.value })}
            />
          </label>
          <label>
            Unit
            <select value={draft.unit} onChange={(event) => change({ unit: event.target.value as Unit })}>
              {Object.keys(UNITS).map((unit) => (
                <option key={unit} value={unit}>
                  {unit}
                </option>
              ))}
            </select>
          </label>
        </div>
      ) : null}
      {draft.kind === "once" ? (
        <label>
          At (your time zone, {browserZone()})
          <input type="datetime-local" step={1} required value={draft.at} onChange={(event) => change({ at: event.target.value })} />
        </label>
      ) : null}
      {draft.kind === "event" ? (
        <div className="row">
          <label>
            Event type
            <input
              value={draft.eventType}
              onChange={(event) => change({ eventType: event.target.value })}
              placeholder="pipeline_run.failed"
              required
              maxLength={200}
            />
          </label>
          <label>
            Match (JSON, optional)
            <input value={draft.match} onChange={(event) => change({ match: event.target.value })} placeholder='{"status": "failed"}' />
          </label>
        </div>
      ) : null}
      <NextFires draft={draft} />
    </fieldset>
  );
}

/** The next fire times of what is typed, as the server plans them (asked again, debounced, as
 * the timing changes). */
function NextFires({ draft }: { draft: Draft }) {
  const timing = useDebounced(useMemo(() => timingOf(draft), [draft]), 300);
  const preview = useQuery({
    queryKey: ["schedule-preview", timing],
    queryFn: () =>
      must(
        api.POST("/schedules/preview", {
          params: { query: { count: 5 } },
          body: { ...timing, action: draft.action, config: {} },
        }),
      ),
    enabled: timing.kind !== "event",
    retry: false,
    staleTime: 60_000,
  });
  return (
    <div className="schedule-preview" aria-live="polite">
      <p>
        <strong>Next fire times</strong>
      </p>
      {preview.data?.length ? (
        <ol aria-label="Next fire times">
          {preview.data.map((time) => (
            <li key={time}>
              <time dateTime={time}>{new Date(time).toLocaleString()}</time>
            </li>
          ))}
        </ol>
      ) : null}
      {preview.data && !preview.data.length ? (
        <p className="muted">It would never fire: the server refuses such a schedule.</p>
      ) : null}
      {timing.kind === "event" ? (
        <p className="muted">It fires on each {timing.event_type || "…"} event: no time is known beforehand.</p>
      ) : null}
      {preview.error ? <ProblemView error={preview.error} /> : null}
      <p className="muted small">Shown in your time zone.</p>
    </div>
  );
}

function ConfigText({
  draft,
  change,
  field,
  label,
  multiline,
  required,
}: {
  draft: Draft;
  change: Change;
  field: string;
  label: string;
  multiline?: boolean;
  required?: boolean;
}) {
  const value = draft.config[field];
  const text = value === undefined || value === null ? "" : String(value);
  const set = (next: string) => change({ config: { ...draft.config, [field]: next } });
  return (
    <label>
      {label}
      {multiline ? (
        <textarea value={text} required={required} rows={3} onChange={(event) => set(event.target.value)} />
      ) : (
        <input value={text} required={required} onChange={(event) => set(event.target.value)} />
      )}
    </label>
  );
}

/** The agent a config names (by name, or by id as a stored one may), as the select's value. */
function agentName(agent: unknown, agents: Agent[] | undefined): string {
  if (typeof agent === "number") return agents?.find((one) => one.id === agent)?.name ?? String(agent);
  return typeof agent === "string" ? agent : "";
}

function ActionFields({ draft, change }: { draft: Draft; change: Change }) {
  const agents = useAgents();
  const pipelines = useQuery({
    queryKey: ["pipelines"],
    queryFn: () => must(api.GET("/pipelines")),
    enabled: draft.action === "execute_pipeline",
  });
  const props = { draft, change };
  return (
    <fieldset className="stack">
      <legend>What</legend>
      <label>
        Action
        <select value={draft.action} onChange={(event) => change({ action: event.target.value as Action, config: {} })}>
          <option value="send_notification">send a notification</option>
          <option value="run_task">run a background task</option>
          <option value="execute_pipeline">run a pipeline</option>
          <option value="call_api">call an API</option>
        </select>
      </label>
      {draft.action === "send_notification" ? (
        <>
          <ConfigText {...props} field="title" label="Title" required />
          <ConfigText {...props} field="message" label="Message" multiline />
          <label>
            Level
            <select
              value={String(draft.config.level ?? "info")}
              onChange={(event) => change({ config: { ...draft.config, level: event.target.value } })}
            >
              <option value="info">info</option>
              <option value="warning">warning</option>
              <option value="error">error</option>
            </select>
          </label>
        </>
      ) : null}
      {draft.action === "run_task" ? (
        <>
          <label>
            Agent
            <select
              required
              value={agentName(draft.config.agent, agents.data)}
              onChange={(event) => change({ config: { ...draft.config, agent: event.target.value } })}
            >
              <option value="">Choose an agent</option>
              {(agents.data ?? []).map((agent) => (
                <option key={agent.id} value={agent.name}>
                  {agent.name}
                </option>
              ))}
            </select>
          </label>
          {agents.error ? <ProblemView error={agents.error} /> : null}
          <ConfigText {...props} field="goal" label="Goal" multiline required />
          <div className="row">
            <ConfigText {...props} field="max_steps" label="Max steps" />
            <ConfigText {...props} field="max_seconds" label="Max seconds" />
          </div>
        </>
      ) : null}
      {draft.action === "execute_pipeline" ? (
        <>
          <label>
            Pipeline
            <select
              required
              value={String(draft.config.pipeline ?? "")}
              onChange={(event) => change({ config: { ...draft.config, pipeline: event.target.value } })}
            >
              <option value="">Choose a pipeline</option>
              {(pipelines.data ?? []).map((pipeline) => (
                <option key={pipeline.id} value={pipeline.name}>
                  {pipeline.name}
                </option>
              ))}
            </select>
          </label>
          {pipelines.error ? <ProblemView error={pipelines.error} /> : null}
          <ConfigText {...props} field={JSON_KEYS.execute_pipeline ?? "input"} label="Input (JSON, optional)" multiline />
        </>
      ) : null}
      {draft.action === "call_api" ? (
        <>
          <ConfigText {...props} field="url" label="URL" required />
          <label>
            Method
            <select
              value={String(draft.config.method ?? "POST")}
              onChange={(event) => change({ config: { ...draft.config, method: event.target.value } })}
            >
              {["POST", "GET", "PUT", "PATCH", "DELETE"].map((method) => (
                <option key={method}>{method}</option>
              ))}
            </select>
          </label>
          <ConfigText {...props} field={JSON_KEYS.call_api ?? "body"} label="Body (JSON, optional)" multiline />
        </>
      ) : null}
    </fieldset>
  );
}

function AdvancedFields({ draft, change }: { draft: Draft; change: Change }) {
  return (
    <details>
      <summary>Limits, retries, late slots</summary>
      <div className="schedule-grid">
        <label>
          Start at
          <input type="datetime-local" step={1} value={draft.startAt} onChange={(event) => change({ startAt: event.target.value })} />
        </label>
        <label>
          End at
          <input type="datetime-local" step={1} value={draft.endAt} onChange={(event) => change({ endAt: event.target.value })} />
        </label>
        <label>
          Max runs
          <input type="number" min={1} value={draft.maxExecutions} onChange={(event) => change({ maxExecutions: event.target.value })} />
        </label>
        <label>
          Overlap
          <select value={draft.concurrency} onChange={(event) => change({ concurrency: event.target.value as Draft["concurrency"] })}>
            <option value="allow">allow: run both</option>
            <option value="forbid">forbid: skip the new run</option>
            <option value="replace">replace: cancel the old run</option>
          </select>
        </label>
        <label>
          Late slots
          <select value={draft.misfire} onChange={(event) => change({ misfire: event.target.value as Draft["misfire"] })}>
            <option value="run_once">run the latest once</option>
            <option value="skip">skip them</option>
            <option value="catch_up">catch up</option>
          </select>
        </label>
        <label>
          Late after (s)
          <input type="number" min={1} value={draft.misfireGrace} onChange={(event) => change({ misfireGrace: event.target.value })} />
        </label>
        <label>
          Catch up at most
          <input type="number" min={1} value={draft.catchUpMax} onChange={(event) => change({ catchUpMax: event.target.value })} />
        </label>
        <label>
          Retries
          <input type="number" min={0} max={20} value={draft.maxRetries} onChange={(event) => change({ maxRetries: event.target.value })} />
        </label>
        <label>
          Retry after (s)
          <input type="number" min={0} value={draft.retryBackoff} onChange={(event) => change({ retryBackoff: event.target.value })} />
        </label>
      </div>
    </details>
  );
}

export function ScheduleForm({
  initial,
  label,
  submitLabel,
  pending,
  error,
  onSubmit,
  onCancel,
}: {
  initial: Draft;
  label: string;
  submitLabel: string;
  pending: boolean;
  error: unknown;
  onSubmit: (body: ScheduleIn) => void;
  onCancel: () => void;
}) {
  const [draft, setDraft] = useState(initial);
  const [mistake, setMistake] = useState<unknown>(null);
  const change: Change = (patch) => setDraft((current) => ({ ...current, ...patch }));

  function submit(event: FormEvent) {
    event.preventDefault();
    try {
      const body = bodyOf(draft);
      setMistake(null);
      onSubmit(body);
    } catch (problem) {
      setMistake(localProblem(problem));
    }
  }

  return (
    <form className="card stack schedule-form" aria-label={label} onSubmit={submit}>
      <label>
        Name
        <input value={draft.name} onChange={(event) => change({ name: event.target.value })} required maxLength={200} />
      </label>
      <TimingFields draft={draft} change={change} />
      <ActionFields draft={draft} change={change} />
      <AdvancedFields draft={draft} change={change} />
      {mistake ? <ProblemView error={mistake} /> : null}
      {error ? <ProblemView error={error} /> : null}
      <div className="row">
        <button type="submit" className="primary" disabled={pending}>
          {submitLabel}
        </button>
        <button type="button" onClick={onCancel}>
          Cancel
        </button>
      </div>
    </form>
  );
}
