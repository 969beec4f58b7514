"""A conversation as stored: sessions, their numbered messages, turns and tool calls.

Every method of a `Conversation` runs while its holder has the agent's turn lock (see
`turn_lock.py`), so the messages of a session are written by one turn at a time, on any
instance. PostgreSQL is the one truth; `WindowCache` keeps the tail of each session this
process has seen, and a cheap check of the stored `last_seq` decides whether it is still
current.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict, deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any, Literal, Protocol

import structlog
from psycopg.types.json import Jsonb

from gathering.db.database import OnConnection, Queries, Row
from gathering.db.named_queries import queries_of
from gathering.db.storable import storable_text, storable_value
from gathering.errors import GatheringError, NotFoundError
from gathering.llm import Message, ToolResult, Usage
from gathering.usage import LedgerEntry
from gathering.usage import record as record_usage

TurnStatus = Literal["running", "waiting", "completed", "failed", "interrupted"]
CACHED_AGENTS = 1024  # sessions whose tail one process keeps in memory (least recent leave)


@dataclass(frozen=True)
class HistoryEntry:
    """One stored message, with what it cost when it came from a model.

    An `error` entry records why a turn failed: it is shown in the history and never sent to
    a model (its `message` is an empty assistant message). `charge` is the usage ledger row
    of the model call that produced the message, written in the same transaction.
    """

    message: Message
    model: str | None = None
    usage: Usage | None = None
    cost_usd: float | None = None
    created_at: datetime | None = None
    seq: int | None = None
    turn_id: str | None = None
    error: str | None = None
    charge: LedgerEntry | None = None

    @property
    def role(self) -> str:
        """The message's role, or "error" for an error entry."""
        return "error" if self.error is not None else self.message.role


@dataclass(frozen=True)
class StoredTurn:
    """A turn found by its idempotency key."""

    id: str
    status: TurnStatus
    request_text: str | None
    result: Mapping[str, Any] | None
    error: Mapping[str, Any] | None


@dataclass(frozen=True)
class ResumedTurn:
    """A turn taken up again after its approvals were answered: its user message, how many
    model calls it made, and the stored state of its last reply's tool calls."""

    turn_id: str
    text: str
    iterations: int
    call_status: Mapping[str, str]  # call id -> started, waiting, queued, finished, failed
    call_results: Mapping[str, str]  # call id -> the stored result of a finished or failed one
    keyed: bool = False  # begun with an idempotency key: its result is kept for a replay


@dataclass(frozen=True)
class TurnStart:
    """What begins a turn: the user's message, its idempotency key, and whether the turn
    opens a fresh session."""

    text: str
    idempotency_key: str | None = None
    new_session: bool = False


class Conversation(Protocol):
    """The current session of one agent, held under its turn lock.

    Opened with a `TurnStart`, the turn has begun: `turn_id` is the new running turn (its user
    message stored), or `replay` is the turn its idempotency key started before (nothing was
    written then).
    """

    session_id: str
    interrupted: tuple[str, ...]  # turns found running from a holder that died, now closed
    turn_id: str | None
    replay: StoredTurn | None
    waiting: str | None  # the agent's turn that waits for an approval (no new turn began)

    @property
    def queries(self) -> Queries | None:
        """The connection holding the lock, for the turn's other reads (None in memory)."""
        ...

    @property
    def has_memories(self) -> bool:
        """Whether the agent's owner has long-term memories (else recall is skipped)."""
        ...

    async def window(self, limit: int) -> list[HistoryEntry]:
        """The last `limit` messages a model may see, oldest first (no failed turns)."""
        ...

    async def new_session(self) -> str:
        """Make a fresh session the current one (the current one if it was never used)."""
        ...

    async def clear(self) -> None:
        """Delete every message of the current session."""
        ...

    async def append(self, turn_id: str, entries: Sequence[HistoryEntry]) -> None:
        """Store messages of a running turn, in order, atomically."""
        ...

    async def tools_started(self, turn_id: str, entry: HistoryEntry) -> None:
        """Store the assistant message asking for tools and mark each call started."""
        ...

    async def tool_finished(self, turn_id: str, result: ToolResult) -> None:
        """Mark one tool call finished (or failed), with its result."""
        ...

    async def finish_turn(
        self, turn_id: str, entries: Sequence[HistoryEntry], result: Mapping[str, Any] | None
    ) -> None:
        """Store the last messages and mark the turn completed (with `result` to replay)."""
        ...

    async def fail_turn(self, turn_id: str, error: Mapping[str, Any]) -> None:
        """Mark the turn failed and store an error entry; its messages leave the window."""
        ...

    async def suspend_turn(
        self, turn_id: str, waiting_call: str, queued: Sequence[str], result: Mapping[str, Any]
    ) -> None:
        """Leave the turn waiting for an approval of `waiting_call` (the `queued` calls after
        it not started), keeping `result` for a replay; the lock goes with this statement."""
        ...

    async def resume(self, turn_id: str) -> ResumedTurn | None:
        """Take up the waiting turn again once its approvals are answered (None: it is not
        waiting, still waits, or belongs to an older session)."""
        ...

    async def call_running(self, turn_id: str, call_id: str) -> None:
        """Mark an approved call started: from here its side effect may have happened."""
        ...


