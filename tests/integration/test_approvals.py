"""Policies and durable approvals: an `ask` call leaves its turn waiting (no lock, no process),
a person answers from any instance, and the turn goes on exactly once; `deny` refuses; a
direct invocation waits the same way and keeps its outcome."""

from __future__ import annotations

import asyncio
import json
import secrets

import httpx
import pytest
from workspaces import workspace_of

from gathering.agents.approval_resumer import ApprovalResumer
from gathering.api.app import create_app
from gathering.api.security.spending import TurnAdmission
from gathering.auth.users import UserStore
from gathering.config import load_settings
from gathering.db import Database
from gathering.tools import function_tool
from gathering.tools import registry as registry_module
from gathering.tools.approvals import decide

PASSWORD = "correct horse battery staple"
SENT: list[str] = []


def notify(channel: str, text: str) -> str:
    """Post a message to a channel (a test stand-in for a webhook)."""
    SENT.append(f"{channel}:{text}")
    return f"posted to {channel}"


@pytest.fixture(autouse=True)
def external_tool():
    SENT.clear()
    tool = registry_module.registry.register(function_tool(notify, effect="external"))
    yield tool
    registry_module.registry.unregister(tool.name)


def client_for(app) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test")


@pytest.fixture
async def app(app_for, llm_stub_env):
    return app_for()


@pytest.fixture
async def api(app):
    async with client_for(app) as client:
        yield client


async def eventually(check, seconds: float = 20.0):
    """`check()`'s first truthy value, looking every 20 ms (bounded)."""
    for _ in range(int(seconds / 0.02)):
        value = await check()
        if value:
            return value
        await asyncio.sleep(0.02)
    raise AssertionError("the condition never held")


async def _agent(api, *tools: str, **policies: str) -> int:
    made = await api.post(
        "/agents", json={"name": f"A{secrets.token_hex(3)}", "provider": "openai"}
    )
    agent_id = made.json()["id"]
    for name in tools:
        body = {"enabled": True} | ({"policy": policies[name]} if name in policies else {})
        response = await api.put(f"/agents/{agent_id}/tools/{name}", json=body)
        assert response.status_code == 200, response.text
    return agent_id


def call(tool: str, **arguments) -> dict[str, str]:
    return {"message": f"CALL {tool} {json.dumps(arguments)}"}


async def _history(api, agent_id: int) -> list[dict]:
    return (await api.get(f"/agents/{agent_id}/history")).json()


async def _finished(api, agent_id: int) -> list[dict] | None:
    """The history once the last turn has its final reply (an assistant message after the
    last tool results)."""
    history = await _history(api, agent_id)
    last = history[-1] if history else None
    if last and last["role"] == "assistant" and not last["tool_calls"]:
        return history
    return None


# --- policies ---------------------------------------------------------------------------------


async def test_defaults_are_ask_for_external_tools_and_allow_for_the_rest(api):
    agent_id = await _agent(api, "notify", "write_file")
    tools = {t["name"]: t for t in (await api.get(f"/agents/{agent_id}/tools")).json()}
    assert (tools["notify"]["policy"], tools["notify"]["policy_set"]) == ("ask", None)
    assert tools["write_file"]["policy"] == "allow"
    changed = await api.put(f"/agents/{agent_id}/tools/notify", json={"policy": "allow"})
    assert changed.json()["policy"] == "allow" and changed.json()["enabled"] is True
    reset = await api.put(f"/agents/{agent_id}/tools/notify", json={"policy": None})
    assert reset.json()["policy"] == "ask" and reset.json()["policy_set"] is None


@pytest.mark.parametrize(
    "body", [{}, {"policy": "maybe"}, {"enabled": None}, {"policy": "allow", "x": 1}]
)
async def test_bad_settings_are_refused(api, body):
    agent_id = await _agent(api)
    response = await api.put(f"/agents/{agent_id}/tools/notify", json=body)
    assert response.status_code == 422, response.text


async def test_deny_refuses_the_call_and_the_model_is_told(api):
    agent_id = await _agent(api, "notify", notify="deny")
    reply = await api.post(
        f"/agents/{agent_id}/chat", json=call("notify", channel="ops", text="hi")
    )
    assert reply.json()["outcome"] == "completed"
    assert SENT == []
    results = [r for m in await _history(api, agent_id) for r in m["tool_results"]]
    assert "denied for this agent by its policy" in results[-1]["content"]


