import { useMutation, useQuery, useQueryClient } from "@tanstack/react-query";
import { useState, type FormEvent } from "react";
import { Link, useParams } from "react-router-dom";

import { api, must } from "../../api/client";
import { ProblemView } from "../../components/ProblemView";
import { when } from "../../format";
import { useCircle } from "./CircleLayout";
import { useLiveTurns, type LiveTurn } from "./live";
import { keys, type Circle, type Conversation, type Message } from "./types";

type Control = "start" | "pause" | "resume" | "cancel" | "summary";

const OPEN = ["created", "running", "paused"];

function controlsFor(status: string): Control[] {
  const controls: Control[] = [];
  if (status === "created") controls.push("start");
  if (status === "running") controls.push("pause");
  if (status === "paused") controls.push("resume");
  if (OPEN.includes(status)) controls.push("cancel");
  controls.push("summary");
  return controls;
}

const CONTROL_LABEL: Record<Control, string> = {
  start: "Start",
  pause: "Pause",
  resume: "Resume",
  cancel: "Cancel",
  summary: "Ask for a summary",
};

function Controls({ circle, conversation }: { circle: Circle; conversation: Conversation }) {
  const client = useQueryClient();
  const [asked, setAsked] = useState(false);
  const control = useMutation({
    mutationFn: (what: Control) => {
      const options = { params: { path: { circle_id: circle.id, conversation_id: conversation.id } } };
      switch (what) {
        case "start":
          return must(api.POST("/circles/{circle_id}/conversations/{conversation_id}/start", options));
        case "pause":
          return must(api.POST("/circles/{circle_id}/conversations/{conversation_id}/pause", options));
        case "resume":
          return must(api.POST("/circles/{circle_id}/conversations/{conversation_id}/resume", options));
        case "cancel":
          return must(api.POST("/circles/{circle_id}/conversations/{conversation_id}/cancel", options));
        case "summary":
          return must(api.POST("/circles/{circle_id}/conversations/{conversation_id}/summary", options));
      }
    },
    onSuccess: (_, what) => setAsked(what === "summary"),
    onSettled: () => client.invalidateQueries({ queryKey: keys.circle(circle.id) }),
  });
  return (
    <div className="stack tight">
      <div className="row" role="group" aria-label="Conversation controls">
        {controlsFor(conversation.status).map((what) => (
          <button
            key={what}
            type="button"
            className={what === "start" ? "primary" : undefined}
            disabled={control.isPending}
            onClick={() => control.mutate(what)}
          >
            {CONTROL_LABEL[what]}
          </button>
        ))}
      </div>
      {asked ? <p className="muted">A summary was asked for: it shows here when written.</p> : null}
      {control.error ? <ProblemView error={control.error} /> : null}
    </div>
  );
}

function Inject({ circle, conversation }: { circle: Circle; conversation: Conversation }) {
  const client = useQueryClient();
  const [text, setText] = useState("");
  const inject = useMutation({
    mutationFn: (said: string) =>
      must(
        api.POST("/circles/{circle_id}/conversations/{conversation_id}/inject", {
          params: { path: { circle_id: circle.id, conversation_id: conversation.id } },
          body: { text: said },
        }),
      ),
    onSuccess: async () => {
      setText("");
      await client.invalidateQueries({ queryKey: keys.transcript(circle.id, conversation.id) });
    },
  });
  function submit(event: FormEvent) {
    event.preventDefault();
    if (text.trim()) inject.mutate(text);
  }
  return (
    <form className="composer" onSubmit={submit} aria-label="Say something">
      <label>
        <span className="muted">Say something (the next speakers read it; @name picks one with mention)</span>
        <textarea value={text} onChange={(event) => setText(event.target.value)} maxLength={20000} />
      </label>
      <button type="submit" className="primary" disabled={inject.isPending || !text.trim()}>
        Say it
      </button>
      {inject.error ? <ProblemView error={inject.error} /> : null}
    </form>
  );
}

