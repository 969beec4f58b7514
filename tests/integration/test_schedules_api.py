"""Schedules over HTTP, on an app whose lifespan runs the scheduler duty and a worker: create,
read, change, pause, resume, trigger, runs, preview and delete; clear refusals; owners kept
apart; API key scopes."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from gathering.api.app import create_app
from gathering.auth.users import UserStore
from gathering.config import load_settings

PASSWORD = "correct horse battery staple"
NOTE = {"action": "send_notification", "config": {"title": "standup"}}


def client_for(app: Any) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test")


@pytest.fixture
async def api(app_for: Any) -> AsyncIterator[httpx.AsyncClient]:
    app = app_for()
    async with app.router.lifespan_context(app), client_for(app) as client:
        yield client


async def ended_runs(api: httpx.AsyncClient, schedule_id: int, count: int) -> list[Any]:
    for _ in range(200):
        runs = (await api.get(f"/schedules/{schedule_id}/runs")).json()
        if len([r for r in runs if r["status"] not in ("queued", "running")]) >= count:
            return list(runs)
        await asyncio.sleep(0.05)
    raise AssertionError(f"runs of {schedule_id} did not end: {runs}")


async def test_a_schedule_is_made_run_by_the_server_and_followed(api: httpx.AsyncClient) -> None:
    made = await api.post(
        "/schedules", json={"name": "tick", "kind": "interval", "every_seconds": 1, **NOTE}
    )
    assert made.status_code == 201, made.text
    body = made.json()
    assert body["status"] == "active" and body["spec"]["every_seconds"] == 1
    # The server's own scheduler duty claims its slots: runs come without any call.
    runs = await ended_runs(api, body["id"], 2)
    assert all(r["status"] == "succeeded" and r["trigger"] == "slot" for r in runs[:2])
    shown = (await api.get(f"/schedules/{body['id']}")).json()
    assert shown["executions"] >= 2
    listed = (await api.get("/schedules")).json()
    assert [s["name"] for s in listed] == ["tick"]


async def test_pause_resume_trigger_preview_change_delete(api: httpx.AsyncClient) -> None:
    made = await api.post(
        "/schedules",
        json={
            "name": "daily",
            "kind": "cron",
            "cron": "0 9 * * 1-5",
            "timezone": "Europe/Paris",
            **NOTE,
        },
    )
    assert made.status_code == 201, made.text
    where = f"/schedules/{made.json()['id']}"
    instants = (await api.get(f"{where}/preview", params={"count": 3})).json()
    assert len(instants) == 3
    assert all(datetime.fromisoformat(t).hour in (7, 8) for t in instants)  # 09:00 in Paris

    paused = await api.post(f"{where}/pause")
    assert paused.json()["status"] == "paused"
    assert (await api.post(f"{where}/pause")).status_code == 200
    triggered = await api.post(f"{where}/trigger")  # runs even while paused: by hand
    assert triggered.status_code == 202, triggered.text
    assert triggered.json()["trigger"] == "manual"
    [run] = await ended_runs(api, made.json()["id"], 1)
    assert run["status"] == "succeeded"
    resumed = await api.post(f"{where}/resume")
    assert resumed.json()["status"] == "active"
    assert (await api.post(f"{where}/resume")).status_code == 409

    changed = await api.put(
        where, json={"name": "ignored", "kind": "interval", "every_seconds": 3600, **NOTE}
    )
    assert changed.status_code == 200, changed.text
    assert changed.json()["name"] == "daily" and changed.json()["spec"]["kind"] == "interval"
    next_run = datetime.fromisoformat(changed.json()["next_run_at"])
    assert timedelta(minutes=59) < next_run - datetime.now(UTC) <= timedelta(hours=1)

    assert (await api.delete(where)).status_code == 204
    assert (await api.get(where)).status_code == 404


async def test_an_event_schedule_has_no_preview(api: httpx.AsyncClient) -> None:
    """It fires when its events come: asking for its next instants is a 409 that says so."""
    made = await api.post(
        "/schedules", json={"name": "on-runs", "kind": "event", "event_type": "x.done", **NOTE}
    )
    assert made.status_code == 201, made.text
    refused = await api.get(f"/schedules/{made.json()['id']}/preview")
    assert refused.status_code == 409, refused.text
    assert "x.done event" in refused.json()["detail"]


async def test_a_draft_is_previewed_as_the_server_plans_it_and_nothing_is_stored(
    api: httpx.AsyncClient,
) -> None:
    """The form's preview: a definition not saved yet, its cron read in its time zone (DST
    included), an interval counted from its start, a bad cron or zone refused as on save."""
    draft = {"kind": "cron", "cron": "0 9 * * *", "timezone": "Europe/Paris", **NOTE}
    fires = await api.post("/schedules/preview", json=draft, params={"count": 4})
    assert fires.status_code == 200, fires.text
    instants = [datetime.fromisoformat(t) for t in fires.json()]
    assert len(instants) == 4 and instants == sorted(instants)
    assert all(t.astimezone(UTC).hour in (7, 8) for t in instants)  # 09:00 Paris: UTC+1 or +2
    start = datetime(2030, 1, 1, tzinfo=UTC)
    every = {"kind": "interval", "every_seconds": 90, "start_at": start.isoformat(), **NOTE}
    fires = await api.post("/schedules/preview", json=every, params={"count": 2})
    assert [datetime.fromisoformat(t) for t in fires.json()] == [  # from its start, on
        start,
        start + timedelta(seconds=90),
    ]
    bad = await api.post("/schedules/preview", json={**draft, "cron": "61 * * * *"})
    assert bad.status_code == 422 and "invalid cron" in bad.text
    zone = await api.post("/schedules/preview", json={**draft, "timezone": "Mars/Olympus"})
    assert zone.status_code == 422 and "time zone" in zone.json()["detail"]
    event = {"kind": "event", "event_type": "x.done", **NOTE}
    assert (await api.post("/schedules/preview", json=event)).status_code == 409
    assert (await api.get("/schedules")).json() == []


@pytest.mark.parametrize(
    ("body", "status", "words"),
    [
        ({"kind": "cron", "cron": "bad", **NOTE}, 422, "invalid cron"),
        ({"kind": "interval", "every_seconds": 5, "timezone": "Nowhere/City", **NOTE}, 422, "zone"),
        ({"kind": "once", "at": "2030-01-01T00:00:00", **NOTE}, 422, "time zone"),
        ({"kind": "interval", "every_seconds": 5, "action": "call_api", "config": {}}, 422, "url"),
        ({"kind": "event", **NOTE}, 422, "needs `event_type`"),
        ({"kind": "interval", "every_seconds": 5, "match": {"a": 1}, **NOTE}, 422, "kind event"),
        ({"kind": "interval", "every_seconds": 5, "action": "run_task"}, 422, "config.agent"),
    ],
)
async def test_refusals_say_what_is_wrong(
    api: httpx.AsyncClient, body: dict[str, Any], status: int, words: str
) -> None:
    answer = await api.post("/schedules", json={"name": "x", **body})
    assert answer.status_code == status, answer.text
    assert words in answer.text


async def test_a_name_is_taken_once_per_owner(api: httpx.AsyncClient) -> None:
    body = {"name": "dup", "kind": "interval", "every_seconds": 60, **NOTE}
    assert (await api.post("/schedules", json=body)).status_code == 201
    again = await api.post("/schedules", json=body)
    assert again.status_code == 409 and "dup" in again.json()["detail"]


async def test_execute_pipeline_over_http(api: httpx.AsyncClient) -> None:
    pipeline = await api.post(
        "/pipelines",
        json={"name": "nightly", "nodes": [{"id": "start", "type": "trigger"}], "edges": []},
    )
    assert pipeline.status_code == 201, pipeline.text
    made = await api.post(
        "/schedules",
        json={
            "name": "nightly",
            "kind": "once",
            "at": (datetime.now(UTC) + timedelta(seconds=1)).isoformat(),
            "action": "execute_pipeline",
            "config": {"pipeline": "nightly"},
        },
    )
    assert made.status_code == 201, made.text
    [run] = await ended_runs(api, made.json()["id"], 1)
    assert run["status"] == "succeeded" and run["pipeline_run_id"] is not None
    pipeline_run = (await api.get(f"/pipelines/runs/{run['pipeline_run_id']}")).json()
    assert pipeline_run["trigger"] == "schedule" and pipeline_run["status"] == "succeeded"
    assert (await api.get(f"/schedules/{made.json()['id']}")).json()["status"] == "expired"


# --- multi-user mode --------------------------------------------------------------------------


@pytest.fixture
async def multi(migrated_database_url: str) -> AsyncIterator[tuple[Any, httpx.AsyncClient]]:
    app = create_app(
        settings=load_settings(
            database_url=migrated_database_url, auth="required", secret_key="k" * 64
        )
    )
    async with client_for(app) as client:
        yield app, client
    await app.state.gathering.close()


async def _login(app: Any, client: httpx.AsyncClient, role: str = "member") -> dict[str, str]:
    email = f"t-{secrets.token_hex(4)}@example.com"
    await UserStore(await app.state.gathering.database()).create(email, PASSWORD, role=role)
    tokens = (await client.post("/auth/login", json={"email": email, "password": PASSWORD})).json()
    return {"Authorization": f"Bearer {tokens['access_token']}"}


async def test_each_owner_sees_only_their_own_schedules(
    multi: tuple[Any, httpx.AsyncClient],
) -> None:
    app, client = multi
    alice, bob = await _login(app, client), await _login(app, client)
    admin, viewer = await _login(app, client, "admin"), await _login(app, client, "viewer")
    body = {"name": "mine", "kind": "interval", "every_seconds": 3600, **NOTE}
    mine = (await client.post("/schedules", json=body, headers=alice)).json()
    assert (await client.post("/schedules", json=body, headers=bob)).status_code == 201
    where = f"/schedules/{mine['id']}"
    for method, path, payload in [
        ("GET", where, None),
        ("PUT", where, body),
        ("DELETE", where, None),
        ("POST", f"{where}/pause", None),
        ("POST", f"{where}/trigger", None),
        ("GET", f"{where}/runs", None),
        ("GET", f"{where}/preview", None),
    ]:
        answer = await client.request(method, path, json=payload, headers=bob)
        assert answer.status_code == 404, (method, path, answer.text)
        assert answer.json()["detail"] == f"schedule {mine['id']} not found"
    assert len((await client.get("/schedules", headers=alice)).json()) == 1
    assert len((await client.get("/schedules", headers=admin)).json()) == 2
    assert (await client.get("/schedules", headers=viewer)).status_code == 200
    assert (await client.post("/schedules", json=body, headers=viewer)).status_code == 403
    assert (await client.get("/schedules")).status_code == 401


async def test_api_keys_need_the_schedules_scopes(multi: tuple[Any, httpx.AsyncClient]) -> None:
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

    reader, writer = await key("schedules:read"), await key("schedules:write")
    body = {"name": "keyed", "kind": "interval", "every_seconds": 3600, **NOTE}
    assert (await client.post("/schedules", json=body, headers=reader)).status_code == 403
    made = await client.post("/schedules", json=body, headers=writer)
    assert made.status_code == 201
    assert (await client.get(f"/schedules/{made.json()['id']}", headers=reader)).status_code == 200
    assert (await client.get("/schedules", headers=writer)).status_code == 403


async def test_only_its_owner_follows_a_schedule_on_the_websocket(
    multi: tuple[Any, httpx.AsyncClient],
) -> None:
    from asgi_ws import ASGIWebSocket  # tests/_support

    app, client = multi
    alice, bob = await _login(app, client), await _login(app, client)
    body = {"name": "followed", "kind": "interval", "every_seconds": 3600, **NOTE}
    made = (await client.post("/schedules", json=body, headers=alice)).json()
    subject = f"schedule:{made['id']}"
    bob_token = bob["Authorization"].removeprefix("Bearer ")
    async with ASGIWebSocket(app, "/ws", query=f"access_token={bob_token}") as ws:
        await ws.send_json({"type": "subscribe", "subjects": [subject]})
        refused = await ws.receive_json()
        assert refused["type"] == "error" and refused["code"] == "not_found"
    alice_token = alice["Authorization"].removeprefix("Bearer ")
    async with ASGIWebSocket(app, "/ws", query=f"access_token={alice_token}") as ws:
        await ws.send_json({"type": "subscribe", "subjects": [subject], "since": 0})
        assert (await ws.receive_json())["type"] == "subscribed"
        await client.post(f"/schedules/{made['id']}/trigger", headers=alice)
        while True:
            message = await ws.receive_json(timeout=10)
            if message["type"] == "event":
                assert message["event"]["type"] == "schedule_run.queued"
                break
