"""Circles on a real database and event bus: the lifecycle, members and the one competency
model, routing with its stored reasons, the task state machine (every illegal move refused
with the allowed ones), reviews never by the author, file locks and their conflicts,
dependencies without cycles, reviewers who disagree, metrics, and the events a subscriber
sees. Agents' own work runs in tests/test_circle_agents.py."""

from __future__ import annotations

import asyncio

import pytest
from circle_lab import CircleLab, as_member, circle_lab
from task_runtime import until

from gathering.circles import (
    Actor,
    MemberChange,
    ReviewIn,
    Submission,
    TaskFlow,
    change_member,
    get_circle_task,
    list_circle_tasks,
    list_members,
    set_circle_status,
    task_decisions,
    task_history,
    task_reviews,
)
from gathering.circles.routing import availability, match, quality
from gathering.circles.store import SQL
from gathering.errors import (
    ConflictError,
    FileLockedError,
    IllegalTransitionError,
    NotFoundError,
    PermissionDeniedError,
)
from gathering.events import Event

pytestmark = pytest.mark.integration
lab = circle_lab  # the fixture, by the name these tests use

WORK = Submission(text="done", summary="done")
APPROVE = ReviewIn(verdict="approved")
CHANGES = ReviewIn(verdict="changes_requested", feedback="name the edge cases")


async def _statuses(lab: CircleLab, task_id: int) -> list[str]:
    return [row["to_status"] for row in await task_history(lab.db, task_id)]


# --- events (the circle's subject) ------------------------------------------------------------


async def test_a_subscriber_gets_the_events_of_a_circle_with_their_data(lab: CircleLab) -> None:
    circle = await lab.circle()
    seen: list[Event] = []
    lab.bus.subscribe("circle.task.created", seen.append, subjects=circle.subject)
    task = await lab.task(circle, "draft the plan")
    await until("delivered", lambda: _true(seen))
    assert seen[0].data["task_id"] == task.id
    assert seen[0].data["title"] == "draft the plan"
    assert seen[0].subject == "circle:team"


async def _true(values: list[Event]) -> bool:
    return bool(values)


async def test_a_wildcard_subscriber_gets_every_kind_and_unsubscribing_stops_it(
    lab: CircleLab,
) -> None:
    circle = await lab.circle()
    await lab.member(circle, "ann", python=3)
    every: list[Event] = []
    subscription = lab.bus.subscribe("*", every.append)  # a plain function is a handler too
    task = await lab.task(circle)
    await until("offered", lambda: _has(every, "circle.task.offered"))
    assert {"circle.task.created", "circle.task.moved", "circle.task.offered"} <= {
        e.type for e in every
    }
    subscription.unsubscribe()
    count = len(every)
    await lab.flow.cancel(task.id, Actor(user_id=lab.owner_id))
    await until("the lab's own copy", lambda: _has(lab.events, "circle.task.moved", "cancelled"))
    assert len(every) == count


async def _has(events: list[Event], kind: str, status: str | None = None) -> bool:
    return any(e.type == kind and status in (None, e.data.get("status")) for e in events)


async def test_the_history_of_a_circles_events_replays_in_order(lab: CircleLab) -> None:
    circle = await lab.circle()
    ann = await lab.member(circle, "ann")
    task = await lab.task(circle)
    await lab.flow.claim(task.id, as_member(ann))
    replayed = await lab.bus.replay(0, subjects=circle.subject)
    moves = [e.data["status"] for e in replayed if e.type == "circle.task.moved"]
    assert moves == ["offered", "in_progress"]
    only = await lab.bus.replay(0, subjects=circle.subject, pattern="circle.task.offered")
    assert [e.data["member_id"] for e in only] == [ann.id]


# --- members and routing --------------------------------------------------------------------


async def test_a_member_joins_and_leaves_softly(lab: CircleLab) -> None:
    circle = await lab.circle()
    ann = await lab.member(circle, "ann", "lead", python=4)
    assert ann.active and ann.role == "lead" and ann.competencies == {"python": 4}
    assert (ann.completed, ann.failed, ann.load, ann.approval_rate) == (0, 0, 0, None)
    async with lab.db.transaction() as tx:
        await change_member(tx, circle.id, ann.id, MemberChange(active=False))
    [kept] = await list_members(lab.db, circle.id)
    assert kept.id == ann.id and not kept.active
    task = await lab.task(circle)
    assert task.status == "pending"  # an inactive member is offered nothing
    [decision] = await task_decisions(lab.db, task.id)
    assert decision["kind"] == "no_candidate"


