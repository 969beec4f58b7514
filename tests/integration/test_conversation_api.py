"""The conversation runtime over HTTP: the turn lock across PATCH and DELETE, failed turns in the
history, idempotency keys, a busy agent, background turns at shutdown, knowledge in the prompt
and the scripted provider's gate.

The model is `gathering.agents.llm_client` replaced by a `ScriptModel` (a function of the
messages); slow turns wait on events the test sets.
"""

from __future__ import annotations

import asyncio
import inspect
import json
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any
from unittest.mock import patch

import httpx
import pytest
from fastapi import FastAPI

from gathering.agents.knowledge import KnowledgeBase
from gathering.db import Database
from gathering.errors import ProviderUnavailableError
from gathering.llm import Completion, Message

WAIT = 10.0
KNOWLEDGE_HEADING = "## From the knowledge base"


class ScriptModel:
    """A replacement `llm_client`: replies with `reply(messages)` (sync or async; an exception
    is raised); keeps every call's messages and counts calls in progress."""

    def __init__(self, reply: Callable[[Sequence[Message]], Any]) -> None:
        self.reply = reply
        self.calls: list[Sequence[Message]] = []
        self.active = 0
        self.most = 0

    async def generate(self, messages: Sequence[Message], tools: Any = None, **options: Any):
        self.calls.append(messages)
        self.active += 1
        self.most = max(self.most, self.active)
        try:
            answer = self.reply(messages)
            if inspect.isawaitable(answer):
                answer = await answer
        finally:
            self.active -= 1
        if isinstance(answer, BaseException):
            raise answer
        return Completion(text=answer)


def last_user(messages: Sequence[Message]) -> str:
    return next(m.content for m in reversed(messages) if m.role == "user")


def echo(messages: Sequence[Message]) -> str:
    return f"re: {last_user(messages)}"


