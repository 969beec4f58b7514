"""A background task's plan / act / observe loop, run by its job (`scheduler:run_task`).

Plan: one model call, given the goal and every earlier step, asks for tool calls (or answers:
the task succeeds with that answer). Act: each call runs under the agent's policy for its
tool, its state stored before and its result after it runs. Observe: the results go to the
next model call. Each step is stored before the next starts, so a job that starts again
(its worker was killed, or it was paused and resumed) goes on from the last stored step:

- a call stored as `running` was cut short: a `read` call runs again; any other is reported
  to the model as interrupted (it may have taken effect) and never made twice;
- a model call that was under way when the worker died is made again (nothing of it was
  stored);
- a call whose policy is `ask` stores a pending approval and the task waits
  (`waiting_approval`, no job) until a person answers it (`resume_after_approval`).

The task's limits are checked before each model call; the model call and each tool get at
most what is left of the task's seconds. A call a money or token budget refuses makes the task
wait (`waiting_budget`) for a look at the budget's reset or within 5 minutes, or a resume.
Every write is fenced by the lease the job took when it started the task: a job whose task was
paused, cancelled or resumed meanwhile, or a job delivered twice (its worker thought dead but
still running), stores nothing more. A job starts its task only while the owner has fewer than
`task_max_running_per_owner` tasks running (else the task waits, queued, for one of them to
stop: `_start`), so one owner's tasks never hold every worker.
"""

from __future__ import annotations

import asyncio
import json
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID, uuid4

import structlog
from psycopg.types.json import Jsonb

from gathering.agents.agent import Agent
from gathering.agents.agent_store import PostgresAgentStore
from gathering.agents.approval_resumer import approval_events
from gathering.agents.conversation_store import HistoryEntry
from gathering.agents.tool_calls import not_run_result, refusal_of, run_tool
from gathering.agents.turn_events import EVENT_PREVIEW_CHARS
from gathering.agents.turn_loop import call_model, failure_body
from gathering.cancellation import cancel_and_wait
from gathering.config import get_settings
from gathering.db.database import Database, Queries
from gathering.db.named_queries import queries_of
from gathering.db.storable import storable_text, storable_value
from gathering.errors import (
    BudgetExceededError,
    BudgetExhaustedError,
    GatheringError,
    ProviderTimeoutError,
)
from gathering.events import EventBus
from gathering.jobs import enqueue
from gathering.llm import Completion, LLMProvider, Message, ToolCall, ToolResult, ToolSpec
from gathering.llm.base import DEFAULT_MAX_TOKENS
from gathering.llm.types import new_call_id
from gathering.scheduler.tasks.store import (
    QUEUE,
    RUN_TASK,
    TaskRecord,
    TaskStep,
    get_task,
    lock_tasks_of_owner,
    queue_task,
    stopped_running,
    task_event,
)
from gathering.tools.agent_tools import ToolBox
from gathering.tools.approvals import Approval, request_approval
from gathering.tools.registry import tool_seconds
from gathering.usage import (
    Attribution,
    LedgerEntry,
    attributed,
    current_attribution,
    estimated_input_tokens,
    model_call_entry,
    record_failed_call,
    reserve_model_call,
)
from gathering.usage import record as record_usage
from gathering.usage.budgets import larger_than_its_budget, reset_of
from gathering.usage.budgets import refusal_of as budget_refusal_of

log = structlog.get_logger(__name__)
_SQL = queries_of("gathering.scheduler.tasks")
TASK_BRIEF = (
    "You are working on your own, in the background, on the goal in the user message: nobody "
    "reads your replies until you are done, and nobody answers questions. Work step by step "
    "with your tools. When the goal is reached, or cannot be, reply with the result (or why "
    "not) and call no tool."
)
ENDED_CALLS = ("finished", "failed", "interrupted", "not_run")
ALIVE_SECONDS = 2.0
# A task waiting for a budget looks again this often (a reservation released, a budget
# raised), else at the budget's reset when that comes first.
BUDGET_RECHECK_SECONDS = 300.0
# A task waiting for room (its owner runs as many tasks as allowed) is woken when one of them
# stops running; its deferred job looks again after this long in any case.
OWNER_ROOM_RECHECK_SECONDS = 300.0
STARTABLE = ("queued", "running", "waiting_budget")  # running: its worker died
NO_TIME_LEFT = "error: not run: the task's time budget (max_seconds) is spent"
INTERRUPTED = (
    "error: interrupted: the task stopped while this call ran (its worker stopped, or the task "
    "was paused); it may or may not have taken effect, and is not run again"
)


