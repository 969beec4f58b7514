// Pieces the schedules, tasks and goals pages share: the owner's agents, a debounced value,
// a problem made in the browser, and the task statuses with the moves each allows.

import { useQuery } from "@tanstack/react-query";
import { useEffect, useState } from "react";

import { api, must } from "../../api/client";
import { ProblemError } from "../../api/problem";
import type { components } from "../../api/schema";

export type Agent = components["schemas"]["AgentOut"];
export type Task = components["schemas"]["gathering__api__routers__tasks__TaskOut"];
export type TaskStatus = Task["status"];

export const TASK_STATUSES: TaskStatus[] = [
  "queued",
  "running",
  "paused",
  "waiting_approval",
  "waiting_budget",
  "succeeded",
  "failed",
  "cancelled",
];
export const ENDED: TaskStatus[] = ["succeeded", "failed", "cancelled"];

export type Move = "pause" | "resume" | "cancel";

/** What a person may do to a task in `status` (as the server allows). */
export function movesOf(status: TaskStatus): Move[] {
  const moves: Move[] = [];
  if (["queued", "running", "waiting_approval", "waiting_budget"].includes(status)) moves.push("pause");
  if (status === "paused" || status === "waiting_budget") moves.push("resume");
  if (!ENDED.includes(status)) moves.push("cancel");
  return moves;
}

/** The CSS class that colours a status. */
export function tone(status: string): string {
  if (["succeeded", "done", "active", "live"].includes(status)) return "ok";
  if (["failed", "expired"].includes(status)) return "bad";
  if (["paused", "waiting", "waiting_approval", "waiting_budget", "skipped", "cancelled"].includes(status)) return "warn";
  return "";
}

export function useAgents() {
  return useQuery({ queryKey: ["agents"], queryFn: () => must(api.GET("/agents")) });
}

export function useDebounced<T>(value: T, ms: number): T {
  const [settled, setSettled] = useState(value);
  useEffect(() => {
    const timer = setTimeout(() => setSettled(value), ms);
    return () => clearTimeout(timer);
  }, [value, ms]);
  return settled;
}

/** A mistake the browser found before sending, shown like the server's problems. */
export function localProblem(error: unknown): ProblemError {
  const detail = error instanceof Error ? error.message : String(error);
  return new ProblemError({ status: 422, title: "Not sent", detail });
}
