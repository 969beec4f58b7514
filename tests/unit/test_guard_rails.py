"""The suite's own guard rails (tests/conftest.py) catch what they promise to catch: a blocking
call inside the event loop, a skipped test on CI, and a Redis that has to be started."""

from __future__ import annotations

import asyncio
import shutil
import time
from pathlib import Path

import pytest
from blockbuster import BlockingError
from tests.conftest import NoSkipsGate, redis_answers, start_redis

pytest_plugins = ["pytester"]


# --- blocking calls in the event loop ----------------------------------------------------------


async def test_a_blocking_call_in_an_async_test_fails():
    with pytest.raises(BlockingError, match=r"time\.sleep"):
        time.sleep(0.01)


async def test_a_blocking_file_read_in_an_async_test_fails(tmp_path: Path):
    note = tmp_path / "note.txt"
    await asyncio.to_thread(note.write_text, "hello")
    with pytest.raises(BlockingError):
        note.read_text()


async def test_the_same_calls_in_a_thread_pass(tmp_path: Path):
    note = tmp_path / "note.txt"
    await asyncio.to_thread(time.sleep, 0.01)
    await asyncio.to_thread(note.write_text, "hello")
    assert await asyncio.to_thread(note.read_text) == "hello"


def test_a_sync_test_may_block():
    time.sleep(0.01)


# --- no skips on CI ----------------------------------------------------------------------------

SKIPPING = """
import pytest

def test_runs():
    pass

def test_skips():
    pytest.skip("no frobnicator on this machine")

@pytest.mark.xfail(reason="a known bug", strict=True)
def test_known_bug():
    assert False
"""


def run_with(pytester: pytest.Pytester, gate: NoSkipsGate) -> pytest.RunResult:
    return pytester.runpytest_inprocess("-p", "no:asyncio", plugins=[gate])


NOT_SKIPPING = """
import pytest

def test_runs():
    pass

@pytest.mark.xfail(reason="a known bug", strict=True)
def test_known_bug():
    assert False
"""


def test_a_skip_fails_the_session_when_no_skips_are_required(pytester: pytest.Pytester):
    pytester.makepyfile(SKIPPING)
    result = run_with(pytester, NoSkipsGate(required=True))
    result.assert_outcomes(passed=1, skipped=1, xfailed=1)
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.stdout.fnmatch_lines(
        [
            "*1 skipped, and GATHERING_REQUIRE_NO_SKIPS=1 allows none*",
            "SKIPPED test_a_skip_fails_the_session*.py::test_skips: no frobnicator on this machine",
        ]
    )


def test_a_module_skipped_at_collection_is_counted(pytester: pytest.Pytester):
    pytester.makepyfile(
        test_one="""
        import pytest

        pytest.importorskip("no_such_module_here", reason="needs no_such_module_here")

        def test_never_collected():
            pass
        """,
        test_two="def test_runs():\n    pass\n",
    )
    result = run_with(pytester, NoSkipsGate(required=True))
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.stdout.fnmatch_lines(["SKIPPED *: needs no_such_module_here"])


def test_without_skips_the_session_passes(pytester: pytest.Pytester):
    pytester.makepyfile(NOT_SKIPPING)
    result = run_with(pytester, NoSkipsGate(required=True))
    result.assert_outcomes(passed=1, xfailed=1)
    assert result.ret == pytest.ExitCode.OK


def test_skips_are_allowed_when_not_required(pytester: pytest.Pytester):
    pytester.makepyfile(SKIPPING)
    result = run_with(pytester, NoSkipsGate(required=False))
    result.assert_outcomes(passed=1, skipped=1, xfailed=1)
    assert result.ret == pytest.ExitCode.OK
    assert "allows none" not in result.stdout.str()


@pytest.mark.parametrize(("value", "required"), [("1", True), ("0", False), ("", False)])
def test_the_gate_reads_its_variable(monkeypatch: pytest.MonkeyPatch, value: str, required: bool):
    monkeypatch.setenv("GATHERING_REQUIRE_NO_SKIPS", value)
    assert NoSkipsGate.from_environment().required is required


def test_the_gate_is_on_in_ci():
    run = (Path(__file__).parents[2] / ".ci" / "run").read_text()
    assert "export GATHERING_REQUIRE_NO_SKIPS=1" in run
    assert run.rstrip().endswith("exec make test")


# --- Redis ---------------------------------------------------------------------------------------


def test_a_redis_server_is_started_when_none_answers(tmp_path: Path):
    program = shutil.which("redis-server")
    assert program, "redis-server is needed where no Redis runs (CI installs it)"
    process, port = start_redis(program, tmp_path)
    try:
        assert redis_answers("127.0.0.1", port)
    finally:
        process.terminate()
        process.wait(timeout=10)
    assert not redis_answers("127.0.0.1", port)
