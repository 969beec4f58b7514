"""Pipelines over HTTP: store a definition, save versions (none for an identical save), read
any version, validate without saving, refuse what the checks refuse with each problem's path,
and show each owner only their own pipelines."""

from __future__ import annotations

import copy
import secrets
import typing

import httpx
import pytest
from pydantic import BaseModel

from gathering.api.app import create_app
from gathering.api.routers.pipelines import NODES_IN, PipelineIn
from gathering.auth.users import UserStore
from gathering.config import load_settings
from gathering.pipelines import Node, PipelineDefinition, parse_definition, validate
from gathering.pipelines.node_config import CONFIGS

PASSWORD = "correct horse battery staple"
TRIAGE = {
    "name": "triage",
    "description": "Sort a ticket, page someone when it is urgent.",
    "input_schema": {
        "type": "object",
        "properties": {"ticket": {"type": "string"}},
        "required": ["ticket"],
    },
    "timeout_seconds": 600,
    "nodes": [
        {"id": "start", "type": "trigger", "config": {"kind": "manual"}},
        {
            "id": "sort",
            "type": "agent",
            "config": {
                "agent": "triager",
                "prompt": "Sort: {{ input.ticket }}",
                "output": "json",
                "output_schema": {"type": "object"},
            },
            "retry": {"max_attempts": 3, "backoff": 2},
        },
        {"id": "urgent", "type": "condition", "config": {"expression": "outputs.sort.p == 1"}},
        {
            "id": "page",
            "type": "action",
            "config": {"kind": "webhook", "url": "https://hooks.example.com/page"},
        },
    ],
    "edges": [
        {"from": "start", "to": "sort"},
        {"from": "sort", "to": "urgent"},
        {"from": "urgent", "to": "page", "condition": "true"},
    ],
}
EVERY_TYPE = {
    "name": "every type",
    "nodes": [
        {"id": "t", "type": "trigger"},
        {"id": "a", "type": "agent", "config": {"agent": 7, "prompt": "{{ input }}"}},
        {"id": "tool", "type": "tool", "config": {"tool": "calculator", "arguments": {"x": 1}}},
        {"id": "c", "type": "condition", "config": {"expression": "len(input) > 0"}},
        {"id": "e", "type": "action", "config": {"kind": "emit_event", "event": "x.done"}},
        {"id": "p", "type": "parallel", "config": {"join": "n", "n": 1}},
        {"id": "d", "type": "delay", "config": {"seconds": 1.5}},
        {"id": "ok", "type": "approval", "config": {"message": "Go?", "timeout_seconds": 60}},
        {"id": "sub", "type": "sub_pipeline", "config": {"pipeline": "other", "input": {}}},
    ],
    "edges": [
        {"from": "t", "to": "a"},
        {"from": "a", "to": "tool"},
        {"from": "tool", "to": "c"},
        {"from": "c", "to": "e"},
        {"from": "e", "to": "p"},
        {"from": "p", "to": "d"},
        {"from": "d", "to": "ok"},
        {"from": "ok", "to": "sub"},
    ],
}


def client_for(app) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test")


@pytest.fixture
async def api(app_for):
    async with client_for(app_for()) as client:
        yield client


def edited(document: dict, **changes: object) -> dict:
    copied = copy.deepcopy(document)
    copied.update(changes)
    return copied


