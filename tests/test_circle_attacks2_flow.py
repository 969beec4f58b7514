"""Hostile review, round 2: TaskFlow-level defects that survive the first round of fixes."""

from __future__ import annotations

import asyncio

import pytest
from circle_lab import CircleLab, as_member, circle_lab

import gathering.circles.tasks as tasks_module
from gathering.agents import PostgresAgentStore
from gathering.circles import (
    Actor,
    MemberChange,
    ReviewIn,
    Submission,
    change_member,
    get_circle_task,
    task_decisions,
)
from gathering.errors import GatheringError

pytestmark = pytest.mark.integration
lab = circle_lab


def work(*files: str) -> Submission:
    return Submission(text="done", files=list(files))


# --- a lead who takes back a task sent back for changes can never hand it in ------------------


async def test_a_lead_who_claims_a_task_sent_back_for_changes_can_submit_it(
    lab: CircleLab,
) -> None:
    circle = await lab.circle(review_required=True)
    ann = await lab.member(circle, "ann", python=1)
    boss = await lab.member(circle, "boss", "lead", python=1)
    task = await lab.task(circle, requirements={"python": 1}, priority=5)
    await lab.flow.claim(task.id, as_member(ann))
    await lab.flow.submit(task.id, as_member(ann), work())
    changes = ReviewIn(verdict="changes_requested", feedback="again")
    await lab.flow.review(task.id, Actor(user_id=lab.owner_id), changes)
    # The lead takes it (allowed: `_claim` lets a lead claim a changes_requested task)...
    claimed = await lab.flow.claim(task.id, as_member(boss))
    assert claimed.status == "in_progress"
    # ...but the task stays in ann's hands: the lead who took it cannot hand it in.
    assert claimed.assignee_id == boss.id, (
        f"the lead claimed task {task.id} yet its assignee is still member {claimed.assignee_id}"
    )
    await lab.flow.submit(task.id, as_member(boss), work())


# --- a reviewer who leaves: the attempt waits for their verdict forever -----------------------


async def test_a_reviewer_who_leaves_is_replaced_not_waited_for_forever(lab: CircleLab) -> None:
    circle = await lab.circle(review_required=True, reviewers_per_task=1)
    ann = await lab.member(circle, "ann", python=1)
    first = await lab.member(circle, "r1", "reviewer")
    second = await lab.member(circle, "r2", "reviewer")
    task = await lab.task(circle, requirements={"python": 1})
    await lab.flow.claim(task.id, as_member(ann))
    await lab.flow.submit(task.id, as_member(ann), work())
    asked = [d["member_id"] for d in await task_decisions(lab.db, task.id) if d["kind"] == "review"]
    assert asked == [first.id]
    # r1 leaves the circle, as PATCH /members/{id} {"active": false} does it.
    async with lab.db.transaction() as tx:
        await change_member(tx, circle.id, first.id, MemberChange(active=False))
    await lab.flow.member_left(circle.id, first.id)
    await lab.flow.route_pending(circle.id)
    # r1 may no longer give a verdict...
    with pytest.raises(GatheringError):
        await lab.flow.review(task.id, as_member(first), ReviewIn(verdict="approved"))
    # ...and r2 (free, able) is never asked: the task waits in review for no one.
    asked = [
        d["member_id"]
        for d in await task_decisions(lab.db, task.id)
        if d["kind"] in ("review", "escalation")
    ]
    assert second.id in asked or None in asked, (
        f"the only reviewer asked left; the task is {(await get_circle_task(lab.db, task.id)).status}"
        f" and nobody else was asked (asked: {asked})"
    )


# --- deleting an agent while a step of its task runs deadlocks ---------------------------------


async def test_deleting_an_agent_while_its_task_completes_does_not_deadlock(
    lab: CircleLab, monkeypatch: pytest.MonkeyPatch
) -> None:
    circle = await lab.circle(review_required=False)
    ann = await lab.member(circle, "ann", python=1)
    task = await lab.task(circle, requirements={"python": 1})
    await lab.flow.claim(task.id, as_member(ann))

    in_step = asyncio.Event()
    go_on = asyncio.Event()
    original = tasks_module._lock_files

    async def slow_lock_files(step, task, paths):  # type: ignore[no-untyped-def]
        in_step.set()  # the step holds the circle's row and the task's
        await go_on.wait()
        return await original(step, task, paths)

    monkeypatch.setattr(tasks_module, "_lock_files", slow_lock_files)
    submitting = asyncio.create_task(lab.flow.submit(task.id, as_member(ann), work()))
    await asyncio.wait_for(in_step.wait(), 10)
    # The owner deletes ann's agent (DELETE /agents/{id}): its member row goes, and the
    # cascade sets the task's assignee to NULL (it waits for the step's task lock).
    deleting = asyncio.create_task(PostgresAgentStore(lab.db).delete_agent(lab.agents["ann"]))
    await asyncio.sleep(0.5)
    go_on.set()  # the step goes on: it writes rows that reference ann's member row
    results = await asyncio.wait_for(
        asyncio.gather(submitting, deleting, return_exceptions=True), 20
    )
    errors = {
        side: repr(r)
        for side, r in zip(("submit", "delete_agent"), results, strict=True)
        if isinstance(r, BaseException)
    }
    assert not errors, f"a step and an agent's deletion deadlocked: {errors}"


# --- an offer that expired once: the only able member is never offered the task again ---------


async def test_a_task_whose_only_able_member_let_an_offer_expire_is_not_stuck_forever(
    lab: CircleLab,
) -> None:
    # An agent's offer expires whenever its job waits behind the agent's other jobs (one at a
    # time per agent) longer than offer_timeout_seconds; here no worker runs at all.
    circle = await lab.circle(offer_timeout_seconds=1, review_required=False)
    ann = await lab.member(circle, "ann", python=3)
    task = await lab.task(circle, requirements={"python": 3})
    assert task.offered_to == ann.id
    await asyncio.sleep(1.2)
    assert await lab.flow.expire_offers() == 1
    assert (await get_circle_task(lab.db, task.id)).status == "pending"
    # ann is idle and able. Neither the circle nor its owner can hand her the task again:
    # the owner's POST .../offer routes it and finds no candidate; she cannot claim a
    # pending task; only cancelling it ends it.
    await lab.flow.offer(task.id, Actor(user_id=lab.owner_id))
    await lab.flow.route_pending(circle.id)
    task = await get_circle_task(lab.db, task.id)
    assert task.status == "offered", (
        f"task {task.id} stays {task.status} forever: its only able member (idle) was passed "
        "over for the attempt and nothing offers it to her again"
    )
