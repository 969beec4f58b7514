import { describe, expect, it } from "vitest";

import { baseName, changesOf, foldersToRefresh, gitMark, joinPath, parentOf, touches, withContext } from "./paths";

describe("project paths", () => {
  it("finds folders and names", () => {
    expect(parentOf("src/app.py")).toBe("src");
    expect(parentOf("README.md")).toBe(".");
    expect(parentOf("a/b/c/")).toBe("a/b");
    expect(baseName("a/b/c.txt")).toBe("c.txt");
    expect(joinPath(".", "x.md")).toBe("x.md");
    expect(joinPath("src", "/x.md")).toBe("src/x.md");
  });

  it("reads a files_changed event", () => {
    const data = { changes: [{ path: "src/a.py", change: "modified" }, { path: "b.md", change: "added" }, { bad: 1 }], truncated: false };
    expect(changesOf(data)).toEqual([
      { path: "src/a.py", change: "modified" },
      { path: "b.md", change: "added" },
    ]);
    expect(touches(data, "b.md")).toBe(true);
    expect(touches(data, "c.md")).toBe(false);
    expect(touches({ changes: [], truncated: true }, "c.md")).toBe(true);
    expect(foldersToRefresh(changesOf(data)).sort()).toEqual([".", "src"]);
    expect(changesOf({})).toEqual([]);
  });

  it("marks git states", () => {
    expect(gitMark("modified")).toEqual({ letter: "M", word: "modified" });
    expect(gitMark(null)).toBeNull();
  });

  it("adds the file and selection to a message", () => {
    expect(withContext("hi", null, null, null)).toBe("hi");
    expect(withContext("hi", "a.py", null, null)).toContain("`a.py`");
    const text = withContext("fix", "a.py", "x = 1", [3, 3]);
    expect(text).toContain("lines 3–3");
    expect(text).toContain("```\nx = 1\n```");
  });
});
