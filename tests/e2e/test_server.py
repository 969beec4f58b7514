"""The real processes: `gathering serve` and `gathering db migrate`, as a user runs them."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time

import httpx
import psycopg
import pytest

from gathering.db import discover_migrations

pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _env(**overrides: str | None) -> dict[str, str]:
    env = dict(os.environ)
    for key, value in overrides.items():
        if value is None:
            env.pop(key, None)
        else:
            env[key] = value
    return env


def _gathering(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gathering", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_serve_with_no_database_configured_becomes_ready():
    port = _free_port()
    env = _env(GATHERING_DATABASE_URL=None, DATABASE_URL=None)
    server = subprocess.Popen(
        [sys.executable, "-m", "gathering", "serve", "--port", str(port)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        status = None
        while time.monotonic() < deadline and server.poll() is None:
            try:
                response = httpx.get(f"http://127.0.0.1:{port}/health/ready", timeout=2)
                status = response.status_code
                if status == 200:
                    break
            except httpx.TransportError:
                pass
            time.sleep(0.25)
        assert status == 200, server.stdout.read() if server.poll() is not None else status
        assert response.json()["checks"]["database"]["detail"].endswith("pgvector on")
    finally:
        server.terminate()
        server.wait(timeout=30)
    assert server.returncode == 0


def test_simultaneous_migrate_processes_apply_each_migration_once(fresh_database_url):
    env = _env(GATHERING_DATABASE_URL=fresh_database_url)
    processes = [
        subprocess.Popen(
            [sys.executable, "-m", "gathering", "db", "migrate"],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(3)
    ]
    outputs = [p.communicate(timeout=120) for p in processes]
    assert [p.returncode for p in processes] == [0, 0, 0], outputs
    with psycopg.connect(fresh_database_url) as conn:
        rows = conn.execute(
            "SELECT version, count(*) FROM public.schema_migrations GROUP BY version"
        ).fetchall()
    assert sorted(v for v, _ in rows) == [m.version for m in discover_migrations()]
    assert all(n == 1 for _, n in rows)


@pytest.mark.parametrize(
    ("overrides", "args", "expected"),
    [
        (
            {"GATHERING_DATABASE_URL": "postgresql://a b c"},
            ["db", "migrate"],
            "not a valid PostgreSQL URL",
        ),
        (
            {"GATHERING_DATABASE_URL": "postgresql://x@127.0.0.1:1/x"},
            ["db", "migrate"],
            "could not connect",
        ),
        (
            {"GATHERING_DATABASE_URL": None, "GATHERING_DATA_DIR": "/proc/version/data"},
            ["db", "migrate"],
            "not writable",
        ),
        ({"GATHERING_PORT": "99999"}, ["serve"], "GATHERING_PORT"),
    ],
    ids=["malformed-url", "unreachable", "data-dir", "bad-port"],
)
def test_bad_input_is_one_clear_message(overrides, args, expected):
    result = _gathering(*args, env=_env(**overrides))
    assert result.returncode == 1
    assert expected in result.stderr
    assert "Traceback" not in result.stderr + result.stdout


def test_serve_on_a_port_in_use_exits_cleanly():
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        result = _gathering("serve", "--port", str(busy.getsockname()[1]), env=_env())
    assert result.returncode == 1
    assert "already in use" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_changed_migration_stops_migrate(fresh_database_url):
    env = _env(GATHERING_DATABASE_URL=fresh_database_url)
    assert _gathering("db", "migrate", env=env).returncode == 0
    with psycopg.connect(fresh_database_url, autocommit=True) as conn:
        conn.execute("UPDATE public.schema_migrations SET checksum = 'edited' WHERE version = 1")
    result = _gathering("db", "migrate", env=env)
    assert result.returncode == 1
    assert "0001_initial.sql" in result.stderr
    assert "Traceback" not in result.stderr