function Said({ message }: { message: Message }) {
  const person = message.turn === null;
  return (
    <article
      className={`message ${person ? "user" : "assistant"}`}
      aria-label={person ? `${message.speaker}, a person` : `${message.speaker}, turn ${message.turn}`}
    >
      <h3 className="speaker">
        {message.speaker} <span className="muted">{person ? "(person)" : `turn ${message.turn}`}</span>
      </h3>
      <pre>{message.content}</pre>
      <div className="meta">
        #{message.n} · {when(message.at)}
        {message.tokens ? ` · ${message.tokens} tokens` : ""}
      </div>
    </article>
  );
}

function Speaking({ turn }: { turn: LiveTurn }) {
  return (
    <article className="message assistant" aria-label={`${turn.speaker}, turn ${turn.turn}`} aria-busy={!turn.done}>
      <h3 className="speaker">
        {turn.speaker} <span className="muted">turn {turn.turn}{turn.done ? "" : " · speaking…"}</span>
      </h3>
      {turn.why ? <p className="muted">{turn.why}</p> : null}
      <pre>{turn.text}</pre>
    </article>
  );
}

/** A conversation as it is said: stored messages, then the turns being said, token by token. */
export default function ConversationPage() {
  const circle = useCircle();
  const conversationId = Number(useParams().conversationId);
  const conversation = useQuery({
    queryKey: keys.conversation(circle.id, conversationId),
    queryFn: () =>
      must(
        api.GET("/circles/{circle_id}/conversations/{conversation_id}", {
          params: { path: { circle_id: circle.id, conversation_id: conversationId } },
        }),
      ),
  });
  const transcript = useQuery({
    queryKey: keys.transcript(circle.id, conversationId),
    queryFn: () =>
      must(
        api.GET("/circles/{circle_id}/conversations/{conversation_id}/transcript", {
          params: { path: { circle_id: circle.id, conversation_id: conversationId }, query: { limit: 1000 } },
        }),
      ),
  });
  const live = useLiveTurns(conversationId);
  if (conversation.isPending) return <p aria-busy="true">Loading…</p>;
  if (conversation.error) return <ProblemView error={conversation.error} />;
  const found = conversation.data;
  const messages = transcript.data ?? [];
  const stored = new Set(messages.flatMap((message) => (message.turn === null ? [] : [message.turn])));
  const speaking = live.filter((turn) => !stored.has(turn.turn));
  return (
    <section className="stack" aria-labelledby="conversation">
      <p>
        <Link to={`/circles/${circle.id}/conversations`}>← Conversations</Link>
      </p>
      <h2 id="conversation">{found.topic}</h2>
      <div className="row">
        <span className="badge" role="status" aria-label={`Status: ${found.status}`}>
          {found.status}
        </span>
        <span className="muted">
          {found.strategy} · turn {found.turns} of {found.max_turns} · {found.tokens.toLocaleString()} of{" "}
          {found.token_budget.toLocaleString()} tokens
          {found.finish_reason ? ` · ended: ${found.finish_reason}` : ""}
        </span>
      </div>
      {found.error ? <ProblemView error={new Error(found.error)} /> : null}
      <Controls circle={circle} conversation={found} />
      <section className="messages" aria-label="Transcript" aria-live="polite">
        {transcript.error ? <ProblemView error={transcript.error} /> : null}
        {!messages.length && !speaking.length ? <p className="muted">Nothing said yet.</p> : null}
        {messages.map((message) => (
          <Said key={`n${message.n}`} message={message} />
        ))}
        {speaking.map((turn) => (
          <Speaking key={`t${turn.turn}`} turn={turn} />
        ))}
      </section>
      {found.summary ? (
        <section className="card stack" aria-labelledby="summary">
          <h3 id="summary">Summary</h3>
          <pre>{found.summary}</pre>
        </section>
      ) : null}
      {OPEN.includes(found.status) ? <Inject circle={circle} conversation={found} /> : null}
    </section>
  );
}
