import { describe, expect, it } from "vitest";

import { sections } from "./sections";

describe("sections", () => {
  it("are found, in their order, each with its own link and routes", () => {
    expect(sections.length).toBeGreaterThan(0);
    const hrefs = sections.map((section) => section.href);
    expect(new Set(hrefs).size).toBe(hrefs.length);
    const orders = sections.map((section) => section.order);
    expect([...orders].sort((a, b) => a - b)).toEqual(orders);
    for (const section of sections) {
      expect(section.routes.length).toBeGreaterThan(0);
      expect(section.routes.some((route) => `/${route.path}` === section.href)).toBe(true);
    }
  });
});
