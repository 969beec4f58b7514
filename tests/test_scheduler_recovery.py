"""The scheduler: action dispatch (a pipeline run, a notification, an API call through the
egress policy), crash recovery (slots missed while no scheduler ran, runs whose worker died or
whose job was cancelled), deduplication (each slot once, whatever claims it and however many
claim at once), and races (overlapping runs, pause, expiry). Runs go through the real job
runtime on the test's database; time is moved by putting `next_run_at` in the past."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from itertools import pairwise
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from pipeline_runtime import LAB, TOOLS, linear, tool_node

from gathering.agents.retrieval import local_owner_id
from gathering.config import get_settings
from gathering.db import Database
from gathering.errors import InvalidInputError
from gathering.events import Event, EventBus
from gathering.jobs import JobQueue, JobServices, JobWorker
from gathering.pipelines import create_pipeline
from gathering.pipelines.executor import Executor
from gathering.pipelines.jobs import blueprint as pipelines_blueprint
from gathering.pipelines.runs import get_run
from gathering.scheduler import (
    Scheduler,
    ScheduleRecord,
    apply_schedule,
    create_schedule,
    get_schedule,
    list_schedule_runs,
    next_fire,
    parse_spec,
    pause_schedule,
    preview,
    replace_schedule,
    resume_schedule,
    schedule_named,
)
from gathering.scheduler import runner as runner_module
from gathering.scheduler.definition import ACTIONS
from gathering.scheduler.jobs import blueprint as scheduler_blueprint
from gathering.tools import egress
from gathering.tools import registry as registry_module

pytestmark = pytest.mark.integration

NOTIFY = {"action": "send_notification", "config": {"title": "hello"}}
DAY_AGO = datetime.now(UTC).replace(microsecond=0) - timedelta(days=1)  # an interval's anchor


@dataclass
class Lab:
    db: Database
    bus: EventBus
    queue: JobQueue
    scheduler: Scheduler
    owner_id: int
    events: list[Event]

    async def schedule(self, name: str = "s", **spec: Any) -> ScheduleRecord:
        return await create_schedule(self.db, self.owner_id, name, spec)

    async def due_since(self, schedule: ScheduleRecord, seconds: float) -> None:
        """Make the schedule's next slot the first one of the last `seconds` (a scheduler that
        did not run meanwhile)."""
        since = datetime.now(UTC) - timedelta(seconds=seconds, microseconds=1)
        first = next_fire(schedule.spec, schedule.anchor, since)
        await self.db.execute(
            "UPDATE scheduler.schedules SET next_run_at = $2 WHERE id = $1", schedule.id, first
        )

    async def runs(self, schedule: ScheduleRecord) -> list[dict[str, Any]]:
        rows = await self.db.fetch_all(
            "SELECT * FROM scheduler.runs WHERE schedule_id = $1 ORDER BY slot_time, id",
            schedule.id,
        )
        return list(rows)

    async def settled(self, schedule: ScheduleRecord, count: int, limit: float = 20) -> list[Any]:
        """Wait until `count` runs of `schedule` have ended (settling pipeline runs meanwhile)."""
        deadline = time.monotonic() + limit
        while True:
            await self.scheduler.settle_started()
            runs = await self.runs(schedule)
            ended = [r for r in runs if r["status"] not in ("queued", "running")]
            if len(ended) >= count:
                return runs
            if time.monotonic() > deadline:
                raise AssertionError(f"runs did not end: {runs}")
            await asyncio.sleep(0.05)


@pytest.fixture
async def lab(migrated_database_url: str) -> AsyncIterator[Lab]:
    for tool in TOOLS:
        registry_module.registry.register(tool)
    for state in (LAB.calls, LAB.failures_left, LAB.gates, LAB.started):
        state.clear()
    db = Database(migrated_database_url)
    await db.connect()
    bus = EventBus(db, poll_interval=0.2)
    await bus.start()
    events: list[Event] = []
    subscription = bus.subscribe(["schedule_run.*", "notification"], events.append)
    queue = await JobQueue(
        db, blueprints={"pipelines": pipelines_blueprint, "scheduler": scheduler_blueprint}
    ).open()
    worker = JobWorker(queue, JobServices(db, bus), concurrency=4, shutdown_timeout=0.5)
    await worker.start()
    try:
        yield Lab(db, bus, queue, Scheduler(db, bus), await local_owner_id(db), events)
    finally:
        for gate in LAB.gates.values():
            gate.set()
        await worker.stop()
        subscription.unsubscribe()
        await queue.close()
        await bus.close(grace=1)
        await db.disconnect()
        for tool in TOOLS:
            registry_module.registry.unregister(tool.name)


# --- definitions and dispatch ---------------------------------------------------------------


def test_four_action_kinds_exist_and_each_checks_its_config() -> None:
    assert ACTIONS == ("run_task", "execute_pipeline", "send_notification", "call_api")
    with pytest.raises(InvalidInputError, match=r"config\.agent"):
        parse_spec({"kind": "once", "at": "2030-01-01T00:00:00Z", "action": "run_task"})
    with pytest.raises(InvalidInputError, match="needs `event_type`"):
        parse_spec({"kind": "event", **NOTIFY})


@pytest.mark.parametrize(
    ("spec", "mistake"),
    [
        ({"kind": "cron", **NOTIFY}, "needs `cron`"),
        ({"kind": "cron", "cron": "61 * * * *", **NOTIFY}, "invalid cron"),
        ({"kind": "cron", "cron": "* * * * *", "timezone": "Mars/Olympus", **NOTIFY}, "time zone"),
        ({"kind": "once", "at": "2030-01-01T00:00:00", **NOTIFY}, "time zone"),
        ({"kind": "interval", "every_seconds": 0.5, **NOTIFY}, "every_seconds"),
        ({"kind": "interval", "every_seconds": 5, "cron": "* * * * *", **NOTIFY}, "kind cron"),
        ({"kind": "once", "at": "2030-01-01T00:00:00Z", "action": "call_api"}, "config.url"),
        ({"kind": "once", "at": "2030-01-01T00:00:00Z", "action": "nope"}, "action"),
        ({"kind": "once", "at": "2030-01-01T00:00:00Z", "surprise": 1, **NOTIFY}, "surprise"),
    ],
)
def test_a_wrong_schedule_is_refused_naming_the_mistake(spec: dict[str, Any], mistake: str) -> None:
    with pytest.raises(InvalidInputError, match=mistake):
        parse_spec(spec)


async def test_execute_pipeline_starts_a_run_and_ends_with_it(lab: Lab) -> None:
    record = await create_pipeline(
        lab.db, linear(tool_node("a", "echo", text="tick")), owner_id=lab.owner_id
    )
    schedule = await lab.schedule(
        kind="interval",
        every_seconds=3600,
        action="execute_pipeline",
        config={"pipeline": str(record.id), "input": {}},  # "42" is pipeline 42
    )
    assert schedule.spec.config["pipeline"] == record.id
    await lab.due_since(schedule, 1)
    assert await lab.scheduler.claim_due() == 1
    [run] = await lab.settled(schedule, 1)
    assert run["status"] == "succeeded", run
    pipeline_run = await get_run(lab.db, run["pipeline_run_id"])
    assert pipeline_run.status == "succeeded" and pipeline_run.trigger == "schedule"
    assert run["output"] == {"pipeline_run_id": pipeline_run.id, "pipeline_id": record.id}


async def test_a_failed_pipeline_run_fails_the_scheduled_run_with_its_error(lab: Lab) -> None:
    LAB.failures_left["k"] = 5
    await create_pipeline(
        lab.db, linear(tool_node("a", "flaky", key="k"), name="down"), owner_id=lab.owner_id
    )
    schedule = await lab.schedule(
        kind="interval",
        every_seconds=3600,
        action="execute_pipeline",
        config={"pipeline": "down"},
    )
    await lab.due_since(schedule, 1)
    await lab.scheduler.claim_due()
    [run] = await lab.settled(schedule, 1)
    assert run["status"] == "failed"
    assert run["error"]["code"] == "pipeline_failed" and "failed on purpose" not in run["error"]


async def test_send_notification_publishes_to_the_owner(lab: Lab) -> None:
    schedule = await lab.schedule(kind="interval", every_seconds=3600, **NOTIFY)
    await lab.due_since(schedule, 1)
    await lab.scheduler.claim_due()
    [run] = await lab.settled(schedule, 1)
    assert run["status"] == "succeeded"
    for _ in range(100):
        notes = [e for e in lab.events if e.type == "notification"]
        if notes:
            break
        await asyncio.sleep(0.02)
    [note] = notes
    assert note.subject == f"user:{lab.owner_id}" and note.data["title"] == "hello"
    assert run["output"] == {"event_id": str(note.id)}


@pytest.fixture
async def api() -> AsyncIterator[tuple[str, list[int]]]:
    """A loopback HTTP server answering with the statuses queued in the list (200 when
    empty), allowed by the egress policy."""
    statuses: list[int] = []

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        status = statuses.pop(0) if statuses else 200
        writer.write(f"HTTP/1.1 {status} X\r\nContent-Length: 2\r\n\r\nok".encode())
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(answer, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("GATHERING_EGRESS_ALLOWED_NETWORKS", "127.0.0.1/32")
        patch.setenv("GATHERING_EGRESS_ALLOWED_PORTS", str(port))
        get_settings.cache_clear()
        try:
            yield f"http://127.0.0.1:{port}/hook", statuses
        finally:
            server.close()
            get_settings.cache_clear()


async def test_call_api_goes_through_the_egress_policy(lab: Lab, api: Any) -> None:
    url, _ = api
    schedule = await lab.schedule(
        kind="interval",
        every_seconds=3600,
        action="call_api",
        config={"url": url, "body": {"x": 1}},
    )
    await lab.due_since(schedule, 1)
    await lab.scheduler.claim_due()
    [run] = await lab.settled(schedule, 1)
    assert run["status"] == "succeeded", run
    assert run["output"] == {"status": 200, "body": "ok"}


async def test_a_failing_call_is_retried_with_backoff_then_fails_with_its_error(
    lab: Lab, api: Any
) -> None:
    url, statuses = api
    statuses += [503, 503]
    schedule = await lab.schedule(
        kind="interval",
        every_seconds=3600,
        action="call_api",
        config={"url": url},
        max_retries=1,
        retry_backoff_seconds=0,
    )
    await lab.due_since(schedule, 1)
    await lab.scheduler.claim_due()
    [run] = await lab.settled(schedule, 1)
    assert (run["status"], run["attempt"]) == ("failed", 2)
    assert run["error"]["code"] == "http_503"


async def test_the_metadata_address_is_refused_to_call_api(lab: Lab) -> None:
    schedule = await lab.schedule(
        kind="interval",
        every_seconds=3600,
        action="call_api",
        config={"url": "http://169.254.169.254/latest/meta-data/"},
    )
    await lab.due_since(schedule, 1)
    await lab.scheduler.claim_due()
    [run] = await lab.settled(schedule, 1)
    assert run["status"] == "failed" and "169.254.169.254" in run["error"]["message"]


# --- time -----------------------------------------------------------------------------------


def test_a_cron_schedule_fires_at_the_right_instants_across_dst_in_paris() -> None:
    paris = ZoneInfo("Europe/Paris")
    spec = parse_spec({"kind": "cron", "cron": "30 2 * * *", "timezone": "Europe/Paris", **NOTIFY})
    spring = preview(spec, datetime.now(UTC), datetime(2026, 3, 28, 12, tzinfo=UTC), 2)
    # 02:30 does not exist on 29 March: the slot is 03:00 local, then 02:30 again.
    assert [t.astimezone(paris).isoformat() for t in spring] == [
        "2026-03-29T03:00:00+02:00",
        "2026-03-30T02:30:00+02:00",
    ]
    autumn = preview(spec, datetime.now(UTC), datetime(2026, 10, 24, 12, tzinfo=UTC), 2)
    assert autumn == [  # 02:30 happens twice on 25 October: it fires once
        datetime(2026, 10, 25, 0, 30, tzinfo=UTC),
        datetime(2026, 10, 26, 1, 30, tzinfo=UTC),
    ]
    hourly = parse_spec({"kind": "cron", "cron": "0 * * * *", "timezone": "Europe/Paris", **NOTIFY})
    hours = preview(hourly, datetime.now(UTC), datetime(2026, 10, 24, 23, 30, tzinfo=UTC), 4)
    assert [t.hour for t in hours] == [0, 1, 2, 3]  # UTC: every real hour, none twice


def test_interval_slots_are_anchored_and_never_drift() -> None:
    start = datetime(2026, 1, 1, tzinfo=UTC)
    spec = parse_spec({"kind": "interval", "every_seconds": 7, "start_at": start, **NOTIFY})
    late = start + timedelta(seconds=15.9)  # a claim that came late
    assert preview(spec, start, late, 3) == [start + timedelta(seconds=s) for s in (21, 28, 35)]


async def test_lifetime_start_end_and_max_executions(lab: Lab) -> None:
    now = datetime.now(UTC)
    with pytest.raises(InvalidInputError, match="would never fire: `end_at` has passed"):
        await lab.schedule(
            "over", kind="interval", every_seconds=60, end_at=now - timedelta(hours=1), **NOTIFY
        )
    with pytest.raises(InvalidInputError, match="`at` has passed"):
        await lab.schedule("past", kind="once", at=now - timedelta(seconds=1), **NOTIFY)
    later = await lab.schedule(
        "later", kind="interval", every_seconds=60, start_at=now + timedelta(days=1), **NOTIFY
    )
    assert later.next_run_at == now + timedelta(days=1)
    twice = await lab.schedule(
        "twice", kind="interval", every_seconds=1, max_executions=2, start_at=DAY_AGO, **NOTIFY
    )
    await lab.due_since(twice, 2.5)  # two or three slots due, two allowed
    await lab.scheduler.claim_due()
    assert len(await lab.runs(twice)) == 2
    assert (await get_schedule(lab.db, twice.id)).status == "expired"


async def test_a_once_schedule_runs_once_then_expires(lab: Lab) -> None:
    once = await lab.schedule(kind="once", at=datetime.now(UTC) + timedelta(seconds=1), **NOTIFY)
    await asyncio.sleep(1.1)
    await lab.scheduler.claim_due()
    await lab.scheduler.claim_due()
    assert len(await lab.runs(once)) == 1
    assert (await get_schedule(lab.db, once.id)).status == "expired"


# --- crash recovery: slots missed while no scheduler ran -------------------------------------


@pytest.mark.parametrize("misfire", ["skip", "run_once", "catch_up"])
async def test_missed_slots_follow_the_misfire_policy(lab: Lab, misfire: str) -> None:
    # Slots every minute, the latest 45 s ago: late, past a grace of 30 s.
    start = datetime.now(UTC) - timedelta(days=1, seconds=45)
    schedule = await lab.schedule(
        kind="interval",
        every_seconds=60,
        start_at=start,
        misfire=misfire,
        catch_up_max=3,
        misfire_grace_seconds=30,
        **NOTIFY,
    )
    await lab.due_since(schedule, 60 * 9 + 46)  # ten slots missed
    await lab.scheduler.claim_due()
    runs = await lab.runs(schedule)
    latest = [start + timedelta(days=1) - timedelta(minutes=m) for m in (2, 1, 0)]
    if misfire == "skip":
        [run] = runs
        assert run["status"] == "skipped" and run["slot_time"] == latest[-1]
        assert run["error"] == {
            "code": "misfire",
            "message": "10 slot(s) were missed (the scheduler was not running)",
        }
    elif misfire == "run_once":
        assert [r["slot_time"] for r in runs] == latest[-1:]
        assert runs[0]["error"] is None
    else:
        assert [r["slot_time"] for r in runs] == latest
    after = await get_schedule(lab.db, schedule.id)
    assert after.next_run_at == latest[-1] + timedelta(minutes=1)


async def test_slots_on_time_all_run_whatever_the_misfire_policy(lab: Lab) -> None:
    schedule = await lab.schedule(
        kind="interval", every_seconds=1, start_at=DAY_AGO, misfire="skip", **NOTIFY
    )
    await lab.due_since(schedule, 4.5)  # four or five slots, all within the grace
    await lab.scheduler.claim_due()
    slots = [r["slot_time"] for r in await lab.runs(schedule)]
    assert len(slots) >= 4
    assert all(b - a == timedelta(seconds=1) for a, b in pairwise(slots))
    assert all(r["error"] is None for r in await lab.runs(schedule))


async def test_a_slot_that_has_a_run_is_never_taken_again(lab: Lab) -> None:
    schedule = await lab.schedule(kind="interval", every_seconds=3600, **NOTIFY)
    await lab.due_since(schedule, 1)
    await lab.scheduler.claim_due()
    [first] = await lab.runs(schedule)
    # A claim that comes back with the same slot (its instance's commit was not seen, a
    # clock reset): the slot's run is there already.
    await lab.db.execute(
        "UPDATE scheduler.schedules SET next_run_at = $2 WHERE id = $1",
        schedule.id,
        first["slot_time"],
    )
    await lab.scheduler.claim_due()
    assert [r["id"] for r in await lab.runs(schedule)] == [first["id"]]


# --- crash recovery: runs whose worker died ---------------------------------------------------


async def test_a_notification_interrupted_before_it_was_stored_is_sent_once(lab: Lab) -> None:
    schedule = await lab.schedule(kind="interval", every_seconds=3600, **NOTIFY)
    run = await _running_without_worker(lab, schedule)
    job = await _job_of(lab, run)
    await lab.scheduler.run(run, job)
    await lab.scheduler.run(run, job)  # a late repeat: the run is over
    [stored] = await lab.runs(schedule)
    assert stored["status"] == "succeeded"
    await asyncio.sleep(0.3)
    assert len([e for e in lab.events if e.type == "notification"]) == 1


async def test_an_interrupted_api_call_is_not_repeated(lab: Lab, api: Any) -> None:
    url, _ = api
    schedule = await lab.schedule(
        kind="interval", every_seconds=3600, action="call_api", config={"url": url}
    )
    run = await _running_without_worker(lab, schedule)
    await lab.scheduler.run(run, await _job_of(lab, run))
    [stored] = await lab.runs(schedule)
    assert stored["status"] == "failed" and stored["error"]["code"] == "outcome_unknown"


async def test_a_pipeline_run_is_started_once_however_often_its_job_runs(lab: Lab) -> None:
    await create_pipeline(
        lab.db, linear(tool_node("a", "echo", text="once"), name="p1"), owner_id=lab.owner_id
    )
    schedule = await lab.schedule(
        kind="interval", every_seconds=3600, action="execute_pipeline", config={"pipeline": "p1"}
    )
    run = await _running_without_worker(lab, schedule)
    job = await _job_of(lab, run)
    await lab.scheduler.run(run, job)
    await lab.scheduler.run(run, job)  # queued again after a crash: the run is linked
    count = await lab.db.fetch_val("SELECT count(*) FROM pipeline.runs WHERE trigger = 'schedule'")
    assert count == 1
    [stored] = await lab.settled(schedule, 1)
    assert stored["status"] == "succeeded"


async def test_a_run_whose_job_ended_without_it_is_settled(lab: Lab) -> None:
    schedule = await lab.schedule(kind="interval", every_seconds=3600, **NOTIFY)
    died = await _running_without_worker(lab, schedule)
    cancelled = await _running_without_worker(lab, schedule)
    for run, status in ((died, "failed"), (cancelled, "cancelled")):
        await lab.db.execute(
            "UPDATE procrastinate_jobs SET status = $2::procrastinate_job_status WHERE id ="
            " (SELECT job_id FROM scheduler.runs WHERE id = $1)",
            run,
            status,
        )
    await lab.db.execute(
        "UPDATE scheduler.runs SET started_at = now() - interval '1 minute' WHERE schedule_id = $1",
        schedule.id,
    )
    assert await lab.scheduler.settle_stranded() == 2
    runs = {r["id"]: r for r in await lab.runs(schedule)}
    assert runs[died]["status"] == "failed" and runs[died]["error"]["code"] == "interrupted"
    assert runs[cancelled]["status"] == "cancelled"


async def _running_without_worker(lab: Lab, schedule: ScheduleRecord) -> int:
    """A run of `schedule` its (dead) worker left running, its job queued again and held
    back from this test's worker (scheduled far ahead): the run's id."""
    async with lab.db.transaction() as tx:
        run = await lab.scheduler._dispatch(
            tx,
            schedule,
            datetime.now(UTC) + timedelta(seconds=len(await lab.runs(schedule))),
            "manual",
            "queued",
            None,
            [],
        )
        assert run is not None and run.job_id is None
        row = await tx.fetch_one("SELECT job_id FROM scheduler.runs WHERE id = $1", run.id)
        assert row is not None
        await tx.execute(
            "UPDATE procrastinate_jobs SET scheduled_at = now() + interval '1 day' WHERE id = $1",
            row["job_id"],
        )
        await tx.execute(
            "UPDATE scheduler.runs SET status = 'running', attempt = 1, started_at = now()"
            " WHERE id = $1",
            run.id,
        )
    return run.id


async def _job_of(lab: Lab, run_id: int) -> int:
    return int(await lab.db.fetch_val("SELECT job_id FROM scheduler.runs WHERE id = $1", run_id))


# --- deduplication and races ------------------------------------------------------------------


async def test_each_slot_runs_once_with_five_claimers_at_once(
    lab: Lab, migrated_database_url: str
) -> None:
    at = (datetime.now(UTC) + timedelta(seconds=2)).isoformat()
    schedules = [await lab.schedule(f"once-{i}", kind="once", at=at, **NOTIFY) for i in range(200)]
    ticking = await lab.schedule(
        "tick", kind="interval", every_seconds=1, start_at=DAY_AGO, **NOTIFY
    )
    await lab.due_since(ticking, 5)
    await asyncio.sleep(2.1)  # the once schedules' instant
    claimers = [Database(migrated_database_url, min_size=0, max_size=2) for _ in range(5)]
    for db in claimers:
        await db.connect()
    try:
        claimed = await asyncio.gather(*(Scheduler(db, None).claim_due() for db in claimers))
    finally:
        for db in claimers:
            await db.disconnect()
    for schedule in schedules:
        assert len(await lab.runs(schedule)) == 1
    slots = [r["slot_time"] for r in await lab.runs(ticking)]
    assert len(slots) >= 7  # five seconds before the wait, two during it
    assert all(b - a == timedelta(seconds=1) for a, b in pairwise(slots))
    jobs = await lab.db.fetch_val(
        "SELECT count(*) FROM procrastinate_jobs WHERE task_name = 'scheduler:run_slot'"
    )
    assert jobs == sum(claimed) == 200 + len(slots)


@pytest.mark.parametrize("policy", ["forbid", "replace"])
async def test_a_slot_that_comes_while_a_run_is_going(lab: Lab, policy: str) -> None:
    await create_pipeline(
        lab.db, linear(tool_node("a", "blocked", key="long"), name="long"), owner_id=lab.owner_id
    )
    schedule = await lab.schedule(
        kind="interval",
        every_seconds=3600,
        action="execute_pipeline",
        config={"pipeline": "long"},
        concurrency=policy,
    )
    await lab.due_since(schedule, 1)
    await lab.scheduler.claim_due()
    async with asyncio.timeout(20):
        await LAB.started_event("long").wait()
    second = await lab.scheduler.trigger(schedule)
    runs = {r["id"]: r for r in await lab.runs(schedule)}
    [first_id] = [run_id for run_id in runs if run_id != second.id]
    if policy == "forbid":
        assert second.status == "skipped" and (second.error or {})["code"] == "overlap"
        assert runs[first_id]["status"] == "running"
    else:
        assert second.status == "queued"
        assert runs[first_id]["status"] == "cancelled"
        assert runs[first_id]["error"]["code"] == "replaced"
        first_pipeline_run = await get_run(lab.db, runs[first_id]["pipeline_run_id"])
        assert first_pipeline_run.status == "cancelled"


async def test_a_paused_schedule_claims_nothing_and_resumes_from_now(lab: Lab) -> None:
    schedule = await lab.schedule(kind="interval", every_seconds=60, **NOTIFY)
    await pause_schedule(lab.db, schedule.id)
    await lab.due_since(schedule, 600)
    assert await lab.scheduler.claim_due() == 0
    resumed = await resume_schedule(lab.db, schedule.id)
    assert resumed.status == "active"
    assert resumed.next_run_at is not None and resumed.next_run_at > datetime.now(UTC)
    assert await lab.scheduler.claim_due() == 0
    assert await list_schedule_runs(lab.db, schedule.id) == []


async def test_run_events_tell_each_status(lab: Lab) -> None:
    schedule = await lab.schedule(kind="interval", every_seconds=3600, **NOTIFY)
    await lab.due_since(schedule, 1)
    await lab.scheduler.claim_due()
    await lab.settled(schedule, 1)
    for _ in range(100):
        kinds = [
            e.type
            for e in lab.events
            if e.data.get("schedule_id") == schedule.id and e.type.startswith("schedule_run.")
        ]
        if "schedule_run.succeeded" in kinds:
            break
        await asyncio.sleep(0.02)
    assert kinds == ["schedule_run.queued", "schedule_run.running", "schedule_run.succeeded"]


# --- what the hostile review found -----------------------------------------------------------


async def test_triggers_at_once_keep_the_forbid_policy(lab: Lab) -> None:
    await create_pipeline(
        lab.db, linear(tool_node("a", "blocked", key="hold"), name="hold"), owner_id=lab.owner_id
    )
    schedule = await lab.schedule(
        kind="interval",
        every_seconds=3600,
        action="execute_pipeline",
        config={"pipeline": "hold"},
        concurrency="forbid",
    )
    runs = await asyncio.gather(*(lab.scheduler.trigger(schedule) for _ in range(4)))
    assert sorted(run.status for run in runs) == ["queued", "skipped", "skipped", "skipped"]


async def test_replace_leaves_a_run_that_ended_as_it_was(lab: Lab) -> None:
    schedule = await lab.schedule(
        kind="interval", every_seconds=3600, concurrency="replace", **NOTIFY
    )
    first = await lab.scheduler.trigger(schedule)
    await lab.settled(schedule, 1)
    # A claim that listed it while it was running comes after it ended.
    async with lab.db.transaction() as tx:
        await lab.scheduler._replace(tx, first, [])
    [stored] = await lab.runs(schedule)
    assert stored["status"] == "succeeded" and stored["error"] is None


async def test_a_call_that_got_no_answer_is_never_repeated(
    lab: Lab, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[bytes] = []

    async def slow(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        calls.append(await reader.readuntil(b"\r\n\r\n"))
        await asyncio.sleep(5)  # answers after the caller gave up
        writer.close()

    server = await asyncio.start_server(slow, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    monkeypatch.setenv("GATHERING_EGRESS_ALLOWED_NETWORKS", "127.0.0.1/32")
    monkeypatch.setenv("GATHERING_EGRESS_ALLOWED_PORTS", str(port))
    monkeypatch.setattr(
        runner_module,
        "policy_from_settings",
        lambda: dataclasses.replace(
            egress.policy_from_settings(), read_timeout=0.5, total_timeout=0.5
        ),
    )
    get_settings.cache_clear()
    try:
        schedule = await lab.schedule(
            kind="interval",
            every_seconds=3600,
            action="call_api",
            config={"url": f"http://127.0.0.1:{port}/charge", "body": {"charge": 100}},
            max_retries=3,
            retry_backoff_seconds=0,
        )
        await lab.scheduler.trigger(schedule)
        [run] = await lab.settled(schedule, 1)
    finally:
        server.close()
        get_settings.cache_clear()
    assert (run["status"], run["attempt"]) == ("failed", 1)
    assert run["error"]["code"] == "outcome_unknown"
    assert len(calls) == 1


async def test_an_answer_with_a_nul_is_stored_and_the_call_not_repeated(lab: Lab, api: Any) -> None:
    url, _ = api
    calls: list[int] = []
    original = egress.fetch

    async def answering_nul(*args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        result = await original(*args, **kwargs)
        return dataclasses.replace(result, content=b"o\x00k")

    schedule = await lab.schedule(
        kind="interval",
        every_seconds=3600,
        action="call_api",
        config={"url": url},
        max_retries=2,
        retry_backoff_seconds=0,
    )
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(runner_module, "fetch", answering_nul)
        await lab.scheduler.trigger(schedule)
        [run] = await lab.settled(schedule, 1)
    assert run["status"] == "succeeded" and run["output"]["body"] == "o\ufffdk"
    assert len(calls) == 1


async def test_a_retry_is_not_failed_by_the_pipeline_run_of_the_attempt_before(lab: Lab) -> None:
    LAB.failures_left["once"] = 1  # the first pipeline run fails, the second succeeds
    await create_pipeline(
        lab.db, linear(tool_node("a", "flaky", key="once"), name="twice"), owner_id=lab.owner_id
    )
    schedule = await lab.schedule(
        kind="interval",
        every_seconds=3600,
        action="execute_pipeline",
        config={"pipeline": "twice"},
        max_retries=1,
        retry_backoff_seconds=0,
    )
    await lab.scheduler.trigger(schedule)
    for _ in range(400):  # the sweep as often as it can, to meet the retry's first moments
        await lab.scheduler.settle_started()
        runs = await lab.runs(schedule)
        if runs[0]["status"] in ("succeeded", "failed"):
            break
        await asyncio.sleep(0.01)
    [run] = await lab.settled(schedule, 1)
    assert (run["status"], run["attempt"]) == ("succeeded", 2), run


async def test_a_pipeline_run_cancelled_by_a_person_cancels_the_scheduled_run(lab: Lab) -> None:
    await create_pipeline(
        lab.db, linear(tool_node("a", "blocked", key="stop"), name="stop"), owner_id=lab.owner_id
    )
    schedule = await lab.schedule(
        kind="interval",
        every_seconds=3600,
        action="execute_pipeline",
        config={"pipeline": "stop"},
        max_retries=2,
    )
    await lab.scheduler.trigger(schedule)
    async with asyncio.timeout(20):
        await LAB.started_event("stop").wait()
    [run] = await lab.runs(schedule)
    await Executor(lab.db, lab.bus).cancel_run(run["pipeline_run_id"])
    [run] = await lab.settled(schedule, 1)
    assert run["status"] == "cancelled" and run["error"]["code"] == "pipeline_cancelled"
    assert await lab.db.fetch_val("SELECT count(*) FROM pipeline.runs") == 1


async def test_a_claim_far_behind_stays_short(lab: Lab) -> None:
    schedule = await lab.schedule(
        kind="interval", every_seconds=1, start_at=DAY_AGO, misfire="skip", **NOTIFY
    )
    await lab.due_since(schedule, 86_000)  # a day of one-second slots missed
    began = time.monotonic()
    assert await lab.scheduler.claim_due() >= 1
    assert time.monotonic() - began < 10  # stepping through 86,000 slots one by one: far more
    runs = await lab.runs(schedule)
    assert runs[0]["status"] == "skipped"
    assert runs[0]["error"]["message"].startswith("at least 20")  # counted up to the jump


async def test_a_schedule_this_version_cannot_read_holds_up_no_other(lab: Lab) -> None:
    unreadable = await lab.schedule("newer", kind="interval", every_seconds=3600, **NOTIFY)
    fine = await lab.schedule("fine", kind="interval", every_seconds=3600, **NOTIFY)
    await lab.db.execute(
        "UPDATE scheduler.schedules SET spec = spec || '{\"from_the_future\": 1}',"
        " next_run_at = now() - interval '2 s' WHERE id = $1",
        unreadable.id,
    )
    await lab.due_since(fine, 1)
    assert await lab.scheduler.claim_due() == 1
    assert len(await lab.runs(fine)) == 1
    postponed = await lab.db.fetch_val(
        "SELECT next_run_at > now() + interval '50 s' FROM scheduler.schedules WHERE id = $1",
        unreadable.id,
    )
    assert postponed is True


def test_an_instant_in_an_hour_that_happens_twice_is_followed_by_a_later_one() -> None:
    spec = parse_spec(
        {"kind": "cron", "cron": "30 1 * * *", "timezone": "America/New_York", **NOTIFY}
    )
    after = datetime(2026, 11, 1, 6, 20, tzinfo=UTC)  # 01:20 EST, the second 01:xx hour
    assert next_fire(spec, after, after) == datetime(2026, 11, 2, 6, 30, tzinfo=UTC)


@pytest.mark.parametrize(
    ("change", "mistake"),
    [
        ({"timezone": "Europe"}, "unknown time zone"),
        ({"timezone": "localtime"}, "unknown time zone"),
        ({"timezone": "posixrules"}, "unknown time zone"),
        ({"every_seconds": True}, "every_seconds"),
        (
            {
                "config": {"title": "x", "level": "info", "message": ""},
                "action": "execute_pipeline",
            },
            "pipeline",
        ),
    ],
)
def test_loose_values_are_refused(change: dict[str, Any], mistake: str) -> None:
    base = {"kind": "interval", "every_seconds": 60, **NOTIFY}
    with pytest.raises(InvalidInputError, match=mistake):
        parse_spec(base | change)


@pytest.mark.parametrize("pipeline", [True, "\uff11\uff12", -5, 2**70])
def test_a_pipeline_is_named_or_numbered_plainly(pipeline: Any) -> None:
    spec = {"kind": "interval", "every_seconds": 60, "action": "execute_pipeline"}
    try:
        parsed = parse_spec(spec | {"config": {"pipeline": pipeline}})
    except InvalidInputError:
        return
    assert parsed.config["pipeline"] == pipeline  # a name, taken as it is: never a number


def test_a_config_nested_too_deep_is_refused() -> None:
    deep: dict[str, Any] = {}
    for _ in range(40):
        deep = {"x": deep}
    with pytest.raises(InvalidInputError, match="nests more than 32"):
        parse_spec({"kind": "interval", "every_seconds": 60, **NOTIFY} | {"config": deep})


# --- event schedules and pipelines' triggers ---------------------------------------------------


async def publish(lab: Lab, kind: str, **data: Any) -> None:
    await lab.bus.publish(Event(kind, data, subject="test"), durable=True)


async def test_an_event_schedule_runs_once_per_matching_event(lab: Lab) -> None:
    schedule = await lab.schedule(
        kind="event", event_type="custom.ping", match={"ok": True}, **NOTIFY
    )
    assert schedule.next_run_at is None and schedule.event_cursor is not None
    await publish(lab, "custom.ping", ok=True, n=1)
    await publish(lab, "custom.ping", ok=False, n=2)
    await publish(lab, "custom.other", ok=True, n=3)
    await publish(lab, "custom.ping", ok=True, n=4)
    assert await lab.scheduler.claim_due() == 2
    assert await lab.scheduler.claim_due() == 0  # each event once
    runs = await lab.runs(schedule)
    assert [r["event"]["data"]["n"] for r in runs] == [1, 4]
    assert all(r["trigger"] == "event" for r in runs)
    await lab.settled(schedule, 2)


async def test_events_before_the_schedule_or_while_it_was_paused_start_nothing(lab: Lab) -> None:
    await publish(lab, "custom.tick", n=0)
    schedule = await lab.schedule(kind="event", event_type="custom.*", **NOTIFY)
    await pause_schedule(lab.db, schedule.id)
    await publish(lab, "custom.tick", n=1)
    await lab.scheduler.claim_due()
    await resume_schedule(lab.db, schedule.id)
    await publish(lab, "custom.tick", n=2)
    await lab.scheduler.claim_due()
    assert [r["event"]["data"]["n"] for r in await lab.runs(schedule)] == [2]


async def test_an_event_schedule_is_not_fed_by_its_own_runs(lab: Lab) -> None:
    schedule = await lab.schedule(kind="event", event_type="schedule_run.*", **NOTIFY)
    await lab.scheduler.trigger(schedule)  # its own run's events: queued, running, ...
    await lab.settled(schedule, 1)
    await lab.scheduler.claim_due()
    assert len(await lab.runs(schedule)) == 1


async def test_five_claimers_take_each_event_once(lab: Lab, migrated_database_url: str) -> None:
    schedules = [
        await lab.schedule(f"e{i}", kind="event", event_type="custom.burst", **NOTIFY)
        for i in range(3)
    ]
    for n in range(50):
        await publish(lab, "custom.burst", n=n)
    claimers = [Database(migrated_database_url, min_size=0, max_size=2) for _ in range(5)]
    for db in claimers:
        await db.connect()
    try:
        await asyncio.gather(*(Scheduler(db, None).claim_due() for db in claimers))
        await asyncio.gather(*(Scheduler(db, None).claim_due() for db in claimers))
    finally:
        for db in claimers:
            await db.disconnect()
    for schedule in schedules:
        assert sorted(r["event"]["data"]["n"] for r in await lab.runs(schedule)) == list(range(50))


async def test_pipelines_triggers_run_as_schedules(lab: Lab) -> None:
    from gathering.pipelines import delete_pipeline

    with pytest.raises(InvalidInputError, match="are pipelines' triggers"):
        await lab.schedule("pipeline:1:start", kind="interval", every_seconds=60, **NOTIFY)
    on_event = {
        "name": "greeter",
        "nodes": [
            {
                "id": "start",
                "type": "trigger",
                "config": {"kind": "event", "event": "custom.hello"},
            },
            tool_node("say", "echo", text="{{ input.event.data.word }}"),
        ],
        "edges": [{"from": "start", "to": "say"}],
    }
    greeter = await create_pipeline(lab.db, on_event, owner_id=lab.owner_id)
    timed = linear(name="timed")
    timed["nodes"][0]["config"] = {"kind": "schedule", "cron": "*/5 * * * *"}
    nightly = await create_pipeline(lab.db, timed, owner_id=lab.owner_id)
    assert await lab.scheduler.triggers.sync() == 2
    assert await lab.scheduler.triggers.sync() == 0  # nothing changed since
    names = {
        row["name"]: row["spec"]
        for row in await lab.db.fetch_all("SELECT name, spec FROM scheduler.schedules")
    }
    assert names[f"pipeline:{nightly.id}:start"]["cron"] == "*/5 * * * *"
    assert names[f"pipeline:{greeter.id}:start"]["event_type"] == "custom.hello"

    await publish(lab, "custom.hello", word="bonjour")
    await lab.scheduler.claim_due()
    schedule = await get_schedule_named(lab, f"pipeline:{greeter.id}:start")
    [run] = await lab.settled(schedule, 1)
    assert run["status"] == "succeeded", run
    pipeline_run = await get_run(lab.db, run["pipeline_run_id"])
    assert pipeline_run.outputs["say"] == "bonjour"

    await delete_pipeline(lab.db, nightly.id)
    assert await lab.scheduler.triggers.sync() == 1
    left = await lab.db.fetch_all("SELECT name FROM scheduler.schedules")
    assert [row["name"] for row in left] == [f"pipeline:{greeter.id}:start"]


async def get_schedule_named(lab: Lab, name: str) -> ScheduleRecord:
    found = await schedule_named(lab.db, lab.owner_id, name)
    assert found is not None
    return found


async def test_an_event_schedule_starting_a_pipeline_is_not_fed_by_that_pipeline(
    lab: Lab,
) -> None:
    pipeline = await create_pipeline(lab.db, linear(name="loop"), owner_id=lab.owner_id)
    schedule = await lab.schedule(
        kind="event",
        event_type="pipeline_run.*",
        action="execute_pipeline",
        config={"pipeline": "loop"},
    )
    await publish(lab, "pipeline_run.succeeded", pipeline_id=pipeline.id + 1000)  # another's
    for _ in range(4):
        await lab.scheduler.claim_due()
        await lab.settled(schedule, 1)
        await asyncio.sleep(0.2)
    assert len(await lab.runs(schedule)) == 1


async def test_two_event_schedules_do_not_feed_each_other(lab: Lab) -> None:
    first = await lab.schedule("a", kind="event", event_type="schedule_run.*", **NOTIFY)
    await lab.schedule("b", kind="event", event_type="schedule_run.*", **NOTIFY)
    other = await lab.schedule("c", kind="interval", every_seconds=3600, **NOTIFY)
    await lab.scheduler.trigger(other)
    await lab.settled(other, 1)
    await lab.scheduler.claim_due()
    assert await lab.runs(first) == []


async def test_events_after_end_at_start_nothing(lab: Lab) -> None:
    end = datetime.now(UTC) + timedelta(seconds=0.5)
    schedule = await lab.schedule(kind="event", event_type="custom.late", end_at=end, **NOTIFY)
    await asyncio.sleep(0.6)
    await publish(lab, "custom.late")
    await lab.scheduler.claim_due()
    assert await lab.runs(schedule) == []
    assert (await get_schedule(lab.db, schedule.id)).status == "expired"


async def test_a_change_to_an_expired_event_schedule_replays_nothing(lab: Lab) -> None:
    spec = {"kind": "event", "event_type": "custom.e", **NOTIFY}
    schedule = await lab.schedule(**spec, max_executions=1)
    await publish(lab, "custom.e", n=0)
    await lab.scheduler.claim_due()
    assert (await get_schedule(lab.db, schedule.id)).status == "expired"
    for n in (1, 2):
        await publish(lab, "custom.e", n=n)
    await replace_schedule(lab.db, schedule.id, spec | {"max_executions": 10})
    await publish(lab, "custom.e", n=3)
    await lab.scheduler.claim_due()
    assert [r["event"]["data"]["n"] for r in await lab.runs(schedule)] == [0, 3]


async def test_a_pipeline_s_trigger_schedule_is_changed_through_the_pipeline_only(
    lab: Lab,
) -> None:
    timed = linear(name="timed")
    timed["nodes"][0]["config"] = {"kind": "schedule", "cron": "*/5 * * * *"}
    pipeline = await create_pipeline(lab.db, timed, owner_id=lab.owner_id)
    await lab.scheduler.triggers.sync()
    name = f"pipeline:{pipeline.id}:start"
    trigger = await get_schedule_named(lab, name)
    other = {"kind": "interval", "every_seconds": 60, **NOTIFY}
    with pytest.raises(InvalidInputError, match="pipelines' triggers"):
        await replace_schedule(lab.db, trigger.id, other)
    with pytest.raises(InvalidInputError, match="pipelines' triggers"):
        await apply_schedule(lab.db, lab.owner_id, {"name": name, **other})


@pytest.mark.parametrize(
    ("match", "data", "runs"),
    [
        ({"ok": True}, {"ok": 1}, 0),
        ({"ok": True}, {"ok": True}, 1),
        ({"n": 1}, {"n": 1.0}, 1),
        ({"n": 1}, {"n": True}, 0),
        ({"k": None}, {}, 0),
        ({"k": None}, {"k": None}, 1),
        ({"s": "1"}, {"s": 1}, 0),
    ],
)
async def test_match_compares_json_values(
    lab: Lab, match: dict[str, Any], data: dict[str, Any], runs: int
) -> None:
    schedule = await lab.schedule(kind="event", event_type="custom.m", match=match, **NOTIFY)
    await publish(lab, "custom.m", **data)
    await lab.scheduler.claim_due()
    assert len(await lab.runs(schedule)) == runs


async def test_expiring_schedules_skip_no_other_in_the_same_claim(
    lab: Lab, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(runner_module, "CLAIM_BATCH", 2)
    schedules = [
        await lab.schedule(f"x{i}", kind="event", event_type="custom.x", max_executions=1, **NOTIFY)
        for i in range(5)
    ]
    await publish(lab, "custom.x")
    await lab.scheduler.claim_due()
    assert [len(await lab.runs(s)) for s in schedules] == [1] * 5


async def _waiting_for_attempt(
    lab: Lab, schedule: ScheduleRecord, attempt: int, limit: float = 20
) -> dict[str, Any]:
    """The run of `schedule` once its attempt `attempt` failed and it waits for the next
    one, with its retry job's `scheduled_at` (as `retry_at`) and status (as `job_status`)."""
    deadline = time.monotonic() + limit
    while True:
        row = await lab.db.fetch_one(
            "SELECT r.*, j.scheduled_at AS retry_at, j.status::text AS job_status"
            " FROM scheduler.runs r LEFT JOIN procrastinate_jobs j ON j.id = r.job_id"
            " WHERE r.schedule_id = $1",
            schedule.id,
        )
        if row is not None and (row["status"], row["attempt"]) == ("queued", attempt):
            return dict(row)
        if time.monotonic() > deadline:
            raise AssertionError(f"attempt {attempt} did not fail and wait for a retry: {row}")
        await asyncio.sleep(0.05)


