"""Neutral types, price table, retry policy and HTTP error mapping."""

from __future__ import annotations

import email.utils
import time

import pytest

from gathering.errors import (
    ContextTooLongError,
    InvalidInputError,
    LLMError,
    ProviderAuthenticationError,
    ProviderRateLimitError,
    ProviderTimeoutError,
    ProviderUnavailableError,
)
from gathering.llm import Completion, Message, ToolCall, ToolResult, ToolSpec, Usage, UsageLedger
from gathering.llm.error_mapping import error_from_status, parse_retry_after
from gathering.llm.pricing import (
    LISTED,
    Price,
    estimate_cost,
    price_for,
    shipped_model_names,
)
from gathering.llm.retry import RetryPolicy
from gathering.llm.types import parse_tool_arguments


class TestMessage:
    def test_constructors(self):
        assert Message.system("s") == Message("system", "s")
        assert Message.user("u").role == "user"
        call = ToolCall("c1", "search", {"q": "x"})
        assert Message.assistant("a", [call]).tool_calls == (call,)
        assert Message.tool("c1", "out", is_error=True).tool_results == (
            ToolResult("c1", "out", is_error=True),
        )

    @pytest.mark.parametrize(
        "build",
        [
            lambda: Message("robot", "x"),  # type: ignore[arg-type]
            lambda: Message("user", 42),  # type: ignore[arg-type]
            lambda: Message("user", "x", tool_calls=(ToolCall("c", "t"),)),
            lambda: Message("tool", "x"),
            lambda: Message("user", "x", tool_results=(ToolResult("c", "r"),)),
        ],
    )
    def test_invalid_messages_are_rejected(self, build):
        with pytest.raises(InvalidInputError):
            build()

    def test_dict_round_trip(self):
        messages = [
            Message.system("s"),
            Message.assistant("thinking", [ToolCall("c1", "t", {"a": 1}, invalid_arguments=None)]),
            Message.assistant(tool_calls=[ToolCall("c2", "t", invalid_arguments="{bad")]),
            Message.tool_outputs([ToolResult("c1", "ok"), ToolResult("c2", "no", True, name="t")]),
        ]
        for message in messages:
            assert Message.from_dict(message.to_dict()) == message

    @pytest.mark.parametrize(
        "data", [{}, {"role": "tool"}, {"role": "assistant", "tool_calls": [{"id": "x"}]}]
    )
    def test_malformed_dict(self, data):
        with pytest.raises(InvalidInputError):
            Message.from_dict(data)


class TestToolSpec:
    def test_defaults_to_an_empty_object_schema(self):
        assert ToolSpec("ping").parameters == {"type": "object", "properties": {}}

    @pytest.mark.parametrize("name", ["", "has space", "x" * 65, "émoji"])
    def test_bad_names(self, name):
        with pytest.raises(InvalidInputError):
            ToolSpec(name)

    def test_parameters_must_be_an_object_schema(self):
        with pytest.raises(InvalidInputError):
            ToolSpec("t", parameters={"type": "string"})


@pytest.mark.parametrize(
    ("raw", "arguments", "invalid"),
    [
        (None, {}, None),
        ("  ", {}, None),
        ('{"a": 1}', {"a": 1}, None),
        ("[1, 2]", {}, "[1, 2]"),
        ("{nope", {}, "{nope"),
    ],
)
def test_parse_tool_arguments(raw, arguments, invalid):
    call = parse_tool_arguments("id", "name", raw)
    assert call.arguments == arguments
    assert call.invalid_arguments == invalid


def test_usage_and_completion():
    assert Usage(1, 2) + Usage(3, 4) == Usage(4, 6)
    assert Usage(1, 2).total_tokens == 3
    call = ToolCall("c", "t")
    completion = Completion("hi", tool_calls=(call,), stop_reason="tool_calls")
    assert completion.message == Message.assistant("hi", [call])


