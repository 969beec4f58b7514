"""OllamaProvider at the HTTP wire: recorded native chat API payloads through the real SDK."""

from __future__ import annotations

import socket

import pytest

from gathering.errors import (
    ContextTooLongError,
    LLMError,
    ProviderRateLimitError,
    ProviderTimeoutError,
    ProviderUnavailableError,
)
from gathering.llm import (
    Message,
    OllamaProvider,
    RetryPolicy,
    StreamDone,
    TextDelta,
    ToolCallDelta,
    ToolSpec,
    Usage,
    UsageEvent,
)

FAST = RetryPolicy(max_attempts=3, base_delay=0.001, max_delay=0.005)
WEATHER = ToolSpec(
    "get_weather",
    "Current weather in a city",
    {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
)


def make(stub, **options) -> OllamaProvider:
    options.setdefault("retry", FAST)
    return OllamaProvider("llama3.2", host=stub.url, **options)


async def test_plain_reply(stub, recorded):
    stub.add_json(recorded.json("ollama_chat.json"))

    completion = await make(stub).generate(
        [Message.system("Be brief."), Message.user("Hello")],
        max_tokens=64,
        temperature=0.1,
        extra={"num_ctx": 4096, "keep_alive": "5m"},
    )

    assert completion.text == "Hello! How are you today?"
    assert completion.stop_reason == "end"
    assert completion.usage == Usage(26, 8)
    assert completion.provider == "ollama"
    assert completion.model == "llama3.2"
    assert completion.cost_usd == 0.0
    request = stub.last
    assert request.path == "/api/chat"
    body = request.json
    assert body["model"] == "llama3.2"
    assert body["stream"] is False
    assert body["messages"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hello"},
    ]
    assert body["options"] == {"num_predict": 64, "temperature": 0.1, "num_ctx": 4096}
    assert body["keep_alive"] == "5m"


async def test_host_from_settings(stub, recorded, monkeypatch):
    from gathering.config import get_settings

    monkeypatch.setenv("OLLAMA_HOST", stub.url)
    get_settings.cache_clear()
    try:
        stub.add_json(recorded.json("ollama_chat.json"))
        provider = OllamaProvider(retry=FAST)
        await provider.generate([Message.user("Hi")])
        assert provider.host == stub.url
    finally:
        get_settings.cache_clear()


async def test_stream_ndjson(stub, recorded):
    stub.add_ndjson(recorded.text("ollama_stream.ndjson"))

    events = [event async for event in make(stub).stream([Message.user("Hi")])]

    assert [e.text for e in events if isinstance(e, TextDelta)] == ["Hello", ", world", "!"]
    assert [e.usage for e in events if isinstance(e, UsageEvent)] == [Usage(26, 3)]
    done = events[-1]
    assert isinstance(done, StreamDone)
    assert done.completion.text == "Hello, world!"
    assert done.completion.stop_reason == "end"
    assert stub.last.json["stream"] is True


async def test_two_step_tool_loop_keeps_call_ids(stub, recorded):
    stub.add_json(recorded.json("ollama_tool_calls.json"))
    stub.add_json(recorded.json("ollama_after_tool.json"))
    provider = make(stub)
    conversation = [Message.user("Weather in Paris?")]

    first = await provider.generate(conversation, tools=[WEATHER])

    assert first.stop_reason == "tool_calls"
    (call,) = first.tool_calls
    assert call.name == "get_weather"
    assert call.arguments == {"city": "Paris"}
    assert call.id.startswith("call_")
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

    conversation += [first.message, Message.tool(call.id, "18C, sunny")]
    second = await provider.generate(conversation, tools=[WEATHER])

    assert second.text == "It is 18 degrees in Paris."
    assert stub.last.json["messages"][1:] == [
        {
            "role": "assistant",
            "tool_calls": [{"function": {"name": "get_weather", "arguments": {"city": "Paris"}}}],
        },
        {"role": "tool", "content": "18C, sunny", "tool_name": "get_weather"},
    ]


async def test_stream_tool_calls(stub, recorded):
    stub.add_ndjson(recorded.text("ollama_stream_tool_calls.ndjson"))

    events = [e async for e in make(stub).stream([Message.user("Weather?")], tools=[WEATHER])]

    (delta,) = [e for e in events if isinstance(e, ToolCallDelta)]
    assert delta.name == "get_weather"
    completion = events[-1].completion
    assert completion.stop_reason == "tool_calls"
    assert completion.tool_calls[0].id == delta.id
    assert completion.tool_calls[0].arguments == {"city": "Paris"}
    assert completion.usage == Usage(122, 33)


async def test_missing_model(stub):
    stub.add_json({"error": 'model "llama9" not found, try pulling it first'}, status=404)

    with pytest.raises(LLMError) as caught:
        await OllamaProvider("llama9", host=stub.url).generate([Message.user("Hi")])

    assert "not found" in caught.value.message
    assert caught.value.hint == "pull it first: ollama pull llama9"
    assert len(stub.requests) == 1


async def test_rate_limit(stub):
    stub.add_json({"error": "too many requests"}, status=429)
    provider = make(stub, retry=RetryPolicy(max_attempts=1))

    with pytest.raises(ProviderRateLimitError):
        await provider.generate([Message.user("Hi")])


async def test_context_too_long(stub):
    stub.add_json({"error": "the input length exceeds the context length"}, status=400)

    with pytest.raises(ContextTooLongError):
        await make(stub).generate([Message.user("long")])


async def test_server_error_then_success(stub, recorded):
    stub.add_json({"error": "llama runner process has terminated"}, status=500)
    stub.add_json(recorded.json("ollama_chat.json"))

    completion = await make(stub).generate([Message.user("Hi")])

    assert completion.text.startswith("Hello!")
    assert len(stub.requests) == 2


async def test_error_line_inside_stream(stub):
    stub.add_ndjson('{"error": "an error was encountered while running the model"}')
    provider = make(stub, retry=RetryPolicy(max_attempts=1))

    with pytest.raises(ProviderUnavailableError):
        async for _ in provider.stream([Message.user("Hi")]):
            pass


async def test_timeout(stub, recorded):
    stub.add_json(recorded.json("ollama_chat.json"), delay=1.0)
    provider = make(stub, timeout=0.2, retry=RetryPolicy(max_attempts=1))

    with pytest.raises(ProviderTimeoutError):
        await provider.generate([Message.user("Hi")])


@pytest.mark.parametrize("streaming", [False, True])
async def test_unreachable_server(streaming):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    provider = OllamaProvider(host=f"127.0.0.1:{port}", retry=RetryPolicy(max_attempts=1))

    with pytest.raises(ProviderUnavailableError) as caught:
        if streaming:
            async for _ in provider.stream([Message.user("Hi")]):
                pass
        else:
            await provider.generate([Message.user("Hi")])
    assert "OLLAMA_HOST" in caught.value.hint


def test_construction_needs_no_server():
    provider = OllamaProvider("llama3.2", host="http://127.0.0.1:1")
    assert provider.name == "ollama"
    assert provider.model == "llama3.2"
