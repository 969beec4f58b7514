"""Fixtures of the end-to-end tests that run a real `gathering serve`: a migrated scratch
database, the LLM stub (reset around each test), and servers on them in single-user mode
(`server`) or multi-user mode with an administrator (`multi_user`, who signs in as `ADMIN`)."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator

import pytest
from browser import ADMIN
from job_processes import ScratchDatabase, scratch_database, worker_env
from live_server import LiveServer, environment

from gathering.testing import LLMStubServer


@pytest.fixture
def database(test_server_url: str) -> Iterator[ScratchDatabase]:
    with scratch_database(test_server_url) as db:
        yield db


@pytest.fixture
def stub(llm_stub: LLMStubServer) -> Iterator[LLMStubServer]:
    llm_stub.reset()
    try:
        yield llm_stub
    finally:
        llm_stub.reset()


def _running(env: dict[str, str]) -> Iterator[LiveServer]:
    live = LiveServer(**env)
    try:
        live.wait_ready()
        yield live
    finally:
        live.stop()


@pytest.fixture
def server(database: ScratchDatabase, stub: LLMStubServer) -> Iterator[LiveServer]:
    """A single-user server with its embedded worker, its models answered by the stub."""
    yield from _running(worker_env(database, **stub.environment()))


@pytest.fixture
def multi_user(database: ScratchDatabase, stub: LLMStubServer) -> Iterator[LiveServer]:
    """A multi-user server whose administrator is `ADMIN` (email, password)."""
    env = worker_env(
        database,
        GATHERING_AUTH="required",
        GATHERING_SECRET_KEY="e2e-secret-" + "0123456789abcdef" * 4,
        GATHERING_DEFAULT_PROVIDER="anthropic",
        **stub.environment(),
    )
    command = ["users", "create", ADMIN[0], "--admin", "--password", ADMIN[1]]
    made = subprocess.run(
        [sys.executable, "-m", "gathering", *command],
        env=environment(**env),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert made.returncode == 0, made.stdout + made.stderr
    yield from _running(env)
