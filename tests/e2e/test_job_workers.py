"""Real `gathering worker` processes on one database: a job whose worker is killed (SIGKILL)
mid-run is taken up by the other one, once its heartbeat is stale; SIGTERM drains a worker
(its running job finishes, then it exits 0); `gathering serve` runs jobs itself by default."""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from live_server import LiveServer, environment
from psycopg import sql
from psycopg.conninfo import make_conninfo
from psycopg.types.json import Jsonb

pytestmark = pytest.mark.slow

PLUGIN = Path(__file__).resolve().parents[1] / "_support" / "job_plugin"
MARKS = """CREATE TABLE job_test_marks (
    key text, what text, pid integer, job_id bigint, at timestamptz DEFAULT clock_timestamp())"""


class Database:
    def __init__(self, url: str) -> None:
        self.url = url

    def sql(self, query: str, *args: Any) -> list[tuple[Any, ...]]:
        with psycopg.connect(self.url, autocommit=True) as conn:
            cursor = conn.execute(query, args)
            return cursor.fetchall() if cursor.description else []

    def defer(self, task: str, **args: Any) -> int:
        rows = self.sql(
            "INSERT INTO procrastinate_jobs (queue_name, task_name, args)"
            " VALUES ('default', %s, %s) RETURNING id",
            task,
            Jsonb(args),
        )
        return int(rows[0][0])

    def marks(self, key: str) -> list[tuple[str, int]]:
        rows = self.sql("SELECT what, pid FROM job_test_marks WHERE key = %s ORDER BY at", key)
        return [(what, pid) for what, pid in rows]

    def status(self, job_id: int) -> str:
        return str(self.sql("SELECT status FROM procrastinate_jobs WHERE id = %s", job_id)[0][0])


@pytest.fixture
def database(test_server_url: str) -> Iterator[Database]:
    name = f"gathering_test_jobs_{secrets.token_hex(6)}"
    with psycopg.connect(test_server_url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    url = make_conninfo(test_server_url, dbname=name)
    migrate = subprocess.run(
        [sys.executable, "-m", "gathering", "db", "migrate"],
        env=environment(GATHERING_DATABASE_URL=url, DATABASE_URL=url),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert migrate.returncode == 0, migrate.stderr
    db = Database(url)
    db.sql(MARKS)
    yield db
    with psycopg.connect(test_server_url, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(name)))


def worker_env(db: Database, **extra: str) -> dict[str, str]:
    return {
        "GATHERING_DATABASE_URL": db.url,
        "DATABASE_URL": db.url,
        "GATHERING_AUTO_MIGRATE": "false",
        "GATHERING_JOB_HEARTBEAT_INTERVAL": "0.5",
        "GATHERING_JOB_STALLED_AFTER": "2",
        "PYTHONPATH": os.pathsep.join(filter(None, [str(PLUGIN), os.environ.get("PYTHONPATH")])),
        **extra,
    }


class Worker:
    def __init__(self, db: Database, **extra: str) -> None:
        self._output = tempfile.TemporaryFile(mode="w+")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "gathering", "worker", "--concurrency", "2"],
            env=environment(**worker_env(db, **extra)),
            stdout=self._output,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.wait_for("worker ready")

    def output(self) -> str:
        self._output.seek(0)
        return self._output.read()

    def wait_for(self, text: str, limit: float = 60) -> None:
        deadline = time.monotonic() + limit
        while time.monotonic() < deadline:
            if text in self.output():
                return
            if self.process.poll() is not None:
                pytest.fail(f"the worker exited:\n{self.output()}")
            time.sleep(0.1)
        pytest.fail(f"the worker did not print {text!r}:\n{self.output()}")

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode


def wait_until(predicate: Any, limit: float, what: str) -> None:
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise AssertionError(f"{what}: not within {limit}s")


def test_a_killed_worker_s_job_is_finished_by_the_other_worker(database: Database) -> None:
    first, second = Worker(database), Worker(database)
    workers = {first.process.pid: first, second.process.pid: second}
    try:
        job_id = database.defer("testjobs:sleep", key="long", seconds=3)
        wait_until(lambda: database.marks("long"), 30, "the job started")
        [(what, pid)] = database.marks("long")
        assert what == "started" and pid in workers
        victim = workers.pop(pid)
        victim.process.kill()  # SIGKILL: no drain, no goodbye; only the heartbeat stops
        victim.process.wait()
        survivor = next(iter(workers.values()))
        wait_until(lambda: database.status(job_id) == "succeeded", 40, "the job was finished")
        marks = database.marks("long")
        assert marks[0] == ("started", pid)
        assert [m for m in marks[1:]] == [
            ("started", survivor.process.pid),
            ("done", survivor.process.pid),
        ]
    finally:
        for worker in (first, second):
            worker.stop()


def test_sigterm_lets_the_running_job_finish_then_exits(database: Database) -> None:
    worker = Worker(database)
    job_id = database.defer("testjobs:sleep", key="short", seconds=1.5)
    wait_until(lambda: database.marks("short"), 30, "the job started")
    assert worker.stop() == 0
    assert database.status(job_id) == "succeeded"
    assert [what for what, _ in database.marks("short")] == ["started", "done"]
    assert "worker stopped" in worker.output()


def test_serve_runs_jobs_in_process_unless_told_not_to(database: Database) -> None:
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