async def test_an_agent_joins_once_and_only_the_owners(lab: CircleLab) -> None:
    circle = await lab.circle()
    await lab.member(circle, "ann")
    with pytest.raises(ConflictError, match="already"):
        await lab.member(circle, "ann")
    with pytest.raises(NotFoundError, match="no agent"):
        from gathering.circles import MemberIn, add_member

        async with lab.db.transaction() as tx:
            await add_member(tx, circle, MemberIn(agent="nobody"))


async def test_a_task_goes_to_the_member_who_fits_best_with_the_reason_kept(
    lab: CircleLab,
) -> None:
    circle = await lab.circle()
    await lab.member(circle, "novice", python=3)
    expert = await lab.member(circle, "expert", python=5)
    await lab.member(circle, "writer", prose=5)
    task = await lab.task(circle, requirements={"python": 3})
    assert (task.status, task.offered_to) == ("offered", expert.id)
    [decision] = await task_decisions(lab.db, task.id)
    assert decision["kind"] == "offer" and decision["member_id"] == expert.id
    assert "python 5 (needs 3)" in decision["reason"]
    assert [s["member_id"] for s in decision["scores"]] == [expert.id, expert.id - 1]


async def test_a_task_no_member_can_do_waits_pending_and_says_why_once(lab: CircleLab) -> None:
    circle = await lab.circle()
    await lab.member(circle, "writer", prose=5)
    task = await lab.task(circle, requirements={"python": 2})
    assert task.status == "pending"
    await lab.flow.route_pending(circle.id)
    decisions = await task_decisions(lab.db, task.id)
    assert [d["kind"] for d in decisions] == ["no_candidate"]
    assert "competencies" in decisions[0]["reason"]
    coder = await lab.member(circle, "coder", python=2)
    await lab.flow.route_pending(circle.id)  # the API does this when members change
    assert (await get_circle_task(lab.db, task.id)).offered_to == coder.id


async def test_a_member_who_refuses_is_passed_over_for_that_attempt(lab: CircleLab) -> None:
    circle = await lab.circle()
    first = await lab.member(circle, "first", python=5)
    second = await lab.member(circle, "second", python=3)
    task = await lab.task(circle, requirements={"python": 3})
    assert task.offered_to == first.id
    task = await lab.flow.refuse(task.id, as_member(first), "busy")
    assert task.offered_to == second.id
    task = await lab.flow.refuse(task.id, as_member(second))
    assert (task.status, task.offered_to) == ("pending", None)
    kinds = [d["kind"] for d in await task_decisions(lab.db, task.id)]
    assert kinds == ["offer", "refused", "offer", "refused", "no_candidate"]
    with pytest.raises(ConflictError, match="not offered"):
        await lab.flow.refuse(task.id, as_member(first))


async def test_an_offer_nobody_answers_in_time_goes_to_the_next_member(lab: CircleLab) -> None:
    circle = await lab.circle(offer_timeout_seconds=600)
    first = await lab.member(circle, "first", python=5)
    second = await lab.member(circle, "second", python=3)
    task = await lab.task(circle, requirements={"python": 1})
    assert await lab.flow.expire_offers() == 0  # not yet
    await lab.db.execute(
        "UPDATE circle.tasks SET offer_deadline = now() - interval '1 second' WHERE id = $1",
        task.id,
    )
    assert await lab.flow.expire_offers() == 1
    task = await get_circle_task(lab.db, task.id)
    assert task.offered_to == second.id
    expired = [d for d in await task_decisions(lab.db, task.id) if d["kind"] == "expired"]
    assert [d["member_id"] for d in expired] == [first.id]


