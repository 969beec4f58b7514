import { describe, expect, it } from "vitest";

import { autoLayout, freshId, problemsByNode, problemsOf, problemTarget, renameNode, type Definition } from "./definition";

const DEFINITION: Definition = {
  name: "three",
  nodes: [
    { id: "start", type: "trigger" },
    { id: "ask", type: "agent", config: { agent: "a", prompt: "p" } },
    { id: "check", type: "condition", config: { expression: "true" } },
  ],
  edges: [
    { from: "start", to: "ask" },
    { from: "ask", to: "check" },
  ],
};

describe("problems", () => {
  it("point at the node their path names", () => {
    expect(problemTarget("nodes[1].config.prompt", DEFINITION)).toEqual({ node: "ask" });
    expect(problemTarget("edges[1].from", DEFINITION)).toEqual({ edge: 1 });
    expect(problemTarget(["body", "nodes", 2, "condition", "config"], DEFINITION)).toEqual({ node: "check" });
    expect(problemTarget("input_schema", DEFINITION)).toEqual({});
  });

  it("group by node, edges showing on the nodes they join, cycles on theirs", () => {
    const grouped = problemsByNode(
      [
        { path: "nodes[1].config", code: "invalid_config", message: "bad" },
        { path: "edges[1]", code: "invalid_condition", message: "bad edge" },
        { path: "", code: "cycle", message: "cycle: ask -> check -> ask" },
        { path: "input_schema", code: "invalid_schema", message: "no" },
      ],
      DEFINITION,
    );
    expect(Object.keys(grouped.nodes).sort()).toEqual(["ask", "check"]);
    expect(grouped.nodes.ask?.map((problem) => problem.code)).toEqual(["invalid_config", "invalid_condition", "cycle"]);
    expect(grouped.edges[1]?.length).toBe(1);
    expect(grouped.other.map((problem) => problem.code)).toEqual(["cycle", "invalid_schema"]);
  });

  it("are read from both kinds of 422", () => {
    expect(problemsOf({ details: { problems: [{ path: "nodes[0]", code: "x", message: "m" }] } })).toEqual([
      { path: "nodes[0]", code: "x", message: "m" },
    ]);
    expect(problemsOf({ errors: [{ loc: ["body", "nodes", 1, "agent", "config", "prompt"], msg: "m", type: "missing" }] })).toEqual([
      { path: "nodes[1].agent.config.prompt", code: "missing", message: "m" },
    ]);
  });
});

describe("editing", () => {
  it("lays nodes out in columns by depth", () => {
    const layout = autoLayout(DEFINITION.nodes, DEFINITION.edges ?? []);
    expect(layout.start?.x).toBeLessThan(layout.ask?.x ?? 0);
    expect(layout.ask?.x).toBeLessThan(layout.check?.x ?? 0);
  });
  it("names new nodes by type", () => {
    expect(freshId("agent", ["agent_1", "start"])).toBe("agent_2");
  });
  it("renames a node with its edges", () => {
    const renamed = renameNode(DEFINITION, "ask", "sort");
    expect(renamed.nodes[1]?.id).toBe("sort");
    expect(renamed.edges).toEqual([
      { from: "start", to: "sort" },
      { from: "sort", to: "check" },
    ]);
  });
});
