"""Shared fixtures.

The whole session runs against a real PostgreSQL: the embedded one in a temporary data
directory by default, or the server named by GATHERING_TEST_DATABASE_URL. The module-level
`gathering.api.app.app` gets a database of its own, created here before any test imports it.

Also here: the blocking-call guard of async tests (blockbuster), the PostgreSQL without pgvector
(GATHERING_TEST_NO_VECTOR_DATABASE_URL, else the machine's on 127.0.0.1:5432), a Redis server,
and, with GATHERING_REQUIRE_NO_SKIPS=1 (CI), a session that fails when anything was skipped.
"""

from __future__ import annotations

import asyncio
import atexit
import os
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from types import ModuleType

import psycopg
import pytest
import structlog
from blockbuster import BlockBuster
from psycopg import sql
from psycopg.conninfo import make_conninfo
from pytest_asyncio import is_async_test

_DATA_DIR = Path(tempfile.mkdtemp(prefix="gathering-tests-"))
atexit.register(shutil.rmtree, _DATA_DIR, ignore_errors=True)  # runs after the server stops
os.environ["GATHERING_DATA_DIR"] = str(_DATA_DIR)
os.environ.setdefault("GATHERING_LOG_LEVEL", "WARNING")
os.environ.pop("DATABASE_URL", None)
# The runner's terminal size (a CI shell exports COLUMNS=80) must not latch into the CLI's
# module-level rich consoles at import: a CLI test sets the width it reads per invocation.
for _size in ("COLUMNS", "LINES"):
    os.environ.pop(_size, None)
# Security: the seed's in-process clients (Host `test`, `testserver`) pass the Host check as
# in-process calls; tests that exercise auth or rate limits build their own apps with settings.
os.environ.pop("GATHERING_ALLOWED_HOSTS", None)
os.environ["GATHERING_AUTH"] = "single-user"
os.environ["GATHERING_RATE_LIMIT_ENABLED"] = "false"
os.environ["GATHERING_MODEL_REQUESTS"] = "loopback"  # a test that forgot its stub fails
os.environ["GATHERING_LOCAL_PRELOAD"] = "false"  # each app would load the model; one test does
for _name in ("SECRET_KEY", "GATHERING_SECRET_KEY", "GATHERING_RATE_LIMIT_STORAGE"):
    os.environ.pop(_name, None)

sys.path.insert(0, str(Path(__file__).parent / "_support"))


from gathering.agents import Agent  # noqa: E402
from gathering.config import get_settings  # noqa: E402
from gathering.db import Database  # noqa: E402
from gathering.db.embedded import start_embedded  # noqa: E402
from gathering.db.templates import create_migrated_database  # noqa: E402
from gathering.testing import LLMStubServer  # noqa: E402


def _test_server_url() -> str:
    settings = get_settings()
    return settings.test_database_url or start_embedded(settings.embedded_pgdata)


def create_database(server: str, prefix: str) -> str:
    """Create an empty database named `prefix` + a random suffix on `server`; return its name."""
    name = f"{prefix}{secrets.token_hex(6)}"
    with psycopg.connect(server, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    return name


def drop_database(server: str, name: str) -> None:
    """Drop database `name` on `server`, ending its connections."""
    with psycopg.connect(server, autocommit=True) as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )


TEST_SERVER_URL = _test_server_url()
_APP_DATABASE = create_database(TEST_SERVER_URL, "gathering_test_app_")
os.environ["GATHERING_DATABASE_URL"] = make_conninfo(TEST_SERVER_URL, dbname=_APP_DATABASE)
get_settings.cache_clear()


