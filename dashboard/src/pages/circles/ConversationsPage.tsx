import { useMutation, useQuery, useQueryClient } from "@tanstack/react-query";
import { useState, type FormEvent } from "react";
import { Link, useNavigate } from "react-router-dom";

import { api, must } from "../../api/client";
import type { components } from "../../api/schema";
import { ProblemView } from "../../components/ProblemView";
import { when } from "../../format";
import { useCircle } from "./CircleLayout";
import { keys, type Circle, type Strategy } from "./types";

type ConversationIn = components["schemas"]["ConversationIn"];

const STRATEGIES: { value: Strategy; label: string }[] = [
  { value: "round_robin", label: "round robin (in order)" },
  { value: "mention", label: "mention (whoever is @named)" },
  { value: "facilitator", label: "facilitator (a lead picks)" },
  { value: "free", label: "free (a seeded draw)" },
];

function StartConversation({ circle }: { circle: Circle }) {
  const client = useQueryClient();
  const navigate = useNavigate();
  const [strategy, setStrategy] = useState<Strategy>("round_robin");
  const members = useQuery({
    queryKey: keys.members(circle.id),
    queryFn: () => must(api.GET("/circles/{circle_id}/members", { params: { path: { circle_id: circle.id } } })),
  });
  const speakers = (members.data ?? []).filter((member) => member.agent_id !== null && member.active && !member.gone);
  const start = useMutation({
    mutationFn: async (body: ConversationIn) => {
      const made = await must(api.POST("/circles/{circle_id}/conversations", { params: { path: { circle_id: circle.id } }, body }));
      await must(
        api.POST("/circles/{circle_id}/conversations/{conversation_id}/start", {
          params: { path: { circle_id: circle.id, conversation_id: made.id } },
        }),
      );
      return made;
    },
    onSuccess: async (made) => {
      await client.invalidateQueries({ queryKey: keys.conversations(circle.id) });
      navigate(`/circles/${circle.id}/conversations/${made.id}`);
    },
  });

  function submit(event: FormEvent<HTMLFormElement>) {
    event.preventDefault();
    const form = new FormData(event.currentTarget);
    const chosen = form.getAll("participants").map(Number);
    const stop = String(form.get("stop_phrase") ?? "").trim();
    const facilitator = Number(form.get("facilitator_id") || 0);
    start.mutate({
      topic: String(form.get("topic")).trim(),
      strategy,
      participants: chosen.length ? chosen : null,
      max_turns: Number(form.get("max_turns")),
      token_budget: Number(form.get("token_budget")),
      stop_phrase: stop || null,
      consensus: form.get("consensus") === "on",
      facilitator_id: strategy === "facilitator" && facilitator ? facilitator : null,
      seed: Number(form.get("seed") || 0),
    });
  }

  return (
    <form className="card stack" onSubmit={submit} aria-label="Start a conversation">
      <h3>Start a conversation</h3>
      <label>
        Topic
        <input name="topic" required maxLength={2000} />
      </label>
      <div className="form-grid">
        <label>
          Strategy
          <select value={strategy} onChange={(event) => setStrategy(event.target.value as Strategy)}>
            {STRATEGIES.map((item) => (
              <option key={item.value} value={item.value}>
                {item.label}
              </option>
            ))}
          </select>
        </label>
        <label>
          Turns at most
          <input name="max_turns" type="number" min={1} max={500} defaultValue={6} />
        </label>
        <label>
          Token budget
          <input name="token_budget" type="number" min={1} max={100000000} defaultValue={100000} />
        </label>
        <label>
          Stop phrase (optional)
          <input name="stop_phrase" maxLength={200} />
        </label>
        {strategy === "facilitator" ? (
          <label>
            Facilitator
            <select name="facilitator_id" defaultValue="">
              <option value="">a lead</option>
              {speakers.map((member) => (
                <option key={member.id} value={member.id}>
                  {member.name}
                </option>
              ))}
            </select>
          </label>
        ) : null}
        {strategy === "free" ? (
          <label>
            Seed
            <input name="seed" type="number" min={0} max={2147483647} defaultValue={0} />
          </label>
        ) : null}
      </div>
      <label className="inline">
        <input type="checkbox" name="consensus" />
        End when every speaker says AGREED
      </label>
      <fieldset>
        <legend>Speakers, in order (none chosen: every active agent member)</legend>
        {speakers.length ? (
          <div className="row">
            {speakers.map((member) => (
              <label key={member.id} className="inline">
                <input type="checkbox" name="participants" value={member.id} />
                {member.name}
              </label>
            ))}
          </div>
        ) : (
          <p className="muted">No active agent member: add agents to the circle first.</p>
        )}
      </fieldset>
      {members.error ? <ProblemView error={members.error} /> : null}
      {start.error ? <ProblemView error={start.error} /> : null}
      <div className="row">
        <button type="submit" className="primary" disabled={start.isPending || circle.status === "archived"}>
          Start
        </button>
      </div>
    </form>
  );
}

/** A circle's conversations, newest first, and a form to start one. */
export default function ConversationsPage() {
  const circle = useCircle();
  const conversations = useQuery({
    queryKey: keys.conversations(circle.id),
    queryFn: () =>
      must(
        api.GET("/circles/{circle_id}/conversations", { params: { path: { circle_id: circle.id }, query: { limit: 100 } } }),
      ),
  });
  return (
    <section className="stack" aria-labelledby="conversations">
      <h2 id="conversations">Conversations</h2>
      <StartConversation circle={circle} />
      {conversations.isPending ? <p aria-busy="true">Loading…</p> : null}
      {conversations.error ? <ProblemView error={conversations.error} /> : null}
      {conversations.data && !conversations.data.length ? <p className="muted">None yet.</p> : null}
      {conversations.data?.length ? (
        <table>
          <thead>
            <tr>
              <th scope="col">Topic</th>
              <th scope="col">Strategy</th>
              <th scope="col">Status</th>
              <th scope="col">Turns</th>
              <th scope="col">Tokens</th>
              <th scope="col">Started</th>
            </tr>
          </thead>
          <tbody>
            {conversations.data.map((conversation) => (
              <tr key={conversation.id}>
                <td>
                  <Link to={`/circles/${circle.id}/conversations/${conversation.id}`}>{conversation.topic}</Link>
                </td>
                <td>{conversation.strategy}</td>
                <td>{conversation.status}</td>
                <td>
                  {conversation.turns} / {conversation.max_turns}
                </td>
                <td>{conversation.tokens.toLocaleString()}</td>
                <td>{when(conversation.created_at)}</td>
              </tr>
            ))}
          </tbody>
        </table>
      ) : null}
    </section>
  );
}
