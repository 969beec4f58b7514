"""Agents of a circle act, through jobs on a real worker, with the model faked at the HTTP
wire (the LLM stub, Ollama's format): the offered agent claims and works the task, an agent
reviewer asks for changes with feedback that reaches the author's next attempt, then
approves; an answer that is no verdict goes to the lead; a turn that fails fails the
attempt; a job for an attempt that is over does nothing; tools work in the circle's
workspace."""

from __future__ import annotations

import asyncio

import pytest
from circle_lab import CircleLab, circle_lab
from task_runtime import call

from gathering.agents import PostgresAgentStore
from gathering.circles import (
    delete_circle,
    get_member,
    list_members,
    task_decisions,
    task_history,
    task_reviews,
)
from gathering.circles.work import CircleWorker, parse_verdict
from gathering.testing.wire_requests import last_user_text
from gathering.tools.agent_tools import agent_workspace, change_agent_tool
from gathering.tools.registry import loaded_registry

pytestmark = pytest.mark.integration
lab = circle_lab  # the fixture, by the name these tests use

CHANGES = '{"verdict": "changes_requested", "feedback": "cover the empty input"}'
APPROVED = '```json\n{"verdict": "approved", "feedback": "good"}\n```'


def _prompts(lab: CircleLab) -> list[str]:
    return [
        last_user_text((request.json or {}).get("messages") or [])
        for request in lab.stub.requests
        if request.path.endswith("/api/chat")
    ]


async def test_agents_work_review_and_rework_until_approved(lab: CircleLab) -> None:
    await lab.start_worker()
    circle = await lab.circle()
    author = await lab.member(circle, "coder", python=4)
    reviewer = await lab.member(circle, "critic", "reviewer", general=4)
    lab.stub.add_reply("draft one", CHANGES, "draft two, empty input covered", APPROVED)
    task = await lab.task(circle, "parse the file", description="CSV in, rows out")
    task = await lab.wait(task.id)
    assert task.status == "completed", task
    assert task.result is not None and task.result["text"] == "draft two, empty input covered"
    statuses = [row["to_status"] for row in await task_history(lab.db, task.id)]
    assert statuses == [
        "pending",
        "offered",
        "in_progress",
        "in_review",
        "changes_requested",
        "in_progress",
        "in_review",
        "completed",
    ]
    movers = [row["member_id"] for row in await task_history(lab.db, task.id)]
    assert movers[2:5] == [author.id, author.id, reviewer.id]
    prompts = _prompts(lab)
    assert len(prompts) == 4
    assert "parse the file" in prompts[0] and "CSV in, rows out" in prompts[0]
    assert "draft one" in prompts[1] and '"verdict"' in prompts[1]
    assert "cover the empty input" in prompts[2] and "draft one" in prompts[2]
    assert "draft two" in prompts[3]
    reviews = [
        (r["iteration"], r["reviewer_id"], r["verdict"])
        for r in await task_reviews(lab.db, task.id)
    ]
    assert reviews == [(1, reviewer.id, "changes_requested"), (2, reviewer.id, "approved")]
    members = {m.id: m for m in await list_members(lab.db, circle.id)}
    assert (members[author.id].completed, members[author.id].approval_rate) == (1, 0.5)
    assert members[author.id].tokens > 0 and members[author.id].work_seconds > 0
    assert members[reviewer.id].reviews_given == 2
    kinds = lab.kinds(task.id)
    for kind in ("circle.task.offered", "circle.review.requested", "circle.review.submitted"):
        assert kind in kinds


