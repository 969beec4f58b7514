"""OpenAIProvider at the HTTP wire: recorded Chat Completions payloads through the real SDK."""

from __future__ import annotations

import asyncio

import pytest

from gathering.errors import (
    ContextTooLongError,
    ProviderAuthenticationError,
    ProviderNotConfiguredError,
    ProviderRateLimitError,
    ProviderTimeoutError,
    ProviderUnavailableError,
)
from gathering.llm import (
    Message,
    OpenAIProvider,
    RetryPolicy,
    StreamDone,
    TextDelta,
    ToolCallDelta,
    ToolSpec,
    Usage,
    UsageEvent,
)
from gathering.llm.types import ToolCall

FAST = RetryPolicy(max_attempts=3, base_delay=0.001, max_delay=0.005, max_rate_limit_wait=1.0)
WEATHER = ToolSpec(
    "get_weather",
    "Current weather in a city",
    {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
)


def make(stub, **options) -> OpenAIProvider:
    options.setdefault("retry", FAST)
    options.setdefault("api_key", "sk-test")
    return OpenAIProvider("gpt-4o", base_url=f"{stub.url}/v1", **options)


def error_body(message: str, kind: str, code: str | None = None) -> dict:
    return {"error": {"message": message, "type": kind, "param": None, "code": code}}


async def test_plain_reply(stub, recorded):
    stub.add_json(recorded.json("openai_chat.json"))

    completion = await make(stub).generate(
        [Message.system("Be brief."), Message.user("Hello")],
        temperature=0.5,
        stop="END",
        seed=7,
        extra={"user": "agent-1"},
    )

    assert completion.text == "Hello! How can I assist you today?"
    assert completion.stop_reason == "end"
    assert completion.usage == Usage(19, 10)
    assert completion.model == "gpt-4o-2024-08-06"
    assert completion.provider == "openai"
    assert completion.cost_usd == pytest.approx((19 * 2.5 + 10 * 10.0) / 1e6)
    request = stub.last
    assert request.path == "/v1/chat/completions"
    assert request.headers["authorization"] == "Bearer sk-test"
    assert request.json == {
        "model": "gpt-4o",
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Hello"},
        ],
        "max_tokens": 1024,
        "temperature": 0.5,
        "stop": ["END"],
        "seed": 7,
        "user": "agent-1",
    }


async def test_openai_itself_gets_max_completion_tokens(no_keys, monkeypatch):
    provider = OpenAIProvider("gpt-6-luna", api_key="sk")
    request = provider._request([Message.user("x")], None, {"max_tokens": 50})

    params = provider._params(request)

    assert params["max_completion_tokens"] == 50
    assert "max_tokens" not in params


async def test_compatible_server_needs_no_key(stub, recorded, no_keys):
    stub.add_json(recorded.json("openai_chat.json"))
    provider = OpenAIProvider("qwen2.5-7b-instruct", base_url=f"{stub.url}/v1")

    completion = await provider.generate([Message.user("Hello")])

    assert completion.text.startswith("Hello!")
    assert stub.last.headers["authorization"] == "Bearer not-needed"


async def test_base_url_from_settings(stub, recorded, no_keys, monkeypatch):
    monkeypatch.setenv("OPENAI_BASE_URL", f"{stub.url}/v1")
    stub.add_json(recorded.json("openai_chat.json"))

    await OpenAIProvider("local-model", retry=FAST).generate([Message.user("Hi")])

    assert stub.last.path == "/v1/chat/completions"


async def test_stream_text(stub, recorded):
    stub.add_sse(recorded.text("openai_stream.sse"))

    events = [event async for event in make(stub).stream([Message.user("Hi")])]

    assert [e.text for e in events if isinstance(e, TextDelta)] == ["Hello", ", world", "!"]
    assert [e.usage for e in events if isinstance(e, UsageEvent)] == [Usage(9, 4)]
    done = events[-1]
    assert isinstance(done, StreamDone)
    assert done.completion.text == "Hello, world!"
    assert done.completion.model == "gpt-4o-mini-2024-07-18"
    assert stub.last.json["stream"] is True
    assert stub.last.json["stream_options"] == {"include_usage": True}


