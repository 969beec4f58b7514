"""ScriptedProvider, and through it the behaviour every provider shares (BaseProvider)."""

from __future__ import annotations

import asyncio

import pytest

from gathering.errors import (
    InvalidInputError,
    LLMError,
    ProviderRateLimitError,
    ProviderUnavailableError,
)
from gathering.llm import (
    Completion,
    LLMProvider,
    Message,
    RetryPolicy,
    ScriptedProvider,
    StreamDone,
    TextDelta,
    ToolCallDelta,
    ToolSpec,
    Usage,
    UsageEvent,
    tool_call,
)

SEARCH = ToolSpec("search", "Search the web", {"type": "object", "properties": {"q": {}}})


async def test_replies_in_order_and_records_calls():
    provider = ScriptedProvider(["first", "second"])

    one = await provider.generate([Message.user("a")], temperature=0.3)
    two = await provider.generate([Message.user("b")], tools=[SEARCH])

    assert (one.text, two.text) == ("first", "second")
    assert one.provider == "scripted" and one.cost_usd == 0.0
    assert one.usage == Usage(1, 1)
    assert len(provider.calls) == 2
    assert provider.calls[0].options.temperature == 0.3
    assert provider.last_call.tools == (SEARCH,)
    assert provider.last_call.messages == (Message.user("b"),)
    assert provider.remaining == 0


async def test_is_an_llm_provider():
    assert isinstance(ScriptedProvider(), LLMProvider)


async def test_reply_function_sync_and_async():
    echo = ScriptedProvider(lambda messages: f"echo: {messages[-1].content}")

    async def later(messages):
        await asyncio.sleep(0)
        return "async " + messages[0].content

    assert (await echo.generate([Message.user("hi")])).text == "echo: hi"
    assert (await ScriptedProvider(later).generate([Message.user("x")])).text == "async x"
    assert echo.remaining == 0


async def test_tool_call_loop_keeps_ids():
    call = tool_call("search", {"q": "cats"})
    provider = ScriptedProvider([call, "Cats are great."])
    conversation = [Message.user("tell me about cats")]

    first = await provider.generate(conversation, tools=[SEARCH])
    assert first.stop_reason == "tool_calls"
    assert first.tool_calls == (call,)

    conversation += [first.message, Message.tool(call.id, "cats: small felines")]
    second = await provider.generate(conversation, tools=[SEARCH])

    assert second.text == "Cats are great."
    assert provider.last_call.messages[-1].tool_results[0].call_id == call.id


async def test_several_tool_calls_and_completion_replies():
    calls = [tool_call("search", {"q": "a"}), tool_call("search", {"q": "b"}, call_id="fixed")]
    canned = Completion("canned", usage=Usage(5, 6), model="other-model")
    provider = ScriptedProvider([calls, canned])

    first = await provider.generate([Message.user("x")])
    second = await provider.generate([Message.user("y")])

    assert [c.id for c in first.tool_calls][1] == "fixed"
    assert second.text == "canned" and second.model == "other-model"
    assert second.usage == Usage(5, 6)


async def test_streams_token_by_token():
    provider = ScriptedProvider(["Hello brave new world"])

    events = [event async for event in provider.stream([Message.user("hi")])]

    texts = [e.text for e in events if isinstance(e, TextDelta)]
    assert texts == ["Hello ", "brave ", "new ", "world"]
    assert isinstance(events[-2], UsageEvent)
    done = events[-1]
    assert isinstance(done, StreamDone)
    assert done.completion.text == "Hello brave new world"
    assert provider.last_call.streamed is True


async def test_streams_tool_calls():
    call = tool_call("search", {"q": "x"})
    provider = ScriptedProvider([call])

    events = [event async for event in provider.stream([Message.user("hi")], tools=[SEARCH])]

    assert events[0] == ToolCallDelta(0, id=call.id, name="search", arguments_delta='{"q": "x"}')
    assert events[-1].completion.tool_calls == (call,)
    assert events[-1].completion.stop_reason == "tool_calls"


async def test_leaving_a_stream_early_is_clean():
    provider = ScriptedProvider(["one two three four", "next"])

    async for event in provider.stream([Message.user("hi")]):
        assert isinstance(event, TextDelta)
        break

    assert (await provider.generate([Message.user("again")])).text == "next"


async def test_running_out_of_replies():
    provider = ScriptedProvider(["only"])
    await provider.generate([Message.user("1")])

    with pytest.raises(LLMError, match="no reply left for call #2"):
        await provider.generate([Message.user("2")])