class Gate:
    """Holds the model's reply to `text` until `open()`; `started` is set when it is asked."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.started = asyncio.Event()
        self.released = asyncio.Event()

    async def __call__(self, messages: Sequence[Message]) -> str:
        if last_user(messages) == self.text:
            self.started.set()
            await self.released.wait()
        return echo(messages)

    def open(self) -> None:
        self.released.set()


@pytest.fixture
def make_app(llm_stub_env, app_for) -> Callable[..., FastAPI]:
    """Apps on one fresh database, `make_app(**settings)`, every provider at the LLM stub."""
    return app_for


@pytest.fixture
def web(make_app) -> FastAPI:
    return make_app()


@pytest.fixture
async def api(web) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=web)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        yield client


async def create(api: httpx.AsyncClient, name: str = "Ada", **body: Any) -> dict[str, Any]:
    response = await api.post("/agents", json={"name": name, "provider": "openai", **body})
    assert response.status_code == 201, response.text
    return response.json()


async def history(api: httpx.AsyncClient, agent_id: int) -> list[tuple[str, str]]:
    response = await api.get(f"/agents/{agent_id}/history")
    assert response.status_code == 200, response.text
    return [(m["role"], m["content"]) for m in response.json()]


def sse_events(raw: str) -> list[tuple[str, Any]]:
    events = []
    for block in raw.strip().split("\n\n"):
        lines = dict(line.split(": ", 1) for line in block.splitlines())
        events.append((lines["event"], json.loads(lines["data"])))
    return events


async def stream_chat(api: httpx.AsyncClient, agent_id: int, message: str) -> list[tuple[str, Any]]:
    async with api.stream(
        "POST", f"/agents/{agent_id}/chat/stream", json={"message": message}
    ) as response:
        assert response.status_code == 200
        return sse_events("".join([chunk async for chunk in response.aiter_text()]))


# --- the turn lock when the live agent object is replaced --------------------------------------


@pytest.mark.parametrize("first_kind", ["plain", "stream"])
async def test_patch_mid_turn_does_not_let_turns_overlap(api, first_kind):
    agent = await create(api)
    gate = Gate("one")
    model = ScriptModel(gate)
    with patch("gathering.agents.llm_client", model):
        if first_kind == "plain":
            first = asyncio.create_task(
                api.post(f"/agents/{agent['id']}/chat", json={"message": "one"})
            )
        else:
            first = asyncio.create_task(stream_chat(api, agent["id"], "one"))
        await asyncio.wait_for(gate.started.wait(), WAIT)
        patched = await api.patch(f"/agents/{agent['id']}", json={"persona": {"role": "reviewer"}})
        assert patched.status_code == 200
        second = asyncio.create_task(
            api.post(f"/agents/{agent['id']}/chat", json={"message": "two"})
        )
        await asyncio.sleep(0.05)
        assert not second.done()
        gate.open()
        first_result, second_result = await asyncio.wait_for(asyncio.gather(first, second), WAIT)
    assert second_result.status_code == 200 and second_result.json()["reply"] == "re: two"
    if first_kind == "plain":
        assert first_result.json()["reply"] == "re: one"
    else:
        assert first_result[-1][0] == "done" and first_result[-1][1]["reply"] == "re: one"
    assert model.most == 1
    assert await history(api, agent["id"]) == [
        ("user", "one"),
        ("assistant", "re: one"),
        ("user", "two"),
        ("assistant", "re: two"),
    ]
    # The second turn saw the first whole, and the persona of the patch.
    assert [m.content for m in model.calls[1] if m.role != "system"] == ["one", "re: one", "two"]
    assert "reviewer" in model.calls[1][0].content


async def test_delete_and_recreate_mid_turn_keeps_one_turn_per_agent(api, web):
    db = await web.state.gathering.database()
    overlapping: list[list[dict[str, Any]]] = []
    gate = Gate("first")

    async def reply(messages: Sequence[Message]) -> str:
        rows = await db.fetch_all(
            "SELECT agent_id, count(*) AS n FROM agent.turns WHERE status = 'running'"
            " GROUP BY agent_id HAVING count(*) > 1"
        )
        if rows:
            overlapping.append(rows)
        return await gate(messages)

    old = await create(api, "Phoenix")
    with patch("gathering.agents.llm_client", ScriptModel(reply)):
        first = asyncio.create_task(
            api.post(f"/agents/{old['id']}/chat", json={"message": "first"})
        )
        await asyncio.wait_for(gate.started.wait(), WAIT)
        assert (await api.delete(f"/agents/{old['id']}")).status_code == 204
        new = await create(api, "Phoenix")
        assert new["id"] != old["id"]
        second = await api.post(f"/agents/{new['id']}/chat", json={"message": "second"})
        assert second.status_code == 200 and second.json()["reply"] == "re: second"
        late = await api.post(f"/agents/{old['id']}/chat", json={"message": "late"})
        assert late.status_code == 404
        gate.open()
        first_response = await asyncio.wait_for(first, WAIT)
    assert first_response.status_code == 404, first_response.text  # its agent is gone
    assert overlapping == []
    assert await history(api, new["id"]) == [("user", "second"), ("assistant", "re: second")]
    assert [a["id"] for a in (await api.get("/agents")).json()] == [new["id"]]


# --- failed turns -----------------------------------------------------------------------------------


async def test_a_failed_turn_shows_as_an_error_in_the_history(api):
    agent = await create(api)

    def reply(messages: Sequence[Message]) -> Any:
        if last_user(messages) == "boom":
            return ProviderUnavailableError("the model is down")
        return echo(messages)

    model = ScriptModel(reply)
    with patch("gathering.agents.llm_client", model):
        failed = await api.post(f"/agents/{agent['id']}/chat", json={"message": "boom"})
        assert failed.status_code == 503 and failed.json()["code"] == "provider_unavailable"
        ok = await api.post(f"/agents/{agent['id']}/chat", json={"message": "again"})
    assert ok.status_code == 200
    assert await history(api, agent["id"]) == [
        ("user", "boom"),
        ("error", "the model provider could not be reached or failed"),  # not its text
        ("user", "again"),
        ("assistant", "re: again"),
    ]
    assert [m.content for m in model.calls[-1] if m.role != "system"] == ["again"]


# --- idempotency keys --------------------------------------------------------------------------------


async def test_a_repeated_idempotency_key_replays_the_reply(api):
    agent = await create(api)
    model = ScriptModel(echo)
    url = f"/agents/{agent['id']}/chat"
    key = {"Idempotency-Key": "order-42"}
    with patch("gathering.agents.llm_client", model):
        first = await api.post(url, json={"message": "buy"}, headers=key)
        again = await api.post(url, json={"message": "buy"}, headers=key)
        other = await api.post(url, json={"message": "sell"}, headers=key)
    assert first.status_code == again.status_code == 200
    assert (first.json()["replayed"], again.json()["replayed"]) == (False, True)
    for field in ("reply", "turn_id", "session_id", "usage"):
        assert again.json()[field] == first.json()[field]
    assert len(model.calls) == 1
    assert other.status_code == 409 and other.json()["code"] == "conflict"
    assert await history(api, agent["id"]) == [("user", "buy"), ("assistant", "re: buy")]


async def test_a_repeated_idempotency_key_replays_a_streamed_reply(api):
    agent = await create(api)
    model = ScriptModel(echo)
    url = f"/agents/{agent['id']}/chat/stream"
    key = {"Idempotency-Key": "stream-1"}

    async def streamed() -> list[tuple[str, Any]]:
        async with api.stream("POST", url, json={"message": "tell me"}, headers=key) as reply:
            return sse_events("".join([chunk async for chunk in reply.aiter_text()]))

    with patch("gathering.agents.llm_client", model):
        first = await streamed()
        again = await streamed()
    assert first[-1][0] == "done" and first[-1][1]["replayed"] is False
    assert [kind for kind, _ in again] == ["done"]
    assert again[0][1]["replayed"] is True
    assert again[0][1]["reply"] == first[-1][1]["reply"] == "re: tell me"
    assert len(model.calls) == 1


async def test_concurrent_requests_with_one_key_run_one_turn(api):
    agent = await create(api)
    gate = Gate("once")
    model = ScriptModel(gate)
    url = f"/agents/{agent['id']}/chat"
    key = {"Idempotency-Key": "dup"}
    with patch("gathering.agents.llm_client", model):
        first = asyncio.create_task(api.post(url, json={"message": "once"}, headers=key))
        await asyncio.wait_for(gate.started.wait(), WAIT)
        second = asyncio.create_task(api.post(url, json={"message": "once"}, headers=key))
        await asyncio.sleep(0.05)
        gate.open()
        responses = await asyncio.wait_for(asyncio.gather(first, second), WAIT)
    assert [r.status_code for r in responses] == [200, 200]
    assert sorted(r.json()["replayed"] for r in responses) == [False, True]
    assert len(model.calls) == 1
    assert await history(api, agent["id"]) == [("user", "once"), ("assistant", "re: once")]


async def test_a_key_whose_turn_failed_is_409_turn_failed(api):
    agent = await create(api)
    outcomes: list[Any] = [ProviderUnavailableError("down"), "done"]
    model = ScriptModel(lambda messages: outcomes.pop(0))
    url = f"/agents/{agent['id']}/chat"
    with patch("gathering.agents.llm_client", model):
        failed = await api.post(url, json={"message": "go"}, headers={"Idempotency-Key": "k1"})
        again = await api.post(url, json={"message": "go"}, headers={"Idempotency-Key": "k1"})
        fresh = await api.post(url, json={"message": "go"}, headers={"Idempotency-Key": "k2"})
    assert failed.status_code == 503
    assert again.status_code == 409 and again.json()["code"] == "turn_failed"
    assert len(model.calls) == 2
    assert fresh.status_code == 200 and fresh.json()["reply"] == "done"


async def test_replaying_a_new_session_request_opens_no_other_session(api):
    agent = await create(api)
    url = f"/agents/{agent['id']}/chat"
    body = {"message": "start over", "new_session": True}
    key = {"Idempotency-Key": "fresh-start"}
    with patch("gathering.agents.llm_client", ScriptModel(echo)):
        await api.post(url, json={"message": "old stuff"})
        first = await api.post(url, json=body, headers=key)
        again = await api.post(url, json=body, headers=key)
    assert again.json()["replayed"] is True
    # A retry must have no effect: the session of the turn stays the current one.
    assert await history(api, agent["id"]) == [
        ("user", "start over"),
        ("assistant", "re: start over"),
    ]
    assert again.json()["session_id"] == first.json()["session_id"]


# --- a busy agent ------------------------------------------------------------------------------------


async def test_a_chat_to_a_busy_agent_is_409_with_retry_after(api, settings_env):
    settings_env(agent_busy_wait=0.2)
    agent = await create(api)
    gate = Gate("long job")
    url = f"/agents/{agent['id']}/chat"
    with patch("gathering.agents.llm_client", ScriptModel(gate)):
        running = asyncio.create_task(api.post(url, json={"message": "long job"}))
        await asyncio.wait_for(gate.started.wait(), WAIT)
        busy = await api.post(
            url, json={"message": "me too"}, headers={"Idempotency-Key": "busy-key"}
        )
        async with api.stream("POST", f"{url}/stream", json={"message": "me too"}) as streamed:
            streamed_events = sse_events("".join([c async for c in streamed.aiter_text()]))
        gate.open()
        assert (await asyncio.wait_for(running, WAIT)).status_code == 200
        # Refused before it started, the request may be sent again with its key.
        retried = await api.post(
            url, json={"message": "me too"}, headers={"Idempotency-Key": "busy-key"}
        )
    assert busy.status_code == 409
    assert busy.json()["code"] == "agent_busy"
    assert int(busy.headers["Retry-After"]) >= 1
    assert [kind for kind, _ in streamed_events] == ["error"]
    assert streamed_events[0][1]["code"] == "agent_busy"
    assert retried.status_code == 200 and retried.json()["replayed"] is False


# --- background turns at shutdown -----------------------------------------------------------------


async def disconnected_stream(app: FastAPI, agent_id: int, message: str) -> None:
    """POST a streamed chat whose client is gone before the reply exists."""
    body = json.dumps({"message": message}).encode()
    messages = [
        {"type": "http.request", "body": body, "more_body": False},
        {"type": "http.disconnect"},
    ]

    async def receive() -> dict[str, Any]:
        return messages.pop(0) if messages else {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        pass

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": f"/agents/{agent_id}/chat/stream",
        "raw_path": b"",
        "query_string": b"",
        "root_path": "",
        "headers": [(b"host", b"test"), (b"content-type", b"application/json")],
        "client": ("127.0.0.1", 5000),
        "server": ("test", 80),
    }
    await app(scope, receive, send)


async def stored_turns(url: str) -> list[tuple[str, str]]:
    async with Database(url=url) as db:
        rows = await db.fetch_all(
            "SELECT m.role, m.content FROM agent.messages m ORDER BY m.created_at, m.seq"
        )
        statuses = await db.fetch_all("SELECT status FROM agent.turns")
    return [(r["role"], r["content"]) for r in rows] + [("turn", s["status"]) for s in statuses]


async def test_a_background_turn_finishes_during_shutdown(make_app, migrated_database_url):
    app = make_app(shutdown_timeout=3)
    started = asyncio.Event()

    async def slow(messages: Sequence[Message]) -> str:
        started.set()
        await asyncio.sleep(1.5)
        return echo(messages)

    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            agent = await create(client, "Leaver")
        with patch("gathering.agents.llm_client", ScriptModel(slow)):
            await disconnected_stream(app, agent["id"], "are you there?")
            await asyncio.wait_for(started.wait(), WAIT)
            assert app.state.gathering.background
            # leaving the block drives the shutdown, with the turn still running
    assert not app.state.gathering.background
    assert await stored_turns(migrated_database_url) == [
        ("user", "are you there?"),
        ("assistant", "re: are you there?"),
        ("turn", "completed"),
    ]


async def test_a_background_turn_past_the_shutdown_timeout_is_cut_off(
    make_app, migrated_database_url
):
    app = make_app(shutdown_timeout=0.3)
    started = asyncio.Event()

    async def hang(messages: Sequence[Message]) -> str:
        started.set()
        await asyncio.sleep(60)
        return "never"

    async def run() -> None:
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
                agent = await create(client, "Stuck")
            with patch("gathering.agents.llm_client", ScriptModel(hang)):
                await disconnected_stream(app, agent["id"], "hello?")
                await asyncio.wait_for(started.wait(), WAIT)

    await asyncio.wait_for(run(), WAIT)
    assert not app.state.gathering.background
    # Left running, it is closed as interrupted by the agent's next turn (any instance).
    assert await stored_turns(migrated_database_url) == [("user", "hello?"), ("turn", "running")]


# --- knowledge in the prompt ------------------------------------------------------------------------

RUNBOOK = (
    "To roll back a release, run `deploy rollback --to previous` from the ops host. "
    "Watch the error rate dashboard while it runs."
)


async def test_knowledge_categories_reach_the_system_prompt(api, web):
    kb = KnowledgeBase(await web.state.gathering.database())
    await kb.add_document("Deployment runbook", RUNBOOK, category="ops")
    await kb.add_document(
        "Release notes", "The May release added a faster rollback.", category="product"
    )
    agent = await create(api, "Ops", knowledge={"categories": ["ops"]})
    assert agent["config"]["knowledge"]["categories"] == ["ops"]
    plain = await create(api, "Plain")
    model = ScriptModel(echo)
    with patch("gathering.agents.llm_client", model):
        question = {"message": "How do I roll back a release?"}
        assert (await api.post(f"/agents/{agent['id']}/chat", json=question)).status_code == 200
        system = model.calls[-1][0].content
        assert (await api.post(f"/agents/{plain['id']}/chat", json=question)).status_code == 200
        plain_system = model.calls[-1][0].content
    assert KNOWLEDGE_HEADING in system
    section = system.split(KNOWLEDGE_HEADING, 1)[1]
    assert "Deployment runbook" in section and "deploy rollback --to previous" in section
    assert "Release notes" not in section  # another category
    assert KNOWLEDGE_HEADING not in plain_system


@pytest.mark.parametrize(
    "knowledge",
    [
        "everything",
        5,
        ["ops"],
        {"categories": "ops"},
        {"tags": ["ops"]},
        {"documents": ["one"]},
        {"categories": [""]},
    ],
)
async def test_invalid_knowledge_is_422(api, knowledge):
    response = await api.post(
        "/agents", json={"name": "K", "provider": "openai", "knowledge": knowledge}
    )
    assert response.status_code == 422, response.text
    agent = await create(api, "Valid")
    patched = await api.patch(f"/agents/{agent['id']}", json={"knowledge": knowledge})
    assert patched.status_code == 422, patched.text


# --- the scripted provider -----------------------------------------------------------------------------


async def test_the_scripted_provider_needs_development_mode(make_app):
    production = make_app(env="production")
    development = make_app(env="development")
    transport = httpx.ASGITransport(app=production)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        refused = await client.post("/agents", json={"name": "S", "provider": "scripted"})
        agent = await create(client, "Real")
        patched = await client.patch(f"/agents/{agent['id']}", json={"provider": "scripted"})
    transport = httpx.ASGITransport(app=development)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        accepted = await client.post("/agents", json={"name": "S", "provider": "scripted"})
    assert refused.status_code == 422 and "GATHERING_ENV" in refused.text
    assert patched.status_code == 422
    assert accepted.status_code == 201 and accepted.json()["provider"] == "scripted"


async def test_the_scripted_provider_follows_gathering_env(make_app, settings_env):
    settings_env(env="development")
    transport = httpx.ASGITransport(app=make_app())
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        accepted = await client.post("/agents", json={"name": "S", "provider": "scripted"})
    assert accepted.status_code == 201
