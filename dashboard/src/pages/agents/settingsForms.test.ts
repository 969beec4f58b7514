import { describe, expect, it } from "vitest";

import { agentChanges, knowledgeBody, knowledgeMode, snippet, splitList, type Agent } from "./settingsForms";

const agent: Agent = {
  id: 7,
  name: "Ada",
  provider: "openai",
  model: "gpt-4o",
  persona: { role: "writer", traits: ["calm"], communication_style: "", specializations: [], base_prompt: "", language: "en" },
  config: { max_iterations: 8, history_window: null, prompt_budget: null, project: null, knowledge: null, options: {} },
  owner_id: 1,
  created_at: null,
};

function form(values: Record<string, string>): FormData {
  const data = new FormData();
  const base = {
    name: "Ada",
    provider: "openai",
    model: "gpt-4o",
    max_iterations: "8",
    project: "",
    role: "writer",
    traits: "calm",
    communication_style: "",
    specializations: "",
    base_prompt: "",
    language: "en",
  };
  for (const [key, value] of Object.entries({ ...base, ...values })) data.set(key, value);
  return data;
}

describe("agentChanges", () => {
  it("sends nothing when nothing changed", () => {
    expect(agentChanges(agent, form({}))).toEqual({});
  });

  it("sends only the changed fields", () => {
    expect(agentChanges(agent, form({ name: " Ada Lovelace ", max_iterations: "12" }))).toEqual({
      name: "Ada Lovelace",
      max_iterations: 12,
    });
  });

  it("leaves the model to the server's default on a new provider with a blank model", () => {
    expect(agentChanges(agent, form({ provider: "anthropic", model: "" }))).toEqual({ provider: "anthropic" });
    expect(agentChanges(agent, form({ provider: "anthropic", model: "claude-x" }))).toEqual({
      provider: "anthropic",
      model: "claude-x",
    });
  });

  it("sends the whole persona when a field of it changed, and a blank project as null", () => {
    const changes = agentChanges({ ...agent, config: { ...agent.config, project: "Old" } }, form({ traits: "calm, exact\ncalm" }));
    expect(changes.persona?.traits).toEqual(["calm", "exact"]);
    expect(changes.persona?.role).toBe("writer");
    expect(changes.project).toBeNull();
  });
});

describe("knowledge", () => {
  it("reads the stored setting", () => {
    expect(knowledgeMode(null)).toBe("none");
    expect(knowledgeMode("all")).toBe("all");
    expect(knowledgeMode({ categories: [], documents: [3] })).toBe("some");
    expect(knowledgeMode({ categories: [], documents: [] })).toBe("none");
  });

  it("builds the PATCH field", () => {
    expect(knowledgeBody("none", ["ops"], [1])).toBeNull();
    expect(knowledgeBody("all", [], [])).toBe("all");
    expect(knowledgeBody("some", ["ops"], [])).toEqual({ categories: ["ops"] });
    expect(knowledgeBody("some", [], [4, 5])).toEqual({ documents: [4, 5] });
  });
});

describe("text", () => {
  it("splits lists and cuts snippets", () => {
    expect(splitList(" a, b\n\nc ,a ")).toEqual(["a", "b", "c"]);
    expect(snippet("short")).toBe("short");
    expect(snippet("x".repeat(50), 10)).toBe(`${"x".repeat(9)}…`);
  });
});
