"""The real processes: `gathering serve` and `gathering db migrate`, as a user runs them."""

from __future__ import annotations

import socket
import subprocess
import sys

import psycopg
import pytest
from live_server import LiveServer, environment

from gathering.db import discover_migrations

pytestmark = pytest.mark.slow


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
    server = LiveServer(GATHERING_DATABASE_URL=None, DATABASE_URL=None)
    try:
        response = server.wait_ready()
        assert response.json()["checks"]["database"]["detail"].endswith("pgvector on")
    finally:
        exit_code = server.stop()
    assert exit_code == 0


def test_simultaneous_migrate_processes_apply_each_migration_once(fresh_database_url):
    env = environment(GATHERING_DATABASE_URL=fresh_database_url)
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
    result = _gathering(*args, env=environment(**overrides))
    assert result.returncode == 1
    assert expected in result.stderr
    assert "Traceback" not in result.stderr + result.stdout


def test_serve_on_a_port_in_use_exits_cleanly():
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        result = _gathering("serve", "--port", str(busy.getsockname()[1]), env=environment())
    assert result.returncode == 1
    assert "already in use" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_changed_migration_stops_migrate(fresh_database_url):
    env = environment(GATHERING_DATABASE_URL=fresh_database_url)
    assert _gathering("db", "migrate", env=env).returncode == 0
    with psycopg.connect(fresh_database_url, autocommit=True) as conn:
        conn.execute("UPDATE public.schema_migrations SET checksum = 'edited' WHERE version = 1")
    result = _gathering("db", "migrate", env=env)
    assert result.returncode == 1
    assert "0001_initial.sql" in result.stderr
    assert "Traceback" not in result.stderr


def test_an_oversized_websocket_frame_is_refused_before_it_is_read():
    # uvicorn buffers a whole frame before the app sees it: its limit must be ours, or any
    # client could make the server hold 16 MiB per socket before authenticating.
    from websockets.exceptions import ConnectionClosed
    from websockets.sync.client import connect

    server = LiveServer()
    try:
        server.wait_ready()
        with connect(f"ws://127.0.0.1:{server.port}/ws", max_size=None, open_timeout=10) as ws:
            ws.send("x" * (2 * 1024 * 1024))
            with pytest.raises(ConnectionClosed) as closed:
                ws.recv(timeout=20)  # no answer from the app: the frame never reached it
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1009
    finally:
        server.stop()