# --- a turn that waits ------------------------------------------------------------------------


async def test_an_ask_call_waits_and_runs_once_approved(api):
    agent_id = await _agent(api, "notify")
    reply = await api.post(
        f"/agents/{agent_id}/chat", json=call("notify", channel="ops", text="up")
    )
    body = reply.json()
    assert reply.status_code == 200 and body["outcome"] == "waiting_approval"
    approval_id = body["approval_id"]
    assert f"approval {approval_id}" in body["reply"]
    assert SENT == []  # nothing ran

    inbox = (await api.get("/approvals", params={"state": "pending"})).json()
    [pending] = [a for a in inbox if a["id"] == approval_id]
    assert pending["tool_name"] == "notify" and pending["arguments"] == {
        "channel": "ops",
        "text": "up",
    }
    assert pending["effect"] == "external" and pending["turn_id"] == body["turn_id"]

    busy = await api.post(f"/agents/{agent_id}/chat", json={"message": "are you there?"})
    assert busy.status_code == 409, busy.text
    assert f"/approvals/{approval_id}/approve" in busy.json()["hint"]

    approved = await api.post(f"/approvals/{approval_id}/approve", json={"comment": "go"})
    assert approved.status_code == 200 and approved.json()["state"] == "approved"
    history = await eventually(lambda: _finished(api, agent_id))
    assert SENT == ["ops:up"]
    results = [r for m in history for r in m["tool_results"]]
    assert results[-1]["content"] == "posted to ops"
    again = await api.post(f"/approvals/{approval_id}/approve")
    assert again.status_code == 409  # the first answer wins
    after = await api.post(f"/agents/{agent_id}/chat", json={"message": "thanks"})
    assert after.status_code == 200 and after.json()["outcome"] == "completed"


async def test_a_denied_call_is_not_run_and_the_model_hears_why(api):
    agent_id = await _agent(api, "notify")
    reply = await api.post(f"/agents/{agent_id}/chat", json=call("notify", channel="ops", text="x"))
    approval_id = reply.json()["approval_id"]
    denied = await api.post(f"/approvals/{approval_id}/deny", json={"comment": "not today"})
    assert denied.json()["state"] == "denied" and denied.json()["comment"] == "not today"
    history = await eventually(lambda: _finished(api, agent_id))
    assert SENT == []
    results = [r for m in history for r in m["tool_results"]]
    assert results[-1]["content"] == "error: not run: a person denied it: not today"


async def test_calls_before_the_waiting_one_keep_their_results(api, llm_stub_env):
    """Two calls in one reply: the first (allowed) runs at once, the second waits; once it
    is approved, the first is not run again and both results reach the model together."""
    agent_id = await _agent(api, "write_file", "notify")
    first = json.dumps({"path": "a.txt", "content": "one"})
    second = json.dumps({"channel": "ops", "text": "two"})
    message = {"message": f"CALL write_file {first}\nCALL notify {second}"}
    reply = await api.post(f"/agents/{agent_id}/chat", json=message)
    assert reply.json()["outcome"] == "waiting_approval"
    written = await workspace_of(api, agent_id) / "a.txt"
    assert await asyncio.to_thread(written.read_text) == "one"
    await asyncio.to_thread(written.write_text, "changed since")
    await api.post(f"/approvals/{reply.json()['approval_id']}/approve")
    history = await eventually(lambda: _finished(api, agent_id))
    assert await asyncio.to_thread(written.read_text) == "changed since"  # not written again
    [outputs] = [m for m in history if len(m["tool_results"]) == 2]
    assert [r["content"] for r in outputs["tool_results"]][1] == "posted to ops"


async def test_an_invalid_call_is_refused_before_anyone_is_asked(api):
    agent_id = await _agent(api, "notify")
    reply = await api.post(f"/agents/{agent_id}/chat", json=call("notify", channel="ops"))
    assert reply.json()["outcome"] == "completed"
    assert (await api.get("/approvals", params={"state": "pending"})).json() == []


