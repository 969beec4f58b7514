// A schedule as the form holds it (text in inputs) and the body it sends (ScheduleIn).

import type { components } from "../../api/schema";
import type { Timing } from "./timing";

export type ScheduleIn = components["schemas"]["ScheduleIn"];
export type Kind = ScheduleIn["kind"];
export type Action = ScheduleIn["action"];

export const UNITS = { seconds: 1, minutes: 60, hours: 3600, days: 86400 } as const;
export type Unit = keyof typeof UNITS;

export interface Draft {
  name: string;
  kind: Kind;
  cron: string;
  timezone: string;
  every: string;
  unit: Unit;
  /** A `datetime-local` value, read in the browser's zone. */
  at: string;
  eventType: string;
  match: string;
  action: Action;
  config: Record<string, unknown>;
  startAt: string;
  endAt: string;
  maxExecutions: string;
  concurrency: NonNullable<ScheduleIn["concurrency"]>;
  misfire: NonNullable<ScheduleIn["misfire"]>;
  misfireGrace: string;
  catchUpMax: string;
  maxRetries: string;
  retryBackoff: string;
}

export const CRON_PRESETS: { label: string; cron: string }[] = [
  { label: "Every minute", cron: "* * * * *" },
  { label: "Hourly", cron: "0 * * * *" },
  { label: "Daily at 09:00", cron: "0 9 * * *" },
  { label: "Weekdays at 09:00", cron: "0 9 * * 1-5" },
  { label: "Mondays at 08:00", cron: "0 8 * * 1" },
  { label: "Monthly, the 1st at 00:00", cron: "0 0 1 * *" },
];

export function browserZone(): string {
  return Intl.DateTimeFormat().resolvedOptions().timeZone || "UTC";
}

export function emptyDraft(): Draft {
  return {
    name: "",
    kind: "cron",
    cron: "0 9 * * 1-5",
    timezone: browserZone(),
    every: "1",
    unit: "hours",
    at: "",
    eventType: "",
    match: "",
    action: "send_notification",
    config: { title: "", level: "info" },
    startAt: "",
    endAt: "",
    maxExecutions: "",
    concurrency: "allow",
    misfire: "run_once",
    misfireGrace: "60",
    catchUpMax: "10",
    maxRetries: "0",
    retryBackoff: "10",
  };
}

/** `iso` as a `datetime-local` value in the browser's zone. */
export function toLocalInput(iso: unknown): string {
  if (typeof iso !== "string" || !iso) return "";
  const date = new Date(iso);
  if (Number.isNaN(date.getTime())) return "";
  const pad = (n: number) => String(n).padStart(2, "0");
  return `${date.getFullYear()}-${pad(date.getMonth() + 1)}-${pad(date.getDate())}T${pad(date.getHours())}:${pad(date.getMinutes())}:${pad(date.getSeconds())}`;
}

/** A `datetime-local` value as an instant with its zone (UTC), or null when empty. */
export function fromLocalInput(value: string): string | null {
  if (!value) return null;
  const date = new Date(value);
  if (Number.isNaN(date.getTime())) throw new Error(`“${value}” is not a date and time`);
  return date.toISOString();
}

function bestUnit(seconds: number): Unit {
  for (const unit of ["days", "hours", "minutes"] as const) if (seconds % UNITS[unit] === 0) return unit;
  return "seconds";
}

/** The draft of a stored schedule, to edit it. */
export function draftOf(name: string, spec: Record<string, unknown>): Draft {
  const base = emptyDraft();
  const every = Number(spec.every_seconds ?? 3600);
  const unit = bestUnit(every);
  const text = (value: unknown, fallback: string) => (value === undefined || value === null ? fallback : String(value));
  return {
    ...base,
    name,
    kind: (spec.kind as Kind) ?? "cron",
    cron: text(spec.cron, base.cron),
    timezone: text(spec.timezone, "UTC"),
    every: String(every / UNITS[unit]),
    unit,
    at: toLocalInput(spec.at),
    eventType: text(spec.event_type, ""),
    match: spec.match ? JSON.stringify(spec.match) : "",
    action: (spec.action as Action) ?? "send_notification",
    config: configDraft((spec.action as Action) ?? "send_notification", (spec.config as Record<string, unknown>) ?? {}),
    startAt: toLocalInput(spec.start_at),
    endAt: toLocalInput(spec.end_at),
    maxExecutions: text(spec.max_executions, ""),
    concurrency: (spec.concurrency as Draft["concurrency"]) ?? "allow",
    misfire: (spec.misfire as Draft["misfire"]) ?? "run_once",
    misfireGrace: text(spec.misfire_grace_seconds, base.misfireGrace),
    catchUpMax: text(spec.catch_up_max, base.catchUpMax),
    maxRetries: text(spec.max_retries, base.maxRetries),
    retryBackoff: text(spec.retry_backoff_seconds, base.retryBackoff),
  };
}