async def test_an_answer_that_is_no_verdict_goes_to_the_lead(lab: CircleLab) -> None:
    await lab.start_worker()
    circle = await lab.circle()
    await lab.member(circle, "coder", python=4)
    critic = await lab.member(circle, "critic", "reviewer")
    lead = await lab.member(circle, "boss", "lead", python=1)
    lab.stub.add_reply("the work", "looks fine to me", '{"verdict": "approve"}')
    task = await lab.task(circle, requirements={"python": 3})
    task = await lab.wait(task.id)
    assert task.status == "completed", task
    [escalation] = [d for d in await task_decisions(lab.db, task.id) if d["kind"] == "escalation"]
    assert escalation["member_id"] == lead.id
    assert f"member {critic.id}'s answer was not a verdict" in escalation["reason"]
    [review] = await task_reviews(lab.db, task.id)
    assert (review["reviewer_id"], review["verdict"]) == (lead.id, "approved")


async def test_a_turn_that_fails_fails_the_attempt(lab: CircleLab) -> None:
    await lab.start_worker()
    circle = await lab.circle()
    await lab.member(circle, "coder")
    lab.stub.add_json({"error": "unauthorized"}, status=401)
    task = await lab.wait((await lab.task(circle)).id)
    assert task.status == "failed"
    assert (task.error or "").startswith("the agent's turn failed")
    [member] = await list_members(lab.db, circle.id)
    assert member.failed == 1


async def test_a_job_of_an_attempt_that_is_over_does_nothing(lab: CircleLab) -> None:
    circle = await lab.circle()
    coder = await lab.member(circle, "coder")
    task = await lab.task(circle)  # offered; no worker runs the job
    worker = CircleWorker(lab.db, lab.bus)
    await worker.work(task.id, iteration=2, member_id=coder.id)  # not this attempt
    await worker.work(task.id, iteration=1, member_id=coder.id + 1)  # not this member
    await worker.review(task.id, iteration=1, member_id=coder.id)  # not in review
    assert lab.stub.requests == []
    lab.stub.add_reply("the work")
    await worker.work(task.id, iteration=1, member_id=coder.id)
    assert len(lab.stub.requests) == 1
    await worker.work(task.id, iteration=1, member_id=coder.id)  # in review now: nothing
    assert len(lab.stub.requests) == 1
    assert (await get_member(lab.db, circle.id, coder.id)).load == 1


def test_a_verdict_is_read_from_the_reply_or_not_at_all() -> None:
    assert parse_verdict(APPROVED) is not None
    found = parse_verdict('{"verdict": "Request_Changes", "feedback": "more"}')
    assert found is not None and found.verdict == "changes_requested"
    for reply in (
        "approved",
        "[]",
        '{"verdict": 1}',
        '{"verdict": "maybe"}',
        '{"verdict": "approved", "feedback": 3}',
        '{"verdict": "changes_requested", "feedback": " "}',
    ):
        assert parse_verdict(reply) is None, reply


async def test_an_agent_works_in_the_circles_workspace(lab: CircleLab) -> None:
    await lab.start_worker()
    circle = await lab.circle(review_required=False)
    coder = await lab.member(circle, "coder")
    registry = await loaded_registry()
    write = registry.get("write_file")
    assert write is not None
    await change_agent_tool(
        lab.db, lab.agents["coder"], write, {"enabled": True, "policy": "allow"}
    )
    lab.stub.add_reply(call("write_file", path="notes.md", content="the plan"), "wrote the notes")
    task = await lab.wait((await lab.task(circle)).id)
    assert task.status == "completed", task
    notes = circle.workspace / "notes.md"
    assert await asyncio.to_thread(notes.read_text) == "the plan"
    record = await PostgresAgentStore(lab.db).load_agent(lab.agents["coder"])
    own = agent_workspace(record.id or 0, record.created_at) / "notes.md"
    assert not await asyncio.to_thread(own.exists)
    assert (await get_member(lab.db, circle.id, coder.id)).completed == 1
    await delete_circle(lab.db, circle.id)  # its workspace goes with it
    assert not await asyncio.to_thread(circle.workspace.exists)