class _Replaced(Exception):
    """The task's job no longer holds it (paused, cancelled, resumed under a new job)."""


@dataclass(frozen=True)
class _Charge:
    """Who a model call of the task is charged to, and its budget reservation."""

    who: Attribution
    provider: str
    model: str
    reservation: UUID | None
    estimated_input: int = 0  # the prompt's tokens, charged when the provider reports none

    async def entry(self, q: Queries, completion: Completion) -> LedgerEntry:
        """The ledger entry of the finished call."""
        model = completion.model or self.model
        return await model_call_entry(
            q,
            self.who,
            completion,
            self.provider,
            model,
            self.reservation,
            estimated_input=self.estimated_input,
        )


def _budget_retry_at(refusal: BudgetExceededError) -> datetime | None:
    """When a task a budget refused looks again: the budget's reset, or in
    `BUDGET_RECHECK_SECONDS` when that comes first; None for a call larger than the
    budget's whole limit (only a raised budget and a resume help)."""
    if larger_than_its_budget(refusal):
        return None
    at = datetime.now(UTC) + timedelta(seconds=BUDGET_RECHECK_SECONDS)
    resets = reset_of(refusal)
    return at if resets is None else min(at, resets)


class TaskRunner:
    """Runs tasks on `db`, publishing `task.*` events (subjects `task:<id>` and the owner's)."""

    def __init__(self, db: Database, bus: EventBus | None) -> None:
        self.db = db
        self.bus = bus if bus is not None else EventBus(db)

    async def run(
        self, task_id: int, job_id: int, *, draining: Callable[[], bool] = lambda: False
    ) -> None:
        """The job `job_id` of task `task_id`: steps until the task ends, waits for a person,
        or is taken from it. `draining`: the worker is stopping, so the task is handed to
        another job at the next step."""
        if await self._budget_still_refuses(task_id, job_id):
            return
        task = await self._start(task_id, job_id)
        if task is None:
            return
        lease = task.lease  # new at each start: a job delivered twice writes once
        assert lease is not None
        beating = asyncio.create_task(self._beat(task.id, lease), name=f"task-{task.id}-alive")
        try:
            with attributed(user_id=task.owner_id, task_id=task.id):  # its tool calls too
                await self._work(task, lease, draining)
        except _Replaced:
            return
        except GatheringError as exc:
            await self._end(task, lease, "failed", None, failure_body(exc))
        except Exception as exc:
            log.error("task failed", task_id=task.id, exc_info=exc)
            await self._end(task, lease, "failed", None, failure_body(exc))
        finally:
            await cancel_and_wait(beating)

    async def _start(self, task_id: int, job_id: int) -> TaskRecord | None:
        """Task `task_id` taken up by job `job_id` under a new lease; None when the task is
        no longer that job's (paused, cancelled or resumed under another job meanwhile), or
        when its owner has `task_max_running_per_owner` tasks running already: it then
        waits, queued (`_wait_for_room`). The count and the start are one step for every
        worker of every instance: both happen under the owner's lock."""
        owner_id = await self.db.fetch_val(_SQL["task_owner"], task_id)
        if owner_id is None:
            return None  # deleted meanwhile
        async with self.db.transaction() as tx:
            await lock_tasks_of_owner(tx, owner_id)
            locked = await tx.fetch_one(_SQL["lock_task"], task_id)
            if locked is None or locked["job_id"] != job_id or locked["status"] not in STARTABLE:
                return None
            cap = get_settings().task_max_running_per_owner
            running = int(await tx.fetch_val(_SQL["running_tasks_of_owner"], owner_id, task_id))
            if running >= cap:
                await self._wait_for_room(tx, TaskRecord.from_row(locked), job_id, running)
                return None
            row = await tx.fetch_one(_SQL["start_task"], task_id, job_id)
            assert row is not None  # its row is locked
            task = TaskRecord.from_row(row)
            await self.bus.publish_many(task_event("started", task), tx=tx)
        return task

    async def _wait_for_room(
        self, tx: Queries, task: TaskRecord, job_id: int, running: int
    ) -> None:
        """`task` waits, queued (it does not fail), for one of its owner's `running` tasks
        to stop running (`stopped_running` wakes it), under a job deferred to look again in
        `OWNER_ROOM_RECHECK_SECONDS` in any case. A task that was running (its worker died)
        or waiting for a budget is queued again, with a `task.queued` event saying why; a
        queued one stays so, quietly."""
        at = datetime.now(UTC) + timedelta(seconds=OWNER_ROOM_RECHECK_SECONDS)
        waiting_job = await enqueue(tx, RUN_TASK, {"task_id": task.id}, queue=QUEUE, at=at)
        row = await tx.fetch_one(_SQL["wait_for_owner_room"], task.id, job_id, waiting_job)
        assert row is not None  # its row is locked
        if task.status != "queued":
            queued = TaskRecord.from_row(row)
            events = task_event("queued", queued, reason="owner_limit", running=running)
            await self.bus.publish_many(events, tx=tx)
        log.debug("task waits for room", task_id=task.id, owner_id=task.owner_id, running=running)

    async def _beat(self, task_id: int, lease: UUID) -> None:
        """Say the task is being worked on, every `ALIVE_SECONDS`, while this run holds it
        (the sweep settles a task whose job ended only when nobody says so)."""
        while True:
            await asyncio.sleep(ALIVE_SECONDS)
            try:
                if await self.db.fetch_one(_SQL["task_alive"], task_id, lease) is None:
                    return  # taken from this run
            except GatheringError as exc:
                log.warning("could not say a task is alive", task_id=task_id, error=str(exc))

    async def _work(self, task: TaskRecord, lease: UUID, draining: Callable[[], bool]) -> None:
        store = PostgresAgentStore(self.db)
        agent = Agent.from_record(await store.load_agent(task.agent_id), store=store)
        agent.task = TASK_BRIEF
        provider = await agent.model_provider(self.db)
        system = await agent.system_prompt(task.goal, self.db, recall=False)
        rows = await self.db.fetch_all(_SQL["all_steps"], task.id)
        steps = [TaskStep.from_row(row) for row in rows]
        while True:
            task = await get_task(self.db, task.id)
            if task.lease != lease or task.status != "running":
                return
            last = steps[-1] if steps else None
            box = await agent.turn_tools(self.db)  # each step: a tool denied now is denied
            if last is not None and last.status == "acting":
                acted = await self._act(task, lease, agent, box, last)
                if acted is None:
                    return  # waits for a person
                steps[-1] = acted
                continue
            if last is not None and not last.tool_calls:
                await self._end(task, lease, "succeeded", last.thought, None)
                return
            _check_budgets(task)
            if draining():
                await self._hand_over(task.id, lease)
                return
            specs = [tool.spec for tool in box.tools.values()]
            steps.append(await self._plan(task, lease, agent, provider, system, specs, steps))

    # --- plan -----------------------------------------------------------------------------

    async def _plan(
        self,
        task: TaskRecord,
        lease: UUID,
        agent: Agent,
        provider: LLMProvider,
        system: str,
        specs: list[ToolSpec],
        steps: Sequence[TaskStep],
    ) -> TaskStep:
        """One model call on the goal and the steps so far, stored as the next step. The
        call is reserved on the budgets of the task, its agent and its owner first: one a
        budget cannot take pauses the task (`_wait_for_budget`)."""
        left = task.max_seconds - task.active_seconds
        seconds = min(get_settings().model_call_timeout, left)
        entries = _entries(task.goal, steps)
        charge = await self._reserve(task, lease, agent, provider, system, entries, specs, seconds)
        started = time.monotonic()
        completion: Completion | None = None
        timer = asyncio.timeout(seconds)
        try:
            try:
                async with timer:
                    calling = call_model(provider, system, entries, specs, agent.options, False)
                    async for event in calling:
                        if isinstance(event, Completion):
                            completion = event
            except TimeoutError:
                if not timer.expired():
                    raise
                if seconds >= left:
                    raise _out_of_time(task) from None
                raise ProviderTimeoutError(
                    f"the model call took longer than {seconds:g}s",
                    hint="raise GATHERING_MODEL_CALL_TIMEOUT or check the provider",
                ) from None
        except asyncio.CancelledError:  # paused, cancelled, or the worker stops
            spent = round((time.monotonic() - started) * 1000)
            await asyncio.shield(self._bill_model_call(task.id, spent, completion, charge))
            raise
        except GatheringError as exc:  # the failed call is in the ledger too
            spent = round((time.monotonic() - started) * 1000)
            await record_failed_call(
                self.db, charge.who, charge.provider, charge.model, exc, spent, charge.reservation
            )
            raise
        assert completion is not None
        elapsed = round((time.monotonic() - started) * 1000)
        calls = _unique_ids(completion.tool_calls, steps)
        try:
            step = await self._store_step(task, lease, agent, completion, calls, elapsed, charge)
        except GatheringError:  # the step could not be stored: the call still counts
            await asyncio.shield(self._bill_model_call(task.id, elapsed, completion, charge))
            raise
        if step is None:  # the task was taken from this run: the call still counts
            await asyncio.shield(self._bill_model_call(task.id, elapsed, completion, charge))
            raise _Replaced
        return step

    async def _reserve(
        self,
        task: TaskRecord,
        lease: UUID,
        agent: Agent,
        provider: LLMProvider,
        system: str,
        entries: list[HistoryEntry],
        specs: list[ToolSpec],
        seconds: float,
    ) -> _Charge:
        """The next model call reserved on its budgets (see `gathering.usage.budgets`)."""
        who = current_attribution().merged(
            user_id=task.owner_id, agent_id=task.agent_id, task_id=task.id
        )
        model = provider.model or agent.model
        max_tokens = agent.options.get("max_tokens")
        if not isinstance(max_tokens, int):
            max_tokens = getattr(getattr(provider, "defaults", None), "max_tokens", None)
        tokens = estimated_input_tokens(system, [e.message for e in entries], specs)
        try:
            reservation = await reserve_model_call(
                self.db,
                who,
                provider.name,
                model,
                tokens,
                max_tokens or DEFAULT_MAX_TOKENS,
                seconds,
            )
        except BudgetExceededError as exc:
            await self._wait_for_budget(task.id, task.owner_id, lease, exc)
            raise _Replaced from None
        return _Charge(who, provider.name, model, reservation, tokens)

    async def _wait_for_budget(
        self, task_id: int, owner_id: int, lease: UUID, exc: BudgetExceededError
    ) -> None:
        """The task waits (it does not fail), with the budget's refusal as its error: a job
        deferred to the budget's reset, or to the next look (`BUDGET_RECHECK_SECONDS`: a
        reservation released, a budget raised), takes it up again (none for a call larger
        than the budget's whole limit); `resume_task` does at once."""
        retry_at = _budget_retry_at(exc)
        async with self.db.transaction() as tx:
            await lock_tasks_of_owner(tx, owner_id)
            locked = await tx.fetch_one(_SQL["lock_task"], task_id)
            if locked is None or locked["lease"] != lease:
                return  # taken from this run meanwhile
            job_id = None
            if retry_at is not None:
                args = {"task_id": task_id}
                job_id = await enqueue(tx, RUN_TASK, args, queue=QUEUE, at=retry_at)
            error = failure_body(exc) | {"details": exc.details}  # the budget, its reset
            row = await tx.fetch_one(_SQL["wait_for_budget"], task_id, lease, job_id, Jsonb(error))
            assert row is not None
            await stopped_running(tx, owner_id)
            waiting = TaskRecord.from_row(row)
            at = retry_at.isoformat() if retry_at is not None else None
            events = task_event("waiting", waiting, reason="budget", error=error, retry_at=at)
            await self.bus.publish_many(events, tx=tx)

    async def _budget_still_refuses(self, task_id: int, job_id: int) -> bool:
        """For the job a budget wait deferred: whether the budgets still refuse the refused
        call (a look: nothing reserved). Then the wait goes on under a new job, with the new
        refusal as the error and no event, and no step is taken (it would be refused)."""
        row = await self.db.fetch_one(_SQL["task_by_id"], task_id)
        if row is None or row["status"] != "waiting_budget" or row["job_id"] != job_id:
            return False  # not a budget wait's job: start_task decides
        task = TaskRecord.from_row(row)
        details = (task.error or {}).get("details") or {}
        usd, tokens = details.get("call_estimate_usd"), details.get("call_estimate_tokens")
        if not isinstance(usd, int | float) or not isinstance(tokens, int):
            return False  # no estimate to look with: the step itself asks
        who = current_attribution().merged(
            user_id=task.owner_id, agent_id=task.agent_id, task_id=task.id
        )
        refusal = await budget_refusal_of(self.db, who, float(usd), tokens)
        if refusal is None:
            return False
        retry_at = _budget_retry_at(refusal)
        async with self.db.transaction() as tx:
            locked = await tx.fetch_one(_SQL["lock_task"], task_id)
            if locked is None or (locked["status"], locked["job_id"]) != ("waiting_budget", job_id):
                return True  # resumed, paused or cancelled meanwhile: that decides
            new_job = None
            if retry_at is not None:
                args = {"task_id": task_id}
                new_job = await enqueue(tx, RUN_TASK, args, queue=QUEUE, at=retry_at)
            error = failure_body(refusal) | {"details": refusal.details}
            await tx.execute(_SQL["defer_budget_wait"], task_id, new_job, Jsonb(error))
        log.info("task still waits for a budget", task_id=task_id, retry_at=retry_at)
        return True

    async def _store_step(
        self,
        task: TaskRecord,
        lease: UUID,
        agent: Agent,
        completion: Completion,
        calls: list[ToolCall],
        elapsed: int,
        charge: _Charge,
    ) -> TaskStep | None:
        """The model's reply stored as the task's next step, with the call's ledger row (which
        settles its budget reservation); None when the run holding `lease` no longer holds
        the task."""
        async with self.db.transaction() as tx:
            row = await tx.fetch_one(
                _SQL["insert_step"],
                task.id,
                lease,
                task.steps + 1,
                storable_text(completion.text),
                Jsonb(storable_value([call.to_dict() for call in calls])),
                storable_text(completion.model or agent.model),
                _count(completion.usage.input_tokens),
                _count(completion.usage.output_tokens),
                _cost(completion.cost_usd),
                elapsed,
                "acting" if calls else "done",
            )
            if row is None:
                return None
            step = TaskStep.from_row(row)
            await record_usage(tx, await charge.entry(tx, completion))
            await self._step_event(tx, task, step)
        return step

    # --- act ------------------------------------------------------------------------------

    async def _act(
        self, task: TaskRecord, lease: UUID, agent: Agent, box: ToolBox, step: TaskStep
    ) -> TaskStep | None:
        """Run the calls of `step` not run yet, in order; the step, done, or None when a call
        waits for a person (the task then waits too)."""
        results = dict(step.results)
        left = task.max_seconds - task.active_seconds
        for stored in step.tool_calls:
            call = ToolCall(
                stored["id"],
                stored["name"],
                stored.get("arguments") or {},
                stored.get("invalid_arguments"),
            )
            state = (results.get(call.id) or {}).get("status")
            if state in ENDED_CALLS:
                continue
            tool = box.tools.get(call.name)
            context = agent.tool_context(call.id)
            approved = False
            if state == "running":  # cut short: only a call that changes nothing runs again
                asked = await self._approval(task.id, call.id)
                approved = asked is not None and asked.state == "approved"
                left -= await self._bill_dead_run(task.id, step.n, call.id, results[call.id], tool)
                if tool is None or tool.effect != "read":
                    results[call.id] = await self._set_call(
                        task, lease, step, call, "interrupted", INTERRUPTED, 0
                    )
                    continue
            elif state == "waiting":
                approval = await self._approval(task.id, call.id)
                if approval is not None and approval.state == "pending":
                    if await self._wait(task, lease, approval):
                        return None
                    approval = await self._approval(task.id, call.id)  # answered meanwhile
                if approval is None or approval.state != "approved":
                    result = not_run_result(call, approval)
                    results[call.id] = await self._set_call(
                        task, lease, step, call, "not_run", result.content, 0
                    )
                    continue
                approved = True
            if tool is not None and call.invalid_arguments is None:
                policy = box.policy(call.name)
                refusal = refusal_of(tool, call, context, policy)
                if refusal is not None:
                    results[call.id] = await self._set_call(
                        task, lease, step, call, "failed", refusal.content, 0
                    )
                    continue
                if policy == "ask" and not approved:
                    await self._ask(task, lease, agent, step, call, tool)
                    return None
            if left <= 0:
                results[call.id] = await self._set_call(
                    task, lease, step, call, "not_run", NO_TIME_LEFT, 0
                )
                continue
            attempt = uuid4().hex  # this run of the call: what a cut run's bill names
            started = time.monotonic()
            try:
                await self._set_call(
                    task,
                    lease,
                    step,
                    call,
                    "running",
                    "",
                    0,
                    started_at=time.time(),
                    attempt=attempt,
                )
                result = await run_tool(box.tools, call, left, context)
                elapsed = round((time.monotonic() - started) * 1000)
                outcome = "failed" if result.is_error else "finished"
                results[call.id] = await self._set_call(
                    task, lease, step, call, outcome, result.content, elapsed
                )
            except (asyncio.CancelledError, _Replaced):  # paused, cancelled, the worker stops
                # The run's time counts, once (nothing when its `running` state or its
                # outcome, which counts it, was not stored).
                spent = round((time.monotonic() - started) * 1000)
                await asyncio.shield(self._bill(task.id, step.n, call.id, attempt, spent))
                raise
            left -= time.monotonic() - started
        async with self.db.transaction() as tx:
            row = await tx.fetch_one(_SQL["finish_step"], task.id, lease, step.n)
            if row is None:
                raise _Replaced
            done = TaskStep.from_row(row)
            await self._step_event(tx, task, done)
        return done

    async def _set_call(
        self,
        task: TaskRecord,
        lease: UUID,
        step: TaskStep,
        call: ToolCall,
        status: str,
        content: str,
        elapsed_ms: int,
        **extra: Any,
    ) -> dict[str, Any]:
        """Store the state of `call` (and the time it took); what was stored."""
        state = {"status": status, "content": storable_text(content), "name": call.name, **extra}
        row = await self.db.fetch_one(
            _SQL["set_call"], task.id, lease, step.n, call.id, Jsonb(state), elapsed_ms
        )
        if row is None:
            raise _Replaced
        return state

    async def _bill(
        self, task_id: int, n: int, call_id: str, attempt: str | None, elapsed_ms: int
    ) -> bool:
        """Count the `elapsed_ms` of run `attempt` of a call cut short in its task's time
        (whoever holds the task now); False when that run was counted already."""
        try:
            row = await self.db.fetch_one(
                _SQL["bill_cut_call"], task_id, n, call_id, attempt, elapsed_ms
            )
        except GatheringError:
            log.warning("could not count a cut call's time", task_id=task_id, call_id=call_id)
            return False
        return row is not None

    async def _bill_dead_run(
        self, task_id: int, n: int, call_id: str, state: dict[str, Any], tool: Any
    ) -> float:
        """Count a call found `running` (its run was cut short) from when it started, at most
        its tool's timeout, unless its own job counted it already; the seconds counted."""
        spent = _unbilled_ms(state, tool)
        if spent and await self._bill(task_id, n, call_id, state.get("attempt"), spent):
            return spent / 1000
        return 0.0

    async def _bill_model_call(
        self, task_id: int, elapsed_ms: int, completion: Completion | None, charge: _Charge
    ) -> None:
        """Count a model call whose step was not stored (cut by a pause, a cancel or a
        stopping worker; answered after the task was taken from this run; or refused by the
        database): its time, and its tokens and cost when its answer came (a call cut mid-way
        is priced by the provider, but its usage never reaches us); in the usage ledger too."""
        usage = completion.usage if completion is not None else None
        try:
            if completion is not None:
                await record_usage(self.db, await charge.entry(self.db, completion))
            else:
                cut = LedgerEntry(
                    "model",
                    charge.who,
                    charge.provider,
                    charge.model,
                    latency_ms=elapsed_ms,
                    outcome="cancelled",
                    cost_usd=0.0,
                    reservation=charge.reservation,
                )
                await record_usage(self.db, cut)
        except GatheringError:
            log.warning("could not write a cut model call to the usage ledger", task_id=task_id)
        try:
            await self.db.execute(
                _SQL["bill_cut_model_call"],
                task_id,
                elapsed_ms,
                _count(usage.input_tokens) if usage else 0,
                _count(usage.output_tokens) if usage else 0,
                _cost(completion.cost_usd) if completion is not None else None,
            )
        except GatheringError:
            log.warning("could not count a cut model call", task_id=task_id)

    async def _approval(self, task_id: int, call_id: str) -> Approval | None:
        row = await self.db.fetch_one(_SQL["task_approval"], task_id, call_id)
        return Approval.from_row(row) if row is not None else None

    async def _ask(
        self,
        task: TaskRecord,
        lease: UUID,
        agent: Agent,
        step: TaskStep,
        call: ToolCall,
        tool: Any,
    ) -> None:
        """A pending approval of `call`, the call `waiting` and the task waiting for it, in
        one transaction."""
        assert agent.id is not None
        async with self.db.transaction() as tx:
            await lock_tasks_of_owner(tx, task.owner_id)  # before the task's row (set_call)
            approval = await request_approval(
                tx,
                agent_id=agent.id,
                owner_id=task.owner_id,
                turn_id=None,
                call_id=call.id,
                tool=tool,
                arguments=call.arguments,
                reason=f"the policy of {call.name!r} for agent {agent.name!r} is ask "
                f"(background task {task.id})",
                requested_by=None,
                seconds=get_settings().approval_timeout,
                task_id=task.id,
            )
            await self._set_call(task, lease, step, call, "waiting", "", 0, approval_id=approval.id)
            await self.bus.publish_many(approval_events("approval.requested", approval), tx=tx)
            if not await self._wait(task, lease, approval):
                raise AssertionError("an approval asked for in this transaction was answered")

    async def _wait(self, task: TaskRecord, lease: UUID, approval: Approval) -> bool:
        """The task waits for `approval`, without a job (in the caller's transaction, when
        one is open); False when the approval was answered meanwhile (the call goes on). The
        task's row, then the approval's, are locked first (the order every locker of both
        takes): an answer that comes later is taken up by the sweep once the task waits."""
        async with self.db.transaction() as tx:
            await lock_tasks_of_owner(tx, task.owner_id)
            if await tx.fetch_one(_SQL["lock_held_task"], task.id, lease) is None:
                raise _Replaced
            if await tx.fetch_val(_SQL["lock_approval"], approval.id) != "pending":
                return False
            row = await tx.fetch_one(_SQL["wait_for_approval"], task.id, lease, approval.id)
            if row is None:
                raise _Replaced
            await stopped_running(tx, task.owner_id)
            waiting = TaskRecord.from_row(row)
            events = task_event("waiting", waiting, reason="approval", approval_id=approval.id)
            await self.bus.publish_many(events, tx=tx)
        return True

    # --- ends -----------------------------------------------------------------------------

    async def _end(
        self,
        task: TaskRecord,
        lease: UUID,
        status: str,
        result: str | None,
        error: dict[str, Any] | None,
    ) -> None:
        async with self.db.transaction() as tx:
            await lock_tasks_of_owner(tx, task.owner_id)
            row = await tx.fetch_one(
                _SQL["end_task"],
                task.id,
                lease,
                status,
                result,
                Jsonb(error) if error is not None else None,
            )
            if row is None:
                return  # taken from this job meanwhile: what took it decides
            await stopped_running(tx, task.owner_id)
            ended = TaskRecord.from_row(row)
            await self.bus.publish_many(task_event("finished", ended), tx=tx)

    async def _hand_over(self, task_id: int, lease: UUID) -> None:
        """Give the task to a new job (this worker is stopping)."""
        async with self.db.transaction() as tx:
            row = await tx.fetch_one(_SQL["lock_task"], task_id)
            if row is None or row["lease"] != lease or row["status"] != "running":
                return
            await queue_task(tx, task_id)

    async def _step_event(self, tx: Queries, task: TaskRecord, step: TaskStep) -> None:
        calls = [call["name"] for call in step.tool_calls]
        thought = step.thought[:EVENT_PREVIEW_CHARS]
        body = {"n": step.n, "steps": step.n, "step_status": step.status, "calls": calls}
        await self.bus.publish_many(task_event("step", task, thought=thought, **body), tx=tx)


