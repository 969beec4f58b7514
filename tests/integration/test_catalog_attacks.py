"""Attacks on the catalog (providers, models, personas, settings), from a hostile review: a
provider pointed at cloud metadata or at an internal service read through the test call; a
stored key sent to a host an admin moved the provider to, or the environment's key sent to an
admin's address; keys quoted by a provider in logs, responses and tables; an app reading keys
under another app's secret; model overrides that miss the provider an agent calls (context
budget and prices); API-key scopes on the catalog and on `persona_name`; model-name settings
the agents API refuses; odd addresses, paths and bodies (never a 500); keys the CLI stores.
Each test says what must hold; the ones that held at review time stay as regression tests."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from catalog_env import (  # noqa: F401 - the fixtures "no_provider_env", "stub", "api", "multi"
    ENV_KEY,
    OPENAI_KEY,
    catalog_api_fixture,
    catalog_multi_fixture,
    catalog_stub_fixture,
    no_provider_env_fixture,
)
from fastapi import FastAPI
from task_api import api_key, client_for, login

from gathering.api.app import create_app
from gathering.api.fields import LINE_PATTERN
from gathering.catalog.settings import MODEL_NAME_PATTERN
from gathering.config import load_settings
from gathering.db import Database
from gathering.testing import LLMStubServer

Json = dict[str, Any]


def _sent_key(stub: LLMStubServer) -> str | None:
    headers = stub.last.headers
    bearer = headers.get("authorization", "").removeprefix("Bearer ")
    return headers.get("x-api-key") or bearer or None


async def _add(client: httpx.AsyncClient, headers: Json | None = None, **body: Any) -> Json:
    made = await client.post("/providers", json=body, headers=headers)
    assert made.status_code == 201, made.text
    result: Json = made.json()
    return result


# --- SSRF ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "base_url",
    [
        "http://169.254.169.254/latest",  # cloud metadata (AWS, GCP, Azure)
        "http://2852039166/v1",  # the same address in decimal
        "http://metadata.google.internal/computeMetadata/v1",
    ],
)
async def test_a_provider_cannot_point_at_cloud_metadata(
    api: httpx.AsyncClient, base_url: str
) -> None:
    made = await api.post(
        "/providers", json={"name": "meta", "kind": "openai-compatible", "base_url": base_url}
    )
    assert made.status_code == 422, made.text


async def test_the_test_call_does_not_echo_an_internal_services_body(
    api: httpx.AsyncClient, stub: LLMStubServer
) -> None:
    """`POST /providers/{id}/test` against an internal HTTP service must not turn into a read
    primitive: the body the service answers must not come back in the error."""
    made = await _add(api, name="internal", kind="openai-compatible", base_url=f"{stub.url}/v1")
    secret_body = {"error": {"message": "AccessKeyId=AKIAINTERNAL SecretAccessKey=hunter2"}}
    stub.add_json(secret_body, status=404)
    tested = (await api.post(f"/providers/{made['id']}/test")).json()
    assert tested["ok"] is False
    assert "hunter2" not in json.dumps(tested), tested


# --- the stored key goes where an admin points it ----------------------------------------------


async def test_moving_a_provider_does_not_send_its_stored_key_to_the_new_address(
    api: httpx.AsyncClient, stub: LLMStubServer, migrated_database_url: str
) -> None:
    """Keys are "never returned": an admin who did not set a key must not be able to read it by
    pointing the provider elsewhere (here `localhost` stands for an attacker's host). A move
    that keeps the stored key is a 409 (audited as denied); with a new key, or `key: null`,
    it is done."""
    made = await _add(
        api, name="openai", kind="openai", base_url="http://127.0.0.1:9/v1", key=OPENAI_KEY
    )
    port = stub.url.rsplit(":", 1)[1]
    elsewhere = f"http://localhost:{port}/v1"
    moved = await api.patch(f"/providers/{made['id']}", json={"base_url": elsewhere})
    assert moved.status_code == 409, moved.text
    assert "give the key" in moved.json()["hint"], moved.text
    await api.post(f"/providers/{made['id']}/test", json={"model": "gpt-4o"})
    assert not stub.requests, "stored key sent to the new host"
    async with Database(url=migrated_database_url, min_size=0, max_size=1) as db:
        denied = await db.fetch_all(
            "SELECT details FROM auth.audit_log WHERE event = 'provider.changed' "
            "AND outcome = 'denied'"
        )
    assert [row["details"]["to"] for row in denied] == [elsewhere]
    assert OPENAI_KEY not in json.dumps([row["details"] for row in denied], default=str)
    # Another path on the same host keeps the key; a new key or none goes anywhere.
    same_host = await api.patch(
        f"/providers/{made['id']}", json={"base_url": "http://127.0.0.1:9/other/v1"}
    )
    assert (same_host.status_code, same_host.json()["key"]) == (200, "sk-...WXYZ")
    new_key = "sk-for-the-new-host-000000000000WXYZ"
    rekeyed = await api.patch(
        f"/providers/{made['id']}", json={"base_url": elsewhere, "key": new_key}
    )
    assert rekeyed.status_code == 200, rekeyed.text
    await api.post(f"/providers/{made['id']}/test", json={"model": "gpt-4o"})
    assert _sent_key(stub) == new_key


async def test_the_environments_key_is_not_sent_to_an_address_an_admin_chose(
    api: httpx.AsyncClient, stub: LLMStubServer, no_provider_env: Callable[..., None]
) -> None:
    """The operator's OPENAI_API_KEY is not an API admin's to read: a catalog provider with an
    attacker's base_url must not receive it."""
    no_provider_env(OPENAI_API_KEY=ENV_KEY)
    made = await _add(api, name="openai", kind="openai", base_url=f"{stub.url}/v1")
    await api.post(f"/providers/{made['id']}/test", json={"model": "gpt-4o"})
    assert _sent_key(stub) != ENV_KEY, "the environment's key went to the admin's address"


# --- the server secret changes -------------------------------------------------------------


async def test_the_key_is_encrypted_under_the_apps_own_secret(
    migrated_database_url: str, stub: LLMStubServer, no_provider_env: Callable[..., None]
) -> None:
    """An app built with `secret_key="b"*64` must not read a key another app stored under
    `secret_key="a"*64`: the cipher must come from the app's settings, not the process's."""
    first = create_app(
        settings=load_settings(database_url=migrated_database_url, secret_key="a" * 64)
    )
    async with client_for(first) as client:
        made = await _add(
            client, name="openai", kind="openai", base_url=f"{stub.url}/v1", key=OPENAI_KEY
        )
        agent = await client.post(
            "/agents", json={"name": "A", "provider": "openai", "model": "gpt-4o"}
        )
        agent_id = agent.json()["id"]
    await first.state.gathering.close()
    second = create_app(
        settings=load_settings(database_url=migrated_database_url, secret_key="b" * 64)
    )
    try:
        async with client_for(second) as client:
            tested = await client.post(f"/providers/{made['id']}/test")
            chat = await client.post(f"/agents/{agent_id}/chat", json={"message": "hi"})
    finally:
        await second.state.gathering.close()
    for answer in (tested, chat):
        assert answer.status_code < 500 or answer.status_code == 503, answer.text
        assert "provider_key_unreadable" in answer.text, answer.text
    assert not stub.requests


# --- concurrency ---------------------------------------------------------------------------


async def test_two_admins_renaming_two_providers_to_one_name_get_a_409(
    api: httpx.AsyncClient,
) -> None:
    ids = [(await _add(api, name=f"p{i}", kind="local"))["id"] for i in range(6)]
    answers = await asyncio.gather(
        *(api.patch(f"/providers/{i}", json={"name": "same"}) for i in ids)
    )
    codes = sorted(a.status_code for a in answers)
    assert codes == [200] + [409] * 5, [(a.status_code, a.text[:200]) for a in answers]


async def test_two_admins_creating_one_provider_name_get_a_409(api: httpx.AsyncClient) -> None:
    answers = await asyncio.gather(
        *(api.post("/providers", json={"name": "dup", "kind": "local"}) for _ in range(6))
    )
    codes = sorted(a.status_code for a in answers)
    assert codes == [201] + [409] * 5, [(a.status_code, a.text[:200]) for a in answers]


# --- fuzz -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "path",
    [
        "/models/openai/..%2F..%2Fproviders",
        "/models/openai/a%2Fb",
        "/models/openai/a%00b",
        "/models/openai/" + "a" * 5000,
        "/models/openai/gpt-4o%0a",
        "/models/OPENAI/gpt-4o",
        "/models/openai/a//b",
        "/models/openai/a/",
    ],
)
async def test_odd_model_paths_are_never_a_500(api: httpx.AsyncClient, path: str) -> None:
    put = await api.put(path, json={"context_window": 1000})
    delete = await api.delete(path)
    assert put.status_code < 500 and delete.status_code < 500, (put.text, delete.text)


