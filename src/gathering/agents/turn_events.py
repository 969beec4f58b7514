"""A turn's events on the bus: durable ones through the outbox on the turn's own connection,
text deltas in this process, coalesced."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import structlog

from gathering.events import Event, EventBus

if TYPE_CHECKING:
    from gathering.agents.agent import Agent
    from gathering.agents.conversation_store import Conversation

log = structlog.get_logger(__name__)

DELTA_FLUSH_SECONDS = 0.1  # `turn.delta` events are coalesced over this long
EVENT_PREVIEW_CHARS = 2_000  # a tool result in a `tool.finished` event is cut to this


def agent_subjects(agent_id: int | None, owner_id: int | None) -> list[str]:
    """The subjects of events about an agent: `agent:<id>`, and `user:<owner>` when owned."""
    subjects = [f"agent:{agent_id}"]
    if owner_id is not None:
        subjects.append(f"user:{owner_id}")
    return subjects


class TurnEvents:
    """Turn events on the bus, for the subjects `agent:<id>` and `user:<owner>`.

    Durable events cross instances through the outbox; text deltas stay in this process and
    are coalesced. A failure to publish is logged and never fails the turn.
    """

    def __init__(
        self, bus: EventBus | None, agent: Agent, turn_id: str, conversation: Conversation
    ) -> None:
        self.bus = bus
        # Durable events are written on the turn's own connection: a turn never needs a
        # second pooled connection while it holds one (a full pool would stall every turn).
        self.queries = conversation.queries
        session_id = conversation.session_id
        self.subjects = agent_subjects(agent.id, agent.owner_id)
        self.base = {"agent_id": agent.id, "turn_id": turn_id, "session_id": session_id}
        self._pending: list[str] = []
        self._flushed_at = 0.0

    async def emit(self, kind: str, data: Mapping[str, Any], *, durable: bool = True) -> None:
        if self.bus is None:
            return
        body = {**self.base, **data}
        events = [Event(kind, body, subject=s, source="agent") for s in self.subjects]
        try:
            if durable:
                await self.bus.publish_many(events, tx=self.queries, durable=True)
            else:
                await self.bus.publish_many(events)
        except Exception:  # never a cancellation: that is a BaseException
            log.warning("could not publish a turn event", event_type=kind, exc_info=True)

    async def delta(self, text: str) -> None:
        if self.bus is None:
            return
        self._pending.append(text)
        now = asyncio.get_running_loop().time()
        if now - self._flushed_at >= DELTA_FLUSH_SECONDS:
            await self.flush()

    async def flush(self) -> None:
        if self._pending:
            text, self._pending = "".join(self._pending), []
            self._flushed_at = asyncio.get_running_loop().time()
            await self.emit("turn.delta", {"text": text}, durable=False)
