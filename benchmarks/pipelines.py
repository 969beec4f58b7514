"""Pipelines: durable per-node overhead against DBOS Transact's per-step overhead, a 1,000-node
DAG, and queued one-node runs against procrastinate's raw job throughput.

1. Per node: a run of a manual trigger then a chain of 100 no-op tool nodes (effect `read`),
   from `start_run` to the run's end, divided by the 100 tool nodes; against a DBOS workflow
   of 100 no-op `@DBOS.step()`s, divided by 100, with DBOS's system database on the same
   embedded PostgreSQL server (a database of its own). DBOS is measured through its async and
   its sync API; the faster is the baseline. Best of a few alternating rounds, after a warm-up.
   Target: ours <= 0.5x DBOS per step.
2. A 1,000-node DAG (the trigger and 999 no-op tool nodes in layers of 9, each node after two
   of the layer before) completes; its time per node is shown against the chain's.
   Parts 1 and 2 run on 2 `JobWorker`s (concurrency 4 each) in this process.
3. Throughput: 10,000 one-node runs (a trigger alone) are queued first, then drained by 2
   worker processes (`JobWorker`, concurrency 4 each); against 10,000 jobs of a no-op
   procrastinate task drained by 2 processes running procrastinate's own `Worker` with the
   same settings, each side on a fresh database of the same server. Jobs per second, from
   "go" to the moment no job is left. Target: ours >= 0.5x procrastinate.

Needs DBOS, a benchmark-only dependency: `.venv/bin/python -m pip install -e '.[bench]'`.
Bounded in count and in time (a limit per part; a part that runs out of time is reported as
such). Creates its own embedded server in a temporary directory; touches only loopback.
Run: `.venv/bin/python benchmarks/pipelines.py` (`--help` for smaller counts).
"""

from __future__ import annotations

import argparse
import asyncio
import atexit
import logging
import os
import secrets
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path
from typing import Any

_DRAIN_CHILD = len(sys.argv) > 1 and sys.argv[1] == "--drain"
_URL_VARIABLE = "GATHERING_BENCH_DRAIN_URL"
if not _DRAIN_CHILD:
    _DATA_DIR = Path(tempfile.mkdtemp(prefix="gathering-bench-pipelines-"))
    # Registered before the embedded server starts, so it runs after the server's own exit
    # hook has stopped it (atexit runs last-in, first-out).
    atexit.register(shutil.rmtree, _DATA_DIR, ignore_errors=True)
    os.environ["GATHERING_DATA_DIR"] = str(_DATA_DIR)
os.environ.setdefault("GATHERING_LOG_LEVEL", "WARNING")
# Part 3 queues 10,000 runs of one owner before any runs: above the default cap of running runs.
os.environ["GATHERING_PIPELINE_MAX_RUNNING_RUNS"] = "1000000"
os.environ.pop("DATABASE_URL", None)

import procrastinate  # noqa: E402
import psycopg  # noqa: E402
import structlog  # noqa: E402
from procrastinate.worker import Worker  # noqa: E402
from psycopg import sql  # noqa: E402
from psycopg.conninfo import conninfo_to_dict, make_conninfo  # noqa: E402

from gathering.agents.retrieval import local_owner_id  # noqa: E402
from gathering.config import get_settings  # noqa: E402
from gathering.db import Database  # noqa: E402
from gathering.db.embedded import start_embedded  # noqa: E402
from gathering.events import Event, EventBus  # noqa: E402
from gathering.jobs import JobQueue, JobServices, JobWorker  # noqa: E402
from gathering.jobs.worker import ABORT_POLL_SECONDS, FETCH_POLL_SECONDS  # noqa: E402
from gathering.pipelines import create_pipeline  # noqa: E402
from gathering.pipelines.executor import Executor  # noqa: E402
from gathering.pipelines.jobs import blueprint  # noqa: E402
from gathering.pipelines.runs import RUN_STATUSES  # noqa: E402
from gathering.tools import function_tool  # noqa: E402
from gathering.tools import registry as registry_module  # noqa: E402