@pytest.mark.parametrize(
    "path",
    [
        "/providers/0",
        "/providers/-1",
        "/providers/99999999999999999999999",
        "/providers/1.5",
        "/providers/%00",
        "/providers/abc",
        "/personas/%00",
        "/personas/" + "a" * 5000,
        "/settings/%00",
        "/settings/" + "a" * 5000,
    ],
)
async def test_odd_catalog_paths_are_never_a_500(api: httpx.AsyncClient, path: str) -> None:
    for method in ("GET", "PATCH", "PUT", "DELETE"):
        answer = await api.request(method, path, content=b"{}")
        assert answer.status_code < 500, (method, answer.text)


@pytest.mark.parametrize(
    "body",
    [
        b"{",
        b"[]",
        b"null",
        b'{"value": "\\u0000"}',
        b'{"value": "\\ud800"}',
        b'{"value": 1e400}',
        b'{"value": 99999999999999999999999999999999}',
        b'{"value": -1}',
        b'{"value": true}',
        b'{"value": {"sha256": "00"}}',
    ],
)
async def test_bad_setting_bodies_are_4xx(api: httpx.AsyncClient, body: bytes) -> None:
    for name in ("pipeline_max_running_runs", "ollama_model", "metrics_token", "default_provider"):
        answer = await api.put(
            f"/settings/{name}", content=body, headers={"content-type": "application/json"}
        )
        assert 400 <= answer.status_code < 500, (name, answer.status_code, answer.text)


