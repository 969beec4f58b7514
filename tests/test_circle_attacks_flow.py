"""Hostile review: TaskFlow-level attacks on circles (races, locks, routing, reviews)."""

from __future__ import annotations

import asyncio

import pytest
from circle_lab import CircleLab, as_member, circle_lab

import gathering.circles.tasks as tasks_module
from gathering.auth.users import UserStore
from gathering.circles import (
    Actor,
    MemberChange,
    ReviewIn,
    Submission,
    change_member,
    get_circle_task,
    task_dependencies,
)
from gathering.errors import FileLockedError, GatheringError

pytestmark = pytest.mark.integration
lab = circle_lab

APPROVE = ReviewIn(verdict="approved")


def work(*files: str) -> Submission:
    return Submission(text="done", files=list(files))


# --- file locks: the same file under another spelling -----------------------------------------


@pytest.mark.parametrize(
    "alias", ["./src/app.py", "src/../src/app.py", "src//app.py", "/src/app.py"]
)
async def test_a_file_lock_is_not_bypassed_by_another_spelling_of_the_path(
    lab: CircleLab, alias: str
) -> None:
    circle = await lab.circle(review_required=True)
    ann = await lab.member(circle, "ann", "lead")
    bob = await lab.member(circle, "bob", "lead")
    first = await lab.task(circle, "first")
    second = await lab.task(circle, "second")
    await lab.flow.claim(first.id, as_member(ann))
    await lab.flow.claim(second.id, as_member(bob))
    await lab.flow.submit(first.id, as_member(ann), work("src/app.py"))
    # The same file, spelled differently, must be refused as held by `first`.
    with pytest.raises(FileLockedError):
        await lab.flow.submit(second.id, as_member(bob), work(alias))


# --- routing: pending tasks beyond the first 20 are never offered again ------------------------


async def test_a_routable_pending_task_is_offered_when_a_member_frees_up(lab: CircleLab) -> None:
    circle = await lab.circle(max_parallel_tasks=1, review_required=False)
    ann = await lab.member(circle, "ann", python=2)
    busy = await lab.task(circle, "busy")
    assert busy.offered_to == ann.id
    await lab.flow.claim(busy.id, as_member(ann))
    # 20 urgent tasks nobody in the circle can do (they wait for a rust expert)...
    for n in range(20):
        t = await lab.task(circle, f"rust {n}", requirements={"rust": 5}, priority=100)
        assert t.status == "pending"
    # ...and one ann can do once she is free.
    easy = await lab.task(circle, "easy", priority=0)
    assert easy.status == "pending"  # ann is at her limit
    await lab.flow.submit(busy.id, as_member(ann), work())  # completes: ann is free
    easy = await get_circle_task(lab.db, easy.id)
    assert easy.status == "offered", (
        f"ann is free, the task fits her, yet it stays {easy.status}: "
        "_route_waiting only looks at the 20 most urgent pending tasks"
    )


# --- dependencies: races with completion and with each other ----------------------------------


async def test_a_dependency_added_while_its_blocker_completes_does_not_block_forever(
    lab: CircleLab, monkeypatch: pytest.MonkeyPatch
) -> None:
    circle = await lab.circle(review_required=False)
    ann = await lab.member(circle, "ann", "lead")
    blocker = await lab.task(circle, "blocker")
    await lab.flow.claim(blocker.id, as_member(ann))
    waiter = await lab.task(circle, "waiter")
    # waiter is offered to ann; make it pending (ann refuses) so that it may wait.
    waiter = await lab.flow.refuse(waiter.id, as_member(ann))
    assert waiter.status == "pending"

    read_blocker = asyncio.Event()
    go_on = asyncio.Event()
    original = tasks_module._task_of

    async def slow_task_of(tx, circle_id, task_id, **how):  # type: ignore[no-untyped-def]
        found = await original(tx, circle_id, task_id, **how)
        read_blocker.set()
        await go_on.wait()
        return found

    monkeypatch.setattr(tasks_module, "_task_of", slow_task_of)
    adding = asyncio.create_task(
        lab.flow.add_dependency(waiter.id, blocker.id, Actor(user_id=lab.owner_id))
    )
    await asyncio.wait_for(read_blocker.wait(), 10)
    # The blocker completes between add_dependency's read of it and its insert: its
    # completion waits for the dependency to commit (the read holds a share lock), then
    # frees the waiter.
    completing = asyncio.create_task(lab.flow.submit(blocker.id, as_member(ann), work()))
    await asyncio.sleep(0.2)
    go_on.set()
    await asyncio.wait_for(adding, 10)
    assert (await asyncio.wait_for(completing, 10)).status == "completed"
    waiter = await get_circle_task(lab.db, waiter.id)
    assert await task_dependencies(lab.db, waiter.id) == [blocker.id]
    assert waiter.status != "blocked", (
        "the task waits for a task that is completed: it stays blocked forever"
    )


