"""Conversations of a circle (migration 0022): a topic, the agent members who speak, a turn
strategy (`strategies`) that picks each speaker, limits (turns, tokens, a stop phrase, a
consensus check), control (pause, resume, cancel, a person's message injected mid-run), the
stored transcript and a summary by the model at the end or on demand.

A running conversation is one job (`circles:converse`, one at a time per conversation) that
takes turn after turn; a pause or a cancel takes effect when the turn being said ends. Every
turn streams on the circle's subject: `conversation.turn_started`, `conversation.delta` (the
text as it comes), `conversation.turn_finished`, then `conversation.finished`. After a crash
the job is queued again and goes on from the stored transcript; a stored turn is never said
twice (its number is unique).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

import structlog
from pydantic import BaseModel, ConfigDict, Field

from gathering.circles.definition import SAID, Id
from gathering.circles.store import SQL, CircleRecord, MemberRecord, get_circle, list_members
from gathering.circles.strategies import (
    Speaker,
    Strategy,
    free,
    mention,
    named_in,
    pick_named,
    round_robin,
)
from gathering.circles.work import BUSY_RETRY_SECONDS, circle_agent, run_agent_turn
from gathering.db.database import Database, Queries
from gathering.db.fields import Flag, Said, Whole
from gathering.errors import AgentBusyError, ConflictError, GatheringError, NotFoundError
from gathering.events import Event, EventBus
from gathering.jobs import enqueue
from gathering.usage import attributed

log = structlog.get_logger(__name__)
CONVERSE = "circles:converse"
SUMMARIZE = "circles:summarize"
QUEUE = "circles"
ENDED = ("finished", "cancelled", "failed")
AGREED = "AGREED"
MAX_TRANSCRIPT = 40  # messages a speaker is shown, the latest
MAX_MESSAGE_CHARS = 4_000  # of each, in a prompt
DELTA_SECONDS = 0.1  # text deltas are sent at most this often (and at the end of a turn)


class ConversationIn(BaseModel):
    """A new conversation."""

    model_config = ConfigDict(extra="forbid")

    topic: Said = Field(min_length=1, max_length=2_000, pattern=SAID)
    participants: list[Id] | None = Field(
        default=None,
        min_length=1,
        max_length=20,
        description="Agent members who speak, in order (default: every active agent member)",
    )
    strategy: Strategy = "round_robin"
    facilitator_id: Id | None = Field(
        default=None, description="The member who picks speakers (facilitator; default: a lead)"
    )
    max_turns: Annotated[Whole, Field(ge=1, le=500)] = 10
    token_budget: Annotated[Whole, Field(ge=1, le=100_000_000)] = 100_000
    stop_phrase: str | None = Field(
        default=None,
        min_length=1,
        max_length=200,
        pattern=SAID,
        description="Said by anyone, it ends",
    )
    consensus: Flag = Field(
        default=False, description=f"It ends when every speaker's last turn says {AGREED}"
    )
    seed: Annotated[Whole, Field(ge=0, le=2**31 - 1)] = Field(
        default=0, description="The free strategy's draw"
    )


@dataclass(frozen=True)
class ConversationRecord:
    """A stored conversation."""

    id: int
    circle_id: int
    topic: str
    strategy: str
    participants: list[int]
    facilitator_id: int | None
    max_turns: int
    token_budget: int
    stop_phrase: str | None
    consensus: bool
    seed: int
    status: str
    turns: int
    tokens: int
    finish_reason: str | None
    summary: str | None
    error: str | None
    created_by: int | None
    created_at: datetime
    updated_at: datetime
    finished_at: datetime | None

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> ConversationRecord:
        return cls(**{name: row[name] for name in cls.__dataclass_fields__})


async def get_conversation(db: Queries, conversation_id: int) -> ConversationRecord:
    row = await db.fetch_one(SQL["conversation_by_id"], conversation_id)
    if row is None:
        raise NotFoundError(f"no conversation {conversation_id}")
    return ConversationRecord.from_row(row)


async def list_conversations(
    db: Queries, circle_id: int, *, limit: int = 100, offset: int = 0
) -> list[ConversationRecord]:
    rows = await db.fetch_all(SQL["conversations"], circle_id, limit, offset)
    return [ConversationRecord.from_row(row) for row in rows]


async def transcript(
    db: Queries, conversation_id: int, *, after: int = 0, limit: int = 1_000
) -> list[dict[str, Any]]:
    """The messages after number `after`, oldest first."""
    return list(await db.fetch_all(SQL["messages"], conversation_id, after, limit))


async def create_conversation(
    tx: Queries, circle: CircleRecord, spec: ConversationIn, user_id: int | None
) -> ConversationRecord:
    """A conversation of `circle`, `created` (start it to run it). Its speakers are agent
    members; a facilitated one needs an agent member to facilitate."""
    members = {m.id: m for m in await list_members(tx, circle.id)}
    if circle.status == "archived":
        raise ConflictError(f"circle {circle.name!r} is archived")
    wanted = spec.participants or [
        m.id for m in members.values() if m.active and m.agent_id is not None
    ]
    participants = list(dict.fromkeys(wanted))
    for member_id in participants:
        member = members.get(member_id)
        if member is None or not member.active or member.agent_id is None:
            raise ConflictError(
                f"member {member_id} cannot speak: participants are active agent members",
                hint="people join in with inject",
            )
    if not participants:
        raise ConflictError("the circle has no active agent member to speak")
    facilitator = spec.facilitator_id
    if facilitator is None and spec.strategy == "facilitator":
        leads = [m.id for m in members.values() if m.role == "lead" and m.agent_id and m.active]
        facilitator = leads[0] if leads else None
        if facilitator is None:
            raise ConflictError(
                "a facilitated conversation needs an active agent member to facilitate",
                hint="give facilitator_id, or make an agent member a lead",
            )
    chosen = members.get(facilitator) if facilitator is not None else None
    if facilitator is not None and (chosen is None or chosen.agent_id is None or not chosen.active):
        raise ConflictError(
            f"member {facilitator} cannot facilitate: it must be an active agent member of "
            "this circle"
        )
    row = await tx.fetch_one(
        SQL["insert_conversation"],
        circle.id,
        spec.topic,
        spec.strategy,
        participants,
        facilitator,
        spec.max_turns,
        spec.token_budget,
        spec.stop_phrase,
        spec.consensus,
        spec.seed,
        user_id,
    )
    assert row is not None
    return ConversationRecord.from_row(row)


async def _queue(tx: Queries, conversation_id: int, at: datetime | None = None) -> None:
    """Queue the conversation's job (one runs at a time per conversation)."""
    args = {"conversation_id": conversation_id}
    await enqueue(tx, CONVERSE, args, queue=QUEUE, lock=f"conversation:{conversation_id}", at=at)


