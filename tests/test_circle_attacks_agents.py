"""Hostile review: circles' jobs (agents working, conversations) on a real worker."""

from __future__ import annotations

import asyncio

import pytest
from circle_lab import CircleLab, circle_lab
from task_runtime import until

from gathering.circles import (
    ConversationIn,
    Conversations,
    create_conversation,
    get_circle_task,
    get_conversation,
    set_circle_status,
    transcript,
)
from gathering.circles.work import CircleWorker, work_prompt
from gathering.config import get_settings

pytestmark = pytest.mark.integration
lab = circle_lab


async def test_an_agent_with_two_tasks_at_once_does_not_fail_one_because_it_is_busy(
    lab: CircleLab, monkeypatch: pytest.MonkeyPatch
) -> None:
    """max_parallel_tasks (default 3) offers several tasks to one agent; their work jobs run
    at once, but an agent takes one turn at a time: the second waits `agent_busy_wait`
    (30 s by default; 0.5 s here so that the test is short) and its task FAILS."""
    monkeypatch.setenv("GATHERING_AGENT_BUSY_WAIT", "0.5")
    get_settings.cache_clear()
    try:
        circle = await lab.circle(active=False, review_required=False)
        ann = await lab.member(circle, "ann")
        first = await lab.task(circle, "first")
        second = await lab.task(circle, "second")
        holds = []
        for task in (first, second):
            shown = task.__class__(**{**task.__dict__, "iteration": 1})
            holds.append(lab.stub.hold(work_prompt(circle, ann, shown)))
        await lab.start_worker()
        async with lab.db.transaction() as tx:
            circle = await set_circle_status(tx, circle.id, "active")
        await lab.flow.route_pending(circle.id)

        async def one_arrived() -> bool:
            return any(h.arrived.is_set() for h in holds)

        await until("a turn began", one_arrived)
        await asyncio.sleep(2)  # > busy wait
        for hold in holds:
            hold.release()
        done = [await lab.wait(t.id) for t in (first, second)]
        assert [t.status for t in done] == ["completed", "completed"], [
            (t.status, t.error) for t in done
        ]
    finally:
        get_settings.cache_clear()


async def test_an_injected_stop_phrase_ends_the_conversation(lab: CircleLab) -> None:
    """ConversationIn.stop_phrase: "Said by anyone, it ends"."""
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
                stop_phrase="WE ARE DONE",
                max_turns=4,
            ),
            lab.owner_id,
        )
    conversations = Conversations(lab.db, lab.bus)
    await conversations.inject(found.id, lab.owner_id, "owner", "ok everyone, WE ARE DONE")
    lab.stub.add_reply("a1", "b1", "a2", "b2", "summary")
    await lab.start_worker()
    await conversations.start(found.id)

    async def ended() -> bool:
        return (await get_conversation(lab.db, found.id)).status in ("finished", "failed")

    await until("ended", ended, limit=30)
    done = await get_conversation(lab.db, found.id)
    assert (done.finish_reason, done.turns) == ("stop_phrase", 0), (
        f"the person's stop phrase was ignored: {done.finish_reason}, {done.turns} turns"
    )


async def test_a_work_job_run_twice_at_once_takes_one_turn(lab: CircleLab) -> None:
    """Two deliveries of the same `circles:work` job (a stalled job re-queued, a second
    offer to the same member) run concurrently: the agent must not be called twice."""
    circle = await lab.circle(review_required=False)
    ann = await lab.member(circle, "ann")
    task = await lab.task(circle, "once")
    assert task.offered_to == ann.id
    lab.stub.add_reply("the work", "the work again")
    worker = CircleWorker(lab.db, lab.bus)
    results = await asyncio.gather(
        worker.work(task.id, 1, ann.id), worker.work(task.id, 1, ann.id), return_exceptions=True
    )
    chats = [r for r in lab.stub.requests if r.path.endswith("/api/chat")]
    done = await get_circle_task(lab.db, task.id)
    assert len(chats) == 1, (
        f"{len(chats)} model calls for one attempt; results {results}; task {done.status}"
    )


async def test_a_work_job_after_its_circle_was_deleted_ends_quietly(lab: CircleLab) -> None:
    circle = await lab.circle(review_required=False)
    ann = await lab.member(circle, "ann")
    task = await lab.task(circle, "doomed")
    await lab.db.execute("DELETE FROM circle.circles WHERE id = $1", circle.id)
    worker = CircleWorker(lab.db, lab.bus)
    await worker.work(task.id, 1, ann.id)  # the job of a task that is gone: nothing to do
    await worker.review(task.id, 1, ann.id)


async def test_an_agent_deleted_mid_task_leaves_no_orphan_in_progress(lab: CircleLab) -> None:
    circle = await lab.circle(review_required=False)
    ann = await lab.member(circle, "ann", "lead")
    task = await lab.task(circle, "orphan")
    await lab.flow.claim(task.id, lab_actor(ann.id))
    await lab.db.execute("DELETE FROM agent.agents WHERE id = $1", ann.agent_id)
    assert await lab.flow.sweep_orphans() == 1  # the duty's round, every second
    task = await get_circle_task(lab.db, task.id)
    assert (task.status, task.error) == ("failed", "the member working it is gone (deleted)")
    assert not (task.status == "in_progress" and task.assignee_id is None), (
        "the task is in progress with no assignee: nobody may submit it, it never ends"
    )


def lab_actor(member_id: int):  # type: ignore[no-untyped-def]
    from gathering.circles import Actor

    return Actor(member_id=member_id)


async def test_start_twice_and_many_injects_at_once(lab: CircleLab) -> None:
    """Held up: one start wins; concurrent injects get distinct numbers."""
    circle = await lab.circle()
    ann = await lab.member(circle, "ann")
    async with lab.db.transaction() as tx:
        found = await create_conversation(
            tx, circle, ConversationIn(topic="t", participants=[ann.id]), lab.owner_id
        )
    conversations = Conversations(lab.db, lab.bus)
    results = await asyncio.gather(
        *(conversations.start(found.id) for _ in range(5)), return_exceptions=True
    )
    assert sum(not isinstance(r, BaseException) for r in results) == 1
    jobs = await lab.db.fetch_val(
        "SELECT count(*) FROM procrastinate_jobs WHERE task_name = 'circles:converse'"
    )
    assert jobs == 1
    await conversations.pause(found.id)
    await asyncio.gather(*(conversations.inject(found.id, None, "p", f"m{i}") for i in range(20)))
    ns = [m["n"] for m in await transcript(lab.db, found.id)]
    assert sorted(ns) == list(range(1, 21))