async def test_a_pipeline_is_stored_read_listed_and_deleted(api):
    created = await api.post("/pipelines", json=TRIAGE)
    assert created.status_code == 201, created.text
    body = created.json()
    assert body["name"] == "triage" and body["version"] == 1 and body["nodes"] == 4
    assert body["description"] == TRIAGE["description"]
    assert body["definition"]["edges"][2] == {"from": "urgent", "to": "page", "condition": "true"}
    assert (
        parse_definition(body["definition"]).model_dump() == parse_definition(TRIAGE).model_dump()
    )

    one = await api.get(f"/pipelines/{body['id']}")
    assert one.status_code == 200 and one.json() == body
    listed = (await api.get("/pipelines")).json()
    assert [p["name"] for p in listed] == ["triage"] and "definition" not in listed[0]

    assert (await api.delete(f"/pipelines/{body['id']}")).status_code == 204
    assert (await api.get(f"/pipelines/{body['id']}")).status_code == 404
    assert (await api.get(f"/pipelines/{body['id']}/versions")).status_code == 404
    assert (await api.delete(f"/pipelines/{body['id']}")).status_code == 404
    assert (await api.get("/pipelines")).json() == []


async def test_every_node_type_is_taken(api):
    created = await api.post("/pipelines", json=EVERY_TYPE)
    assert created.status_code == 201, created.text
    assert created.json()["definition"]["nodes"][1]["config"]["agent"] == 7


async def test_each_changed_save_adds_a_version_and_old_ones_stay(api):
    pipeline_id = (await api.post("/pipelines", json=TRIAGE)).json()["id"]
    same = await api.put(f"/pipelines/{pipeline_id}", json=TRIAGE)
    assert same.status_code == 200 and same.json()["version"] == 1  # identical: no version

    longer = edited(TRIAGE, timeout_seconds=900)
    second = await api.put(f"/pipelines/{pipeline_id}", json=longer)
    assert second.json()["version"] == 2 and second.json()["definition"]["timeout_seconds"] == 900
    renamed = await api.put(f"/pipelines/{pipeline_id}", json=edited(longer, name="sorting"))
    assert renamed.json()["version"] == 3 and renamed.json()["name"] == "sorting"
    assert renamed.json()["created_at"] == second.json()["created_at"]
    assert renamed.json()["updated_at"] > second.json()["updated_at"]

    versions = (await api.get(f"/pipelines/{pipeline_id}/versions")).json()
    assert [(v["version"], v["name"]) for v in versions] == [
        (3, "sorting"),
        (2, "triage"),
        (1, "triage"),
    ]
    assert all(v["created_by"] is not None for v in versions)
    first = await api.get(f"/pipelines/{pipeline_id}/versions/1")
    assert first.status_code == 200
    assert first.json()["definition"]["timeout_seconds"] == 600
    assert first.json()["pipeline_id"] == pipeline_id and first.json()["name"] == "triage"
    missing = await api.get(f"/pipelines/{pipeline_id}/versions/4")
    assert missing.status_code == 404 and "versions" in missing.json()["hint"]
    assert (await api.get("/pipelines")).json()[0]["version"] == 3


async def test_names_are_unique_per_owner(api):
    assert (await api.post("/pipelines", json=TRIAGE)).status_code == 201
    again = await api.post("/pipelines", json=TRIAGE)
    assert again.status_code == 409
    assert "already have a pipeline named 'triage'" in again.json()["detail"]
    assert "PUT /pipelines" in again.json()["hint"]
    other = (await api.post("/pipelines", json=EVERY_TYPE)).json()
    taken = await api.put(f"/pipelines/{other['id']}", json=edited(EVERY_TYPE, name="triage"))
    assert taken.status_code == 409
    assert (await api.get(f"/pipelines/{other['id']}")).json()["version"] == 1


