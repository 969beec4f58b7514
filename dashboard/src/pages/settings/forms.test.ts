import { describe, expect, it } from "vitest";

import { auditQuery, listField, overrideBody, personaFromForm, scopesField } from "./forms";

function form(fields: Record<string, string>): FormData {
  const data = new FormData();
  for (const [name, value] of Object.entries(fields)) data.set(name, value);
  return data;
}

describe("settings forms", () => {
  it("send only the override values that changed, prices as a pair", () => {
    const current = { input_per_million: 3, output_per_million: 15, cached_input_per_million: null, context_window: 200000, max_output: 64000 };
    const unchanged = form({ input_per_million: "3", output_per_million: "15", cached_input_per_million: "", context_window: "200000", max_output: "64000" });
    expect(overrideBody(unchanged, current)).toEqual({});
    const cheaper = form({ input_per_million: "1.5", output_per_million: "15", context_window: "200000", max_output: "" });
    expect(overrideBody(cheaper, current)).toEqual({ input_per_million: 1.5, output_per_million: 15 });
    expect(overrideBody(form({ context_window: "32768" }), {})).toEqual({ context_window: 32768 });
  });

  it("read lists, personas and scopes as typed", () => {
    expect(listField("careful, terse\nkind,, ")).toEqual(["careful", "terse", "kind"]);
    expect(personaFromForm(form({ role: " reviewer ", traits: "strict", base_prompt: "Be brief." }))).toEqual({
      role: "reviewer",
      traits: ["strict"],
      communication_style: "",
      specializations: [],
      base_prompt: "Be brief.",
      language: "en",
    });
    expect(scopesField("agents:read, usage:read  agents:read")).toEqual(["agents:read", "usage:read"]);
  });

  it("leave out empty audit filters and send instants in UTC", () => {
    const query = auditQuery(form({ event: "user.*", outcome: "", since: "2026-03-01T10:00" }));
    expect(Object.keys(query)).toEqual(["event", "since"]);
    expect(query.since).toBe(new Date("2026-03-01T10:00").toISOString());
  });
});
