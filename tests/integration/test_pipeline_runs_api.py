"""Pipeline runs over HTTP, on an app whose lifespan runs its embedded worker: start (202 at
once), follow, cancel, retry from the failed node, fork with new input, decide for a node whose
outcome is unknown, breakers, and owners kept apart."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from pipeline_runtime import LAB, TOOLS, linear, tool_node

from gathering.tools import registry as registry_module


@pytest.fixture
async def api(app_for) -> AsyncIterator[httpx.AsyncClient]:  # type: ignore[no-untyped-def]
    LAB.calls.clear()
    LAB.failures_left.clear()
    LAB.gates.clear()
    LAB.started.clear()
    for tool in TOOLS:
        registry_module.registry.register(tool)
    app = app_for()
    try:
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
                yield client
    finally:
        for gate in LAB.gates.values():
            gate.set()
        for tool in TOOLS:
            registry_module.registry.unregister(tool.name)


async def stored(api: httpx.AsyncClient, document: dict[str, Any]) -> int:
    response = await api.post("/pipelines", json=document)
    assert response.status_code == 201, response.text
    return int(response.json()["id"])


async def finished(api: httpx.AsyncClient, run_id: int, limit: float = 30) -> dict[str, Any]:
    for _ in range(int(limit / 0.05)):
        run = (await api.get(f"/pipelines/runs/{run_id}")).json()
        if run["status"] != "running":
            return dict(run)
        await asyncio.sleep(0.05)
    raise AssertionError(f"run {run_id} still running: {run}")


async def test_a_run_starts_at_once_and_is_followed_to_the_end(api: httpx.AsyncClient) -> None:
    pipeline_id = await stored(api, linear(tool_node("a", "echo", text="{{ input.word }}!")))
    started = await api.post(f"/pipelines/{pipeline_id}/runs", json={"input": {"word": "hi"}})
    assert started.status_code == 202, started.text
    body = started.json()
    assert body["status"] == "running" and body["version"] == 1
    run = await finished(api, body["id"])
    assert run["status"] == "succeeded"
    nodes = {node["node_id"]: node for node in run["nodes"]}
    assert nodes["a"]["output"] == "hi!" and nodes["a"]["attempt"] == 1
    assert nodes["a"]["started_at"] and nodes["a"]["finished_at"]
    listed = (await api.get(f"/pipelines/{pipeline_id}/runs")).json()
    assert [item["id"] for item in listed] == [body["id"]]


async def test_bad_input_and_unknown_things_are_clear(api: httpx.AsyncClient) -> None:
    schema = {"type": "object", "required": ["n"]}
    pipeline_id = await stored(api, linear(input_schema=schema))
    refused = await api.post(f"/pipelines/{pipeline_id}/runs", json={"input": {}})
    assert refused.status_code == 422, refused.text
    assert refused.json()["detail"].endswith('at (input): "n" is a required property')
    assert (await api.get("/pipelines/runs/999999")).status_code == 404
    assert (await api.post("/pipelines/999999/runs", json={})).status_code == 404


async def test_cancel_over_http(api: httpx.AsyncClient) -> None:
    pipeline_id = await stored(api, linear(tool_node("slow", "blocked", key="http-slow")))
    run_id = (await api.post(f"/pipelines/{pipeline_id}/runs", json={})).json()["id"]
    await asyncio.wait_for(LAB.started_event("http-slow").wait(), 20)
    cancelled = await api.post(f"/pipelines/runs/{run_id}/cancel")
    assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"
    again = await api.post(f"/pipelines/runs/{run_id}/cancel")
    assert again.status_code == 409


async def test_the_runs_of_every_pipeline_are_listed_and_filtered_by_status(
    api: httpx.AsyncClient,
) -> None:
    quick = await stored(api, linear(tool_node("a", "echo", text="x")))
    slow = await stored(api, {**linear(tool_node("s", "blocked", key="list-slow")), "name": "s"})
    done = (await api.post(f"/pipelines/{quick}/runs", json={})).json()["id"]
    assert (await finished(api, done))["status"] == "succeeded"
    going = (await api.post(f"/pipelines/{slow}/runs", json={})).json()["id"]
    await asyncio.wait_for(LAB.started_event("list-slow").wait(), 20)
    every = (await api.get("/pipelines/runs")).json()
    assert [(r["id"], r["pipeline_id"]) for r in every] == [(going, slow), (done, quick)]
    running = (await api.get("/pipelines/runs", params={"status": "running"})).json()
    assert [r["id"] for r in running] == [going]
    paged = (await api.get("/pipelines/runs", params={"limit": 1, "offset": 1})).json()
    assert [r["id"] for r in paged] == [done]
    assert (await api.get("/pipelines/runs", params={"status": "pending"})).status_code == 422
    LAB.gates["list-slow"].set()


async def test_retry_goes_on_from_the_failed_node_and_keeps_the_original(
    api: httpx.AsyncClient,
) -> None:
    LAB.failures_left["once"] = 1
    document = linear(tool_node("a", "echo", text="first"), tool_node("b", "flaky", key="once"))
    pipeline_id = await stored(api, document)
    run_id = (await api.post(f"/pipelines/{pipeline_id}/runs", json={})).json()["id"]
    failed = await finished(api, run_id)
    assert failed["status"] == "failed"
    retried = await api.post(f"/pipelines/runs/{run_id}/retry")
    assert retried.status_code == 202
    second = await finished(api, retried.json()["id"])
    assert second["status"] == "succeeded"
    assert (second["parent_run_id"], second["relation"]) == (run_id, "retry")
    nodes = {node["node_id"]: node for node in second["nodes"]}
    assert nodes["a"]["reused"] and LAB.calls["first"] == 1  # not run again
    assert nodes["b"]["output"] == "once ok"
    original = (await api.get(f"/pipelines/runs/{run_id}")).json()
    assert original["status"] == "failed"  # unchanged
    succeeded_again = await api.post(f"/pipelines/runs/{second['id']}/retry")
    assert succeeded_again.status_code == 409


async def test_fork_reruns_from_a_node_with_new_input(api: httpx.AsyncClient) -> None:
    document = linear(
        tool_node("a", "echo", text="a-{{ input.n }}"),
        tool_node("b", "echo", text="b-{{ input.n }}-{{ outputs.a }}"),
    )
    pipeline_id = await stored(api, document)
    run_id = (await api.post(f"/pipelines/{pipeline_id}/runs", json={"input": {"n": 1}})).json()[
        "id"
    ]
    await finished(api, run_id)
    forked = await api.post(f"/pipelines/runs/{run_id}/fork", json={"node": "b", "input": {"n": 2}})
    assert forked.status_code == 202, forked.text
    run = await finished(api, forked.json()["id"])
    outputs = {node["node_id"]: node["output"] for node in run["nodes"]}
    assert outputs["a"] == "a-1"  # reused from the original
    assert outputs["b"] == "b-2-a-1"  # run again with the new input
    assert outputs["start"] == {"n": 2}
    unknown = await api.post(f"/pipelines/runs/{run_id}/fork", json={"node": "zz"})
    assert unknown.status_code == 404


async def test_resolve_is_refused_for_a_node_not_waiting(api: httpx.AsyncClient) -> None:
    pipeline_id = await stored(api, linear(tool_node("a", "echo", text="x")))
    run_id = (await api.post(f"/pipelines/{pipeline_id}/runs", json={})).json()["id"]
    await finished(api, run_id)
    answer = await api.post(f"/pipelines/runs/{run_id}/nodes/a/resolve", json={"action": "retry"})
    assert answer.status_code == 409
    assert (await api.get("/pipelines/breakers")).status_code == 200


async def test_a_webhook_starts_a_run_with_its_secret_only(api: httpx.AsyncClient) -> None:
    hooked = linear(tool_node("a", "echo", text="hook {{ input.n }}"), name="hooked")
    hooked["nodes"][0]["config"] = {"kind": "webhook"}
    pipeline_id = await stored(api, hooked)
    url = f"/pipelines/{pipeline_id}/webhook"
    header = "X-Gathering-Webhook-Secret"
    before = await api.post(url, json={"n": 1}, headers={header: "guess"})
    assert before.status_code == 401  # no secret made yet: the same answer as a wrong one
    made = await api.post(f"/pipelines/{pipeline_id}/webhook-secret")
    assert made.status_code == 200 and made.json()["header"] == header
    secret = made.json()["secret"]
    async with httpx.AsyncClient(transport=api._transport, base_url="http://test") as anonymous:
        wrong = await anonymous.post(url, json={"n": 1}, headers={header: secret + "x"})
        assert wrong.status_code == 401
        missing = await anonymous.post(url, json={"n": 1})
        assert missing.status_code == 401
        started = await anonymous.post(url, json={"n": 7}, headers={header: secret})
        assert started.status_code == 202, started.text
    run = await finished(api, started.json()["id"])
    assert run["trigger"] == "webhook" and run["status"] == "succeeded"
    assert {n["node_id"]: n["output"] for n in run["nodes"]}["a"] == "hook 7"
    rotated = (await api.post(f"/pipelines/{pipeline_id}/webhook-secret")).json()["secret"]
    assert rotated != secret
    assert (await api.post(url, json={}, headers={header: secret})).status_code == 401

    manual = await stored(api, linear(name="manual-only"))
    manual_secret = (await api.post(f"/pipelines/{manual}/webhook-secret")).json()["secret"]
    refused = await api.post(
        f"/pipelines/{manual}/webhook", json={}, headers={header: manual_secret}
    )
    assert refused.status_code == 409 and "has no webhook trigger" in refused.text


async def test_a_disabled_owner_s_webhook_starts_nothing(api: httpx.AsyncClient) -> None:
    from gathering.agents.retrieval import local_owner_id
    from gathering.db import Database

    hooked = linear(name="hooked-off")
    hooked["nodes"][0]["config"] = {"kind": "webhook"}
    pipeline_id = await stored(api, hooked)
    secret = (await api.post(f"/pipelines/{pipeline_id}/webhook-secret")).json()["secret"]
    url = f"/pipelines/{pipeline_id}/webhook"
    header = {"X-Gathering-Webhook-Secret": secret}
    app = api._transport.app  # type: ignore[attr-defined]
    db: Database = await app.state.gathering.database()
    owner = await local_owner_id(db)
    await db.execute("UPDATE auth.users SET is_active = false WHERE id = $1", owner)
    try:
        refused = await api.post(url, json={}, headers=header)
        assert refused.status_code == 403, refused.text
    finally:
        await db.execute("UPDATE auth.users SET is_active = true WHERE id = $1", owner)
    assert (await api.post(url, json={}, headers=header)).status_code == 202
