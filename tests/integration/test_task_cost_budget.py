"""A background task's money budget (`max_cost_usd`, docs/tasks.md "Budgets"): the model is
OpenAI's gpt-4o, priced by the shipped price data, faked at its HTTP wire by the LLM stub with
the usage each reply reports. The cost of each step is counted in the task, and once it reaches
`max_cost_usd` the task stops before its next model call: `failed`, code `budget_exhausted`."""

from __future__ import annotations

import time
from typing import Any

import pytest
from pipeline_runtime import LAB, TOOLS
from task_runtime import Lab, task_lab, until

from gathering.agents import Agent, PostgresAgentStore
from gathering.llm import Usage
from gathering.llm.pricing import price_for
from gathering.scheduler.tasks import TaskSpec, start_task, task_steps
from gathering.tools.agent_tools import change_agent_tool

pytestmark = pytest.mark.integration
lab = task_lab  # the fixture, by the name these tests use
ECHO = TOOLS[0]
PROMPT_TOKENS, COMPLETION_TOKENS = 2_000, 1_000  # what each reply says it used


def openai_echo_call(text: str) -> dict[str, Any]:
    """A chat.completion asking for `echo(text)`, with the usage OpenAI reports."""
    return {
        "id": f"chatcmpl-{text}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": "gpt-4o",
        "choices": [
            {
                "index": 0,
                "message": {
                    "role": "assistant",
                    "content": None,
                    "tool_calls": [
                        {
                            "id": f"call_{text}",
                            "type": "function",
                            "function": {"name": "echo", "arguments": f'{{"text": "{text}"}}'},
                        }
                    ],
                },
                "finish_reason": "tool_calls",
                "logprobs": None,
            }
        ],
        "usage": {
            "prompt_tokens": PROMPT_TOKENS,
            "completion_tokens": COMPLETION_TOKENS,
            "total_tokens": PROMPT_TOKENS + COMPLETION_TOKENS,
        },
    }


def step_cost() -> float:
    """What one reply costs at gpt-4o's price now."""
    price = price_for("openai", "gpt-4o")
    assert price is not None, "the shipped price data no longer prices gpt-4o"
    cost = price.cost(Usage(PROMPT_TOKENS, COMPLETION_TOKENS))
    assert cost > 0
    return cost


async def priced_agent(lab: Lab) -> None:
    """An agent `Pricey` of the lab's owner on OpenAI's gpt-4o, allowed `echo`."""
    store = PostgresAgentStore(lab.db)
    agent = Agent("Pricey", "openai", "gpt-4o", store=store, owner_id=lab.owner_id)
    await agent.save()
    assert agent.id is not None
    await change_agent_tool(lab.db, agent.id, ECHO, {"enabled": True, "policy": None})


def chat_calls(lab: Lab) -> int:
    return sum(1 for r in lab.stub.requests if r.path.endswith("/chat/completions"))


async def test_a_task_stops_once_its_cost_reaches_max_cost_usd(lab: Lab) -> None:
    await priced_agent(lab)
    cost = step_cost()
    for text in ("one", "two", "three", "four"):  # it would go on for four steps
        lab.stub.add_json(openai_echo_call(text))
    # One step costs less than the budget; two cost more.
    spec = TaskSpec(agent="Pricey", goal="Echo until told to stop.", max_cost_usd=1.5 * cost)
    task = await start_task(lab.db, lab.bus, lab.owner_id, spec)

    ended = await lab.wait(task.id)
    assert ended.status == "failed", ended
    assert ended.error is not None and ended.error["code"] == "budget_exhausted", ended.error
    assert ended.error["message"].startswith(f"task {task.id} spent ${2 * cost:.4f} of its $")
    assert ended.result is None and ended.finished_at is not None
    assert ended.cost_usd == pytest.approx(2 * cost)
    assert (ended.steps, ended.input_tokens, ended.output_tokens) == (
        2,
        2 * PROMPT_TOKENS,
        2 * COMPLETION_TOKENS,
    )
    # It stopped before a third model call: two were made, and the third reply is unused.
    assert chat_calls(lab) == 2
    steps = await task_steps(lab.db, task.id)
    assert [s.n for s in steps] == [1, 2]
    assert [s.cost_usd for s in steps] == [pytest.approx(cost)] * 2
    assert all(s.status == "done" for s in steps)  # each step's call ran before the stop
    assert (LAB.calls["one"], LAB.calls["two"], LAB.calls["three"]) == (1, 1, 0)

    async def finished_told() -> bool:  # the bus delivers its events a moment later
        return "task.finished" in lab.kinds(task.id)

    await until("the end told", finished_told)
    finished = [e for e in lab.events if e.type == "task.finished" and e.data["task_id"] == task.id]
    assert finished[0].data["error"]["code"] == "budget_exhausted"


async def test_a_task_under_its_money_budget_is_not_stopped_by_it(lab: Lab) -> None:
    """The same replies with room for all of them: the task finishes with the model's answer
    (so the stop above is the money budget, not the steps or tokens)."""
    await priced_agent(lab)
    cost = step_cost()
    for text in ("one", "two"):
        lab.stub.add_json(openai_echo_call(text))
    lab.stub.add_reply("echoed twice")
    spec = TaskSpec(agent="Pricey", goal="Echo twice, then say so.", max_cost_usd=10 * cost)
    task = await start_task(lab.db, lab.bus, lab.owner_id, spec)

    ended = await lab.wait(task.id)
    assert (ended.status, ended.result, ended.error) == ("succeeded", "echoed twice", None)
    assert ended.steps == 3 and chat_calls(lab) == 3
    assert ended.cost_usd >= 2 * cost