async def test_the_test_call_does_not_echo_an_internal_services_text_body(
    api: httpx.AsyncClient, stub: LLMStubServer
) -> None:
    made = await _add(api, name="internal", kind="openai-compatible", base_url=f"{stub.url}/v1")
    stub.add_json(b"ami-id\nsecret-role-credentials: hunter2\n", status=403)
    tested = (await api.post(f"/providers/{made['id']}/test")).json()
    assert tested["ok"] is False
    assert "hunter2" not in json.dumps(tested), tested


async def test_a_secret_change_is_a_clear_error_not_a_500(
    migrated_database_url: str,
    stub: LLMStubServer,
    no_provider_env: Callable[..., None],
) -> None:
    no_provider_env(SECRET_KEY="a" * 64)
    first = create_app(settings=load_settings(database_url=migrated_database_url))
    async with client_for(first) as client:
        made = await _add(
            client, name="openai", kind="openai", base_url=f"{stub.url}/v1", key=OPENAI_KEY
        )
        agent = await client.post(
            "/agents", json={"name": "A", "provider": "openai", "model": "gpt-4o"}
        )
        agent_id = agent.json()["id"]
    await first.state.gathering.close()
    no_provider_env(SECRET_KEY="b" * 64)
    second = create_app(settings=load_settings(database_url=migrated_database_url))
    try:
        async with client_for(second) as client:
            tested = await client.post(f"/providers/{made['id']}/test")
            chat = await client.post(f"/agents/{agent_id}/chat", json={"message": "hi"})
    finally:
        await second.state.gathering.close()
    for answer in (tested, chat):
        assert answer.status_code < 500 or answer.status_code == 503, answer.text
        assert "provider_key_unreadable" in answer.text, answer.text
    assert not stub.requests


