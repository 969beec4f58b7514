"""`gathering goals add|tree|edit|depend|decompose|start|activities|cancel`, as docs/goals.md
shows them: decompose asks the goal's agent, whose model is faked at its HTTP wire by the LLM
stub (Ollama's format); start launches a background task per goal that can start (no worker
runs here: the task waits, queued, for one); the refusals name what is wrong and exit 1."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator

import psycopg
import pytest
from typer.testing import CliRunner, Result

from gathering.cli import app
from gathering.config import get_settings
from gathering.testing import LLMStubServer

runner = CliRunner()
WIDE = {"COLUMNS": "200"}
SUBGOALS = [
    {"title": "Draft the pages", "success_criteria": "every page has a draft"},
    {"title": "Review them", "depends_on": [1]},
    {"title": "Publish", "description": "on the site"},
]


@pytest.fixture
def database(
    monkeypatch: pytest.MonkeyPatch, migrated_database_url: str, llm_stub_env: LLMStubServer
) -> Iterator[str]:
    monkeypatch.setenv("GATHERING_DATABASE_URL", migrated_database_url)
    get_settings.cache_clear()
    llm_stub_env.reset()
    yield migrated_database_url
    llm_stub_env.reset()
    get_settings.cache_clear()


@pytest.fixture
def writer(database: str) -> str:
    """An agent `writer` of the local owner, on the stub."""
    made = invoke("agents", "create", "writer", "--provider", "ollama", "--model", "llama3.2")
    assert "created agent writer" in made
    return "writer"


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


def added(output: str) -> int:
    found = re.search(r"goal (\d+) added: ", output)
    assert found is not None, output
    return int(found.group(1))


def tree_lines(goal_id: int) -> dict[str, str]:
    """`goals tree`, each goal's line by its title."""
    lines = invoke("goals", "tree", str(goal_id)).splitlines()
    by_title: dict[str, str] = {}
    for line in lines:
        found = re.search(r"(\d+) (.+?) (open|waiting|active|done|failed|cancelled) ", line)
        assert found is not None, line
        by_title[found.group(2)] = line[found.start() :]
    return by_title


def sql(url: str, query: str, *args: object) -> list[tuple[object, ...]]:
    with psycopg.connect(url, autocommit=True) as conn:
        return conn.execute(query, args).fetchall()


def test_a_goal_is_decomposed_edited_and_started_from_the_cli(
    writer: str, database: str, llm_stub_env: LLMStubServer
) -> None:
    root = added(invoke("goals", "add", "Launch the docs site", "--agent", writer))
    llm_stub_env.add_reply("Here is the plan:\n" + json.dumps(SUBGOALS))
    split = invoke("goals", "decompose", str(root))
    ids = [int(line.split()[0]) for line in split.splitlines() if line.strip()]
    assert len(ids) == 3, split
    draft, review, publish = ids
    assert f"{draft} Draft the pages" in split and f"{publish} Publish" in split
    # The agent's model was asked about the goal.
    assert "Launch the docs site" in json.dumps(llm_stub_env.last.json["messages"])

    # Edit as you like: a dependency, a refused cycle, a leaf's progress.
    assert f"goal {publish} waits for goal {review}" in invoke(
        "goals", "depend", str(publish), "--on", str(review)
    )
    assert "cycle" in refused("goals", "depend", str(draft), "--on", str(publish))
    assert f"goal {draft} changed" in invoke("goals", "edit", str(draft), "--progress", "0.5")
    tree = tree_lines(root)
    assert set(tree) == {"Launch the docs site", "Draft the pages", "Review them", "Publish"}
    assert re.search(r" open 17%", tree["Launch the docs site"]), tree  # (0.5 + 0 + 0) / 3
    assert " open 50%" in tree["Draft the pages"]
    assert f"waits for {draft}" in tree["Review them"]
    assert f"waits for {review}" in tree["Publish"]
    agent_id = sql(database, "SELECT id FROM agent.agents WHERE name = 'writer'")[0][0]
    assert all(f"agent {agent_id}" in line for line in tree.values()), tree

    assert f"goal {root}: active" in invoke("goals", "start", str(root))
    tree = tree_lines(root)
    assert " active " in tree["Launch the docs site"]
    assert " active " in tree["Draft the pages"]
    assert " waiting " in tree["Review them"] and " waiting " in tree["Publish"]
    # One background task, for the goal that could start, queued for a worker.
    tasks = sql(database, "SELECT id, status, goal FROM scheduler.tasks")
    assert len(tasks) == 1, tasks
    task_id, status, goal_text = tasks[0]
    assert status == "queued"
    assert isinstance(goal_text, str) and goal_text.startswith("Draft the pages")
    assert "Success criteria: every page has a draft" in goal_text
    assert "This is part of: Launch the docs site" in goal_text

    draft_log = invoke("goals", "activities", str(draft))
    kinds = [line.split()[1] for line in draft_log.splitlines() if line.strip()]
    assert kinds == ["created", "changed", "task_started"], draft_log
    assert f'"task_id": {task_id}' in draft_log
    root_log = invoke("goals", "activities", str(root))
    assert [line.split()[1] for line in root_log.splitlines() if line.strip()] == [
        "created",
        "decomposed",
        "started",
    ], root_log
    review_log = invoke("goals", "activities", str(review))
    assert "waiting" in review_log and f'"blocked_by": [{draft}]' in review_log

    assert "only an open goal is started" in refused("goals", "start", str(root))
    assert f"goal {root}: cancelled" in invoke("goals", "cancel", str(root))
    assert sql(database, "SELECT status FROM scheduler.tasks") == [("cancelled",)]
    assert all(" cancelled " in line for line in tree_lines(root).values())


def test_a_goal_started_with_an_agent_gives_it_to_the_goals_without_one(
    writer: str, database: str
) -> None:
    root = added(invoke("goals", "add", "Release"))
    build = added(invoke("goals", "add", "Build", "--parent", str(root)))
    nobody = refused("goals", "start", str(root))
    assert f"nobody would work on goal(s) {build}" in nobody
    assert "--agent" in nobody
    assert f"goal {root}: active" in invoke("goals", "start", str(root), "--agent", writer)
    assert sql(database, "SELECT count(*) FROM scheduler.tasks") == [(1,)]
    assert "agent_assigned" in invoke("goals", "activities", str(build))


def test_mistakes_are_named_without_a_traceback(writer: str, llm_stub_env: LLMStubServer) -> None:
    for args in (("tree", "999"), ("start", "999"), ("decompose", "999"), ("cancel", "999")):
        assert "no goal 999" in refused("goals", *args), args
    assert run("goals", "tree", "0").exit_code == 2  # ids start at 1
    assert "no agent 'nobody'" in refused("goals", "add", "x", "--agent", "nobody")
    goal = added(invoke("goals", "add", "Plan", "--agent", writer))
    llm_stub_env.add_reply("I would rather not.")
    failed = refused("goals", "decompose", str(goal))
    assert "not a list of subgoals" in failed, failed
    assert "Plan" in tree_lines(goal) and len(tree_lines(goal)) == 1  # nothing was stored
    other = added(invoke("goals", "add", "Other"))
    assert "waits for goal" in invoke("goals", "depend", str(other), "--on", str(goal))
    assert "no longer waits" in invoke("goals", "depend", str(other), "--on", str(goal), "--remove")


def test_the_activities_of_a_missing_goal_are_refused(database: str) -> None:
    """As `GET /goals/999/activities` is a 404: no goal 999 is not an empty log."""
    missing = refused("goals", "activities", "999")
    assert "no goal 999" in missing, missing
