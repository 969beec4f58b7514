"""Background tasks under the interleavings a hostile review forced (each of them stranded a
task, ran an approved call never, or broke the step log before the fixes): an answer given
while a resumed task reads its approval, a cancelled task's approval, the time of a call cut
short (by a pause, by a worker that died), and the same job delivered twice."""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any
from uuid import UUID

import pytest
from pipeline_runtime import LAB, TOOLS
from task_runtime import HOLD_WRITE, Lab, call, task_lab, until

from gathering.errors import ConflictError
from gathering.scheduler.tasks import (
    TaskStep,
    cancel_task,
    get_task,
    pause_task,
    resume_answered,
    resume_task,
    task_steps,
)
from gathering.scheduler.tasks.loop import TaskRunner
from gathering.tools.approvals import Approval, decide, get_approval

pytestmark = pytest.mark.integration
lab = task_lab  # the fixture, by the name these tests use
SEND = TOOLS[2]  # external: its policy is `ask`


async def finish(run: asyncio.Task[None], gate: str) -> None:
    """Let the run held at `gate` go on, and wait (bounded) for it to end."""
    LAB.gates.setdefault(gate, asyncio.Event()).set()
    with contextlib.suppress(Exception, asyncio.CancelledError):
        await asyncio.wait_for(run, 15)


async def first_step(lab: Lab, task_id: int) -> TaskStep:
    return (await task_steps(lab.db, task_id))[0]


async def only_call(lab: Lab, task_id: int) -> dict[str, Any]:
    (state,) = (await first_step(lab, task_id)).results.values()
    return state


# --- an answer given while the task reads its approval ------------------------------------


@pytest.mark.parametrize("approve", [True, False], ids=["approved", "denied"])
async def test_an_answer_given_while_a_resumed_task_reads_its_approval_is_taken_up(
    lab: Lab, monkeypatch: pytest.MonkeyPatch, approve: bool
) -> None:
    """A task paused while it waits is resumed; its job reads the approval (pending), then
    the person answers and a scheduler instance sweeps (the task is `running`, so the sweep
    only marks the answer taken). The job must go on with that answer instead of waiting for
    an answer nobody will take up again."""
    await lab.enable(SEND)
    lab.stub.add_reply(call("send", text="r"), "the end")
    task = await lab.start("send r")
    waiting = await lab.wait(task.id, "waiting_approval")
    assert waiting.approval_id is not None
    await pause_task(lab.db, lab.bus, task.id)

    real = TaskRunner._approval
    answered = asyncio.Event()

    async def answer_right_after_the_read(
        self: TaskRunner, task_id: int, call_id: str
    ) -> Approval | None:
        approval = await real(self, task_id, call_id)
        if not answered.is_set() and approval is not None and approval.state == "pending":
            answered.set()  # the person answers and an instance sweeps, right now
            await decide(lab.db, approval.id, approve=approve, by=lab.owner_id)
            await resume_answered(lab.db, lab.bus)
        return approval

    monkeypatch.setattr(TaskRunner, "_approval", answer_right_after_the_read)
    await resume_task(lab.db, lab.bus, task.id)
    await asyncio.wait_for(answered.wait(), 15)
    done = await lab.wait(task.id)
    assert (done.status, done.result) == ("succeeded", "the end"), done.error
    approval = await get_approval(lab.db, waiting.approval_id)
    assert approval.state == ("approved" if approve else "denied")
    assert approval.resumed_at is not None
    state = await only_call(lab, task.id)
    if approve:
        assert LAB.calls["send:r"] == 1
        assert (state["status"], state["content"]) == ("finished", "sent r")
    else:
        assert LAB.calls["send:r"] == 0
        assert state["status"] == "not_run" and "denied" in state["content"]
    await lab.scheduler.tick()  # nothing is left to take up: the call is not made again
    assert LAB.calls["send:r"] == (1 if approve else 0)


async def test_cancelling_a_waiting_task_expires_its_approval(lab: Lab) -> None:
    await lab.enable(SEND)
    lab.stub.add_reply(call("send", text="c"), "sent")
    task = await lab.start("send c")
    waiting = await lab.wait(task.id, "waiting_approval")
    assert waiting.approval_id is not None
    await cancel_task(lab.db, lab.bus, task.id)
    approval = await get_approval(lab.db, waiting.approval_id)
    assert approval.state == "expired"  # out of the person's inbox
    assert approval.decided_at is not None and approval.resumed_at is not None
    with pytest.raises(ConflictError, match="expired"):
        await decide(lab.db, approval.id, approve=True, by=lab.owner_id)
    await lab.scheduler.tick()
    assert (await get_task(lab.db, task.id)).status == "cancelled"
    assert LAB.calls["send:c"] == 0


