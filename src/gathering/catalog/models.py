"""Models in the catalog: the shipped prices (genai-prices' dated data, `gathering.llm.pricing`)
and context table (`gathering.llm.context_windows`) merged with admins' overrides (migration
0025).

`model_price` and `model_limits` answer for one model as an agent names it: `provider` is a
provider kind ("anthropic", "openai", "ollama", "local", "scripted") or a catalog provider's
name (then its kind picks the shipped values). For a kind, the catalog provider an agent of
that kind calls (`gathering.catalog.providers.provider_for_agent`) is the one priced: overrides
are looked up under [that provider's name, its kind, the agent's kind], the first found wins,
then the shipped table; a dated snapshot ("gpt-4o-2024-08-06") finds the values of its base
name.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from gathering.auth.accounts import Actor
from gathering.catalog.changes import PROVIDER_NAME, audit_change
from gathering.catalog.providers import provider_for_agent
from gathering.db import Database
from gathering.db.database import Queries
from gathering.db.named_queries import queries_of
from gathering.errors import InvalidInputError, NotFoundError
from gathering.llm.context_windows import known_context_window, known_max_output
from gathering.llm.pricing import (
    LISTED,
    base_model_name,
    price_for,
    shipped_model_names,
)

SQL = queries_of("gathering.catalog")
KINDS = ("anthropic", "openai", "openai-compatible", "ollama", "local")
"""The kinds of provider the catalog holds."""
PROVIDER_KINDS = frozenset({*KINDS, "scripted"})
"""What an agent may name as its provider without a catalog entry."""
MAX_MODEL_CHARS = 200
MAX_PRICE_PER_MILLION = 1_000_000.0
MAX_TOKENS_LIMIT = 100_000_000
Source = Literal["table", "catalog"]


@dataclass(frozen=True, slots=True)
class ModelPrice:
    """USD per million input, output and cached input tokens (cached None: not priced apart)."""

    input_per_million: float
    output_per_million: float
    cached_input_per_million: float | None = None

    def cost(self, input_tokens: int, output_tokens: int, cached_input_tokens: int = 0) -> float:
        """USD for one call: `input_tokens` at the input price, `output_tokens` at the output
        price, and `cached_input_tokens` (read from the provider's prompt cache, counted apart
        from `input_tokens`) at the cached price, else at the input price."""
        cached = self.cached_input_per_million
        cached_price = self.input_per_million if cached is None else cached
        return (
            input_tokens * self.input_per_million
            + output_tokens * self.output_per_million
            + cached_input_tokens * cached_price
        ) / 1_000_000


@dataclass(frozen=True, slots=True)
class ModelLimits:
    """A model's context window (prompt plus reply, tokens) and most output tokens per reply
    (None: unknown); `source` says where the context window comes from."""

    context_window: int
    max_output: int | None
    source: Source = "table"


@dataclass(frozen=True, slots=True)
class ModelValues:
    """What an admin sets for one model; None keeps the shipped value."""

    context_window: int | None = None
    max_output: int | None = None
    input_per_million: float | None = None
    output_per_million: float | None = None
    cached_input_per_million: float | None = None

    def check(self) -> None:
        """Raise `InvalidInputError` unless these values can be stored."""
        for name in ("context_window", "max_output"):
            value = getattr(self, name)
            if value is not None and not 0 < value <= MAX_TOKENS_LIMIT:
                raise InvalidInputError(
                    f"{name} must be between 1 and {MAX_TOKENS_LIMIT} tokens, got {value}"
                )
        for name in ("input_per_million", "output_per_million", "cached_input_per_million"):
            value = getattr(self, name)
            if value is not None and not 0 <= value <= MAX_PRICE_PER_MILLION:
                raise InvalidInputError(
                    f"{name} must be between 0 and {MAX_PRICE_PER_MILLION:g} USD, got {value}"
                )
        if (self.input_per_million is None) != (self.output_per_million is None):
            raise InvalidInputError(
                "input_per_million and output_per_million go together",
                hint="give both prices, or neither to keep the shipped ones",
            )
        if self.cached_input_per_million is not None and self.input_per_million is None:
            raise InvalidInputError(
                "cached_input_per_million needs input_per_million and output_per_million"
            )
        if self.context_window is None and self.max_output is None:
            if self.input_per_million is None:
                raise InvalidInputError(
                    "an override needs a context window, a max output or prices",
                    hint="to go back to the shipped values, delete the override",
                )


@dataclass(frozen=True, slots=True)
class ModelRow:
    """One model as the catalog lists it: shipped values merged with an admin's override."""

    provider: str
    model: str
    context_window: int | None
    max_output: int | None
    input_per_million: float | None
    output_per_million: float | None
    cached_input_per_million: float | None
    source: Source
    prices_as_of: datetime | None  # when the shipped prices shown were in force, if shipped
    updated_at: datetime | None = None  # of the override
    updated_by: int | None = None


