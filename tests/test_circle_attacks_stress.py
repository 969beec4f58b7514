"""Hostile review: many coroutines take random steps on a few tasks at once (bounded: 400
steps, 24 coroutines); afterwards the stored state must be consistent, and no step may fail
with anything but a typed refusal."""

from __future__ import annotations

import asyncio
import itertools
import random
from collections import Counter

import pytest
from circle_lab import CircleLab, circle_lab

from gathering.circles import Actor, ReviewIn, Submission, list_members
from gathering.errors import DatabaseBusyError, GatheringError

pytestmark = pytest.mark.integration
lab = circle_lab


@pytest.mark.parametrize("seed", [1, 2, 3, 4])
async def test_random_concurrent_steps_keep_the_state_consistent(lab: CircleLab, seed: int) -> None:
    rng = random.Random(seed)
    circle = await lab.circle(max_parallel_tasks=2, reviewers_per_task=1)
    members = [await lab.member(circle, f"m{i}", "lead") for i in range(4)]
    members.append(await lab.member(circle, "rev", "reviewer"))
    owner = Actor(user_id=lab.owner_id)
    tasks = [await lab.task(circle, f"t{i}") for i in range(16)]
    ids = [t.id for t in tasks]
    paths = ["a.py", "b.py", "c.py"]
    outcomes: Counter[str] = Counter()
    untyped: list[str] = []
    busy: list[str] = []

    async def step() -> None:
        tid = rng.choice(ids)
        m = Actor(member_id=rng.choice(members).id)
        kind = rng.choice(
            [
                "claim",
                "claim",
                "refuse",
                "submit",
                "submit",
                "review",
                "approve",
                "changes",
                "cancel",
                "dep",
                "expire",
                "offer",
            ]
        )
        try:
            if kind == "claim":
                await lab.flow.claim(tid, m)
            elif kind == "refuse":
                await lab.flow.refuse(tid, m)
            elif kind == "submit":
                files = rng.sample(paths, rng.randint(0, 2))
                await lab.flow.submit(tid, m, Submission(text="w", files=files))
            elif kind == "review":
                await lab.flow.review(tid, m, ReviewIn(verdict="approved"))
            elif kind == "approve":
                await lab.flow.review(tid, owner, ReviewIn(verdict="approved"))
            elif kind == "changes":
                await lab.flow.review(
                    tid, owner, ReviewIn(verdict="changes_requested", feedback="again")
                )
            elif kind == "cancel":
                if rng.random() < 0.03:
                    await lab.flow.cancel(tid, owner)
            elif kind == "dep":
                await lab.flow.add_dependency(tid, rng.choice(ids), owner)
            elif kind == "expire":
                await lab.db.execute(
                    "UPDATE circle.tasks SET offer_deadline = now() WHERE id = $1 "
                    "AND status = 'offered'",
                    tid,
                )
                await lab.flow.expire_offers()
            elif kind == "offer":
                await lab.flow.offer(tid, owner)
            outcomes[f"{kind}:ok"] += 1
        except DatabaseBusyError as exc:
            busy.append(f"{kind}: {exc}")
        except GatheringError as exc:
            outcomes[f"{kind}:{exc.code}"] += 1
        except Exception as exc:
            untyped.append(f"{kind}: {type(exc).__name__}: {exc}")

    queue = list(range(400))

    async def runner() -> None:
        while queue:
            queue.pop()
            await step()

    await asyncio.wait_for(asyncio.gather(*(runner() for _ in range(24))), 240)

    problems: list[str] = []
    rows = await lab.db.fetch_all("SELECT * FROM circle.tasks WHERE circle_id = $1", circle.id)
    for row in rows:
        if (
            row["status"] in ("in_progress", "in_review", "changes_requested")
            and row["assignee_id"] is None
        ):
            problems.append(f"task {row['id']} {row['status']} without an assignee")
        if row["status"] == "offered" and row["offered_to"] is None:
            problems.append(f"task {row['id']} offered to no one")
        history = await lab.db.fetch_all(
            "SELECT from_status, to_status FROM circle.transitions WHERE task_id = $1 ORDER BY id",
            row["id"],
        )
        for before, after in itertools.pairwise(history):
            if after["from_status"] != before["to_status"]:
                problems.append(f"task {row['id']}: history jumps {before} -> {after}")
        if history and history[-1]["to_status"] != row["status"]:
            problems.append(f"task {row['id']} is {row['status']}, history ends {history[-1]}")
        if row["status"] == "blocked":
            deps = await lab.db.fetch_all(
                "SELECT t.status FROM circle.task_dependencies d JOIN circle.tasks t "
                "ON t.id = d.blocked_by WHERE d.task_id = $1",
                row["id"],
            )
            if all(d["status"] == "completed" for d in deps):
                problems.append(f"task {row['id']} blocked by nothing open: {deps}")
            if any(d["status"] in ("failed", "cancelled") for d in deps):
                problems.append(f"task {row['id']} blocked by an ended task: {deps}")
    locks = await lab.db.fetch_all(
        "SELECT l.path, t.id, t.status FROM circle.file_locks l JOIN circle.tasks t "
        "ON t.id = l.task_id WHERE t.status IN ('completed', 'failed', 'cancelled')"
    )
    problems += [f"lock of ended task: {dict(r)}" for r in locks]
    for m in await list_members(lab.db, circle.id):
        if m.load > 2:
            problems.append(f"member {m.id} has load {m.load} > cap 2")
    cyc = await lab.db.fetch_all(
        "SELECT a.task_id, a.blocked_by FROM circle.task_dependencies a JOIN "
        "circle.task_dependencies b ON a.task_id = b.blocked_by AND a.blocked_by = b.task_id"
    )
    problems += [f"2-cycle {dict(r)}" for r in cyc]
    print(sorted(outcomes.items()))
    assert not untyped and not busy and not problems, (
        f"untyped errors: {untyped[:5]}\ndeadlocks/busy ({len(busy)}): {busy[:5]}\n"
        f"inconsistent state: {problems[:10]}"
    )
