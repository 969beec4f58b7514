import { describe, expect, it } from "vitest";

import { indexing } from "./upload";

describe("indexing progress", () => {
  it("says where a pending document is", () => {
    expect(indexing({ status: "pending", chunks_done: 0, chunks_total: null })).toBe("waiting for a worker…");
    expect(indexing({ status: "pending", chunks_done: 3, chunks_total: 8 })).toBe("3 of 8 chunks");
    expect(indexing({ status: "ready", chunks_done: 8, chunks_total: 8 })).toBe("");
  });
});