CHAIN_NODES = 100
ROUNDS = 3
DAG_NODES = 1_000  # the trigger included: a definition holds at most 1,000 nodes
DAG_WIDTH = 9
QUEUED_RUNS = 10_000
WORKERS = 2
CONCURRENCY = 4  # jobs per worker at once, both sides (gathering's default)
QUEUE_POOL = 4  # procrastinate's pool per process, both sides (JobQueue's default)
STARTERS = 8  # concurrent start_run calls while queueing the one-node runs
BASELINE_QUEUE = "bench"
CHAIN_TIMEOUT = 60.0  # per run
DAG_TIMEOUT = 150.0
QUEUE_TIMEOUT = 120.0  # queueing the runs
DRAIN_TIMEOUT = 150.0  # per side
DRAIN_POLL = 0.05


async def bench_noop() -> str:
    """Do nothing (a benchmark's no-op tool)."""
    return "ok"


NOOP_TOOL = function_tool(bench_noop, effect="read")


async def noop_job(n: int) -> None:
    """The baseline's task: nothing."""


def verdict(met: bool) -> str:
    return "met" if met else "NOT MET"


# --- definitions ------------------------------------------------------------------------------


TRIGGER = {"id": "start", "type": "trigger", "config": {"kind": "manual"}}


def tool_node(node_id: str) -> dict[str, Any]:
    return {"id": node_id, "type": "tool", "config": {"tool": NOOP_TOOL.name, "arguments": {}}}


def chain(tools: int) -> dict[str, Any]:
    """The trigger, then `tools` no-op tool nodes one after another."""
    nodes = [TRIGGER, *(tool_node(f"n{i}") for i in range(tools))]
    edges = [{"from": a["id"], "to": b["id"]} for a, b in pairwise(nodes)]
    return {"name": f"chain of {tools}", "nodes": nodes, "edges": edges}


def layered_dag(total: int, width: int) -> dict[str, Any]:
    """The trigger and `total - 1` no-op tool nodes in layers of `width`: the first layer after
    the trigger, every later node after nodes j and j+1 (wrapping) of the layer before."""
    tools = total - 1
    nodes = [TRIGGER, *(tool_node(f"n{i}") for i in range(tools))]
    edges: list[dict[str, str]] = []
    for i in range(tools):
        layer, j = divmod(i, width)
        if layer == 0:
            edges.append({"from": "start", "to": f"n{i}"})
            continue
        before = (layer - 1) * width
        for k in sorted({j, (j + 1) % width}):
            edges.append({"from": f"n{before + k}", "to": f"n{i}"})
    return {"name": f"dag of {total}", "nodes": nodes, "edges": edges}


# --- our runtime in this process ----------------------------------------------------------------


@dataclass
class Runtime:
    db: Database
    bus: EventBus
    queue: JobQueue
    workers: list[JobWorker]
    executor: Executor
    owner_id: int

    @classmethod
    async def open(cls, db: Database, workers: int) -> Runtime:
        bus = EventBus(db)
        await bus.start()
        queue = await JobQueue(db, blueprints={"pipelines": blueprint}, pool_size=QUEUE_POOL).open()
        services = JobServices(db, bus)
        running = [
            JobWorker(queue, services, concurrency=CONCURRENCY, shutdown_timeout=1.0)
            for _ in range(workers)
        ]
        for worker in running:
            await worker.start()
        return cls(db, bus, queue, running, Executor(db, bus), await local_owner_id(db))

    async def close(self) -> None:
        for worker in self.workers:
            await worker.stop()
        await self.queue.close()
        await self.bus.close(grace=1)

    async def pipeline(self, document: dict[str, Any]) -> tuple[int, int]:
        record = await create_pipeline(self.db, document, owner_id=self.owner_id)
        return record.id, record.version

    async def run_to_end(self, pipeline: tuple[int, int], limit: float) -> tuple[float, str]:
        """Start a run and wait for its end, told by its `pipeline_run.<status>` event on the
        bus (as a user's client is): (seconds, final status); "timeout" (the run then
        cancelled) when it did not end within `limit`."""
        ends: dict[int, str] = {}  # run id -> final status, as the events tell
        news = asyncio.Event()

        def on_event(event: Event) -> None:
            if event.type != "pipeline_run.started":
                ends[int(event.data["run_id"])] = str(event.data["status"])
                news.set()

        subscription = self.bus.subscribe(
            "pipeline_run.*", on_event, subjects=f"pipeline:{pipeline[0]}"
        )
        try:
            started = time.perf_counter()
            run = await self.executor.start_run(*pipeline, self.owner_id, {})
            try:
                async with asyncio.timeout(limit):
                    while run.id not in ends:
                        await news.wait()
                        news.clear()
            except TimeoutError:
                await self.executor.cancel_run(run.id, reason="the benchmark's time limit")
                return time.perf_counter() - started, "timeout"
            return time.perf_counter() - started, ends[run.id]
        finally:
            subscription.unsubscribe()


