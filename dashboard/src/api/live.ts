// Live events from `/ws`: authenticate (multi-user), subscribe, and after a drop reconnect
// with `since` = the last cursor seen, so nothing kept on the server is missed.

import { useEffect, useRef, useState } from "react";

import { refreshTokens } from "./client";
import { readTokens } from "./session";

export interface LiveEvent {
  type: string;
  data: Record<string, unknown>;
  subject: string | null;
  id: string;
  occurred_at: string;
  source: string | null;
  correlation_id: string | null;
  cursor: number | null;
}

export type LiveState = "connecting" | "live" | "reconnecting" | "refused";

export interface LiveOptions {
  patterns: string[];
  subjects?: string[];
  /** Replay the kept events after this cursor first (e.g. the newest of a REST backfill). */
  since?: number;
  onEvent: (event: LiveEvent) => void;
  onState?: (state: LiveState, why?: string) => void;
}

const UNAUTHORIZED = 4401;
const FORBIDDEN = 4403;

/** One subscription kept alive until `close()`. */
export class LiveSocket {
  private socket: WebSocket | null = null;
  private cursor: number | null = null;
  private delay = 500;
  private closed = false;
  private timer: ReturnType<typeof setTimeout> | null = null;

  constructor(private readonly options: LiveOptions) {
    this.cursor = options.since ?? null;
    this.connect();
  }

  close(): void {
    this.closed = true;
    if (this.timer) clearTimeout(this.timer);
    this.socket?.close(1000);
  }

  private connect(): void {
    const scheme = location.protocol === "https:" ? "wss:" : "ws:";
    const socket = new WebSocket(`${scheme}//${location.host}/ws`);
    this.socket = socket;
    socket.onopen = () => {
      const tokens = readTokens();
      if (tokens) socket.send(JSON.stringify({ type: "auth", token: tokens.access_token }));
      else this.subscribe(socket);
    };
    socket.onmessage = (message) => this.receive(socket, message.data);
    socket.onclose = (close) => this.dropped(close);
  }

  private subscribe(socket: WebSocket): void {
    const frame: Record<string, unknown> = { type: "subscribe", patterns: this.options.patterns };
    if (this.options.subjects?.length) frame.subjects = this.options.subjects;
    if (this.cursor !== null) frame.since = this.cursor;
    socket.send(JSON.stringify(frame));
  }

  private receive(socket: WebSocket, raw: unknown): void {
    if (typeof raw !== "string") return;
    let frame: Record<string, unknown>;
    try {
      frame = JSON.parse(raw) as Record<string, unknown>;
    } catch {
      return;
    }
    switch (frame.type) {
      case "authenticated":
        this.subscribe(socket);
        break;
      case "subscribed":
        // With `since`, the replay follows and events move the cursor: the bus's head that
        // `subscribed` names would skip what a cut replay had not sent yet.
        if (this.cursor === null && typeof frame.cursor === "number") this.cursor = frame.cursor;
        this.delay = 500;
        this.options.onState?.("live");
        break;
      case "heartbeat":
        if (typeof frame.cursor === "number") this.cursor = Math.max(this.cursor ?? 0, frame.cursor);
        break;
      case "event": {
        const event = frame.event as LiveEvent;
        if (typeof event.cursor === "number") this.cursor = Math.max(this.cursor ?? 0, event.cursor);
        this.options.onEvent(event);
        break;
      }
      default:
        break;
    }
  }

  private dropped(close: CloseEvent): void {
    if (this.closed) return;
    if (close.code === FORBIDDEN) {
      this.options.onState?.("refused", close.reason || "this account may not see these events");
      return;
    }
    this.options.onState?.("reconnecting", close.reason || undefined);
    const again = async () => {
      if (close.code === UNAUTHORIZED && readTokens() && !(await refreshTokens())) {
        this.options.onState?.("refused", "signed out");
        return;
      }
      if (!this.closed) this.connect();
    };
    this.timer = setTimeout(() => void again(), this.delay);
    this.delay = Math.min(this.delay * 2, 10_000);
  }
}

/** Keep a subscription while the component is mounted; returns the socket's state. */
export function useLive(options: LiveOptions): LiveState {
  const [state, setState] = useState<LiveState>("connecting");
  const latest = useRef(options);
  latest.current = options;
  const key = JSON.stringify([options.patterns, options.subjects]);
  useEffect(() => {
    const socket = new LiveSocket({
      ...latest.current,
      onEvent: (event) => latest.current.onEvent(event),
      onState: (next, why) => {
        setState(next);
        latest.current.onState?.(next, why);
      },
    });
    return () => socket.close();
  }, [key]);
  return state;
}
