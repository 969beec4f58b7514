"""One agent, many processes: two real `gathering serve` processes and the `gathering chat` CLI
take turns on one agent over one database. The stored transcript is in order, and every model
call sees every earlier message. Providers are faked at the wire only (the LLM stub, reached
through a gate that a test can close to hold a model call)."""

from __future__ import annotations

import asyncio
import secrets
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from live_server import LiveServer, environment
from psycopg import sql
from psycopg.conninfo import make_conninfo

from gathering.testing import LLMStubServer, RequestGate

pytestmark = pytest.mark.slow

GATHERING = Path(sys.executable).with_name("gathering")
Line = tuple[str, str]  # (role, text)


@dataclass
class Cluster:
    database_url: str
    env: dict[str, str]
    gate: RequestGate
    a: LiveServer
    b: LiveServer

    def sql(self, query: str, *args: Any) -> list[tuple[Any, ...]]:
        with psycopg.connect(self.database_url) as conn:
            return conn.execute(query, args).fetchall()


@pytest.fixture(scope="module")
def cluster(test_server_url: str, llm_stub: LLMStubServer) -> Iterator[Cluster]:
    """A migrated database and two servers on it, whose model calls go through a gate."""
    name = f"gathering_test_procs_{secrets.token_hex(6)}"
    with psycopg.connect(test_server_url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    url = make_conninfo(test_server_url, dbname=name)
    gate = RequestGate(llm_stub.url).start()
    env = {
        "GATHERING_DATABASE_URL": url,
        "DATABASE_URL": url,
        "GATHERING_AUTO_MIGRATE": "false",  # migrated once, below
        "GATHERING_LOG_LEVEL": "WARNING",
        **llm_stub.environment(),
        **gate.environment(),
    }
    servers: list[LiveServer] = []
    try:
        migrate = subprocess.run(
            [str(GATHERING), "db", "migrate"],
            env=environment(**{**env, "GATHERING_AUTO_MIGRATE": "true"}),
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert migrate.returncode == 0, migrate.stdout + migrate.stderr
        servers = [LiveServer(**env), LiveServer(**env)]
        for server in servers:
            server.wait_ready()
        yield Cluster(url, env, gate, *servers)
    finally:
        for server in servers:
            server.stop()
        gate.stop()
        with psycopg.connect(test_server_url, autocommit=True) as conn:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )


# --- helpers ---------------------------------------------------------------------------------


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(
            p.get("text", "") for p in content if isinstance(p, dict) and p.get("type") == "text"
        )
    return ""


def _seen(body: dict[str, Any]) -> list[Line]:
    """The conversation a model request carried (OpenAI wire form), system prompt left out."""
    return [(m["role"], _text(m.get("content"))) for m in body["messages"] if m["role"] != "system"]


def _exchange(text: str) -> list[Line]:
    return [("user", text), ("assistant", f"Echo: {text}")]


def _create_agent(server: LiveServer, prefix: str) -> tuple[int, str]:
    name = f"{prefix}-{secrets.token_hex(3)}"
    response = httpx.post(
        f"{server.base}/agents",
        json={"name": name, "provider": "openai", "model": "gpt-4o"},
        timeout=30,
    )
    assert response.status_code == 201, response.text
    return response.json()["id"], name


def _chat(server: LiveServer, agent_id: int, text: str, **extra: Any) -> dict[str, Any]:
    response = httpx.post(
        f"{server.base}/agents/{agent_id}/chat", json={"message": text, **extra}, timeout=60
    )
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def _cli_chat(cluster: Cluster, name: str, *lines: str) -> str:
    """`gathering chat NAME` with `lines` on stdin, then EOF; its output."""
    done = subprocess.run(
        [str(GATHERING), "chat", name],
        input="".join(f"{line}\n" for line in lines),
        env=environment(**cluster.env),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def _history(server: LiveServer, agent_id: int) -> list[Line]:
    response = httpx.get(f"{server.base}/agents/{agent_id}/history", timeout=30)
    assert response.status_code == 200, response.text
    return [(m["role"], m["content"]) for m in response.json()]


def _stored(cluster: Cluster, agent_id: int) -> list[tuple[str, int, str, str]]:
    """Every stored message of the agent: (session, seq, role, content), session by session."""
    return cluster.sql(
        "SELECT s.id::text, m.seq, m.role, m.content FROM agent.messages m"
        " JOIN agent.sessions s ON s.id = m.session_id WHERE s.agent_id = %s"
        " ORDER BY s.created_at, m.seq",
        agent_id,
    )


# --- tests -----------------------------------------------------------------------------------


def test_two_servers_and_the_cli_alternate_turns_on_one_agent(
    cluster: Cluster, llm_stub: LLMStubServer
) -> None:
    agent_id, name = _create_agent(cluster.a, "relay")
    transcript: list[Line] = []
    for turn, where in enumerate(["A", "B", "CLI", "A", "B", "CLI", "A", "B"], start=1):
        text = f"turn {turn} via {where}"
        before = len(llm_stub.requests)
        if where == "CLI":
            assert f"Echo: {text}" in _cli_chat(cluster, name, text)
        else:
            server = cluster.a if where == "A" else cluster.b
            assert _chat(server, agent_id, text)["reply"] == f"Echo: {text}"
        calls = llm_stub.requests[before:]
        assert len(calls) == 1, f"turn {turn}: {len(calls)} model calls"
        path, body = calls[0].path, calls[0].json
        assert path.endswith("/chat/completions")
        assert body["model"] == "gpt-4o"
        assert _seen(body) == [*transcript, ("user", text)], f"turn {turn} via {where}"
        transcript += _exchange(text)

    assert _history(cluster.a, agent_id) == transcript
    assert _history(cluster.b, agent_id) == transcript
    rows = _stored(cluster, agent_id)
    assert len({session for session, *_ in rows}) == 1
    assert [seq for _, seq, _, _ in rows] == list(range(1, len(transcript) + 1))
    assert [(role, content) for _, _, role, content in rows] == transcript
    statuses = cluster.sql("SELECT status FROM agent.turns WHERE agent_id = %s", agent_id)
    assert statuses == [("completed",)] * 8


def test_concurrent_turns_on_both_servers_are_serialised(
    cluster: Cluster, llm_stub: LLMStubServer
) -> None:
    agent_id, _ = _create_agent(cluster.a, "crowd")
    texts = [f"parallel {i}" for i in range(8)]
    before = len(llm_stub.requests)

    def waiting_across_processes() -> bool:
        (count,) = cluster.sql(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"
        )[0]
        return bool(count)

    async def fire() -> list[httpx.Response]:
        async with httpx.AsyncClient(timeout=60) as client:
            # The first turn's model call is held at the gate until the other server is seen
            # waiting for the agent's lock: the turns really contend across processes.
            cluster.gate.close()
            try:
                posts = asyncio.gather(
                    *(
                        client.post(
                            f"{(cluster.a if i % 2 == 0 else cluster.b).base}"
                            f"/agents/{agent_id}/chat",
                            json={"message": text},
                        )
                        for i, text in enumerate(texts)
                    )
                )
                assert await asyncio.to_thread(cluster.gate.wait_held, 1, 30)
                for _ in range(600):
                    if await asyncio.to_thread(waiting_across_processes):
                        break
                    await asyncio.sleep(0.05)
                else:
                    pytest.fail("no turn waited for the agent's lock in the other server")
                assert cluster.gate.held == 1  # one turn at a time reaches the model
            finally:
                cluster.gate.open()
            return await posts

    responses = asyncio.run(fire())
    assert [r.status_code for r in responses] == [200] * len(texts), [r.text for r in responses]
    assert [r.json()["reply"] for r in responses] == [f"Echo: {t}" for t in texts]

    # A clean alternation, each message once, in the order the turns ran.
    stored = _history(cluster.b, agent_id)
    assert len(stored) == 2 * len(texts)
    order = [text for role, text in stored[::2]]
    assert sorted(order) == sorted(texts)
    assert stored == [line for text in order for line in _exchange(text)]
    rows = _stored(cluster, agent_id)
    assert [seq for _, seq, _, _ in rows] == list(range(1, 2 * len(texts) + 1))

    # Each model call saw exactly the turns before it, whichever process ran them.
    calls = llm_stub.requests[before:]
    assert len(calls) == len(texts)
    for call in calls:
        seen = _seen(call.json)
        assert seen[-1][0] == "user"
        assert seen == stored[: len(seen)]


def test_a_turn_waiting_past_the_busy_wait_gets_409_agent_busy(
    cluster: Cluster, llm_stub: LLMStubServer
) -> None:
    agent_id, _ = _create_agent(cluster.a, "busy")
    impatient = LiveServer(**{**cluster.env, "GATHERING_AGENT_BUSY_WAIT": "0.5"})
    try:
        impatient.wait_ready()

        async def scenario() -> tuple[httpx.Response, httpx.Response]:
            async with httpx.AsyncClient(timeout=60) as client:
                cluster.gate.close()
                try:
                    first = asyncio.create_task(
                        client.post(
                            f"{cluster.a.base}/agents/{agent_id}/chat",
                            json={"message": "slow one"},
                        )
                    )
                    # A's turn holds the agent while its model call waits at the gate.
                    assert await asyncio.to_thread(cluster.gate.wait_held, 1, 30)
                    refused = await client.post(
                        f"{impatient.base}/agents/{agent_id}/chat", json={"message": "too soon"}
                    )
                finally:
                    cluster.gate.open()
                return await first, refused

        first, refused = asyncio.run(scenario())
    finally:
        impatient.stop()

    assert first.status_code == 200, first.text
    assert first.json()["reply"] == "Echo: slow one"
    assert refused.status_code == 409, refused.text
    assert refused.json()["code"] == "agent_busy"
    assert float(refused.headers["Retry-After"]) > 0
    # The refused message left no trace; the agent is free again for anyone.
    assert _history(cluster.b, agent_id) == _exchange("slow one")
    assert _chat(cluster.b, agent_id, "now")["reply"] == "Echo: now"
    assert _history(cluster.a, agent_id) == [*_exchange("slow one"), *_exchange("now")]


def test_a_new_session_opened_on_one_server_is_used_by_the_other(
    cluster: Cluster, llm_stub: LLMStubServer
) -> None:
    agent_id, _ = _create_agent(cluster.a, "session")
    _chat(cluster.a, agent_id, "old one")
    first = _chat(cluster.b, agent_id, "old two")  # B now holds a window of the old session
    fresh = _chat(cluster.a, agent_id, "fresh start", new_session=True)
    assert fresh["session_id"] != first["session_id"]

    before = len(llm_stub.requests)
    after = _chat(cluster.b, agent_id, "after the switch")
    assert after["session_id"] == fresh["session_id"]
    calls = llm_stub.requests[before:]
    assert len(calls) == 1
    assert _seen(calls[0].json) == [*_exchange("fresh start"), ("user", "after the switch")]

    new = [*_exchange("fresh start"), *_exchange("after the switch")]
    assert _history(cluster.b, agent_id) == new
    assert _history(cluster.a, agent_id) == new
    rows = _stored(cluster, agent_id)
    sessions = list(dict.fromkeys(session for session, *_ in rows))
    assert sessions == [first["session_id"], fresh["session_id"]]
    by_session = {s: [(r, c) for sid, _, r, c in rows if sid == s] for s in sessions}
    assert by_session[first["session_id"]] == [*_exchange("old one"), *_exchange("old two")]
    assert by_session[fresh["session_id"]] == new
