"""Claiming slots and running them.

**Exactly once per slot.** A claim locks the due schedules (`FOR UPDATE SKIP LOCKED`: two
instances never hold one schedule at once, and neither waits for the other), inserts one run
per slot (unique on schedule and slot, so a slot taken once is never taken again), queues each
run's job, and moves `next_run_at` past them, all in one transaction: either all of it
happened, or none did and the next claim, on any instance, does it. A run's job is retried by
the job runtime when its worker dies (procrastinate's stalled jobs); what the action had done
before decides what happens then (a pipeline run started is never started twice: the start and
the link to it are one transaction; a call whose outcome is unknown is not repeated).

Late slots (the scheduler was down longer than `misfire_grace_seconds`) follow the schedule's
misfire policy; a slot that comes while a run is still going follows its concurrency policy.
"""

from __future__ import annotations

import asyncio
import json
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import structlog
from psycopg.types.json import Jsonb

from gathering.db import Database
from gathering.db.database import Queries
from gathering.db.named_queries import queries_of
from gathering.db.storable import storable_value
from gathering.errors import (
    ActionFailedError,
    DatabaseError,
    GatheringError,
    InvalidInputError,
    NotFoundError,
    PermissionDeniedError,
)
from gathering.events import Event, EventBus, outbox
from gathering.jobs import enqueue
from gathering.pipelines import get_pipeline
from gathering.pipelines.executor import Executor
from gathering.pipelines.store import pipeline_named
from gathering.scheduler.definition import (
    CallApi,
    ExecutePipeline,
    SendNotification,
)
from gathering.scheduler.goals.work import settle_goals
from gathering.scheduler.pipeline_triggers import PipelineTriggers
from gathering.scheduler.store import ScheduleRecord, ScheduleRun
from gathering.scheduler.tasks.store import (
    ENDED,
    MAX_GOAL_CHARS,
    TaskSpec,
    cancel_task,
    get_task,
    resume_answered,
    settle_stranded_tasks,
    start_task,
)
from gathering.scheduler.timing import plan_slots
from gathering.tools.egress import fetch, policy_from_settings, safe_url

log = structlog.get_logger(__name__)
_SQL = queries_of("gathering.scheduler")
RUN_TASK = "scheduler:run_slot"
QUEUE = "scheduler"
CLAIM_BATCH = 50  # schedules per claim transaction
SLOTS_PER_CLAIM = 100  # on-time slots of one schedule per claim; the rest at the next one
EVENTS_PER_CLAIM = 200  # events of one event schedule per claim; the rest at the next one
STRANDED_GRACE = 5.0  # seconds a run's job may have ended before the sweep settles the run
POSTPONE_SECONDS = 60.0  # how long a schedule that could not be claimed is put off
RUN_RETENTION_DAYS = 30  # runs that ended longer ago are deleted
PRUNE_EVERY = 600.0  # seconds between two prunings (on the duty's instance)


def _event(kind: str, schedule_id: int, body: dict[str, Any]) -> Event:
    return Event(
        kind,
        {"schedule_id": schedule_id, **body},
        subject=f"schedule:{schedule_id}",
        source="scheduler",
    )


def _run_event(run: ScheduleRun) -> Event:
    body: dict[str, Any] = {
        "run_id": run.id,
        "status": run.status,
        "slot_time": run.slot_time.isoformat(),
        "attempt": run.attempt,
    }
    if run.error:
        body["error"] = run.error
    return _event(f"schedule_run.{run.status}", run.schedule_id, body)


def _event_of(event: Event) -> dict[str, Any]:
    """`event` as a run stores it (and a pipeline run started for it gets as `input.event`)."""
    stored: dict[str, Any] = storable_value(
        {
            "id": str(event.id),
            "type": event.type,
            "subject": event.subject,
            "data": dict(event.data),
            "occurred_at": event.occurred_at.isoformat(),
        }
    )
    return stored


