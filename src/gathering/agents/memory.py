"""`AgentMemory`: an agent's conversation history and, when configured, long-term memory."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from gathering.agents.sync import maybe_sync
from gathering.llm import Message

if TYPE_CHECKING:
    from gathering.agents.agent import Agent


class AgentMemory:
    """What an agent remembers.

    `get_history()` is plain (the session as loaded in this process); `clear()` follows the
    same sync/async switch as `Agent.process_message`.
    """

    def __init__(self, agent: Agent) -> None:
        self._agent = agent

    def get_history(self) -> list[Message]:
        """The messages of the current session, oldest first."""
        return [entry.message for entry in self._agent.history()]

    def clear(self) -> Any:
        """Delete the current session's messages (stored ones too)."""
        return maybe_sync(self._clear())

    async def _clear(self) -> None:
        agent = self._agent
        if agent.session_id is not None:
            await (await agent.store()).clear(agent.session_id)
        agent.cleanup()

    async def recall_for_prompt(self, query: str) -> str | None:
        """Recalled long-term memories for the prompt's memory section (None when off)."""
        return None
