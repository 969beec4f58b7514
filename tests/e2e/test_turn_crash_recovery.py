"""A process killed (SIGKILL) in the middle of a turn, and the next turn of the same agent in
another process, against a wire-faked Anthropic or OpenAI that rejects a tool call left without
its result exactly as the real APIs do (HTTP 400 invalid_request_error)."""

from __future__ import annotations

import asyncio
import os
import secrets
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from gathering.agents import Agent, PostgresAgentStore
from gathering.db import Database
from gathering.llm import ToolSpec
from gathering.testing import LLMStubServer, RequestGate
from gathering.tools.function import FunctionTool

pytestmark = pytest.mark.slow

SCRIPT = Path(__file__).parents[1] / "_support" / "conversation_crash_script.py"
PROVIDERS = ["anthropic", "openai"]
INTERRUPTED_TEXT = "interrupted: the outcome is unknown"


def _not_slow() -> str:
    return "quick"


# The next process knows the tool too (a real API wants the tools of the calls it is shown).
SLOW = FunctionTool(ToolSpec("slow", "Takes a while."), _not_slow)


def _start_script(
    db: Database, provider: str, name: str, message: str, marker: Path, **provider_env: str
) -> subprocess.Popen[str]:
    env = {
        **os.environ,
        **provider_env,
        "CONVERSATION_DATABASE_URL": db.url,
        "CONVERSATION_AGENT": name,
        "CONVERSATION_PROVIDER": provider,
        "CONVERSATION_MESSAGE": message,
        "CONVERSATION_MARKER": str(marker),
    }
    return subprocess.Popen(
        [sys.executable, str(SCRIPT)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


async def _wait_until(ready: Any, process: subprocess.Popen[str], what: str) -> None:
    """Poll `ready()` until true; fail if the process exits first (or after 60 s)."""
    for _ in range(600):
        if await asyncio.to_thread(ready):
            return
        if process.poll() is not None:
            pytest.fail(f"the script exited before {what}:\n{process.communicate()[0]}")
        await asyncio.sleep(0.1)
    process.kill()
    pytest.fail(f"the script never reached {what}:\n{process.communicate()[0]}")


def _kill(process: subprocess.Popen[str]) -> None:
    os.kill(process.pid, signal.SIGKILL)
    process.wait(timeout=30)
    assert process.returncode == -signal.SIGKILL


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(
            b.get("text", "") for b in content if isinstance(b, dict) and b.get("type") == "text"
        )
    return ""


def _tool_results(provider: str, body: dict[str, Any]) -> dict[str, str]:
    """The tool results a request carries: call id -> text."""
    found = {}
    for message in body["messages"]:
        if provider == "openai" and message.get("role") == "tool":
            found[message["tool_call_id"]] = _text(message.get("content"))
        elif provider == "anthropic" and isinstance(message.get("content"), list):
            for block in message["content"]:
                if block.get("type") == "tool_result":
                    found[block["tool_use_id"]] = _text(block.get("content"))
    return found


def _user_texts(body: dict[str, Any]) -> list[str]:
    return [
        _text(m.get("content"))
        for m in body["messages"]
        if m.get("role") == "user" and _text(m.get("content"))
    ]


async def _turns(db: Database, agent_id: int) -> list[dict[str, Any]]:
    return await db.fetch_all(
        "SELECT id::text AS id, status, error FROM agent.turns WHERE agent_id = $1"
        " ORDER BY started_at, id",
        agent_id,
    )


async def _continue(db: Database, stub: LLMStubServer, name: str) -> tuple[Agent, Any, list[Any]]:
    """The next turn, in this process, against the strict stub."""
    before = len(stub.requests)
    agent = await Agent.load(name, store=PostgresAgentStore(db), tools=[SLOW])
    result = await agent.run("are you there?")
    return agent, result, stub.requests[before:]


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_killed_during_a_tool_the_next_turn_answers_the_call_as_interrupted(
    db: Database, llm_stub_env: LLMStubServer, provider: str, tmp_path: Path
) -> None:
    name = f"crash-tool-{provider}-{secrets.token_hex(3)}"
    marker = tmp_path / "slow-started"
    process = await asyncio.to_thread(_start_script, db, provider, name, "CALL slow {}", marker)
    try:
        await _wait_until(marker.exists, process, "the slow tool")
    finally:
        await asyncio.to_thread(_kill, process)

    agent, result, requests = await _continue(db, llm_stub_env, name)

    assert result.outcome == "completed"
    assert result.text == "Echo: are you there?"
    assert agent.id is not None
    turns = await _turns(db, agent.id)
    assert [t["status"] for t in turns] == ["interrupted", "completed"]
    killed = turns[0]
    assert killed["error"]["code"] == "interrupted"
    calls = await db.fetch_all(
        "SELECT call_id, name, status FROM agent.tool_calls WHERE turn_id = $1::uuid", killed["id"]
    )
    assert [(c["name"], c["status"]) for c in calls] == [("slow", "interrupted")]
    call_id = calls[0]["call_id"]

    # One model call, accepted by the strict stub, answering the dead call as interrupted.
    assert len(requests) == 1
    body = requests[0].json
    results = _tool_results(provider, body)
    assert list(results) == [call_id]
    assert INTERRUPTED_TEXT in results[call_id]
    assert _user_texts(body)[-1] == "are you there?"

    # Stored: the killed turn's user message and tool request, then the new exchange. The
    # interrupted result is made up for the model, not stored.
    rows = await db.fetch_all(
        "SELECT m.seq, m.role, m.content, m.turn_id::text AS turn_id FROM agent.messages m"
        " JOIN agent.sessions s ON s.id = m.session_id WHERE s.agent_id = $1 ORDER BY m.seq",
        agent.id,
    )
    assert [r["seq"] for r in rows] == list(range(1, len(rows) + 1))
    assert [r["role"] for r in rows] == ["user", "assistant", "user", "assistant"]
    assert [r["turn_id"] for r in rows[:2]] == [killed["id"]] * 2
    assert rows[2]["content"] == "are you there?"

    # And the conversation goes on from there: a tool call now completes normally.
    before = len(llm_stub_env.requests)
    again = await agent.run("CALL slow {}")
    assert again.outcome == "completed"
    assert [c.name for c in again.tool_calls] == ["slow"]
    assert len(llm_stub_env.requests) - before == 2


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_killed_during_the_model_call_the_next_turn_goes_on(
    db: Database, llm_stub_env: LLMStubServer, provider: str, tmp_path: Path
) -> None:
    name = f"crash-model-{provider}-{secrets.token_hex(3)}"
    gate = RequestGate(llm_stub_env.url).start()
    gate.close()  # the model call of the script waits here until it is killed
    try:
        process = await asyncio.to_thread(
            _start_script,
            db,
            provider,
            name,
            "hello before the crash",
            tmp_path / "unused",
            **gate.environment(),
        )
        try:
            await _wait_until(lambda: gate.wait_held(1, timeout=0.1), process, "the model call")
        finally:
            await asyncio.to_thread(_kill, process)
    finally:
        await asyncio.to_thread(gate.stop)  # the held call is dropped, never forwarded

    agent, result, requests = await _continue(db, llm_stub_env, name)

    assert result.outcome == "completed"
    assert agent.id is not None
    turns = await _turns(db, agent.id)
    assert [t["status"] for t in turns] == ["interrupted", "completed"]
    assert (
        await db.fetch_all(
            "SELECT call_id FROM agent.tool_calls WHERE turn_id = $1::uuid", turns[0]["id"]
        )
        == []
    )
    rows = await db.fetch_all(
        "SELECT m.seq, m.role, m.content, m.turn_id::text AS turn_id FROM agent.messages m"
        " JOIN agent.sessions s ON s.id = m.session_id WHERE s.agent_id = $1 ORDER BY m.seq",
        agent.id,
    )
    assert [(r["seq"], r["role"], r["content"]) for r in rows] == [
        (1, "user", "hello before the crash"),
        (2, "user", "are you there?"),
        (3, "assistant", result.text),
    ]
    assert rows[0]["turn_id"] == turns[0]["id"]

    # One model call, accepted by the strict stub, that shows the dangling message before the
    # new one: OpenAI as two user messages, Anthropic (which wants roles to alternate) as one
    # user message of two text blocks. The reply answers what the model saw last.
    assert len(requests) == 1
    body = requests[0].json
    users = [m for m in body["messages"] if m.get("role") == "user"]
    if provider == "openai":
        assert [_text(m["content"]) for m in users] == ["hello before the crash", "are you there?"]
    else:
        assert [[b["text"] for b in m["content"]] for m in users] == [
            ["hello before the crash", "are you there?"]
        ]
    assert result.text == f"Echo: {_user_texts(body)[-1]}"
    assert _tool_results(provider, body) == {}
