"""Real `gathering worker` processes on one database: a job whose worker is killed (SIGKILL)
mid-run is taken up by the other one, once its heartbeat is stale; SIGTERM drains a worker
(its running job finishes, then it exits 0); `gathering serve` runs jobs itself by default."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from job_processes import ScratchDatabase, Worker, scratch_database, wait_until, worker_env
from live_server import LiveServer

pytestmark = pytest.mark.slow


@pytest.fixture
def database(test_server_url: str) -> Iterator[ScratchDatabase]:
    with scratch_database(test_server_url) as db:
        yield db


def test_a_killed_worker_s_job_is_finished_by_the_other_worker(database: ScratchDatabase) -> None:
    first, second = Worker(database), Worker(database)
    workers = {first.pid: first, second.pid: second}
    try:
        job_id = database.defer("testjobs:sleep", key="long", seconds=3)
        wait_until(lambda: database.marks("long"), 30, "the job started")
        [(what, pid)] = database.marks("long")
        assert what == "started" and pid in workers
        victim = workers.pop(pid)
        victim.kill()
        survivor = next(iter(workers.values()))
        wait_until(lambda: database.status(job_id) == "succeeded", 40, "the job was finished")
        marks = database.marks("long")
        assert marks[0] == ("started", pid)
        assert [m for m in marks[1:]] == [
            ("started", survivor.pid),
            ("done", survivor.pid),
        ]
    finally:
        for worker in (first, second):
            worker.stop()


def test_sigterm_lets_the_running_job_finish_then_exits(database: ScratchDatabase) -> None:
    worker = Worker(database)
    job_id = database.defer("testjobs:sleep", key="short", seconds=1.5)
    wait_until(lambda: database.marks("short"), 30, "the job started")
    assert worker.stop() == 0
    assert database.status(job_id) == "succeeded"
    assert [what for what, _ in database.marks("short")] == ["started", "done"]
    assert "worker stopped" in worker.output()


def test_serve_runs_jobs_in_process_unless_told_not_to(database: ScratchDatabase) -> None:
    env = worker_env(database)
    server = LiveServer(**env)
    try:
        server.wait_ready()
        job_id = database.defer("testjobs:mark", key="served")
        wait_until(lambda: database.status(job_id) == "succeeded", 30, "serve ran the job")
    finally:
        assert server.stop() == 0
    off = LiveServer(**env, GATHERING_WORKER="off")
    try:
        off.wait_ready()
        job_id = database.defer("testjobs:mark", key="not-served")
        time.sleep(2.5)  # more than the worker's 1 s poll: an embedded worker would have run it
        assert database.status(job_id) == "todo"
    finally:
        off.stop()