async def test_a_definition_the_checks_refuse_is_422_with_each_problem_at_its_path(api):
    cyclic = edited(
        TRIAGE,
        edges=[*TRIAGE["edges"], {"from": "page", "to": "sort"}, {"from": "sort", "to": "ghost"}],
    )
    refused = await api.post("/pipelines", json=cyclic)
    assert refused.status_code == 422, refused.text
    body = refused.json()
    assert body["code"] == "invalid_input" and body["hint"]
    problems = {(p["path"], p["code"]) for p in body["details"]["problems"]}
    assert ("edges[4].to", "unknown_node") in problems
    assert ("edges", "cycle") in problems
    assert "cycle: " in body["detail"]
    assert (await api.get("/pipelines")).json() == []  # nothing saved

    bad_template = copy.deepcopy(TRIAGE)
    bad_template["nodes"][1]["config"]["prompt"] = "{{ input.ticket"
    refused = await api.post("/pipelines", json=bad_template)
    assert refused.status_code == 422
    [problem] = refused.json()["details"]["problems"]
    assert problem["path"] == "nodes[1].config.prompt" and problem["code"] == "invalid_config"

    pipeline_id = (await api.post("/pipelines", json=TRIAGE)).json()["id"]
    refused = await api.put(f"/pipelines/{pipeline_id}", json=cyclic)
    assert refused.status_code == 422
    assert (await api.get(f"/pipelines/{pipeline_id}")).json()["version"] == 1


@pytest.mark.parametrize(
    ("change", "where"),
    [
        ({"nodes": []}, ["body", "nodes"]),
        ({"nodes": [{"id": "bad id!", "type": "trigger"}]}, ["body", "nodes", 0, "trigger", "id"]),
        ({"nodes": [{"id": "x", "type": "teleport"}]}, ["body", "nodes", 0]),
        ({"nodes": [{"id": "x", "type": "delay"}]}, ["body", "nodes", 0, "delay", "config"]),
        ({"edges": [{"source": "a", "target": "b"}]}, ["body", "edges", 0, "from"]),
        ({"description": "nul \x00"}, ["body", "description"]),
        ({"timeout_seconds": "60"}, ["body", "timeout_seconds"]),
        ({"surprise": 1}, ["body", "surprise"]),
    ],
)
async def test_a_body_outside_the_schema_is_422_naming_the_field(api, change, where):
    refused = await api.post("/pipelines", json=edited(TRIAGE, **change))
    assert refused.status_code == 422, refused.text
    assert refused.json()["errors"][0]["loc"] == where


async def test_validate_checks_without_saving(api):
    valid = await api.post("/pipelines/validate", json=TRIAGE)
    assert valid.status_code == 200 and valid.json() == {"valid": True, "problems": []}
    unreachable = edited(TRIAGE, edges=TRIAGE["edges"][:1])
    answer = (await api.post("/pipelines/validate", json=unreachable)).json()
    assert answer["valid"] is False
    assert {(p["path"], p["code"]) for p in answer["problems"]} == {
        ("nodes[2]", "unreachable"),
        ("nodes[3]", "unreachable"),
    }
    unreadable = (await api.post("/pipelines/validate", json={"name": "x", "nodes": [{}]})).json()
    assert unreadable["valid"] is False
    [problem] = unreadable["problems"]
    assert problem["code"] == "invalid_document" and problem["path"] == "nodes[0]"
    assert "invalid node data" in problem["message"]
    assert (await api.get("/pipelines")).json() == []
    assert (await api.post("/pipelines/validate", json=[1])).status_code == 422