# --- model overrides that never apply --------------------------------------------------------


async def test_an_override_for_the_provider_an_agent_uses_reaches_its_context_budget(
    api: httpx.AsyncClient, stub: LLMStubServer
) -> None:
    """docs/catalog.md: an agent naming `anthropic` uses the first provider of that kind
    ("work"), and "an override stored for a provider's name wins over one for its kind". The
    override an admin stores for "work" must then apply to that agent's calls."""
    await _add(api, name="work", kind="anthropic", base_url=stub.url, key="sk-ant-" + "w" * 30)
    made = await api.post(
        "/agents", json={"name": "W", "provider": "anthropic", "model": "claude-haiku-4-5"}
    )
    first = await api.post(f"/agents/{made.json()['id']}/chat", json={"message": "hello"})
    assert first.status_code == 200 and stub.requests, "the agent did not call 'work'"
    put = await api.put("/models/work/claude-haiku-4-5", json={"context_window": 600})
    assert put.status_code == 200, put.text
    answer = await api.post(f"/agents/{made.json()['id']}/chat", json={"message": "hello"})
    assert answer.status_code == 422 and answer.json()["code"] == "context_too_long", (
        answer.status_code,
        answer.text[:300],
    )


async def test_an_override_for_the_openai_compatible_kind_reaches_its_agents(
    api: httpx.AsyncClient, stub: LLMStubServer
) -> None:
    """The documented way to use a vLLM server: a provider named `openai` of kind
    `openai-compatible`. An override stored for that kind must apply to its agents."""
    await _add(api, name="openai", kind="openai-compatible", base_url=f"{stub.url}/v1")
    put = await api.put("/models/openai-compatible/qwen3-8b", json={"context_window": 600})
    assert put.status_code == 200, put.text
    made = await api.post("/agents", json={"name": "V", "provider": "openai", "model": "qwen3-8b"})
    answer = await api.post(f"/agents/{made.json()['id']}/chat", json={"message": "hello"})
    assert answer.status_code == 422 and answer.json()["code"] == "context_too_long", (
        answer.status_code,
        answer.text[:300],
    )


# --- API key scopes ------------------------------------------------------------------------------


async def test_an_api_key_scoped_to_tasks_does_not_read_the_provider_catalog(
    multi: tuple[FastAPI, httpx.AsyncClient],
) -> None:
    app, client = multi
    admin = await login(app, client, "admin")
    await _add(
        client,
        admin,
        name="vllm",
        kind="openai-compatible",
        base_url="http://10.0.0.5:8000/v1",
        key=OPENAI_KEY,
    )
    keyed = await api_key(client, admin, "tasks:read")
    reader = await api_key(client, admin, "providers:read", "models:read")
    for path in ("/providers", "/providers/1", "/models"):
        answer = await client.get(path, headers=keyed)
        assert answer.status_code == 403, (path, answer.status_code, answer.text[:200])
        allowed = await client.get(path, headers=reader)
        assert allowed.status_code == 200, (path, allowed.status_code, allowed.text[:200])


async def test_agents_write_alone_does_not_read_a_persona(
    multi: tuple[FastAPI, httpx.AsyncClient],
) -> None:
    """`personas:read` guards the library; a key without it must not copy another user's
    persona (and read it back) through `POST /agents` with `persona_name` (403); with it, the
    copy is made."""
    app, client = multi
    alice = await login(app, client)
    made = await client.post(
        "/personas",
        json={"name": "alice-secret", "persona": {"base_prompt": "ALICE-PRIVATE-PROMPT"}},
        headers=alice,
    )
    assert made.status_code == 201, made.text
    bob = await login(app, client)
    keyed = await api_key(client, bob, "agents:read", "agents:write")
    assert (await client.get("/personas/alice-secret", headers=keyed)).status_code == 403
    agent = await client.post(
        "/agents",
        json={"name": "copy", "provider": "ollama", "persona_name": "alice-secret"},
        headers=keyed,
    )
    assert agent.status_code == 403 and "ALICE-PRIVATE-PROMPT" not in agent.text, agent.text
    reader = await api_key(client, bob, "agents:write", "personas:read")
    copied = await client.post(
        "/agents",
        json={"name": "copy", "provider": "ollama", "persona_name": "alice-secret"},
        headers=reader,
    )
    assert copied.status_code == 201, copied.text


