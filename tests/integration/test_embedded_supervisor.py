"""The embedded server's supervisor, on a real cluster of its own: what counts as alive, the
stale `postmaster.pid` a crash leaves (even one whose pid now belongs to another process),
the data kept across a restart, and one restarting process at a time."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from gathering.db.embedded import postmaster_alive, postmaster_pid, start_embedded
from gathering.db.supervisor import EmbeddedSupervisor, restart_embedded, supervision_lock

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def pgdata() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="gsv-") as path:
        yield Path(path) / "pgdata"


@pytest.fixture(scope="module")
def url(pgdata: Path) -> str:
    return start_embedded(pgdata)


def _kill(pgdata: Path) -> int:
    pid = postmaster_pid(pgdata)
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    for _ in range(50):
        if not postmaster_alive(pgdata):
            return pid
        time.sleep(0.1)
    raise AssertionError("the postmaster survived SIGKILL")


def test_alive_means_this_directorys_postgres(tmp_path: Path, pgdata: Path, url: str):
    assert postmaster_alive(pgdata)
    assert not postmaster_alive(tmp_path)  # no postmaster.pid
    (tmp_path / "postmaster.pid").write_text(f"{os.getpid()}\n{tmp_path}\n")
    assert not postmaster_alive(tmp_path)  # a live process, but not a postgres of it
    zombie = subprocess.Popen([sys.executable, "-c", "pass"])
    time.sleep(0.5)  # exited, never waited for: a zombie, as a killed postmaster can be
    (tmp_path / "postmaster.pid").write_text(f"{zombie.pid}\n{tmp_path}\n")
    assert not postmaster_alive(tmp_path)
    zombie.wait()


def test_alive_whatever_the_spelling_of_the_directory(tmp_path: Path, pgdata: Path, url: str):
    link = tmp_path / "link"
    link.symlink_to(pgdata.parent)
    assert postmaster_alive(link / pgdata.name)


def test_a_first_start_clears_a_pid_file_naming_a_live_stranger(pgdata: Path, url: str):
    _kill(pgdata)
    stale = (pgdata / "postmaster.pid").read_text().splitlines()
    (pgdata / "postmaster.pid").write_text("\n".join([str(os.getpid()), *stale[1:]]) + "\n")
    started = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys; from pathlib import Path; from gathering.db.embedded import start_embedded;"
            " print(start_embedded(Path(sys.argv[1])))",
            str(pgdata),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert started.returncode == 0, started.stderr[-2000:]
    assert postmaster_alive(pgdata)
    assert restart_embedded(pgdata) is True  # this process adopts the new postmaster


def test_a_restart_keeps_the_data_and_a_stale_pid_file_whose_pid_lives_on(pgdata: Path, url: str):
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS kept (v text)")
        conn.execute("INSERT INTO kept VALUES ('before the kill')")
    _kill(pgdata)
    # The crash left postmaster.pid behind; its pid is now another live process (this one).
    stale = (pgdata / "postmaster.pid").read_text().splitlines()
    (pgdata / "postmaster.pid").write_text("\n".join([str(os.getpid()), *stale[1:]]) + "\n")
    assert restart_embedded(pgdata) is True
    assert postmaster_alive(pgdata)
    with psycopg.connect(url) as conn:
        assert conn.execute("SELECT v FROM kept").fetchall() == [("before the kill",)]


def test_a_running_server_is_left_alone(pgdata: Path, url: str):
    pid = postmaster_pid(pgdata)
    assert restart_embedded(pgdata) is True
    assert postmaster_pid(pgdata) == pid


def test_only_one_process_restarts(pgdata: Path, url: str):
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; from pathlib import Path;"
            " from gathering.db.supervisor import supervision_lock\n"
            "with supervision_lock(Path(sys.argv[1])) as mine:\n"
            "    print(mine, flush=True); time.sleep(30)",
            str(pgdata),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "True"
        dead = _kill(pgdata)
        assert restart_embedded(pgdata) is False  # the other process holds supervision
        assert postmaster_pid(pgdata) == dead and not postmaster_alive(pgdata)
        with supervision_lock(pgdata) as mine:
            assert mine is False
    finally:
        holder.kill()
        holder.wait()
    assert restart_embedded(pgdata) is True
    assert postmaster_alive(pgdata)


async def test_the_supervisor_reports_and_recovers(pgdata: Path, url: str):
    supervisor = EmbeddedSupervisor(pgdata, interval=0.1)
    await supervisor.start()
    try:
        await asyncio.to_thread(_kill, pgdata)
        seen = set()
        for _ in range(300):
            seen.add(supervisor.state.detail)
            if supervisor.restarts:
                break
            await asyncio.sleep(0.05)
        assert supervisor.restarts == 1 and supervisor.state.ok
        assert any(d.startswith("restarting (attempt 1") for d in seen), seen
        async with await psycopg.AsyncConnection.connect(url) as conn:
            assert await (await conn.execute("SELECT 1")).fetchone() == (1,)
    finally:
        await supervisor.stop()
