"""`gathering pipelines list|apply|validate|export`: definitions from JSON or YAML files, the
same checks and versions as the API, from a shell."""

from __future__ import annotations

import asyncio
import json

import pytest
import yaml
from typer.testing import CliRunner

from gathering.auth.users import UserStore
from gathering.cli import app
from gathering.config import get_settings
from gathering.db import Database
from gathering.pipelines import list_pipelines, list_versions

runner = CliRunner()
TRIAGE_YAML = """\
name: triage
description: Sort a support ticket.
input_schema:
  type: object
  properties:
    ticket: {type: string}
  required: [ticket]
nodes:
  - id: start
    type: trigger
    config: {kind: manual}
  - id: sort
    type: agent
    config:
      agent: triager
      prompt: "Sort this ticket: {{ input.ticket }}"
  - id: urgent
    type: condition
    config: {expression: 'outputs.sort == "high"'}
edges:
  - {from: start, to: sort}
  - {from: sort, to: urgent}
"""


@pytest.fixture
def database(monkeypatch, migrated_database_url):
    monkeypatch.setenv("GATHERING_DATABASE_URL", migrated_database_url)
    get_settings.cache_clear()
    yield migrated_database_url
    get_settings.cache_clear()


def run(*args: str):
    return runner.invoke(app, list(args), catch_exceptions=False)


def stored(url: str) -> dict[str, list[int]]:
    """Each stored pipeline's name and its version numbers."""

    async def fetch() -> dict[str, list[int]]:
        async with Database(url=url, min_size=0, max_size=1) as db:
            records = await list_pipelines(db, owner_id=None)
            return {r.name: [v.version for v in await list_versions(db, r.id)] for r in records}

    return asyncio.run(fetch())


def test_apply_creates_then_adds_versions_and_export_gives_it_back(database, tmp_path):
    source = tmp_path / "triage.yaml"
    source.write_text(TRIAGE_YAML)
    created = run("pipelines", "apply", str(source))
    assert created.exit_code == 0, created.output
    assert "created pipeline triage" in created.output and "version 1" in created.output
    again = run("pipelines", "apply", str(source))
    assert again.exit_code == 0 and "unchanged (version 1)" in again.output

    source.write_text(TRIAGE_YAML.replace("Sort a support ticket.", "Sort tickets."))
    changed = run("pipelines", "apply", str(source))
    assert changed.exit_code == 0 and "saved version 2" in changed.output
    assert stored(database) == {"triage": [2, 1]}

    listed = run("pipelines", "list")
    assert listed.exit_code == 0
    [row] = [line for line in listed.output.splitlines() if "triage" in line]
    assert "│ 2 " in row and "│ 3 " in row  # version 2, 3 nodes

    exported = run("pipelines", "export", "triage")
    assert exported.exit_code == 0, exported.output
    document = json.loads(exported.output)
    assert document["description"] == "Sort tickets."
    assert document["edges"][0] == {"from": "start", "to": "sort"}
    first = run("pipelines", "export", "triage", "--version", "1", "--yaml")
    assert yaml.safe_load(first.output)["description"] == "Sort a support ticket."

    # What export prints, apply takes back as it is: JSON and YAML alike.
    as_json = tmp_path / "triage.json"
    as_json.write_text(exported.output)
    assert "unchanged (version 2)" in run("pipelines", "apply", str(as_json)).output
    as_yaml = tmp_path / "first.yml"
    as_yaml.write_text(first.output)
    assert "saved version 3" in run("pipelines", "apply", str(as_yaml)).output
    assert stored(database) == {"triage": [3, 2, 1]}

    missing = run("pipelines", "export", "triage", "--version", "9")
    assert missing.exit_code == 1
    assert "has no version 9" in missing.output and "1 to 3" in missing.output
    nobody = run("pipelines", "export", "nothing")
    assert nobody.exit_code == 1 and "no pipeline named 'nothing'" in nobody.output


