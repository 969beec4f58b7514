"""What the callers of a model (the turn loop, background tasks) use to charge a call: the
budget reservation before it, and the ledger entry after it (written with the call's result)
or for its failure."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from dataclasses import replace
from uuid import UUID

import structlog

from gathering.db.database import Queries
from gathering.errors import DatabaseError, GatheringError
from gathering.llm.token_estimate import estimate_tokens
from gathering.llm.types import Completion, Message, ToolSpec, Usage
from gathering.usage.attribution import Attribution
from gathering.usage.budgets import reserve
from gathering.usage.ledger import LedgerEntry, call_cost, record

log = structlog.get_logger(__name__)

RESERVATION_GRACE_SECONDS = 60.0
"""How long a reservation outlives its call's own time limit before it stops counting (the
process that made it is then taken as dead)."""


def estimated_input_tokens(
    system: str, messages: Sequence[Message], tools: Sequence[ToolSpec] = ()
) -> int:
    """The input tokens of a prompt, estimated without a tokenizer (see `estimate_tokens`)."""
    total = estimate_tokens(system) if system else 0
    for message in messages:
        total += estimate_tokens(json.dumps(message.to_dict(), ensure_ascii=False))
    if tools:
        specs = [
            {"name": t.name, "description": t.description, "parameters": t.parameters}
            for t in tools
        ]
        total += estimate_tokens(json.dumps(specs, ensure_ascii=False))
    return total


async def reserve_model_call(
    q: Queries,
    attribution: Attribution,
    provider: str,
    model: str,
    input_tokens: int,
    max_tokens: int,
    call_seconds: float,
) -> UUID | None:
    """Reserve the estimate of one call (`input_tokens` plus `max_tokens` at `model`'s price;
    an unpriced model counts 0 USD) on the budgets of `attribution`; the reservation's call id,
    or None when no budget applies. `BudgetExceededError` when a budget cannot take it."""
    estimate = Usage(input_tokens, max_tokens)
    cost = await call_cost(q, provider, model, estimate) or 0.0
    return await reserve(
        q,
        attribution,
        cost,
        estimate.total_tokens,
        seconds=call_seconds + RESERVATION_GRACE_SECONDS,
    )


def billed_usage(completion: Completion, estimated_input: int) -> tuple[Usage, bool]:
    """The usage a finished call is charged: the provider's, and whether it is an estimate.
    A provider that reports no usage (0 tokens) is charged the prompt's estimate
    `estimated_input` plus the answer's own estimated tokens (text and tool calls; never
    below 1), so that a call is never free against a budget."""
    usage = completion.usage
    if usage.total_tokens > 0:
        return usage, False
    calls = [call.to_dict() for call in completion.tool_calls]
    answer = completion.text + (json.dumps(calls, ensure_ascii=False) if calls else "")
    return Usage(max(1, estimated_input), max(1, estimate_tokens(answer) if answer else 1)), True


async def model_call_entry(
    q: Queries,
    attribution: Attribution,
    completion: Completion,
    provider: str,
    model: str,
    reservation: UUID | None,
    *,
    estimated_input: int = 0,
    call_id: UUID | None = None,
) -> LedgerEntry:
    """The ledger entry of a finished call, priced now (its row is written with the result);
    at an estimate (flagged) when the provider reported no usage (see `billed_usage`)."""
    provider = completion.provider or provider
    model = completion.model or model
    usage, estimated = billed_usage(completion, estimated_input)
    return LedgerEntry(
        "model",
        attribution,
        provider,
        model,
        usage.input_tokens,
        usage.output_tokens,
        1,
        await call_cost(q, provider, model, usage),
        round(completion.latency * 1000) if completion.latency else None,
        "ok",
        reservation,
        estimated,
        call_id,
    )


async def record_failed_call(
    q: Queries,
    attribution: Attribution,
    provider: str,
    model: str,
    error: BaseException,
    latency_ms: int | None,
    reservation: UUID | None,
    *,
    call_id: UUID | None = None,
) -> None:
    """The ledger row of a call that failed (outcome: the error's code, `cancelled` for a
    cancelled call; no tokens), which also gives its reservation back. A row the database
    refuses is logged, not raised: the caller raises the call's own error (the reservation
    then expires)."""
    if isinstance(error, GatheringError):
        code = error.code
    elif isinstance(error, asyncio.CancelledError | GeneratorExit):
        code = "cancelled"
    else:
        code = "internal_error"
    entry = LedgerEntry(
        "model", attribution, provider, model, 0, 0, 1, 0.0, latency_ms, code, reservation
    )
    entry = replace(entry, call_id=call_id)
    try:
        await record(q, entry)
    except DatabaseError as exc:
        log.warning("failed model call not written to the usage ledger", error=exc.message)