# --- the time of a call cut short ----------------------------------------------------------


async def test_the_time_of_a_call_cut_short_by_a_pause_counts_once(lab: Lab) -> None:
    """`max_seconds` is the time the task's steps ran: a write call paused after ~2 s ran
    ~2 s, counted when it is cut, and not counted again when the task goes on."""
    await lab.enable(HOLD_WRITE)
    lab.stub.add_reply(call("hold_write", key="t"), "done")
    task = await lab.start("hold", max_seconds=60)
    await asyncio.wait_for(LAB.started_event("t").wait(), 10)
    await asyncio.sleep(2.0)
    await pause_task(lab.db, lab.bus, task.id)

    async def charged() -> bool:
        return bool((await only_call(lab, task.id)).get("charged"))

    await until("charged", charged)
    paused = await get_task(lab.db, task.id)
    assert paused.status == "paused"
    assert paused.active_seconds >= 1.9, paused.active_seconds
    await asyncio.sleep(1.0)  # paused: none of this counts
    await resume_task(lab.db, lab.bus, task.id)
    done = await lab.wait(task.id)
    assert done.status == "succeeded", done.error
    steps = await task_steps(lab.db, task.id)
    (state,) = steps[0].results.values()
    assert state["status"] == "interrupted" and LAB.calls["t"] == 1
    # What was added after the pause is the second model call only: the cut call's time
    # counted once.
    assert done.active_seconds == pytest.approx(
        paused.active_seconds + steps[1].duration_ms / 1000, abs=0.002
    )
    assert steps[0].duration_ms >= 1900


