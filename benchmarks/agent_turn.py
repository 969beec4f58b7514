"""Per-turn framework overhead of `Agent.run` with a zero-latency scripted model.

Three measurements in one run, same machine, same process:
  * baseline: PydanticAI's `Agent` with its `TestModel` (history carried between turns);
  * GatheRing in memory (`InMemoryAgentStore`): target <= 0.10x the baseline;
  * GatheRing persisted to PostgreSQL, as a server runs it: the turn lock taken across
    processes, the session read from the database at each turn (the cross-process reload
    check), the user message committed before the model call, memory recall on, the reply
    committed before it returns: target <= 1.0 ms per turn here. That is two statements
    (`agent.begin_turn`, then the reply with the lock's release) and one disk flush.
    Measured twice: an agent whose owner has no memories (the start-of-turn check skips the
    search), and one with 20 memories searched at every turn.

Run: .venv/bin/python benchmarks/agent_turn.py [--turns N]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable


async def _measure(turn: Callable[[int], Awaitable[object]], turns: int, warmup: int) -> float:
    """Median microseconds per turn over 5 batches (after `warmup` turns)."""
    for i in range(warmup):
        await turn(i)
    batch = max(1, turns // 5)
    samples = []
    for b in range(5):
        started = time.perf_counter()
        for i in range(batch):
            await turn(warmup + b * batch + i)
        samples.append((time.perf_counter() - started) / batch * 1e6)
    return statistics.median(samples)


async def pydantic_ai_turn_us(turns: int, window: int) -> float:
    from pydantic_ai import Agent as PydanticAgent
    from pydantic_ai.models.test import TestModel

    agent = PydanticAgent(TestModel(custom_output_text="ok"), instructions="You are a bench.")
    history: list = []

    async def turn(i: int) -> object:
        nonlocal history
        result = await agent.run(f"message {i}", message_history=history)
        history = result.all_messages()[-window:]
        return result.output

    return await _measure(turn, turns, warmup=50)


async def gathering_turn_us(
    turns: int, window: int, store: object, memories: int = 0, name: str = "bench"
) -> float:
    from gathering.agents import Agent
    from gathering.llm import ScriptedProvider

    agent = Agent(
        name,
        "scripted",
        llm=ScriptedProvider(lambda messages: "ok"),
        store=store,
        history_window=window,
        persona={"role": "a bench"},
    )  # type: ignore[arg-type]
    for i in range(memories):
        await agent.memory.remember(f"fact {i}: the message numbers go up to {i * 7}")

    async def turn(i: int) -> object:
        return await agent.run(f"message {i}")

    return await _measure(turn, turns, warmup=50)


async def main(turns: int, persisted_turns: int, window: int) -> None:
    data_dir = tempfile.mkdtemp(prefix="gathering-bench-")
    os.environ.setdefault("GATHERING_DATA_DIR", data_dir)
    os.environ.setdefault("GATHERING_LOG_LEVEL", "WARNING")
    from gathering.agents import InMemoryAgentStore, PostgresAgentStore
    from gathering.db import Database

    baseline = await pydantic_ai_turn_us(turns, window)
    in_memory = await gathering_turn_us(turns, window, InMemoryAgentStore())
    db = Database(test=True, min_size=1, max_size=2)
    await db.connect()
    try:
        persisted = await gathering_turn_us(persisted_turns, window, PostgresAgentStore(db))
        recalling = await gathering_turn_us(
            persisted_turns, window, PostgresAgentStore(db), memories=20, name="recaller"
        )
    finally:
        await db.disconnect()
        shutil.rmtree(data_dir, ignore_errors=True)

    print(f"PydanticAI Agent + TestModel : {baseline:9.1f} us/turn (baseline)")
    print(
        f"GatheRing in memory          : {in_memory:9.1f} us/turn  "
        f"ratio {in_memory / baseline:.2f}x  (target <= 0.10x)"
    )
    print(
        f"GatheRing persisted          : {persisted:9.1f} us/turn  "
        f"ratio {persisted / baseline:.2f}x  ({persisted / 1000:.2f} ms; target <= 1.0 ms,"
        " reload check on, no memories: recall skipped by the start-of-turn check)"
    )
    print(
        f"GatheRing persisted + recall : {recalling:9.1f} us/turn  "
        f"ratio {recalling / baseline:.2f}x  ({recalling / 1000:.2f} ms; 20 memories searched"
        " every turn)"
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--turns", type=int, default=2000)
    parser.add_argument("--persisted-turns", type=int, default=500)
    parser.add_argument("--window", type=int, default=40)
    args = parser.parse_args()
    asyncio.run(main(args.turns, args.persisted_turns, args.window))
