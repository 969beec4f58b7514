// One live subscription per circle page: the circle's events (subject `circle:<name>`) refresh
// its queries, and a conversation's turns are kept as they are said, token by token.

import { useQueryClient } from "@tanstack/react-query";
import { createContext, useContext, useMemo, useSyncExternalStore, type ReactNode } from "react";

import { useLive, type LiveEvent, type LiveState } from "../../api/live";
import { keys, type Circle } from "./types";

export interface LiveTurn {
  turn: number;
  speaker: string;
  why: string;
  text: string;
  /** The turn was said to its end (its message is in the transcript). */
  done: boolean;
}

const NONE: LiveTurn[] = [];

/** The turns being said, per conversation, from `conversation.*` events. */
export class TurnStore {
  private turns = new Map<number, LiveTurn[]>();
  private listeners = new Set<() => void>();

  subscribe = (listener: () => void) => {
    this.listeners.add(listener);
    return () => void this.listeners.delete(listener);
  };

  get(conversationId: number): LiveTurn[] {
    return this.turns.get(conversationId) ?? NONE;
  }

  apply(event: LiveEvent): void {
    const data = event.data;
    const conversationId = Number(data.conversation_id);
    const turn = Number(data.turn);
    if (!Number.isInteger(conversationId) || !Number.isInteger(turn)) return;
    const speaker = String(data.speaker ?? "");
    const update = (change: (old: LiveTurn) => LiveTurn) => {
      const list = this.get(conversationId);
      const old = list.find((item) => item.turn === turn) ?? { turn, speaker, why: "", text: "", done: false };
      const next = [...list.filter((item) => item.turn !== turn), change(old)].sort((a, b) => a.turn - b.turn);
      this.turns.set(conversationId, next);
      this.listeners.forEach((listener) => listener());
    };
    switch (event.type) {
      case "conversation.turn_started":
        update((old) => ({ ...old, speaker, why: String(data.why ?? ""), text: "", done: false }));
        break;
      case "conversation.delta":
        update((old) => (old.done ? old : { ...old, speaker, text: old.text + String(data.text ?? "") }));
        break;
      case "conversation.turn_finished":
        update((old) => ({ ...old, speaker, text: String(data.content ?? old.text), done: true }));
        break;
      default:
        break;
    }
  }
}

interface CircleLive {
  state: LiveState;
  turns: TurnStore;
}

const Context = createContext<CircleLive | null>(null);

export function CircleLiveProvider({ circle, children }: { circle: Circle; children: ReactNode }) {
  const client = useQueryClient();
  const turns = useMemo(() => new TurnStore(), [circle.id]);
  // The circle's subject: its owner, its members and admins may follow it.
  const state = useLive({
    patterns: ["circle.*", "conversation.*"],
    subjects: [`circle:${circle.name}`],
    onEvent: (event) => {
      turns.apply(event);
      if (event.type === "conversation.delta") return;
      void client.invalidateQueries({ queryKey: keys.circle(circle.id) });
      void client.invalidateQueries({ queryKey: keys.circles });
    },
  });
  const value = useMemo(() => ({ state, turns }), [state, turns]);
  return <Context.Provider value={value}>{children}</Context.Provider>;
}

function useCircleLive(): CircleLive {
  const live = useContext(Context);
  if (!live) throw new Error("useCircleLive outside <CircleLiveProvider>");
  return live;
}

export function useLiveState(): LiveState {
  return useCircleLive().state;
}

/** The turns of a conversation said since this page opened, as they are said. */
export function useLiveTurns(conversationId: number): LiveTurn[] {
  const { turns } = useCircleLive();
  return useSyncExternalStore(turns.subscribe, () => turns.get(conversationId));
}