async def test_a_replayed_key_of_a_waiting_turn_says_it_waits(api):
    agent_id = await _agent(api, "notify")
    headers = {"Idempotency-Key": "k-1"}
    message = call("notify", channel="ops", text="once")
    first = await api.post(f"/agents/{agent_id}/chat", json=message, headers=headers)
    replay = await api.post(f"/agents/{agent_id}/chat", json=message, headers=headers)
    assert replay.json()["outcome"] == "waiting_approval" and replay.json()["replayed"] is True
    assert replay.json()["approval_id"] == first.json()["approval_id"]
    await api.post(f"/approvals/{first.json()['approval_id']}/approve")
    await eventually(lambda: _finished(api, agent_id))
    done = await api.post(f"/agents/{agent_id}/chat", json=message, headers=headers)
    assert done.json()["outcome"] == "completed" and done.json()["replayed"] is True
    assert SENT == ["ops:once"]


# --- any instance, exactly once ---------------------------------------------------------------


async def test_an_answer_given_elsewhere_is_taken_up_by_the_duty_exactly_once(
    app, api, migrated_database_url
):
    """An answer recorded without resuming (the CLI, or an instance that stopped at once):
    two instances' duties race to take it up, and the call runs once."""
    agent_id = await _agent(api, "notify")
    reply = await api.post(f"/agents/{agent_id}/chat", json=call("notify", channel="ops", text="1"))
    approval_id = reply.json()["approval_id"]
    async with (
        Database(url=migrated_database_url, min_size=1, max_size=4) as one,
        Database(url=migrated_database_url, min_size=1, max_size=4) as two,
    ):
        await decide(one, approval_id, approve=True, by=None, comment="from the CLI")
        first, second = ApprovalResumer(one, None), ApprovalResumer(two, None)
        await asyncio.gather(first.run_once(), second.run_once())
        await asyncio.gather(first.drain(), second.drain())
        assert await ApprovalResumer(one, None).run_once() == 0  # nothing left behind
    await eventually(lambda: _finished(api, agent_id))
    assert SENT == ["ops:1"]


async def test_an_overdue_approval_expires_and_the_turn_goes_on(
    app_for, llm_stub_env, migrated_database_url, settings_env
):
    settings_env(approval_timeout=0.05)
    app = app_for()
    async with client_for(app) as api:
        agent_id = await _agent(api, "notify")
        reply = await api.post(
            f"/agents/{agent_id}/chat", json=call("notify", channel="o", text="late")
        )
        approval_id = reply.json()["approval_id"]
        await asyncio.sleep(0.1)
        late = await api.post(f"/approvals/{approval_id}/approve")
        assert late.status_code == 409 and late.json()["details"]["state"] == "expired"
        async with Database(url=migrated_database_url, min_size=1, max_size=2) as db:
            resumer = ApprovalResumer(db, None)
            await resumer.run_once()
            await resumer.drain()
        history = await eventually(lambda: _finished(api, agent_id))
        assert (await api.get(f"/approvals/{approval_id}")).json()["state"] == "expired"
    results = [r for m in history for r in m["tool_results"]]
    assert results[-1]["content"] == "error: not run: nobody approved it in time"
    assert SENT == []


# --- direct invocations -----------------------------------------------------------------------


async def test_a_direct_invocation_waits_and_keeps_its_outcome(api):
    agent_id = await _agent(api, "notify")
    arguments = {"channel": "ops", "text": "direct"}
    waiting = await api.post(
        "/tools/notify/invoke", json={"agent_id": agent_id, "arguments": arguments}
    )
    assert waiting.status_code == 202
    body = waiting.json()
    assert body["is_error"] and body["error"]["code"] == "approval_required"
    approval_id = body["approval_id"]
    assert SENT == []
    await api.post(f"/approvals/{approval_id}/approve")

    async def outcome():
        return (await api.get(f"/approvals/{approval_id}")).json()["outcome"]

    assert await eventually(outcome) == {"is_error": False, "output": "posted to ops"}
    assert SENT == ["ops:direct"]


# --- who may answer ---------------------------------------------------------------------------


