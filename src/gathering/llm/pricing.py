"""The one price table, cost estimates, and running usage totals.

Prices are list prices in US dollars per million tokens. They change: this table is the one
place to update. Models that run on your own hardware (Ollama, local, scripted) cost nothing.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from gathering.llm.types import Completion, Usage


@dataclass(frozen=True, slots=True)
class Price:
    """USD per million input and output tokens."""

    input_per_million: float
    output_per_million: float

    def cost(self, usage: Usage) -> float:
        """The cost of `usage` at this price."""
        return (
            usage.input_tokens * self.input_per_million
            + usage.output_tokens * self.output_per_million
        ) / 1_000_000


FREE = Price(0.0, 0.0)

# Keys are model names. A dated snapshot ("claude-sonnet-4-20250514", "gpt-4o-2024-08-06")
# is priced as its base name; any other name missing here is unpriced (cost None).
PRICES: Mapping[str, Price] = MappingProxyType(
    {
        # Anthropic
        "claude-fable-5-1": Price(10.0, 50.0),
        "claude-opus-5-5": Price(4.0, 20.0),
        "claude-opus-5": Price(5.0, 25.0),
        "claude-opus-4-5": Price(5.0, 25.0),
        "claude-opus-4-1": Price(15.0, 75.0),
        "claude-opus-4": Price(15.0, 75.0),
        "claude-sonnet-5-5": Price(2.0, 10.0),
        "claude-sonnet-5": Price(2.0, 10.0),
        "claude-sonnet-4-6": Price(3.0, 15.0),
        "claude-sonnet-4-5": Price(3.0, 15.0),
        "claude-sonnet-4": Price(3.0, 15.0),
        "claude-3-7-sonnet": Price(3.0, 15.0),
        "claude-haiku-4-5": Price(1.0, 5.0),
        "claude-3-5-haiku": Price(0.8, 4.0),
        # OpenAI
        "gpt-6-astra": Price(10.0, 50.0),
        "gpt-6-sol": Price(2.0, 10.0),
        "gpt-6-luna": Price(0.10, 0.50),
        "gpt-5.6-terra": Price(2.0, 12.0),
        "gpt-5.6-luna": Price(0.20, 1.20),
        "gpt-5.5": Price(5.0, 30.0),
        "gpt-5.4": Price(2.50, 15.0),
        "gpt-5.4-mini": Price(0.75, 4.50),
        "gpt-5": Price(1.25, 10.0),
        "gpt-5-mini": Price(0.25, 2.0),
        "gpt-5-nano": Price(0.05, 0.40),
        "gpt-4.1": Price(2.0, 8.0),
        "gpt-4.1-mini": Price(0.40, 1.60),
        "gpt-4.1-nano": Price(0.10, 0.40),
        "gpt-4o": Price(2.50, 10.0),
        "gpt-4o-mini": Price(0.15, 0.60),
        "o4-mini": Price(1.10, 4.40),
        "o3": Price(2.0, 8.0),
        "text-embedding-3-small": Price(0.02, 0.0),
        "text-embedding-3-large": Price(0.13, 0.0),
        "text-embedding-ada-002": Price(0.10, 0.0),
        # OpenAI-compatible hosted APIs
        "deepseek-chat": Price(0.27, 1.10),
        "deepseek-reasoner": Price(0.55, 2.19),
    }
)

_SNAPSHOT_SUFFIX = re.compile(r"-(\d{8}|\d{4}-\d{2}-\d{2}|latest)$")

SELF_HOSTED_PROVIDERS = frozenset({"ollama", "local", "scripted"})


def price_for(provider: str, model: str) -> Price | None:
    """The price of `model` on `provider`, or None when the table does not know it."""
    if provider in SELF_HOSTED_PROVIDERS:
        return FREE
    price = PRICES.get(model)
    if price is None:
        price = PRICES.get(_SNAPSHOT_SUFFIX.sub("", model))
    return price


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
