"""A conversation kept in this process only, for `InMemoryAgentStore` (scratch scripts and
benchmarks): the same `Conversation` as the PostgreSQL one, without its persistence."""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

from gathering.agents.conversation_store import (
    HistoryEntry,
    ResumedTurn,
    StoredTurn,
    TurnStart,
    TurnStatus,
    storable_entry,
)
from gathering.db.database import Queries
from gathering.errors import FeatureUnavailableError
from gathering.llm import Message, ToolResult


@dataclass
class MemorySession:
    """A session kept by `InMemoryAgentStore`."""

    agent_id: int
    entries: list[HistoryEntry] = field(default_factory=list)
    created_at: datetime = field(default_factory=lambda: datetime.now(UTC))


@dataclass
class MemoryTurn:
    """A turn kept by `InMemoryAgentStore`."""

    id: str
    agent_id: int
    status: TurnStatus = "running"
    idempotency_key: str | None = None
    request_text: str | None = None
    result: Mapping[str, Any] | None = None
    error: Mapping[str, Any] | None = None
    tool_calls: dict[str, str] = field(default_factory=dict)


class InMemoryConversation:
    """A `Conversation` in this process only (scratch scripts and benchmarks)."""

    def __init__(
        self,
        sessions: dict[str, MemorySession],
        turns: dict[str, MemoryTurn],
        running: dict[int, set[str]],
        agent_id: int,
    ) -> None:
        self._sessions = sessions
        self._turns = turns
        self._running = running.setdefault(agent_id, set())
        self.agent_id = agent_id
        self.session_id = ""
        self.interrupted: tuple[str, ...] = ()
        self.queries: Queries | None = None
        self.has_memories = False  # long-term memory needs PostgreSQL
        self.turn_id: str | None = None
        self.replay: StoredTurn | None = None
        self.waiting: str | None = None  # approvals need PostgreSQL: no turn ever waits here

    async def open(self, turn: TurnStart | None) -> InMemoryConversation:
        """Find the current session, close interrupted turns, and begin `turn` when given."""
        agent_id = self.agent_id
        owned = [(s.created_at, k) for k, s in self._sessions.items() if s.agent_id == agent_id]
        if owned:
            self.session_id = max(owned)[1]
        else:
            self.session_id = str(uuid.uuid4())
            self._sessions[self.session_id] = MemorySession(self.agent_id)
        self.interrupted = tuple(self._running)
        for turn_id in self.interrupted:
            self._turns[turn_id].status = "interrupted"
        self._running.clear()
        if turn is None:
            return self
        if turn.idempotency_key is not None:
            self.replay = self._find_turn(turn.idempotency_key)
            if self.replay is not None:
                return self
        if turn.new_session:
            await self.new_session()
        self.turn_id = self._start_turn(turn.text, turn.idempotency_key)
        return self

    async def new_session(self) -> str:
        if self.session_id and not self._sessions[self.session_id].entries:
            return self.session_id  # the current one has never been used: it is new
        self.session_id = str(uuid.uuid4())
        self._sessions[self.session_id] = MemorySession(self.agent_id)
        return self.session_id

    async def window(self, limit: int) -> list[HistoryEntry]:
        kept: list[HistoryEntry] = []
        for entry in reversed(self._sessions[self.session_id].entries):
            if len(kept) >= limit:
                break
            if entry.error is None and (
                entry.turn_id is None or self._turns[entry.turn_id].status != "failed"
            ):
                kept.append(entry)
        kept.reverse()
        return kept

    async def clear(self) -> None:
        self._sessions[self.session_id].entries.clear()

    def _find_turn(self, idempotency_key: str) -> StoredTurn | None:
        for turn in self._turns.values():
            if turn.agent_id == self.agent_id and turn.idempotency_key == idempotency_key:
                return StoredTurn(turn.id, turn.status, turn.request_text, turn.result, turn.error)
        return None

    def _start_turn(self, text: str, idempotency_key: str | None) -> str:
        turn_id = str(uuid.uuid4())
        self._turns[turn_id] = MemoryTurn(
            turn_id, self.agent_id, idempotency_key=idempotency_key, request_text=text
        )
        self._running.add(turn_id)
        self._append(turn_id, [HistoryEntry(Message.user(text))])
        return turn_id

    async def append(self, turn_id: str, entries: Sequence[HistoryEntry]) -> None:
        self._append(turn_id, entries)

    def _append(self, turn_id: str, entries: Sequence[HistoryEntry]) -> None:
        stored = self._sessions[self.session_id].entries
        now = datetime.now(UTC)
        stored.extend(
            replace(storable_entry(e), created_at=now, seq=len(stored) + i + 1, turn_id=turn_id)
            for i, e in enumerate(entries)
        )

    async def tools_started(self, turn_id: str, entry: HistoryEntry) -> None:
        await self.append(turn_id, [entry])
        for call in entry.message.tool_calls:
            self._turns[turn_id].tool_calls[call.id] = "started"

    async def tool_finished(self, turn_id: str, result: ToolResult) -> None:
        status = "failed" if result.is_error else "finished"
        self._turns[turn_id].tool_calls[result.call_id] = status

    async def finish_turn(
        self, turn_id: str, entries: Sequence[HistoryEntry], result: Mapping[str, Any] | None
    ) -> None:
        await self.append(turn_id, entries)
        turn = self._turns[turn_id]
        turn.status, turn.result = "completed", result
        self._running.discard(turn_id)

    async def fail_turn(self, turn_id: str, error: Mapping[str, Any]) -> None:
        turn = self._turns[turn_id]
        turn.status, turn.error = "failed", error
        self._running.discard(turn_id)
        await self.append(turn_id, [HistoryEntry(Message.assistant(), error=str(error["message"]))])

    async def suspend_turn(
        self, turn_id: str, waiting_call: str, queued: Sequence[str], result: Mapping[str, Any]
    ) -> None:
        raise FeatureUnavailableError(
            "a tool call that needs a person's approval cannot wait in memory",
            hint="use the PostgreSQL agent store, or give the tool the policy allow",
        )

    async def resume(self, turn_id: str) -> ResumedTurn | None:
        return None

    async def call_running(self, turn_id: str, call_id: str) -> None:
        return None  # no turn waits in memory
