import { describe, expect, it } from "vitest";

import { parseDefinitionText, parseYaml, YamlError } from "./yaml";

const TRIAGE = `
name: triage
description: Sort a support ticket, and page someone when it is urgent.
input_schema:
  type: object
  properties:
    ticket: {type: string}
  required: [ticket]
timeout_seconds: 600
nodes:
  - id: start
    type: trigger
    config: {kind: manual}
  - id: sort
    type: agent
    config:
      agent: triager
      prompt: "Sort this ticket as low, normal or high: {{ input.ticket }}"
      output: json
      output_schema:
        type: object
        properties: {priority: {enum: [low, normal, high]}}
        required: [priority]
    retry: {max_attempts: 3, backoff: 2}
  - id: urgent
    type: condition
    config: {expression: 'outputs.sort.priority == "high"'}   # a comment
edges:
  - {from: start, to: sort}
  - {from: sort, to: urgent}
`;

describe("parseYaml", () => {
  it("reads the documented example", () => {
    const doc = parseYaml(TRIAGE) as Record<string, unknown>;
    expect(doc.name).toBe("triage");
    expect(doc.timeout_seconds).toBe(600);
    expect(doc.input_schema).toEqual({
      type: "object",
      properties: { ticket: { type: "string" } },
      required: ["ticket"],
    });
    const nodes = doc.nodes as Record<string, unknown>[];
    expect(nodes.map((node) => node.id)).toEqual(["start", "sort", "urgent"]);
    expect(nodes[1]?.retry).toEqual({ max_attempts: 3, backoff: 2 });
    expect((nodes[1]?.config as Record<string, unknown>).prompt).toBe(
      "Sort this ticket as low, normal or high: {{ input.ticket }}",
    );
    expect((nodes[2]?.config as Record<string, unknown>).expression).toBe('outputs.sort.priority == "high"');
    expect(doc.edges).toEqual([
      { from: "start", to: "sort" },
      { from: "sort", to: "urgent" },
    ]);
  });

  it("reads block scalars, lists at the key's indent and scalars", () => {
    const doc = parseYaml(
      ["a: |", "  one", "", "  # two", "b:", "- 1", "- 2.5", "- true", "- null", "- 'it''s'", "c: >-", "  x", "  y"].join(
        "\n",
      ),
    );
    expect(doc).toEqual({ a: "one\n\n# two\n", b: [1, 2.5, true, null, "it's"], c: "x y" });
  });

  it("refuses aliases, repeated keys and broken text, naming the line", () => {
    expect(() => parseYaml("a: &x 1\nb: *x")).toThrow(YamlError);
    expect(() => parseYaml("a: 1\na: 2")).toThrow(/line 2/);
    expect(() => parseYaml("a: [1, 2")).toThrow(/line 1/);
  });
});

describe("parseDefinitionText", () => {
  it("takes JSON", () => {
    expect(parseDefinitionText('{"name": "x", "nodes": []}')).toEqual({ name: "x", nodes: [] });
  });
  it("takes a YAML flow mapping", () => {
    expect(parseDefinitionText("{name: x, nodes: []}")).toEqual({ name: "x", nodes: [] });
  });
  it("says an empty text is empty", () => {
    expect(() => parseDefinitionText("  ")).toThrow(/empty/);
  });
});
