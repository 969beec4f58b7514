import { cleanup, fireEvent, render, screen } from "@testing-library/react";
import { afterEach, describe, expect, it, vi } from "vitest";

import type { JsonObject } from "./definition";
import { RunForm } from "./RunForm";
import { variantsOf } from "./SchemaForm";

afterEach(cleanup);

const SCHEMA: JsonObject = {
  type: "object",
  properties: {
    ticket: { type: "string", description: "What happened" },
    count: { type: "integer", default: 2 },
    urgent: { type: "boolean" },
    level: { enum: ["low", "high"] },
    extra: { type: "object" },
  },
  required: ["ticket"],
};

describe("RunForm", () => {
  it("makes a field per property and sends typed values", () => {
    const onSubmit = vi.fn();
    render(<RunForm schema={SCHEMA} label="Run input" submitLabel="Start run" pending={false} onSubmit={onSubmit} />);
    const ticket = screen.getByLabelText("Ticket (required)");
    expect(ticket).toHaveProperty("required", true);
    expect(ticket.getAttribute("aria-describedby")).toBeTruthy();
    fireEvent.change(ticket, { target: { value: "the site is down" } });
    fireEvent.click(screen.getByLabelText("Urgent"));
    fireEvent.change(screen.getByLabelText("Level"), { target: { value: '"high"' } });
    fireEvent.change(screen.getByLabelText("Extra (JSON)"), { target: { value: '{"a": [1]}' } });
    fireEvent.click(screen.getByRole("button", { name: "Start run" }));
    expect(onSubmit).toHaveBeenCalledWith({ ticket: "the site is down", count: 2, urgent: true, level: "high", extra: { a: [1] } });
  });

  it("takes any object as JSON when the schema names no field", () => {
    const onSubmit = vi.fn();
    render(<RunForm schema={{ type: "object" }} label="Run input" submitLabel="Go" pending={false} onSubmit={onSubmit} />);
    fireEvent.change(screen.getByLabelText("Input"), { target: { value: '{"x": 1}' } });
    fireEvent.click(screen.getByRole("button", { name: "Go" }));
    expect(onSubmit).toHaveBeenCalledWith({ x: 1 });
  });
});

describe("variantsOf", () => {
  it("finds the tag of variants without a discriminator (the trigger's kinds)", () => {
    const root = {
      components: {
        schemas: {
          Manual: { properties: { kind: { enum: ["manual", "webhook"], default: "manual" } } },
          Schedule: { properties: { kind: { const: "schedule" }, cron: { type: "string" } }, required: ["kind", "cron"] },
        },
      },
    };
    const found = variantsOf({ oneOf: [{ $ref: "#/components/schemas/Manual" }, { $ref: "#/components/schemas/Schedule" }] }, root);
    expect(found?.tag).toBe("kind");
    expect(found?.options.map(([tag]) => tag)).toEqual(["manual", "webhook", "schedule"]);
  });
});
