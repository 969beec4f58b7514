"""The embedded PostgreSQL 16 + pgvector (the `pgserver` package), shared per data directory.

pgserver starts one server per data directory, guarded by an inter-process lock, and stops
it when the last process that uses it exits. This module adds clear errors around it.
"""

from __future__ import annotations

import subprocess
import tempfile
import warnings
from pathlib import Path

import psutil
import structlog

from gathering.errors import DatabaseUnavailableError, StartupError

log = structlog.get_logger(__name__)


def ensure_writable_dir(path: Path) -> None:
    """Create `path` if needed and prove that files can be written in it."""
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path, prefix=".write-test-"):
            pass
    except OSError as exc:
        raise StartupError(
            f"data directory {path} is not writable: {exc.strerror or exc}",
            hint="set GATHERING_DATA_DIR to a directory you can write to, "
            "or set DATABASE_URL to use an external PostgreSQL",
        ) from None


def _recorded_pid(lock_file: Path) -> int | None:
    try:
        return int(lock_file.read_text().split("\n", 1)[0])
    except (OSError, ValueError):
        return None


def postmaster_pid(pgdata: Path) -> int | None:
    """The pid recorded in `pgdata`'s postmaster.pid, if the file is there and readable."""
    return _recorded_pid(pgdata / "postmaster.pid")


def _serves(pid: int | None, pgdata: Path) -> bool:
    """Whether `pid` is a live postgres of `pgdata` (a killed one whose parent never reaped
    it is a zombie: dead; a pid now used by another program is not it). pgserver starts
    postgres on the resolved path, so `pgdata` is compared resolved (symlinks, `..`)."""
    if pid is None:
        return False
    try:
        process = psutil.Process(pid)
        if process.status() == psutil.STATUS_ZOMBIE:
            return False
        return str(pgdata.resolve()) in process.cmdline()
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return False


def postmaster_alive(pgdata: Path) -> bool:
    """Whether the postmaster recorded in `pgdata` is alive and serves that directory."""
    return _serves(postmaster_pid(pgdata), pgdata)


def _lock_files(pgdata: Path) -> list[Path]:
    """postmaster.pid and the socket's lock file it names (PostgreSQL refuses to start while
    either records a pid that still exists, even a zombie's)."""
    files = [pgdata / "postmaster.pid"]
    try:
        lines = files[0].read_text().splitlines()
    except OSError:
        return files
    if len(lines) > 4 and lines[3].strip() and lines[4].strip():
        files.append(Path(lines[4].strip()) / f".s.PGSQL.{lines[3].strip()}.lock")
    return files


def clear_stale_lock_files(pgdata: Path) -> None:
    """Remove the lock files of a dead postmaster of `pgdata` (never when it is alive, and
    never anything else): call it holding pgserver's lock, before starting the server."""
    if postmaster_alive(pgdata):
        return
    for lock_file in _lock_files(pgdata):
        pid = _recorded_pid(lock_file)
        if lock_file.exists() and not _serves(pid, pgdata):
            log.warning("removing a stale lock file", path=str(lock_file), pid=pid)
            lock_file.unlink(missing_ok=True)


def start_embedded(pgdata: Path) -> str:
    """Start (or join) the embedded server whose cluster lives in `pgdata`; return its URL.

    Starts it again if it died (see `gathering.db.supervisor`), after removing the lock files
    a crash left. Blocking: call it through `asyncio.to_thread`.
    """
    pgdata = pgdata.resolve()
    ensure_writable_dir(pgdata.parent)
    with warnings.catch_warnings():
        # platformdirs warns when XDG_RUNTIME_DIR is unset; pgserver then uses /tmp.
        warnings.simplefilter("ignore")
        from pgserver.postgres_server import PostgresServer, get_server

        try:
            # pgserver's own inter-process lock, which every start of a server takes.
            with PostgresServer._lock:
                clear_stale_lock_files(pgdata)
                known = PostgresServer._instances.get(pgdata)
                if known is not None:  # started by this process before: start it again
                    known.ensure_postgres_running()
            server = get_server(pgdata)
        except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as exc:
            log_file = pgdata / "log"
            tail = (
                log_file.read_text(errors="replace").strip().splitlines()[-3:]
                if log_file.exists()
                else []
            )
            raise DatabaseUnavailableError(
                f"the embedded PostgreSQL in {pgdata} failed to start: "
                + (" | ".join(tail) or str(exc)),
                hint=f"see {log_file}; if the directory is corrupt, move it away and start again",
            ) from None
        except OSError as exc:
            raise StartupError(
                f"cannot prepare the embedded PostgreSQL in {pgdata}: {exc}",
                hint="set GATHERING_DATA_DIR to a writable local directory",
            ) from None
    return str(server.get_uri())