async def test_only_the_agents_owner_or_an_admin_may_see_and_answer(
    migrated_database_url, llm_stub_env
):
    app = create_app(
        settings=load_settings(
            database_url=migrated_database_url, auth="required", secret_key="k" * 64
        )
    )
    users = UserStore(await app.state.gathering.database())

    async def login(role: str) -> dict[str, str]:
        email = f"u-{secrets.token_hex(4)}@example.com"
        await users.create(email, PASSWORD, role=role)
        async with client_for(app) as c:
            tokens = (
                await c.post("/auth/login", json={"email": email, "password": PASSWORD})
            ).json()
        return {"Authorization": f"Bearer {tokens['access_token']}"}

    alice, bob, viewer, admin = (
        await login("member"),
        await login("member"),
        await login("viewer"),
        await login("admin"),
    )
    async with client_for(app) as api:
        made = await api.post("/agents", json={"name": "Ops", "provider": "openai"}, headers=alice)
        agent_id = made.json()["id"]
        await api.put(f"/agents/{agent_id}/tools/notify", json={"enabled": True}, headers=alice)
        reply = await api.post(
            f"/agents/{agent_id}/chat", json=call("notify", channel="c", text="t"), headers=alice
        )
        approval_id = reply.json()["approval_id"]
        assert (await api.get(f"/approvals/{approval_id}", headers=bob)).status_code == 404
        assert (await api.get("/approvals", headers=bob)).json() == []
        assert (await api.post(f"/approvals/{approval_id}/approve", headers=bob)).status_code == 404
        assert (
            await api.post(f"/approvals/{approval_id}/approve", headers=viewer)
        ).status_code in (403, 404)
        assert (await api.post(f"/approvals/{approval_id}/approve")).status_code == 401
        assert [a["id"] for a in (await api.get("/approvals", headers=admin)).json()] == [
            approval_id
        ]
        answered = await api.post(f"/approvals/{approval_id}/deny", headers=alice)
        assert answered.status_code == 200
        assert answered.json()["decided_by"] is not None
        await eventually(lambda: _finished_as(api, agent_id, alice))
    await app.state.gathering.close()


async def _finished_as(api, agent_id: int, headers: dict[str, str]):
    history = (await api.get(f"/agents/{agent_id}/history", headers=headers)).json()
    last = history[-1] if history else None
    return last and last["role"] == "assistant" and not last["tool_calls"]


# --- what changes between the question and the answer (found by review) ---------------------


async def test_an_approved_invocation_of_a_tool_disabled_since_is_not_run(api):
    agent_id = await _agent(api, "notify")
    body = {"agent_id": agent_id, "arguments": {"channel": "ops", "text": "x"}}
    approval_id = (await api.post("/tools/notify/invoke", json=body)).json()["approval_id"]
    await api.put(f"/agents/{agent_id}/tools/notify", json={"policy": "deny"})
    await api.post(f"/approvals/{approval_id}/approve")

    async def outcome():
        return (await api.get(f"/approvals/{approval_id}")).json()["outcome"]

    ended = await eventually(outcome)
    assert ended["is_error"] and ended["error"]["code"] == "tool_denied"
    assert SENT == []


async def test_an_approved_turn_call_denied_since_is_not_run(api):
    agent_id = await _agent(api, "notify")
    reply = await api.post(f"/agents/{agent_id}/chat", json=call("notify", channel="o", text="t"))
    await api.put(f"/agents/{agent_id}/tools/notify", json={"policy": "deny"})
    await api.post(f"/approvals/{reply.json()['approval_id']}/approve")
    history = await eventually(lambda: _finished(api, agent_id))
    results = [r for m in history for r in m["tool_results"]]
    assert "disabled or denied for this agent after it was approved" in results[-1]["content"]
    assert SENT == []


async def test_a_nul_in_the_arguments_of_an_ask_call_is_stored(api):
    agent_id = await _agent(api, "notify")
    reply = await api.post(
        f"/agents/{agent_id}/chat", json=call("notify", channel="a\u0000b", text="t")
    )
    assert reply.status_code == 200 and reply.json()["outcome"] == "waiting_approval"
    pending = (await api.get(f"/approvals/{reply.json()['approval_id']}")).json()
    assert pending["arguments"]["channel"] == "a\ufffdb"


