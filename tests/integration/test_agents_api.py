"""`/agents` over HTTP: CRUD, chat (JSON and SSE), history, validation and not-found."""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest

from gathering.api.app import create_app
from gathering.config import load_settings


@pytest.fixture
async def api(migrated_database_url, llm_stub_env):
    app = create_app(settings=load_settings(database_url=migrated_database_url))
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        yield client
    await app.state.gathering.close()


async def _create(api, **body) -> dict:
    response = await api.post("/agents", json={"name": "Ada", "provider": "openai", **body})
    assert response.status_code == 201, response.text
    return response.json()


async def test_crud_round_trip(api):
    created = await _create(api, model="gpt-4o", persona={"role": "reviewer", "traits": ["terse"]})
    assert created["persona"]["role"] == "reviewer"
    agent_id = created["id"]
    assert (await api.get(f"/agents/{agent_id}")).json()["model"] == "gpt-4o"
    patched = await api.patch(f"/agents/{agent_id}", json={"provider": "ollama"})
    assert patched.status_code == 200
    assert (patched.json()["provider"], patched.json()["model"]) == ("ollama", "llama3.2")
    names = [a["name"] for a in (await api.get("/agents")).json()]
    assert names == ["Ada"]
    assert (await api.delete(f"/agents/{agent_id}")).status_code == 204
    assert (await api.get(f"/agents/{agent_id}")).status_code == 404


async def test_default_provider_is_used_when_none_is_given(api, monkeypatch):
    from gathering.config import get_settings

    for name in ("ANTHROPIC_API_KEY", "OPENAI_API_KEY"):
        monkeypatch.delenv(name, raising=False)
    get_settings.cache_clear()
    response = await api.post("/agents", json={"name": "Offline"})
    assert response.status_code == 201
    assert response.json()["provider"] == "local"


async def test_duplicate_name_is_a_conflict(api):
    await _create(api)
    again = await api.post("/agents", json={"name": "ada", "provider": "openai"})
    assert again.status_code == 409
    assert again.json()["code"] == "conflict"


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"name": ""},
        {"name": "   "},
        {"name": "x", "provider": "skynet"},
        {"name": "x", "max_iterations": 0},
        {"name": "x", "persona": {"mood": "sunny"}},
        {"name": "x" * 101},
        {"name": "x", "surprise": True},
    ],
)
async def test_invalid_bodies_are_422_with_field_errors(api, body):
    response = await api.post("/agents", json=body)
    assert response.status_code == 422
    assert response.json()["errors"]


@pytest.mark.parametrize("path", ["/agents/999999", "/agents/999999/history"])
async def test_unknown_ids_are_404(api, path):
    response = await api.get(path)
    assert response.status_code == 404
    assert response.json()["detail"] == "agent 999999 not found"


async def test_out_of_range_ids_are_422(api):
    assert (await api.get("/agents/0")).status_code == 422
    assert (await api.get(f"/agents/{2**63}")).status_code == 422


async def test_chat_returns_reply_with_usage_and_history(api, llm_stub):
    agent = await _create(api)
    response = await api.post(f"/agents/{agent['id']}/chat", json={"message": "hello there"})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["reply"] == "Echo: hello there"
    assert body["usage"]["input_tokens"] > 0 and body["usage"]["output_tokens"] > 0
    assert body["outcome"] == "completed"
    history = (await api.get(f"/agents/{agent['id']}/history")).json()
    assert [(m["role"], m["content"]) for m in history] == [
        ("user", "hello there"),
        ("assistant", "Echo: hello there"),
    ]
    fresh = await api.post(
        f"/agents/{agent['id']}/chat", json={"message": "again", "new_session": True}
    )
    assert fresh.json()["session_id"] != body["session_id"]
    assert len((await api.get(f"/agents/{agent['id']}/history")).json()) == 2


async def test_chat_stream_is_server_sent_events(api):
    agent = await _create(api)
    async with api.stream(
        "POST", f"/agents/{agent['id']}/chat/stream", json={"message": "stream me"}
    ) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        raw = "".join([chunk async for chunk in response.aiter_text()])
    events = []
    for block in raw.strip().split("\n\n"):
        lines = dict(line.split(": ", 1) for line in block.splitlines())
        events.append((lines["event"], json.loads(lines["data"])))
    deltas = "".join(data["text"] for kind, data in events if kind == "delta")
    assert deltas == "Echo: stream me"
    assert events[-1][0] == "done" and events[-1][1]["reply"] == "Echo: stream me"


