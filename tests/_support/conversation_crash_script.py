"""A process that starts one turn of an agent and is killed by its test mid-turn.

Run with the project's Python. Environment:

- CONVERSATION_DATABASE_URL: the (migrated) test database
- CONVERSATION_AGENT, CONVERSATION_PROVIDER (anthropic / openai), CONVERSATION_MODEL (optional)
- CONVERSATION_MESSAGE: the user message of the turn (`CALL slow {}` makes the stub call the tool)
- CONVERSATION_MARKER: a file the `slow` tool creates when it starts, before it sleeps 60 s
- the provider's key and base URL (the LLM stub, or a closed gate in front of it)

The agent is created (or taken over by name) with the tool `slow`; the turn is then run.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

from gathering.agents import Agent, PostgresAgentStore
from gathering.db import Database
from gathering.llm import ToolSpec
from gathering.tools.function import FunctionTool


async def slow() -> str:
    Path(os.environ["CONVERSATION_MARKER"]).write_text(str(os.getpid()))
    await asyncio.sleep(60)
    return "slow finished"


SLOW = FunctionTool(ToolSpec("slow", "Takes a while."), slow)


async def main() -> None:
    db = Database(url=os.environ["CONVERSATION_DATABASE_URL"], min_size=0, max_size=4)
    await db.connect()
    try:
        agent = Agent(
            os.environ["CONVERSATION_AGENT"],
            os.environ["CONVERSATION_PROVIDER"],
            os.environ.get("CONVERSATION_MODEL") or None,
            tools=[SLOW],
            store=PostgresAgentStore(db),
        )
        result = await agent.run(os.environ["CONVERSATION_MESSAGE"])
        print(result.text, flush=True)
    finally:
        await db.disconnect()


if __name__ == "__main__":
    asyncio.run(main())
