"""Agents' work whose job ended without an outcome: a job that failed on an unexpected error
(here: arguments an older worker does not take, as in a rolling deploy) or that a person
cancelled leaves the task in the agent's hands with nothing running for it. The offers duty's
sweep fails the attempt, or hands the review on; work that is still queued, or a task a
person took for an agent by hand, is left alone. The database and the worker are real."""

from __future__ import annotations

import asyncio
import contextlib

import pytest
from circle_lab import CircleLab, circle_lab
from task_runtime import until

from gathering.circles import CircleTask, Submission, get_circle_task
from gathering.circles.jobs import offers_duty
from gathering.circles.store import SQL
from gathering.circles.tasks import WORK, Actor, agent_job, task_decisions, task_history
from gathering.errors import NotFoundError
from gathering.jobs import JobServices

pytestmark = pytest.mark.integration
lab = circle_lab


async def jobs_of(lab: CircleLab, task_id: int, name: str) -> list[dict]:
    return await lab.db.fetch_all(
        "SELECT id, status::text AS status, args FROM procrastinate_jobs "
        "WHERE task_name = $1 AND args->>'task_id' = $2 ORDER BY id",
        name,
        str(task_id),
    )


async def cancel(lab: CircleLab, job_id: int) -> None:
    """What `gathering jobs cancel` does."""
    await lab.db.fetch_one("SELECT procrastinate_cancel_job_v1($1, false, false)", job_id)


async def taken_by_ann(lab: CircleLab) -> tuple[int, int]:
    """A task offered to agent member ann, taken up as her work job would (job not run)."""
    circle = await lab.circle(review_required=False)
    ann = await lab.member(circle, "ann")
    task = await lab.task(circle, "parse it")
    assert task.offered_to == ann.id
    assert await lab.flow.start_attempt(task.id, ann.id, 1) is not None
    return task.id, ann.id


async def in_review(lab: CircleLab) -> tuple[CircleTask, int]:
    """A task agent member ann worked and handed in, and the agent member asked to review it
    (its review job not run)."""
    circle = await lab.circle()
    ann = await lab.member(circle, "ann", python=4)
    critic = await lab.member(circle, "critic", "reviewer")
    task = await lab.task(circle, "parse it", requirements={"python": 3})
    assert task.offered_to == ann.id
    await lab.flow.start_attempt(task.id, ann.id, 1)
    work = Submission(text="done", summary="done")
    task = await lab.flow.submit(task.id, Actor(member_id=ann.id), work, iteration=1)
    assert task.status == "in_review"
    return task, critic.id


async def test_work_whose_job_a_person_cancelled_fails_instead_of_hanging(lab: CircleLab):
    task_id, _ = await taken_by_ann(lab)
    [job] = await jobs_of(lab, task_id, "circles:work")
    assert await lab.flow.sweep_stranded() == 0  # its job is queued: nothing to do
    await cancel(lab, job["id"])
    assert await lab.flow.sweep_stranded() == 1
    task = await get_circle_task(lab.db, task_id)
    assert task.status == "failed"
    assert task.error == f"the agent's work stopped: its job {job['id']} was cancelled"
    assert await lab.flow.sweep_stranded() == 0  # once


async def test_work_whose_job_failed_unexpectedly_fails_through_the_duty(lab: CircleLab):
    task_id, ann_id = await taken_by_ann(lab)
    [first] = await jobs_of(lab, task_id, "circles:work")
    await cancel(lab, first["id"])
    task = await get_circle_task(lab.db, task_id)
    member = next(m for m in await _members(lab, task.circle_id) if m.id == ann_id)
    async with lab.db.transaction() as tx:  # a job a newer release queued, this one cannot run
        await agent_job(tx, WORK, task_id, 1, member, from_a_newer_release=True)
    await lab.start_worker()

    async def failed() -> bool:
        return (await jobs_of(lab, task_id, "circles:work"))[-1]["status"] == "failed"

    await until("the job failed", failed)
    assert lab.worker is not None
    duty = offers_duty(JobServices(lab.db, lab.bus), interval=0.05)
    await duty.start()
    try:
        task = await lab.wait(task_id, "failed")
    finally:
        await duty.stop()
    assert task.error is not None
    assert "its job" in task.error and "failed on an unexpected error" in task.error
    moves = [(h["from_status"], h["to_status"]) for h in await task_history(lab.db, task_id)]
    assert moves[-1] == ("in_progress", "failed")