def _event(circle: CircleRecord, kind: str, conversation_id: int, body: dict[str, Any]) -> Event:
    data = {
        "circle_id": circle.id,
        "circle": circle.name,
        "conversation_id": conversation_id,
        **body,
    }
    return Event(f"conversation.{kind}", data, subject=circle.subject, source="circles")


def _lines(messages: list[dict[str, Any]]) -> str:
    shown = messages[-MAX_TRANSCRIPT:]
    lines = [f"{m['speaker']}: {m['content'][:MAX_MESSAGE_CHARS]}" for m in shown]
    return "\n".join(lines) or "(nothing yet: you open it)"


def speaker_prompt(
    circle: CircleRecord,
    conversation: ConversationRecord,
    member: MemberRecord,
    names: list[str],
    messages: list[dict[str, Any]],
    turn: int,
) -> str:
    """What a speaker is asked on their turn."""
    lines = [
        f"You are {member.name}, a {member.role} of the circle {circle.name!r}.",
        f"The circle discusses: {conversation.topic}",
        f"Participants: {', '.join(names)}.",
        "",
        "The conversation so far:",
        _lines(messages),
        "",
        f"It is your turn ({turn} of at most {conversation.max_turns}). "
        "Reply with your message only.",
    ]
    if conversation.strategy == "mention":
        lines.append("To hand the word to someone, name them as @name.")
    if conversation.consensus:
        lines.append(f"When you agree with where the discussion has landed, end with {AGREED}.")
    return "\n".join(lines)


