"""`AgentMemory`: an agent's conversation history and its long-term memory."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import structlog

from gathering.agents.agent_store import PostgresAgentStore
from gathering.agents.knowledge import KnowledgeBase, knowledge_for_prompt
from gathering.agents.long_term_memory import (
    LongTermMemory,
    Memory,
    RecalledMemory,
    embedder_from_settings,
)
from gathering.agents.sync import maybe_sync
from gathering.agents.system_prompt import CHARS_PER_TOKEN, format_memories_for_prompt
from gathering.agents.turn_loop import TurnLimits
from gathering.db.database import Queries
from gathering.db.storable import storable_text
from gathering.errors import FeatureUnavailableError
from gathering.events import Event
from gathering.llm import Message

if TYPE_CHECKING:
    from gathering.agents.agent import Agent

log = structlog.get_logger(__name__)

RECALL_LIMIT = 5
RECALL_QUERY_CHARS = 4_000


class AgentMemory:
    """What an agent remembers.

    The conversation: `get_history()` is plain (the session as loaded in this process);
    `clear()` follows the same sync/async switch as `Agent.process_message`.
    Long-term memory (on PostgreSQL): `remember`, `recall`, `forget`, all async; what the
    current message recalls goes into the system prompt.
    """

    def __init__(self, agent: Agent) -> None:
        self._agent = agent
        self._long_term: LongTermMemory | None = None

    def get_history(self) -> list[Message]:
        """The messages of the current session, oldest first."""
        return [entry.message for entry in self._agent.history()]

    def clear(self) -> Any:
        """Delete the current session's messages (stored ones too)."""
        return maybe_sync(self._clear())

    async def _clear(self) -> None:
        agent = self._agent
        if agent.id is not None:
            store = await agent.store()
            wait = TurnLimits.from_settings().busy_wait
            async with store.conversation(agent.id, wait=wait) as conversation:  # between turns
                await conversation.clear()
        agent.forget_history()

    async def long_term(self) -> LongTermMemory:
        """The agent's long-term memory (needs the agent stored in PostgreSQL)."""
        agent = self._agent
        store = await agent.store()
        if not isinstance(store, PostgresAgentStore):
            raise FeatureUnavailableError(
                "long-term memory needs the PostgreSQL store",
                hint="create the agent without store=InMemoryAgentStore()",
            )
        if agent.id is None:
            await agent.save()
        if self._long_term is None or self._long_term.db is not store.db:
            self._long_term = LongTermMemory(
                store.db,
                agent_id=agent.id,
                owner_id=agent.owner_id,
                embedder=embedder_from_settings(),
                on_degraded=self._degraded,
            )
        return self._long_term

    async def _degraded(self, reason: str) -> None:
        """Recall went on without embeddings: tell whoever watches the agent."""
        agent = self._agent
        if agent.event_bus is None:
            return
        event = Event(
            "memory.degraded",
            {"agent_id": agent.id, "reason": reason},
            subject=f"agent:{agent.id}",
            source="agent",
        )
        try:
            await agent.event_bus.publish(event, durable=True)
        except Exception:  # a report about a degraded mode must not fail the turn
            log.warning("could not publish memory.degraded", exc_info=True)

    async def remember(
        self,
        content: str,
        kind: str = "fact",
        importance: float = 0.5,
        tags: Sequence[str] = (),
        **scope: Any,
    ) -> Memory:
        """Store a memory (scope="agent" by default; circle, project or global with scope_id)."""
        return await (await self.long_term()).remember(content, kind, importance, tags, **scope)

    async def recall(
        self, query: str, limit: int = RECALL_LIMIT, *, using: Queries | None = None
    ) -> list[RecalledMemory]:
        """The memories most relevant to `query`, best first."""
        return await (await self.long_term()).recall(query, limit, using=using)

    async def forget(self, memory_id: int) -> None:
        """Delete one memory."""
        await (await self.long_term()).forget(memory_id)

    async def recall_for_prompt(self, query: str, using: Queries | None = None) -> str | None:
        """The prompt's memory section for `query` (None without PostgreSQL or memories)."""
        if not query.strip() or not isinstance(await self._agent.store(), PostgresAgentStore):
            return None
        # A long message recalls by its beginning: the query has a length limit.
        recalled = await self.recall(storable_text(query)[:RECALL_QUERY_CHARS], using=using)
        if not recalled:
            return None
        budget = self._agent.prompt_budget  # tokens; about a quarter of the prompt for memories
        return format_memories_for_prompt(recalled, budget_chars=budget, heading="") or None

    async def knowledge_for_prompt(self, query: str, using: Queries | None = None) -> str | None:
        """The prompt's knowledge section for `query`: the top passages of the documents in
        the agent's knowledge scope, with their source (None when it has no scope)."""
        agent = self._agent
        store = await agent.store()
        if agent.knowledge is None or not isinstance(store, PostgresAgentStore):
            return None
        if agent.id is None:
            await agent.save()
        kb = KnowledgeBase(
            using or store.db,
            owner_id=agent.owner_id,
            agent_id=agent.id,
            embedder=embedder_from_settings(),
            on_degraded=self._degraded,
        )
        budget = agent.prompt_budget * CHARS_PER_TOKEN // 2  # at most half of the prompt
        return await knowledge_for_prompt(kb, agent.knowledge, query, budget_chars=budget)
