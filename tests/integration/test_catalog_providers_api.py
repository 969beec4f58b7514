"""The catalog's providers over HTTP: added, listed, changed, tested and deleted by admins (read
by anyone signed in), every change audited; the key stored encrypted, never returned, only
masked. An agent naming a provider (or its kind) gets its address and key at the wire, and an
environment variable's key wins over the stored one at the address the environment sets.
Attacks: a non-admin's change (403), a key in any response or log line, huge and malformed
input (422)."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from catalog_env import (  # noqa: F401 - the fixtures "no_provider_env", "stub", "api", "multi"
    ANTHROPIC_KEY,
    ENV_KEY,
    OPENAI_KEY,
    catalog_api_fixture,
    catalog_multi_fixture,
    catalog_stub_fixture,
    no_provider_env_fixture,
)
from fastapi import FastAPI
from task_api import login

import gathering.auth.audit
from gathering.config import get_settings
from gathering.db import Database
from gathering.observability import configure_logging
from gathering.testing import LLMStubServer

Json = dict[str, Any]


async def _add(client: httpx.AsyncClient, headers: Json | None = None, **body: Any) -> Json:
    made = await client.post("/providers", json=body, headers=headers)
    assert made.status_code == 201, made.text
    result: Json = made.json()
    return result


async def _agent(client: httpx.AsyncClient, provider: str, model: str) -> int:
    made = await client.post(
        "/agents", json={"name": f"{provider}-agent", "provider": provider, "model": model}
    )
    assert made.status_code == 201, made.text
    agent_id: int = made.json()["id"]
    return agent_id


def _sent_key(stub: LLMStubServer) -> str | None:
    """The key the last request carried: Anthropic's SDK sends it as x-api-key or, in its
    newer versions, as a bearer token like OpenAI's."""
    headers = stub.last.headers
    bearer = headers.get("authorization", "").removeprefix("Bearer ")
    return headers.get("x-api-key") or bearer or None


async def _chat(client: httpx.AsyncClient, agent_id: int, text: str) -> Json:
    answer = await client.post(f"/agents/{agent_id}/chat", json={"message": text})
    assert answer.status_code == 200, answer.text
    body: Json = answer.json()
    return body


# --- the key reaches the wire -----------------------------------------------------------------


async def test_a_stored_openai_key_reaches_the_wire_and_the_environment_wins(
    api: httpx.AsyncClient, stub: LLMStubServer, no_provider_env: Callable[..., None]
) -> None:
    made = await _add(api, name="openai", kind="openai", base_url=f"{stub.url}/v1", key=OPENAI_KEY)
    assert (made["key"], made["key_source"]) == ("sk-...WXYZ", "catalog")
    agent_id = await _agent(api, "openai", "gpt-4o")
    assert (await _chat(api, agent_id, "hello"))["reply"] == "Echo: hello"
    assert _sent_key(stub) == OPENAI_KEY

    # The environment's key goes only to OpenAI's own host or to the address the environment
    # sets: never to an address an admin stored (test_catalog_attacks.py).
    no_provider_env(OPENAI_API_KEY=ENV_KEY)
    assert (await _chat(api, agent_id, "again"))["reply"] == "Echo: again"
    assert _sent_key(stub) == OPENAI_KEY
    no_provider_env(OPENAI_BASE_URL=f"{stub.url}/v1")
    assert (await _chat(api, agent_id, "once more"))["reply"] == "Echo: once more"
    assert _sent_key(stub) == ENV_KEY
    listed = (await api.get("/providers")).json()
    assert [(p["name"], p["key"], p["key_source"]) for p in listed] == [
        ("openai", "sk-...WXYZ", "environment")
    ]