class Conversations:
    """Start, control and run circles' conversations on `db`, with events on `bus`."""

    def __init__(self, db: Database, bus: EventBus | None) -> None:
        self.db = db
        self.bus = bus

    # --- control --------------------------------------------------------------------------

    async def start(self, conversation_id: int) -> ConversationRecord:
        """created -> running: its job is queued."""
        return await self._control(conversation_id, ("created",), "running", "started")

    async def pause(self, conversation_id: int) -> ConversationRecord:
        """running -> paused, when the turn being said ends."""
        return await self._control(conversation_id, ("running",), "paused", "paused")

    async def resume(self, conversation_id: int) -> ConversationRecord:
        """paused -> running: its job is queued again."""
        return await self._control(conversation_id, ("paused",), "running", "resumed")

    async def cancel(self, conversation_id: int) -> ConversationRecord:
        """Ends it now (a turn being said ends first, and is kept)."""
        return await self._control(
            conversation_id, ("created", "running", "paused"), "cancelled", "cancelled"
        )

    async def _control(
        self, conversation_id: int, sources: tuple[str, ...], to: str, kind: str
    ) -> ConversationRecord:
        async with self.db.transaction() as tx:
            row = await tx.fetch_one(SQL["lock_conversation"], conversation_id)
            if row is None:
                raise NotFoundError(f"no conversation {conversation_id}")
            found = ConversationRecord.from_row(row)
            if found.status not in sources:
                raise ConflictError(
                    f"conversation {conversation_id} is {found.status}: it cannot be {kind}",
                    details={"status": found.status},
                )
            circle = await get_circle(tx, found.circle_id)
            if to == "running" and circle.status == "archived":
                raise ConflictError(f"circle {circle.name!r} is archived: it holds no conversation")
            reason = "cancelled" if to == "cancelled" else None
            changed = await tx.fetch_one(SQL["set_conversation"], found.id, to, reason, None, None)
            assert changed is not None
            conversation = ConversationRecord.from_row(changed)
            if to == "running":
                await _queue(tx, found.id)
            events = [_event(circle, kind, found.id, {"status": to})]
            if to == "cancelled":
                events.append(_event(circle, "finished", found.id, {"reason": "cancelled"}))
            await self._publish(events, tx)
        return conversation

    async def cancel_open(self, circle_id: int) -> int:
        """Cancel every conversation of a circle that has not ended (it was archived)."""
        cancelled = 0
        for row in await self.db.fetch_all(SQL["open_conversations"], circle_id):
            try:
                await self.cancel(row["id"])
                cancelled += 1
            except ConflictError:  # it ended meanwhile
                pass
        return cancelled

    async def inject(
        self, conversation_id: int, user_id: int | None, speaker: str, text: str
    ) -> dict[str, Any]:
        """A person's message, said now: the next speakers read it."""
        async with self.db.transaction() as tx:
            row = await tx.fetch_one(SQL["lock_conversation"], conversation_id)
            if row is None:
                raise NotFoundError(f"no conversation {conversation_id}")
            found = ConversationRecord.from_row(row)
            if found.status in ENDED:
                raise ConflictError(f"conversation {conversation_id} is {found.status}")
            message = await tx.fetch_one(
                SQL["insert_message"], found.id, None, None, user_id, speaker, text, 0
            )
            assert message is not None
            circle = await get_circle(tx, found.circle_id)
            body = {"n": message["n"], "speaker": speaker, "content": text, "user_id": user_id}
            events = [_event(circle, "injected", found.id, body)]
            members = await list_members(tx, circle.id)
            events += _mentions(circle, found, members, message["n"], speaker, text)
            await self._publish(events, tx)
        return dict(message)

    async def request_summary(self, conversation_id: int) -> None:
        """Queue a summary of the transcript so far (the `summary` field, when done)."""
        await get_conversation(self.db, conversation_id)
        async with self.db.transaction() as tx:
            await enqueue(tx, SUMMARIZE, {"conversation_id": conversation_id}, queue=QUEUE)

    async def _publish(self, events: list[Event], tx: Queries | None = None) -> None:
        if self.bus is not None:
            await self.bus.publish_many(events, durable=True, tx=tx)

    # --- the job --------------------------------------------------------------------------

    async def run(self, conversation_id: int) -> None:
        """Take turns until a limit, a pause or a cancel (the job `circles:converse`)."""
        while True:
            conversation = await get_conversation(self.db, conversation_id)
            if conversation.status != "running":
                return
            circle = await get_circle(self.db, conversation.circle_id)
            members = {m.id: m for m in await list_members(self.db, circle.id)}
            speakers = [
                Speaker(member_id, members[member_id].name)
                for member_id in conversation.participants
                if member_id in members and members[member_id].active
            ]
            messages = await transcript(self.db, conversation.id, limit=100_000)
            reason = _ended_by(conversation, speakers, messages)
            if reason is not None:
                await self._finish(circle, conversation, members, messages, reason)
                return
            try:
                await self._take_turn(circle, conversation, members, speakers, messages)
            except AgentBusyError:  # the speaker is in another turn: go on a little later
                at = datetime.now(UTC) + timedelta(seconds=BUSY_RETRY_SECONDS)
                async with self.db.transaction() as tx:
                    await _queue(tx, conversation.id, at=at)
                return
            except GatheringError as exc:
                await self._fail(circle, conversation, f"turn {conversation.turns + 1}: {exc}")
                return

    async def _take_turn(
        self,
        circle: CircleRecord,
        conversation: ConversationRecord,
        members: dict[int, MemberRecord],
        speakers: list[Speaker],
        messages: list[dict[str, Any]],
    ) -> None:
        turn = conversation.turns + 1
        speaker, why = await self._next(circle, conversation, members, speakers, messages, turn)
        member = members[speaker.member_id]
        base = {"turn": turn, "member_id": member.id, "speaker": member.name}
        await self._publish([_event(circle, "turn_started", conversation.id, {**base, "why": why})])
        prompt = speaker_prompt(
            circle, conversation, member, [s.name for s in speakers], messages, turn
        )
        pending: list[str] = []
        last_sent = time.monotonic()

        async def flush() -> None:
            nonlocal last_sent
            if pending:
                text = "".join(pending)
                pending.clear()
                await self._publish(
                    [_event(circle, "delta", conversation.id, {**base, "text": text})]
                )
            last_sent = time.monotonic()

        async def on_delta(text: str) -> None:
            pending.append(text)
            if time.monotonic() - last_sent >= DELTA_SECONDS:
                await flush()

        agent = await circle_agent(self.db, self.bus, circle, member)
        key = f"conversation:{conversation.id}:turn:{turn}"
        with attributed(circle_id=circle.id):  # its calls are charged to the circle too
            result = await run_agent_turn(agent, prompt, key, on_delta)
        await flush()
        tokens = result.usage.input_tokens + result.usage.output_tokens
        async with self.db.transaction() as tx:
            await tx.fetch_one(SQL["lock_conversation"], conversation.id)
            stored = await tx.fetch_one(
                SQL["insert_message"],
                conversation.id,
                turn,
                member.id,
                None,
                member.name,
                result.text,
                tokens,
            )
            if stored is None:
                return  # said and stored before a crash
            await tx.execute(SQL["count_turn"], conversation.id, tokens)
            await tx.execute(SQL["count_work"], member.id, tokens, 0.0)
            body = {**base, "n": stored["n"], "content": result.text, "tokens": tokens}
            events = [_event(circle, "turn_finished", conversation.id, body)]
            events += _mentions(
                circle, conversation, list(members.values()), stored["n"], member.name, result.text
            )
            await self._publish(events, tx)

    async def _next(
        self,
        circle: CircleRecord,
        conversation: ConversationRecord,
        members: dict[int, MemberRecord],
        speakers: list[Speaker],
        messages: list[dict[str, Any]],
        turn: int,
    ) -> tuple[Speaker, str]:
        """Who speaks on `turn`, and why."""
        said = [m for m in messages if m["turn"] is not None]
        last_speaker = said[-1]["member_id"] if said else None
        last_text = messages[-1]["content"] if messages else None
        if conversation.strategy == "mention":
            return mention(speakers, last_text, last_speaker)
        if conversation.strategy == "free":
            return free(
                speakers, conversation.seed, turn, last_speaker
            ), f"seed {conversation.seed}"
        facilitator = members.get(conversation.facilitator_id or 0)
        if conversation.strategy == "facilitator" and facilitator and facilitator.active:
            prompt = "\n".join(
                [
                    f"You facilitate the circle {circle.name!r}'s conversation on: "
                    f"{conversation.topic}",
                    f"Participants: {', '.join(s.name for s in speakers)}.",
                    "",
                    "The conversation so far:",
                    _lines(messages),
                    "",
                    "Who should speak next? Answer with one participant's name only.",
                ]
            )
            key = f"conversation:{conversation.id}:pick:{turn}"
            agent = await circle_agent(self.db, self.bus, circle, facilitator)
            with attributed(circle_id=circle.id):
                answer = await run_agent_turn(agent, prompt, key)
            return pick_named(answer.text, speakers, last_speaker)
        return round_robin(speakers, turn), "in order"

    async def summarize(self, conversation_id: int) -> str:
        """A summary of the transcript by the model (the facilitator, or the first speaker),
        stored on the conversation; the job `circles:summarize`."""
        conversation = await get_conversation(self.db, conversation_id)
        circle = await get_circle(self.db, conversation.circle_id)
        members = {m.id: m for m in await list_members(self.db, circle.id)}
        messages = await transcript(self.db, conversation.id, limit=100_000)
        summary = await self._summary(circle, conversation, members, messages, "now")
        await self.db.execute(SQL["set_summary"], conversation.id, summary)
        await self._publish([_event(circle, "summarized", conversation.id, {"summary": summary})])
        return summary

    async def _summary(
        self,
        circle: CircleRecord,
        conversation: ConversationRecord,
        members: dict[int, MemberRecord],
        messages: list[dict[str, Any]],
        when: str,
    ) -> str:
        able = [
            members[m]
            for m in [conversation.facilitator_id, *conversation.participants]
            if m in members and members[m].active and members[m].agent_id is not None
        ]
        if not able:
            raise ConflictError("no agent member is left to write the summary")
        writer = able[0]
        prompt = "\n".join(
            [
                f"Summarize the circle {circle.name!r}'s conversation on: {conversation.topic}",
                "",
                _lines(messages),
                "",
                "Give the conclusions, the open questions and who holds which view, briefly.",
            ]
        )
        key = f"conversation:{conversation.id}:summary:{when}:{len(messages)}"
        agent = await circle_agent(self.db, self.bus, circle, writer)
        with attributed(circle_id=circle.id):
            return (await run_agent_turn(agent, prompt, key)).text

    async def _finish(
        self,
        circle: CircleRecord,
        conversation: ConversationRecord,
        members: dict[int, MemberRecord],
        messages: list[dict[str, Any]],
        reason: str,
    ) -> None:
        summary: str | None = None
        body: dict[str, Any] = {"reason": reason, "turns": conversation.turns}
        try:
            summary = await self._summary(circle, conversation, members, messages, "end")
        except GatheringError as exc:
            body["summary_error"] = str(exc)
            log.warning(
                "conversation summary failed", conversation_id=conversation.id, error=str(exc)
            )
        body["summary"] = summary
        await self._end(circle, conversation.id, "finished", body, summary=summary)

    async def _fail(
        self, circle: CircleRecord, conversation: ConversationRecord, error: str
    ) -> None:
        log.warning("conversation failed", conversation_id=conversation.id, error=error)
        body = {"reason": "error", "error": error}
        await self._end(circle, conversation.id, "failed", body, error=error)

    async def _end(
        self,
        circle: CircleRecord,
        conversation_id: int,
        status: str,
        body: dict[str, Any],
        *,
        summary: str | None = None,
        error: str | None = None,
    ) -> None:
        """A running conversation ends with `status`; `conversation.finished` says why."""
        async with self.db.transaction() as tx:
            row = await tx.fetch_one(SQL["lock_conversation"], conversation_id)
            if row is None or row["status"] != "running":
                return  # paused or cancelled meanwhile
            await tx.fetch_one(
                SQL["set_conversation"], conversation_id, status, body["reason"], error, summary
            )
            await self._publish([_event(circle, "finished", conversation_id, body)], tx)


