"""The OpenAPI schema tells the whole truth (issue 20): schemathesis's full check set, with
stateful testing over the schema's links, against a real `gathering serve`, in each auth mode.

- single-user mode: every operation, chat included (agents get the scripted provider, see
  tests/_support/contract_hooks.py);
- multi-user mode with an admin's valid token, which also runs the `ignored_auth` check;
- multi-user mode with no credentials, and with a broken token: every operation but the
  documented public ones must answer 401, as documented.

Schemathesis runs as its CLI in a process of its own (see the Makefile on CPython's AST bug).
A failure prints its report, with a `curl` line per failing request.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from live_server import LiveServer

pytestmark = pytest.mark.slow

SUPPORT = Path(__file__).parent / "_support"
SCHEMATHESIS = Path(sys.executable).parent / "schemathesis"
KEY = "c" * 64
ADMIN = "admin@example.com"
PASSWORD = "contract test passphrase"
SEED = "20261130"


def server(database_url: str, tmp_path: Path, **env: str) -> LiveServer:
    live = LiveServer(
        GATHERING_DATABASE_URL=database_url,
        GATHERING_DATA_DIR=str(tmp_path / "data"),
        GATHERING_ENV="development",
        GATHERING_DEFAULT_PROVIDER="scripted",
        GATHERING_RATE_LIMIT_ENABLED="false",
        GATHERING_LOG_LEVEL="warning",
        **env,
    )
    live.wait_ready()
    return live


def run(base: str, *args: str, examples: int, keep_credentials: bool = False) -> None:
    """Run schemathesis with every check over `base`'s schema; with `keep_credentials`, fail
    when schemathesis warns that operations answered only 401/403 (credentials lost)."""
    env = dict(os.environ)
    env["SCHEMATHESIS_HOOKS"] = "contract_hooks"
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(SUPPORT), env.get("PYTHONPATH")]))
    result = subprocess.run(
        [
            str(SCHEMATHESIS),
            "--config-file",
            str(SUPPORT / "schemathesis.toml"),
            "run",
            f"{base}/openapi.json",
            "--checks",
            "all",
            "--max-examples",
            str(examples),
            "--seed",
            SEED,
            "--workers",
            "1",
            "--no-color",
            *args,
        ],
        env=env,
        cwd=tempfile.gettempdir(),  # schemathesis keeps a `.schemathesis` folder where it runs
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout[-20_000:] + result.stderr[-5_000:]
    if keep_credentials:  # a run that lost its credentials tests nothing but 401
        refused = only_401(result.stdout)
        assert refused <= CREDENTIAL_CHECKS | REFUSED_BY_POLICY, result.stdout[-20_000:]


# Operations that check credentials of their own (in the body, or a webhook's secret header):
# random ones answer only 401.
CREDENTIAL_CHECKS = {
    "POST /auth/login",
    "POST /auth/refresh",
    "POST /pipelines/{pipeline_id}/webhook",
}
# Operations a policy refuses (403) for every request a fuzzer can make: a project's git
# remote must be on the server's allow-list, which is empty here.
REFUSED_BY_POLICY = {
    "POST /projects/{project_id}/git/push",
    "POST /projects/{project_id}/git/pull",
}


def only_401(report: str) -> set[str]:
    """The operations schemathesis's "Authentication failed" warning lists (only 401/403)."""
    listed: set[str] = set()
    warning = report.partition("Authentication failed:")[2]
    for line in warning.splitlines()[1:]:
        item = line.strip()
        if item.startswith("- "):
            listed.add(item[2:])
        elif item and not item.startswith(("401", "403")):
            break
    return listed


def schemathesis(
    base: str, *args: str, examples: int, exclude: str = "", keep_credentials: bool = False
) -> None:
    """Every check over every operation of `base`'s schema (but those `exclude` matches), in
    every phase. Schemathesis 4.32's coverage phase reuses a negative body (`0`) in the
    positive cases it makes for the path and header of the chat operations and of a circle
    task's submit (a required long text with a pattern), then reports their refusal; those run
    the other phases (fuzzing, examples and stateful, where their links lead). Schemathesis keeps only the last `--exclude-path-regex`: one regex says all."""
    other = ("--exclude-path-regex", exclude) if exclude else ()
    phases = ("--phases", "examples,fuzzing,stateful", *other)
    run(base, *args, *phases, examples=examples, keep_credentials=keep_credentials)
    no_chat = "|".join(filter(None, [exclude, "/chat", "/submit$"]))
    coverage = ("--phases", "coverage", "--exclude-path-regex", no_chat)
    run(base, *args, *coverage, examples=examples, keep_credentials=keep_credentials)


# Operations that end the caller's session or take away its rights (logout; an admin
# demoting, disabling, resetting or logging out its own account, or ending its session): they
# run apart, after the rest, so the main run keeps a valid token throughout.
SESSION_ENDING = (
    r"^/auth/logout$|^/users/\{user_id\}/(role|disable|password|sessions(/\{session_id\})?)$"
)


@pytest.fixture
def single_user(fresh_database_url: str, tmp_path: Path) -> Iterator[LiveServer]:
    live = server(fresh_database_url, tmp_path)
    yield live
    live.stop()


@pytest.fixture
def multi_user(fresh_database_url: str, tmp_path: Path) -> Iterator[LiveServer]:
    live = server(
        fresh_database_url,
        tmp_path,
        GATHERING_AUTH="required",
        GATHERING_SECRET_KEY=KEY,
        GATHERING_DOCS_ACCESS="public",  # schemathesis reads the schema without credentials
    )
    subprocess.run(
        [
            sys.executable,
            "-m",
            "gathering",
            "users",
            "create",
            ADMIN,
            "--admin",
            "--password",
            PASSWORD,
        ],
        env={**os.environ, "GATHERING_DATABASE_URL": fresh_database_url},
        check=True,
        capture_output=True,
    )
    yield live
    live.stop()


def token(live: LiveServer) -> str:
    login = httpx.post(f"{live.base}/auth/login", json={"email": ADMIN, "password": PASSWORD})
    assert login.status_code == 200, login.text
    return str(login.json()["access_token"])


def test_single_user_mode_keeps_every_promise_of_its_schema(single_user: LiveServer) -> None:
    schemathesis(single_user.base, examples=25)


def test_multi_user_mode_keeps_every_promise_of_its_schema(multi_user: LiveServer) -> None:
    signed = ("--header", f"Authorization: Bearer {token(multi_user)}")
    base = multi_user.base
    schemathesis(base, *signed, exclude=SESSION_ENDING, examples=25, keep_credentials=True)
    signed = ("--header", f"Authorization: Bearer {token(multi_user)}")  # a new session
    schemathesis(multi_user.base, *signed, "--include-path-regex", SESSION_ENDING, examples=25)


@pytest.mark.parametrize(
    "credentials",
    [[], ["--header", "Authorization: Bearer not-a-token"], ["--header", "X-API-Key: gth_nope"]],
    ids=["none", "broken-token", "broken-key"],
)
def test_without_valid_credentials_only_public_operations_answer(
    multi_user: LiveServer, credentials: list[str]
) -> None:
    schemathesis(multi_user.base, *credentials, examples=5)
