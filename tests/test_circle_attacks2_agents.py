"""Hostile review, round 2: agents' jobs and conversations on a real worker (LLM stub)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from circle_lab import CircleLab, circle_lab
from task_runtime import until

import gathering.circles.conversations as conversations_module
import gathering.circles.work as work_module
from gathering.circles import (
    ConversationIn,
    Conversations,
    create_conversation,
    get_circle_task,
    get_conversation,
    task_decisions,
)

pytestmark = pytest.mark.integration
lab = circle_lab


# --- two agent leads who give no verdict hand the review to each other forever ----------------


async def test_leads_who_give_no_verdict_end_with_a_person_not_a_loop(lab: CircleLab) -> None:
    await lab.start_worker()
    circle = await lab.circle()
    await lab.member(circle, "coder", python=4)
    await lab.member(circle, "boss1", "lead")
    await lab.member(circle, "boss2", "lead")
    # The work, then two answers that are no verdict (a small model's usual answer); any
    # further call answers with the stub's default text (no verdict either).
    lab.stub.add_reply("the work", "looks fine to me", "I agree, nice")
    task = await lab.task(circle, requirements={"python": 4})
    await lab.wait(task.id, "in_review")
    await asyncio.sleep(6)  # bounded: the loop, when there is one, runs on replayed turns
    decisions = await task_decisions(lab.db, task.id)
    escalations = [d["member_id"] for d in decisions if d["kind"] == "escalation"]
    assert None in escalations[:3] and len(escalations) <= 3, (
        f"the review went back and forth between the leads {len(escalations)} times in 6 s "
        f"(asked, in order: {escalations[:12]}...), never to a person; task "
        f"{(await get_circle_task(lab.db, task.id)).status}"
    )


# --- a person's stop phrase said while an agent speaks is missed ------------------------------


async def test_a_stop_phrase_injected_during_a_turn_ends_the_conversation(
    lab: CircleLab, monkeypatch: pytest.MonkeyPatch
) -> None:
    circle = await lab.circle()
    ann = await lab.member(circle, "ann")
    bob = await lab.member(circle, "bob")
    async with lab.db.transaction() as tx:
        found = await create_conversation(
            tx,
            circle,
            ConversationIn(
                topic="the plan",
                participants=[ann.id, bob.id],
                stop_phrase="stop now",
                max_turns=6,
            ),
            lab.owner_id,
        )
    conversations = Conversations(lab.db, lab.bus)
    speaking = asyncio.Event()
    go_on = asyncio.Event()
    original = work_module.run_agent_turn

    async def slow_turn(agent: Any, prompt: str, key: str, on_delta: Any = None) -> Any:
        if key.endswith(":turn:1"):
            speaking.set()
            await go_on.wait()  # ann is speaking
        return await original(agent, prompt, key, on_delta)

    monkeypatch.setattr(conversations_module, "run_agent_turn", slow_turn)
    lab.stub.add_reply("a1", "b1", "a2", "b2", "a3", "b3", "summary")
    await lab.start_worker()
    await conversations.start(found.id)
    await asyncio.wait_for(speaking.wait(), 10)
    # The owner says the stop phrase while ann speaks: "when a message holds the stop_phrase"
    # the conversation ends.
    await conversations.inject(found.id, lab.owner_id, "owner", "OK, stop now please.")
    go_on.set()

    async def ended() -> bool:
        return (await get_conversation(lab.db, found.id)).status in (
            "finished",
            "cancelled",
            "failed",
        )

    await until("ended", ended, limit=30)
    done = await get_conversation(lab.db, found.id)
    assert (done.finish_reason, done.turns) == ("stop_phrase", 1), (
        f"the person's stop phrase was missed: it ended by {done.finish_reason} after "
        f"{done.turns} turns"
    )