# --- one model ------------------------------------------------------------------------------


async def _kind_and_names(q: Queries, provider: str) -> tuple[list[str], list[str]]:
    """The kinds whose shipped values apply, and the provider names overrides may be stored
    under, the most specific first. A kind stands for the catalog provider its agents call."""
    name = provider.strip().lower()
    if name in PROVIDER_KINDS:
        used = await provider_for_agent(q, name)
        if used is None:
            return [name], [name]
        kinds = list(dict.fromkeys([str(used["kind"]), name]))
        return kinds, list(dict.fromkeys([str(used["name"]), *kinds]))
    kind = await q.fetch_val(SQL["catalog_provider_kind"], name)
    if kind is None:
        return [name], [name]
    return [str(kind)], [name, str(kind)]


def _shipped(kinds: list[str], lookup: Any, model: str) -> Any:
    """The first value the shipped table has for `model` under one of `kinds`."""
    return next((found for kind in kinds if (found := lookup(kind, model)) is not None), None)


async def _overrides(q: Queries, names: list[str], model: str) -> list[dict[str, Any]]:
    """The overrides for `model` under `names`, the most specific first."""
    models = list(dict.fromkeys([model, base_model_name(model)]))
    rows = await q.fetch_all(SQL["model_overrides_matching"], names, models)
    return sorted(rows, key=lambda row: (names.index(row["provider"]), models.index(row["model"])))


def _first(rows: list[dict[str, Any]], column: str) -> Any:
    return next((row[column] for row in rows if row[column] is not None), None)


async def model_price(q: Queries, provider: str, model: str) -> ModelPrice | None:
    """The price of one call of `model` on `provider`: an admin's override, else the shipped
    table; models run on one's own hardware (local, Ollama, scripted) cost 0.0; None when
    neither knows the model (unpriced)."""
    kinds, names = await _kind_and_names(q, provider)
    priced = [
        row for row in await _overrides(q, names, model) if row["input_per_million"] is not None
    ]
    if priced:
        row = priced[0]
        return ModelPrice(
            row["input_per_million"], row["output_per_million"], row["cached_input_per_million"]
        )
    price = _shipped(kinds, price_for, model)
    if price is None:
        return None
    return ModelPrice(
        price.input_per_million, price.output_per_million, price.cached_input_per_million
    )


async def model_limits(q: Queries, provider: str, model: str) -> ModelLimits | None:
    """The context window and max output of `model` on `provider`: an admin's override, else
    the shipped table; None when neither knows its context window."""
    kinds, names = await _kind_and_names(q, provider)
    rows = await _overrides(q, names, model)
    window = _first(rows, "context_window")
    max_output = _first(rows, "max_output") or _shipped(kinds, known_max_output, model)
    if window is not None:
        return ModelLimits(int(window), max_output, "catalog")
    shipped = _shipped(kinds, known_context_window, model)
    return None if shipped is None else ModelLimits(shipped, max_output)


# --- the list -------------------------------------------------------------------------------


def _shipped_row(provider: str, model: str, at: datetime) -> ModelRow:
    price = price_for(provider, model, at=at)
    return ModelRow(
        provider,
        model,
        known_context_window(provider, model),
        known_max_output(provider, model),
        price.input_per_million if price else None,
        price.output_per_million if price else None,
        price.cached_input_per_million if price else None,
        "table",
        at if price else None,
    )


def _merged(shipped: ModelRow | None, override: Mapping[str, Any]) -> ModelRow:
    """`override` over `shipped` (or over nothing, for a model the table does not have)."""
    provider, model = override["provider"], override["model"]
    base = shipped or ModelRow(provider, model, None, None, None, None, None, "catalog", None)
    priced = override["input_per_million"] is not None
    return ModelRow(
        provider,
        model,
        override["context_window"] or base.context_window,
        override["max_output"] or base.max_output,
        override["input_per_million"] if priced else base.input_per_million,
        override["output_per_million"] if priced else base.output_per_million,
        override["cached_input_per_million"] if priced else base.cached_input_per_million,
        "catalog",
        None if priced else base.prices_as_of,
        override["updated_at"],
        override["updated_by"],
    )