async def test_a_member_at_their_limit_gets_no_more_offers(lab: CircleLab) -> None:
    circle = await lab.circle(max_parallel_tasks=1)
    ann = await lab.member(circle, "ann")
    bob = await lab.member(circle, "bob")
    one = await lab.task(circle, "one")
    two = await lab.task(circle, "two")
    three = await lab.task(circle, "three")
    assert (one.offered_to, two.offered_to, three.status) == (ann.id, bob.id, "pending")
    await lab.flow.claim(one.id, as_member(ann))
    await lab.flow.cancel(two.id, Actor(user_id=lab.owner_id))  # bob has room again
    assert (await get_circle_task(lab.db, three.id)).offered_to == bob.id


# --- the state machine ------------------------------------------------------------------------


async def test_a_circle_moves_created_active_archived_and_never_back(lab: CircleLab) -> None:
    circle = await lab.circle(active=False)
    assert circle.status == "created"
    await lab.member(circle, "ann")
    task = await lab.task(circle, "wait for activation")
    assert (task.status, task.title) == ("pending", "wait for activation")
    async with lab.db.transaction() as tx:
        circle = await set_circle_status(tx, circle.id, "active")
    assert await lab.flow.route_pending(circle.id) == 1
    assert (await get_circle_task(lab.db, task.id)).status == "offered"
    async with lab.db.transaction() as tx:
        circle = await set_circle_status(tx, circle.id, "archived")
    assert await lab.flow.cancel_open(circle.id, "archived") == 1
    with pytest.raises(ConflictError) as refused:
        async with lab.db.transaction() as tx:
            await set_circle_status(tx, circle.id, "active")
    assert refused.value.details["allowed"] == []
    with pytest.raises(ConflictError, match="archived"):
        await lab.task(circle)


async def test_claim_submit_without_review_completes_with_the_result(lab: CircleLab) -> None:
    circle = await lab.circle(review_required=False)
    ann = await lab.member(circle, "ann")
    task = await lab.task(circle)
    task = await lab.flow.claim(task.id, as_member(ann))
    assert (task.status, task.assignee_id, task.offered_to) == ("in_progress", ann.id, None)
    task = await lab.flow.submit(task.id, as_member(ann), WORK)
    assert task.status == "completed" and task.result == WORK.model_dump()
    assert await _statuses(lab, task.id) == ["pending", "offered", "in_progress", "completed"]
    [member] = await list_members(lab.db, circle.id)
    assert (member.completed, member.review_rounds, member.load) == (1, 1, 0)


async def test_review_per_task_type_overrides_the_circle(lab: CircleLab) -> None:
    circle = await lab.circle(review_required=True, review_required_for={"chore": False})
    ann = await lab.member(circle, "ann")
    task = await lab.task(circle, task_type="chore")
    await lab.flow.claim(task.id, as_member(ann))
    assert (await lab.flow.submit(task.id, as_member(ann), WORK)).status == "completed"


async def test_a_reviewed_task_goes_round_once_then_completes(lab: CircleLab) -> None:
    circle = await lab.circle()
    ann = await lab.member(circle, "ann", python=3)
    rex = await lab.member(circle, "rex", "reviewer", general=4)
    task = await lab.task(circle)
    assert task.offered_to == ann.id  # reviewers only review
    await lab.flow.claim(task.id, as_member(ann))
    task = await lab.flow.submit(task.id, as_member(ann), WORK)
    assert task.status == "in_review"
    asked = [d for d in await task_decisions(lab.db, task.id) if d["kind"] == "review"]
    assert [d["member_id"] for d in asked] == [rex.id]
    task = await lab.flow.review(task.id, as_member(rex), CHANGES)
    assert (task.status, task.iteration, task.feedback) == (
        "changes_requested",
        2,
        "name the edge cases",
    )
    task = await lab.flow.claim(task.id, as_member(ann))
    assert (task.status, task.assignee_id) == ("in_progress", ann.id)
    await lab.flow.submit(task.id, as_member(ann), Submission(text="done, edge cases named"))
    task = await lab.flow.review(task.id, as_member(rex), APPROVE)
    assert task.status == "completed"
    assert await _statuses(lab, task.id) == [
        "pending",
        "offered",
        "in_progress",
        "in_review",
        "changes_requested",
        "in_progress",
        "in_review",
        "completed",
    ]
    verdicts = [(r["iteration"], r["verdict"]) for r in await task_reviews(lab.db, task.id)]
    assert verdicts == [(1, "changes_requested"), (2, "approved")]
    members = {m.id: m for m in await list_members(lab.db, circle.id)}
    assert members[ann.id].approval_rate == 0.5 and members[ann.id].mean_review_rounds == 2
    assert members[rex.id].reviews_given == 2


