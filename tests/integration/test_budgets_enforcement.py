"""Budgets enforced before each model call, on a real PostgreSQL with the wire stub as the
provider (OpenAI payloads with their usage): concurrent turns never take a budget over its
limit (checked in the ledger), a refused turn fails with `budget_exceeded` (the budget, its
period and reset time in details) without calling the model, reservations are settled by
the ledger row, the warning and exceeded events are sent once per period, and a reservation
of a killed process expires."""

from __future__ import annotations

import asyncio
import signal
import sys
import textwrap
import time
from typing import Any

import pytest

from gathering.agents import Agent, PostgresAgentStore
from gathering.db import Database
from gathering.errors import BudgetExceededError, TurnFailedError
from gathering.usage import Attribution, BudgetSpec, list_budgets, set_budget
from gathering.usage.budgets import reserve

MAX_TOKENS = 1000
GPT4O_INPUT, GPT4O_OUTPUT = 2.5e-6, 10e-6  # USD a token


def openai_reply(text: str, prompt_tokens: int, completion_tokens: int) -> dict[str, Any]:
    """A chat.completion as OpenAI sends it, with the usage it reports."""
    return {
        "id": "chatcmpl-budget",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": "gpt-4o",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": text},
                "finish_reason": "stop",
                "logprobs": None,
            }
        ],
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        },
    }


@pytest.fixture
def store(db: Database) -> PostgresAgentStore:
    return PostgresAgentStore(db)


async def agents(store: PostgresAgentStore, count: int) -> list[Agent]:
    made = []
    for n in range(count):
        agent = Agent(
            f"Spender{n}",
            provider="openai",
            model="gpt-4o",
            store=store,
            options={"max_tokens": MAX_TOKENS},
        )
        await agent.ensure_saved()
        made.append(agent)
    return made


async def test_concurrent_turns_never_take_a_budget_over_its_limit(db, store, llm_stub_env):
    turns = 8
    spenders = await agents(store, turns)
    owner = spenders[0].owner_id
    assert owner is not None and all(a.owner_id == owner for a in spenders)
    # Each reply really costs 100 * 2.5e-6 + 900 * 1e-5 = 0.00925 USD; each call reserves
    # about its max_tokens' worth, 0.01 USD: at most 5 fit in 0.05 USD.
    limit = 0.05
    await set_budget(db, BudgetSpec("user", owner, "day", limit_usd=limit), actor_id=None)
    for _ in range(turns):
        llm_stub_env.add_json(openai_reply("spent", 100, 900), delay=0.2)

    async def turn(agent: Agent) -> str:
        try:
            await agent.run("spend some money")
        except BudgetExceededError:
            return "refused"
        return "ok"

    outcomes = await asyncio.gather(*(turn(agent) for agent in spenders))
    rows = await db.fetch_all("SELECT * FROM usage.ledger WHERE kind = 'model'")
    spent = sum(row["cost_usd"] for row in rows)
    one_call = 100 * GPT4O_INPUT + 900 * GPT4O_OUTPUT
    assert outcomes.count("ok") == len(rows) >= 1
    assert outcomes.count("refused") >= 1  # without the lock, all 8 would have gone through
    assert spent == pytest.approx(len(rows) * one_call)
    assert spent <= limit  # each actual cost was within its estimate: no overshoot at all
    assert all(row["user_id"] == owner and row["outcome"] == "ok" for row in rows)
    # every reservation was settled by its ledger row
    assert await db.fetch_val("SELECT count(*) FROM usage.reservations") == 0
    (budget,) = await list_budgets(db)
    assert budget.spent_usd == pytest.approx(spent) and budget.reserved_usd == 0


