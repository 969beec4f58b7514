"""`gathering circles list|create|add|activate|archive|members|task|tasks|show|approve|reject|
changes|cancel` against a migrated database, the model faked at its HTTP wire: a circle made,
staffed with agents and their skills, activated; tasks given, listed and shown with their
moves, routing reasons and reviews; the owner's verdicts; `task --follow` running the agents
itself; and clear refusals (an unknown circle, an illegal move, bad input) that exit 1 with
no traceback."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterator

import pytest
from typer.testing import CliRunner, Result

from gathering.circles import circle_named, get_circle_task
from gathering.circles.work import CircleWorker
from gathering.cli import app
from gathering.config import get_settings
from gathering.db import Database
from gathering.events import EventBus
from gathering.testing import LLMStubServer

runner = CliRunner()
WIDE = {"COLUMNS": "200"}
APPROVED = '{"verdict": "approved", "feedback": "tidy"}'


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
    assert "Traceback" not in result.output
    return result.output


def one_line(output: str) -> str:
    """`output` with its lines joined (rich wraps long messages)."""
    return " ".join(output.split())


def new_agent(name: str) -> None:
    made = invoke("agents", "create", name, "--provider", "ollama", "--model", "llama3.2")
    assert f"created agent {name}" in made


def member_id_in(output: str) -> int:
    found = re.search(r"member (\d+) ", output)
    assert found is not None, output
    return int(found.group(1))


def task_id_in(output: str) -> int:
    found = re.search(r"task (\d+) ", output)
    assert found is not None, output
    return int(found.group(1))


def row_of(table: str, first_cell: str) -> str:
    """The line of a printed table that starts with `first_cell`."""
    for line in table.splitlines():
        cells = line.strip("│ ").split()
        if line.startswith("│") and cells and cells[0] == first_cell:
            return line
    raise AssertionError(f"no row {first_cell!r} in:\n{table}")


def agent_works(url: str, circle: str, task_id: int, member_id: int) -> None:
    """The job `circles:work` of the agent offered task `task_id` (no worker runs here): its
    turn goes to the LLM stub, and what it answers is handed in."""

    async def work() -> None:
        db = Database(url)
        await db.connect()
        try:
            task = await get_circle_task(db, task_id)
            assert task.circle_id == (await circle_named(db, circle)).id
            await CircleWorker(db, EventBus(db)).work(task.id, task.iteration, member_id)
        finally:
            await db.disconnect()

    asyncio.run(work())


@pytest.fixture
def team(database: str) -> dict[str, int]:
    """Circles `parsers` (its work not reviewed; no member) and `reviewed`, active, whose only
    member is the agent `coder` (python 4, sql 2): no member may review its work, the owner
    decides. The coder's member id."""
    new_agent("coder")
    invoke("circles", "create", "parsers", "--description", "CSV and JSON", "--no-review")
    invoke("circles", "create", "reviewed")
    added = invoke("circles", "add", "reviewed", "coder", "--skill", "python=4", "--skill", "sql=2")
    invoke("circles", "activate", "reviewed")
    return {"coder": member_id_in(added)}


# --- circles and members ----------------------------------------------------------------------


def test_a_circle_is_created_staffed_activated_and_listed(database: str) -> None:
    for name in ("coder", "critic"):
        new_agent(name)
    made = invoke("circles", "create", "parsers", "--description", "CSV", "--reviewers", "2")
    assert "circle parsers created" in made
    assert "gathering circles add parsers AGENT" in one_line(made)
    assert "gathering circles activate parsers" in one_line(made)

    listed = invoke("circles", "list")
    assert "1 circle(s)" in listed
    row = row_of(listed, "1")
    assert all(word in row for word in ("parsers", "created", "best_match", "yes")), row

    coder = invoke("circles", "add", "parsers", "coder", "--skill", "python=4", "--skill", "sql=2")
    assert re.search(r"member \d+ coder joined as member", coder), coder
    critic = invoke("circles", "add", "parsers", "critic", "--role", "reviewer")
    assert re.search(r"member \d+ critic joined as reviewer", critic), critic
    members = invoke("circles", "members", "parsers")
    assert "2 member(s)" in members
    coder_row = row_of(members, str(member_id_in(coder)))
    assert all(word in coder_row for word in ("coder", "member", "python 4", "sql 2")), coder_row
    critic_row = row_of(members, str(member_id_in(critic)))
    assert "critic" in critic_row and "reviewer" in critic_row and "-" in critic_row

    assert "circle parsers: active" in invoke("circles", "activate", "parsers")
    row = row_of(invoke("circles", "list"), "1")
    assert "active" in row and " 2 " in row, row

    twice = refused("circles", "add", "parsers", "coder")
    assert "is a member of 'parsers' already" in one_line(twice)
    unknown = refused("circles", "add", "parsers", "nobody")
    assert "no agent 'nobody'" in unknown and "gathering agents list" in one_line(unknown)
    for skill, words in (
        ("python", "--skill 'python': give TAG=LEVEL"),
        ("python=x", "--skill 'python=x': give TAG=LEVEL"),
        ("python=9", "competencies"),
        ("Python Code=3", "competencies"),
    ):
        assert words in one_line(refused("circles", "add", "parsers", "critic", "--skill", skill))
    assert "role" in refused("circles", "add", "parsers", "critic", "--role", "boss")
    assert "2 member(s)" in invoke("circles", "members", "parsers")  # nothing was added