async def test_a_person_rejects_and_the_task_fails_with_its_dependents(lab: CircleLab) -> None:
    circle = await lab.circle()
    ann = await lab.member(circle, "ann")
    task = await lab.task(circle)
    later = await lab.task(circle, "after it", blocked_by=[task.id])
    assert later.status == "blocked"
    await lab.flow.claim(task.id, as_member(ann))
    task = await lab.flow.submit(task.id, as_member(ann), WORK)
    escalated = [d for d in await task_decisions(lab.db, task.id) if d["kind"] == "escalation"]
    assert escalated[0]["member_id"] is None  # no one else may review: a person decides
    rejected = ReviewIn(verdict="rejected", feedback="wrong approach")
    task = await lab.flow.review(task.id, Actor(user_id=lab.owner_id), rejected)
    assert (task.status, task.error) == ("failed", "wrong approach")
    later = await get_circle_task(lab.db, later.id)
    assert later.status == "failed" and f"task {task.id}" in (later.error or "")
    [member] = await list_members(lab.db, circle.id)
    assert member.failed == 1


async def test_every_illegal_move_is_refused_with_the_allowed_ones(lab: CircleLab) -> None:
    circle = await lab.circle(active=False)
    ann = await lab.member(circle, "ann", "lead")
    task = await lab.task(circle)
    with pytest.raises(IllegalTransitionError) as refused:
        await lab.flow.submit(task.id, as_member(ann), WORK)
    assert refused.value.details["allowed"] == ["offered", "in_progress", "blocked", "cancelled"]
    with pytest.raises(IllegalTransitionError):
        await lab.flow.review(task.id, Actor(user_id=lab.owner_id), APPROVE)
    await lab.flow.cancel(task.id, Actor(user_id=lab.owner_id))
    with pytest.raises(IllegalTransitionError) as ended:
        await lab.flow.cancel(task.id, Actor(user_id=lab.owner_id))
    assert ended.value.details == {"status": "cancelled", "wanted": "cancelled", "allowed": []}
    with pytest.raises(ConflictError, match="activate"):
        await lab.flow.offer(task.id, Actor(user_id=lab.owner_id))


# --- invariants (the reference's section 17, item 14) ----------------------------------------


async def test_concurrent_claims_give_a_task_to_exactly_one_member(lab: CircleLab) -> None:
    circle = await lab.circle()
    ann = await lab.member(circle, "ann")
    leads = [await lab.member(circle, f"lead{n}", "lead") for n in range(3)]
    for _ in range(5):
        task = await lab.task(circle)
        claimers = [as_member(m) for m in (ann, *leads)]
        results = await asyncio.gather(
            *(lab.flow.claim(task.id, actor) for actor in claimers), return_exceptions=True
        )
        won = [r for r in results if not isinstance(r, BaseException)]
        assert len(won) == 1, results
        assert all(isinstance(r, ConflictError) for r in results if r not in won)
        assert (await get_circle_task(lab.db, task.id)).assignee_id == won[0].assignee_id
        moves = await _statuses(lab, task.id)
        assert moves.count("in_progress") == 1
        await lab.flow.cancel(task.id, Actor(user_id=lab.owner_id))


async def test_only_the_offered_member_or_a_lead_claims_and_competencies_count(
    lab: CircleLab,
) -> None:
    circle = await lab.circle()
    ann = await lab.member(circle, "ann", python=4)
    bob = await lab.member(circle, "bob", python=4)
    lead = await lab.member(circle, "lead", "lead")
    task = await lab.task(circle, requirements={"python": 3})
    other = bob if task.offered_to == ann.id else ann
    with pytest.raises(PermissionDeniedError, match="not offered"):
        await lab.flow.claim(task.id, as_member(other))
    with pytest.raises(ConflictError, match="lacks what task") as lacking:
        await lab.flow.claim(task.id, as_member(lead))
    assert lacking.value.details["missing"] == {"python": 3}
    with pytest.raises(PermissionDeniedError):
        await lab.flow.claim(task.id, Actor(member_id=10**9))


