import { describe, expect, it } from "vitest";

import { describeTiming, everyText } from "./timing";

describe("a schedule's timing in words", () => {
  it("describes a stored schedule", () => {
    expect(describeTiming({ kind: "interval", every_seconds: 7200 })).toBe("every 2 h");
    expect(describeTiming({ kind: "cron", cron: "0 9 * * *", timezone: "UTC" })).toBe("cron 0 9 * * * (UTC)");
    expect(describeTiming({ kind: "event", event_type: "task.*" })).toBe("on task.* events");
  });

  it("says an interval in its largest whole unit", () => {
    expect(everyText(86400 * 2)).toBe("2 d");
    expect(everyText(90)).toBe("90 s");
    expect(everyText(120)).toBe("2 min");
  });
});
