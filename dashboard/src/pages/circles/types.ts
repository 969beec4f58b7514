// The shapes of the circles API, named for what they hold.

import type { components } from "../../api/schema";

type Schemas = components["schemas"];

export type Circle = Schemas["CircleOut"];
export type CircleSettings = Schemas["CircleSettings"];
export type Member = Schemas["gathering__api__routers__circles__MemberOut"];
export type Metrics = Schemas["MetricsOut"];
export type Conflict = Schemas["ConflictOut"];
export type Task = Schemas["gathering__api__routers__circles__TaskOut"];
export type TaskDetail = Schemas["TaskDetailOut"];
export type Conversation = Schemas["ConversationOut"];
export type Message = Schemas["MessageOut"];
export type Strategy = Schemas["ConversationIn"]["strategy"];

/** The query keys of one circle: everything under `["circle", id]` is refreshed by its events. */
export const keys = {
  circles: ["circles"] as const,
  circle: (id: number) => ["circle", id] as const,
  members: (id: number) => ["circle", id, "members"] as const,
  metrics: (id: number) => ["circle", id, "metrics"] as const,
  conflicts: (id: number, open: boolean) => ["circle", id, "conflicts", open] as const,
  tasks: (id: number) => ["circle", id, "tasks"] as const,
  task: (id: number, taskId: number) => ["circle", id, "task", taskId] as const,
  conversations: (id: number) => ["circle", id, "conversations"] as const,
  conversation: (id: number, conversationId: number) => ["circle", id, "conversation", conversationId] as const,
  transcript: (id: number, conversationId: number) => ["circle", id, "transcript", conversationId] as const,
};

/** Member id -> name, for cards and tables. */
export function memberNames(members: Member[] | undefined): Map<number, string> {
  return new Map((members ?? []).map((member) => [member.id, member.name]));
}
