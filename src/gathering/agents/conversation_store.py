"""A conversation as stored: sessions, their numbered messages, turns and tool calls.

Every method of a `Conversation` runs while its holder has the agent's turn lock (see
`turn_lock.py`), so the messages of a session are written by one turn at a time, on any
instance. PostgreSQL is the one truth; `WindowCache` keeps the tail of each session this
process has seen, and a cheap check of the stored `last_seq` decides whether it is still
current.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any, Literal, Protocol

from psycopg.types.json import Jsonb

from gathering.db.database import OnConnection, Queries, Row
from gathering.errors import NotFoundError
from gathering.llm import Message, ToolResult, Usage

TurnStatus = Literal["running", "completed", "failed", "interrupted"]
CACHED_AGENTS = 1024  # sessions whose tail one process keeps in memory (least recent leave)


@dataclass(frozen=True)
class HistoryEntry:
    """One stored message, with what it cost when it came from a model.

    An `error` entry records why a turn failed: it is shown in the history and never sent to
    a model (its `message` is an empty assistant message).
    """

    message: Message
    model: str | None = None
    usage: Usage | None = None
    cost_usd: float | None = None
    created_at: datetime | None = None
    seq: int | None = None
    turn_id: str | None = None
    error: str | None = None

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

_NEW_SESSION = (
    "INSERT INTO agent.sessions (agent_id)"
    " SELECT id FROM agent.agents WHERE id = $1 RETURNING id::text AS id"
)
_WINDOW = (
    "SELECT * FROM (SELECT m.seq, m.role, m.content, m.tool_calls, m.tool_results, m.model,"
    " m.input_tokens, m.output_tokens, m.cost_usd, m.created_at, m.turn_id::text AS turn_id"
    " FROM agent.messages m LEFT JOIN agent.turns t ON t.id = m.turn_id"
    " WHERE m.session_id = $1 AND m.role <> 'error' AND t.status IS DISTINCT FROM 'failed'"
    " ORDER BY m.seq DESC LIMIT $2) w ORDER BY seq"
)
# Clearing moves the counter on, so no process mistakes its cached tail for the current one.
_CLEAR = (
    "WITH d AS (DELETE FROM agent.messages WHERE session_id = $1)"
    " UPDATE agent.sessions SET last_seq = last_seq + 1, updated_at = now() WHERE id = $1"
    " RETURNING last_seq"
)
_HISTORY = (
    "SELECT * FROM (SELECT seq, role, content, tool_calls, tool_results, model, input_tokens,"
    " output_tokens, cost_usd, created_at, turn_id::text AS turn_id"
    " FROM agent.messages WHERE session_id = $1 ORDER BY seq DESC LIMIT $2) w ORDER BY seq"
)
# Appending numbers the messages by bumping the session's counter in the same statement: the
# row lock it takes orders writers, so seqs have no gaps or duplicates on any instance.
_APPEND = """
WITH s AS (
    UPDATE agent.sessions SET last_seq = last_seq + jsonb_array_length($2::jsonb),
        updated_at = now()
    WHERE id = $1 RETURNING last_seq
), m AS (
    INSERT INTO agent.messages (session_id, turn_id, seq, role, content, tool_calls,
        tool_results, model, input_tokens, output_tokens, cost_usd)
    SELECT $1, $3::uuid, s.last_seq - jsonb_array_length($2::jsonb) + e.ord, e.v->>'role',
        e.v->>'content', e.v->'tool_calls', e.v->'tool_results', e.v->>'model',
        (e.v->>'input_tokens')::integer, (e.v->>'output_tokens')::integer,
        (e.v->>'cost_usd')::double precision
    FROM s, jsonb_array_elements($2::jsonb) WITH ORDINALITY AS e(v, ord)
    RETURNING seq
)
"""
# The statements below share the text of `_APPEND` (constants only, never input).
_LAST_SEQ = " SELECT (SELECT last_seq FROM s) AS last_seq"
# A turn's last statement also releases the turn lock ($5), once the session row is locked
# (read from `s`): the next holder reads that row FOR UPDATE (see agent.begin_turn), so it
# waits for this statement's commit and never sees the conversation without it.
_RELEASE = ", (SELECT pg_advisory_unlock($5) FROM s) AS released"
_APPEND_ONLY = _APPEND + _LAST_SEQ + ", (SELECT count(*) FROM m) AS added"
_TOOLS_STARTED = (
    _APPEND + ", c AS (INSERT INTO agent.tool_calls (turn_id, call_id, name, arguments)"
    " SELECT $3::uuid, x->>'id', x->>'name', coalesce(x->'arguments', '{}'::jsonb)"
    " FROM jsonb_array_elements($4::jsonb) AS x RETURNING 1)"
    + _LAST_SEQ
    + ", (SELECT count(*) FROM c) AS calls"
)
_TOOL_FINISHED = (
    "UPDATE agent.tool_calls SET status = $3, result = $4, finished_at = now()"
    " WHERE turn_id = $1::uuid AND call_id = $2"
)
_FINISH_TURN = (
    _APPEND
    + ", t AS (UPDATE agent.turns SET status = 'completed', result = $4, finished_at = now()"
    " WHERE id = $3::uuid RETURNING id)"
    + _LAST_SEQ
    + ", (SELECT count(*) FROM t) AS turns"
    + _RELEASE
)
_FAIL_TURN = (
    _APPEND + ", t AS (UPDATE agent.turns SET status = 'failed', error = $4, finished_at = now()"
    " WHERE id = $3::uuid AND status = 'running' RETURNING id)"
    ", c AS (UPDATE agent.tool_calls SET status = 'interrupted', finished_at = now()"
    " WHERE turn_id = $3::uuid AND status = 'started' RETURNING 1)"
    + _LAST_SEQ
    + ", (SELECT count(*) FROM t) AS turns"
    + _RELEASE
)


def storable_text(text: str) -> str:
    """`text` as PostgreSQL can store it: NUL characters and lone surrogates (which a model or
    a tool may produce) become U+FFFD."""
    if "\x00" in text:
        text = text.replace("\x00", "\ufffd")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        text = text.encode("utf-8", "surrogatepass").decode("utf-8", "replace")
    return text


def _storable(value: Any) -> Any:
    if isinstance(value, str):
        return storable_text(value)
    if isinstance(value, list):
        return [_storable(item) for item in value]
    if isinstance(value, dict):
        return {storable_text(str(k)): _storable(v) for k, v in value.items()}
    return value


def storable_message(message: Message) -> Message:
    """`message` with every text made storable (see `storable_text`)."""
    body = message.to_dict()
    cleaned = _storable(body)
    return message if cleaned == body else Message.from_dict(cleaned)


def storable_entry(entry: HistoryEntry) -> HistoryEntry:
    """`entry` with every text made storable: what a store keeps, and so what it caches."""
    if entry.error is not None:
        return replace(entry, error=storable_text(entry.error))
    message = storable_message(entry.message)
    return entry if message is entry.message else replace(entry, message=message)


def entry_to_json(entry: HistoryEntry) -> dict[str, Any]:
    """The JSON form of a (storable) entry that `_APPEND` stores."""
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
        self, queries: OnConnection, agent_id: int, lock_key: int, cache: WindowCache
    ) -> None:
        self.queries = queries
        self.agent_id = agent_id
        self.lock_key = lock_key
        self.released = False  # by the turn's last statement
        self.session_id = ""
        self.interrupted: tuple[str, ...] = ()
        self.has_memories = False
        self.turn_id: str | None = None
        self.replay: StoredTurn | None = None
        self._cache = cache
        self._last_seq = 0

    def open(self, begun: Row, turn: TurnStart | None) -> PostgresConversation:
        """Take in what `agent.begin_turn` found and did right after the lock was taken."""
        if begun["session_id"] is None:
            raise NotFoundError(f"no agent {self.agent_id}", hint="the agent may have been deleted")
        self.session_id, self._last_seq = str(begun["session_id"]), begun["last_seq"]
        self.interrupted = tuple(begun["interrupted"] or ())
        self.has_memories = bool(begun["memories"])
        stored = begun["stored"]
        if stored is not None:
            self.replay = StoredTurn(
                stored["id"],
                stored["status"],
                stored["request_text"],
                stored["result"],
                stored["error"],
            )
        elif turn is not None:
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
        session_id = await self.queries.fetch_val(_NEW_SESSION, self.agent_id)
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
        self._last_seq = int(await self.queries.fetch_val(_CLEAR, self.session_id) or 0)
        self._cache.put(self.agent_id, _Tail(self.session_id, self._last_seq, deque(maxlen=0)))

    async def append(self, turn_id: str, entries: Sequence[HistoryEntry]) -> None:
        entries = [storable_entry(e) for e in entries]
        row = await self.queries.fetch_one(
            _APPEND_ONLY, self.session_id, Jsonb([entry_to_json(e) for e in entries]), turn_id
        )
        self._appended(row, entries)

    async def tools_started(self, turn_id: str, entry: HistoryEntry) -> None:
        entry = storable_entry(entry)
        calls = [call.to_dict() for call in entry.message.tool_calls]
        row = await self.queries.fetch_one(
            _TOOLS_STARTED, self.session_id, Jsonb([entry_to_json(entry)]), turn_id, Jsonb(calls)
        )
        self._appended(row, [entry])

    async def tool_finished(self, turn_id: str, result: ToolResult) -> None:
        status = "failed" if result.is_error else "finished"
        content = storable_text(result.content)
        await self.queries.execute(_TOOL_FINISHED, turn_id, result.call_id, status, content)

    async def finish_turn(
        self, turn_id: str, entries: Sequence[HistoryEntry], result: Mapping[str, Any] | None
    ) -> None:
        entries = [storable_entry(e) for e in entries]
        row = await self._last_statement(
            _FINISH_TURN,
            self.session_id,
            Jsonb([entry_to_json(e) for e in entries]),
            turn_id,
            Jsonb(_storable(dict(result))) if result is not None else None,
        )
        self._appended(row, entries)

    async def fail_turn(self, turn_id: str, error: Mapping[str, Any]) -> None:
        error = _storable(dict(error))
        entry = HistoryEntry(Message.assistant(), turn_id=turn_id, error=str(error["message"]))
        await self._last_statement(
            _FAIL_TURN, self.session_id, Jsonb([entry_to_json(entry)]), turn_id, Jsonb(error)
        )
        self._cache.drop(self.agent_id)  # the failed turn's messages leave the window

    async def _last_statement(self, query: str, *args: Any) -> Row | None:
        """Run a turn's last statement, which releases the turn lock as it commits.

        When it fails, whether the lock is still held is unknown: the connection is closed
        (the server then frees the lock), and the next turn closes this one as interrupted.
        """
        try:
            row = await self.queries.fetch_one(query, *args, self.lock_key)
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
    return [entry_from_row(row) for row in await queries.fetch_all(_WINDOW, session_id, limit)]


async def stored_history(
    queries: Queries, session_id: str, limit: int | None
) -> list[HistoryEntry]:
    """Every stored entry of a session (error entries included), the last `limit` ones."""
    rows = await queries.fetch_all(_HISTORY, session_id, limit)
    return [entry_from_row(row) for row in rows]
