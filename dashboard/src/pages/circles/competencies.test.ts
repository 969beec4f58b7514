import { describe, expect, it } from "vitest";

import { formatLevels, parseLevels } from "./competencies";

describe("competencies", () => {
  it("read tag=level lists", () => {
    expect(parseLevels("python=4, code: 3\nrust 2")).toEqual({ python: 4, code: 3, rust: 2 });
    expect(parseLevels("  ")).toEqual({});
    expect(formatLevels({ python: 4, code: 3 })).toBe("python=4, code=3");
  });

  it("say what is wrong", () => {
    expect(parseLevels("python=6")).toMatch(/python=6/);
    expect(parseLevels("Py thon=2")).toMatch(/not tag=level/);
    expect(parseLevels("python")).toMatch(/not tag=level/);
  });
});
