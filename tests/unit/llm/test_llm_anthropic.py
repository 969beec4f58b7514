"""AnthropicProvider at the HTTP wire: recorded Messages API payloads through the real SDK."""

from __future__ import annotations

import socket

import pytest

from gathering.errors import (
    ContextTooLongError,
    LLMError,
    ProviderAuthenticationError,
    ProviderNotConfiguredError,
    ProviderRateLimitError,
    ProviderTimeoutError,
    ProviderUnavailableError,
)
from gathering.llm import (
    AnthropicProvider,
    Message,
    RetryPolicy,
    StreamDone,
    TextDelta,
    ToolCallDelta,
    ToolSpec,
    Usage,
    UsageEvent,
)
from gathering.llm.anthropic import anthropic_messages
from gathering.llm.types import ToolCall, ToolResult

FAST = RetryPolicy(max_attempts=3, base_delay=0.001, max_delay=0.005, max_rate_limit_wait=1.0)
WEATHER = ToolSpec(
    "get_weather",
    "Current weather in a city",
    {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
)


def make(stub, **options) -> AnthropicProvider:
    options.setdefault("retry", FAST)
    return AnthropicProvider(
        "claude-sonnet-5-5", api_key="sk-ant-test", base_url=stub.url, **options
    )


def sent_key(request) -> str | None:
    if "x-api-key" in request.headers:
        return request.headers["x-api-key"]
    return request.headers.get("authorization", "").removeprefix("Bearer ")


def error_body(kind: str, message: str) -> dict:
    return {"type": "error", "error": {"type": kind, "message": message}}


async def test_plain_reply(stub, recorded):
    stub.add_json(recorded.json("anthropic_message.json"))
    provider = make(stub)

    completion = await provider.generate(
        [Message.system("Be brief."), Message.user("Hello")], max_tokens=200, temperature=0.2
    )

    assert completion.text == "Hello! How can I help you today?"
    assert completion.stop_reason == "end"
    assert completion.usage == Usage(12, 11)
    assert completion.model == "claude-sonnet-5-5"
    assert completion.provider == "anthropic"
    assert completion.tool_calls == ()
    assert completion.latency > 0
    assert completion.cost_usd == pytest.approx((12 * 2.0 + 11 * 10.0) / 1e6)
    request = stub.last
    assert request.method == "POST"
    assert request.path == "/v1/messages"
    assert sent_key(request) == "sk-ant-test"
    assert "anthropic-version" in request.headers
    assert request.json == {
        "model": "claude-sonnet-5-5",
        "max_tokens": 200,
        "system": "Be brief.",
        "messages": [{"role": "user", "content": [{"type": "text", "text": "Hello"}]}],
        "temperature": 0.2,
    }


async def test_stream_text(stub, recorded):
    stub.add_sse(recorded.text("anthropic_stream.sse"))
    provider = make(stub)

    events = [event async for event in provider.stream([Message.user("Hi")])]

    assert [e.text for e in events if isinstance(e, TextDelta)] == ["Hello", ", world", "!"]
    assert [e.usage for e in events if isinstance(e, UsageEvent)] == [Usage(14, 6)]
    done = events[-1]
    assert isinstance(done, StreamDone)
    assert done.completion.text == "Hello, world!"
    assert done.completion.stop_reason == "end"
    assert done.completion.usage == Usage(14, 6)
    assert done.completion.model == "claude-sonnet-5-5"
    assert stub.last.json["stream"] is True


async def test_two_step_tool_loop_keeps_call_ids(stub, recorded):
    stub.add_json(recorded.json("anthropic_tool_use.json"))
    stub.add_json(recorded.json("anthropic_after_tool.json"))
    provider = make(stub)
    conversation = [Message.user("Weather in Paris?")]

    first = await provider.generate(conversation, tools=[WEATHER])

    assert first.stop_reason == "tool_calls"
    assert first.text == "I'll check the weather in Paris."
    assert first.tool_calls == (
        ToolCall(
            "toolu_01A09q90qw90lq917835lq9", "get_weather", {"city": "Paris", "unit": "celsius"}
        ),
    )
    assert stub.last.json["tools"] == [
        {
            "name": "get_weather",
            "description": "Current weather in a city",
            "input_schema": dict(WEATHER.parameters),
        }
    ]

    conversation += [first.message, Message.tool(first.tool_calls[0].id, "18C, sunny")]
    second = await provider.generate(conversation, tools=[WEATHER])

    assert second.text == "It is 18 degrees and sunny in Paris."
    assert stub.last.json["messages"] == [
        {"role": "user", "content": [{"type": "text", "text": "Weather in Paris?"}]},
        {
            "role": "assistant",
            "content": [
                {"type": "text", "text": "I'll check the weather in Paris."},
                {
                    "type": "tool_use",
                    "id": "toolu_01A09q90qw90lq917835lq9",
                    "name": "get_weather",
                    "input": {"city": "Paris", "unit": "celsius"},
                },
            ],
        },
        {
            "role": "user",
            "content": [
                {
                    "type": "tool_result",
                    "tool_use_id": "toolu_01A09q90qw90lq917835lq9",
                    "content": "18C, sunny",
                }
            ],
        },
    ]


async def test_stream_tool_use(stub, recorded):
    stub.add_sse(recorded.text("anthropic_stream_tool_use.sse"))
    provider = make(stub)

    events = [e async for e in provider.stream([Message.user("Weather?")], tools=[WEATHER])]

    deltas = [e for e in events if isinstance(e, ToolCallDelta)]
    assert deltas[0] == ToolCallDelta(0, id="toolu_01T1x1fJ34qAmk2tNTrN7Up6", name="get_weather")
    assert "".join(d.arguments_delta for d in deltas) == '{"city": "Paris"}'
    completion = events[-1].completion
    assert completion.text == "Let me check"
    assert completion.stop_reason == "tool_calls"
    assert completion.tool_calls == (
        ToolCall("toolu_01T1x1fJ34qAmk2tNTrN7Up6", "get_weather", {"city": "Paris"}),
    )
    assert completion.usage == Usage(472, 89)


def test_messages_merge_consecutive_turns_and_mark_errors():
    system, turns = anthropic_messages(
        [
            Message.system("a"),
            Message.system("b"),
            Message.assistant(tool_calls=[ToolCall("t1", "x", {}), ToolCall("t2", "y", {})]),
            Message.tool_outputs([ToolResult("t1", "ok"), ToolResult("t2", "boom", is_error=True)]),
            Message.user("and now?"),
        ]
    )
    assert system == "a\n\nb"
    assert [turn["role"] for turn in turns] == ["assistant", "user"]
    assert turns[1]["content"] == [
        {"type": "tool_result", "tool_use_id": "t1", "content": "ok"},
        {"type": "tool_result", "tool_use_id": "t2", "content": "boom", "is_error": True},
        {"type": "text", "text": "and now?"},
    ]


async def test_authentication_error_is_not_retried(stub):
    stub.add_json(error_body("authentication_error", "invalid x-api-key"), status=401)

    with pytest.raises(ProviderAuthenticationError) as caught:
        await make(stub).generate([Message.user("Hi")])

    assert "invalid x-api-key" in caught.value.message
    # The key was given (api_key=): the hint does not send the user to ANTHROPIC_API_KEY.
    assert "the key this provider was given" in caught.value.hint
    assert len(stub.requests) == 1


async def test_long_rate_limit_is_raised_with_retry_after(stub):
    stub.add_json(
        error_body("rate_limit_error", "Number of request tokens has exceeded your limit"),
        status=429,
        headers={"retry-after": "30"},
    )

    with pytest.raises(ProviderRateLimitError) as caught:
        await make(stub).generate([Message.user("Hi")])

    assert caught.value.retry_after == 30.0
    assert caught.value.to_dict()["details"] == {"retry_after": 30.0}
    assert len(stub.requests) == 1


async def test_short_rate_limit_is_waited_out(stub, recorded):
    stub.add_json(
        error_body("rate_limit_error", "slow down"), status=429, headers={"retry-after-ms": "20"}
    )
    stub.add_json(recorded.json("anthropic_message.json"))

    completion = await make(stub).generate([Message.user("Hi")])

    assert completion.text.startswith("Hello!")
    assert len(stub.requests) == 2


async def test_context_too_long(stub):
    stub.add_json(
        error_body("invalid_request_error", "prompt is too long: 210000 tokens > 200000 maximum"),
        status=400,
    )

    with pytest.raises(ContextTooLongError):
        await make(stub).generate([Message.user("very long")])
    assert len(stub.requests) == 1


async def test_overloaded_is_retried_then_raised(stub):
    for _ in range(3):
        stub.add_json(error_body("overloaded_error", "Overloaded"), status=529)

    with pytest.raises(ProviderUnavailableError):
        await make(stub).generate([Message.user("Hi")])
    assert len(stub.requests) == 3


async def test_server_error_then_success(stub, recorded):
    stub.add_json(error_body("api_error", "Internal server error"), status=500)
    stub.add_json(recorded.json("anthropic_message.json"))

    completion = await make(stub).generate([Message.user("Hi")])

    assert completion.usage == Usage(12, 11)
    assert len(stub.requests) == 2


async def test_error_event_inside_stream_is_retried(stub, recorded):
    stub.add_sse(recorded.text("anthropic_stream_overloaded.sse"))
    stub.add_sse(recorded.text("anthropic_stream.sse"))

    events = [e async for e in make(stub).stream([Message.user("Hi")])]

    assert events[-1].completion.text == "Hello, world!"
    assert len(stub.requests) == 2


async def test_error_event_inside_stream_maps_to_unavailable(stub, recorded):
    stub.add_sse(recorded.text("anthropic_stream_overloaded.sse"))
    provider = make(stub, retry=RetryPolicy(max_attempts=1))

    with pytest.raises(ProviderUnavailableError):
        async for _ in provider.stream([Message.user("Hi")]):
            pass


async def test_not_found_model(stub):
    stub.add_json(error_body("not_found_error", "model: claude-nope"), status=404)

    with pytest.raises(LLMError) as caught:
        await make(stub).generate([Message.user("Hi")])
    assert caught.value.code == "llm_error"
    assert "claude-sonnet-5-5" in caught.value.hint


async def test_timeout(stub, recorded):
    stub.add_json(recorded.json("anthropic_message.json"), delay=1.0)
    provider = make(stub, timeout=0.2, retry=RetryPolicy(max_attempts=1))

    with pytest.raises(ProviderTimeoutError):
        await provider.generate([Message.user("Hi")])


async def test_unreachable_server():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    provider = AnthropicProvider(
        api_key="k", base_url=f"http://127.0.0.1:{port}", retry=RetryPolicy(max_attempts=1)
    )

    with pytest.raises(ProviderUnavailableError):
        await provider.generate([Message.user("Hi")])


async def test_missing_key_is_reported_at_first_call(no_keys):
    provider = AnthropicProvider("claude-sonnet-4-20250514")

    with pytest.raises(ProviderNotConfiguredError) as caught:
        await provider.generate([Message.user("Hi")])

    assert "ANTHROPIC_API_KEY" in str(caught.value)
    assert 'provider="local"' in str(caught.value)


async def test_key_from_settings(stub, recorded, no_keys, monkeypatch):
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-from-env")
    stub.add_json(recorded.json("anthropic_message.json"))
    provider = AnthropicProvider(base_url=stub.url)

    await provider.generate([Message.user("Hi")])

    assert sent_key(stub.last) == "sk-ant-from-env"


def test_tool_traffic_is_told_as_text_when_the_request_has_no_tools():
    from gathering.llm import Message, ToolCall, ToolResult
    from gathering.llm.anthropic import anthropic_messages

    messages = [
        Message.user("add"),
        Message.assistant("", [ToolCall("toolu_1", "add", {"a": 1})]),
        Message.tool_outputs([ToolResult("toolu_1", "2")]),
        Message.user("thanks"),
    ]
    _, with_tools = anthropic_messages(messages)
    assert with_tools[1]["content"][0]["type"] == "tool_use"
    _, without = anthropic_messages(messages, with_tools=False)
    kinds = {block["type"] for turn in without for block in turn["content"]}
    assert kinds == {"text"}
    assert "called tool add (toolu_1)" in without[1]["content"][0]["text"]
    assert without[2]["content"][0]["text"] == "[tool result toolu_1] 2"