async def test_an_agent_naming_a_kind_uses_the_first_provider_of_that_kind(
    api: httpx.AsyncClient, stub: LLMStubServer, no_provider_env: Callable[..., None]
) -> None:
    await _add(api, name="work", kind="anthropic", base_url=stub.url, key=ANTHROPIC_KEY)
    await _add(api, name="spare", kind="anthropic", base_url="http://127.0.0.1:9", key="x" * 30)
    agent_id = await _agent(api, "anthropic", "claude-haiku-4-5")
    assert (await _chat(api, agent_id, "hi"))["reply"] == "Echo: hi"
    assert stub.last.path == "/v1/messages"
    assert _sent_key(stub) == ANTHROPIC_KEY
    no_provider_env(ANTHROPIC_API_KEY=ENV_KEY)  # not to the stored address: see above
    await _chat(api, agent_id, "again")
    assert (stub.last.path, _sent_key(stub)) == ("/v1/messages", ANTHROPIC_KEY)
    no_provider_env(ANTHROPIC_BASE_URL=stub.url)
    await _chat(api, agent_id, "once more")
    assert (stub.last.path, _sent_key(stub)) == ("/v1/messages", ENV_KEY)


async def test_a_changed_key_applies_from_the_next_turn(
    api: httpx.AsyncClient, stub: LLMStubServer
) -> None:
    made = await _add(api, name="openai", kind="openai", base_url=f"{stub.url}/v1", key=OPENAI_KEY)
    agent_id = await _agent(api, "openai", "gpt-4o")
    await _chat(api, agent_id, "one")
    changed = await api.patch(
        f"/providers/{made['id']}", json={"key": "sk-rotated-key-0000000000000abcd"}
    )
    assert changed.status_code == 200 and changed.json()["key"] == "sk-...abcd"
    await _chat(api, agent_id, "two")
    assert stub.last.headers["authorization"] == "Bearer sk-rotated-key-0000000000000abcd"
    # Without a key, an OpenAI provider at an address of its own sends none of OpenAI's.
    removed = await api.patch(f"/providers/{made['id']}", json={"key": None})
    assert removed.json()["key"] is None and removed.json()["key_source"] is None


async def test_an_openai_compatible_server_never_gets_the_environments_openai_key(
    api: httpx.AsyncClient, stub: LLMStubServer, no_provider_env: Callable[..., None]
) -> None:
    no_provider_env(OPENAI_API_KEY=ENV_KEY)
    await _add(api, name="openai", kind="openai-compatible", base_url=f"{stub.url}/v1")
    agent_id = await _agent(api, "openai", "local-llama")
    await _chat(api, agent_id, "hi")
    assert stub.last.headers["authorization"] == "Bearer not-needed"


async def test_a_context_window_override_reaches_the_agents_context_budget(
    api: httpx.AsyncClient, stub: LLMStubServer
) -> None:
    await _add(api, name="openai", kind="openai", base_url=f"{stub.url}/v1", key=OPENAI_KEY)
    agent_id = await _agent(api, "openai", "gpt-4o")
    put = await api.put("/models/openai/gpt-4o", json={"context_window": 600})
    assert put.status_code == 200, put.text
    # 600 tokens less the reply's max_tokens (1024 by default) leave no room for the message.
    refused = await api.post(f"/agents/{agent_id}/chat", json={"message": "hello"})
    assert refused.status_code == 422 and refused.json()["code"] == "context_too_long"
    assert (await api.delete("/models/openai/gpt-4o")).status_code == 204
    assert (await _chat(api, agent_id, "hello"))["reply"] == "Echo: hello"


# --- the test call ----------------------------------------------------------------------------