# --- the process-wide cache of session tails ---------------------------------------------------


@dataclass
class _Tail:
    session_id: str
    last_seq: int
    entries: deque[HistoryEntry]

    def fits(self, session_id: str, last_seq: int, limit: int) -> bool:
        return (
            self.session_id == session_id
            and self.last_seq == last_seq
            and (self.entries.maxlen or 0) >= limit
        )


class WindowCache:
    """The tail of the current session of the agents this process served recently."""

    def __init__(self, size: int = CACHED_AGENTS) -> None:
        self.size = size
        self._tails: OrderedDict[int, _Tail] = OrderedDict()

    def get(self, agent_id: int) -> _Tail | None:
        tail = self._tails.get(agent_id)
        if tail is not None:
            self._tails.move_to_end(agent_id)
        return tail

    def put(self, agent_id: int, tail: _Tail) -> None:
        self._tails[agent_id] = tail
        self._tails.move_to_end(agent_id)
        while len(self._tails) > self.size:
            self._tails.popitem(last=False)

    def drop(self, agent_id: int) -> None:
        self._tails.pop(agent_id, None)


# --- PostgreSQL ----------------------------------------------------------------------------------

_SQL = queries_of("gathering.agents")
log = structlog.get_logger(__name__)


def storable_message(message: Message) -> Message:
    """`message` with every text made storable (see `storable_text`)."""
    body = message.to_dict()
    cleaned = storable_value(body)
    return message if cleaned == body else Message.from_dict(cleaned)


def storable_entry(entry: HistoryEntry) -> HistoryEntry:
    """`entry` with every text made storable: what a store keeps, and so what it caches."""
    if entry.error is not None:
        return replace(entry, error=storable_text(entry.error))
    message = storable_message(entry.message)
    return entry if message is entry.message else replace(entry, message=message)


def entry_to_json(entry: HistoryEntry) -> dict[str, Any]:
    """The JSON form of a (storable) entry, as `append_messages` stores it."""
    if entry.error is not None:
        return {"role": "error", "content": entry.error, "tool_calls": [], "tool_results": []}
    body = entry.message.to_dict()
    usage = entry.usage
    return {
        "role": body["role"],
        "content": body["content"],
        "tool_calls": body.get("tool_calls", []),
        "tool_results": body.get("tool_results", []),
        "model": entry.model,
        "input_tokens": usage.input_tokens if usage else None,
        "output_tokens": usage.output_tokens if usage else None,
        "cost_usd": entry.cost_usd,
    }


def entry_from_row(row: Row) -> HistoryEntry:
    """A stored message row as a `HistoryEntry`."""
    turn_id = row.get("turn_id")
    if row["role"] == "error":
        return HistoryEntry(
            Message.assistant(),
            created_at=row["created_at"],
            seq=row["seq"],
            turn_id=turn_id,
            error=row["content"],
        )
    message = Message.from_dict(
        {
            "role": row["role"],
            "content": row["content"],
            "tool_calls": row["tool_calls"],
            "tool_results": row["tool_results"],
        }
    )
    usage = None
    if row["input_tokens"] is not None or row["output_tokens"] is not None:
        usage = Usage(row["input_tokens"] or 0, row["output_tokens"] or 0)
    return HistoryEntry(
        message, row["model"], usage, row["cost_usd"], row["created_at"], row["seq"], turn_id
    )