async def test_two_step_tool_loop_keeps_call_ids(stub, recorded):
    stub.add_json(recorded.json("openai_tool_calls.json"))
    stub.add_json(recorded.json("openai_after_tool.json"))
    provider = make(stub)
    conversation = [Message.user("Weather in Paris and Lyon?")]

    first = await provider.generate(conversation, tools=[WEATHER])

    assert first.stop_reason == "tool_calls"
    assert first.text == ""
    assert first.tool_calls == (
        ToolCall("call_abc123", "get_weather", {"city": "Paris"}),
        ToolCall("call_def456", "get_weather", {"city": "Lyon"}),
    )
    assert stub.last.json["tools"] == [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "description": "Current weather in a city",
                "parameters": dict(WEATHER.parameters),
            },
        }
    ]

    conversation += [
        first.message,
        Message.tool("call_abc123", "18C, sunny"),
        Message.tool("call_def456", "21C"),
    ]
    second = await provider.generate(conversation, tools=[WEATHER])

    assert second.text == "Paris: 18C and sunny. Lyon: 21C."
    sent = stub.last.json["messages"]
    assert sent[1] == {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {
                "id": "call_abc123",
                "type": "function",
                "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'},
            },
            {
                "id": "call_def456",
                "type": "function",
                "function": {"name": "get_weather", "arguments": '{"city":"Lyon"}'},
            },
        ],
    }
    assert sent[2:] == [
        {"role": "tool", "tool_call_id": "call_abc123", "content": "18C, sunny"},
        {"role": "tool", "tool_call_id": "call_def456", "content": "21C"},
    ]


async def test_stream_tool_calls(stub, recorded):
    stub.add_sse(recorded.text("openai_stream_tool_calls.sse"))

    events = [e async for e in make(stub).stream([Message.user("Weather?")], tools=[WEATHER])]

    deltas = [e for e in events if isinstance(e, ToolCallDelta)]
    assert deltas[0] == ToolCallDelta(0, id="call_DdmO9pD3xa9XTPNJ32zg2hcA", name="get_weather")
    completion = events[-1].completion
    assert completion.stop_reason == "tool_calls"
    assert completion.tool_calls == (
        ToolCall("call_DdmO9pD3xa9XTPNJ32zg2hcA", "get_weather", {"city": "Paris"}),
        ToolCall("call_Xk2mP0qR7sT9uV1wY3zA5bC7", "get_time", {"tz": "Europe/Paris"}),
    )
    assert completion.usage == Usage(70, 40)


async def test_malformed_tool_arguments_are_kept_raw(stub, recorded):
    body = recorded.json("openai_tool_calls.json")
    body["choices"][0]["message"]["tool_calls"][0]["function"]["arguments"] = '{"city": "Par'
    stub.add_json(body)

    completion = await make(stub).generate([Message.user("Weather?")], tools=[WEATHER])

    broken = completion.tool_calls[0]
    assert broken.arguments == {}
    assert broken.invalid_arguments == '{"city": "Par'


async def test_authentication_error(stub):
    stub.add_json(
        error_body(
            "Incorrect API key provided: sk-test.", "invalid_request_error", "invalid_api_key"
        ),
        status=401,
    )

    with pytest.raises(ProviderAuthenticationError) as caught:
        await make(stub).generate([Message.user("Hi")])

    # The key was given (api_key=): the hint does not send the user to OPENAI_API_KEY.
    assert "the key this provider was given" in caught.value.hint
    assert len(stub.requests) == 1


async def test_long_rate_limit_is_raised_with_retry_after(stub):
    stub.add_json(
        error_body("Rate limit reached for gpt-4o", "requests", "rate_limit_exceeded"),
        status=429,
        headers={"retry-after": "42"},
    )

    with pytest.raises(ProviderRateLimitError) as caught:
        await make(stub).generate([Message.user("Hi")])

    assert caught.value.retry_after == 42.0
    assert len(stub.requests) == 1


