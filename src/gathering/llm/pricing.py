"""The shipped prices (genai-prices' dated data, kept by the pydantic team), cost estimates,
and running usage totals.

Prices are list prices in US dollars per million tokens, as genai-prices' bundled data has
them (`PRICES_SOURCE`): the standard tier (no batch, priority or flex variant), below any
long-context tier, in force at the time of the call (the data's dated changes and
time-of-day windows, such as DeepSeek's peak hours, applied), with the price of cached input
(tokens read from the provider's prompt cache) where the provider has one. The
snapshot is the one installed: nothing is fetched at run time (a newer genai-prices brings
newer prices), and admins override them per model in the catalog
(`gathering.catalog.models`). Models that run on your own hardware (Ollama, local,
scripted) cost nothing.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from functools import lru_cache
from importlib.metadata import version
from types import MappingProxyType

from genai_prices import types as prices
from genai_prices.data import providers as _BUNDLED

from gathering.llm.types import Completion, Usage


@dataclass(frozen=True, slots=True)
class Price:
    """USD per million input and output tokens, and per million cached input tokens (None:
    the provider has no cached-input price for the model)."""

    input_per_million: float
    output_per_million: float
    cached_input_per_million: float | None = None

    def cost(self, usage: Usage) -> float:
        """The cost of `usage` at this price."""
        return (
            usage.input_tokens * self.input_per_million
            + usage.output_tokens * self.output_per_million
        ) / 1_000_000


FREE = Price(0.0, 0.0, 0.0)

# The data bundled with the installed genai-prices: never an update fetched at run time.
_PROVIDERS: tuple[prices.Provider, ...] = tuple(_BUNDLED)
PRICES_SOURCE = f"genai-prices {version('genai-prices')}"
"""Where the shipped prices come from: the installed genai-prices and its bundled data."""

LISTED: Mapping[str, tuple[str, ...]] = MappingProxyType(
    {"anthropic": ("anthropic",), "openai": ("openai",), "openai-compatible": ("deepseek",)}
)
"""The genai-prices providers whose models each catalog kind lists (an OpenAI-compatible
server: DeepSeek's hosted API)."""
_HOMES = ("openai", "anthropic")  # where a model named by another kind is looked up next

_SNAPSHOT_SUFFIX = re.compile(r"-(\d{8}|\d{4}-\d{2}-\d{2}|latest)$")
_PLAIN_NAME = re.compile(r"[a-z0-9][a-z0-9.-]*[a-z0-9]")  # not "ft:gpt-4o", "gpt-4o:extended"
MAX_PRICED_NAME = 200  # longer is no model name (`gathering.catalog.models.MAX_MODEL_CHARS`)

SELF_HOSTED_PROVIDERS = frozenset({"ollama", "local", "scripted"})


def base_model_name(model: str) -> str:
    """`model` without a dated-snapshot suffix: "gpt-4o-2024-08-06" -> "gpt-4o"."""
    return _SNAPSHOT_SUFFIX.sub("", model)


def _per_million(value: Decimal | prices.TieredPrices | None) -> float | None:
    if isinstance(value, prices.TieredPrices):
        return float(value.base)  # below the long-context tier
    return None if value is None else float(value)


def _price_of(model: prices.ModelInfo, at: datetime) -> Price | None:
    """`model`'s standard price in force at `at` (its dated changes and time-of-day windows
    applied); None when it is not priced per token."""
    found = model.get_prices(at)
    input_price = _per_million(found.input_mtok)
    if input_price is None:
        return None  # priced per image, per second of audio, ...
    output_price = _per_million(found.output_mtok) or 0.0  # embeddings: input only
    return Price(input_price, output_price, _per_million(found.cache_read_mtok))


def _provider(provider_id: str) -> prices.Provider:
    return next(p for p in _PROVIDERS if p.id == provider_id)


def _search_order(kind: str) -> tuple[prices.Provider, ...]:
    return tuple(_provider(pid) for pid in dict.fromkeys([*LISTED.get(kind, ()), *_HOMES]))


@lru_cache(maxsize=4096)
def _model_info(kind: str, name: str) -> prices.ModelInfo | None:
    """The genai-prices model `name` is, for a provider of `kind`: the kind's own providers
    first, then OpenAI's and Anthropic's. Not any other host's: a model an OpenAI-compatible
    server of one's own runs ("meta-llama/Llama-3.1-8B-Instruct") costs what that server
    costs, not what some cloud charges for it (an admin prices it in the catalog). Our own
    bounded cache: genai-prices' lookup helpers keep every name they were asked."""
    for provider in _search_order(kind):
        info = provider.find_model(name, all_providers=list(_PROVIDERS))
        if info is not None:
            return info
    return None


def price_for(provider: str, model: str, *, at: datetime | None = None) -> Price | None:
    """The price of `model` on `provider` (a kind) in force at `at` (default: now), or None
    when genai-prices does not know the model or does not price it per token."""
    if provider in SELF_HOSTED_PROVIDERS:
        return FREE
    name = model.strip().lower()
    if not name or len(name) > MAX_PRICED_NAME:
        return None
    info = _model_info(provider, name)
    return None if info is None else _price_of(info, at or datetime.now(UTC))


def shipped_model_names(kind: str) -> list[str]:
    """The models the shipped data lists for catalog kind `kind` (priced per token, named
    plainly), in the data's order."""
    names: list[str] = []
    for provider_id in LISTED.get(kind, ()):
        for model in _provider(provider_id).models:
            if model.deprecated or not _PLAIN_NAME.fullmatch(model.id):
                continue
            if price_for(kind, model.id) is not None and model.id not in names:
                names.append(model.id)
    return names


def estimate_cost(provider: str, model: str, usage: Usage) -> float | None:
    """Estimated USD cost of `usage`, or None for a model missing from the table."""
    price = price_for(provider, model)
    return price.cost(usage) if price is not None else None


@dataclass(slots=True)
class UsageTotals:
    """Calls, tokens and estimated cost summed over many completions."""

    calls: int = 0
    usage: Usage = field(default_factory=Usage)
    cost_usd: float = 0.0
    unpriced_calls: int = 0


@dataclass(slots=True)
class UsageLedger:
    """Running totals of usage and cost, overall and per (provider, model)."""

    total: UsageTotals = field(default_factory=UsageTotals)
    by_model: dict[tuple[str, str], UsageTotals] = field(default_factory=dict)

    def record(self, completion: Completion) -> None:
        """Add one completion's usage and cost."""
        key = (completion.provider, completion.model)
        for totals in (self.total, self.by_model.setdefault(key, UsageTotals())):
            totals.calls += 1
            totals.usage = totals.usage + completion.usage
            if completion.cost_usd is None:
                totals.unpriced_calls += 1
            else:
                totals.cost_usd += completion.cost_usd
