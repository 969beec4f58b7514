"""examples/pipelines/ run as written, on the bundled local model: each definition is valid,
and each pipeline runs to its end with real agent turns (no stub)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import yaml
from pipeline_runtime import Runtime, pipeline_runtime

from gathering.agents import Agent, PostgresAgentStore
from gathering.pipelines import parse_definition, validate
from gathering.pipelines.runs import RunRecord, get_run

pytestmark = pytest.mark.slow
EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "pipelines"
FILES = sorted(EXAMPLES.glob("*.yaml"))


DOCUMENTS = {path.stem: yaml.safe_load(path.read_text(encoding="utf-8")) for path in FILES}


def document(name: str) -> dict[str, object]:
    loaded = DOCUMENTS[name]
    assert isinstance(loaded, dict)
    return loaded


def test_there_are_three_valid_examples() -> None:
    assert [path.stem for path in FILES] == [
        "code-review-with-approval",
        "daily-digest",
        "research-and-summarise",
    ]
    for loaded in DOCUMENTS.values():
        assert validate(parse_definition(loaded)) == []


@pytest.fixture
async def runtime(migrated_database_url: str) -> AsyncIterator[Runtime]:
    async with pipeline_runtime(migrated_database_url) as opened:
        store = PostgresAgentStore(opened.db)
        for name, role in (
            ("researcher", "You list facts, briefly."),
            ("writer", "You write short, clear summaries."),
            ("reviewer", "You review code changes."),
        ):
            agent = Agent(name, "local", None, persona={"role": role}, max_tokens=96)
            agent.owner_id = opened.owner_id
            await store.create_agent(agent.record())
        yield opened


async def until_waiting_or_done(runtime: Runtime, run_id: int) -> RunRecord:
    for _ in range(3000):
        run = await get_run(runtime.db, run_id)
        if run.status != "running" or any(n.status == "waiting" for n in run.nodes.values()):
            return run
        await asyncio.sleep(0.1)
    raise AssertionError(f"run {run_id} neither ended nor waited")


async def test_research_and_summarise_runs_on_the_local_model(runtime: Runtime) -> None:
    run = await runtime.start(document("research-and-summarise"), {"topic": "tides"})
    done = await runtime.wait(run.id, limit=300)
    assert done.status == "succeeded", done.error
    assert isinstance(done.outputs["research"], str) and done.outputs["research"].strip()
    assert isinstance(done.outputs["summarise"], str) and done.outputs["summarise"].strip()
    assert done.outputs["announce"] == {"event": "research.summary"}


async def test_code_review_goes_one_way_or_the_other(runtime: Runtime) -> None:
    run = await runtime.start(
        document("code-review-with-approval"), {"diff": "- x = 1\n+ x = 2", "author": "ada"}
    )
    reached = await until_waiting_or_done(runtime, run.id)
    if reached.nodes["approved_by_agent"].output is True:
        assert reached.nodes["sign_off"].status == "waiting"
        assert "Merge it?" in (reached.nodes["sign_off"].input or {})["message"]
        await runtime.executor.resolve(run.id, "sign_off", "approve", comment="ship it")
        done = await runtime.wait(run.id, limit=60)
        assert done.nodes["merged"].status == "succeeded"
        assert done.nodes["changes_requested"].status == "skipped"
    else:
        done = await runtime.wait(run.id, limit=60)
        assert done.nodes["sign_off"].status == "skipped"
        assert done.nodes["changes_requested"].status == "succeeded"
    assert done.status == "succeeded"


async def test_daily_digest_joins_two_agents(runtime: Runtime) -> None:
    run = await runtime.start(document("daily-digest"), {"notes": "Call the bank. Fix the build."})
    done = await runtime.wait(run.id, limit=300)
    assert done.status == "succeeded", done.error
    assert set(done.outputs["both"]) == {"headline", "actions"}