async def test_chat_errors_are_reported(api, monkeypatch):
    from gathering.config import get_settings

    agent = await _create(api, provider="anthropic")
    monkeypatch.delenv("ANTHROPIC_API_KEY")
    get_settings.cache_clear()
    response = await api.post(f"/agents/{agent['id']}/chat", json={"message": "hi"})
    assert response.status_code == 503
    assert "ANTHROPIC_API_KEY" in response.json()["detail"] + response.json().get("hint", "")
    async with api.stream(
        "POST", f"/agents/{agent['id']}/chat/stream", json={"message": "hi"}
    ) as streamed:
        raw = "".join([chunk async for chunk in streamed.aiter_text()])
    assert raw.startswith("event: error")


async def test_empty_message_is_422(api):
    agent = await _create(api)
    response = await api.post(f"/agents/{agent['id']}/chat", json={"message": " "})
    assert response.status_code == 422


class _SlowClient:
    """A patched `llm_client` whose replies take a while, to overlap requests."""

    async def generate(self, messages, tools=None, **options):
        from gathering.llm import Completion

        await asyncio.sleep(0.2)
        return Completion(text="reply to " + messages[-1].content)


async def test_concurrent_chats_to_one_agent_queue_in_order(api):
    from unittest.mock import patch

    agent = await _create(api)
    await api.post(f"/agents/{agent['id']}/chat", json={"message": "warm up"})
    with patch("gathering.agents.llm_client", _SlowClient()):
        first = asyncio.create_task(
            api.post(f"/agents/{agent['id']}/chat", json={"message": "one"})
        )
        await asyncio.sleep(0.05)
        second = asyncio.create_task(
            api.post(f"/agents/{agent['id']}/chat", json={"message": "two"})
        )
        await asyncio.gather(first, second)
    history = (await api.get(f"/agents/{agent['id']}/history")).json()
    assert [(m["role"], m["content"]) for m in history][-4:] == [
        ("user", "one"),
        ("assistant", "reply to one"),
        ("user", "two"),
        ("assistant", "reply to two"),
    ]


async def test_patch_keeps_the_settings_it_does_not_name(api):
    agent = await _create(api, max_iterations=4, project="Apollo")
    patched = (await api.patch(f"/agents/{agent['id']}", json={"name": "Renamed"})).json()
    assert patched["name"] == "Renamed"
    assert patched["config"]["max_iterations"] == 4
    assert patched["config"]["project"] == "Apollo"
    cleared = (await api.patch(f"/agents/{agent['id']}", json={"project": None})).json()
    assert cleared["config"]["project"] is None


async def test_a_chat_in_flight_neither_reverts_a_patch_nor_revives_a_deleted_agent(api):
    from unittest.mock import patch

    agent = await _create(api)
    with patch("gathering.agents.llm_client", _SlowClient()):
        chat = asyncio.create_task(api.post(f"/agents/{agent['id']}/chat", json={"message": "hi"}))
        await asyncio.sleep(0.05)
        patched = await api.patch(f"/agents/{agent['id']}", json={"provider": "ollama"})
        assert (await chat).status_code == 200
    assert patched.json()["provider"] == "ollama"
    assert (await api.get(f"/agents/{agent['id']}")).json()["provider"] == "ollama"
    with patch("gathering.agents.llm_client", _SlowClient()):
        chat = asyncio.create_task(api.post(f"/agents/{agent['id']}/chat", json={"message": "bye"}))
        await asyncio.sleep(0.05)
        assert (await api.delete(f"/agents/{agent['id']}")).status_code == 204
        await chat
    assert (await api.get("/agents")).json() == []