def _unbilled_ms(state: dict[str, Any], tool: Any) -> int:
    """The time a call left `running` (its worker died) took and was not counted: from its
    start, at most its tool's timeout."""
    if state.get("charged") or "started_at" not in state:
        return 0
    limit = tool_seconds(tool) if tool is not None else get_settings().tool_timeout
    return round(max(0.0, min(time.time() - float(state["started_at"]), limit)) * 1000)


def _count(tokens: int) -> int:
    """A provider's token count as stored: never negative, at most a step's column holds."""
    return min(max(0, int(tokens)), 2**31 - 1)


def _cost(usd: float | None) -> float | None:
    """A provider's cost as counted: never negative, never NaN or infinite."""
    if usd is None or not math.isfinite(usd):
        return None
    return max(0.0, usd)


def _check_budgets(task: TaskRecord) -> None:
    """`BudgetExhaustedError` when `task` may not make another model call."""
    if task.steps >= task.max_steps:
        raise BudgetExhaustedError(
            f"task {task.id} used its {task.max_steps} steps without finishing",
            hint="start it again with a larger max_steps, or a narrower goal",
        )
    if task.tokens >= task.max_tokens:
        raise BudgetExhaustedError(
            f"task {task.id} used {task.tokens} of its {task.max_tokens} tokens",
            hint="start it again with a larger max_tokens, or a narrower goal",
        )
    if task.max_cost_usd is not None and task.cost_usd >= task.max_cost_usd:
        raise BudgetExhaustedError(
            f"task {task.id} spent ${task.cost_usd:.4f} of its ${task.max_cost_usd:g}",
            hint="start it again with a larger max_cost_usd",
        )
    if task.active_seconds >= task.max_seconds:
        raise _out_of_time(task)