async def test_two_concurrent_dependencies_closing_a_cycle_give_a_clear_409(lab: CircleLab) -> None:
    """No cycle is stored (held up), but the loser gets 'deadlock detected' (503 database_busy)
    instead of the cycle refusal (409 with the cycle)."""
    circle = await lab.circle(active=False)
    await lab.member(circle, "ann", "lead")
    owner = Actor(user_id=lab.owner_id)
    seen = []
    for _ in range(5):
        a = await lab.task(circle, "a")
        b = await lab.task(circle, "b")
        results = await asyncio.gather(
            lab.flow.add_dependency(a.id, b.id, owner),
            lab.flow.add_dependency(b.id, a.id, owner),
            return_exceptions=True,
        )
        errors = [r for r in results if isinstance(r, BaseException)]
        assert len(errors) == 1, results  # never a stored cycle
        seen.append(f"{type(errors[0]).__name__}: {errors[0]}")
    assert all("cycle" in s for s in seen), seen


async def test_a_task_created_waiting_for_one_that_completes_meanwhile_is_not_blocked_forever(
    lab: CircleLab, monkeypatch: pytest.MonkeyPatch
) -> None:
    circle = await lab.circle(review_required=False)
    ann = await lab.member(circle, "ann", "lead")
    blocker = await lab.task(circle, "blocker")
    await lab.flow.claim(blocker.id, as_member(ann))
    read_blocker = asyncio.Event()
    go_on = asyncio.Event()
    original = tasks_module._task_of

    async def slow_task_of(tx, circle_id, task_id, **how):  # type: ignore[no-untyped-def]
        found = await original(tx, circle_id, task_id, **how)
        read_blocker.set()
        await go_on.wait()
        return found

    monkeypatch.setattr(tasks_module, "_task_of", slow_task_of)
    creating = asyncio.create_task(lab.task(circle, "waiter", blocked_by=[blocker.id]))
    await asyncio.wait_for(read_blocker.wait(), 10)
    completing = asyncio.create_task(lab.flow.submit(blocker.id, as_member(ann), work()))
    await asyncio.sleep(0.2)
    go_on.set()
    waiter = await asyncio.wait_for(creating, 10)
    assert (await asyncio.wait_for(completing, 10)).status == "completed"
    waiter = await get_circle_task(lab.db, waiter.id)
    assert waiter.status != "blocked", "it waits for a completed task: blocked forever"


# --- reviews -----------------------------------------------------------------------------------


async def test_a_deactivated_lead_no_longer_decides_reviews(lab: CircleLab) -> None:
    circle = await lab.circle()
    ann = await lab.member(circle, "ann", python=1)
    lead = await lab.member(circle, "boss", "lead")
    task = await lab.task(circle, requirements={"python": 1})
    await lab.flow.claim(task.id, as_member(ann))
    await lab.flow.submit(task.id, as_member(ann), work())
    async with lab.db.transaction() as tx:
        await change_member(tx, circle.id, lead.id, MemberChange(active=False))
    with pytest.raises(GatheringError):
        await lab.flow.review(task.id, as_member(lead), APPROVE)


async def test_the_same_reviewer_twice_is_a_clear_conflict_not_a_db_error(lab: CircleLab) -> None:
    circle = await lab.circle(reviewers_per_task=2)
    ann = await lab.member(circle, "ann", python=1)
    await lab.member(circle, "r1", "reviewer")
    await lab.member(circle, "r2", "reviewer")
    task = await lab.task(circle, requirements={"python": 1})
    await lab.flow.claim(task.id, as_member(ann))
    await lab.flow.submit(task.id, as_member(ann), work())
    from gathering.circles import task_decisions

    asked = [d["member_id"] for d in await task_decisions(lab.db, task.id) if d["kind"] == "review"]
    assert len(asked) == 2
    await lab.flow.review(task.id, Actor(member_id=asked[0]), APPROVE)
    with pytest.raises(GatheringError):  # a typed refusal (409), not psycopg's UniqueViolation
        await lab.flow.review(task.id, Actor(member_id=asked[0]), APPROVE)


async def test_a_member_of_another_circle_cannot_review_here(lab: CircleLab) -> None:
    """A manager may name any member_id; one of another circle counts as 'a person' (final)
    and the other circle's member gets the credit in its metrics."""
    circle = await lab.circle()
    other = await lab.circle("other")
    ann = await lab.member(circle, "ann", python=1)
    stranger = await lab.member(other, "zed", "member")
    task = await lab.task(circle, requirements={"python": 1})
    await lab.flow.claim(task.id, as_member(ann))
    await lab.flow.submit(task.id, as_member(ann), work())
    with pytest.raises(GatheringError):
        await lab.flow.review(task.id, Actor(member_id=stranger.id), APPROVE)