async def test_the_test_call_reports_latency_or_the_mapped_error(
    api: httpx.AsyncClient,
    stub: LLMStubServer,
    caplog: pytest.LogCaptureFixture,
    capfd: pytest.CaptureFixture[str],
) -> None:
    caplog.set_level(logging.DEBUG)
    made = await _add(api, name="openai", kind="openai", base_url=f"{stub.url}/v1", key=OPENAI_KEY)
    tested = await api.post(f"/providers/{made['id']}/test", json={"model": "gpt-4o"})
    assert tested.status_code == 200, tested.text
    body = tested.json()
    assert (body["ok"], body["model"], body["error"], body["key_source"]) == (
        True,
        "gpt-4o",
        None,
        "catalog",
    )
    assert body["latency_ms"] > 0
    assert json.loads(stub.last.body)["max_tokens"] == 8
    # The provider refuses the key, quoting it: the answer gives its status, not its text.
    refusal = {"error": {"message": f"Incorrect API key provided: {OPENAI_KEY}.", "type": "x"}}
    stub.add_json(refusal, status=401)
    failed = (await api.post(f"/providers/{made['id']}/test")).json()
    assert failed["ok"] is False and failed["model"] == "gpt-6-luna"
    assert failed["error"]["code"] == "provider_authentication_failed"
    message = "the provider answered HTTP 401 (provider_authentication_failed)"
    assert failed["error"]["message"] == message
    assert "PATCH /providers/" in failed["error"]["hint"]
    assert OPENAI_KEY not in json.dumps(failed) and OPENAI_KEY not in caplog.text
    printed = await asyncio.to_thread(capfd.readouterr)
    assert OPENAI_KEY not in printed.out + printed.err
    assert len(stub.requests) == 2  # no retry


async def test_testing_an_unreachable_or_unknown_provider(api: httpx.AsyncClient) -> None:
    made = await _add(api, name="down", kind="ollama", base_url="http://127.0.0.1:9")
    body = (await api.post(f"/providers/{made['id']}/test", json={"model": "llama3.2"})).json()
    assert body["ok"] is False and body["error"]["code"] == "provider_unavailable"
    missing = await api.post("/providers/999999/test")
    assert missing.status_code == 404


# --- CRUD, audit, attacks ---------------------------------------------------------------------


async def test_providers_are_read_changed_and_deleted_with_an_audit_trail(
    api: httpx.AsyncClient, test_db: Database, migrated_database_url: str
) -> None:
    made = await _add(
        api,
        name="local-llm",
        kind="openai-compatible",
        base_url="http://127.0.0.1:8080/v1",
        key=OPENAI_KEY,
    )
    one = (await api.get(f"/providers/{made['id']}")).json()
    assert one == made
    renamed = await api.patch(  # another port with the stored key: a 409 (test_catalog_attacks)
        f"/providers/{made['id']}", json={"name": "vllm", "base_url": "http://127.0.0.1:8080/v2"}
    )
    assert renamed.status_code == 200
    assert (renamed.json()["name"], renamed.json()["key"]) == ("vllm", "sk-...WXYZ")
    taken = await _add(api, name="other", kind="local")
    clash = await api.patch(f"/providers/{taken['id']}", json={"name": "vllm"})
    assert clash.status_code == 409
    again = await api.post("/providers", json={"name": "vllm", "kind": "local"})
    assert again.status_code == 409
    assert (await api.delete(f"/providers/{made['id']}")).status_code == 204
    assert (await api.get(f"/providers/{made['id']}")).status_code == 404
    assert (await api.delete(f"/providers/{made['id']}")).status_code == 404
    async with Database(url=migrated_database_url, min_size=0, max_size=1) as db:
        entries = await db.fetch_all(
            "SELECT event, details::text AS details FROM auth.audit_log "
            "WHERE target_type = 'provider' ORDER BY id"
        )
    assert [entry["event"] for entry in entries] == [
        "provider.created",
        "provider.changed",
        "provider.created",
        "provider.deleted",
    ]
    assert all(OPENAI_KEY not in entry["details"] for entry in entries)
    assert '"key": "stored"' in entries[0]["details"]