# --- DBOS ---------------------------------------------------------------------------------------


def sqlalchemy_url(conninfo: str) -> str:
    """`conninfo` (libpq keywords or URL) as the SQLAlchemy URL DBOS takes."""
    from sqlalchemy import URL

    parts = {key: str(value) for key, value in conninfo_to_dict(conninfo).items() if value}
    host, port = parts.get("host", ""), parts.get("port")
    if host.startswith("/"):  # a socket directory goes in the query
        query = {"host": host} | ({"port": port} if port else {})
        host, port = "", None
    else:
        query = {}
    url = URL.create(
        "postgresql+psycopg",
        username=parts.get("user"),
        password=parts.get("password"),
        host=host or None,
        port=int(port) if port else None,
        database=parts["dbname"],
        query=query,
    )
    return url.render_as_string(hide_password=False)


@dataclass
class DbosChains:
    run_async: Callable[[int], Awaitable[int]]
    run_sync: Callable[[int], int]


def dbos_chains() -> DbosChains:
    """A workflow of n no-op steps, through DBOS's async and its sync API."""
    from dbos import DBOS

    @DBOS.step()
    async def noop_step_async() -> str:
        return "ok"

    @DBOS.workflow()
    async def chain_async(steps: int) -> int:
        for _ in range(steps):
            await noop_step_async()
        return steps

    @DBOS.step()
    def noop_step() -> str:
        return "ok"

    @DBOS.workflow()
    def chain_sync(steps: int) -> int:
        for _ in range(steps):
            noop_step()
        return steps

    return DbosChains(chain_async, chain_sync)


async def drop_database(server: str, name: str) -> None:
    async with await psycopg.AsyncConnection.connect(server, autocommit=True) as conn:
        await conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )


# --- part 1: per node against DBOS per step -----------------------------------------------------


async def per_node(runtime: Runtime, server: str, tools: int, rounds: int) -> float:
    """Seconds per tool node of the chain (best round); prints the comparison with DBOS."""
    try:
        from dbos import DBOS
    except ImportError:
        print("DBOS is not installed: `.venv/bin/python -m pip install -e '.[bench]'`")
        raise SystemExit(2) from None
    chains = dbos_chains()
    dbos_database = f"gathering_bench_dbos_{secrets.token_hex(6)}"
    config: Any = {
        "name": "gathering-bench",
        "system_database_url": sqlalchemy_url(make_conninfo(server, dbname=dbos_database)),
        "log_level": "WARNING",
    }
    loop = asyncio.get_running_loop()
    # DBOS makes its executor the loop's default one and shuts it down on destroy: launch and
    # destroy it on a thread of ours, and give the loop a fresh default executor afterwards.
    admin = ThreadPoolExecutor(1, thread_name_prefix="bench-dbos-admin")
    DBOS(config=config)
    await loop.run_in_executor(admin, DBOS.launch)
    pipeline = await runtime.pipeline(chain(tools))
    ours: list[float] = []
    dbos_async: list[float] = []
    dbos_sync: list[float] = []
    try:
        for round_ in range(rounds + 1):  # the first is a warm-up
            elapsed, status = await runtime.run_to_end(pipeline, CHAIN_TIMEOUT)
            if status != "succeeded":
                print(f"  the chain's run ended {status} after {elapsed:.1f} s")
                return float("nan")
            started = time.perf_counter()
            assert await chains.run_async(tools) == tools
            async_elapsed = time.perf_counter() - started
            started = time.perf_counter()
            assert await asyncio.to_thread(chains.run_sync, tools) == tools
            sync_elapsed = time.perf_counter() - started
            if round_:
                ours.append(elapsed / tools)
                dbos_async.append(async_elapsed / tools)
                dbos_sync.append(sync_elapsed / tools)
    finally:
        await loop.run_in_executor(admin, DBOS.destroy)
        admin.shutdown()
        loop.set_default_executor(ThreadPoolExecutor(thread_name_prefix="bench"))
        await drop_database(server, dbos_database)
    ours_best, async_best, sync_best = min(ours), min(dbos_async), min(dbos_sync)
    baseline = min(async_best, sync_best)
    ratio = ours_best / baseline
    print(f"per-node overhead: a trigger and {tools} no-op tool nodes (durable), best of {rounds}")
    print(f"  DBOS, async steps     : {async_best * 1000:8.2f} ms/step")
    print(f"  DBOS, sync steps      : {sync_best * 1000:8.2f} ms/step")
    print(
        f"  GatheRing tool nodes  : {ours_best * 1000:8.2f} ms/node "
        f"(median {statistics.median(ours) * 1000:.2f})"
    )
    print(f"  ratio to DBOS (faster): {ratio:8.2f}  (target <= 0.5: {verdict(ratio <= 0.5)})")
    return ours_best