class TestPricing:
    def test_exact_and_snapshot_names(self):
        assert price_for("openai", "gpt-4o") == price_for("openai", "gpt-4o-2024-08-06")
        assert price_for("anthropic", "claude-sonnet-4-20250514") == price_for(
            "anthropic", "claude-sonnet-4"
        )
        assert price_for("openai", "gpt-4o-mini") != price_for("openai", "gpt-4o")

    def test_unknown_models_are_unpriced_and_self_hosted_are_free(self):
        assert price_for("openai", "my-finetune") is None
        assert estimate_cost("openai", "my-finetune", Usage(10, 10)) is None
        assert estimate_cost("ollama", "llama3.2", Usage(10**6, 10**6)) == 0.0

    def test_prices_are_genai_prices_data_in_force_at_the_call(self):
        from datetime import UTC, datetime

        def at(day: str, hour: int = 12) -> datetime:
            return datetime.fromisoformat(day).replace(hour=hour, tzinfo=UTC)

        # OpenAI cut o3's price on 2025-06-10: a call is priced as at its time.
        assert price_for("openai", "o3", at=at("2025-06-09")) == Price(10.0, 40.0, 0.5)
        assert price_for("openai", "o3", at=at("2025-06-10")) == Price(2.0, 8.0, 0.5)
        # DeepSeek V4 costs twice as much in its peak hours (01-04 and 06-10 UTC).
        peak = price_for("openai-compatible", "deepseek-v4-pro", at=at("2026-11-30", 2))
        calm = price_for("openai-compatible", "deepseek-v4-pro", at=at("2026-11-30", 12))
        assert peak is not None and calm is not None
        assert peak.input_per_million == 2 * calm.input_per_million
        # A model of a known family called through another kind is priced by its name.
        assert price_for("openai-compatible", "gpt-4o") == price_for("openai", "gpt-4o")
        assert price_for("openai-compatible", "text-embedding-3-small") == Price(0.02, 0.0)
        # Not another host's price for a model one's own server runs.
        assert price_for("openai-compatible", "meta-llama/Llama-3.1-8B-Instruct") is None
        # Embeddings have an input price only; per-image or per-second models are unpriced.
        assert price_for("openai", "text-embedding-3-small") == Price(0.02, 0.0)
        assert price_for("openai", "whisper-1") is None
        assert price_for("openai", "x" * 201) is None

    def test_looking_up_unknown_names_keeps_a_bounded_cache(self):
        from gathering.llm import pricing

        for n in range(pricing._model_info.cache_info().maxsize + 50):
            assert price_for("openai-compatible", f"no-such-model-{n}") is None
        assert pricing._model_info.cache_info().currsize <= 4096

    def test_the_listed_models_are_priced_plain_names(self):
        for kind in LISTED:
            names = shipped_model_names(kind)
            assert names, kind
            assert all(price_for(kind, name) is not None for name in names)
            assert not [name for name in names if ":" in name or name.endswith(("-", "."))]
        assert "claude-sonnet-4-5" in shipped_model_names("anthropic")
        assert "deepseek-chat" in shipped_model_names("openai-compatible")

    def test_estimate(self):
        assert estimate_cost("openai", "gpt-4o", Usage(1_000_000, 100_000)) == pytest.approx(3.5)

    def test_ledger(self):
        ledger = UsageLedger()
        ledger.record(Completion("a", usage=Usage(10, 5), model="m", provider="p", cost_usd=0.5))
        ledger.record(Completion("b", usage=Usage(1, 1), model="m", provider="p", cost_usd=None))
        ledger.record(Completion("c", usage=Usage(2, 2), model="n", provider="p", cost_usd=0.25))
        assert ledger.total.calls == 3
        assert ledger.total.usage == Usage(13, 8)
        assert ledger.total.cost_usd == pytest.approx(0.75)
        assert ledger.total.unpriced_calls == 1
        assert ledger.by_model[("p", "m")].calls == 2


class TestRetryPolicy:
    @pytest.mark.parametrize(
        "kwargs", [{"max_attempts": 0}, {"base_delay": -1}, {"max_rate_limit_wait": -0.5}]
    )
    def test_invalid(self, kwargs):
        with pytest.raises(InvalidInputError):
            RetryPolicy(**kwargs)

    def test_coerce(self):
        assert RetryPolicy.coerce(None) == RetryPolicy()
        policy = RetryPolicy(max_attempts=5)
        assert RetryPolicy.coerce(policy) is policy
        assert RetryPolicy.coerce({"max_attempts": 2}).max_attempts == 2
        with pytest.raises(InvalidInputError):
            RetryPolicy.coerce({"retries": 2})

    def test_backoff_is_bounded_and_grows(self):
        policy = RetryPolicy(base_delay=1.0, max_delay=5.0)
        for attempt in range(1, 10):
            ceiling = min(5.0, 2 ** (attempt - 1))
            assert all(0 <= policy.backoff(attempt) <= ceiling for _ in range(50))

    def test_delay_before_retry(self):
        policy = RetryPolicy(max_attempts=3, max_rate_limit_wait=10)
        assert policy.delay_before_retry(1, LLMError("permanent")) is None
        assert policy.delay_before_retry(3, ProviderUnavailableError("x")) is None
        assert policy.delay_before_retry(1, ProviderUnavailableError("x")) is not None
        assert policy.delay_before_retry(1, ProviderRateLimitError("x", retry_after=4)) == 4
        assert policy.delay_before_retry(1, ProviderRateLimitError("x", retry_after=11)) is None
        assert policy.delay_before_retry(1, ProviderRateLimitError("x")) is not None


class TestErrorMapping:
    def test_retry_after_forms(self):
        assert parse_retry_after(None) is None
        assert parse_retry_after({}) is None
        assert parse_retry_after({"retry-after-ms": "1500"}) == 1.5
        assert parse_retry_after({"retry-after-ms": "x", "retry-after": "3"}) == 3.0
        assert parse_retry_after({"retry-after": "soon"}) is None
        later = email.utils.formatdate(time.time() + 120, usegmt=True)
        assert 100 < parse_retry_after({"retry-after": later}) <= 120

    @pytest.mark.parametrize(
        ("status", "message", "expected"),
        [
            (401, "bad key", ProviderAuthenticationError),
            (403, "forbidden", ProviderAuthenticationError),
            (429, "slow down", ProviderRateLimitError),
            (400, "prompt is too long", ContextTooLongError),
            (413, "request_too_large", ContextTooLongError),
            (400, "bad field", LLMError),
            (408, "timeout", ProviderTimeoutError),
            (504, "gateway timeout", ProviderTimeoutError),
            (500, "oops", ProviderUnavailableError),
            (529, "overloaded", ProviderUnavailableError),
            (404, "no such model", LLMError),
        ],
    )
    def test_status_mapping(self, status, message, expected):
        error = error_from_status("p", status, message, env_var="P_KEY", model="m")
        assert type(error) is expected
        assert message in error.message