def test_validate_prints_each_problem_at_its_path(database, tmp_path):
    good = tmp_path / "good.yaml"
    good.write_text(TRIAGE_YAML)
    valid = run("pipelines", "validate", str(good))
    assert valid.exit_code == 0 and "is valid (3 nodes, 2 edges)" in valid.output

    bad = tmp_path / "bad.json"
    document = yaml.safe_load(TRIAGE_YAML)
    document["edges"] += [{"from": "urgent", "to": "sort"}, {"from": "sort", "to": "ghost"}]
    document["nodes"][1]["config"]["prompt"] = "{{ input.ticket"
    bad.write_text(json.dumps(document))
    refused = run("pipelines", "validate", str(bad))
    assert refused.exit_code == 1
    assert "nodes[1].config.prompt: agent node: template error" in refused.output
    assert "edges[3].to: unknown target node 'ghost' (unknown_node)" in refused.output
    assert "edges: cycle: sort -> urgent -> sort (cycle)" in refused.output
    assert "has 3 problem(s)" in refused.output

    not_applied = run("pipelines", "apply", str(bad))
    assert not_applied.exit_code == 1
    assert "edges[3].to" in not_applied.output and "nothing was saved" in not_applied.output
    assert stored(database) == {}


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("p.txt", "{}", "ends in .json, .yaml or .yml"),
        ("p.json", "{oops", "is not valid JSON: Expecting property name"),
        ("p.yaml", "nodes: [a, b", "is not valid YAML"),
        ("p.yaml", "- just\n- a list\n", "holds no pipeline definition"),
        ("p.json", '{"name": "x", "nodes": [{"type": "agent"}]}', "invalid node data at nodes[0]"),
    ],
)
def test_a_file_that_is_no_definition_is_a_clear_error(database, tmp_path, name, content, message):
    path = tmp_path / name
    path.write_text(content)
    for command in ("validate", "apply"):
        result = run("pipelines", command, str(path))
        assert result.exit_code == 1 and message in result.output, result.output
    absent = run("pipelines", "validate", str(tmp_path / "absent.yaml"))
    assert absent.exit_code == 1 and "cannot read" in absent.output


def test_multi_user_mode_needs_an_owner_and_keeps_owners_apart(database, tmp_path, monkeypatch):
    monkeypatch.setenv("GATHERING_AUTH", "required")
    monkeypatch.setenv("GATHERING_SECRET_KEY", "k" * 64)
    get_settings.cache_clear()

    async def users() -> None:
        async with Database(url=database, min_size=0, max_size=1) as db:
            for email in ("ann@example.com", "bob@example.com"):
                await UserStore(db).create(email, "correct horse battery staple")

    asyncio.run(users())
    source = tmp_path / "triage.yaml"
    source.write_text(TRIAGE_YAML)
    nobody = run("pipelines", "apply", str(source))
    assert nobody.exit_code == 1 and "whose pipelines?" in nobody.output
    assert "--owner EMAIL" in nobody.output
    for owner in ("ann@example.com", "bob@example.com"):
        made = run("pipelines", "apply", str(source), "--owner", owner)
        assert made.exit_code == 0 and "created pipeline triage" in made.output
    listed = run("pipelines", "list", "--owner", "bob@example.com")
    assert "bob@example.com" in listed.output and "ann@example.com" not in listed.output
    assert "2 pipeline(s)" in run("pipelines", "list").output
    assert run("pipelines", "export", "triage", "--owner", "ann@example.com").exit_code == 0
    unknown = run("pipelines", "export", "triage", "--owner", "eve@example.com")
    assert unknown.exit_code == 1 and "no user 'eve@example.com'" in unknown.output


def test_what_postgresql_cannot_store_is_refused_with_why(database, tmp_path):
    path = tmp_path / "nul.yaml"
    path.write_text(TRIAGE_YAML.replace("Sort a support ticket.", '"a \\0 b"'))
    refused = run("pipelines", "apply", str(path))
    assert refused.exit_code == 1 and "holds a NUL character" in refused.output
    escaped = tmp_path / "escaped.yaml"  # a backslash and "u0000" is text like any other
    escaped.write_text(TRIAGE_YAML.replace("Sort a support ticket.", "'a \\u0000 b'"))
    assert run("pipelines", "apply", str(escaped)).exit_code == 0
    assert stored(database) == {"triage": [1]}