async def test_only_the_assignee_submits_and_the_author_never_reviews(lab: CircleLab) -> None:
    circle = await lab.circle()
    ann = await lab.member(circle, "ann")
    lead = await lab.member(circle, "lead", "lead")
    rex = await lab.member(circle, "rex", "reviewer")
    task = await lab.task(circle)
    author = ann if task.offered_to == ann.id else lead
    await lab.flow.claim(task.id, as_member(author))
    with pytest.raises(PermissionDeniedError, match="assignee"):
        await lab.flow.submit(task.id, as_member(rex), WORK)
    await lab.flow.submit(task.id, as_member(author), WORK)
    with pytest.raises(PermissionDeniedError, match="author"):
        await lab.flow.review(task.id, as_member(author), APPROVE)
    other = lead if author is ann else ann
    if other.role != "lead":  # a member not asked to review may not
        with pytest.raises(PermissionDeniedError, match="not asked"):
            await lab.flow.review(task.id, as_member(other), APPROVE)
    assert (await lab.flow.review(task.id, as_member(rex), APPROVE)).status == "completed"
    with pytest.raises(IllegalTransitionError):
        await lab.flow.review(task.id, as_member(rex), APPROVE)


async def test_two_reviewers_who_disagree_go_to_the_lead(lab: CircleLab) -> None:
    circle = await lab.circle(reviewers_per_task=2)
    ann = await lab.member(circle, "ann", python=3)
    r1 = await lab.member(circle, "r1", "reviewer")
    r2 = await lab.member(circle, "r2", "reviewer")
    lead = await lab.member(circle, "lead", "lead")
    task = await lab.task(circle, requirements={"python": 3})
    await lab.flow.claim(task.id, as_member(ann))
    await lab.flow.submit(task.id, as_member(ann), WORK)
    task = await lab.flow.review(task.id, as_member(r1), APPROVE)
    assert task.status == "in_review"  # waits for the second verdict
    with pytest.raises(ConflictError):  # one verdict per reviewer per attempt
        await lab.flow.review(task.id, as_member(r1), APPROVE)
    task = await lab.flow.review(task.id, as_member(r2), CHANGES)
    assert task.status == "in_review"
    [conflict] = await lab.db.fetch_all(SQL["conflicts"], circle.id, True, 10)
    assert conflict["kind"] == "disagreement"
    assert conflict["detail"]["verdicts"] == {
        str(r1.id): "approved",
        str(r2.id): "changes_requested",
    }
    [escalation] = [d for d in await task_decisions(lab.db, task.id) if d["kind"] == "escalation"]
    assert escalation["member_id"] == lead.id and "disagree" in escalation["reason"]
    task = await lab.flow.review(task.id, as_member(lead), APPROVE)
    assert task.status == "completed"
    assert await lab.db.fetch_all(SQL["conflicts"], circle.id, True, 10) == []


async def test_reviewers_who_agree_decide_together(lab: CircleLab) -> None:
    circle = await lab.circle(reviewers_per_task=2)
    ann = await lab.member(circle, "ann")
    r1 = await lab.member(circle, "r1", "reviewer")
    r2 = await lab.member(circle, "r2", "reviewer")
    task = await lab.task(circle)
    await lab.flow.claim(task.id, as_member(ann))
    await lab.flow.submit(task.id, as_member(ann), WORK)
    await lab.flow.review(task.id, as_member(r1), CHANGES)
    task = await lab.flow.review(
        task.id, as_member(r2), ReviewIn(verdict="changes_requested", feedback="add tests")
    )
    assert task.status == "changes_requested"
    assert task.feedback == "name the edge cases\n\nadd tests"


# --- conflicts ----------------------------------------------------------------------------------


