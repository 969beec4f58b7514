"""Real `gathering worker` processes for tests, on a scratch database of their own, with the
test plugin (`job_plugin/`: tasks `testjobs:*` and tools that write `job_test_marks`)."""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psycopg
import pytest
from live_server import environment
from psycopg import sql
from psycopg.conninfo import make_conninfo
from psycopg.types.json import Jsonb

PLUGIN = Path(__file__).resolve().parent / "job_plugin"
MARKS = """CREATE TABLE job_test_marks (
    key text, what text, pid integer, job_id bigint, at timestamptz DEFAULT clock_timestamp())"""


class ScratchDatabase:
    """A migrated database of the test's own, read and written with plain psycopg."""

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


@contextmanager
def scratch_database(server_url: str) -> Iterator[ScratchDatabase]:
    """A new database on `server_url`, migrated by `gathering db migrate`, dropped after."""
    name = f"gathering_test_jobs_{secrets.token_hex(6)}"
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    url = make_conninfo(server_url, dbname=name)
    try:
        migrate = subprocess.run(
            [sys.executable, "-m", "gathering", "db", "migrate"],
            env=environment(GATHERING_DATABASE_URL=url, DATABASE_URL=url),
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert migrate.returncode == 0, migrate.stderr
        db = ScratchDatabase(url)
        db.sql(MARKS)
        yield db
    finally:
        with psycopg.connect(server_url, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(name)))


def worker_env(db: ScratchDatabase, **extra: str) -> dict[str, str]:
    """The environment of a process on `db` with the test plugin installed, whose workers
    heartbeat every 0.5 s and are taken as dead after 2 s without one."""
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
    """`gathering worker` in a subprocess, ready when it says so."""

    def __init__(self, db: ScratchDatabase, **extra: str) -> None:
        self._output = tempfile.TemporaryFile(mode="w+")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "gathering", "worker", "--concurrency", "2"],
            env=environment(**worker_env(db, **extra)),
            stdout=self._output,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.wait_for("worker ready")

    @property
    def pid(self) -> int:
        return self.process.pid

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

    def kill(self) -> None:
        """SIGKILL: no drain, no goodbye; only its heartbeat stops."""
        self.process.kill()
        self.process.wait()

    def stop(self) -> int:
        """SIGTERM (a drain), then wait; kill after 30 s."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode


def wait_until(predicate: Callable[[], Any], limit: float, what: str) -> Any:
    """`predicate()`'s first truthy value, checked every 0.1 s; fails after `limit` s."""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"{what}: not within {limit}s")