def shipped_models(provider: str | None = None) -> list[ModelRow]:
    """The shipped models (genai-prices' data) of one provider kind, or of all, without
    overrides, at the prices in force now."""
    at = datetime.now(UTC)
    return [
        _shipped_row(kind, model, at)
        for kind in LISTED
        if provider is None or kind == provider
        for model in shipped_model_names(kind)
    ]


async def list_models(q: Queries, provider: str | None = None) -> list[ModelRow]:
    """Every model the catalog knows (of `provider`, a kind or a catalog provider's name): the
    shipped table merged with admins' overrides, sorted by provider and model."""
    rows = {(row.provider, row.model): row for row in shipped_models(provider)}
    for override in await q.fetch_all(SQL["model_overrides"], provider):
        key = (override["provider"], override["model"])
        rows[key] = _merged(rows.get(key), override)
    return sorted(rows.values(), key=lambda row: (row.provider, row.model))


async def model_row(q: Queries, provider: str, model: str) -> ModelRow | None:
    """One model as `list_models` shows it, or None when the catalog does not list it."""
    found = [row for row in await list_models(q, provider) if row.model == model]
    return found[0] if found else None


# --- admins' overrides ----------------------------------------------------------------------


def check_model_name(model: str) -> str:
    """`model`, unless it cannot be a model name (empty, too long, control characters)."""
    if (
        not model
        or len(model) > MAX_MODEL_CHARS
        or not model.isprintable()
        or model != model.strip()
    ):
        raise InvalidInputError(
            f"not a model name: {model[:40]!r}",
            hint=f"1 to {MAX_MODEL_CHARS} printable characters, no surrounding spaces",
        )
    return model


async def _check_provider(q: Queries, provider: str) -> None:
    if not PROVIDER_NAME.fullmatch(provider):
        raise InvalidInputError(f"not a provider name: {provider[:40]!r}")
    if provider in PROVIDER_KINDS:
        return
    if await q.fetch_val(SQL["catalog_provider_kind"], provider) is None:
        raise NotFoundError(
            f"unknown provider {provider!r}",
            hint=f"a provider kind ({', '.join(sorted(PROVIDER_KINDS))}) or a configured "
            "provider's name (GET /providers)",
        )


async def set_model_override(
    db: Database, actor: Actor, provider: str, model: str, values: ModelValues
) -> ModelRow:
    """Store an admin's values for `model` of `provider` (replacing any), audited in the same
    transaction; the model as listed afterwards. `NotFoundError` when `provider` is neither a
    kind nor a configured provider."""
    check_model_name(model)
    values.check()
    async with db.transaction() as tx:
        await _check_provider(tx, provider)
        await tx.execute(
            SQL["upsert_model_override"],
            provider,
            model,
            values.context_window,
            values.max_output,
            values.input_per_million,
            values.output_per_million,
            values.cached_input_per_million,
            actor.user_id,
        )
        details = {"provider": provider, "model": model, **_present(values)}
        await audit_change(
            db, tx, actor, "model.override_set", "model", f"{provider}/{model}", details
        )
        row = await model_row(tx, provider, model)
    assert row is not None
    return row


def _present(values: ModelValues) -> dict[str, Any]:
    return {
        name: getattr(values, name)
        for name in ModelValues.__dataclass_fields__
        if getattr(values, name) is not None
    }


async def remove_model_override(db: Database, actor: Actor, provider: str, model: str) -> None:
    """Delete the override of `model` of `provider` (back to the shipped values), audited;
    `NotFoundError` when there is none."""
    async with db.transaction() as tx:
        removed = await tx.fetch_one(SQL["delete_model_override"], provider, model)
        if removed is None:
            raise NotFoundError(
                f"no override for model {model!r} of provider {provider!r}",
                hint="GET /models lists the overrides (source: catalog)",
            )
        details = {"provider": provider, "model": model}
        await audit_change(
            db, tx, actor, "model.override_removed", "model", f"{provider}/{model}", details
        )
