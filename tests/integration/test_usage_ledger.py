"""The usage ledger on a real PostgreSQL: one row per model call (written with the call's
stored result, priced, attributed), per failed call, per tool call and per embedding call;
the reports of `GET /usage` and `GET /usage/summary`, their CSV export and scoping; and the
Prometheus spending read from the ledger. Providers are the wire stub (real payloads)."""

from __future__ import annotations

import asyncio
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from task_runtime import Lab, add_goal, task_lab

from gathering.agents import Agent, PostgresAgentStore
from gathering.agents.long_term_memory import LongTermMemory
from gathering.db import Database
from gathering.errors import DecompositionFailedError, GatheringError
from gathering.llm import OpenAIEmbeddingProvider, tool_call
from gathering.llm.pricing import price_for
from gathering.llm.token_estimate import estimate_tokens
from gathering.llm.types import Usage
from gathering.scheduler.goals import decompose_goal
from gathering.usage import attributed


async def ledger(db: Database) -> list[dict[str, Any]]:
    return await db.fetch_all("SELECT * FROM usage.ledger ORDER BY id")


def lookup(n: int) -> str:
    """Look a number up."""
    return f"number {n} is fine"


@pytest.fixture
def store(db: Database) -> PostgresAgentStore:
    return PostgresAgentStore(db)


async def test_a_model_call_writes_one_priced_attributed_row(db, store, llm_stub_env):
    agent = Agent("Counter", provider="openai", model="gpt-4o", store=store)
    with attributed(circle_id=7, pipeline_id=3, pipeline_run_id=11, task_id=5):
        result = await agent.run("hello there")
    rows = await ledger(db)
    assert len(rows) == 1
    row = rows[0]
    assert row["kind"] == "model" and row["outcome"] == "ok"
    assert (row["provider"], row["model"]) == ("openai", "gpt-4o")
    assert row["agent_id"] == agent.id and row["user_id"] == agent.owner_id
    assert (row["circle_id"], row["pipeline_id"], row["pipeline_run_id"], row["task_id"]) == (
        7,
        3,
        11,
        5,
    )
    assert row["input_tokens"] == result.usage.input_tokens > 0
    assert row["output_tokens"] == result.usage.output_tokens > 0
    price = price_for("openai", "gpt-4o")
    assert price is not None
    assert row["cost_usd"] == pytest.approx(
        price.cost(Usage(row["input_tokens"], row["output_tokens"]))
    )
    assert row["latency_ms"] is not None
    # the row and the reply were stored together
    stored = await db.fetch_val(
        "SELECT count(*) FROM agent.messages WHERE role = 'assistant' AND model = 'gpt-4o'"
    )
    assert stored == 1


async def test_each_model_call_and_tool_call_of_a_turn_is_a_row(db, store, llm_stub_env):
    agent = Agent("Looker", provider="openai", model="gpt-4o", store=store, tools=[lookup])
    llm_stub_env.add_reply(tool_call("lookup", {"n": 4}), "all done")
    result = await agent.run("look up 4")
    assert result.text == "all done"
    rows = await ledger(db)
    kinds = [(r["kind"], r["model"], r["outcome"]) for r in rows]
    assert kinds == [("model", "gpt-4o", "ok"), ("tool", "lookup", "ok"), ("model", "gpt-4o", "ok")]
    tool = rows[1]
    assert tool["agent_id"] == agent.id and tool["calls"] == 1 and tool["latency_ms"] >= 0
    assert tool["cost_usd"] is None and tool["input_tokens"] == 0
    assert sum(r["input_tokens"] for r in rows) == result.usage.input_tokens


async def test_a_failed_model_call_is_a_row_with_its_error(db, store, llm_stub_env):
    agent = Agent("Failing", provider="openai", model="gpt-4o", store=store)
    await agent.ensure_saved()
    llm_stub_env.add_json(
        {"error": {"message": "bad key", "type": "invalid_request_error"}}, status=401
    )
    with pytest.raises(GatheringError) as raised:
        await agent.run("hello")
    rows = await ledger(db)
    assert len(rows) == 1
    assert rows[0]["outcome"] == raised.value.code != "ok"
    assert rows[0]["input_tokens"] == rows[0]["output_tokens"] == 0
    assert rows[0]["cost_usd"] == 0 and rows[0]["agent_id"] == agent.id


class EmbeddingsWire:
    """A local server answering `POST /v1/embeddings` as OpenAI does (fixed small vectors)."""

    def __init__(self) -> None:
        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: object) -> None:
                return

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["content-length"])))
                data = [
                    {"object": "embedding", "index": i, "embedding": [1.0, float(i + 1)]}
                    for i, _ in enumerate(body["input"])
                ]
                payload = json.dumps(
                    {
                        "object": "list",
                        "data": data,
                        "model": body["model"],
                        "usage": {"prompt_tokens": 5, "total_tokens": 5},
                    }
                ).encode()
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def base_url(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}/v1"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


async def test_embedding_calls_are_rows_with_their_tokens(db, store):
    wire = EmbeddingsWire()
    try:
        agent = Agent("Rememberer", provider="ollama", model="llama3.2", store=store)
        await agent.ensure_saved()
        embedder = OpenAIEmbeddingProvider(api_key="sk-test", base_url=wire.base_url)
        memory = LongTermMemory(db, agent_id=agent.id, embedder=embedder)
        with attributed(user_id=agent.owner_id, agent_id=agent.id):
            await memory.remember("User prefers green tea")
            await memory.recall("what does the user drink?")
    finally:
        await asyncio.to_thread(wire.close)
    rows = await ledger(db)
    assert [(r["kind"], r["provider"], r["model"]) for r in rows] == [
        ("embedding", "openai", "text-embedding-3-small")
    ] * 2
    assert rows[0]["input_tokens"] == estimate_tokens("User prefers green tea")
    assert rows[0]["agent_id"] == agent.id and rows[0]["user_id"] == agent.owner_id
    price = price_for("openai", "text-embedding-3-small")
    assert price is not None
    assert rows[0]["cost_usd"] == pytest.approx(price.cost(Usage(rows[0]["input_tokens"], 0)))


lab = task_lab  # the fixture, by the name the test uses


async def test_a_goal_decomposition_is_a_row_even_when_its_answer_is_unusable(lab: Lab) -> None:
    goal = await add_goal(lab, "Plan the launch", agent="Tasker")
    lab.stub.add_reply("I cannot do that")
    with pytest.raises(DecompositionFailedError):
        await decompose_goal(lab.db, goal.id)
    rows = await ledger(lab.db)
    assert [(r["kind"], r["agent_id"], r["user_id"], r["outcome"]) for r in rows] == [
        ("model", lab.agent_id, lab.owner_id, "ok")
    ]
    assert rows[0]["provider"] == "ollama" and rows[0]["cost_usd"] == 0


async def test_a_decomposition_whose_reply_has_no_usage_is_charged_its_prompt_estimate(
    lab: Lab,
) -> None:
    goal = await add_goal(lab, "Plan the launch", description="in detail " * 200, agent="Tasker")
    lab.stub.add_json(
        {
            "model": "llama3.2",
            "created_at": "2026-01-01T00:00:00Z",
            "done": True,
            "message": {"role": "assistant", "content": "no plan"},
        }
    )  # an Ollama reply without prompt_eval_count / eval_count
    with pytest.raises(DecompositionFailedError):
        await decompose_goal(lab.db, goal.id)
    (row,) = await ledger(lab.db)
    assert row["estimated"] and row["input_tokens"] >= 400, row  # the prompt, estimated