async def test_two_tasks_on_one_file_clash_until_the_first_ends(lab: CircleLab) -> None:
    circle = await lab.circle(review_required=False)
    ann = await lab.member(circle, "ann")
    bob = await lab.member(circle, "bob")
    first = await lab.task(circle, "first")
    second = await lab.task(circle, "second")
    await lab.flow.claim(first.id, as_member(ann))
    await lab.flow.claim(second.id, as_member(bob))
    flow_with_review = lab.flow
    async with lab.db.transaction() as tx:  # the first task is reviewed: it holds its files
        await tx.execute(
            "UPDATE circle.circles SET settings = settings || '{\"review_required\": true}'"
            " WHERE id = $1",
            circle.id,
        )
    lead = await lab.member(circle, "lead", "lead")
    await flow_with_review.submit(
        first.id, as_member(ann), Submission(text="x", files=["src/app.py", "README.md"])
    )
    with pytest.raises(FileLockedError) as clash:
        await lab.flow.submit(second.id, as_member(bob), Submission(text="y", files=["src/app.py"]))
    detail = clash.value.details
    assert (detail["holder_task_id"], detail["holder_member_id"]) == (first.id, ann.id)
    assert detail["member_id"] == bob.id and detail["paths"] == ["src/app.py"]
    [conflict] = await lab.db.fetch_all(SQL["conflicts"], circle.id, True, 10)
    assert (conflict["kind"], conflict["task_id"], conflict["other_task_id"]) == (
        "file",
        second.id,
        first.id,
    )
    assert (await get_circle_task(lab.db, second.id)).status == "in_progress"
    await lab.flow.review(first.id, as_member(lead), APPROVE)  # first ends: files are free
    assert await lab.db.fetch_all(SQL["conflicts"], circle.id, True, 10) == []
    task = await lab.flow.submit(
        second.id, as_member(bob), Submission(text="y", files=["src/app.py"])
    )
    assert task.status == "in_review"


async def test_a_dependency_cycle_is_refused_and_kept_as_a_conflict(lab: CircleLab) -> None:
    circle = await lab.circle(active=False)
    a = await lab.task(circle, "a")
    b = await lab.task(circle, "b", blocked_by=[a.id])
    c = await lab.task(circle, "c", blocked_by=[b.id])
    with pytest.raises(ConflictError, match="cycle") as refused:
        await lab.flow.add_dependency(a.id, c.id, Actor(user_id=lab.owner_id))
    assert refused.value.details["cycle"] == [a.id, c.id, b.id, a.id]  # each waits for the next
    [conflict] = await lab.db.fetch_all(SQL["conflicts"], circle.id, False, 10)
    assert (conflict["kind"], conflict["status"]) == ("cycle", "resolved")
    with pytest.raises(ConflictError, match="cycle"):
        await lab.flow.add_dependency(a.id, a.id, Actor(user_id=lab.owner_id))
    assert (await get_circle_task(lab.db, a.id)).status == "pending"


async def test_a_blocked_task_is_offered_once_what_it_waits_for_completes(lab: CircleLab) -> None:
    circle = await lab.circle(review_required=False)
    ann = await lab.member(circle, "ann")
    first = await lab.task(circle, "first")
    second = await lab.task(circle, "second")
    then = await lab.task(circle, "then", blocked_by=[first.id, second.id])
    assert then.status == "blocked"
    for task in (first, second):
        await lab.flow.claim(task.id, as_member(ann))
        await lab.flow.submit(task.id, as_member(ann), WORK)
        if task is first:
            assert (await get_circle_task(lab.db, then.id)).status == "blocked"
    then = await get_circle_task(lab.db, then.id)
    assert (then.status, then.offered_to) == ("offered", ann.id)
    with pytest.raises(NotFoundError):
        await lab.task(circle, "elsewhere", blocked_by=[10**12])


# --- inputs and models --------------------------------------------------------------------------


async def test_a_review_type_must_be_the_circles(lab: CircleLab) -> None:
    circle = await lab.circle(review_types=["code", "docs"])
    with pytest.raises(ConflictError, match="code, docs"):
        await lab.task(circle, review_type="legal")
    assert (await lab.task(circle)).review_type == "code"


async def test_circle_status_and_workload(lab: CircleLab) -> None:
    circle = await lab.circle()
    ann = await lab.member(circle, "ann")
    bob = await lab.member(circle, "bob")
    await lab.task(circle, "one")
    await lab.task(circle, "two")
    members = await list_members(lab.db, circle.id)
    assert {(m.id, m.name, m.load) for m in members} == {(ann.id, "ann", 1), (bob.id, "bob", 1)}
    assert len(await list_circle_tasks(lab.db, circle.id)) == 2
    assert [t.title for t in await list_circle_tasks(lab.db, circle.id, status="offered")] == [
        "two",
        "one",
    ]


