// Pure helpers of the agent's settings page: form values to API bodies and back.

import type { components } from "../../api/schema";

export type Agent = components["schemas"]["AgentOut"];
export type AgentUpdate = components["schemas"]["AgentUpdate"];
export type Persona = components["schemas"]["Persona"];
export type ProviderKind = NonNullable<AgentUpdate["provider"]>;
export type Policy = "allow" | "ask" | "deny";
export type KnowledgeValue = AgentUpdate["knowledge"];
export type MemoryKind = components["schemas"]["AgentMemoryIn"]["kind"];

/** The providers an agent may name: the agents API accepts provider kinds only. */
export const PROVIDER_KINDS: ProviderKind[] = ["anthropic", "openai", "ollama", "local"];

export const MEMORY_KINDS: NonNullable<MemoryKind>[] = [
  "fact",
  "preference",
  "event",
  "instruction",
  "summary",
  "note",
  "skill",
];

export const POLICIES: Policy[] = ["allow", "ask", "deny"];

/** Lines or comma-separated items, trimmed, without blanks or repeats. */
export function splitList(text: string): string[] {
  const items = text
    .split(/[\n,]/)
    .map((item) => item.trim())
    .filter(Boolean);
  return [...new Set(items)];
}

/** The persona as the form holds it (every field: PATCH replaces the persona whole). */
export function personaFromForm(form: FormData): Persona {
  const text = (name: string) => String(form.get(name) ?? "");
  return {
    role: text("role").trim(),
    traits: splitList(text("traits")),
    communication_style: text("communication_style").trim(),
    specializations: splitList(text("specializations")),
    base_prompt: text("base_prompt"),
    language: text("language").trim() || "en",
  };
}

/** Only what changed, so a save never rewrites a field the form did not touch. */
export function agentChanges(agent: Agent, form: FormData): AgentUpdate {
  const changes: AgentUpdate = {};
  const name = String(form.get("name") ?? "").trim();
  if (name !== agent.name) changes.name = name;
  const provider = String(form.get("provider") ?? "");
  const model = String(form.get("model") ?? "").trim();
  if (provider && provider !== agent.provider) {
    changes.provider = provider as ProviderKind;
    if (model) changes.model = model; // blank: the provider's default model
  } else if (model && model !== agent.model) {
    changes.model = model;
  }
  const iterations = Number(form.get("max_iterations"));
  if (Number.isInteger(iterations) && iterations !== agent.config.max_iterations) changes.max_iterations = iterations;
  const project = String(form.get("project") ?? "");
  if (project.trim() !== (agent.config.project ?? "").trim()) changes.project = project.trim() ? project : null;
  const persona = personaFromForm(form);
  if (JSON.stringify(persona) !== JSON.stringify(normalPersona(agent.persona))) changes.persona = persona;
  return changes;
}

function normalPersona(persona: Persona): Persona {
  return {
    role: persona.role ?? "",
    traits: persona.traits ?? [],
    communication_style: persona.communication_style ?? "",
    specializations: persona.specializations ?? [],
    base_prompt: persona.base_prompt ?? "",
    language: persona.language ?? "en",
  };
}

export type KnowledgeMode = "none" | "all" | "some";

export function knowledgeMode(value: Agent["config"]["knowledge"]): KnowledgeMode {
  if (value === "all") return "all";
  if (value && ((value.categories ?? []).length || (value.documents ?? []).length)) return "some";
  return "none";
}

/** The `knowledge` field of a PATCH: "all", a selection, or null. */
export function knowledgeBody(mode: KnowledgeMode, categories: string[], documents: number[]): KnowledgeValue {
  if (mode === "all") return "all";
  if (mode === "none") return null;
  const selection: { categories?: string[]; documents?: number[] } = {};
  if (categories.length) selection.categories = categories;
  if (documents.length) selection.documents = documents;
  return selection as KnowledgeValue;
}

/** What the policy select shows for a tool: its own policy, or "" for the default. */
export function policyChoice(policySet: Policy | null | undefined): "" | Policy {
  return policySet ?? "";
}

/** A memory's text cut for a button's accessible name. */
export function snippet(text: string, length = 40): string {
  const line = text.replace(/\s+/g, " ").trim();
  return line.length > length ? `${line.slice(0, length - 1)}…` : line;
}