async def test_a_retry_waits_its_backoff_doubled_at_each_attempt(lab: Lab, api: Any) -> None:
    """docs/scheduler.md: a failed run is tried again after `retry_backoff_seconds`, doubled
    each time. The retry's job is scheduled that long after the failed attempt (which began
    at the run's `started_at` and ended within seconds: the call answers at once); time is
    moved by bringing the retry job's `scheduled_at` to now."""
    url, statuses = api
    statuses += [503, 503, 503]
    backoff = 60
    schedule = await lab.schedule(
        kind="interval",
        every_seconds=3600,
        action="call_api",
        config={"url": url},
        max_retries=2,
        retry_backoff_seconds=backoff,
    )
    await lab.due_since(schedule, 1)
    await lab.scheduler.claim_due()
    jobs: list[int] = []
    for attempt, wait in ((1, backoff), (2, 2 * backoff)):
        run = await _waiting_for_attempt(lab, schedule, attempt)
        assert run["error"]["code"] == "http_503", run  # the failed attempt's error, kept
        assert run["job_status"] == "todo" and run["job_id"] not in jobs, run
        jobs.append(run["job_id"])
        waited = run["retry_at"] - run["started_at"]
        assert timedelta(seconds=wait) <= waited < timedelta(seconds=wait + 10), (attempt, run)
        await lab.db.execute(
            "UPDATE procrastinate_jobs SET scheduled_at = now() WHERE id = $1", run["job_id"]
        )
    [run] = await lab.settled(schedule, 1)
    assert (run["status"], run["attempt"]) == ("failed", 3)  # max_retries 2: three attempts
    assert run["error"]["code"] == "http_503"
    assert statuses == []  # each attempt made its call once