SLOW_TEST_TIMEOUT = 900  # seconds for tests/e2e and tests marked slow (pytest.ini: 300 others)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark tests by folder (tests/integration -> integration, tests/e2e -> e2e), and give
    real processes and slow tests a longer timeout, unless a test sets its own."""
    for item in items:
        parts = Path(str(item.fspath)).parts
        if "integration" in parts:
            item.add_marker(pytest.mark.integration)
        if "e2e" in parts:
            item.add_marker(pytest.mark.e2e)
        slow = "e2e" in parts or item.get_closest_marker("slow") is not None
        if slow and item.get_closest_marker("timeout") is None:
            item.add_marker(pytest.mark.timeout(SLOW_TEST_TIMEOUT))


def pytest_configure(config: pytest.Config) -> None:
    if not hasattr(config, "workerinput"):  # pytest-xdist: the controller sees every report
        config.pluginmanager.register(NoSkipsGate.from_environment(), NoSkipsGate.name)


def pytest_sessionfinish(session: pytest.Session) -> None:
    drop_database(TEST_SERVER_URL, _APP_DATABASE)


class NoSkipsGate:
    """With GATHERING_REQUIRE_NO_SKIPS=1 (set by .ci/run), a session in which any test was
    skipped fails, and its summary lists each skipped test with its reason. CI has every
    service the suite needs, so a skip there is a test that silently stopped running."""

    name = "gathering-no-skips"
    variable = "GATHERING_REQUIRE_NO_SKIPS"

    def __init__(self, *, required: bool) -> None:
        self.required = required
        self.skipped: list[tuple[str, str]] = []

    @classmethod
    def from_environment(cls) -> NoSkipsGate:
        return cls(required=os.environ.get(cls.variable, "") == "1")

    def _record(self, report: pytest.CollectReport | pytest.TestReport) -> None:
        if not report.skipped or hasattr(report, "wasxfail"):  # an expected failure: no skip
            return
        longrepr = report.longrepr
        reason = longrepr[2] if isinstance(longrepr, tuple) else str(longrepr)
        self.skipped.append((report.nodeid, reason.removeprefix("Skipped: ")))

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        self._record(report)

    def pytest_collectreport(self, report: pytest.CollectReport) -> None:
        self._record(report)

    @pytest.hookimpl(trylast=True)
    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        if self.required and self.skipped and session.exitstatus == pytest.ExitCode.OK:
            session.exitstatus = pytest.ExitCode.TESTS_FAILED

    def pytest_terminal_summary(self, terminalreporter: pytest.TerminalReporter) -> None:
        if not (self.required and self.skipped):
            return
        terminalreporter.section(
            f"{len(self.skipped)} skipped, and {self.variable}=1 allows none", red=True
        )
        for nodeid, reason in self.skipped:
            terminalreporter.line(f"SKIPPED {nodeid or '(collection)'}: {reason}")


# --- blocking calls in the event loop ---------------------------------------------------------

TESTS_DIR = Path(__file__).parent


def _folder_as_module(folder: Path) -> ModuleType:
    """blockbuster scans modules by their files; tests/ is a folder, not a package."""
    module = ModuleType(folder.name)
    module.__path__ = [str(folder)]
    return module


_READS = ("os.stat", "io.TextIOWrapper.read", "io.BufferedReader.read")

# Where a blocking call is fine: (file, function, the blocking calls allowed inside it, () for
# any). Each is not ours or is not on a server's path; our own code moves its blocking work to
# a thread instead.
MAY_BLOCK: list[tuple[str, str, tuple[str, ...]]] = [
    # A server reads its settings (environment, optional .env file) once, before its event
    # loop runs (`get_settings` caches them); tests re-read them in async tests after changing
    # the environment (`get_settings.cache_clear()`, `load_settings(...)`).
    ("gathering/config.py", "load_settings", _READS),
    # pytest's own import of an optional module (in a test that may skip), and its chdir.
    ("_pytest/outcomes.py", "importorskip", ()),
    ("_pytest/monkeypatch.py", "chdir", ()),
    # Rendering a logged exception's traceback on the console reads the source files, as the
    # standard library's does through linecache (which blockbuster allows); a failure path.
    ("rich/traceback.py", "_render_stack", _READS),
    # redis-py reads its own version from the package metadata as it opens each connection of
    # its pool (a few per process); not ours to change.
    ("redis/utils.py", "get_lib_version", ()),
    # Test helpers: `PrivatePostgres` stops a server at once, as a crash would, and starts it
    # again; a recorded provider payload is read from tests/fixtures/llm.
    ("tests/conftest.py", "stop", ()),
    ("tests/conftest.py", "start", ()),
    ("tests/unit/llm/conftest.py", "text", _READS),
]


def blocking_call_guard() -> BlockBuster:
    """A guard that, once activated, fails any blocking call (file, socket, sleep, lock,
    subprocess pipe, ...) made in a running event loop by our code or a test's. Calls made
    from a thread (`asyncio.to_thread`) or outside any loop are not checked."""
    guard = BlockBuster(scanned_modules=["gathering", _folder_as_module(TESTS_DIR)])
    for filename, function, calls in MAY_BLOCK:
        for call in calls or guard.functions:
            guard.functions[call].can_block_in(filename, function)
    return guard


@pytest.fixture(scope="session")
def _blocking_call_guard() -> BlockBuster:
    return blocking_call_guard()


@pytest.fixture(autouse=True)
def _no_blocking_calls_in_the_event_loop(
    request: pytest.FixtureRequest, _blocking_call_guard: BlockBuster
) -> Iterator[None]:
    """In an async test (and its function-scoped fixtures), a blocking call raises
    `blockbuster.BlockingError`: "async all the way" (DESIGN.md) is checked, not hoped for."""
    if not is_async_test(request.node):
        yield
        return
    _blocking_call_guard.activate()
    try:
        yield
    finally:
        _blocking_call_guard.deactivate()


# --- PostgreSQL --------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def _app_database_connection() -> Iterator[psycopg.Connection]:
    with psycopg.connect(os.environ["GATHERING_DATABASE_URL"], autocommit=True) as conn:
        yield conn


@pytest.fixture(autouse=True)
def _no_agents_left_behind(_app_database_connection: psycopg.Connection) -> Iterator[None]:
    """Each test starts with no agents in the shared app database (where `Agent(...)` saves by
    default): a new `Agent(name=...)` refuses to take over a namesake defined differently, and
    the seed's examples reuse names such as "Test" with other providers."""
    yield
    try:
        _app_database_connection.execute("DELETE FROM agent.agents")
    except psycopg.errors.UndefinedTable:
        pass  # nothing has migrated the app database yet