async def test_scripted_errors_are_raised_without_retry_by_default():
    provider = ScriptedProvider([ProviderUnavailableError("down"), "up"])

    with pytest.raises(ProviderUnavailableError):
        await provider.generate([Message.user("x")])
    assert len(provider.calls) == 1


async def test_transient_errors_are_retried():
    retry = RetryPolicy(max_attempts=3, base_delay=0.001, max_delay=0.002)
    provider = ScriptedProvider(
        [ProviderUnavailableError("down"), ProviderRateLimitError("busy", retry_after=0.01), "up"],
        retry=retry,
    )

    completion = await provider.generate([Message.user("x")])

    assert completion.text == "up"
    assert len(provider.calls) == 3
    assert completion.latency >= 0.01


async def test_long_rate_limit_is_not_waited():
    provider = ScriptedProvider(
        [ProviderRateLimitError("busy", retry_after=3600), "never"],
        retry=RetryPolicy(max_attempts=5, max_rate_limit_wait=5),
    )

    with pytest.raises(ProviderRateLimitError) as caught:
        await provider.generate([Message.user("x")])
    assert caught.value.retry_after == 3600


async def test_stream_retries_before_first_event():
    retry = RetryPolicy(max_attempts=2, base_delay=0.001, max_delay=0.001)
    provider = ScriptedProvider([ProviderUnavailableError("down"), "fine"], retry=retry)

    events = [event async for event in provider.stream([Message.user("x")])]

    assert events[-1].completion.text == "fine"
    assert len(provider.calls) == 2


async def test_stream_gives_up_on_permanent_error():
    provider = ScriptedProvider([LLMError("bad request")], retry=RetryPolicy(max_attempts=3))

    with pytest.raises(LLMError, match="bad request"):
        async for _ in provider.stream([Message.user("x")]):
            pass
    assert len(provider.calls) == 1


async def test_delay():
    provider = ScriptedProvider(["slow"], delay=0.02)
    completion = await provider.generate([Message.user("x")])
    assert completion.latency >= 0.02


async def test_non_reply_is_a_type_error():
    with pytest.raises(TypeError):
        await ScriptedProvider([42]).generate([Message.user("x")])  # type: ignore[list-item]


def test_last_call_before_any_call():
    with pytest.raises(LookupError):
        _ = ScriptedProvider().last_call


async def test_add_replies():
    provider = ScriptedProvider()
    provider.add_replies("a", "b")
    assert provider.remaining == 2
    assert (await provider.generate([Message.user("x")])).text == "a"


class TestCallChecks:
    @pytest.mark.parametrize(
        "options",
        [
            {"max_tokens": 0},
            {"max_tokens": "many"},
            {"temperature": 3},
            {"top_p": 0},
            {"timeout": -1},
            {"stop": [1, 2]},
            {"frequency": 1},
            {"temperature": "hot"},
            {"max_tokens": True},
            {"seed": 1.5},
            {"extra": ["a"]},
        ],
    )
    async def test_bad_options(self, options):
        with pytest.raises(InvalidInputError):
            await ScriptedProvider(["x"]).generate([Message.user("x")], **options)

    async def test_options_are_normalised(self):
        provider = ScriptedProvider(["x"], max_tokens=99, temperature=0.1)
        await provider.generate(
            [Message.user("x")], stop="END", top_p=0.9, extra={"a": 1}, seed=3, timeout=5
        )
        options = provider.last_call.options
        assert options.stop == ("END",)
        assert (options.max_tokens, options.temperature, options.top_p) == (99, 0.1, 0.9)
        assert (options.extra, options.seed, options.timeout) == ({"a": 1}, 3, 5)

    @pytest.mark.parametrize(
        "messages",
        [
            [],
            "hello",
            ["hello"],
            [Message.user("x"), Message.tool("unknown-id", "result")],
        ],
    )
    async def test_bad_conversations(self, messages):
        with pytest.raises(InvalidInputError):
            await ScriptedProvider(["x"]).generate(messages)

    async def test_duplicate_tool_names(self):
        with pytest.raises(InvalidInputError):
            await ScriptedProvider(["x"]).generate([Message.user("x")], tools=[SEARCH, SEARCH])

    def test_bad_constructor_arguments(self):
        with pytest.raises(InvalidInputError):
            ScriptedProvider(model="")
        with pytest.raises(InvalidInputError):
            ScriptedProvider(timeout=0)
        with pytest.raises(InvalidInputError):
            ScriptedProvider(max_tokens=-5)

    def test_repr(self):
        assert repr(ScriptedProvider(model="m")) == "ScriptedProvider(model='m')"