async def test_api_keys_are_limited_to_their_scopes(migrated_database_url, llm_stub_env):
    import secrets as _secrets

    from gathering.auth.users import UserStore

    app = create_app(
        settings=load_settings(
            database_url=migrated_database_url, auth="required", secret_key="s" * 64
        )
    )
    try:
        email = f"k-{_secrets.token_hex(4)}@example.com"
        await UserStore(await app.state.gathering.database()).create(email, "a long passphrase!")
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            login = await client.post(
                "/auth/login", json={"email": email, "password": "a long passphrase!"}
            )
            bearer = {"Authorization": f"Bearer {login.json()['access_token']}"}

            async def key(*scopes: str) -> dict[str, str]:
                made = await client.post(
                    "/auth/api-keys", headers=bearer, json={"name": "k", "scopes": list(scopes)}
                )
                return {"X-API-Key": made.json()["key"]}

            memories_only, reader = await key("memories:read"), await key("agents:read")
            body = {"name": "Scoped", "provider": "openai"}
            assert (
                await client.post("/agents", json=body, headers=memories_only)
            ).status_code == 403
            assert (await client.get("/agents", headers=memories_only)).status_code == 403
            created = await client.post("/agents", json=body, headers=bearer)
            agent_id = created.json()["id"]
            assert (await client.get(f"/agents/{agent_id}", headers=reader)).status_code == 200
            for method, path in [
                ("POST", f"/agents/{agent_id}/chat"),
                ("DELETE", f"/agents/{agent_id}"),
            ]:
                refused = await client.request(
                    method,
                    path,
                    headers=reader,
                    json={"message": "hi"} if method == "POST" else None,
                )
                assert refused.status_code == 403
    finally:
        await app.state.security.close()
        await app.state.gathering.close()


async def test_a_streamed_turn_finishes_even_when_the_client_leaves(
    migrated_database_url, llm_stub_env
):
    from unittest.mock import patch

    app = create_app(settings=load_settings(database_url=migrated_database_url))
    try:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            agent = (
                await client.post("/agents", json={"name": "Leaver", "provider": "openai"})
            ).json()
        body = json.dumps({"message": "are you there?"}).encode()
        messages = [
            {"type": "http.request", "body": body, "more_body": False},
            {"type": "http.disconnect"},
        ]

        async def receive():
            return messages.pop(0) if messages else {"type": "http.disconnect"}

        sent: list[dict] = []

        async def send(message):
            sent.append(message)

        scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": "POST",
            "scheme": "http",
            "path": f"/agents/{agent['id']}/chat/stream",
            "raw_path": b"",
            "query_string": b"",
            "root_path": "",
            "headers": [(b"host", b"test"), (b"content-type", b"application/json")],
            "client": ("127.0.0.1", 5000),
            "server": ("test", 80),
        }
        with patch("gathering.agents.llm_client", _SlowClient()):
            await app(scope, receive, send)  # the client is gone before the reply exists
            await asyncio.wait_for(asyncio.gather(*app.state.gathering.background), 10)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            history = (await client.get(f"/agents/{agent['id']}/history")).json()
        assert [m["content"] for m in history] == ["are you there?", "reply to are you there?"]
    finally:
        await app.state.gathering.close()


async def test_what_is_stored_is_always_shown_even_when_it_grew(api, migrated_database_url):
    """A category stored lower-case may be longer than sent ("İ".lower() is two characters),
    and agents stored before today's rules (a long persona trait) must still be listed."""
    created = await _create(api, name="grows", knowledge={"categories": ["\u0130" * 100]})
    assert len(created["config"]["knowledge"]["categories"][0]) == 200
    import psycopg

    async with await psycopg.AsyncConnection.connect(migrated_database_url) as conn:
        await conn.execute(
            "UPDATE agent.agents SET persona = jsonb_set(persona, '{traits}', %s::jsonb)"
            " WHERE id = %s",
            (json.dumps(["x" * 5000]), created["id"]),
        )
    listed = await api.get("/agents")
    assert listed.status_code == 200, listed.text
    assert (await api.get(f"/agents/{created['id']}")).status_code == 200


@pytest.mark.parametrize("env", ["development", "production"])
async def test_the_schema_lists_the_providers_registered_when_it_is_built(
    migrated_database_url, monkeypatch, env
):
    """A provider registered after import is in the schema's enum; the test providers only in
    development, where the API accepts them."""
    from gathering.llm import registry

    monkeypatch.setitem(registry._providers, "house-model", registry._providers["openai"])
    app = create_app(
        settings=load_settings(database_url=migrated_database_url, env=env, secret_key="k" * 64)
    )
    schemas = app.openapi()["components"]["schemas"]
    [choices] = [
        choice["enum"]
        for choice in schemas["AgentCreate"]["properties"]["provider"]["anyOf"]
        if "enum" in choice
    ]
    expected = {"anthropic", "house-model", "local", "ollama", "openai"}
    assert set(choices) == (expected | {"scripted"} if env == "development" else expected)
    await app.state.gathering.close()