# --- part 2: a 1,000-node DAG -------------------------------------------------------------------


async def big_dag(runtime: Runtime, total: int, chain_per_node: float) -> None:
    document = layered_dag(total, DAG_WIDTH)
    pipeline = await runtime.pipeline(document)
    elapsed, status = await runtime.run_to_end(pipeline, DAG_TIMEOUT)
    tools = total - 1
    print(
        f"a {total:,}-node DAG: the trigger and {tools} no-op tool nodes in layers of "
        f"{DAG_WIDTH}, {len(document['edges']):,} edges, {WORKERS} workers"
    )
    if status == "timeout":
        print(f"  did not complete within {DAG_TIMEOUT:.0f} s (cancelled)  (goal: NOT MET)")
        return
    per_node_s = elapsed / tools
    print(
        f"  run {status} in {elapsed:.1f} s: {per_node_s * 1000:.2f} ms/node, "
        f"{tools / elapsed:,.0f} nodes/s"
    )
    if chain_per_node == chain_per_node:  # not NaN
        print(f"  per node against the chain's: {per_node_s / chain_per_node:.2f}x")
    print(f"  completes: {verdict(status == 'succeeded')}")


# --- part 3: throughput against procrastinate ---------------------------------------------------


def baseline_app(url: str) -> tuple[procrastinate.App, Any]:
    # Its warning about an app made in `__main__` is for tasks found by import path; this
    # one's task is found by its name.
    logging.getLogger("procrastinate.blueprints").setLevel(logging.ERROR)
    app = procrastinate.App(
        connector=procrastinate.PsycopgConnector(conninfo=url, min_size=1, max_size=QUEUE_POOL)
    )
    task = app.task(name="noop", queue=BASELINE_QUEUE)(noop_job)
    return app, task


async def drain_child(kind: str) -> None:
    """A worker process: set up, say `ready`, start on `go`, stop on `stop`."""
    url = os.environ[_URL_VARIABLE]
    close: list[Callable[[], Awaitable[None]]] = []
    if kind == "procrastinate":
        app, _ = baseline_app(url)
        await app.open_async()
        close.append(app.close_async)
        worker = Worker(
            app,
            queues=[BASELINE_QUEUE],
            concurrency=CONCURRENCY,
            fetch_job_polling_interval=FETCH_POLL_SECONDS,
            abort_job_polling_interval=ABORT_POLL_SECONDS,
            shutdown_graceful_timeout=1.0,
            install_signal_handlers=False,
        )

        async def start() -> Callable[[], Awaitable[None]]:
            task = asyncio.create_task(worker.run())  # type: ignore[no-untyped-call]

            async def stop() -> None:
                worker.stop()  # type: ignore[no-untyped-call]
                await task

            return stop
    else:
        db = Database(url)
        await db.connect()
        bus = EventBus(db)
        await bus.start()
        queue = await JobQueue(db, blueprints={"pipelines": blueprint}, pool_size=QUEUE_POOL).open()
        close += [db.disconnect, lambda: bus.close(grace=1), queue.close]
        job_worker = JobWorker(
            queue, JobServices(db, bus), concurrency=CONCURRENCY, shutdown_timeout=1.0
        )

        async def start() -> Callable[[], Awaitable[None]]:
            await job_worker.start()
            return job_worker.stop

    print("ready", flush=True)
    await asyncio.to_thread(sys.stdin.readline)  # go
    stop = await start()
    await asyncio.to_thread(sys.stdin.readline)  # stop
    await stop()
    for step in reversed(close):
        await step()
    print("done", flush=True)


