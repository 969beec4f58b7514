"""The catalog's models: the shipped, dated table merged with admins' overrides (stored in
PostgreSQL); `model_price` and `model_limits` as the usage ledger and the agents' context
budget read them; `/models` over HTTP (anyone signed in reads, admins change, every change
audited); an override of the context window reaches an agent's context budget."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from task_api import client_for

from gathering.auth.accounts import CLI_ACTOR
from gathering.catalog.models import (
    ModelLimits,
    ModelPrice,
    ModelValues,
    list_models,
    model_limits,
    model_price,
    remove_model_override,
    set_model_override,
)
from gathering.db import Database
from gathering.errors import InvalidInputError, NotFoundError

Json = dict[str, Any]


# --- model_price and model_limits -----------------------------------------------------------


async def test_shipped_prices_answer_with_cached_input_and_dated_snapshots(db: Database) -> None:
    price = await model_price(db, "anthropic", "claude-sonnet-4-5")
    assert price == ModelPrice(3.0, 15.0, 0.30)
    assert await model_price(db, "openai", "gpt-4o-2024-08-06") == ModelPrice(2.5, 10.0, 1.25)
    assert await model_price(db, "openai", "no-such-model") is None
    # 1000 input, 200 output, 4000 cached input tokens.
    assert price.cost(1000, 200, 4000) == pytest.approx((3000 + 3000 + 1200) / 1_000_000)
    # Without a cached price, cached tokens cost the input price.
    assert ModelPrice(1.0, 2.0).cost(0, 0, 1_000_000) == pytest.approx(1.0)


async def test_own_hardware_costs_nothing_unless_an_admin_prices_it(db: Database) -> None:
    for provider in ("local", "ollama", "scripted"):
        price = await model_price(db, provider, "anything")
        assert price is not None and price.cost(10**6, 10**6, 10**6) == 0.0
    values = ModelValues(input_per_million=0.01, output_per_million=0.02)
    await set_model_override(db, CLI_ACTOR, "ollama", "llama3.2", values)
    assert await model_price(db, "ollama", "llama3.2") == ModelPrice(0.01, 0.02, None)
    assert (await model_price(db, "ollama", "qwen3")) == ModelPrice(0.0, 0.0, 0.0)


async def test_an_override_wins_and_its_removal_brings_the_table_back(db: Database) -> None:
    values = ModelValues(
        input_per_million=1.0, output_per_million=4.0, cached_input_per_million=0.1
    )
    row = await set_model_override(db, CLI_ACTOR, "openai", "gpt-4o", values)
    assert (row.source, row.prices_as_of, row.context_window) == ("catalog", None, 128_000)
    assert await model_price(db, "openai", "gpt-4o") == ModelPrice(1.0, 4.0, 0.1)
    # A dated snapshot finds its base name's override too.
    assert await model_price(db, "openai", "gpt-4o-2024-11-20") == ModelPrice(1.0, 4.0, 0.1)
    await remove_model_override(db, CLI_ACTOR, "openai", "gpt-4o")
    assert await model_price(db, "openai", "gpt-4o") == ModelPrice(2.5, 10.0, 1.25)
    with pytest.raises(NotFoundError):
        await remove_model_override(db, CLI_ACTOR, "openai", "gpt-4o")


async def test_a_catalog_provider_name_uses_its_kind_and_its_own_overrides_first(
    db: Database,
) -> None:
    await db.execute(
        "INSERT INTO catalog.providers (name, kind, base_url) VALUES ('deepseek', "
        "'openai-compatible', 'http://127.0.0.1:9/v1'), ('work', 'anthropic', NULL)"
    )
    # (deepseek-chat costs half off-peak: a model with one price all day keeps this exact)
    expected = ModelPrice(0.27, 0.95, 0.13)
    assert await model_price(db, "deepseek", "deepseek-v3.1-terminus") == expected
    assert await model_price(db, "work", "claude-haiku-4-5") == ModelPrice(1.0, 5.0, 0.10)
    kind_values = ModelValues(input_per_million=2.0, output_per_million=3.0)
    await set_model_override(db, CLI_ACTOR, "anthropic", "claude-haiku-4-5", kind_values)
    assert await model_price(db, "work", "claude-haiku-4-5") == ModelPrice(2.0, 3.0)
    name_values = ModelValues(input_per_million=5.0, output_per_million=6.0)
    await set_model_override(db, CLI_ACTOR, "work", "claude-haiku-4-5", name_values)
    assert await model_price(db, "work", "claude-haiku-4-5") == ModelPrice(5.0, 6.0)
    # An agent naming the kind calls "work" (the first of that kind): its price is work's.
    assert await model_price(db, "anthropic", "claude-haiku-4-5") == ModelPrice(5.0, 6.0)
    await db.execute("DELETE FROM catalog.providers WHERE name = 'work'")
    assert await model_price(db, "anthropic", "claude-haiku-4-5") == ModelPrice(2.0, 3.0)


async def test_limits_come_from_an_override_else_the_table(db: Database) -> None:
    assert await model_limits(db, "openai", "gpt-4o") == ModelLimits(128_000, 16_384, "table")
    assert await model_limits(db, "anthropic", "claude-opus-4-1-20250805") == ModelLimits(
        200_000, 32_000, "table"
    )
    assert await model_limits(db, "openai-compatible", "mystery") is None
    await set_model_override(db, CLI_ACTOR, "openai", "gpt-4o", ModelValues(context_window=5000))
    assert await model_limits(db, "openai", "gpt-4o") == ModelLimits(5000, 16_384, "catalog")
    values = ModelValues(context_window=32_000, max_output=4096)
    await set_model_override(db, CLI_ACTOR, "ollama", "qwen3", values)
    assert await model_limits(db, "ollama", "qwen3") == ModelLimits(32_000, 4096, "catalog")


@pytest.mark.parametrize(
    ("values", "message"),
    [
        (ModelValues(), "needs a context window"),
        (ModelValues(input_per_million=1.0), "go together"),
        (ModelValues(context_window=1, cached_input_per_million=1.0), "needs input_per_million"),
        (ModelValues(context_window=0), "between 1 and"),
        (ModelValues(input_per_million=-1.0, output_per_million=1.0), "between 0 and"),
        (ModelValues(input_per_million=float("nan"), output_per_million=1.0), "between 0 and"),
    ],
)
async def test_malformed_overrides_are_refused(
    db: Database, values: ModelValues, message: str
) -> None:
    with pytest.raises(InvalidInputError, match=message):
        await set_model_override(db, CLI_ACTOR, "openai", "gpt-4o", values)


async def test_an_override_needs_a_known_provider_and_a_model_name(db: Database) -> None:
    values = ModelValues(context_window=1000)
    with pytest.raises(NotFoundError, match="unknown provider"):
        await set_model_override(db, CLI_ACTOR, "nobody", "m", values)
    for model in ("", " padded", "a\nb", "m" * 201):
        with pytest.raises(InvalidInputError, match="not a model name"):
            await set_model_override(db, CLI_ACTOR, "openai", model, values)
    assert await db.fetch_val("SELECT count(*) FROM catalog.model_overrides") == 0


async def test_the_list_merges_the_table_and_the_overrides(db: Database) -> None:
    shipped = await list_models(db)
    assert {(row.provider, row.source) for row in shipped} == {
        ("anthropic", "table"),
        ("openai", "table"),
        ("openai-compatible", "table"),
    }
    assert all(row.prices_as_of is not None for row in shipped)
    await set_model_override(db, CLI_ACTOR, "ollama", "llama3.2", ModelValues(context_window=8000))
    await set_model_override(db, CLI_ACTOR, "openai", "gpt-5", ModelValues(max_output=1000))
    rows = {(row.provider, row.model): row for row in await list_models(db)}
    assert len(rows) == len(shipped) + 1
    llama = rows[("ollama", "llama3.2")]
    assert (llama.source, llama.context_window, llama.input_per_million) == ("catalog", 8000, None)
    gpt5 = rows[("openai", "gpt-5")]
    assert (gpt5.source, gpt5.max_output, gpt5.input_per_million) == ("catalog", 1000, 1.25)
    assert gpt5.prices_as_of is not None  # its prices are still the shipped ones
    assert [row.model for row in await list_models(db, "ollama")] == ["llama3.2"]


# --- over HTTP --------------------------------------------------------------------------------


@pytest.fixture
async def api(app_for: Callable[..., FastAPI]) -> AsyncIterator[httpx.AsyncClient]:
    """Single-user mode: the caller is the local owner, an admin."""
    async with client_for(app_for()) as client:
        yield client


async def test_models_are_listed_overridden_and_reset_over_http(
    api: httpx.AsyncClient, migrated_database_url: str
) -> None:
    listed = (await api.get("/models")).json()
    gpt4o = next(row for row in listed if row["model"] == "gpt-4o")
    assert gpt4o == {
        "provider": "openai",
        "model": "gpt-4o",
        "context_window": 128_000,
        "max_output": 16_384,
        "input_per_million": 2.5,
        "output_per_million": 10.0,
        "cached_input_per_million": 1.25,
        "source": "table",
        "prices_as_of": gpt4o["prices_as_of"],
        "updated_at": None,
        "updated_by": None,
    }
    body = {"input_per_million": 1, "output_per_million": 2, "context_window": 64_000}
    put = await api.put("/models/openai/gpt-4o", json=body)
    assert put.status_code == 200, put.text
    changed = put.json()
    assert (changed["source"], changed["input_per_million"], changed["context_window"]) == (
        "catalog",
        1.0,
        64_000,
    )
    assert changed["cached_input_per_million"] is None and changed["prices_as_of"] is None
    assert changed["updated_by"] is not None
    # A model of a server's own naming, with a slash, under a kind.
    slash = await api.put("/models/ollama/library/qwen3:8b", json={"context_window": 40_960})
    assert slash.status_code == 200 and slash.json()["model"] == "library/qwen3:8b"
    ollama = (await api.get("/models", params={"provider": "ollama"})).json()
    assert [row["model"] for row in ollama] == ["library/qwen3:8b"]
    assert (await api.delete("/models/openai/gpt-4o")).status_code == 204
    assert (await api.delete("/models/openai/gpt-4o")).status_code == 404
    back = next(r for r in (await api.get("/models")).json() if r["model"] == "gpt-4o")
    assert back | {"prices_as_of": None} == gpt4o | {"prices_as_of": None}  # listed later
    async with Database(url=migrated_database_url, min_size=0, max_size=1) as db:
        events = await db.fetch_all(
            "SELECT event, target_id FROM auth.audit_log WHERE target_type = 'model' ORDER BY id"
        )
    assert [(e["event"], e["target_id"]) for e in events] == [
        ("model.override_set", "openai/gpt-4o"),
        ("model.override_set", "ollama/library/qwen3:8b"),
        ("model.override_removed", "openai/gpt-4o"),
    ]


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/models/openai/gpt-4o", {}),
        ("/models/openai/gpt-4o", {"input_per_million": 1}),
        ("/models/openai/gpt-4o", {"cached_input_per_million": 1, "context_window": 5}),
        ("/models/openai/gpt-4o", {"context_window": None}),
        ("/models/openai/gpt-4o", {"context_window": 0}),
        ("/models/openai/gpt-4o", {"context_window": 10**12}),
        ("/models/openai/gpt-4o", {"context_window": "128000x"}),
        ("/models/openai/gpt-4o", {"context_window": True}),
        ("/models/openai/gpt-4o", {"input_per_million": -1, "output_per_million": 1}),
        ("/models/openai/gpt-4o", {"input_per_million": 1e300, "output_per_million": 1}),
        ("/models/openai/gpt-4o", {"input_per_million": "1", "output_per_million": 1}),
        ("/models/openai/gpt-4o", {"context_window": 5, "colour": "red"}),
        ("/models/OpenAI/gpt-4o", {"context_window": 5}),
        ("/models/openai/" + "m" * 201, {"context_window": 5}),
        ("/models/openai/a//b", {"context_window": 5}),
        ("/models/openai/-dash", {"context_window": 5}),
    ],
)
async def test_malformed_overrides_over_http_are_422(
    api: httpx.AsyncClient, path: str, body: Json
) -> None:
    answer = await api.put(path, json=body)
    assert answer.status_code == 422, answer.text
    assert answer.headers["content-type"].startswith("application/problem+json")
    assert all(row["source"] == "table" for row in (await api.get("/models")).json())


async def test_an_override_for_an_unknown_provider_is_404(api: httpx.AsyncClient) -> None:
    answer = await api.put("/models/nobody/gpt-4o", json={"context_window": 5})
    assert answer.status_code == 404 and "unknown provider" in answer.json()["detail"]
