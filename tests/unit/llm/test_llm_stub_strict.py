"""The strict wire stub (`gathering.testing.LLMStubServer`) through the real providers and
SDKs: real 400s for tool traffic that does not pair up, the real context-length errors, and
scripted tool calls over the wire."""

from __future__ import annotations

import json

import pytest

from gathering.errors import ContextTooLongError, LLMError
from gathering.llm import (
    AnthropicProvider,
    Message,
    OllamaProvider,
    OpenAIProvider,
    RetryPolicy,
    StreamDone,
    ToolCall,
    ToolSpec,
)
from gathering.testing import StubRequest

ONCE = RetryPolicy(max_attempts=1)
WEATHER = ToolSpec(
    "get_weather",
    "Current weather in a city",
    {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
)
CALL_LINE = 'CALL get_weather {"city": "Paris"}'


def anthropic(stub) -> AnthropicProvider:
    return AnthropicProvider("claude-sonnet-5-5", api_key="k", base_url=stub.url, retry=ONCE)


def openai(stub) -> OpenAIProvider:
    return OpenAIProvider("gpt-4o", api_key="k", base_url=f"{stub.url}/v1", retry=ONCE)


def ollama(stub) -> OllamaProvider:
    return OllamaProvider("llama3.2", host=stub.url, retry=ONCE)


PROVIDERS = [anthropic, openai, ollama]
WITH_IDS = [anthropic, openai]  # the wire formats that carry tool-call ids


def unanswered_call() -> list[Message]:
    return [
        Message.user("Weather?"),
        Message.assistant(tool_calls=[ToolCall("toolu_x", "get_weather", {"city": "Paris"})]),
        Message.user("Never mind."),
    ]


def result_without_its_call() -> list[Message]:
    """A tool result that answers a call made two turns earlier, not the previous message."""
    return [
        Message.user("Weather?"),
        Message.assistant(tool_calls=[ToolCall("call_x", "get_weather", {"city": "Paris"})]),
        Message.tool("call_x", "18C"),
        Message.assistant("It is 18C."),
        Message.tool("call_x", "18C again"),
    ]


async def complete(provider, messages, *, streamed: bool, tools=(WEATHER,)):
    if not streamed:
        return await provider.generate(messages, tools=list(tools))
    events = [event async for event in provider.stream(messages, tools=list(tools))]
    assert isinstance(events[-1], StreamDone)
    return events[-1].completion


class TestToolPairing:
    async def test_anthropic_unanswered_tool_use(self, stub):
        with pytest.raises(LLMError) as caught:
            await anthropic(stub).generate(unanswered_call(), tools=[WEATHER])

        error = caught.value
        assert not isinstance(error, ContextTooLongError)
        assert error.details["status"] == 400
        assert (
            "messages.1: `tool_use` ids were found without `tool_result` blocks immediately "
            "after: toolu_x. Each `tool_use` block must have a corresponding `tool_result` "
            "block in the next message." in error.message
        )

    async def test_anthropic_tool_result_without_tool_use(self, stub):
        with pytest.raises(LLMError) as caught:
            await anthropic(stub).generate(result_without_its_call(), tools=[WEATHER])

        assert caught.value.details["status"] == 400
        assert "messages.4.content.0: unexpected `tool_use_id`" in caught.value.message
        assert "call_x" in caught.value.message

    async def test_openai_unanswered_tool_calls(self, stub):
        with pytest.raises(LLMError) as caught:
            await openai(stub).generate(unanswered_call(), tools=[WEATHER])

        assert caught.value.details["status"] == 400
        assert (
            "An assistant message with 'tool_calls' must be followed by tool messages "
            "responding to each 'tool_call_id'. The following tool_call_ids did not have "
            "response messages: toolu_x" in caught.value.message
        )

    async def test_openai_tool_message_without_a_call(self, stub):
        with pytest.raises(LLMError) as caught:
            await openai(stub).generate(result_without_its_call(), tools=[WEATHER])

        assert caught.value.details["status"] == 400
        assert "messages with role 'tool' must be a response" in caught.value.message

    async def test_openai_400_body_has_the_real_shape(self, stub):
        import httpx

        body = {
            "model": "gpt-4o",
            "messages": [
                {"role": "user", "content": "hi"},
                {
                    "role": "assistant",
                    "content": None,
                    "tool_calls": [
                        {
                            "id": "call_x",
                            "type": "function",
                            "function": {"name": "get_weather", "arguments": "{}"},
                        }
                    ],
                },
            ],
        }
        async with httpx.AsyncClient() as client:
            response = await client.post(f"{stub.url}/v1/chat/completions", json=body)

        assert response.status_code == 400
        assert response.json() == {
            "error": {
                "message": "An assistant message with 'tool_calls' must be followed by tool "
                "messages responding to each 'tool_call_id'. The following tool_call_ids did "
                "not have response messages: call_x",
                "type": "invalid_request_error",
                "param": "messages.[1].role",
                "code": None,
            }
        }

    @pytest.mark.parametrize("make", WITH_IDS)
    @pytest.mark.parametrize("streamed", [False, True])
    async def test_a_tool_round_trip_is_accepted(self, stub, make, streamed):
        provider = make(stub)
        conversation = [Message.user(CALL_LINE)]

        first = await complete(provider, conversation, streamed=streamed)

        assert first.stop_reason == "tool_calls"
        [call] = first.tool_calls
        assert (call.name, dict(call.arguments)) == ("get_weather", {"city": "Paris"})
        assert call.id.startswith("toolu_" if make is anthropic else "call_")
        conversation += [first.message, Message.tool(call.id, "18C, sunny")]

        second = await complete(provider, conversation, streamed=streamed)

        assert second.stop_reason == "end"
        assert second.tool_calls == ()
        assert second.text == f"Echo: {CALL_LINE}"
        assert len(stub.requests) == 2


class TestScriptedCalls:
    @pytest.mark.parametrize("make", PROVIDERS)
    async def test_each_call_gets_a_fresh_id(self, stub, make):
        provider = make(stub)
        first = await provider.generate([Message.user(CALL_LINE)], tools=[WEATHER])
        second = await provider.generate([Message.user(CALL_LINE)], tools=[WEATHER])
        assert first.tool_calls[0].id != second.tool_calls[0].id

    @pytest.mark.parametrize("make", PROVIDERS)
    @pytest.mark.parametrize("streamed", [False, True])
    async def test_several_call_lines_make_parallel_calls(self, stub, make, streamed):
        lines = f'{CALL_LINE}\nCALL get_weather {{"city": "Oslo"}}'
        completion = await complete(make(stub), [Message.user(lines)], streamed=streamed)
        cities = [call.arguments["city"] for call in completion.tool_calls]
        assert cities == ["Paris", "Oslo"]
        assert completion.stop_reason == "tool_calls"

    @pytest.mark.parametrize("make", PROVIDERS)
    async def test_a_tool_not_offered_is_not_called(self, stub, make):
        completion = await make(stub).generate([Message.user(CALL_LINE)])
        assert completion.tool_calls == ()
        assert completion.text == f"Echo: {CALL_LINE}"

    async def test_openai_passes_invalid_arguments_through(self, stub):
        completion = await openai(stub).generate(
            [Message.user("CALL get_weather {not json")], tools=[WEATHER]
        )
        [call] = completion.tool_calls
        assert call.invalid_arguments == "{not json"

    async def test_ollama_tool_round_trip(self, stub):
        provider = ollama(stub)
        first = await provider.generate([Message.user(CALL_LINE)], tools=[WEATHER])
        [call] = first.tool_calls
        second = await provider.generate(
            [Message.user(CALL_LINE), first.message, Message.tool(call.id, "18C")],
            tools=[WEATHER],
        )
        assert second.text == f"Echo: {CALL_LINE}"


class TestContextLimit:
    @pytest.mark.parametrize("make", PROVIDERS)
    @pytest.mark.parametrize("streamed", [False, True])
    async def test_over_the_limit_is_context_too_long(self, stub, make, streamed):
        stub.context_limit_chars = 100

        with pytest.raises(ContextTooLongError) as caught:
            await complete(make(stub), [Message.user("x" * 101)], streamed=streamed)

        assert caught.value.http_status == 422
        assert len(stub.requests) == 1

    @pytest.mark.parametrize("make", PROVIDERS)
    async def test_within_the_limit_is_answered(self, stub, make):
        stub.context_limit_chars = 100
        completion = await make(stub).generate([Message.user("x" * 100)])
        assert completion.text == "Echo: " + "x" * 100

    async def test_tool_traffic_and_system_prompt_count(self, stub):
        conversation = [
            Message.system("s" * 10),
            Message.user("u" * 10),
            Message.assistant(tool_calls=[ToolCall("call_1", "get_weather", {"city": "Paris"})]),
            Message.tool("call_1", "r" * 10),
        ]
        arguments = len(json.dumps({"city": "Paris"}))
        stub.context_limit_chars = 30 + arguments
        await anthropic(stub).generate(conversation, tools=[WEATHER])

        stub.context_limit_chars -= 1
        with pytest.raises(ContextTooLongError):
            await anthropic(stub).generate(conversation, tools=[WEATHER])

    async def test_the_errors_carry_the_real_messages(self, stub):
        stub.context_limit_chars = 10

        with pytest.raises(ContextTooLongError) as anthropic_error:
            await anthropic(stub).generate([Message.user("y" * 11)])
        with pytest.raises(ContextTooLongError) as openai_error:
            await openai(stub).generate([Message.user("y" * 11)])

        assert "prompt is too long: 11 tokens > 10 maximum" in anthropic_error.value.message
        assert (
            "This model's maximum context length is 10 tokens. However, your messages "
            "resulted in 11 tokens." in openai_error.value.message
        )


def test_reset_clears_the_log_the_queue_and_the_limit(llm_stub):
    llm_stub.requests.append(StubRequest("POST", "/v1/messages", {}, b"{}"))
    llm_stub.context_limit_chars = 5
    llm_stub.add_reply("queued")
    hold = llm_stub.hold("wait")

    llm_stub.reset()

    assert llm_stub.requests == []
    assert llm_stub.context_limit_chars is None
    assert hold.released.is_set()
    body = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
    request = StubRequest("POST", "/v1/chat/completions", {}, json.dumps(body).encode())
    assert json.loads(llm_stub.respond(request).body)["choices"][0]["message"] == {
        "role": "assistant",
        "content": "Echo: hi",
    }
    llm_stub.reset()