def _mentions(
    circle: CircleRecord,
    conversation: ConversationRecord,
    members: list[MemberRecord],
    n: int,
    speaker: str,
    text: str,
) -> list[Event]:
    """A `conversation.mentioned` event for each member of the circle that `text` @names."""
    named = named_in(text, [Speaker(m.id, m.name) for m in members], at_sign=True)
    return [
        _event(
            circle,
            "mentioned",
            conversation.id,
            {"n": n, "member_id": found.member_id, "member": found.name, "by": speaker},
        )
        for found in named
    ]


def _ended_by(
    conversation: ConversationRecord, speakers: list[Speaker], messages: list[dict[str, Any]]
) -> str | None:
    """Why the conversation ends now, or None while it goes on."""
    if not speakers:
        return "no_participant"
    if conversation.turns >= conversation.max_turns:
        return "max_turns"
    if conversation.tokens >= conversation.token_budget:
        return "token_budget"
    said = [m for m in messages if m["turn"] is not None]
    phrase = conversation.stop_phrase
    if phrase and any(phrase.lower() in m["content"].lower() for m in messages):
        return "stop_phrase"  # said by a speaker, or by a person who joined in (even mid-turn)
    if conversation.consensus and len(said) >= len(speakers):
        last_word = {}
        for message in said:
            last_word[message["member_id"]] = message["content"]
        agreed = [AGREED.lower() in last_word.get(s.member_id, "").lower() for s in speakers]
        if all(agreed):
            return "consensus"
    return None