export function everySeconds(draft: Draft): number {
  return Number(draft.every) * UNITS[draft.unit];
}

/** When the draft fires, for the preview: the fields of its kind only, as the server wants
 * them (an instant that does not parse is left out: the server then says what is missing). */
export function timingOf(draft: Draft): Timing {
  const instant = (value: string) => {
    try {
      return fromLocalInput(value);
    } catch {
      return null;
    }
  };
  const timing: Timing = { kind: draft.kind, start_at: instant(draft.startAt), end_at: instant(draft.endAt) };
  if (draft.kind === "cron") {
    timing.cron = draft.cron.trim();
    timing.timezone = draft.timezone.trim() || "UTC";
  } else if (draft.kind === "interval") {
    timing.every_seconds = everySeconds(draft);
  } else if (draft.kind === "once") {
    timing.at = instant(draft.at);
  } else {
    timing.event_type = draft.eventType.trim();
  }
  return timing;
}

function optionalNumber(value: string): number | null {
  return value.trim() === "" ? null : Number(value);
}

/** Config keys the form holds as JSON text. */
export const JSON_KEYS: Partial<Record<Action, string>> = { execute_pipeline: "input", call_api: "body" };
/** Config keys the form holds as numbers typed as text. */
const NUMBER_KEYS = ["max_steps", "max_tokens", "max_seconds", "max_cost_usd"];

/** The config to send: empty texts left out (the server's defaults apply), JSON read. */
function cleanConfig(action: Action, config: Record<string, unknown>): Record<string, unknown> {
  const clean: Record<string, unknown> = {};
  for (const [key, value] of Object.entries(config)) {
    if (value === "" || value === undefined || value === null) continue;
    if (key === JSON_KEYS[action] && typeof value === "string") {
      try {
        clean[key] = JSON.parse(value);
      } catch {
        throw new Error(`The ${key} is not JSON`);
      }
    } else if (NUMBER_KEYS.includes(key) && typeof value === "string") {
      clean[key] = Number(value);
    } else {
      clean[key] = value;
    }
  }
  return clean;
}

/** A stored config as the form holds it (JSON as text). */
function configDraft(action: Action, config: Record<string, unknown>): Record<string, unknown> {
  const key = JSON_KEYS[action];
  return key && key in config ? { ...config, [key]: JSON.stringify(config[key], null, 2) } : { ...config };
}

/** The body to send; an Error for what the browser can tell is wrong (bad JSON). */
export function bodyOf(draft: Draft): ScheduleIn {
  const body: ScheduleIn = {
    name: draft.name.trim(),
    kind: draft.kind,
    action: draft.action,
    config: cleanConfig(draft.action, draft.config),
    concurrency: draft.concurrency,
    misfire: draft.misfire,
    misfire_grace_seconds: Number(draft.misfireGrace),
    catch_up_max: Number(draft.catchUpMax),
    max_retries: Number(draft.maxRetries),
    retry_backoff_seconds: Number(draft.retryBackoff),
    max_executions: optionalNumber(draft.maxExecutions),
    start_at: fromLocalInput(draft.startAt),
    end_at: fromLocalInput(draft.endAt),
  };
  if (draft.kind === "cron") {
    body.cron = draft.cron.trim();
    body.timezone = draft.timezone.trim() || "UTC";
  } else if (draft.kind === "interval") {
    body.every_seconds = everySeconds(draft);
  } else if (draft.kind === "once") {
    body.at = fromLocalInput(draft.at);
  } else {
    body.event_type = draft.eventType.trim();
    if (draft.match.trim()) {
      let match: unknown;
      try {
        match = JSON.parse(draft.match);
      } catch {
        throw new Error("Match is not JSON: write an object such as {\"status\": \"failed\"}");
      }
      if (typeof match !== "object" || match === null || Array.isArray(match)) {
        throw new Error("Match must be a JSON object, such as {\"status\": \"failed\"}");
      }
      body.match = match as ScheduleIn["match"];
    }
  }
  return body;
}
