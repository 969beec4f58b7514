"""The embedded PostgreSQL 16 + pgvector (the `pgserver` package), shared per data directory.

pgserver starts one server per data directory, guarded by an inter-process lock, and stops
it when the last process that uses it exits. This module adds clear errors around it.
"""

from __future__ import annotations

import subprocess
import tempfile
import warnings
from pathlib import Path

from gathering.errors import DatabaseUnavailableError, StartupError


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


def start_embedded(pgdata: Path) -> str:
    """Start (or join) the embedded server whose cluster lives in `pgdata`; return its URL.

    Blocking: call it through `asyncio.to_thread` from async code.
    """
    ensure_writable_dir(pgdata.parent)
    with warnings.catch_warnings():
        # platformdirs warns when XDG_RUNTIME_DIR is unset; pgserver then uses /tmp.
        warnings.simplefilter("ignore")
        from pgserver.postgres_server import get_server

        try:
            server = get_server(pgdata)
        except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as exc:
            log = pgdata / "log"
            tail = log.read_text(errors="replace").strip().splitlines()[-3:] if log.exists() else []
            raise DatabaseUnavailableError(
                f"the embedded PostgreSQL in {pgdata} failed to start: "
                + (" | ".join(tail) or str(exc)),
                hint=f"see {log}; if the directory is corrupt, move it away and start again",
            ) from None
        except OSError as exc:
            raise StartupError(
                f"cannot prepare the embedded PostgreSQL in {pgdata}: {exc}",
                hint="set GATHERING_DATA_DIR to a writable local directory",
            ) from None
    return str(server.get_uri())
