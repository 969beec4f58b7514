"""Agents: personas with an LLM, tools, persisted sessions and memory.

`llm_client` is the client every agent without its own `llm=` sends its conversation
through; it is looked up at each turn, so `patch("gathering.agents.llm_client")` replaces it
(the turn loop then sees it wrapped as a provider, see `model_adapter`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from gathering.agents.agent import Agent
from gathering.agents.agent_memory import AgentMemory
from gathering.agents.agent_store import (
    AgentRecord,
    AgentStore,
    InMemoryAgentStore,
    PostgresAgentStore,
    default_store,
)
from gathering.agents.conversation_store import HistoryEntry
from gathering.agents.knowledge import (
    Document,
    KnowledgeBase,
    KnowledgeHit,
    KnowledgeScope,
    chunk_text,
)
from gathering.agents.long_term_memory import LongTermMemory, Memory, RecalledMemory
from gathering.agents.model_adapter import as_completion
from gathering.agents.system_prompt import PromptBuilder
from gathering.agents.tool_calls import ToolFinished, ToolStarted
from gathering.agents.turn_loop import AgentEvent, TurnResult, resume_turn, run_turn
from gathering.catalog.personas import Persona
from gathering.llm import Completion, LLMProvider, Message, ToolSpec


class ProviderClient:
    """The default `llm_client`: sends a conversation to the agent's own provider."""

    async def generate(
        self,
        messages: Sequence[Message],
        tools: Sequence[ToolSpec] | None = None,
        *,
        provider: LLMProvider,
        **options: Any,
    ) -> Completion:
        """The provider's completion of `messages`."""
        return await provider.generate(messages, tools, **options)


DEFAULT_CLIENT = ProviderClient()
llm_client: Any = DEFAULT_CLIENT

__all__ = [
    "DEFAULT_CLIENT",
    "Agent",
    "AgentEvent",
    "AgentMemory",
    "AgentRecord",
    "AgentStore",
    "Document",
    "HistoryEntry",
    "InMemoryAgentStore",
    "KnowledgeBase",
    "KnowledgeHit",
    "KnowledgeScope",
    "LongTermMemory",
    "Memory",
    "Persona",
    "PostgresAgentStore",
    "PromptBuilder",
    "ProviderClient",
    "RecalledMemory",
    "ToolFinished",
    "ToolStarted",
    "TurnResult",
    "as_completion",
    "chunk_text",
    "default_store",
    "llm_client",
    "resume_turn",
    "run_turn",
]