async def test_a_turn_that_dies_before_it_waits_leaves_no_approval_to_answer(
    api, migrated_database_url
):
    """Stored as asked but the process died before the turn was stored as waiting: the next
    turn closes it as interrupted, and its approval expires (nobody can answer it)."""
    agent_id = await _agent(api, "notify")
    reply = await api.post(f"/agents/{agent_id}/chat", json=call("notify", channel="o", text="t"))
    approval_id, turn_id = reply.json()["approval_id"], reply.json()["turn_id"]
    async with Database(url=migrated_database_url, min_size=1, max_size=1) as db:
        await db.execute("UPDATE agent.turns SET status = 'running' WHERE id = $1::uuid", turn_id)
    assert (await api.post(f"/agents/{agent_id}/chat", json={"message": "hi"})).status_code == 200
    answered = await api.post(f"/approvals/{approval_id}/approve")
    assert answered.status_code == 409 and answered.json()["details"]["state"] == "expired"
    assert SENT == []


async def test_the_duty_closes_a_resumed_turn_whose_process_died(api, migrated_database_url):
    """Taken up (resumed_at set, the turn running again) by a process that then died: the
    duty finds the agent's lock free and closes the turn as interrupted; the call that was
    about to run is `interrupted`, never run again."""
    agent_id = await _agent(api, "notify")
    reply = await api.post(f"/agents/{agent_id}/chat", json=call("notify", channel="o", text="t"))
    approval_id, turn_id = reply.json()["approval_id"], reply.json()["turn_id"]
    async with Database(url=migrated_database_url, min_size=1, max_size=2) as db:
        await decide(db, approval_id, approve=True, by=None)
        await db.execute("UPDATE agent.turns SET status = 'running' WHERE id = $1::uuid", turn_id)
        await db.execute(
            "UPDATE agent.tool_calls SET status = 'started' WHERE turn_id = $1::uuid", turn_id
        )
        await db.execute("UPDATE tool.approvals SET resumed_at = now() WHERE id = $1", approval_id)
        resumer = ApprovalResumer(db, None)
        await resumer.run_once()
        await resumer.drain()
        turn = await db.fetch_one("SELECT status FROM agent.turns WHERE id = $1::uuid", turn_id)
        calls = await db.fetch_all(
            "SELECT status FROM agent.tool_calls WHERE turn_id = $1::uuid", turn_id
        )
    assert turn["status"] == "interrupted"
    assert [c["status"] for c in calls] == ["interrupted"]
    assert SENT == []


async def test_an_invocation_whose_process_died_has_an_unknown_outcome(
    api, migrated_database_url, settings_env
):
    agent_id = await _agent(api, "notify")
    body = {"agent_id": agent_id, "arguments": {"channel": "ops", "text": "x"}}
    approval_id = (await api.post("/tools/notify/invoke", json=body)).json()["approval_id"]
    settings_env(tool_timeout=0.01)
    async with Database(url=migrated_database_url, min_size=1, max_size=2) as db:
        await decide(db, approval_id, approve=True, by=None)
        await db.execute(
            "UPDATE tool.approvals SET resumed_at = now() - interval '1 hour', "
            'outcome = \'{"state": "running"}\' WHERE id = $1',
            approval_id,
        )
        await ApprovalResumer(db, None).run_once()
    outcome = (await api.get(f"/approvals/{approval_id}")).json()["outcome"]
    assert outcome["is_error"] and outcome["error"]["code"] == "outcome_unknown"
    assert SENT == []  # and nothing ran it again


async def test_a_resumed_turn_counts_toward_its_owner_s_running_turns(api, migrated_database_url):
    """At the per-user cap (GATHERING_CHAT_MAX_CONCURRENT_PER_USER), the duty leaves an
    answered turn for a later round, and takes it up once a slot is free, holding it."""
    agent_id = await _agent(api, "notify")
    reply = await api.post(f"/agents/{agent_id}/chat", json=call("notify", channel="ops", text="2"))
    approval_id = reply.json()["approval_id"]
    admission = TurnAdmission(limit=1)
    async with Database(url=migrated_database_url, min_size=1, max_size=4) as db:
        owner = await db.fetch_val("SELECT owner_id FROM tool.approvals WHERE id = $1", approval_id)
        await decide(db, approval_id, approve=True, by=None, comment="from the CLI")
        resumer = ApprovalResumer(db, None, admit=admission.admit_user)
        with admission.admit_user(owner):  # the owner's one turn is running
            assert await resumer.run_once() == 0
        assert SENT == []
        assert await resumer.run_once() == 1
        assert admission.running(owner) == 1  # held by the resumed turn
        await resumer.drain()
        assert admission.running(owner) == 0
    await eventually(lambda: _finished(api, agent_id))
    assert SENT == ["ops:2"]