def _wanted(schedule: ScheduleRecord, event: Event, target: int | None) -> bool:
    """Whether `event` starts a run of event schedule `schedule`: its data holds the
    schedule's `match` (the same JSON values: `true` is not `1`, a missing key is not
    `null`), it came within `start_at` and `end_at`, and it is not a consequence of the
    schedule's own runs (their `schedule_run.*` events; the runs of the pipeline it starts),
    which would feed it for ever. `target`: the id of the pipeline it starts, if any."""
    spec = schedule.spec
    if event.type.startswith("schedule_run."):
        return False
    if target is not None and event.type.startswith("pipeline_"):
        if event.data.get("pipeline_id") == target:
            return False
    if spec.start_at is not None and event.occurred_at < spec.start_at:
        return False
    if spec.end_at is not None and event.occurred_at > spec.end_at:
        return False
    return all(
        key in event.data and _same_json(event.data[key], value)
        for key, value in (spec.match or {}).items()
    )


def _same_json(found: Any, wanted: Any) -> bool:
    """JSON equality: booleans, numbers, texts and null are different kinds of value."""
    if isinstance(wanted, bool) or wanted is None:
        return found is wanted
    if isinstance(wanted, int | float):
        return isinstance(found, int | float) and not isinstance(found, bool) and found == wanted
    return type(found) is type(wanted) and found == wanted