def _out_of_time(task: TaskRecord) -> BudgetExhaustedError:
    return BudgetExhaustedError(
        f"task {task.id} worked its {task.max_seconds:g} seconds without finishing",
        hint="start it again with a larger max_seconds",
    )


def _entries(goal: str, steps: Sequence[TaskStep]) -> list[HistoryEntry]:
    """The conversation a model call sees: the goal, then each step's reply and results."""
    entries = [HistoryEntry(Message.user(goal))]
    for step in steps:
        calls = [
            ToolCall(c["id"], c["name"], c.get("arguments") or {}, c.get("invalid_arguments"))
            for c in step.tool_calls
        ]
        entries.append(HistoryEntry(Message.assistant(step.thought, calls)))
        if calls:
            results = [
                ToolResult(
                    call.id,
                    step.results[call.id]["content"],
                    step.results[call.id]["status"] != "finished",
                    call.name,
                )
                for call in calls
            ]
            entries.append(HistoryEntry(Message.tool_outputs(results)))
    return entries


def _unique_ids(calls: Sequence[ToolCall], steps: Sequence[TaskStep]) -> list[ToolCall]:
    """`calls` with fresh ids where one is empty or was used before in the task, as stored
    (two ids that differ only by a NUL or a lone surrogate are one id once stored), and
    arguments holding numbers JSON has not (NaN, Infinity: Python's JSON reader takes them,
    PostgreSQL does not) kept as invalid arguments, which the tool refuses."""
    seen = {call["id"] for step in steps for call in step.tool_calls}
    unique = []
    for call in calls:
        call_id, arguments, invalid = call.id, call.arguments, call.invalid_arguments
        if not call_id or storable_text(call_id) != call_id or call_id in seen:
            call_id = new_call_id()
        try:
            json.dumps(arguments, allow_nan=False)
        except ValueError:
            arguments, invalid = {}, json.dumps(arguments)
        call = ToolCall(call_id, call.name, arguments, invalid)
        seen.add(call.id)
        unique.append(call)
    return unique