@pytest.fixture(scope="session")
def test_server_url() -> str:
    """The server on which this session's test databases live."""
    return TEST_SERVER_URL


@pytest.fixture
def fresh_database_url(test_server_url: str) -> Iterator[str]:
    """The URL of a new, empty (unmigrated) database, dropped after the test."""
    name = create_database(test_server_url, "gathering_test_")
    yield make_conninfo(test_server_url, dbname=name)
    drop_database(test_server_url, name)


@pytest.fixture
async def migrated_database_url(test_server_url: str) -> AsyncIterator[str]:
    """The URL of a new database holding the current migrations (a copy of the migrated
    template, see gathering/db/templates.py), dropped after the test."""
    name = f"gathering_test_{secrets.token_hex(6)}"
    await create_migrated_database(test_server_url, name)
    yield make_conninfo(test_server_url, dbname=name)
    await asyncio.to_thread(drop_database, test_server_url, name)


NO_VECTOR_SERVER_URL = (
    os.environ.get("GATHERING_TEST_NO_VECTOR_DATABASE_URL")
    or "postgresql://127.0.0.1:5432/postgres"
)


@pytest.fixture(scope="session")
def no_vector_server_url() -> str:
    """A PostgreSQL server without pgvector, for the paths that must work without it:
    GATHERING_TEST_NO_VECTOR_DATABASE_URL, else the machine's PostgreSQL 15 on 127.0.0.1:5432."""
    try:
        with psycopg.connect(NO_VECTOR_SERVER_URL, connect_timeout=2) as conn:
            cur = conn.execute("SELECT 1 FROM pg_available_extensions WHERE name = 'vector'")
            has_vector = cur.fetchone() is not None
    except psycopg.OperationalError as exc:
        pytest.skip(
            "no PostgreSQL without pgvector answers at GATHERING_TEST_NO_VECTOR_DATABASE_URL "
            f"(default 127.0.0.1:5432): {str(exc).strip()}"
        )
    if has_vector:
        pytest.skip(
            "the server at GATHERING_TEST_NO_VECTOR_DATABASE_URL (default 127.0.0.1:5432) has "
            "pgvector; the no-vector tests need one without it"
        )
    return NO_VECTOR_SERVER_URL


@pytest.fixture
async def db() -> AsyncIterator[Database]:
    """Create a test database connection."""
    database = Database(test=True)
    await database.connect()
    yield database
    await database.disconnect()


@pytest.fixture(scope="function")
async def clean_db(db: Database) -> AsyncIterator[Database]:
    """Clean database before each test."""
    await db.execute("TRUNCATE agent.agents CASCADE")
    yield db


@pytest.fixture(scope="session")
async def test_db() -> AsyncIterator[Database]:
    """Create test database (one per session, migrated)."""
    database = Database(test=True)
    await database.connect()
    await database.run_migrations()
    yield database
    await database.disconnect()


@pytest.fixture(scope="session")
def app():  # type: ignore[no-untyped-def]
    """Create app once per test session."""
    from gathering.api.app import create_app

    return create_app(testing=True)


class PrivatePostgres:
    """A PostgreSQL server of a test's own, which the test may stop and start again."""

    def __init__(self, pgdata: Path) -> None:
        from pgserver.postgres_server import get_server

        self.pgdata = pgdata
        self.server = get_server(pgdata, cleanup_mode="delete")
        self.url = make_conninfo(str(self.server.get_uri()), connect_timeout="2")

    def stop(self) -> None:
        """Stop the server at once (as a crash or a restart would)."""
        from pgserver import pg_ctl

        pg_ctl(["-w", "-m", "immediate", "stop"], pgdata=self.pgdata, user=self.server.system_user)

    def start(self) -> None:
        """Start it again on the same data and socket."""
        self.server.ensure_postgres_running()

    def close(self) -> None:
        self.server.cleanup()