async def remaining(db: Database) -> int:
    return int(
        await db.fetch_val(
            "SELECT count(*) FROM procrastinate_jobs WHERE status IN ('todo', 'doing')"
        )
    )


async def drain(kind: str, db: Database, jobs: int) -> float | None:
    """Seconds for `WORKERS` worker processes of `kind` to drain the `jobs` queued on `db`;
    None when they did not within the time limit."""
    environment = os.environ | {_URL_VARIABLE: db.url}
    children = [
        await asyncio.create_subprocess_exec(
            sys.executable,
            __file__,
            "--drain",
            kind,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            env=environment,
        )
        for _ in range(WORKERS)
    ]

    async def say(word: str) -> None:
        for child in children:
            assert child.stdin is not None
            child.stdin.write(f"{word}\n".encode())
            await child.stdin.drain()

    async def heard(word: str) -> None:
        for child in children:
            assert child.stdout is not None
            line = (await child.stdout.readline()).decode().strip()
            if line != word:
                raise RuntimeError(f"a {kind} worker process said {line!r}, not {word!r}")

    elapsed: float | None = None
    try:
        async with asyncio.timeout(60):
            await heard("ready")
        assert await remaining(db) == jobs
        started = time.perf_counter()
        await say("go")
        try:
            async with asyncio.timeout(DRAIN_TIMEOUT):
                while True:  # the jobs' rows are the truth, on both sides alike
                    if not await remaining(db):
                        break
                    await asyncio.sleep(DRAIN_POLL)
            elapsed = time.perf_counter() - started
        except TimeoutError:
            left = await remaining(db)
            print(f"  {kind}: {left:,} of {jobs:,} jobs left after {DRAIN_TIMEOUT:.0f} s")
        await say("stop")
        async with asyncio.timeout(30):
            await heard("done")
            for child in children:
                await child.wait()
    finally:
        for child in children:
            if child.returncode is None:
                child.kill()
                await child.wait()
    return elapsed


async def queue_baseline(db: Database, jobs: int) -> float:
    app, task = baseline_app(db.url)
    await app.open_async()
    try:
        started = time.perf_counter()
        for first in range(0, jobs, 1000):
            await task.batch_defer_async(*({"n": n} for n in range(first, min(jobs, first + 1000))))
        return time.perf_counter() - started
    finally:
        await app.close_async()


async def queue_runs(db: Database, runs: int) -> float | None:
    """Seconds to start `runs` runs of a one-node pipeline (their jobs queued, no worker);
    None when that took longer than the time limit."""
    bus = EventBus(db)
    await bus.start()
    try:
        executor = Executor(db, bus)
        owner = await local_owner_id(db)
        record = await create_pipeline(db, {"name": "one node", "nodes": [TRIGGER]}, owner_id=owner)
        counter = iter(range(runs))

        async def starter() -> None:
            for _ in counter:
                await executor.start_run(record.id, record.version, owner, {})

        started = time.perf_counter()
        async with asyncio.timeout(QUEUE_TIMEOUT):
            await asyncio.gather(*(starter() for _ in range(STARTERS)))
        return time.perf_counter() - started
    except TimeoutError:
        print(f"  queueing {runs:,} runs took longer than {QUEUE_TIMEOUT:.0f} s")
        return None
    finally:
        await bus.close(grace=1)


