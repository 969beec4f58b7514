"""Run-time settings over HTTP: admins only (403 to members, viewers and an admin's API key
without `admin`); a value stored through one app instance changes what another instance on the
same database does (the default provider and model of new agents, the cap on running pipeline
runs, the /metrics token); the environment wins; every change audited; a secret never in a
response, the audit log or the server's output; bad values refused with a clear 422."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from pipeline_runtime import linear, pipeline_runtime
from task_api import (
    api_key,
    client_for,
    login,
    multi_fixture,  # noqa: F401 - the fixture "multi"
    multi_user_app,
    stub_fixture,  # noqa: F401 - the fixture "stub"
)

from gathering.errors import RateLimitedError

Json = dict[str, Any]
Multi = tuple[FastAPI, httpx.AsyncClient]
SECRET = "scrape-" + "s3cr3t" * 8  # 55 printable characters


@pytest.fixture
async def second(migrated_database_url: str, multi: Multi) -> AsyncIterator[httpx.AsyncClient]:
    """Another app instance on the same database (tokens of one are good on the other)."""
    app = multi_user_app(migrated_database_url)
    async with client_for(app) as client:
        yield client
    await app.state.gathering.close()


def _by_name(listed: list[Json]) -> dict[str, Json]:
    return {entry["name"]: entry for entry in listed}


async def test_only_admins_read_or_change_settings(multi: Multi) -> None:
    app, client = multi
    admin = await login(app, client, "admin")
    member, viewer = await login(app, client), await login(app, client, "viewer")
    keyed = await api_key(client, admin, "*:read", "*:write")  # every scope but `admin`
    for headers in (member, viewer, keyed):
        assert (await client.get("/settings", headers=headers)).status_code == 403
        assert (await client.get("/settings/default_provider", headers=headers)).status_code == 403
        put = await client.put("/settings/ollama_model", json={"value": "x"}, headers=headers)
        assert put.status_code == 403, put.text
        assert (
            await client.delete("/settings/ollama_model/value", headers=headers)
        ).status_code == 403
    assert (await client.get("/settings")).status_code == 401

    listed = await client.get("/settings", headers=admin)
    assert listed.status_code == 200, listed.text
    settings = _by_name(listed.json())
    assert set(settings) >= {"default_provider", "ollama_model", "metrics_token"}
    assert settings["pipeline_max_running_runs"] == {
        **settings["pipeline_max_running_runs"],
        "value": 1000,
        "default": 1000,
        "source": "default",
        "changeable": True,
        "kind": "integer",
        "env_var": "GATHERING_PIPELINE_MAX_RUNNING_RUNS",
    }
    stored = await client.get("/settings", headers=admin)
    assert stored.json() == listed.json()  # reading changes nothing


async def test_a_setting_stored_on_one_instance_rules_the_other(
    multi: Multi, second: httpx.AsyncClient
) -> None:
    app, first = multi
    admin, member = await login(app, first, "admin"), await login(app, first)
    before = await second.post("/agents", json={"name": "Before"}, headers=member)
    assert before.status_code == 201, before.text
    assert before.json()["provider"] == "anthropic"  # the stub's key is set: the fallback

    for name, value in (("default_provider", "ollama"), ("ollama_model", "stored-model:7b")):
        stored = await first.put(f"/settings/{name}", json={"value": value}, headers=admin)
        assert stored.status_code == 200, stored.text
        assert stored.json()["value"] == value and stored.json()["source"] == "stored"
        assert stored.json()["updated_by"] is not None
        seen = await second.get(f"/settings/{name}", headers=admin)
        assert seen.json()["value"] == value and seen.json()["source"] == "stored"

    made = await second.post("/agents", json={"name": "After"}, headers=member)
    assert made.status_code == 201, made.text
    assert (made.json()["provider"], made.json()["model"]) == ("ollama", "stored-model:7b")
    named = await second.post(
        "/agents", json={"name": "Named", "provider": "openai"}, headers=member
    )
    assert named.json()["provider"] == "openai" and named.json()["model"] != "stored-model:7b"
    moved = await second.patch(
        f"/agents/{named.json()['id']}", json={"provider": "ollama"}, headers=member
    )
    assert moved.json()["model"] == "stored-model:7b"

    reset = await first.delete("/settings/default_provider/value", headers=admin)
    assert reset.status_code == 200, reset.text
    assert reset.json()["source"] == "default" and reset.json()["value"] is None
    again = await second.post("/agents", json={"name": "Again"}, headers=member)
    assert again.json()["provider"] == "anthropic"
    assert (
        await first.delete("/settings/default_provider/value", headers=admin)
    ).status_code == 200

    audit = await second.get("/audit", params={"event": "setting.*"}, headers=admin)
    entries = [(e["event"], e["target_id"], e["details"].get("value")) for e in audit.json()]
    assert entries == [  # newest first; the second reset changed nothing
        ("setting.reset", "default_provider", None),
        ("setting.changed", "ollama_model", "stored-model:7b"),
        ("setting.changed", "default_provider", "ollama"),
    ]
    assert all(e["actor_id"] is not None and e["ip"] for e in audit.json())


async def test_a_stored_cap_on_running_runs_holds_in_another_process(
    multi: Multi, migrated_database_url: str
) -> None:
    app, client = multi
    admin = await login(app, client, "admin")
    put = await client.put("/settings/pipeline_max_running_runs", json={"value": 2}, headers=admin)
    assert put.status_code == 200, put.text
    async with pipeline_runtime(migrated_database_url, workers=0) as idle:
        pipeline_id, version = await idle.pipeline(linear(name="many"))
        for _ in range(2):
            await idle.executor.start_run(pipeline_id, version, idle.owner_id, {})
        with pytest.raises(RateLimitedError, match="2 pipeline runs running"):
            await idle.executor.start_run(pipeline_id, version, idle.owner_id, {})
        await client.delete("/settings/pipeline_max_running_runs/value", headers=admin)
        await idle.executor.start_run(pipeline_id, version, idle.owner_id, {})  # 1000 again


async def test_the_environment_wins_over_a_stored_value(
    migrated_database_url: str, multi: Multi, settings_env: Any
) -> None:
    app, client = multi
    admin, member = await login(app, client, "admin"), await login(app, client)
    stored = await client.put("/settings/ollama_model", json={"value": "stored"}, headers=admin)
    assert stored.status_code == 200, stored.text

    settings_env(ollama_model="from-env")
    restarted = multi_user_app(migrated_database_url)  # an instance started with the variable
    async with client_for(restarted) as other:
        shown = (await other.get("/settings/ollama_model", headers=admin)).json()
        assert shown["value"] == "from-env" and shown["source"] == "environment"
        assert shown["changeable"] is False
        refused = await other.put("/settings/ollama_model", json={"value": "x"}, headers=admin)
        assert refused.status_code == 409, refused.text
        assert "GATHERING_OLLAMA_MODEL" in refused.json()["detail"]
        assert (
            await other.delete("/settings/ollama_model/value", headers=admin)
        ).status_code == 409
        made = await other.post(
            "/agents", json={"name": "Env", "provider": "ollama"}, headers=member
        )
        assert made.json()["model"] == "from-env"
    await restarted.state.gathering.close()


async def test_a_secret_setting_is_never_shown_and_works_on_every_instance(
    multi: Multi, second: httpx.AsyncClient, capsys: pytest.CaptureFixture[str]
) -> None:
    app, first = multi
    admin = await login(app, first, "admin")
    bearer = {"Authorization": f"Bearer {SECRET}"}
    assert (await second.get("/metrics", headers=bearer)).status_code == 401

    stored = await first.put("/settings/metrics_token", json={"value": SECRET}, headers=admin)
    assert stored.status_code == 200, stored.text
    assert stored.json()["value"] == "********" and stored.json()["secret"] is True
    assert (await second.get("/metrics", headers=bearer)).status_code == 200
    wrong = {"Authorization": f"Bearer {SECRET[:-1]}x"}
    assert (await second.get("/metrics", headers=wrong)).status_code == 401

    changed = await first.put(
        "/settings/metrics_token", json={"value": SECRET[::-1]}, headers=admin
    )
    assert changed.status_code == 200
    assert (await second.get("/metrics", headers=bearer)).status_code == 401  # at once

    short = await first.put("/settings/metrics_token", json={"value": "tiny-secret"}, headers=admin)
    assert short.status_code == 422 and "tiny-secret" not in short.text

    shown = [
        (await first.get("/settings", headers=admin)).text,
        (await second.get("/settings/metrics_token", headers=admin)).text,
        (await first.get("/audit", params={"event": "setting.*"}, headers=admin)).text,
    ]
    assert "********" in shown[1]
    database = await app.state.gathering.database()
    rows = await database.fetch_all("SELECT value::text AS v FROM catalog.settings")
    audit_rows = await database.fetch_all("SELECT details::text AS d FROM auth.audit_log")
    output = capsys.readouterr()
    for text in (
        *shown,
        *(r["v"] for r in rows),
        *(r["d"] for r in audit_rows),
        output.out,
        output.err,
    ):
        assert SECRET not in text and SECRET[::-1] not in text


@pytest.mark.parametrize(
    ("name", "value", "says"),
    [
        ("pipeline_max_running_runs", "ten", "integer"),
        ("pipeline_max_running_runs", 10.5, "integer"),
        ("pipeline_max_running_runs", True, "integer"),
        ("pipeline_max_running_runs", 0, "greater than or equal to 1"),
        ("pipeline_max_running_runs", 10**12, "less than or equal to 1000000"),
        ("default_provider", "nope", "unknown provider 'nope'"),
        ("default_provider", 3, "string"),
        ("default_provider", "scripted", "for tests and demos only"),
        ("ollama_model", "", "at least 1 character"),
        ("ollama_model", "m" * 100_000, "at most 200 characters"),
        ("ollama_model", "nul\u0000", "pattern"),
        ("ollama_model", {"nested": ["x"] * 1000}, "string"),
        ("ollama_model", None, "string"),
    ],
)
async def test_a_bad_value_is_refused_with_a_clear_422(
    multi: Multi, name: str, value: Any, says: str
) -> None:
    app, client = multi
    admin = await login(app, client, "admin")
    refused = await client.put(f"/settings/{name}", json={"value": value}, headers=admin)
    assert refused.status_code == 422, refused.text
    assert name in refused.json()["detail"] and says in refused.json()["detail"], refused.text
    assert (await client.get(f"/settings/{name}", headers=admin)).json()["source"] == "default"


async def test_unknown_names_and_malformed_bodies(multi: Multi) -> None:
    app, client = multi
    admin = await login(app, client, "admin")
    unknown = await client.put("/settings/secret_key", json={"value": "x" * 64}, headers=admin)
    assert unknown.status_code == 404 and "default_provider" in unknown.json()["hint"]
    assert (await client.get("/settings/" + "a" * 64, headers=admin)).status_code == 422
    assert (await client.get("/settings/Bad-Name", headers=admin)).status_code == 422
    for body in ({}, {"value": "x", "extra": 1}, []):
        put = await client.put("/settings/ollama_model", json=body, headers=admin)
        assert put.status_code == 422, (body, put.text)