async def test_only_admins_change_providers_and_models(
    multi: tuple[FastAPI, httpx.AsyncClient], stub: LLMStubServer
) -> None:
    app, client = multi
    admin = await login(app, client, "admin")
    made = await _add(
        client, admin, name="openai", kind="openai", base_url=f"{stub.url}/v1", key=OPENAI_KEY
    )
    for role in ("member", "viewer"):
        headers = await login(app, client, role)
        listed = await client.get("/providers", headers=headers)
        assert listed.status_code == 200 and listed.json()[0]["key"] == "sk-...WXYZ"
        assert (await client.get("/models", headers=headers)).status_code == 200
        attempts = [
            client.post("/providers", json={"name": "x", "kind": "local"}, headers=headers),
            client.patch(f"/providers/{made['id']}", json={"key": "k" * 30}, headers=headers),
            client.delete(f"/providers/{made['id']}", headers=headers),
            client.post(f"/providers/{made['id']}/test", headers=headers),
            client.put("/models/openai/gpt-4o", json={"context_window": 10}, headers=headers),
            client.delete("/models/openai/gpt-4o", headers=headers),
        ]
        for attempt in attempts:
            answer = await attempt
            assert answer.status_code == 403, answer.text
    assert len(stub.requests) == 0
    assert (await client.get("/providers")).status_code == 401
    still = (await client.get(f"/providers/{made['id']}", headers=admin)).json()
    assert still == made


@pytest.mark.parametrize(
    "body",
    [
        {"name": "UPPER", "kind": "openai"},
        {"name": "n" * 64, "kind": "openai"},
        {"name": "ok", "kind": "gemini"},
        {"name": "ok", "kind": "openai", "key": "has space"},
        {"name": "ok", "kind": "openai", "key": "k" * 5000},
        {"name": "ok", "kind": "openai", "base_url": "ftp://x"},
        {"name": "ok", "kind": "openai", "base_url": "http://user:pw@127.0.0.1/v1"},
        {"name": "ok", "kind": "openai", "base_url": "http://" + "h" * 3000},
        {"name": "ok", "kind": "openai-compatible"},
        {"name": "ok", "kind": "local", "base_url": "http://127.0.0.1:1"},
        {"name": "ok", "kind": "ollama", "key": "k" * 30},
        {"name": "ok", "kind": "openai", "base_url": "http://a..b/v1"},
        {"name": "ok", "kind": "openai", "base_url": "http://h:99999/v1"},
        {"name": "ok", "kind": "openai", "base_url": "http://h:port/v1"},
        {"name": "ok", "kind": "openai", "base_url": "http://h/%zz"},
        {"name": "ok", "kind": "local", "key": "k" * 30},
        {"name": "ok", "kind": None},
        {"name": "ok", "kind": "openai", "extra": 1},
        {"name": ["ok"], "kind": "openai"},
    ],
)
async def test_malformed_providers_are_refused(api: httpx.AsyncClient, body: Json) -> None:
    answer = await api.post("/providers", json=body)
    assert answer.status_code == 422, answer.text
    assert "k" * 30 not in answer.text and "pw@" not in answer.text
    assert (await api.get("/providers")).json() == []


async def test_a_key_is_in_no_response_and_no_log_line(
    api: httpx.AsyncClient,
    stub: LLMStubServer,
    caplog: pytest.LogCaptureFixture,
    capfd: pytest.CaptureFixture[str],
    uncached_logs: Any,
) -> None:
    # The server's own logging (whatever an earlier test of this process left configured),
    # every module's logger built anew on it.
    configure_logging(get_settings().model_copy(update={"log_format": "json"}))
    uncached_logs(gathering.auth.audit)
    caplog.set_level(logging.DEBUG)
    try:
        await _every_provider_operation_keeps_the_key_out_of_responses(api, stub)
    finally:
        logging.getLogger().handlers.clear()
    printed = await asyncio.to_thread(capfd.readouterr)
    assert "provider.created" in printed.out + printed.err  # the log lines are here
    assert OPENAI_KEY not in printed.out + printed.err
    assert OPENAI_KEY not in caplog.text
    for record in caplog.records:
        assert OPENAI_KEY not in repr(record.msg) and OPENAI_KEY not in repr(record.args)