async def throughput(runs: int) -> None:
    print(
        f"queued throughput: {runs:,} jobs, then {WORKERS} worker processes "
        f"(concurrency {CONCURRENCY} each) drain them"
    )
    baseline_db = Database(test=True)
    await baseline_db.connect()
    try:
        queued = await queue_baseline(baseline_db, runs)
        base_elapsed = await drain("procrastinate", baseline_db, runs)
    finally:
        await baseline_db.disconnect()
    ours_db = Database(test=True)
    await ours_db.connect()
    try:
        started = await queue_runs(ours_db, runs)
        ours_elapsed = await drain("gathering", ours_db, runs) if started is not None else None
        statuses = {
            row["status"]: int(row["runs"])
            for row in await ours_db.fetch_all(
                "SELECT status, count(*) AS runs FROM pipeline.runs GROUP BY status"
            )
        }
    finally:
        await ours_db.disconnect()
    print(f"  procrastinate, defer   : {runs / queued:10,.0f} jobs/s (batches of 1,000)")
    if started is not None:
        print(f"  GatheRing, start_run   : {runs / started:10,.0f} runs/s ({STARTERS} at once)")
    if base_elapsed is None or ours_elapsed is None:
        print("  a side did not drain within its time limit  (target >= 0.5: NOT MET)")
        return
    base_rate, ours_rate = runs / base_elapsed, runs / ours_elapsed
    print(f"  procrastinate, no-op   : {base_rate:10,.0f} jobs/s ({base_elapsed:.1f} s)")
    print(f"  GatheRing one-node runs: {ours_rate:10,.0f} runs/s ({ours_elapsed:.1f} s)")
    shown = ", ".join(f"{statuses.get(s, 0):,} {s}" for s in RUN_STATUSES if statuses.get(s))
    print(f"  runs                   : {shown}")
    ratio = ours_rate / base_rate
    if statuses.get("succeeded", 0) != runs:
        print(f"  ratio                  : {ratio:10.2f}  (void: not every run succeeded)")
        return
    print(f"  ratio                  : {ratio:10.2f}  (target >= 0.5: {verdict(ratio >= 0.5)})")


# --- main ---------------------------------------------------------------------------------------


def arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--chain", type=int, default=CHAIN_NODES, help="tool nodes in the chain")
    parser.add_argument("--rounds", type=int, default=ROUNDS, help="rounds of the chain")
    parser.add_argument(
        "--dag-nodes", type=int, default=DAG_NODES, help="nodes of the DAG, trigger included"
    )
    parser.add_argument("--runs", type=int, default=QUEUED_RUNS, help="queued one-node runs")
    options = parser.parse_args()
    if options.chain < 1 or options.rounds < 1 or options.runs < 1:
        parser.error("--chain, --rounds and --runs are at least 1")
    if not 2 <= options.dag_nodes <= DAG_NODES:
        parser.error(f"--dag-nodes is 2 to {DAG_NODES:,}")
    return options


async def main(options: argparse.Namespace) -> None:
    began = time.perf_counter()
    scaled = [
        f"{name} {value:,} (issue: {issue:,})"
        for name, value, issue in (
            ("chain", options.chain, CHAIN_NODES),
            ("DAG nodes", options.dag_nodes, DAG_NODES),
            ("queued runs", options.runs, QUEUED_RUNS),
        )
        if value != issue
    ]
    if scaled:
        print("scaled down: " + ", ".join(scaled))
    registry_module.registry.register(NOOP_TOOL)
    server = await asyncio.to_thread(start_embedded, get_settings().embedded_pgdata)
    db = Database(test=True)
    await db.connect()
    try:
        runtime = await Runtime.open(db, WORKERS)
        try:
            chain_per_node = await per_node(runtime, server, options.chain, options.rounds)
            await big_dag(runtime, options.dag_nodes, chain_per_node)
        finally:
            await runtime.close()
    finally:
        await db.disconnect()
        registry_module.registry.unregister(NOOP_TOOL.name)
    await throughput(options.runs)
    print(f"total {time.perf_counter() - began:.0f} s")


if __name__ == "__main__":
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(30))
    if _DRAIN_CHILD:
        asyncio.run(drain_child(sys.argv[2]))
    else:
        asyncio.run(main(arguments()))