def test_availability_match_and_quality_scores() -> None:
    assert [availability(load, 5) for load in (0, 2, 5, 7)] == [1.0, 0.6, 0.0, 0.0]
    assert match({}, {}) == 1.0
    assert match({"python": 3}, {"python": 2}) is None
    assert match({"python": 3}, {"python": 3}) == pytest.approx(1 / 3)
    assert match({"python": 3}, {"python": 5}) == 1.0
    assert quality(0, 0) == 0.5 and quality(4, 4) == pytest.approx(5 / 6)


async def test_a_changed_flow_reads_its_settings_each_step(lab: CircleLab) -> None:
    """A second TaskFlow on another connection sees the same stored state."""
    circle = await lab.circle(review_required=False)
    ann = await lab.member(circle, "ann")
    task = await lab.task(circle)
    other = TaskFlow(lab.db, None)
    await other.claim(task.id, as_member(ann))
    assert (await lab.flow.submit(task.id, as_member(ann), WORK)).status == "completed"


async def test_changes_asked_after_the_last_attempt_fail_the_task(lab: CircleLab) -> None:
    circle = await lab.circle(max_attempts=2)
    ann = await lab.member(circle, "ann")
    rex = await lab.member(circle, "rex", "reviewer")
    task = await lab.task(circle)
    for attempt in (1, 2):
        await lab.flow.claim(task.id, as_member(ann))
        await lab.flow.submit(task.id, as_member(ann), WORK)
        task = await lab.flow.review(task.id, as_member(rex), CHANGES)
        assert task.iteration == min(attempt + 1, 2)
    assert task.status == "failed"
    assert (task.error or "").startswith("changes were still asked after 2 attempts")
    [member] = [m for m in await list_members(lab.db, circle.id) if m.id == ann.id]
    assert (member.failed, member.verdicts, member.approvals) == (1, 2, 0)


async def test_two_dependencies_that_close_a_cycle_at_once_cannot_both_land(
    lab: CircleLab,
) -> None:
    circle = await lab.circle(active=False)
    for _ in range(5):
        a = await lab.task(circle, "a")
        b = await lab.task(circle, "b")
        owner = Actor(user_id=lab.owner_id)
        results = await asyncio.gather(
            lab.flow.add_dependency(a.id, b.id, owner),
            lab.flow.add_dependency(b.id, a.id, owner),
            return_exceptions=True,
        )
        refused = [r for r in results if isinstance(r, ConflictError)]
        assert len(refused) == 1 and "cycle" in str(refused[0]), results
        edges = await lab.db.fetch_all(
            "SELECT task_id, blocked_by FROM circle.task_dependencies"
            " WHERE task_id = ANY($1::bigint[])",
            [a.id, b.id],
        )
        assert len(edges) == 1


def test_a_submissions_files_are_paths_in_one_spelling() -> None:
    found = Submission(text="x", files=["./src//app.py", "docs/../README.md", "a\\b.txt"])
    assert found.files == ["src/app.py", "README.md", "a/b.txt"]
    with pytest.raises(ValueError):
        Submission(text="a\x00b")


async def test_the_same_file_spelt_two_ways_is_one_lock(lab: CircleLab) -> None:
    circle = await lab.circle()
    ann = await lab.member(circle, "ann")
    bob = await lab.member(circle, "bob")
    one, two = await lab.task(circle, "one"), await lab.task(circle, "two")
    await lab.flow.claim(one.id, as_member(ann if one.offered_to == ann.id else bob))
    await lab.flow.claim(two.id, as_member(bob if one.offered_to == ann.id else ann))
    first = ann if one.offered_to == ann.id else bob
    second = bob if first is ann else ann
    await lab.flow.submit(one.id, as_member(first), Submission(text="x", files=["src/app.py"]))
    with pytest.raises(FileLockedError):
        await lab.flow.submit(
            two.id, as_member(second), Submission(text="y", files=["./src/../src//app.py"])
        )