async def test_a_refused_turn_names_the_budget_and_calls_no_model(db, store, llm_stub_env):
    (agent,) = await agents(store, 1)
    assert agent.id is not None
    await set_budget(db, BudgetSpec("agent", agent.id, "month", limit_tokens=500), actor_id=None)
    before = len(llm_stub_env.requests)
    with pytest.raises(BudgetExceededError) as refused:
        await agent.run("this needs max_tokens 1000, over the 500 tokens budget")
    assert len(llm_stub_env.requests) == before  # the model was never called
    error = refused.value
    assert error.code == "budget_exceeded" and error.http_status == 402
    assert error.details["scope"] == "agent" and error.details["target_id"] == agent.id
    assert error.details["period"] == "month" and error.details["resets_at"]
    assert "budgets set" in (error.hint or "")
    assert await db.fetch_val("SELECT count(*) FROM usage.ledger") == 0
    # the turn is stored as failed, with the budget's error
    stored = await db.fetch_one(
        "SELECT status, error FROM agent.turns WHERE agent_id = $1", agent.id
    )
    assert stored is not None and stored["status"] == "failed"
    assert stored["error"]["code"] == "budget_exceeded"

    # an admin raises the budget: the next message goes through
    await set_budget(
        db, BudgetSpec("agent", agent.id, "month", limit_tokens=100_000), actor_id=None
    )
    result = await agent.run("again, please")
    assert result.text


async def test_warning_and_exceeded_are_sent_once_per_period(db, store, llm_stub_env):
    (agent,) = await agents(store, 1)
    assert agent.id is not None
    # 2500 tokens, events on the settled spending: the first two calls (about 1020 reserved,
    # 1000 spent each) start under 80 %; the third starts at 80 % spent (warning) and cannot
    # fit (exceeded, and refused); the fourth is refused again (refused only: the alerts are
    # sent once per period).
    await set_budget(db, BudgetSpec("agent", agent.id, "day", limit_tokens=2500), actor_id=None)
    for _ in range(2):
        llm_stub_env.add_json(openai_reply("ok", 100, 900))
    await agent.run("one")
    await agent.run("two")
    assert await events(db) == []
    for _ in range(2):
        with pytest.raises((BudgetExceededError, TurnFailedError)):
            await agent.run("three")
    sent = await events(db)
    assert [e["type"] for e in sent] == [
        "budget.warning",
        "budget.exceeded",
        "budget.refused",
        "budget.refused",
    ]
    exceeded = sent[1]
    assert exceeded["subject"] == f"budget:{exceeded['data']['budget_id']}"
    assert exceeded["data"]["limit_tokens"] == 2500 and exceeded["data"]["period"] == "day"


async def events(db: Database) -> list[dict[str, Any]]:
    return await db.fetch_all(
        "SELECT type, subject, data FROM events.outbox WHERE type LIKE 'budget.%' ORDER BY cursor"
    )


async def test_a_reservation_of_a_killed_process_expires(migrated_database_url):
    """A process reserves 80 of a 100 tokens budget and is killed before it settles: the
    reservation holds the budget until it expires, then stops counting."""
    user_id = 4242  # budgets and the ledger name ids; no account is needed
    async with Database(url=migrated_database_url) as db:
        await set_budget(db, BudgetSpec("user", user_id, "total", limit_tokens=100), actor_id=None)
    script = textwrap.dedent(
        f"""
        import asyncio, sys, time
        from gathering.db import Database
        from gathering.usage import Attribution
        from gathering.usage.budgets import reserve
        async def main():
            async with Database(url={migrated_database_url!r}, min_size=0, max_size=1) as db:
                call = await reserve(db, Attribution(user_id={user_id}), 0.0, 80, seconds=5)
                print("RESERVED", call, flush=True)
                time.sleep(600)  # killed here, before any settlement
        asyncio.run(main())
        """
    )
    child = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        script,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        assert child.stdout is not None and child.stderr is not None
        line = b""
        while not line.startswith(b"RESERVED"):  # after the log lines
            line = await asyncio.wait_for(child.stdout.readline(), 60)
            assert line, await child.stderr.read()
        assert line.split()[1] != b"None"
    finally:
        child.send_signal(signal.SIGKILL)
        await child.wait()
    who = Attribution(user_id=user_id)
    async with Database(url=migrated_database_url) as db:
        with pytest.raises(BudgetExceededError):
            await reserve(db, who, 0.0, 50, seconds=30)  # 80 held + 50 > 100
        deadline = time.monotonic() + 20
        while True:
            try:
                call = await reserve(db, who, 0.0, 50, seconds=30)
                break
            except BudgetExceededError:
                assert time.monotonic() < deadline, "the dead reservation never expired"
                await asyncio.sleep(0.25)
        assert call is not None
        held = await db.fetch_all("SELECT tokens FROM usage.reservations WHERE expires_at > now()")
        assert [row["tokens"] for row in held] == [50]
