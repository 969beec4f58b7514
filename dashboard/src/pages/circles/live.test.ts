import { describe, expect, it } from "vitest";

import type { LiveEvent } from "../../api/live";
import { TurnStore } from "./live";

function event(type: string, data: Record<string, unknown>): LiveEvent {
  return { type, data, subject: "circle:team", id: type + JSON.stringify(data), occurred_at: "", source: null, correlation_id: null, cursor: null };
}

describe("a conversation's live turns", () => {
  it("gather each speaker's pieces, turn by turn", () => {
    const store = new TurnStore();
    let changes = 0;
    store.subscribe(() => changes++);
    store.apply(event("conversation.turn_started", { conversation_id: 3, turn: 1, speaker: "coder", why: "first" }));
    store.apply(event("conversation.delta", { conversation_id: 3, turn: 1, speaker: "coder", text: "Hel" }));
    store.apply(event("conversation.delta", { conversation_id: 3, turn: 1, speaker: "coder", text: "lo" }));
    store.apply(event("conversation.turn_started", { conversation_id: 3, turn: 2, speaker: "critic", why: "next" }));
    store.apply(event("conversation.delta", { conversation_id: 3, turn: 2, speaker: "critic", text: "Hi" }));
    expect(store.get(3)).toEqual([
      { turn: 1, speaker: "coder", why: "first", text: "Hello", done: false },
      { turn: 2, speaker: "critic", why: "next", text: "Hi", done: false },
    ]);
    store.apply(event("conversation.turn_finished", { conversation_id: 3, turn: 1, speaker: "coder", content: "Hello." }));
    expect(store.get(3)[0]).toMatchObject({ text: "Hello.", done: true });
    expect(store.get(4)).toEqual([]);
    expect(changes).toBe(6);
  });

  it("ignore events of no turn", () => {
    const store = new TurnStore();
    store.apply(event("conversation.finished", { conversation_id: 3, reason: "max_turns" }));
    store.apply(event("circle.task.moved", { task_id: 1 }));
    expect(store.get(3)).toEqual([]);
  });
});