async def test_work_a_budget_refuses_waits_in_hand_and_runs_once_it_is_raised(
    lab: CircleLab,
) -> None:
    from gathering.circles import get_circle_task
    from gathering.usage import Attribution, BudgetSpec, LedgerEntry, record, set_budget

    circle = await lab.circle(review_required=False)
    coder = await lab.member(circle, "coder")
    tight = BudgetSpec("circle", circle.id, "day", limit_tokens=3000)
    await set_budget(lab.db, tight, actor_id=None)
    spent = LedgerEntry("model", Attribution(circle_id=circle.id), "ollama", "m", 2900, 0)
    await record(lab.db, spent)  # 100 tokens of room left today: the call would fit in 3000
    task = await lab.task(circle)  # offered; no worker runs its job: this test does
    worker = CircleWorker(lab.db, lab.bus)

    async def queued() -> dict:
        return await lab.db.fetch_one(
            "SELECT args, scheduled_at, lock FROM procrastinate_jobs"
            " WHERE task_name = 'circles:work' AND status = 'todo' AND args ? 'budget_waits'"
        )

    await worker.work(task.id, iteration=1, member_id=coder.id)
    waiting = await get_circle_task(lab.db, task.id)
    assert (waiting.status, waiting.assignee_id) == ("in_progress", coder.id)  # not failed
    assert lab.stub.requests == []  # refused before any call
    for _ in range(200):  # the bus delivers after the commit
        if "circle.task.waiting" in lab.kinds(task.id):
            break
        await asyncio.sleep(0.05)
    [waited] = [e for e in lab.events if e.type == "circle.task.waiting"]
    assert waited.data["error"]["code"] == "budget_exceeded" and waited.data["retry_at"]
    job = await queued()
    assert job["args"]["budget_waits"] == 1 and 100 < job["args"]["estimate"][1] < 3000
    assert job["scheduled_at"] is not None  # at the budget's reset, or in a few minutes
    assert job["lock"] is None  # the agent's other work is not held up meanwhile

    # A second delivery of the first job, and a look while the budget is as it was: no
    # turn, no second waiting job, no new event.
    again = {k: job["args"][k] for k in ("budget_waits", "estimate")}
    await worker.work(task.id, 1, coder.id)
    await worker.work(task.id, 1, coder.id, **again)
    assert lab.stub.requests == [] and (await queued())["args"] == job["args"]
    count = await lab.db.fetch_val(
        "SELECT count(*) FROM procrastinate_jobs WHERE args ? 'budget_waits'"
    )
    assert count == 1
    await asyncio.sleep(0.2)
    assert [e.type for e in lab.events].count("circle.task.waiting") == 1
    assert (await get_circle_task(lab.db, task.id)).status == "in_progress"

    raised = BudgetSpec("circle", circle.id, "day", limit_tokens=10**6)
    await set_budget(lab.db, raised, actor_id=None)
    lab.stub.add_reply("the work, done")
    await worker.work(task.id, 1, coder.id, **again)
    done = await get_circle_task(lab.db, task.id)
    assert done.status == "completed", done
    assert done.result is not None and done.result["text"] == "the work, done"
    rows = await lab.db.fetch_all(
        "SELECT circle_id, outcome FROM usage.ledger WHERE kind = 'model' AND model <> 'm'"
    )
    assert [(r["circle_id"], r["outcome"]) for r in rows] == [(circle.id, "ok")]


async def test_work_whose_call_no_reset_can_fit_fails_at_once(lab: CircleLab) -> None:
    from gathering.usage import BudgetSpec, set_budget

    circle = await lab.circle(review_required=False)
    coder = await lab.member(circle, "coder")
    await set_budget(
        lab.db, BudgetSpec("circle", circle.id, "total", limit_tokens=10), actor_id=None
    )
    task = await lab.task(circle)
    await CircleWorker(lab.db, lab.bus).work(task.id, iteration=1, member_id=coder.id)
    failed = await lab.wait(task.id)
    assert failed.status == "failed" and "budget" in (failed.error or ""), failed