async def test_the_time_of_a_call_whose_worker_died_counts(
    lab: Lab, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A worker that dies mid-call bills nothing; the job that takes the task up again finds
    the call `running` and counts it from the time it started (at most its tool's timeout)."""

    bill = TaskRunner._bill
    bills: list[tuple[Any, ...]] = []

    async def dies_without_billing(self: TaskRunner, *args: Any) -> bool:
        bills.append(args)
        if len(bills) == 1:  # the dying job's bill never happens
            return False
        return await bill(self, *args)

    monkeypatch.setattr(TaskRunner, "_bill", dies_without_billing)
    await lab.enable(HOLD_WRITE)
    lab.stub.add_reply(call("hold_write", key="d"), "after the death")
    task = await lab.start("hold", max_seconds=60)
    await asyncio.wait_for(LAB.started_event("d").wait(), 10)
    await asyncio.sleep(2.0)
    running = await get_task(lab.db, task.id)
    assert running.job_id is not None
    # The worker "dies": its job stops without the task knowing, then procrastinate queues
    # the same job again (a stalled job).
    await lab.db.execute("SELECT procrastinate_cancel_job_v1($1, true, false)", running.job_id)

    async def job_stopped() -> bool:
        status = await lab.db.fetch_val(
            "SELECT status::text FROM procrastinate_jobs WHERE id = $1", running.job_id
        )
        return status not in ("todo", "doing")

    await until("stopped", job_stopped)
    assert (await get_task(lab.db, task.id)).active_seconds < 1.0  # nothing billed yet
    await lab.db.execute(
        "UPDATE procrastinate_jobs SET status = 'todo', abort_requested = false WHERE id = $1",
        running.job_id,
    )
    await lab.db.execute("SELECT pg_notify('procrastinate_any_queue_v1', '{}')")
    done = await lab.wait(task.id)
    assert (done.status, done.result) == ("succeeded", "after the death"), done.error
    assert done.active_seconds >= 2.0, done.active_seconds
    assert (await only_call(lab, task.id))["status"] == "interrupted"
    assert LAB.calls["d"] == 1


# --- the same job delivered twice ----------------------------------------------------------


async def test_the_same_job_delivered_twice_writes_only_under_the_newest_lease(lab: Lab) -> None:
    """procrastinate delivers the *same* job again while its first run is still alive
    (retry_stalled after a missed heartbeat). The second run takes a new lease: it reports
    the cut call interrupted and goes on; the first run, once its call returns, stores
    nothing more (not the call's result, not a step planned from a stale history)."""
    await lab.enable(HOLD_WRITE)
    lab.stub.add_reply(call("hold_write", key="k1"))
    lab.stub.add_reply(call("hold_write", key="k2"))
    lab.stub.add_reply("final")
    task = await lab.start("hold")
    await asyncio.wait_for(LAB.started_event("k1").wait(), 10)
    first = await get_task(lab.db, task.id)
    assert first.job_id is not None
    second = asyncio.create_task(TaskRunner(lab.db, lab.bus).run(task.id, first.job_id))
    try:
        await asyncio.wait_for(LAB.started_event("k2").wait(), 10)
        taken = await get_task(lab.db, task.id)
        assert taken.job_id == first.job_id  # the same job: only the lease tells them apart
        steps = await task_steps(lab.db, task.id)
        assert [s.n for s in steps] == [1, 2]
        (cut,) = steps[0].results.values()
        assert cut["status"] == "interrupted"

        LAB.gates.setdefault("k1", asyncio.Event()).set()  # the first run goes on

        async def first_run_over() -> bool:
            status = await lab.db.fetch_val(
                "SELECT status::text FROM procrastinate_jobs WHERE id = $1", first.job_id
            )
            return status not in ("todo", "doing")

        await until("over", first_run_over)
        steps = await task_steps(lab.db, task.id)
        assert [s.n for s in steps] == [1, 2]  # it planned no step
        (after,) = steps[0].results.values()
        assert after == cut  # nor overwrote the call the model was told was interrupted
        assert steps[1].status == "acting"
        assert (await get_task(lab.db, task.id)).status == "running"

        LAB.gates.setdefault("k2", asyncio.Event()).set()
        await asyncio.wait_for(second, 15)
    finally:
        await finish(second, "k2")
    done = await lab.wait(task.id)
    assert (done.status, done.result) == ("succeeded", "final"), done.error
    steps = await task_steps(lab.db, task.id)
    assert [(s.n, s.status) for s in steps] == [(1, "done"), (2, "done"), (3, "done")]
    (k2,) = steps[1].results.values()
    assert (k2["status"], k2["content"]) == ("finished", "k2 released")
    assert LAB.calls["k1"] == LAB.calls["k2"] == 1
    chats = [r for r in lab.stub.requests if r.path.endswith("/api/chat")]
    assert len(chats) == 3  # the first run made no model call after it was replaced
    leases = [getattr(record, "lease", None) for record in (first, taken)]
    assert all(isinstance(lease, UUID) for lease in leases) and leases[0] != leases[1]


async def test_a_stale_delivery_that_ends_does_not_get_the_live_one_failed(lab: Lab) -> None:
    """The same job delivered twice: when the stale run ends (fenced out), procrastinate
    marks the job succeeded, although the newest delivery still works on the task. The
    scheduler's sweep must not take the task for one whose job ended mid-task."""
    await lab.enable(HOLD_WRITE)
    lab.stub.add_reply(call("hold_write", key="s1"))
    lab.stub.add_reply(call("hold_write", key="s2"))
    lab.stub.add_reply("final")
    task = await lab.start("hold")
    await asyncio.wait_for(LAB.started_event("s1").wait(), 10)
    job_id = (await get_task(lab.db, task.id)).job_id
    assert job_id is not None
    second = asyncio.create_task(TaskRunner(lab.db, lab.bus).run(task.id, job_id))
    try:
        await asyncio.wait_for(LAB.started_event("s2").wait(), 10)
        LAB.gates.setdefault("s1", asyncio.Event()).set()  # the stale run ends

        async def stale_run_over() -> bool:
            status = await lab.db.fetch_val(
                "SELECT status::text FROM procrastinate_jobs WHERE id = $1", job_id
            )
            return status not in ("todo", "doing")

        await until("over", stale_run_over)
        # The live run's call takes a while (its last write is a minute old).
        await lab.db.execute(
            "UPDATE scheduler.tasks SET updated_at = now() - interval '1 minute' WHERE id = $1",
            task.id,
        )
        await lab.scheduler.tick()
        still = await get_task(lab.db, task.id)
        assert still.status == "running", still.error
        LAB.gates.setdefault("s2", asyncio.Event()).set()
        await asyncio.wait_for(second, 15)
    finally:
        await finish(second, "s2")
    done = await lab.wait(task.id)
    assert (done.status, done.result) == ("succeeded", "final"), done.error


async def test_an_approved_read_call_cut_by_a_pause_runs_again_without_asking(
    lab: Lab,
) -> None:
    """A read tool whose policy is `ask`, approved, running, then paused: on resume the call
    runs again under the approval it had (a second approval of the call would be refused by
    the store, and the task would fail)."""
    blocked = TOOLS[4]  # read, held until released
    await lab.enable(blocked, "ask")
    lab.stub.add_reply(call("blocked", key="ra"), "the end")
    task = await lab.start("read something")
    waiting = await lab.wait(task.id, "waiting_approval")
    assert waiting.approval_id is not None
    await decide(lab.db, waiting.approval_id, approve=True, by=lab.owner_id)
    await resume_answered(lab.db, lab.bus)
    await asyncio.wait_for(LAB.started_event("ra").wait(), 15)
    await pause_task(lab.db, lab.bus, task.id)
    LAB.gates.setdefault("ra", asyncio.Event()).set()  # the run again returns at once
    await resume_task(lab.db, lab.bus, task.id)
    done = await lab.wait(task.id, "succeeded", "failed", "cancelled", "waiting_approval")
    assert (done.status, done.result) == ("succeeded", "the end"), (done.status, done.error)
    assert LAB.calls["ra"] == 2
    approvals = await lab.db.fetch_val(
        "SELECT count(*) FROM tool.approvals WHERE task_id = $1", task.id
    )
    assert approvals == 1


async def test_a_read_call_run_again_after_a_pause_counts_its_cut_run_once(
    lab: Lab, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The paused job's bill of its cut run arrives only after the resumed job has counted
    that run and runs the call again: the late bill names the cut run, not the new one, so it
    counts nothing. The task's seconds never pass the wall time it took."""
    bill = TaskRunner._bill
    entered, late = asyncio.Event(), asyncio.Event()
    billed: list[bool] = []

    async def bill_late(self: TaskRunner, *args: Any) -> bool:
        if entered.is_set():  # the resumed job's bill: at once
            return await bill(self, *args)
        entered.set()
        await late.wait()  # the paused job's: once the call runs again
        billed.append(await bill(self, *args))
        return billed[-1]

    monkeypatch.setattr(TaskRunner, "_bill", bill_late)
    blocked = TOOLS[4]  # read, held until released
    await lab.enable(blocked)
    lab.stub.add_reply(call("blocked", key="rr"), "read twice")
    began = time.monotonic()
    task = await lab.start("read", max_seconds=60)
    await asyncio.wait_for(LAB.started_event("rr").wait(), 15)
    await asyncio.sleep(1.5)
    await pause_task(lab.db, lab.bus, task.id)
    await asyncio.wait_for(entered.wait(), 15)  # the paused job bills, late
    await resume_task(lab.db, lab.bus, task.id)

    async def run_again() -> bool:
        return LAB.calls["rr"] == 2

    await until("the call runs again", run_again)
    late.set()

    async def paused_job_billed() -> bool:
        return bool(billed)

    await until("the paused job's bill", paused_job_billed)
    assert billed == [False]  # its run was counted by the resumed job already
    LAB.gates["rr"].set()
    done = await lab.wait(task.id)
    wall = time.monotonic() - began
    assert (done.status, done.result) == ("succeeded", "read twice"), done.error
    assert 1.4 <= done.active_seconds <= wall, (done.active_seconds, wall)


async def test_a_model_call_cut_by_a_pause_counts_its_time(lab: Lab) -> None:
    """The pause aborts the job in the middle of its model call: no step is stored, but the
    second the call ran counts in the task's seconds."""
    hold = lab.stub.hold("think hard")
    task = await lab.start("think hard", max_seconds=60)
    assert await asyncio.to_thread(hold.arrived.wait, 15)
    await asyncio.sleep(1.0)
    await pause_task(lab.db, lab.bus, task.id)

    async def counted() -> bool:
        return (await get_task(lab.db, task.id)).active_seconds >= 0.9

    await until("the cut call's time", counted)
    paused = await get_task(lab.db, task.id)
    assert (paused.status, paused.steps, paused.input_tokens) == ("paused", 0, 0)


async def test_a_model_call_that_ends_after_its_run_was_replaced_counts_its_tokens(
    lab: Lab,
) -> None:
    """The model answers a run that no longer holds the task (the same job delivered again
    took a new lease meanwhile): its step is not stored, but the provider was paid, so the
    call's tokens and time count in the task's use."""
    hold = lab.stub.hold("think twice")
    lab.stub.add_reply("thought")
    task = await lab.start("think twice", max_seconds=60)
    assert await asyncio.to_thread(hold.arrived.wait, 15)
    await lab.db.execute(  # as start_task does for the job's second delivery
        "UPDATE scheduler.tasks SET lease = gen_random_uuid() WHERE id = $1", task.id
    )
    hold.release()

    async def counted() -> bool:
        return (await get_task(lab.db, task.id)).input_tokens > 0

    await until("the replaced run's call counted", counted)
    now = await get_task(lab.db, task.id)
    assert (now.steps, now.status) == (0, "running") and now.output_tokens > 0
    assert now.active_seconds > 0
    await cancel_task(lab.db, lab.bus, task.id)
