// What the settings forms send: only what an admin changed, in the shapes the API takes.

import type { components } from "../../api/schema";

/** `ModelOverrideIn` (whose generated type is `unknown`: its schema has constraints on pairs). */
export interface Override {
  context_window?: number;
  max_output?: number;
  input_per_million?: number;
  output_per_million?: number;
  cached_input_per_million?: number;
}
type Model = components["schemas"]["ModelOut"];
type Persona = components["schemas"]["Persona"];

function numberField(form: FormData, name: string): number | null {
  const text = String(form.get(name) ?? "").trim();
  return text === "" ? null : Number(text);
}

/** An override of what differs from `current`: prices go as a pair (input and output), cached
 * input with them; limits one by one. */
export function overrideBody(form: FormData, current: Partial<Model> = {}): Override {
  const body: Override = {};
  const input = numberField(form, "input_per_million");
  const output = numberField(form, "output_per_million");
  const cached = numberField(form, "cached_input_per_million");
  const pricesChanged =
    input !== (current.input_per_million ?? null) ||
    output !== (current.output_per_million ?? null) ||
    cached !== (current.cached_input_per_million ?? null);
  if (pricesChanged && (input !== null || output !== null || cached !== null)) {
    if (input !== null) body.input_per_million = input;
    if (output !== null) body.output_per_million = output;
    if (cached !== null) body.cached_input_per_million = cached;
  }
  for (const name of ["context_window", "max_output"] as const) {
    const value = numberField(form, name);
    if (value !== null && value !== (current[name] ?? null)) body[name] = value;
  }
  return body;
}

/** A list typed as comma- or line-separated items. */
export function listField(text: string): string[] {
  return text
    .split(/[\n,]/)
    .map((item) => item.trim())
    .filter(Boolean);
}

/** The persona of a persona form. */
export function personaFromForm(form: FormData): Persona {
  return {
    role: String(form.get("role") ?? "").trim(),
    traits: listField(String(form.get("traits") ?? "")),
    communication_style: String(form.get("communication_style") ?? "").trim(),
    specializations: listField(String(form.get("specializations") ?? "")),
    base_prompt: String(form.get("base_prompt") ?? ""),
    language: String(form.get("language") ?? "").trim() || "en",
  };
}

/** Scopes typed as words separated by commas or spaces. */
export function scopesField(text: string): string[] {
  return [...new Set(text.split(/[\s,]+/).filter(Boolean))];
}

export const AUDIT_FILTERS = [
  "event",
  "outcome",
  "actor_id",
  "subject",
  "target_type",
  "target_id",
  "ip",
  "request_id",
  "since",
  "until",
] as const;
export type AuditFilter = (typeof AUDIT_FILTERS)[number];
export type AuditQuery = Partial<Record<AuditFilter, string>>;

/** The audit filters a form holds, empty ones left out; `since` and `until` (a local
 * date-time) as RFC 3339 instants. */
export function auditQuery(form: FormData): AuditQuery {
  const query: AuditQuery = {};
  for (const name of AUDIT_FILTERS) {
    const value = String(form.get(name) ?? "").trim();
    if (!value) continue;
    if (name === "since" || name === "until") {
      const date = new Date(value);
      if (!Number.isNaN(date.getTime())) query[name] = date.toISOString();
    } else {
      query[name] = value;
    }
  }
  return query;
}
