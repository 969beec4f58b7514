"""Budgets over HTTP in multi-user mode: admins set, change and remove them (every change
audited), members may not (nor may an admin's API key without `budgets:write`), a user sees
only their own user budget; a chat that a budget cannot take answers 402 `budget_exceeded`
with the budget, its period and reset time. The model is the wire stub."""

from __future__ import annotations

from task_api import (
    api_key,
    login,
    make_agent,
    multi_fixture,  # noqa: F401 - the fixture "multi"
    stub_fixture,  # noqa: F401 - the fixture "stub"
)


async def me(client, headers) -> int:
    return int((await client.get("/auth/me", headers=headers)).json()["id"])


async def audit(app, event: str) -> list[dict]:
    db = await app.state.gathering.database()
    return await db.fetch_all(
        "SELECT actor_id, target_id, details FROM auth.audit_log WHERE event = $1 ORDER BY id",
        event,
    )


async def test_admins_manage_budgets_and_every_change_is_audited(multi) -> None:
    app, client = multi
    admin = await login(app, client, "admin")
    member = await login(app, client)
    member_id = await me(client, member)
    body = {"scope": "user", "target_id": member_id, "period": "month", "limit_usd": 5}

    refused = await client.put("/budgets", json=body, headers=member)
    assert refused.status_code == 403
    made = await client.put("/budgets", json=body, headers=admin)
    assert made.status_code == 200, made.text
    budget = made.json()
    assert budget["limit_usd"] == 5 and budget["warn_percent"] == 80
    assert budget["spent_usd"] == 0 and budget["resets_at"] is not None

    changed = await client.put("/budgets", json={**body, "limit_usd": 9}, headers=admin)
    assert changed.json()["id"] == budget["id"] and changed.json()["limit_usd"] == 9
    other = {"scope": "agent", "target_id": 99, "period": "total", "limit_tokens": 1000}
    agent_budget = (await client.put("/budgets", json=other, headers=admin)).json()
    assert agent_budget["resets_at"] is None and agent_budget["period_start"] is None

    # a member sees their own user budget, not the others; an admin sees every one
    seen = (await client.get("/budgets", headers=member)).json()
    assert [b["id"] for b in seen] == [budget["id"]]
    assert (await client.get(f"/budgets/{agent_budget['id']}", headers=member)).status_code == 404
    assert len((await client.get("/budgets", headers=admin)).json()) == 2
    filtered = await client.get("/budgets", params={"scope": "agent"}, headers=admin)
    assert [b["id"] for b in filtered.json()] == [agent_budget["id"]]

    assert (await client.delete(f"/budgets/{budget['id']}", headers=member)).status_code == 403
    assert (await client.delete(f"/budgets/{budget['id']}", headers=admin)).status_code == 204
    assert (await client.delete(f"/budgets/{budget['id']}", headers=admin)).status_code == 404

    admin_id = await me(client, admin)
    set_entries = await audit(app, "budget.set")
    assert [(e["actor_id"], e["details"]["created"]) for e in set_entries] == [
        (admin_id, True),
        (admin_id, False),
        (admin_id, True),
    ]
    assert set_entries[1]["details"]["limit_usd"] == 9
    removed = await audit(app, "budget.removed")
    assert [(e["actor_id"], e["target_id"]) for e in removed] == [(admin_id, str(budget["id"]))]


async def test_bad_budgets_are_refused(multi) -> None:
    app, client = multi
    admin = await login(app, client, "admin")
    for body in (
        {"scope": "user", "target_id": 1, "period": "month"},  # no limit
        {"scope": "team", "target_id": 1, "period": "month", "limit_usd": 1},
        {"scope": "user", "target_id": 1, "period": "week", "limit_usd": 1},
        {"scope": "user", "target_id": 1, "period": "day", "limit_usd": -1},
        {"scope": "user", "target_id": 1, "period": "day", "limit_tokens": 5, "warn_percent": 0},
    ):
        answer = await client.put("/budgets", json=body, headers=admin)
        assert answer.status_code == 422, body


async def test_budget_writes_need_the_budgets_write_scope(multi) -> None:
    app, client = multi
    admin = await login(app, client, "admin")
    # An admin's key acts as an admin only with the `admin` scope (see auth/principal.py).
    reader = await api_key(client, admin, "admin", "usage:read")
    writer = await api_key(client, admin, "admin", "budgets:write")
    body = {"scope": "agent", "target_id": 5, "period": "day", "limit_tokens": 10}
    assert (await client.put("/budgets", json=body, headers=reader)).status_code == 403
    assert (await client.put("/budgets", json=body, headers=writer)).status_code == 200
    assert (await client.get("/budgets", headers=reader)).status_code == 200


async def test_a_chat_over_budget_answers_402(multi) -> None:
    app, client = multi
    admin = await login(app, client, "admin")
    member = await login(app, client)
    agent = await make_agent(client, "Thrifty", headers=member, provider=("openai", "gpt-4o"))
    body = {"scope": "agent", "target_id": agent, "period": "day", "limit_tokens": 50}
    assert (await client.put("/budgets", json=body, headers=admin)).status_code == 200
    answer = await client.post(f"/agents/{agent}/chat", json={"message": "hi"}, headers=member)
    assert answer.status_code == 402, answer.text
    problem = answer.json()
    assert problem["code"] == "budget_exceeded"
    assert problem["details"]["scope"] == "agent" and problem["details"]["period"] == "day"
    assert problem["details"]["resets_at"]
    assert "budgets set" in problem["hint"]
    db = await app.state.gathering.database()
    assert await db.fetch_val("SELECT count(*) FROM usage.ledger") == 0