@pytest.fixture
def private_postgres(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrivatePostgres]:
    """A server that only this test uses, so it can be stopped (see `PrivatePostgres`)."""
    base = Path(tempfile.mkdtemp(prefix="gpg-", dir="/tmp"))  # short: unix socket path limit
    server = PrivatePostgres(base / "pgdata")
    yield server
    try:
        server.start()
    finally:
        server.close()
        shutil.rmtree(base, ignore_errors=True)


# --- Redis -------------------------------------------------------------------------------------

MACHINE_REDIS = ("127.0.0.1", 6379)


def redis_answers(host: str, port: int) -> bool:
    """Whether a Redis server answers PING at host:port."""
    import redis

    client = redis.Redis(host=host, port=port, socket_timeout=1, socket_connect_timeout=1)
    try:
        return bool(client.ping())
    except redis.RedisError:
        return False
    finally:
        client.close()


def _spare_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def start_redis(program: str, directory: Path) -> tuple[subprocess.Popen[bytes], int]:
    """Start `program` (redis-server) on a spare port of 127.0.0.1, without persistence;
    return the process and its port once it answers."""
    port = _spare_port()
    process = subprocess.Popen(
        [program, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        cwd=directory,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 10
    while not redis_answers("127.0.0.1", port):
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            process.wait()
            raise RuntimeError(f"{program} did not answer on 127.0.0.1:{port}")
        time.sleep(0.05)
    return process, port


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A Redis server (the shared rate-limit storage): the machine's on 127.0.0.1:6379 when it
    answers, else one started for this session when redis-server is installed."""
    if redis_answers(*MACHINE_REDIS):
        yield "redis://127.0.0.1:6379/0"
        return
    program = shutil.which("redis-server")
    if program is None:
        pytest.skip("no Redis answers on 127.0.0.1:6379, and redis-server is not installed")
    process, port = start_redis(program, tmp_path_factory.mktemp("redis"))
    try:
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        process.terminate()
        process.wait(timeout=10)


# --- language models ---------------------------------------------------------------------------


@pytest.fixture(scope="session")
def llm_stub() -> Iterator[LLMStubServer]:
    """A local server answering like Anthropic, OpenAI and Ollama (see tests/_support)."""
    server = LLMStubServer().start()
    yield server
    server.stop()


@pytest.fixture
def llm_stub_env(
    llm_stub: LLMStubServer, monkeypatch: pytest.MonkeyPatch
) -> Iterator[LLMStubServer]:
    """Point every provider's key and address at the stub for this test."""
    for name, value in llm_stub.environment().items():
        monkeypatch.setenv(name, value)
    get_settings.cache_clear()
    yield llm_stub
    get_settings.cache_clear()


@pytest.fixture
def settings_env():  # type: ignore[no-untyped-def]
    """`settings_env(tool_timeout=0.2, ...)` sets `GATHERING_<NAME>` (or NAME when upper-case)
    for this test and refreshes the cached settings; all is undone after it."""
    with pytest.MonkeyPatch.context() as patch:

        def apply(**values: object) -> None:
            for key, value in values.items():
                name = key if key.isupper() else f"GATHERING_{key.upper()}"
                patch.setenv(name, str(value))
            get_settings.cache_clear()

        yield apply
    get_settings.cache_clear()


@pytest.fixture
def agent(llm_stub_env: LLMStubServer) -> Agent:
    """Create a test agent."""
    return Agent(name="TestAgent", provider="ollama", model="llama3.2")


@pytest.fixture
def agent_factory(llm_stub_env: LLMStubServer):  # type: ignore[no-untyped-def]
    """Factory for creating test agents."""
    created = []

    def _create(name="Test", provider="ollama", model="llama3.2", **kwargs):  # type: ignore[no-untyped-def]
        agent = Agent(name=name, provider=provider, model=model, **kwargs)
        created.append(agent)
        return agent

    yield _create
    # Cleanup
    for agent in created:
        agent.cleanup()


@pytest.fixture
def uncached_logs(monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    """`uncached_logs(module, ...)` gives each module's `log` a logger structlog has not
    cached yet: the app caches a logger on its first use, after which `capture_logs` no longer
    sees it, whichever test used it first."""

    def apply(*modules: object) -> None:
        for module in modules:
            monkeypatch.setattr(module, "log", structlog.get_logger(module.__name__))  # type: ignore[attr-defined]

    return apply
