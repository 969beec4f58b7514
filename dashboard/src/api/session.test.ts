import { describe, expect, it } from "vitest";

import { secondsLeft } from "./session";

const jwt = (claims: object) => `h.${btoa(JSON.stringify(claims)).replace(/=+$/, "").replace(/\+/g, "-").replace(/\//g, "_")}.s`;

describe("secondsLeft", () => {
  it("reads a token's exp", () => {
    expect(secondsLeft(jwt({ exp: 1_000 }), 400_000)).toBe(600);
  });
  it("is null for what it cannot read", () => {
    expect(secondsLeft("not-a-jwt")).toBeNull();
    expect(secondsLeft(jwt({ sub: "1" }))).toBeNull();
  });
});
