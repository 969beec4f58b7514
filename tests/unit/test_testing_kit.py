"""`gathering.testing`, the shipped test kit: queued replies at each wire shape, raw payloads,
the request log, holds and the gate, and an import that pulls in no test dependency.

The stub's strictness (real 400s, context limits, CALL lines) is tested through the real
providers in tests/unit/llm/test_llm_stub_strict.py."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator

import pytest

import gathering.llm
import gathering.testing
from gathering.llm import (
    AnthropicProvider,
    BaseProvider,
    Message,
    OllamaProvider,
    OpenAIProvider,
    RetryPolicy,
    StreamDone,
    TextDelta,
    ToolSpec,
)
from gathering.testing import LLMStubServer, RequestGate, StubRequest, tool_call

ONCE = RetryPolicy(max_attempts=1)
WEATHER = ToolSpec("get_weather", "Current weather in a city")


def anthropic(stub: LLMStubServer) -> BaseProvider:
    return AnthropicProvider("claude-sonnet-4-20250514", api_key="k", base_url=stub.url, retry=ONCE)


def openai(stub: LLMStubServer) -> BaseProvider:
    return OpenAIProvider("gpt-4o", api_key="k", base_url=f"{stub.url}/v1", retry=ONCE)


def ollama(stub: LLMStubServer) -> BaseProvider:
    return OllamaProvider("llama3.2", host=stub.url, retry=ONCE)


PROVIDERS = [anthropic, openai, ollama]


@pytest.fixture
def stub() -> Iterator[LLMStubServer]:
    with LLMStubServer() as server:
        yield server


async def complete(provider: BaseProvider, text: str, *, streamed: bool):  # type: ignore[no-untyped-def]
    messages, tools = [Message.user(text)], [WEATHER]
    if not streamed:
        return await provider.generate(messages, tools=tools)
    events = [event async for event in provider.stream(messages, tools=tools)]
    assert isinstance(events[-1], StreamDone)
    return events[-1].completion


@pytest.mark.parametrize("streamed", [False, True], ids=["json", "stream"])
@pytest.mark.parametrize("make", PROVIDERS)
async def test_queued_replies_come_in_order_at_each_wire_shape_then_the_echo(
    stub: LLMStubServer, make: Callable[[LLMStubServer], BaseProvider], streamed: bool
) -> None:
    stub.add_reply("Bonjour tout le monde", tool_call("get_weather", {"city": "Paris"}))
    provider = make(stub)

    first = await complete(provider, "one", streamed=streamed)
    second = await complete(provider, "two", streamed=streamed)
    third = await complete(provider, "three", streamed=streamed)

    assert first.text == "Bonjour tout le monde"
    assert [(c.name, dict(c.arguments)) for c in second.tool_calls] == [
        ("get_weather", {"city": "Paris"})
    ]
    assert third.text == "Echo: three"
    assert len(stub.requests) == 3
    assert "three" in json.dumps(stub.last.json["messages"][-1])


def test_a_raw_payload_is_sent_as_given_with_its_status_and_headers(stub: LLMStubServer) -> None:
    stub.add_json({"error": {"message": "overloaded"}}, status=503, headers={"x-trace": "t1"})
    body = json.dumps({"messages": [{"role": "user", "content": "hi"}]}).encode()
    request = urllib.request.Request(
        f"{stub.url}/v1/chat/completions", data=body, headers={"x-caller": "kit-test"}
    )

    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=10)

    assert (refused.value.code, refused.value.headers["x-trace"]) == (503, "t1")
    assert json.loads(refused.value.read()) == {"error": {"message": "overloaded"}}
    assert (stub.last.method, stub.last.path) == ("POST", "/v1/chat/completions")
    assert stub.last.headers["x-caller"] == "kit-test"


async def test_a_queued_stream_reaches_the_sdk_event_by_event(stub: LLMStubServer) -> None:
    chunk = {"id": "c1", "object": "chat.completion.chunk", "created": 1, "model": "gpt-4o"}
    events = [
        {**chunk, "choices": [{"index": 0, "delta": {"content": word}, "finish_reason": None}]}
        for word in ("Hello", " world")
    ]
    events.append({**chunk, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
    stub.add_sse("\n\n".join(f"data: {json.dumps(e)}" for e in events) + "\n\ndata: [DONE]")

    deltas = [
        event.text
        async for event in openai(stub).stream([Message.user("hi")])
        if isinstance(event, TextDelta)
    ]

    assert deltas == ["Hello", " world"]


def test_a_reply_must_be_text_or_tool_calls(stub: LLMStubServer) -> None:
    with pytest.raises(TypeError):
        stub.add_reply([])
    with pytest.raises(TypeError):
        stub.add_reply(42)  # type: ignore[arg-type]


def test_the_log_before_any_request_and_an_unknown_path(stub: LLMStubServer) -> None:
    with pytest.raises(LookupError):
        stub.last
    response = stub.respond(StubRequest("GET", "/v2/unknown", {}, b""))
    assert response.status == 404
    assert stub.last.json is None


def test_a_hold_keeps_the_answer_until_released(stub: LLMStubServer) -> None:
    hold = stub.hold("wait for me")
    body = {"model": "m", "stream": False, "messages": [{"role": "user", "content": "wait for me"}]}
    answers: list[str] = []

    def ask() -> None:
        response = stub.respond(StubRequest("POST", "/api/chat", {}, json.dumps(body).encode()))
        answers.append(json.loads(response.body)["message"]["content"])

    asker = threading.Thread(target=ask)
    asker.start()
    assert hold.arrived.wait(10)
    assert answers == []
    hold.release()
    asker.join(10)
    assert answers == ["Echo: wait for me"]


def _post(url: str) -> tuple[int, bytes]:
    body = json.dumps(
        {"model": "m", "stream": False, "messages": [{"role": "user", "content": "hi"}]}
    ).encode()
    request = urllib.request.Request(
        f"{url}/api/chat", data=body, headers={"content-type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def test_the_gate_holds_requests_until_opened(stub: LLMStubServer) -> None:
    gate = RequestGate(stub.url).start()
    try:
        assert gate.environment()["OPENAI_BASE_URL"] == f"{gate.url}/v1"
        gate.close()
        results: list[tuple[int, bytes]] = []
        threads = [threading.Thread(target=lambda: results.append(_post(gate.url)))]
        threads[0].start()
        assert gate.wait_held(1, timeout=10)
        assert results == [] and stub.requests == []

        gate.open()
        threads[0].join(10)
        assert results[0][0] == 200
        assert json.loads(results[0][1])["message"]["content"] == "Echo: hi"

        gate.close()
        threads.append(threading.Thread(target=lambda: results.append(_post(gate.url))))
        threads[1].start()
        assert gate.wait_held(1, timeout=10)
        gate.open(forward=False)
        threads[1].join(10)
        assert results[1][0] == 503
        assert len(stub.requests) == 1
    finally:
        gate.stop()


def test_the_kit_reexports_the_scripted_provider() -> None:
    assert gathering.testing.ScriptedProvider is gathering.llm.ScriptedProvider
    assert gathering.testing.tool_call is gathering.llm.tool_call


def test_importing_the_kit_pulls_in_no_test_dependency() -> None:
    code = (
        "import sys, gathering.testing\n"
        "print(sorted(m for m in ('pytest', '_pytest', 'respx', 'hypothesis') if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    )
    assert out.stdout.strip() == "[]"
