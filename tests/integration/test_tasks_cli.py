"""`gathering tasks start|list|show|pause|resume|cancel`: with no worker alive, `start --follow`
runs the task itself (the model faked at its HTTP wire) and prints its steps and result; the
controls name what is wrong (a missing task, a status that does not allow it) and exit 1, as
does a task whose budget ran out."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest
from pipeline_runtime import LAB, TOOLS
from typer.testing import CliRunner, Result

from gathering.cli import app
from gathering.config import get_settings
from gathering.llm import ToolCall
from gathering.testing import LLMStubServer
from gathering.tools import registry as registry_module

runner = CliRunner()
WIDE = {"COLUMNS": "200"}


@pytest.fixture
def database(
    monkeypatch: pytest.MonkeyPatch, migrated_database_url: str, llm_stub_env: LLMStubServer
) -> Iterator[str]:
    monkeypatch.setenv("GATHERING_DATABASE_URL", migrated_database_url)
    get_settings.cache_clear()
    llm_stub_env.reset()
    LAB.calls.clear()
    LAB.failures_left.clear()
    for tool in TOOLS:
        registry_module.registry.register(tool)
    yield migrated_database_url
    for tool in TOOLS:
        registry_module.registry.unregister(tool.name)
    llm_stub_env.reset()
    get_settings.cache_clear()


def call(name: str, **arguments: Any) -> ToolCall:
    return ToolCall("", name, arguments)


def run(*args: str) -> Result:
    return runner.invoke(app, list(args), env=WIDE)


def invoke(*args: str) -> str:
    result = run(*args)
    assert result.exit_code == 0, result.output
    return result.output


def refused(*args: str) -> str:
    """The output of a command that must fail with a clear message (not a traceback)."""
    result = run(*args)
    assert result.exit_code == 1, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(
        result.exception
    )
    return result.output


def task_id_in(output: str) -> int:
    found = re.search(r"task (\d+) started", output)
    assert found is not None, output
    return int(found.group(1))


@pytest.fixture
def tasker(database: str) -> str:
    """An agent of the local owner, with `echo` enabled."""
    made = invoke("agents", "create", "Tasker", "--provider", "ollama", "--model", "llama3.2")
    assert "created agent Tasker" in made
    assert "enabled" in invoke("tools", "enable", "echo", "--agent", "Tasker")
    return "Tasker"


def test_start_follow_runs_the_task_and_prints_its_steps_and_result(
    tasker: str, llm_stub_env: LLMStubServer
) -> None:
    llm_stub_env.add_reply(
        call("echo", text="first"), call("echo", text="second"), "The answer is 42."
    )
    output = invoke("tasks", "start", tasker, "Echo first, then second.", "--follow")
    assert "this command runs the jobs itself" in output  # no worker was alive
    task_id = task_id_in(output)
    assert "1 " in output and "echo (finished)" in output
    assert output.count("echo (finished)") == 2
    assert output.rstrip().endswith("The answer is 42.")
    assert LAB.calls["first"] == LAB.calls["second"] == 1

    listed = invoke("tasks", "list")
    assert "1 task(s)" in listed and "succeeded" in listed
    assert "3/20" in listed and "Echo first, then second." in listed
    assert f"{task_id} " in listed

    shown = invoke("tasks", "show", str(task_id))
    assert f"task {task_id} (agent " in shown and "succeeded" in shown
    assert "3/20 steps" in shown
    assert "goal: Echo first, then second." in shown
    lines = shown.splitlines()
    assert any(line.startswith("1 ") and "echo (finished)" in line for line in lines), shown
    assert any(line.startswith("2 ") and "echo (finished)" in line for line in lines), shown
    assert any(line.startswith("3 The answer is 42.") for line in lines), shown
    assert "result: The answer is 42." in shown and "error:" not in shown


def test_the_controls_and_their_refusals(tasker: str) -> None:
    started = invoke("tasks", "start", tasker, "Wait for a worker.")
    assert "no worker is running" in started  # not following: it waits for one
    task_id = task_id_in(started)
    assert f"`gathering tasks show {task_id}`" in started
    listed = invoke("tasks", "list", "--status", "queued")
    assert "1 task(s)" in listed and "queued" in listed
    assert "0 task(s)" in invoke("tasks", "list", "--status", "succeeded")

    ident = str(task_id)
    assert "only a paused task, or one waiting for a budget, is resumed" in refused(
        "tasks", "resume", ident
    )
    assert ": queued;" in invoke("tasks", "show", ident)  # the refusal changed nothing
    assert f"task {task_id}: paused" in invoke("tasks", "pause", ident)
    assert f"task {task_id} is paused: it cannot be paused" in refused("tasks", "pause", ident)
    resumed = invoke("tasks", "resume", ident)
    assert f"task {task_id}: queued" in resumed
    assert "no worker is running" in resumed  # it waits for one: said, not left silent
    assert "only a paused task, or one waiting for a budget, is resumed" in refused(
        "tasks", "resume", ident
    )
    assert f"task {task_id}: cancelled" in invoke("tasks", "cancel", ident)
    for verb in ("pause", "resume", "cancel"):
        assert f"task {task_id} is cancelled" in refused("tasks", verb, ident), verb
    shown = invoke("tasks", "show", ident)
    assert "cancelled" in shown and "error: cancelled by request" in shown
    assert "result:" not in shown

    for verb in ("show", "pause", "resume", "cancel"):
        missing = refused("tasks", verb, "999")
        assert "no task 999" in missing and "gathering tasks list" in missing, verb
    assert run("tasks", "show", "0").exit_code == 2  # ids start at 1


def test_a_budget_that_runs_out_exits_1_with_the_reason(
    tasker: str, llm_stub_env: LLMStubServer
) -> None:
    llm_stub_env.add_reply(call("echo", text="once"), "never asked")
    result = run("tasks", "start", tasker, "loop", "--max-steps", "1", "--follow")
    assert result.exit_code == 1, result.output
    task_id = task_id_in(result.output)
    assert f"task {task_id} failed:" in result.output
    assert "1 step" in result.output
    assert "echo (finished)" in result.output  # the step it took was shown
    assert "never asked" not in result.output
    shown = invoke("tasks", "show", str(task_id))
    assert "failed" in shown and "error:" in shown and "1/1 steps" in shown


def test_a_start_that_cannot_work_is_refused_clearly(tasker: str) -> None:
    missing = refused("tasks", "start", "Nobody", "x")
    assert "no agent 'Nobody'" in missing and "gathering agents list" in missing
    assert "0 task(s)" in invoke("tasks", "list")
    assert run("tasks", "start", tasker, "x", "--max-steps", "0").exit_code == 2


@pytest.mark.parametrize(
    ("extra", "words"),
    [
        (["   "], "only white space"),
        (["x" * 20_001], "goal"),
        (["x", "--max-tokens", "100000001"], "max_tokens"),
        (["x", "--max-seconds", "700000"], "max_seconds"),
    ],
)
def test_a_spec_the_task_refuses_is_named_without_a_traceback(
    tasker: str, extra: list[str], words: str
) -> None:
    assert words in refused("tasks", "start", tasker, *extra)
    assert "0 task(s)" in invoke("tasks", "list")


def test_multi_user_mode_needs_the_owner(tasker: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GATHERING_AUTH", "required")
    monkeypatch.setenv("GATHERING_SECRET_KEY", "k" * 64)
    get_settings.cache_clear()
    output = refused("tasks", "start", tasker, "x")
    assert "multi-user mode" in output and "--owner" in output
    unknown = refused("tasks", "start", tasker, "x", "--owner", "nobody@example.com")
    assert "nobody@example.com" in unknown