# --- deadlocks through foreign-key locks ----------------------------------------------------------

CHANGES = ReviewIn(verdict="changes_requested", feedback="again")


async def _holding(lab: CircleLab, circle, member, title: str, path: str):  # type: ignore[no-untyped-def]
    """A task of `member`, back in progress after a review, that holds `path`."""
    task = await lab.task(circle, title)
    await lab.flow.claim(task.id, as_member(member))
    await lab.flow.submit(task.id, as_member(member), work(path))
    await lab.flow.review(task.id, Actor(user_id=lab.owner_id), CHANGES)
    await lab.flow.claim(task.id, as_member(member))
    return task


async def test_two_submits_each_wanting_the_others_file_are_two_clear_409s(lab: CircleLab) -> None:
    circle = await lab.circle()
    ann = await lab.member(circle, "ann", "lead")
    bob = await lab.member(circle, "bob", "lead")
    a = await _holding(lab, circle, ann, "a", "x.py")
    b = await _holding(lab, circle, bob, "b", "y.py")
    results = await asyncio.gather(
        lab.flow.submit(a.id, as_member(ann), work("y.py")),
        lab.flow.submit(b.id, as_member(bob), work("x.py")),
        return_exceptions=True,
    )
    kinds = [type(r).__name__ for r in results]
    assert kinds == ["FileLockedError", "FileLockedError"], [
        f"{type(r).__name__}: {r}" for r in results
    ]


async def test_create_with_blocked_by_racing_a_submit_with_files_does_not_deadlock(
    lab: CircleLab, monkeypatch: pytest.MonkeyPatch
) -> None:
    circle = await lab.circle()
    ann = await lab.member(circle, "ann", "lead")
    blocker = await lab.task(circle, "blocker")
    await lab.flow.claim(blocker.id, as_member(ann))
    original = tasks_module._lock_files

    async def slow_lock_files(step, task, paths):  # type: ignore[no-untyped-def]
        await asyncio.sleep(0.5)  # the step holds the task; a create comes meanwhile
        return await original(step, task, paths)

    monkeypatch.setattr(tasks_module, "_lock_files", slow_lock_files)
    submitting = asyncio.create_task(lab.flow.submit(blocker.id, as_member(ann), work("a.py")))
    await asyncio.sleep(0.1)
    creating = asyncio.create_task(lab.task(circle, "waiter", blocked_by=[blocker.id]))
    results = await asyncio.gather(submitting, creating, return_exceptions=True)
    assert not any(isinstance(r, BaseException) for r in results), [
        f"{type(r).__name__}: {r}" for r in results
    ]


async def test_an_offer_to_a_person_who_is_deactivated_goes_to_someone_else(lab: CircleLab) -> None:
    from gathering.circles import MemberIn, add_member

    circle = await lab.circle(offer_timeout_seconds=7 * 86_400)
    user = await UserStore(lab.db).create("p@example.com", "correct horse battery staple")
    async with lab.db.transaction() as tx:
        person = await add_member(tx, circle, MemberIn(user_id=user.id, competencies={"python": 5}))
    other = await lab.member(circle, "ann", python=3)
    task = await lab.task(circle, requirements={"python": 3})
    assert task.offered_to == person.id
    async with lab.db.transaction() as tx:
        await change_member(tx, circle.id, person.id, MemberChange(active=False))
    await lab.flow.member_left(circle.id, person.id)  # what the API does on active: false
    task = await get_circle_task(lab.db, task.id)
    assert task.offered_to == other.id, (
        f"still offered to the inactive member {task.offered_to} until {task.offer_deadline}"
    )


async def test_two_blockers_completing_at_once_free_their_shared_dependent(lab: CircleLab) -> None:
    """Held up (run 5 times)."""
    circle = await lab.circle(review_required=False)
    ann = await lab.member(circle, "ann", "lead")
    bob = await lab.member(circle, "bob", "lead")
    for _ in range(5):
        a = await lab.task(circle, "a")
        b = await lab.task(circle, "b")
        c = await lab.task(circle, "c", blocked_by=[a.id, b.id])
        await lab.flow.claim(a.id, as_member(ann))
        await lab.flow.claim(b.id, as_member(bob))
        await asyncio.gather(
            lab.flow.submit(a.id, as_member(ann), work()),
            lab.flow.submit(b.id, as_member(bob), work()),
        )
        c = await get_circle_task(lab.db, c.id)
        assert c.status in ("pending", "offered"), c.status
        await lab.flow.cancel(c.id, Actor(user_id=lab.owner_id))