async def test_work_sent_back_whose_job_failed_fails_too(lab: CircleLab):
    task, reviewer = await in_review(lab)
    verdict = {"verdict": "changes_requested", "feedback": "handle the empty file"}
    task = await lab.flow.review(task.id, Actor(member_id=reviewer), _review(verdict))
    assert task.status == "changes_requested" and task.iteration == 2
    rework = (await jobs_of(lab, task.id, "circles:work"))[-1]
    assert rework["args"]["iteration"] == 2
    await cancel(lab, rework["id"])
    assert await lab.flow.sweep_stranded() == 1
    task = await get_circle_task(lab.db, task.id)
    assert task.status == "failed" and f"its job {rework['id']} was cancelled" in (task.error or "")


async def test_a_review_whose_job_ended_goes_to_a_person_when_no_lead_is_left(lab: CircleLab):
    task, reviewer = await in_review(lab)
    [review] = await jobs_of(lab, task.id, "circles:review")
    assert review["args"]["member_id"] == reviewer
    assert await lab.flow.sweep_stranded() == 0  # queued: it will run
    await cancel(lab, review["id"])
    assert await lab.flow.sweep_stranded() == 1
    decisions = await task_decisions(lab.db, task.id)
    assert decisions[-1]["kind"] == "escalation" and decisions[-1]["member_id"] is None
    assert decisions[-1]["reason"] == (
        f"member {reviewer}'s review stopped: its job {review['id']} was "
        "cancelled; a person decides"
    )
    assert (await get_circle_task(lab.db, task.id)).status == "in_review"
    assert await lab.flow.sweep_stranded() == 0  # handed on once


async def test_a_task_taken_for_an_agent_by_hand_is_left_alone(lab: CircleLab):
    """No job was ever queued for it (a lead took it as the agent): nothing ended, so the
    sweep does not fail it."""
    circle = await lab.circle(active=False, review_required=False)
    ann = await lab.member(circle, "ann", "lead")
    task = await lab.task(circle, "by hand")
    await lab.flow.claim(task.id, Actor(member_id=ann.id))
    assert await jobs_of(lab, task.id, "circles:work") == []
    assert await lab.flow.sweep_stranded() == 0
    assert (await get_circle_task(lab.db, task.id)).status == "in_progress"


async def _members(lab: CircleLab, circle_id: int):  # type: ignore[no-untyped-def]
    from gathering.circles.store import list_members

    return await list_members(lab.db, circle_id)


def _review(verdict: dict):  # type: ignore[no-untyped-def]
    from gathering.circles import ReviewIn

    return ReviewIn.model_validate(verdict)


async def test_a_lead_who_took_an_offered_task_is_not_failed_for_the_other_agents_job(
    lab: CircleLab,
):
    """The offer's job was another member's: it ending says nothing of the lead's work."""
    circle = await lab.circle(review_required=False)
    ann = await lab.member(circle, "ann", python=5)
    boss = await lab.member(circle, "boss", "lead", python=3)
    task = await lab.task(circle, "parse it", requirements={"python": 3})
    assert task.offered_to == ann.id
    await lab.flow.claim(task.id, Actor(member_id=boss.id))
    [job] = await jobs_of(lab, task.id, "circles:work")
    await cancel(lab, job["id"])  # ann's job, pointless now
    assert await lab.flow.sweep_stranded() == 0
    task = await get_circle_task(lab.db, task.id)
    assert (task.status, task.assignee_id) == ("in_progress", boss.id)


async def test_two_sweeps_at_once_hand_a_review_on_once(lab: CircleLab):
    task, _ = await in_review(lab)
    [review] = await jobs_of(lab, task.id, "circles:review")
    await cancel(lab, review["id"])
    moved = await asyncio.gather(lab.flow.sweep_stranded(), lab.flow.sweep_stranded())
    assert sorted(moved) == [0, 1]
    escalations = [d for d in await task_decisions(lab.db, task.id) if d["kind"] == "escalation"]
    assert len(escalations) == 1