async def test_a_price_override_for_the_provider_an_agent_uses_prices_its_calls(
    api: httpx.AsyncClient, stub: LLMStubServer
) -> None:
    """Same as above for prices: budgets and the ledger must charge the admin's price for
    the provider the call went to."""
    await _add(api, name="work", kind="anthropic", base_url=stub.url, key="sk-ant-" + "w" * 30)
    put = await api.put(
        "/models/work/claude-haiku-4-5",
        json={"input_per_million": 1000000, "output_per_million": 1000000},
    )
    assert put.status_code == 200, put.text
    made = await api.post(
        "/agents", json={"name": "W", "provider": "anthropic", "model": "claude-haiku-4-5"}
    )
    answer = await api.post(f"/agents/{made.json()['id']}/chat", json={"message": "hello"})
    assert answer.status_code == 200, answer.text
    body = answer.json()
    tokens = body["usage"]["input_tokens"] + body["usage"]["output_tokens"]
    assert body.get("cost_usd", body.get("cost")) == pytest.approx(tokens), body


# --- settings ------------------------------------------------------------------------------------


@pytest.mark.parametrize("value", ["llama3.2\nINJECTED", "\x1b[2Jllama", "   "])
async def test_a_model_setting_takes_only_what_the_agents_api_takes(
    api: httpx.AsyncClient, value: str
) -> None:
    """The agents API refuses such a model name (one printable line); the setting that
    becomes the model of new agents must refuse it too, not hand it to every new agent."""
    direct = await api.post("/agents", json={"name": "D", "provider": "ollama", "model": value})
    assert direct.status_code == 422, direct.text
    stored = await api.put("/settings/ollama_model", json={"value": value})
    if stored.status_code == 200:
        made = await api.post("/agents", json={"name": "N", "provider": "ollama"})
        assert made.status_code == 201, made.text
        assert made.json()["model"] != value, "a new agent got the model name the API refuses"
    assert stored.status_code == 422, stored.text


# --- key leakage through an agent's turn -------------------------------------------------------


async def test_a_provider_quoting_the_stored_key_does_not_leak_it_through_a_turn(
    api: httpx.AsyncClient,
    stub: LLMStubServer,
    migrated_database_url: str,
    caplog: pytest.LogCaptureFixture,
    capfd: pytest.CaptureFixture[str],
) -> None:
    import logging

    from gathering.db import Database

    caplog.set_level(logging.DEBUG)
    await _add(api, name="openai", kind="openai", base_url=f"{stub.url}/v1", key=OPENAI_KEY)
    made = await api.post("/agents", json={"name": "L", "provider": "openai", "model": "gpt-4o"})
    agent_id = made.json()["id"]
    for status in (401, 400, 429, 500):
        refusal = {"error": {"message": f"Bad key {OPENAI_KEY} for you", "type": "x"}}
        for _ in range(5):
            stub.add_json(refusal, status=status)
        answer = await api.post(f"/agents/{agent_id}/chat", json={"message": f"hi {status}"})
        assert OPENAI_KEY not in answer.text, (status, answer.text)
    printed = await asyncio.to_thread(capfd.readouterr)
    output = printed.out + printed.err
    leaks = [line[:400] for line in output.splitlines() if OPENAI_KEY in line]
    leaks += [
        f"caplog: {r.getMessage()[:300]}" for r in caplog.records if OPENAI_KEY in r.getMessage()
    ]
    async with Database(url=migrated_database_url, min_size=0, max_size=1) as db:
        tables = await db.fetch_all(
            "SELECT table_schema, table_name FROM information_schema.columns "
            "WHERE data_type IN ('text', 'jsonb', 'character varying') "
            "AND table_schema NOT IN ('pg_catalog', 'information_schema') "
            "GROUP BY table_schema, table_name"
        )
        leaked = []
        for row in tables:
            name = f'"{row["table_schema"]}"."{row["table_name"]}"'
            found = await db.fetch_val(
                f"SELECT count(*) FROM {name} t WHERE t::text LIKE $1", f"%{OPENAI_KEY}%"
            )
            if found:
                leaked.append(name)
    assert (leaks, leaked) == ([], []), "the stored key in clear in logs / database tables"