def test_a_circle_the_server_refuses_is_named_without_a_traceback(database: str) -> None:
    invoke("circles", "create", "parsers")
    taken = refused("circles", "create", "parsers")
    assert "a circle named 'parsers' exists" in taken and "unique" in taken
    assert "name" in refused("circles", "create", "Bad Name")
    assert run("circles", "create", "x", "--reviewers", "4").exit_code == 2  # 1 to 3
    assert "1 circle(s)" in invoke("circles", "list")


# --- tasks ------------------------------------------------------------------------------------


def test_a_task_is_given_listed_and_shown_with_its_routing(team: dict[str, int]) -> None:
    given = invoke(
        "circles", "task", "reviewed", "parse CSV", "--needs", "python=3", "--description", "rows"
    )
    assert "no worker is running" in given  # not following: the agent's job waits for one
    task_id = task_id_in(given)
    assert f"task {task_id} offered" in given

    listed = invoke("circles", "tasks", "reviewed")
    assert "1 task(s)" in listed
    row = row_of(listed, str(task_id))
    assert all(word in row for word in ("offered", "1", "-", "parse CSV")), row
    assert "1 task(s)" in invoke("circles", "tasks", "reviewed", "--status", "offered")
    assert "0 task(s)" in invoke("circles", "tasks", "reviewed", "--status", "completed")

    shown = one_line(invoke("circles", "show", "reviewed", str(task_id)))
    assert f"{task_id} parse CSV: offered" in shown
    assert "- → pending created" in shown and "pending → offered best of 1" in shown
    coder = team["coder"]
    assert f"offer member {coder}: best of 1: python 4 (needs 3)" in shown

    unroutable = invoke("circles", "task", "reviewed", "write Rust", "--needs", "rust=1")
    assert "pending" in unroutable
    why = one_line(invoke("circles", "show", "reviewed", str(task_id_in(unroutable))))
    assert "no_candidate nobody: no active member has the competencies and room for it" in why


def test_the_owner_approves_rejects_or_asks_for_changes(
    team: dict[str, int], database: str, llm_stub_env: LLMStubServer
) -> None:
    coder = team["coder"]
    ids = []
    for title in ("approve me", "reject me", "change me"):
        ids.append(task_id_in(invoke("circles", "task", "reviewed", title)))
        llm_stub_env.add_reply(f"work for {title}")
        agent_works(database, "reviewed", ids[-1], coder)
    assert "3 task(s)" in invoke("circles", "tasks", "reviewed", "--status", "in_review")
    approve, reject, change = map(str, ids)

    approved = invoke("circles", "approve", "reviewed", approve, "--feedback", "nice")
    assert f"task {approve}: completed" in approved
    shown = one_line(invoke("circles", "show", "reviewed", approve))
    assert "in_review → completed approved" in shown
    assert "escalation nobody: no member may review it: a person approves or rejects it" in shown
    assert "review of attempt 1: approved nice" in shown
    assert shown.endswith("work for approve me")

    assert f"task {reject}: failed" in invoke("circles", "reject", "reviewed", reject)
    changed = invoke("circles", "changes", "reviewed", change, "handle quotes")
    assert f"task {change}: changes_requested" in changed
    shown = one_line(invoke("circles", "show", "reviewed", change))
    assert "review of attempt 1: changes_requested handle quotes" in shown
    members = invoke("circles", "members", "reviewed")
    row = row_of(members, str(coder))
    assert "33%" in row, row  # one approval of three verdicts

    # An illegal move is refused with the moves that are allowed.
    again = one_line(refused("circles", "approve", "reviewed", approve))
    assert f"task {approve} is completed: it cannot become completed" in again
    assert "from completed it may become: nothing (it ended)" in again
    early = one_line(refused("circles", "reject", "reviewed", change))
    assert "from changes_requested it may become: in_progress, failed, cancelled" in early
    assert "feedback" in refused("circles", "changes", "reviewed", change, " ")

    assert f"task {change}: cancelled" in invoke("circles", "cancel", "reviewed", change)
    twice = one_line(refused("circles", "cancel", "reviewed", change))
    assert f"task {change} is cancelled: it cannot become cancelled" in twice
    row = row_of(invoke("circles", "tasks", "reviewed"), change)
    assert "cancelled" in row and "2" in row  # its second attempt was cancelled


