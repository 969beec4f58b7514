"""`GET /usage` and `GET /usage/summary` over HTTP in multi-user mode: sums per period and
group with filters, the CSV export, each user seeing only their own usage (admins: everyone's),
the `usage:read` scope; and /metrics exporting spending from the ledger, the same from a fresh
app (a restarted or another instance). Models are the wire stub."""

from __future__ import annotations

import csv
import io
from typing import Any

import httpx
from fastapi import FastAPI
from task_api import (
    api_key,
    client_for,
    login,
    make_agent,
    multi_fixture,  # noqa: F401 - the fixture "multi"
    multi_user_app,
    stub_fixture,  # noqa: F401 - the fixture "stub"
)

GPT = ("openai", "gpt-4o")


async def chat(client: httpx.AsyncClient, agent: int, headers: dict[str, str], text: str) -> None:
    answer = await client.post(f"/agents/{agent}/chat", json={"message": text}, headers=headers)
    assert answer.status_code == 200, answer.text


async def two_users(
    app: FastAPI, client: httpx.AsyncClient
) -> tuple[dict[str, str], int, dict[str, str], int]:
    ada = await login(app, client)
    bob = await login(app, client)
    ada_agent = await make_agent(client, "AdaBot", headers=ada, provider=GPT)
    bob_agent = await make_agent(client, "BobBot", headers=bob, provider=GPT)
    await chat(client, ada_agent, ada, "first question")
    await chat(client, ada_agent, ada, "second question")
    await chat(client, bob_agent, bob, "bob asks")
    return ada, ada_agent, bob, bob_agent


def keys(body: dict[str, Any]) -> dict[str | None, dict[str, Any]]:
    return {row["key"]: row for row in body["rows"]}


async def test_users_see_their_own_usage_and_admins_everyones(multi) -> None:
    app, client = multi
    ada, ada_agent, _bob, bob_agent = await two_users(app, client)
    admin = await login(app, client, "admin")

    mine = await client.get("/usage", params={"by": "agent", "period": "day"}, headers=ada)
    assert mine.status_code == 200, mine.text
    rows = keys(mine.json())
    assert set(rows) == {str(ada_agent)}
    assert rows[str(ada_agent)]["calls"] == 2
    assert rows[str(ada_agent)]["input_tokens"] > 0 and rows[str(ada_agent)]["cost_usd"] > 0

    refused = await client.get("/usage", params={"user": 10**6}, headers=ada)
    assert refused.status_code == 403 and refused.json()["code"] == "permission_denied"

    every = keys((await client.get("/usage", params={"by": "agent"}, headers=admin)).json())
    assert set(every) == {str(ada_agent), str(bob_agent)}
    by_model = keys((await client.get("/usage", params={"by": "model"}, headers=admin)).json())
    assert by_model["gpt-4o"]["calls"] == 3
    bob_only = (
        await client.get("/usage", params={"by": "user", "agent": bob_agent}, headers=admin)
    ).json()
    assert [row["calls"] for row in bob_only["rows"]] == [1]
    none = await client.get("/usage", params={"provider": "anthropic"}, headers=admin)
    assert none.json()["rows"] == []
    months = (
        await client.get("/usage", params={"by": "kind", "period": "month"}, headers=admin)
    ).json()
    assert [row["key"] for row in months["rows"]] == ["model"]
    bad = await client.get("/usage", params={"by": "colour"}, headers=admin)
    assert bad.status_code == 422


async def test_usage_exports_as_csv(multi) -> None:
    app, client = multi
    ada, ada_agent, _bob, _ = await two_users(app, client)
    exported = await client.get("/usage", params={"format": "csv", "by": "agent"}, headers=ada)
    assert exported.status_code == 200
    assert exported.headers["content-type"].startswith("text/csv")
    table = list(csv.DictReader(io.StringIO(exported.text)))
    assert [(row["key"], row["calls"]) for row in table] == [(str(ada_agent), "2")]
    accepted = await client.get("/usage", headers={**ada, "Accept": "text/csv"})
    assert accepted.text.splitlines()[0].startswith("period_start,key,calls")


async def test_the_summary_has_today_this_month_and_the_top(multi) -> None:
    app, client = multi
    ada, ada_agent, _bob, bob_agent = await two_users(app, client)
    admin = await login(app, client, "admin")
    mine = (await client.get("/usage/summary", headers=ada)).json()
    assert mine["today"]["model_calls"] == 2 and mine["month"]["model_calls"] == 2
    assert [row["key"] for row in mine["top_agents"]] == [str(ada_agent)]
    assert mine["top_models"][0]["key"] == "gpt-4o"
    everyone = (await client.get("/usage/summary", headers=admin)).json()
    assert everyone["today"]["model_calls"] == 3
    assert {row["key"] for row in everyone["top_agents"]} == {str(ada_agent), str(bob_agent)}


async def test_api_keys_need_usage_read(multi) -> None:
    app, client = multi
    member = await login(app, client)
    reader = await api_key(client, member, "usage:read")
    other = await api_key(client, member, "agents:read")
    for path in ("/usage", "/usage/summary"):
        assert (await client.get(path, headers=reader)).status_code == 200, path
        assert (await client.get(path, headers=other)).status_code == 403, path


def metric(text: str, name: str, **labels: str) -> float:
    wanted = [f'{k}="{v}"' for k, v in labels.items()]
    for line in text.splitlines():
        if line.startswith(name + "{") and all(label in line for label in wanted):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"no {name} {labels} in the metrics")


async def test_metrics_export_spending_from_the_ledger(multi, migrated_database_url) -> None:
    app, client = multi
    await two_users(app, client)
    admin = await login(app, client, "admin")
    db = await app.state.gathering.database()
    spent = await db.fetch_val("SELECT sum(cost_usd) FROM usage.ledger WHERE model = 'gpt-4o'")
    tokens = await db.fetch_val("SELECT sum(output_tokens) FROM usage.ledger")
    text = (await client.get("/metrics", headers=admin)).text
    labels = {"kind": "model", "provider": "openai", "model": "gpt-4o"}
    assert metric(text, "gathering_llm_cost_usd_total", **labels) == spent > 0
    assert metric(text, "gathering_usage_calls_total", **labels) == 3
    assert metric(text, "gathering_usage_tokens_total", **labels, direction="output") == tokens

    # Another instance (or this one restarted) exports the same: it reads the same ledger.
    other = multi_user_app(migrated_database_url)
    try:
        async with client_for(other) as fresh:
            again = await login(other, fresh, "admin")
            text = (await fresh.get("/metrics", headers=again)).text
        assert metric(text, "gathering_llm_cost_usd_total", **labels) == spent
    finally:
        await other.state.gathering.close()
