import { describe, expect, it } from "vitest";

import { asProblem, ProblemError, toProblem } from "./problem";

describe("toProblem", () => {
  it("keeps the server's detail and hint", () => {
    const problem = toProblem(409, { title: "Conflict", detail: "agent 7 is busy", hint: "retry", code: "agent_busy" });
    expect(problem).toEqual({ status: 409, title: "Conflict", detail: "agent 7 is busy", hint: "retry", code: "agent_busy" });
  });

  it("reads a stream's error frame, which says `message`", () => {
    expect(toProblem(0, { message: "the turn failed" }).detail).toBe("the turn failed");
  });

  it("never shows a blank message for a body it does not know", () => {
    expect(toProblem(502, "<html>bad gateway</html>").detail).toBe("<html>bad gateway</html>");
    expect(toProblem(500, null).detail).toBe("HTTP 500");
    expect(toProblem(500, { detail: "" }).detail).toBe("HTTP 500");
  });
});

describe("a refused body", () => {
  it("lists its mistakes, where each is", () => {
    const problem = toProblem(422, {
      detail: "the request is invalid; see `errors`",
      errors: [
        { loc: ["body"], msg: "Value error, invalid cron expression '61 * * * *': Bad minute" },
        { loc: ["body", "config", "title"], msg: "Field required" },
      ],
    });
    expect(problem.errors).toEqual(["invalid cron expression '61 * * * *': Bad minute", "config.title: Field required"]);
  });
});

describe("asProblem", () => {
  it("passes a ProblemError's problem through", () => {
    const problem = toProblem(404, { detail: "no agent 3" });
    expect(asProblem(new ProblemError(problem))).toBe(problem);
  });

  it("says what to do when the network failed", () => {
    const problem = asProblem(new TypeError("Failed to fetch"));
    expect(problem.detail).toBe("Failed to fetch");
    expect(problem.hint).toMatch(/server is running/);
  });
});
