"""The parts of `gathering.usage` that need no database: attribution nesting, budget specs and
shares, the prompt estimate, and the spending collector's exposition."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from gathering.errors import InvalidInputError
from gathering.llm import Message, ToolSpec
from gathering.llm.token_estimate import estimate_tokens
from gathering.observability import SpendingCollector
from gathering.usage import Attribution, BudgetSpec, attributed, current_attribution
from gathering.usage.budgets import Budget
from gathering.usage.model_calls import estimated_input_tokens


def test_attribution_nests_and_is_restored():
    assert current_attribution() == Attribution()
    with attributed(user_id=1, circle_id=2) as outer:
        assert outer == Attribution(user_id=1, circle_id=2)
        with attributed(task_id=3, user_id=None):  # None keeps the outer value
            assert current_attribution() == Attribution(user_id=1, circle_id=2, task_id=3)
        assert current_attribution() == outer
    assert current_attribution() == Attribution()


async def test_attribution_is_per_task():
    seen: list[Attribution] = []

    async def other() -> None:
        seen.append(current_attribution())

    with attributed(agent_id=9):
        task = asyncio.create_task(other())  # a copy of this context
    await task
    assert seen == [Attribution(agent_id=9)] and current_attribution() == Attribution()


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        (BudgetSpec("user", 1, "day"), "needs a limit"),
        (BudgetSpec("team", 1, "day", limit_usd=1), "no budget scope"),  # type: ignore[arg-type]
        (BudgetSpec("user", 1, "week", limit_usd=1), "no budget period"),  # type: ignore[arg-type]
        (BudgetSpec("user", 1, "day", limit_usd=0), "more than 0"),
        (BudgetSpec("user", 1, "day", limit_tokens=0), "at least 1"),
        (BudgetSpec("user", 1, "day", limit_tokens=5, warn_percent=101), "between 1 and 100"),
        (BudgetSpec("user", 0, "day", limit_tokens=5), "positive id"),
    ],
)
def test_bad_budget_specs_are_refused(spec, message):
    with pytest.raises(InvalidInputError, match=message):
        spec.check()


def budget(**limits) -> Budget:
    now = datetime.now(UTC)
    values = {"limit_usd": None, "limit_tokens": None} | limits
    return Budget(
        1, "agent", 2, "day", values["limit_usd"], values["limit_tokens"], 80, now, now,
        0.5, 400, 0.25, 100, None, now, now,
    )  # fmt: skip


def test_a_budget_share_counts_spent_reserved_and_the_call():
    assert budget(limit_usd=1.0).fraction_after(0.25, 0) == pytest.approx(1.0)
    assert budget(limit_tokens=1000).fraction_after(0, 500) == pytest.approx(1.0)
    both = budget(limit_usd=10.0, limit_tokens=1000)
    assert both.fraction_after(0.25, 100) == pytest.approx(0.6)  # the larger share


def test_the_prompt_estimate_counts_system_messages_and_tools():
    system, messages = "be brief", [Message.user("hello there")]
    tool = ToolSpec("lookup", "Look a number up")
    plain = estimated_input_tokens(system, messages)
    assert plain >= estimate_tokens(system) + estimate_tokens("hello there")
    assert estimated_input_tokens(system, messages, [tool]) > plain


def test_spending_is_exposed_from_the_rows_it_is_given():
    collector = SpendingCollector()
    registry = CollectorRegistry()
    registry.register(collector)
    collector.set_totals(
        [
            {"kind": "model", "provider": "openai", "model": "gpt-4o", "calls": 3,
             "input_tokens": 30, "output_tokens": 12, "cost_usd": 0.5},
            {"kind": "tool", "provider": "", "model": "read_file", "calls": 2,
             "input_tokens": 0, "output_tokens": 0, "cost_usd": 0.0},
        ]
    )  # fmt: skip
    text = generate_latest(registry).decode()
    assert 'gathering_llm_cost_usd_total{kind="model",model="gpt-4o",provider="openai"} 0.5' in text
    assert 'gathering_usage_calls_total{kind="tool",model="read_file",provider=""} 2.0' in text
    assert 'direction="output",kind="model",model="gpt-4o",provider="openai"} 12.0' in text
    assert 'gathering_llm_cost_usd_total{kind="tool"' not in text