# --- odd addresses: the test call and a turn are never a 500 -----------------------------------


@pytest.mark.parametrize(
    "kind,base_url",
    [
        ("openai-compatible", "http://999.999.999.999/v1"),
        ("openai-compatible", "http://256.1.1.1:1/v1"),
        ("anthropic", "http://999.999.999.999"),
        ("ollama", "http://999.999.999.999"),
        ("openai-compatible", "http://127.0.0.1:1/v1?x=1#"),
        ("openai-compatible", "http://xn--/v1"),
    ],
)
async def test_an_odd_address_is_refused_or_reported_never_a_500(
    app_for: Callable[..., FastAPI],
    no_provider_env: Callable[..., None],
    kind: str,
    base_url: str,
) -> None:
    transport = httpx.ASGITransport(app=app_for(), raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as api:
        await _odd_address(api, kind, base_url)


async def _odd_address(api: httpx.AsyncClient, kind: str, base_url: str) -> None:
    name = "openai" if kind == "openai-compatible" else "odd"
    made = await api.post("/providers", json={"name": name, "kind": kind, "base_url": base_url})
    if made.status_code == 422:
        return
    assert made.status_code == 201, made.text
    tested = await api.post(f"/providers/{made.json()['id']}/test", json={"model": "m"})
    provider = {"openai-compatible": "openai"}.get(kind, kind)
    agent = await api.post("/agents", json={"name": "O", "provider": provider, "model": "m"})
    chat = await api.post(f"/agents/{agent.json()['id']}/chat", json={"message": "hi"})
    assert (tested.status_code, chat.status_code != 500) == (200, True), (
        f"stored {base_url!r} (201); test -> {tested.status_code} {tested.text[:120]}; "
        f"agent turn -> {chat.status_code} {chat.text[:120]}"
    )


def test_a_model_setting_has_the_agents_apis_line_pattern() -> None:
    """The catalog cannot import the API's fields (layers): its copy must stay the same."""
    assert MODEL_NAME_PATTERN == LINE_PATTERN


async def test_testing_the_local_provider_with_a_path_is_a_clear_answer(
    app_for: Callable[..., FastAPI], no_provider_env: Callable[..., None], tmp_path: Any
) -> None:
    """`model` of the test call is a file path for the local kind: a missing or junk file must
    be reported (ok: false), not a 500."""
    junk = tmp_path / "junk.gguf"
    await asyncio.to_thread(junk.write_bytes, b"GGUF" + b"\x00" * 64)
    transport = httpx.ASGITransport(app=app_for(), raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as api:
        made = await _add(api, name="here", kind="local")
        answers = []
        for model in ("/nonexistent/x.gguf", str(junk), "../../etc/x.gguf"):
            tested = await api.post(f"/providers/{made['id']}/test", json={"model": model})
            answers.append((model, tested.status_code, tested.text[:160]))
    assert all(status == 200 for _, status, _ in answers), answers


async def test_a_key_the_cli_stores_is_one_the_api_would_take(
    app_for: Callable[..., FastAPI],
    no_provider_env: Callable[..., None],
    migrated_database_url: str,
    stub: LLMStubServer,
) -> None:
    """`gathering providers add --key-stdin` stores through `add_provider`; a key the API
    refuses (non-ASCII) must be refused there too, not break every call with a 500."""
    from gathering.auth.accounts import CLI_ACTOR
    from gathering.catalog.providers import add_provider
    from gathering.db import Database

    key = "sk-clé-" + "é" * 30
    async with Database(url=migrated_database_url, min_size=0, max_size=1) as db:
        try:
            await add_provider(
                db, CLI_ACTOR, "openai", "openai-compatible", base_url=f"{stub.url}/v1", key=key
            )
        except Exception as exc:  # refused: what should happen
            assert "key" in str(exc)
            return
    transport = httpx.ASGITransport(app=app_for(), raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as api:
        refused = await api.post(
            "/providers",
            json={
                "name": "x",
                "kind": "openai-compatible",
                "base_url": f"{stub.url}/v1",
                "key": key,
            },
        )
        tested = await api.post("/providers/1/test")
        agent = await api.post("/agents", json={"name": "U", "provider": "openai", "model": "m"})
        chat = await api.post(f"/agents/{agent.json()['id']}/chat", json={"message": "hi"})
    assert (refused.status_code, tested.status_code, chat.status_code) == (422, 200, 200), (
        f"API refuses the key ({refused.status_code}); the CLI stored it; test -> "
        f"{tested.status_code} {tested.text[:100]}; turn -> {chat.status_code} {chat.text[:100]}"
    )


async def test_an_unhandled_error_in_a_turn_does_not_log_the_stored_key(
    app_for: Callable[..., FastAPI],
    no_provider_env: Callable[..., None],
    migrated_database_url: str,
    capfd: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """An address httpx cannot parse (stored before addresses were checked: written here with
    SQL, as the API now refuses it) is a clear error at each call, never a 500, and the stored
    key is in no log line."""
    import logging

    caplog.set_level(logging.DEBUG)
    transport = httpx.ASGITransport(app=app_for(), raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as api:
        refused = await api.post(
            "/providers",
            json={"name": "openai", "kind": "openai", "base_url": "http://256.1.1.1:1/v1"},
        )
        assert refused.status_code == 422, refused.text
        await _add(
            api, name="openai", kind="openai", base_url="http://127.0.0.1:1/v1", key=OPENAI_KEY
        )
        async with Database(url=migrated_database_url, min_size=0, max_size=1) as db:
            await db.execute(
                "UPDATE catalog.providers SET base_url = 'http://256.1.1.1:1/v1' WHERE id = 1"
            )
        tested = await api.post("/providers/1/test")
        agent = await api.post("/agents", json={"name": "U", "provider": "openai", "model": "m"})
        chat = await api.post(f"/agents/{agent.json()['id']}/chat", json={"message": "hi"})
    assert OPENAI_KEY not in tested.text + chat.text
    assert (tested.status_code, tested.json()["ok"]) == (200, False), tested.text
    assert chat.status_code == 422 and "256.1.1.1" in chat.text, chat.text
    printed = await asyncio.to_thread(capfd.readouterr)
    output = printed.out + printed.err + caplog.text
    lines = [line.strip()[:200] for line in output.splitlines() if OPENAI_KEY in line]
    assert lines == [], f"{len(lines)} log lines hold the stored key, e.g. {lines[:4]}"


@pytest.mark.parametrize("kind", ["anthropic", "openai"])
async def test_a_redirect_to_another_host_does_not_carry_the_stored_key(
    api: httpx.AsyncClient, stub: LLMStubServer, kind: str
) -> None:
    """The egress policy drops credentials when a redirect changes the origin; a provider's
    stored key must not follow a redirect to another host either (`localhost` stands for it)."""
    port = stub.url.rsplit(":", 1)[1]
    base = stub.url if kind == "anthropic" else f"{stub.url}/v1"
    path = "/v1/messages" if kind == "anthropic" else "/v1/chat/completions"
    made = await _add(api, name=kind, kind=kind, base_url=base, key=OPENAI_KEY)
    stub.add_json({}, status=307, headers={"location": f"http://localhost:{port}{path}"})
    model = "claude-haiku-4-5" if kind == "anthropic" else "gpt-4o"
    await api.post(f"/providers/{made['id']}/test", json={"model": model})
    hosts = [
        (r.headers.get("host"), r.headers.get("x-api-key") or r.headers.get("authorization"))
        for r in stub.requests
    ]
    assert all(
        OPENAI_KEY not in str(key) for host, key in hosts if host and host.startswith("localhost")
    ), hosts
