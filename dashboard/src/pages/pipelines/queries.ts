// The pipelines API as the pages use it: queries, their keys, and the node types' JSON Schemas
// read from the server's own OpenAPI document (so the config forms follow the server).

import { useQuery } from "@tanstack/react-query";

import { api, authHeaders, must, refreshTokens } from "../../api/client";
import { ProblemError, toProblem } from "../../api/problem";
import type { components } from "../../api/schema";
import { asDefinition, type Definition, type JsonObject, type Point } from "./definition";
import type { Schema } from "./SchemaForm";

export type Run = components["schemas"]["RunOut"];
export type NodeRun = components["schemas"]["NodeRunOut"];

export const keys = {
  list: ["pipelines"] as const,
  one: (id: number) => ["pipelines", id] as const,
  versions: (id: number) => ["pipelines", id, "versions"] as const,
  version: (id: number, version: number) => ["pipelines", id, "versions", version] as const,
  runs: (id: number) => ["pipelines", id, "runs"] as const,
  run: (runId: number) => ["pipeline-runs", runId] as const,
};

export function usePipeline(id: number) {
  return useQuery({
    queryKey: keys.one(id),
    queryFn: () => must(api.GET("/pipelines/{pipeline_id}", { params: { path: { pipeline_id: id } } })),
  });
}

/** One saved version's definition (versions never change: cached for good). */
export function useVersion(id: number, version: number | undefined) {
  return useQuery({
    queryKey: keys.version(id, version ?? 0),
    enabled: version !== undefined,
    staleTime: Infinity,
    queryFn: async () => {
      const found = await must(
        api.GET("/pipelines/{pipeline_id}/versions/{version}", {
          params: { path: { pipeline_id: id, version: version ?? 1 } },
        }),
      );
      return { ...found, definition: asDefinition(found.definition) };
    },
  });
}

/** The server's OpenAPI document (its node config schemas), read once per session. */
export function useOpenApi() {
  return useQuery({
    queryKey: ["openapi"],
    staleTime: Infinity,
    gcTime: Infinity,
    queryFn: async (): Promise<Schema> => {
      let response = await fetch("/openapi.json", { headers: authHeaders() });
      if (response.status === 401 && (await refreshTokens())) {
        response = await fetch("/openapi.json", { headers: authHeaders() });
      }
      const body: unknown = await response.json().catch(() => null);
      if (!response.ok) throw new ProblemError(toProblem(response.status, body));
      return body as Schema;
    },
  });
}

/** Each node type's schema (`AgentNodeIn`, ...) by type, from `PipelineIn`'s node list. */
export function nodeSchemas(openapi: Schema): Record<string, Schema> {
  const schemas = ((openapi.components as Schema | undefined)?.schemas ?? {}) as Record<string, Schema>;
  const nodes = (schemas.PipelineIn?.properties as Record<string, Schema> | undefined)?.nodes;
  const mapping = ((nodes?.items as Schema | undefined)?.discriminator as Schema | undefined)?.mapping as
    | Record<string, string>
    | undefined;
  const out: Record<string, Schema> = {};
  for (const [type, ref] of Object.entries(mapping ?? {})) {
    const schema = schemas[ref.split("/").pop() ?? ""];
    if (schema) out[type] = schema;
  }
  return out;
}

/** A definition or an input as a request body: the generated types of free JSON objects
 * (`{[x: string]: any} & {[x: string]: undefined}`) take no value, so the body goes as it is and
 * the server checks it. */
export function asBody(body: Definition | JsonObject): never {
  return body as never;
}

const LAYOUT = "gathering.pipelines.layout.";

/** Where a person put each node (the definition has no place for it: kept in this browser). */
export function savedLayout(id: number): Record<string, Point> {
  try {
    const found: unknown = JSON.parse(localStorage.getItem(LAYOUT + id) ?? "{}");
    return typeof found === "object" && found !== null ? (found as Record<string, Point>) : {};
  } catch {
    return {};
  }
}

export function saveLayout(id: number, layout: Record<string, Point>): void {
  try {
    localStorage.setItem(LAYOUT + id, JSON.stringify(layout));
  } catch {
    // private mode or full: the automatic layout is used next time
  }
}

export const RUN_STATUSES = ["running", "succeeded", "failed", "cancelled"] as const;

/** Milliseconds between two times (to now when `to` is missing), or null. */
export function span(from: string | null | undefined, to: string | null | undefined): number | null {
  if (!from) return null;
  const start = Date.parse(from);
  const end = to ? Date.parse(to) : Date.now();
  return Number.isNaN(start) || Number.isNaN(end) ? null : Math.max(0, end - start);
}