def test_archiving_cancels_the_open_tasks_and_is_for_good(team: dict[str, int]) -> None:
    open_task = task_id_in(invoke("circles", "task", "reviewed", "left open"))
    assert "circle reviewed: archived" in invoke("circles", "archive", "reviewed")
    row = row_of(invoke("circles", "tasks", "reviewed"), str(open_task))
    assert "cancelled" in row
    shown = one_line(invoke("circles", "show", "reviewed", str(open_task)))
    assert "offered → cancelled the circle was archived" in shown
    back = one_line(refused("circles", "activate", "reviewed"))
    assert "circle 'reviewed' is archived: it cannot become active" in back
    assert "nothing (it is archived)" in back
    closed = refused("circles", "task", "reviewed", "late")
    assert "archived: it takes no tasks" in one_line(closed)
    listed = invoke("circles", "list")
    assert "archived" in row_of(listed, "2") and "yes" in row_of(listed, "2")
    assert "created" in row_of(listed, "1") and row_of(listed, "1").split()[-2] == "no"


def test_task_follow_runs_the_agents_until_the_task_completes(
    database: str, llm_stub_env: LLMStubServer
) -> None:
    for name in ("coder", "critic"):
        new_agent(name)
    invoke("circles", "create", "team")
    coder = member_id_in(invoke("circles", "add", "team", "coder", "--skill", "python=4"))
    critic = member_id_in(invoke("circles", "add", "team", "critic", "--role", "reviewer"))
    invoke("circles", "activate", "team")
    llm_stub_env.add_reply("rows = list(csv.reader(f))", APPROVED)

    output = invoke("circles", "task", "team", "parse CSV", "--needs", "python=3", "--follow")
    assert "this command runs the jobs itself" in output
    task_id = task_id_in(output)
    moves = [line for line in output.splitlines() if re.match(r"\d{4}-\d\d-\d\dT", line)]
    assert [line.split()[1] for line in moves] == [
        "pending",
        "offered",
        "in_progress",
        "in_review",
        "completed",
    ], output
    assert "by coder claimed" in moves[2] and "by coder submitted" in moves[3]
    assert "by critic approved" in moves[4]
    shown = one_line(invoke("circles", "show", "team", str(task_id)))
    assert f"review member {critic}" in shown
    assert "review of attempt 1: approved tidy" in shown
    assert shown.endswith("rows = list(csv.reader(f))")
    row = row_of(invoke("circles", "members", "team"), str(coder))
    assert " 1 " in row and "100%" in row, row


def test_task_follow_stops_when_the_task_waits_for_a_person(
    team: dict[str, int], llm_stub_env: LLMStubServer
) -> None:
    """No member may review in `reviewed`: the work waits for the owner's verdict."""
    llm_stub_env.add_reply("the work")
    result = run("circles", "task", "reviewed", "parse", "--follow")
    assert result.exit_code == 1, result.output  # it has not completed
    assert "Traceback" not in result.output
    moves = [line.split()[1] for line in result.output.splitlines() if re.match(r"\d{4}-", line)]
    assert moves == ["pending", "offered", "in_progress", "in_review"], result.output
    assert "it waits for a person: approve or reject it" in one_line(result.output)
    task_id = str(task_id_in(result.output))
    assert "in_review" in row_of(invoke("circles", "tasks", "reviewed"), task_id)
    assert f"task {task_id}: completed" in invoke("circles", "approve", "reviewed", task_id)


# --- refusals ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "args",
    [
        ("add", "nope", "coder"),
        ("activate", "nope"),
        ("archive", "nope"),
        ("members", "nope"),
        ("task", "nope", "a title"),
        ("tasks", "nope"),
        ("show", "nope", "1"),
        ("approve", "nope", "1"),
        ("reject", "nope", "1"),
        ("changes", "nope", "1", "more"),
        ("cancel", "nope", "1"),
    ],
)
def test_an_unknown_circle_is_named_with_a_hint(database: str, args: tuple[str, ...]) -> None:
    output = refused("circles", *args)
    assert "no circle 'nope'" in output
    assert "gathering circles list" in one_line(output)


def test_a_task_of_another_circle_is_not_found_in_this_one(team: dict[str, int]) -> None:
    task_id = str(task_id_in(invoke("circles", "task", "reviewed", "mine")))
    for verb in ("show", "approve", "reject", "cancel"):
        output = refused("circles", verb, "parsers", task_id)
        assert f"no task {task_id} in circle 'parsers'" in output, verb
    assert "no circle task 999" in refused("circles", "show", "reviewed", "999")
    assert "offered" in row_of(invoke("circles", "tasks", "reviewed"), task_id)


def test_multi_user_mode_asks_whose_circle(database: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GATHERING_AUTH", "required")
    monkeypatch.setenv("GATHERING_SECRET_KEY", "k" * 64)
    get_settings.cache_clear()
    output = one_line(refused("circles", "create", "parsers"))
    assert "--owner" in output
    assert "circle" in output and "pipelines" not in output