async def test_a_review_already_handed_on_when_its_member_left_is_not_handed_on_again(
    lab: CircleLab,
):
    task, critic = await in_review(lab)
    await lab.member(task_circle := await _circle_of(lab, task), "boss", "lead")
    await lab.db.execute("UPDATE circle.members SET active = false WHERE id = $1", critic)
    assert await lab.flow.member_left(task_circle.id, critic) == 1  # to the lead
    jobs = await jobs_of(lab, task.id, "circles:review")
    [review] = [job for job in jobs if job["args"]["member_id"] == critic]
    await cancel(lab, review["id"])  # the critic's, who left
    assert await lab.flow.sweep_stranded() == 0
    escalations = [d for d in await task_decisions(lab.db, task.id) if d["kind"] == "escalation"]
    assert len(escalations) == 1 and escalations[0]["member_id"] is not None


async def test_a_circle_deleted_mid_sweep_does_not_stop_the_sweep(lab: CircleLab):
    first, _ = await taken_by_ann(lab)
    [job] = await jobs_of(lab, first, "circles:work")
    await cancel(lab, job["id"])
    other = await lab.circle("other", review_required=False)
    bob = await lab.member(other, "bob")
    second = await lab.task(other, "also")
    await lab.flow.start_attempt(second.id, bob.id, 1)
    [job] = await jobs_of(lab, second.id, "circles:work")
    await cancel(lab, job["id"])
    gone = await get_circle_task(lab.db, first)
    stranded = await lab.db.fetch_all(SQL["stranded_work"], 50)
    assert [row["id"] for row in stranded] == [first, second.id]
    await lab.db.execute("DELETE FROM circle.circles WHERE id = $1", gone.circle_id)
    for row in stranded:  # the rows read before the delete, as a sweep holds them
        with contextlib.suppress(NotFoundError):
            await lab.flow._fail_stranded(row)
    assert (await get_circle_task(lab.db, second.id)).status == "failed"
    assert await lab.flow.sweep_stranded() == 0


async def _circle_of(lab: CircleLab, task: CircleTask):  # type: ignore[no-untyped-def]
    from gathering.circles import get_circle

    return await get_circle(lab.db, task.circle_id)


async def test_a_review_of_a_reviewer_whose_agent_was_deleted_is_handed_on(lab: CircleLab):
    """Nothing else hands a gone member's review on (only a member who *left* was handed on
    when they left)."""
    task, critic = await in_review(lab)
    [review] = await jobs_of(lab, task.id, "circles:review")
    await cancel(lab, review["id"])
    await lab.db.execute(
        "DELETE FROM agent.agents WHERE id = (SELECT agent_id FROM circle.members WHERE id = $1)",
        critic,
    )
    assert await lab.flow.sweep_stranded() == 1
    decisions = await task_decisions(lab.db, task.id)
    assert decisions[-1]["kind"] == "escalation"


async def test_a_lead_who_took_over_after_the_sweep_read_its_rows_is_not_failed(lab: CircleLab):
    """The rows are read first, each task locked after: what changed between (a lead took the
    task over, the job was retried) is looked at again under the lock."""
    task, reviewer = await in_review(lab)
    boss = await lab.member(await _circle_of(lab, task), "boss", "lead", python=3)
    verdict = {"verdict": "changes_requested", "feedback": "again"}
    task = await lab.flow.review(task.id, Actor(member_id=reviewer), _review(verdict))
    rework = (await jobs_of(lab, task.id, "circles:work"))[-1]
    await cancel(lab, rework["id"])
    [row] = await lab.db.fetch_all(SQL["stranded_work"], 50)  # the sweep reads
    await lab.flow.claim(task.id, Actor(member_id=boss.id))  # the lead takes it over
    assert await lab.flow._fail_stranded(row) == 0  # the sweep locks: not the lead's job
    task = await get_circle_task(lab.db, task.id)
    assert (task.status, task.assignee_id) == ("in_progress", boss.id)