class Scheduler:
    """Claims due slots and runs them on `db`, publishing `schedule_run.*` events (subject
    `schedule:<id>`) through `bus`."""

    def __init__(self, db: Database, bus: EventBus | None) -> None:
        self.db = db
        self.bus = bus if bus is not None else EventBus(db)
        self.triggers = PipelineTriggers(db)
        self._next_prune = 0.0  # monotonic time of the next pruning

    # --- claiming -------------------------------------------------------------------------

    async def claim_due(self) -> int:
        """Claim every slot that has come, and every event an event schedule waits for; how
        many runs it queued (or recorded skipped)."""
        total = 0
        while True:
            schedules, runs = await self._claim_batch(CLAIM_BATCH)
            total += runs
            if schedules < CLAIM_BATCH:
                break
        after = 0
        while True:
            schedules, runs, after = await self._claim_events(CLAIM_BATCH, after)
            total += runs
            if schedules < CLAIM_BATCH:
                return total

    async def _claim_events(self, limit: int, after: int) -> tuple[int, int, int]:
        """Claim the new events of up to `limit` event schedules after id `after`:
        (schedules, runs, the last schedule's id). Each sees the events committed after its
        cursor, once: the cursor moves on in the transaction that inserts their runs (cursor
        order is commit order)."""
        async with self.db.transaction() as tx:
            rows = await tx.fetch_all(_SQL["event_schedules"], limit, after)
            if not rows:
                return 0, 0, after
            seen = int(await tx.fetch_val(_SQL["latest_cursor"]))  # all visible up to it
            events: list[Event] = []
            runs = 0
            for row in rows:
                mine: list[Event] = []
                try:
                    async with self.db.transaction():  # a savepoint
                        schedule = ScheduleRecord.from_row(row)
                        runs += await self._claim_event_batch(tx, schedule, seen, mine)
                except Exception:
                    log.exception("an event schedule could not be claimed", schedule_id=row["id"])
                    continue
                events += mine
            await self.bus.publish_many(events, tx=tx)
        return len(rows), runs, int(rows[-1]["id"])

    async def _claim_event_batch(
        self, tx: Queries, schedule: ScheduleRecord, seen: int, events: list[Event]
    ) -> int:
        spec = schedule.spec
        assert spec.event_type is not None and schedule.event_cursor is not None
        found = await outbox.read_since(
            tx, schedule.event_cursor, limit=EVENTS_PER_CLAIM, patterns=[spec.event_type]
        )
        cursor = schedule.event_cursor
        if found:
            cursor = max(cursor, found[-1].cursor or cursor)
        if len(found) < EVENTS_PER_CLAIM:
            cursor = max(cursor, seen)  # nothing else up to `seen` is of this type
        now = datetime.now(UTC)
        target = await self._target(tx, schedule) if found else None
        queued = inserted = 0
        left = True
        for event in found:
            limit = spec.max_executions
            if limit is not None and schedule.executions + queued >= limit:
                left = False
                break
            if not _wanted(schedule, event, target):
                continue
            run = await self._dispatch(
                tx, schedule, event.occurred_at, "event", "queued", None, events, event=event
            )
            if run is not None:
                inserted += 1
                queued += run.status == "queued"
        ended = spec.end_at is not None and now >= spec.end_at
        limit = spec.max_executions
        if limit is not None and schedule.executions + queued >= limit:
            left = False
        status = "expired" if ended or not left else "active"
        await tx.execute(_SQL["advance_events"], schedule.id, queued, cursor, status)
        return inserted

    async def _claim_batch(self, limit: int) -> tuple[int, int]:
        """Claim the slots of up to `limit` due schedules: (schedules, runs). A schedule that
        cannot be claimed (a definition this version cannot read) is put off for a minute,
        and the others are claimed all the same."""
        async with self.db.transaction() as tx:
            rows = await tx.fetch_all(_SQL["due_schedules"], limit)
            if not rows:
                return 0, 0
            now = await tx.fetch_val("SELECT now()")
            events: list[Event] = []
            runs = 0
            for row in rows:
                mine: list[Event] = []
                try:
                    async with self.db.transaction():  # a savepoint
                        runs += await self._claim(tx, ScheduleRecord.from_row(row), now, mine)
                except Exception:
                    log.exception("a schedule could not be claimed", schedule_id=row["id"])
                    await tx.execute(_SQL["postpone_schedule"], row["id"], POSTPONE_SECONDS)
                    continue
                events += mine
            await self.bus.publish_many(events, tx=tx)
        return len(rows), runs

    async def _claim(
        self, tx: Queries, schedule: ScheduleRecord, now: datetime, events: list[Event]
    ) -> int:
        """Claim `schedule`'s slots up to `now`; how many runs it inserted."""
        spec = schedule.spec
        assert schedule.next_run_at is not None
        plan = await asyncio.to_thread(
            plan_slots,
            spec,
            schedule.anchor,
            schedule.next_run_at,
            now,
            keep=spec.catch_up_max if spec.misfire == "catch_up" else 1,
            on_time_at_most=SLOTS_PER_CLAIM,
        )
        runs: list[tuple[datetime, str, dict[str, Any] | None]] = []
        if plan.late:
            if spec.misfire == "skip":
                count = f"at least {plan.missed}" if plan.jumped else str(plan.missed)
                message = f"{count} slot(s) were missed (the scheduler was not running)"
                runs.append((plan.late[-1], "skipped", {"code": "misfire", "message": message}))
            else:
                runs += [(at, "queued", None) for at in plan.late]
        runs += [(at, "queued", None) for at in plan.on_time]
        queued = inserted = 0
        for at, status, error in runs:
            limit = spec.max_executions
            if status == "queued" and limit is not None and schedule.executions + queued >= limit:
                break
            run = await self._dispatch(tx, schedule, at, "slot", status, error, events)
            if run is not None:
                inserted += 1
                queued += run.status == "queued"
        following = plan.following
        left = spec.max_executions is None or schedule.executions + queued < spec.max_executions
        if following is None or not left:
            await tx.execute(_SQL["advance_schedule"], schedule.id, queued, None, "expired")
        else:
            await tx.execute(_SQL["advance_schedule"], schedule.id, queued, following, "active")
        return inserted

    @staticmethod
    async def _target(tx: Queries, schedule: ScheduleRecord) -> int | None:
        """The id of the pipeline `schedule` starts (None: none, or none of that name)."""
        if schedule.spec.action != "execute_pipeline":
            return None
        reference = schedule.spec.config.get("pipeline")
        if isinstance(reference, int):
            return reference
        try:
            return (await pipeline_named(tx, schedule.owner_id, str(reference))).id
        except NotFoundError:
            return None

    async def trigger(self, schedule: ScheduleRecord) -> ScheduleRun:
        """Run `schedule` now, outside its slots (its concurrency policy applies); the run.
        Holds the schedule's row, as a claim does: triggers and claims take turns."""
        async with self.db.transaction() as tx:
            row = await tx.fetch_one(_SQL["lock_schedule"], schedule.id)
            if row is None:
                raise NotFoundError(f"no schedule {schedule.id}")
            schedule = ScheduleRecord.from_row(row)
            now = await tx.fetch_val("SELECT clock_timestamp()")
            events: list[Event] = []
            run = await self._dispatch(tx, schedule, now, "manual", "queued", None, events)
            await self.bus.publish_many(events, tx=tx)
        assert run is not None  # an instant of its own: never taken
        return run

    async def _dispatch(
        self,
        tx: Queries,
        schedule: ScheduleRecord,
        at: datetime,
        trigger: str,
        status: str,
        error: dict[str, Any] | None,
        events: list[Event],
        *,
        event: Event | None = None,
    ) -> ScheduleRun | None:
        """Insert the run of `schedule` for slot `at` (or for `event`) and queue its job (its
        concurrency policy first); None when that slot, or event, has a run already."""
        if status == "queued" and schedule.spec.concurrency != "allow":
            going = [
                ScheduleRun.from_row(r) for r in await tx.fetch_all(_SQL["open_runs"], schedule.id)
            ]
            if going and schedule.spec.concurrency == "forbid":
                status = "skipped"
                error = {
                    "code": "overlap",
                    "message": f"run {going[0].id} was still going (concurrency: forbid)",
                }
            for old in going if schedule.spec.concurrency == "replace" else []:
                await self._replace(tx, old, events)
        problem = None if error is None else Jsonb(error)
        if event is not None:
            row = await tx.fetch_one(
                _SQL["insert_event_run"],
                schedule.id,
                event.id,
                at,
                Jsonb(_event_of(event)),
                status,
                problem,
            )
        else:
            row = await tx.fetch_one(
                _SQL["insert_run"],
                schedule.id,
                at,
                trigger,
                status,
                problem,
            )
        if row is None:
            return None
        run = ScheduleRun.from_row(row)
        if status == "queued":
            job = await enqueue(tx, RUN_TASK, {"run_id": run.id}, queue=QUEUE)
            await tx.execute(_SQL["set_run_job"], run.id, job)
        events.append(_run_event(run))
        return run

    async def _replace(self, tx: Queries, stale: ScheduleRun, events: list[Event]) -> None:
        """Cancel a run, replaced by a newer one: its job is asked to stop, and the pipeline
        run it started is cancelled. Read again under its lock: it may have moved on (ended,
        or started its pipeline run) since it was listed."""
        locked = await tx.fetch_one(_SQL["lock_run"], stale.id)
        if locked is None or locked["status"] not in ("queued", "running"):
            return  # it ended meanwhile: nothing to replace
        old = ScheduleRun.from_row(locked)
        error = {"code": "replaced", "message": "a newer run replaced it (concurrency: replace)"}
        row = await tx.fetch_one(_SQL["finish_run"], old.id, "cancelled", None, Jsonb(error))
        if old.job_id is not None:
            await tx.fetch_one("SELECT procrastinate_cancel_job_v1($1, true, false)", old.job_id)
        if old.task_id is not None and (await get_task(tx, old.task_id)).status not in ENDED:
            await cancel_task(self.db, self.bus, old.task_id)
        if old.pipeline_run_id is not None:
            pipeline_run = await tx.fetch_one(
                "SELECT status FROM pipeline.runs WHERE id = $1", old.pipeline_run_id
            )
            if pipeline_run is not None and pipeline_run["status"] == "running":
                await Executor(self.db, self.bus).cancel_run(
                    old.pipeline_run_id, reason="a newer scheduled run replaced it"
                )
        assert row is not None
        events.append(_run_event(ScheduleRun.from_row(row)))

    # --- running --------------------------------------------------------------------------

    async def run(self, run_id: int, job_id: int) -> None:
        """The job of run `run_id`: start its attempt, do the action, store the outcome."""
        async with self.db.transaction() as tx:
            row = await tx.fetch_one(_SQL["lock_run"], run_id)
            if row is None or row["job_id"] != job_id:
                return  # deleted, finished, or superseded by a newer job
            run = ScheduleRun.from_row(row)
            schedule_row = await tx.fetch_one(_SQL["schedule_by_id"], run.schedule_id)
            assert schedule_row is not None  # runs go with their schedule
            schedule = ScheduleRecord.from_row(schedule_row)
            events: list[Event] = []
            if run.status == "running":  # its worker died mid-attempt
                if schedule.spec.action == "call_api":
                    error = {
                        "code": "outcome_unknown",
                        "message": "the run's worker stopped during the call: it may or may "
                        "not have been made, and is not repeated",
                    }
                    await self._finish(tx, run, "failed", None, error, events)
                    await self.bus.publish_many(events, tx=tx)
                    return
            elif run.status == "queued":
                started = await tx.fetch_one(_SQL["start_run"], run_id)
                assert started is not None
                run = ScheduleRun.from_row(started)
                events.append(_run_event(run))
            else:
                return
            await self.bus.publish_many(events, tx=tx)
        try:
            await self._act(schedule, run)
        except GatheringError as exc:
            error = {"code": exc.code, "message": exc.message}
            # Trying again cannot help a refusal (a policy, a missing pipeline), and would
            # repeat an effect whose outcome is unknown.
            retry = getattr(exc, "retryable", True) and not isinstance(
                exc, InvalidInputError | NotFoundError | PermissionDeniedError
            )
            async with self.db.transaction() as tx:
                current = await self._still_mine(tx, run_id, job_id)
                if current is not None:
                    events = []
                    await self._fail(tx, schedule, current, error, events, retry=retry)
                    await self.bus.publish_many(events, tx=tx)

    async def _act(self, schedule: ScheduleRecord, run: ScheduleRun) -> None:
        spec = schedule.spec
        if spec.action == "execute_pipeline":
            await self._start_pipeline(schedule, run, ExecutePipeline.model_validate(spec.config))
        elif spec.action == "send_notification":
            await self._notify(schedule, run, SendNotification.model_validate(spec.config))
        elif spec.action == "call_api":
            await self._call(schedule, run, CallApi.model_validate(spec.config))
        elif spec.action == "run_task":
            await self._start_task(schedule, run, TaskSpec.model_validate(spec.config))
        else:  # refused when the schedule was made; a schedule stored by a newer version
            raise ActionFailedError(
                f"this version cannot run {spec.action!r} actions", code="not_available"
            )

    async def _start_pipeline(
        self, schedule: ScheduleRecord, run: ScheduleRun, config: ExecutePipeline
    ) -> None:
        """Start the pipeline run and link it, in one transaction (a repeat after a crash
        finds it linked); the run ends when that pipeline run ends (`settle_started`)."""
        async with self.db.transaction() as tx:
            current = await self._still_mine(tx, run.id, run.job_id)
            if current is None:
                return
            if isinstance(config.pipeline, int):
                pipeline = await get_pipeline(tx, config.pipeline)
                if pipeline.owner_id != schedule.owner_id:
                    raise NotFoundError(f"no pipeline {config.pipeline}")
            else:
                pipeline = await pipeline_named(tx, schedule.owner_id, config.pipeline)
            run_input = dict(config.input)
            if run.event is not None:  # an event schedule's run: the pipeline gets the event
                run_input["event"] = run.event
            started = await Executor(self.db, self.bus).start_run(
                pipeline.id, pipeline.version, schedule.owner_id, run_input, trigger="schedule"
            )
            output = {"pipeline_run_id": started.id, "pipeline_id": pipeline.id}
            await tx.execute(_SQL["link_pipeline_run"], run.id, started.id, Jsonb(output))

    async def _start_task(self, schedule: ScheduleRecord, run: ScheduleRun, spec: TaskSpec) -> None:
        """Start the background task and link it, in one transaction; the run ends when the
        task ends (`settle_started`). An event schedule's task gets the event after its goal."""
        async with self.db.transaction() as tx:
            current = await self._still_mine(tx, run.id, run.job_id)
            if current is None:
                return
            if run.event is not None:
                event = json.dumps(run.event, ensure_ascii=False)
                goal = f"{spec.goal}\n\nThe event: {event}"[:MAX_GOAL_CHARS]
                spec = spec.model_copy(update={"goal": goal})
            task = await start_task(self.db, self.bus, schedule.owner_id, spec)
            output = {"task_id": task.id}
            await tx.execute(_SQL["link_task"], run.id, task.id, Jsonb(output))

    async def _notify(
        self, schedule: ScheduleRecord, run: ScheduleRun, config: SendNotification
    ) -> None:
        """The notification event and the run's success, in one transaction."""
        async with self.db.transaction() as tx:
            current = await self._still_mine(tx, run.id, run.job_id)
            if current is None:
                return
            notification = Event(
                "notification",
                {
                    "title": config.title,
                    "message": config.message,
                    "level": config.level,
                    "schedule_id": schedule.id,
                    "run_id": run.id,
                },
                subject=f"user:{schedule.owner_id}",
                source="scheduler",
            )
            events = [notification]
            output = {"event_id": str(notification.id)}
            await self._finish(tx, current, "succeeded", output, None, events)
            await self.bus.publish_many(events, tx=tx)

    async def _call(self, schedule: ScheduleRecord, run: ScheduleRun, config: CallApi) -> None:
        """One HTTP request through the egress policy. An answer of 4xx or 5xx fails the run
        (tried again under its retries: the server said no); no answer at all (a timeout, a
        broken connection) fails it with `outcome_unknown`, never repeated."""
        body = None if config.body is None else json.dumps(config.body)
        headers = {"Content-Type": "application/json"} if body is not None else None
        try:
            result = await fetch(
                config.method, config.url, policy_from_settings(), body=body, headers=headers
            )
        except InvalidInputError:
            raise  # refused before sending (the egress policy): nothing was sent
        except GatheringError as exc:
            raise ActionFailedError(
                f"{config.method} {safe_url(config.url)} got no answer ({exc.message}): it may "
                "or may not have been received, and is not repeated",
                code="outcome_unknown",
                retryable=False,
            ) from None
        if result.status >= 400:
            raise ActionFailedError(
                f"{config.method} {safe_url(config.url)} answered {result.status}",
                code=f"http_{result.status}",
            )
        output = storable_value({"status": result.status, "body": result.text()[:100_000]})
        try:
            async with self.db.transaction() as tx:
                current = await self._still_mine(tx, run.id, run.job_id)
                if current is not None:
                    events: list[Event] = []
                    await self._finish(tx, current, "succeeded", output, None, events)
                    await self.bus.publish_many(events, tx=tx)
        except DatabaseError as exc:  # the call was made: never repeat it for this
            raise ActionFailedError(
                f"the call was made but its answer could not be stored: {exc.message}",
                code="output_not_stored",
                retryable=False,
            ) from None

    async def _still_mine(self, tx: Queries, run_id: int, job_id: int | None) -> ScheduleRun | None:
        """Run `run_id`, locked, when it is still running under `job_id` (not cancelled or
        replaced meanwhile)."""
        row = await tx.fetch_one(_SQL["lock_run"], run_id)
        if row is None or row["status"] != "running" or row["job_id"] != job_id:
            return None
        return ScheduleRun.from_row(row)

    async def _finish(
        self,
        tx: Queries,
        run: ScheduleRun,
        status: str,
        output: Any,
        error: dict[str, Any] | None,
        events: list[Event],
    ) -> None:
        row = await tx.fetch_one(
            _SQL["finish_run"],
            run.id,
            status,
            None if output is None else Jsonb(output),
            None if error is None else Jsonb(error),
        )
        if row is not None:  # (None: it had ended already)
            events.append(_run_event(ScheduleRun.from_row(row)))

    async def _fail(
        self,
        tx: Queries,
        schedule: ScheduleRecord,
        run: ScheduleRun,
        error: dict[str, Any],
        events: list[Event],
        *,
        retry: bool = True,
    ) -> None:
        """A failed attempt: queued again after its backoff while retries are left (and
        `retry` allows), else the run fails with the error kept."""
        spec = schedule.spec
        if retry and run.attempt <= spec.max_retries:
            wait = spec.retry_backoff_seconds * 2 ** (run.attempt - 1)
            at = await tx.fetch_val("SELECT now()") + timedelta(seconds=wait)
            job = await enqueue(tx, RUN_TASK, {"run_id": run.id}, queue=QUEUE, at=at)
            row = await tx.fetch_one(_SQL["retry_run"], run.id, Jsonb(error), job)
            assert row is not None
            events.append(_run_event(ScheduleRun.from_row(row)))
            return
        await self._finish(tx, run, "failed", None, error, events)

    # --- the sweep ------------------------------------------------------------------------

    async def settle_started(self, limit: int = 100) -> int:
        """End the runs whose pipeline run or background task has ended, with its status (a
        failed one may be tried again); how many."""
        rows = await self.db.fetch_all(_SQL["ended_targets"], limit)
        for row in rows:
            async with self.db.transaction() as tx:
                locked = await tx.fetch_one(_SQL["lock_run"], row["id"])
                if locked is None or locked["status"] != "running":
                    continue
                run = ScheduleRun.from_row(locked)
                schedule_row = await tx.fetch_one(_SQL["schedule_by_id"], run.schedule_id)
                assert schedule_row is not None
                schedule = ScheduleRecord.from_row(schedule_row)
                events: list[Event] = []
                outcome, target = row["target_status"], row["target"]
                kind = target.split()[0]  # pipeline, task
                if outcome == "succeeded":
                    await self._finish(tx, run, "succeeded", None, None, events)
                elif outcome == "cancelled":  # a person's decision: not tried again
                    error = {"code": f"{kind}_cancelled", "message": f"{target} was cancelled"}
                    await self._finish(tx, run, "cancelled", None, error, events)
                else:
                    cause = row["target_error"] or {}
                    error = {
                        "code": f"{kind}_" + (outcome or "deleted"),
                        "message": f"{target} {outcome or 'was deleted'}: "
                        f"{cause.get('message', '')}".rstrip(": "),
                    }
                    await self._fail(tx, schedule, run, error, events)
                await self.bus.publish_many(events, tx=tx)
        return len(rows)

    async def settle_stranded(self, limit: int = 100) -> int:
        """Settle the runs whose job ended without doing so (its worker died for good, a
        person cancelled it); how many."""
        rows = await self.db.fetch_all(_SQL["stranded_runs"], limit, STRANDED_GRACE)
        for row in rows:
            async with self.db.transaction() as tx:
                locked = await tx.fetch_one(_SQL["lock_run"], row["id"])
                if locked is None or locked["status"] not in ("queued", "running"):
                    continue
                run = ScheduleRun.from_row(locked)
                events: list[Event] = []
                if row["job_status"] in ("cancelled", "aborted"):
                    error = {"code": "cancelled", "message": "the run's job was cancelled"}
                    await self._finish(tx, run, "cancelled", None, error, events)
                else:
                    error = {"code": "interrupted", "message": "the run's job ended mid-run"}
                    await self._finish(tx, run, "failed", None, error, events)
                await self.bus.publish_many(events, tx=tx)
        return len(rows)

    async def prune(self) -> int:
        """Delete the runs that ended more than `RUN_RETENTION_DAYS` ago; how many."""
        deleted = 0
        while True:
            rows = await self.db.fetch_all(_SQL["prune_runs"], RUN_RETENTION_DAYS, 1_000)
            deleted += len(rows)
            if len(rows) < 1_000:
                return deleted

    async def tick(self) -> None:
        """One round of the scheduler duty: claim what is due, settle what ended, queue the
        background tasks whose approvals were answered, move started goals on, and now and
        then forget old runs.
        Pipelines' trigger schedules are brought in line first."""
        await self.triggers.sync()
        await self.claim_due()
        await self.settle_started()
        await resume_answered(self.db, self.bus)
        await settle_stranded_tasks(self.db, self.bus)
        await settle_goals(self.db, self.bus)
        await self.settle_stranded()
        if time.monotonic() >= self._next_prune:
            self._next_prune = time.monotonic() + PRUNE_EVERY
            await self.prune()