async def test_short_rate_limit_is_waited_out(stub, recorded):
    stub.add_json(
        error_body("Rate limit reached", "requests", "rate_limit_exceeded"),
        status=429,
        headers={"retry-after-ms": "15"},
    )
    stub.add_json(recorded.json("openai_chat.json"))

    completion = await make(stub).generate([Message.user("Hi")])

    assert completion.usage == Usage(19, 10)
    assert len(stub.requests) == 2


async def test_exhausted_quota_is_not_retried(stub):
    stub.add_json(
        error_body("You exceeded your current quota", "insufficient_quota", "insufficient_quota"),
        status=429,
    )

    with pytest.raises(ProviderRateLimitError) as caught:
        await make(stub).generate([Message.user("Hi")])

    assert caught.value.retryable is False
    assert len(stub.requests) == 1


async def test_context_too_long(stub):
    stub.add_json(
        error_body(
            "This model's maximum context length is 128000 tokens. However, your messages "
            "resulted in 130000 tokens.",
            "invalid_request_error",
            "context_length_exceeded",
        ),
        status=400,
    )

    with pytest.raises(ContextTooLongError):
        await make(stub).generate([Message.user("long")])


async def test_server_errors_are_retried_then_raised(stub):
    for _ in range(3):
        stub.add_json(error_body("The server is overloaded", "server_error"), status=503)

    with pytest.raises(ProviderUnavailableError):
        await make(stub).generate([Message.user("Hi")])
    assert len(stub.requests) == 3


async def test_timeout(stub, recorded):
    stub.add_json(recorded.json("openai_chat.json"), delay=1.0)
    provider = make(stub, timeout=0.2, retry=RetryPolicy(max_attempts=1))

    with pytest.raises(ProviderTimeoutError):
        await provider.generate([Message.user("Hi")])


async def test_error_inside_stream(stub):
    stub.add_sse('data: {"error": {"message": "upstream failed", "type": "server_error"}}')
    provider = make(stub, retry=RetryPolicy(max_attempts=1))

    with pytest.raises(ProviderUnavailableError):
        async for _ in provider.stream([Message.user("Hi")]):
            pass


async def test_stream_failure_after_output_is_not_retried(stub, recorded):
    partial = recorded.text("openai_stream.sse").split("\n\n")[:3]
    stub.add_sse("\n\n".join([*partial, 'data: {"error": {"message": "boom", "type": "x"}}']))
    stub.add_sse(recorded.text("openai_stream.sse"))
    seen: list[str] = []

    with pytest.raises(ProviderUnavailableError):
        async for event in make(stub).stream([Message.user("Hi")]):
            if isinstance(event, TextDelta):
                seen.append(event.text)

    assert seen == ["Hello", ", world"]
    assert len(stub.requests) == 1


async def test_missing_key_is_reported_at_first_call(no_keys):
    provider = OpenAIProvider("gpt-4o")

    with pytest.raises(ProviderNotConfiguredError) as caught:
        await provider.generate([Message.user("Hi")])

    assert "OPENAI_API_KEY" in str(caught.value)
    assert 'provider="local"' in str(caught.value)


async def test_one_provider_serves_several_event_loops(stub, recorded):
    stub.add_json(recorded.json("openai_chat.json"))
    stub.add_json(recorded.json("openai_chat.json"))
    provider = make(stub)

    def in_a_new_loop():
        return asyncio.run(provider.generate([Message.user("Hi")]))

    first = await asyncio.to_thread(in_a_new_loop)
    second = await asyncio.to_thread(in_a_new_loop)

    assert first.text == second.text == "Hello! How can I assist you today?"