class PostgresConversation:
    """A `Conversation` on the connection that holds the agent's turn lock."""

    def __init__(
        self,
        queries: OnConnection,
        agent_id: int,
        lock_key: int,
        cache: WindowCache,
        pool: Queries | None = None,
    ) -> None:
        self.queries = queries
        # Where a model call's ledger row goes when the turn's connection cannot take it.
        self.pool = pool
        self.agent_id = agent_id
        self.lock_key = lock_key
        self.released = False  # by the turn's last statement
        self.session_id = ""
        self.interrupted: tuple[str, ...] = ()
        self.has_memories = False
        self.turn_id: str | None = None
        self.replay: StoredTurn | None = None
        self.waiting: str | None = None
        self._cache = cache
        self._last_seq = 0

    def open(self, begun: Row, turn: TurnStart | None) -> PostgresConversation:
        """Take in what `agent.begin_turn` found and did right after the lock was taken."""
        if begun["session_id"] is None:
            raise NotFoundError(f"no agent {self.agent_id}", hint="the agent may have been deleted")
        self.session_id, self._last_seq = str(begun["session_id"]), begun["last_seq"]
        self.interrupted = tuple(begun["interrupted"] or ())
        self.has_memories = bool(begun["memories"])
        self.waiting = str(begun["waiting"]) if begun.get("waiting") else None
        stored = begun["stored"]
        if stored is not None:
            self.replay = StoredTurn(
                stored["id"],
                stored["status"],
                stored["request_text"],
                stored["result"],
                stored["error"],
            )
        elif turn is not None and begun["new_turn_id"] is not None:
            self.turn_id = str(begun["new_turn_id"])
            entry = HistoryEntry(Message.user(turn.text), seq=self._last_seq, turn_id=self.turn_id)
            tail = self._cache.get(self.agent_id)
            if tail is not None and tail.fits(self.session_id, self._last_seq - 1, 0):
                tail.entries.append(entry)
                tail.last_seq = self._last_seq
        return self

    async def new_session(self) -> str:
        if self.session_id and self._last_seq == 0:
            return self.session_id  # the current one has never been used: it is new
        session_id = await self.queries.fetch_val(_SQL["new_session"], self.agent_id)
        if session_id is None:
            raise NotFoundError(f"no agent {self.agent_id}")
        self.session_id, self._last_seq = str(session_id), 0
        self._cache.put(self.agent_id, _Tail(self.session_id, 0, deque(maxlen=0)))
        return self.session_id

    async def window(self, limit: int) -> list[HistoryEntry]:
        tail = self._cache.get(self.agent_id)
        if tail is None or not tail.fits(self.session_id, self._last_seq, limit):
            entries = await stored_window(self.queries, self.session_id, limit)
            tail = _Tail(self.session_id, self._last_seq, deque(entries, maxlen=limit))
            self._cache.put(self.agent_id, tail)
        return list(tail.entries)[-limit:] if limit else []

    async def clear(self) -> None:
        last_seq = await self.queries.fetch_val(_SQL["clear_session"], self.session_id)
        self._last_seq = int(last_seq or 0)
        self._cache.put(self.agent_id, _Tail(self.session_id, self._last_seq, deque(maxlen=0)))

    async def append(self, turn_id: str, entries: Sequence[HistoryEntry]) -> None:
        entries = [storable_entry(e) for e in entries]
        self._appended(await self._append(turn_id, entries), entries)

    async def tools_started(self, turn_id: str, entry: HistoryEntry) -> None:
        entry = storable_entry(entry)
        calls = [call.to_dict() for call in entry.message.tool_calls]
        self._appended(await self._append(turn_id, [entry], calls=Jsonb(calls)), [entry])

    async def tool_finished(self, turn_id: str, result: ToolResult) -> None:
        status = "failed" if result.is_error else "finished"
        content = storable_text(result.content)
        await self.queries.execute(_SQL["tool_finished"], turn_id, result.call_id, status, content)

    async def finish_turn(
        self, turn_id: str, entries: Sequence[HistoryEntry], result: Mapping[str, Any] | None
    ) -> None:
        entries = [storable_entry(e) for e in entries]
        stored = Jsonb(storable_value(dict(result))) if result is not None else None
        row = await self._last_statement(turn_id, entries, "completed", stored)
        self._appended(row, entries)

    async def fail_turn(self, turn_id: str, error: Mapping[str, Any]) -> None:
        error = storable_value(dict(error))
        entry = HistoryEntry(Message.assistant(), turn_id=turn_id, error=str(error["message"]))
        await self._last_statement(turn_id, [entry], "failed", Jsonb(error))
        self._cache.drop(self.agent_id)  # the failed turn's messages leave the window

    async def suspend_turn(
        self, turn_id: str, waiting_call: str, queued: Sequence[str], result: Mapping[str, Any]
    ) -> None:
        await self.queries.execute(_SQL["tools_waiting"], turn_id, waiting_call, list(queued))
        await self._last_statement(turn_id, [], "waiting", Jsonb(storable_value(dict(result))))

    async def call_running(self, turn_id: str, call_id: str) -> None:
        await self.queries.execute(_SQL["call_running"], turn_id, call_id)

    async def resume(self, turn_id: str) -> ResumedTurn | None:
        row = await self.queries.fetch_one(_SQL["resume_turn"], turn_id, self.agent_id)
        if row is None:
            return None
        if str(row["session_id"]) != self.session_id:
            await self.fail_turn(
                turn_id,
                {
                    "code": "session_moved_on",
                    "message": "a new session was started while the turn waited for approval",
                },
            )
            return None
        calls = await self.queries.fetch_all(_SQL["turn_tool_calls"], turn_id)
        return ResumedTurn(
            turn_id,
            row["text"] or "",
            int(row["iterations"]),
            {c["call_id"]: c["status"] for c in calls},
            {
                c["call_id"]: c["result"] or ""
                for c in calls
                if c["status"] in ("finished", "failed")
            },
            bool(row["keyed"]),
        )

    async def _append(
        self,
        turn_id: str,
        entries: Sequence[HistoryEntry],
        *,
        calls: Jsonb | None = None,
        outcome: TurnStatus | None = None,
        outcome_data: Jsonb | None = None,
        lock_key: int | None = None,
    ) -> Row | None:
        """Store `entries` (storable already) of a running turn; see `append_messages`. The
        ledger rows of the model calls that produced them are written in the same transaction."""
        args = (
            self.session_id,
            Jsonb([entry_to_json(e) for e in entries]),
            turn_id,
            calls,
            outcome,
            outcome_data,
            lock_key,
        )
        charges = [e.charge for e in entries if e.charge is not None]
        if not charges:
            return await self.queries.fetch_one(_SQL["append_messages"], *args)
        try:
            async with self.queries.connection.transaction():
                for charge in charges:
                    await record_usage(self.queries, charge)
                return await self.queries.fetch_one(_SQL["append_messages"], *args)
        except BaseException:
            # The calls were made (and billed): their rows are written apart, once each (by
            # call id), when the turn's connection could not store them.
            if self.pool is not None:
                await asyncio.shield(self._charge_apart(charges))
            raise

    async def _charge_apart(self, charges: Sequence[LedgerEntry]) -> None:
        """Write `charges` on the pool; a row the database refuses is logged."""
        assert self.pool is not None
        for charge in charges:
            try:
                await record_usage(self.pool, charge)
            except GatheringError as exc:
                log.warning("model call not written to the usage ledger", error=exc.message)

    async def _last_statement(
        self,
        turn_id: str,
        entries: Sequence[HistoryEntry],
        outcome: TurnStatus,
        outcome_data: Jsonb | None,
    ) -> Row | None:
        """Run a turn's last statement, which ends the turn (`outcome`, with its result or
        error) and releases the turn lock as it commits.

        When it fails, whether the lock is still held is unknown: the connection is closed
        (the server then frees the lock), and the next turn closes this one as interrupted.
        """
        try:
            row = await self._append(
                turn_id,
                entries,
                outcome=outcome,
                outcome_data=outcome_data,
                lock_key=self.lock_key,
            )
        except BaseException:
            await self.queries.connection.close()
            raise
        self.released = bool(row and row["released"])
        return row

    def _appended(self, row: Row | None, entries: Sequence[HistoryEntry]) -> None:
        if row is None or row["last_seq"] is None:
            raise NotFoundError(
                f"session {self.session_id} is gone", hint="the agent may have been deleted"
            )
        first = row["last_seq"] - len(entries) + 1
        numbered = [replace(e, seq=first + i) for i, e in enumerate(entries)]
        tail = self._cache.get(self.agent_id)
        if (
            tail is not None
            and tail.session_id == self.session_id
            and (tail.last_seq == self._last_seq)
        ):
            tail.entries.extend(e for e in numbered if e.error is None)
            tail.last_seq = row["last_seq"]
        else:
            self._cache.drop(self.agent_id)
        self._last_seq = row["last_seq"]


async def stored_window(queries: Queries, session_id: str, limit: int) -> list[HistoryEntry]:
    """The last `limit` messages of a session a model may see (no failed turns)."""
    rows = await queries.fetch_all(_SQL["session_messages"], session_id, limit, True)
    return [entry_from_row(row) for row in rows]


async def stored_history(
    queries: Queries, session_id: str, limit: int | None
) -> list[HistoryEntry]:
    """Every stored entry of a session (error entries included), the last `limit` ones."""
    rows = await queries.fetch_all(_SQL["session_messages"], session_id, limit, False)
    return [entry_from_row(row) for row in rows]