async def _every_provider_operation_keeps_the_key_out_of_responses(
    api: httpx.AsyncClient, stub: LLMStubServer
) -> None:
    answers = []
    made = await api.post(
        "/providers",
        json={"name": "openai", "kind": "openai", "base_url": f"{stub.url}/v1", "key": OPENAI_KEY},
    )
    answers.append(made)
    provider_id = made.json()["id"]
    answers.append(await api.get("/providers"))
    answers.append(await api.get(f"/providers/{provider_id}"))
    answers.append(await api.patch(f"/providers/{provider_id}", json={"key": OPENAI_KEY + "2"}))
    answers.append(await api.post(f"/providers/{provider_id}/test"))
    agent_id = await _agent(api, "openai", "gpt-4o")
    answers.append(await api.post(f"/agents/{agent_id}/chat", json={"message": "hi"}))
    answers.append(
        await api.post("/providers", json={"name": "openai", "kind": "openai", "key": OPENAI_KEY})
    )
    answers.append(
        await api.post("/providers", json={"name": "Bad", "kind": "openai", "key": OPENAI_KEY})
    )
    answers.append(await api.delete(f"/providers/{provider_id}"))
    assert [a.status_code for a in answers] == [201, 200, 200, 200, 200, 200, 409, 422, 204]
    for answer in answers:
        assert OPENAI_KEY not in answer.text


async def test_a_change_that_does_not_fit_the_stored_provider_is_a_conflict(
    api: httpx.AsyncClient,
) -> None:
    local = await _add(api, name="here", kind="local")
    keyed = await api.patch(f"/providers/{local['id']}", json={"key": "k" * 30})
    assert keyed.status_code == 409 and "takes no key" in keyed.json()["detail"]
    compat = await _add(
        api, name="vllm", kind="openai-compatible", base_url="http://127.0.0.1:1/v1"
    )
    unaddressed = await api.patch(f"/providers/{compat['id']}", json={"base_url": None})
    assert unaddressed.status_code == 409
    assert (
        await api.patch(f"/providers/{local['id']}", json={"kind": "openai-compatible"})
    ).status_code == 409
    # A body that contradicts itself is refused by its schema.
    for body in (
        {"kind": "local", "key": "k" * 30},
        {"kind": "openai-compatible", "base_url": None},
        {"kind": "ollama", "key": "k" * 30},
        {"kind": "gemini"},
        {"kind": 3},
    ):
        answer = await api.patch(f"/providers/{compat['id']}", json=body)
        assert answer.status_code == 422, (body, answer.text)
    # To a keyless kind, the key goes (and to local the address too), as documented.
    openai = await _add(
        api, name="o", kind="openai", base_url="http://127.0.0.1:2/v1", key="k" * 30
    )
    moved = (await api.patch(f"/providers/{openai['id']}", json={"kind": "local"})).json()
    assert (moved["kind"], moved["base_url"], moved["key"]) == ("local", None, None)
    unchanged = (await api.patch(f"/providers/{compat['id']}", json={})).json()
    assert unchanged["name"] == "vllm" and unchanged["base_url"] == "http://127.0.0.1:1/v1"


async def test_a_provider_named_after_another_kind_is_not_used_by_that_kinds_agents(
    api: httpx.AsyncClient, stub: LLMStubServer
) -> None:
    await _add(api, name="anthropic", kind="openai", base_url=f"{stub.url}/v1", key=OPENAI_KEY)
    await _add(api, name="claude", kind="anthropic", base_url=stub.url, key=ANTHROPIC_KEY)
    agent_id = await _agent(api, "anthropic", "claude-haiku-4-5")
    await _chat(api, agent_id, "hi")
    assert (stub.last.path, _sent_key(stub)) == ("/v1/messages", ANTHROPIC_KEY)