async def test_a_given_key_quoted_by_a_failure_is_masked_in_logs_however_many_keys_came_since(
    stub, capsys
):
    import logging

    from gathering import observability
    from gathering.config import load_settings

    key = "sk-given-0123456789abcdefQRST"
    provider = make(stub, api_key=key, retry=RetryPolicy(max_attempts=1))
    observability.mask_in_logs(key)
    for n in range(observability.MAX_MASKED_SECRETS + 5):  # a long-lived process's other keys
        observability.mask_in_logs(f"sk-other-key-{n:06d}")
    assert observability.mask_secrets(key) == key  # bounded: the oldest key left the set
    assert len(observability._MASKED_SECRETS) == observability.MAX_MASKED_SECRETS
    stub.add_json(error_body(f"Incorrect API key provided: {key}.", "x"), status=401)

    root = logging.getLogger()
    handlers = root.handlers[:]
    observability.configure_logging(load_settings(log_format="console"))
    try:
        with pytest.raises(ProviderAuthenticationError) as caught:
            await provider.generate([Message.user("Hi")])
        logging.getLogger("gathering.turns").error("turn failed", exc_info=caught.value)
    finally:
        root.handlers[:] = handlers
    printed = capsys.readouterr()
    assert "Incorrect API key provided: sk-...QRST" in printed.err  # the traceback, masked
    assert key not in printed.out + printed.err


async def test_a_log_handler_that_fails_reports_it_without_the_key(stub, capsys):
    import logging

    from gathering import observability
    from gathering.config import load_settings

    key = "sk-given-handler-0123456789UVWX"
    stub.add_json(error_body(f"Incorrect API key provided: {key}.", "x"), status=401)
    root = logging.getLogger()
    handlers = root.handlers[:]
    observability.configure_logging(load_settings(log_format="console"))
    try:
        with pytest.raises(ProviderAuthenticationError):
            try:
                await make(stub, api_key=key, retry=RetryPolicy(max_attempts=1)).generate(
                    [Message.user("Hi")]
                )
            finally:  # a message that does not format: the handler fails, mid-exception
                logging.getLogger("gathering.turns").error("turn %s failed: %s", "t1")
    finally:
        root.handlers[:] = handlers
    printed = capsys.readouterr().err
    assert "--- Logging error ---" in printed and "not enough arguments" in printed
    assert "Incorrect API key provided: sk-...UVWX" in printed  # the exception being handled
    assert key not in printed


async def test_the_environments_key_is_masked_again_when_the_provider_fails(
    stub, capsys, monkeypatch
):
    from gathering import observability
    from gathering.config import get_settings

    key = "sk-environment-0123456789abcdYZAB"
    monkeypatch.setenv("OPENAI_API_KEY", key)
    get_settings.cache_clear()
    try:
        provider = make(stub, api_key=None, retry=RetryPolicy(max_attempts=1))
        for n in range(observability.MAX_MASKED_SECRETS + 5):  # the key leaves the set
            observability.mask_in_logs(f"sk-other-key-{n:06d}")
        stub.add_json(error_body(f"Incorrect API key provided: {key}.", "x"), status=401)
        with pytest.raises(ProviderAuthenticationError):
            await provider.generate([Message.user("Hi")])
        assert observability.mask_secrets(key) == "sk-...YZAB"
    finally:
        get_settings.cache_clear()


async def test_a_reported_model_that_is_no_name_is_not_taken_nor_made_a_metric_label(
    stub, recorded
):
    from gathering.observability import LLM_TOKENS

    def labels() -> set[str]:
        return {
            sample.labels["model"]
            for metric in LLM_TOKENS.collect()
            for sample in metric.samples
            if sample.labels.get("provider") == "openai"
        }

    for odd in (123, ["a"], {"x": 1}, "m" * 201):
        reply = recorded.json("openai_chat.json") | {"model": odd}
        stub.add_json(reply)
        completion = await make(stub).generate([Message.user("Hi")])
        assert completion.model == "gpt-4o" and completion.cost_usd is not None
    stub.add_json(recorded.json("openai_chat.json") | {"model": "made-up-model-7781"})
    completion = await make(stub).generate([Message.user("Hi")])
    assert completion.model == "made-up-model-7781"  # what answered, priced as gpt-4o
    assert completion.cost_usd is not None
    assert "made-up-model-7781" not in labels()