def models_in(annotation) -> list[type[BaseModel]]:
    """The pydantic models a (union, annotated, list) type annotation names."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return [model for arg in typing.get_args(annotation) for model in models_in(arg)]


def test_the_request_model_has_every_node_type_and_config_field_of_the_definition():
    """The body mirrors the definition's model with the API's stricter types: a node type or
    a field added to one and not the other fails here."""
    fields = {}
    for model in NODES_IN:
        [node_type] = typing.get_args(model.model_fields["type"].annotation)
        variants = models_in(model.model_fields["config"].annotation)
        fields[node_type] = set().union(*(set(v.model_fields) for v in variants))
        assert set(model.model_fields) == set(Node.model_fields)
    assert fields == {name: set(model.model_fields) for name, model in CONFIGS.items()}
    assert models_in(PipelineIn.model_fields["nodes"].annotation) == list(NODES_IN)
    assert set(PipelineIn.model_fields) == set(PipelineDefinition.model_fields)
    for document in (TRIAGE, EVERY_TYPE):
        taken = PipelineIn.model_validate(document).document()
        assert validate(parse_definition(taken)) == []


# --- multi-user mode --------------------------------------------------------------------------


@pytest.fixture
async def multi(migrated_database_url):
    app = create_app(
        settings=load_settings(
            database_url=migrated_database_url, auth="required", secret_key="k" * 64
        )
    )
    async with client_for(app) as client:
        yield app, client
    await app.state.gathering.close()


async def _login(app, client, role: str = "member") -> dict[str, str]:
    email = f"t-{secrets.token_hex(4)}@example.com"
    await UserStore(await app.state.gathering.database()).create(email, PASSWORD, role=role)
    tokens = (await client.post("/auth/login", json={"email": email, "password": PASSWORD})).json()
    return {"Authorization": f"Bearer {tokens['access_token']}"}


async def test_each_owner_sees_only_their_own_pipelines(multi):
    app, client = multi
    alice, bob = await _login(app, client), await _login(app, client)
    admin, viewer = await _login(app, client, "admin"), await _login(app, client, "viewer")
    mine = (await client.post("/pipelines", json=TRIAGE, headers=alice)).json()
    # Names are per owner: Bob may have a "triage" too.
    assert (await client.post("/pipelines", json=TRIAGE, headers=bob)).status_code == 201

    where = f"/pipelines/{mine['id']}"
    for method, path, body in [
        ("GET", where, None),
        ("PUT", where, edited(TRIAGE, timeout_seconds=5)),
        ("DELETE", where, None),
        ("GET", f"{where}/versions", None),
        ("GET", f"{where}/versions/1", None),
    ]:
        answer = await client.request(method, path, json=body, headers=bob)
        assert answer.status_code == 404, (method, path)
        assert answer.json()["detail"] == f"pipeline {mine['id']} not found"
    assert [p["owner_id"] for p in (await client.get("/pipelines", headers=bob)).json()] != [
        mine["owner_id"]
    ]
    assert len((await client.get("/pipelines", headers=alice)).json()) == 1

    # An admin sees and changes every owner's; the version records who saved it.
    assert len((await client.get("/pipelines", headers=admin)).json()) == 2
    changed = await client.put(where, json=edited(TRIAGE, timeout_seconds=5), headers=admin)
    assert changed.status_code == 200 and changed.json()["owner_id"] == mine["owner_id"]
    [latest, _] = (await client.get(f"{where}/versions", headers=alice)).json()
    assert latest["created_by"] != mine["owner_id"]

    # A viewer reads and validates, and changes nothing; no credentials, nothing at all.
    assert (await client.get("/pipelines", headers=viewer)).status_code == 200
    assert (await client.post("/pipelines/validate", json=TRIAGE, headers=viewer)).json()["valid"]
    assert (await client.post("/pipelines", json=EVERY_TYPE, headers=viewer)).status_code == 403
    assert (await client.get("/pipelines")).status_code == 401


async def test_api_keys_need_the_pipelines_scopes(multi):
    app, client = multi
    alice = await _login(app, client)

    async def key(*scopes: str) -> dict[str, str]:
        made = await client.post(
            "/auth/api-keys",
            json={"name": f"k{secrets.token_hex(2)}", "scopes": list(scopes)},
            headers=alice,
        )
        assert made.status_code == 201, made.text
        return {"X-API-Key": made.json()["key"]}

    reader, writer = await key("pipelines:read"), await key("pipelines:write")
    other = await key("agents:*")
    assert (await client.post("/pipelines", json=TRIAGE, headers=reader)).status_code == 403
    made = await client.post("/pipelines", json=TRIAGE, headers=writer)
    assert made.status_code == 201
    assert (await client.get("/pipelines", headers=writer)).status_code == 403
    assert (await client.get(f"/pipelines/{made.json()['id']}", headers=reader)).status_code == 200
    assert (await client.get("/pipelines", headers=other)).status_code == 403
