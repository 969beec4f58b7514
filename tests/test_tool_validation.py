"""Tool arguments are checked against the tool's JSON Schema before the tool runs, on the sync
and the async path; async tools overlap, plain ones run off the event loop; hung tools stop."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Annotated, Any

import pytest
from pydantic import Field

from gathering.errors import InvalidInputError, ToolArgumentsError, ToolTimeoutError
from gathering.llm import ToolSpec
from gathering.tools import FunctionTool, ToolRegistry, function_tool

CALLS: list[dict[str, Any]] = []


def record(**arguments: Any) -> str:
    CALLS.append(arguments)
    return "ran"


STRICT = ToolSpec(
    "strict",
    "A tool with a strict schema.",
    {
        "type": "object",
        "properties": {
            "name": {"type": "string"},
            "count": {"type": "integer", "minimum": 0},
            "config": {
                "type": "object",
                "properties": {"level": {"type": "integer"}},
                "required": ["level"],
            },
            "tags": {"type": "array", "items": {"type": "string"}},
        },
        "required": ["name"],
        "additionalProperties": False,
    },
)


@pytest.fixture
def tools() -> ToolRegistry:
    CALLS.clear()
    return ToolRegistry([FunctionTool(STRICT, record, effect="read")])


async def test_execute_valid_params_succeeds(tools):
    assert await tools.execute("strict", {"name": "a", "count": 2}) == "ran"
    assert CALLS == [{"name": "a", "count": 2}]


async def test_execute_invalid_type_raises(tools):
    with pytest.raises(ToolArgumentsError) as caught:
        await tools.execute("strict", {"name": 5})
    assert caught.value.details["errors"] == [
        {"path": "name", "message": '5 is not of type "string"'}
    ]
    assert CALLS == []  # refused before the tool ran


async def test_execute_missing_required_raises(tools):
    with pytest.raises(ToolArgumentsError, match='"name" is a required property'):
        await tools.execute("strict", {"count": 1})
    assert CALLS == []


async def test_execute_extra_params_with_no_additional_properties(tools):
    with pytest.raises(ToolArgumentsError, match="'surprise' was unexpected"):
        await tools.execute("strict", {"name": "a", "surprise": True})
    assert CALLS == []


async def test_execute_no_schema_skips_validation():
    """A tool whose schema has no properties or rules takes any arguments."""
    tools = ToolRegistry([FunctionTool(ToolSpec("loose", "Anything."), record, effect="read")])
    CALLS.clear()
    assert await tools.execute("loose", {"whatever": [1, {"x": None}]}) == "ran"
    assert CALLS == [{"whatever": [1, {"x": None}]}]


async def test_validation_error_includes_path(tools):
    with pytest.raises(ToolArgumentsError) as caught:
        await tools.execute("strict", {"name": "a", "config": {"level": "high"}, "tags": ["x", 3]})
    paths = [error["path"] for error in caught.value.details["errors"]]
    assert paths == ["config.level", "tags[1]"]
    assert 'config.level: "high" is not of type "integer"' in str(caught.value)


async def test_every_refused_field_is_listed_and_echoes_are_cut(tools):
    with pytest.raises(ToolArgumentsError) as caught:
        await tools.execute("strict", {"name": "x" * 5_000, "count": -1, "tags": "no"})
    assert len(caught.value.details["errors"]) == 2  # count and tags; a long name is fine
    with pytest.raises(ToolArgumentsError) as long_value:
        await tools.execute("strict", {"name": ["y" * 5_000]})
    assert len(str(long_value.value)) < 600


async def test_arguments_must_be_an_object(tools):
    with pytest.raises(ToolArgumentsError, match="must be a JSON object"):
        await tools.execute("strict", ["name"])  # type: ignore[arg-type]


def test_the_sync_path_validates_too(tools):
    with pytest.raises(ToolArgumentsError, match='"name" is a required property'):
        tools.execute_sync("strict", {})
    assert tools.execute_sync("strict", {"name": "a"}) == "ran"


def test_typed_tools_check_the_hints_beyond_json_schema():
    def age(years: int) -> str:
        """How old."""
        return f"{years + 1}"

    made = function_tool(age, effect="read")
    assert made.run_sync({"years": 3}) == "4"
    with pytest.raises(ToolArgumentsError, match="years"):
        made.run_sync({"years": "3"})  # JSON Schema says integer: no coercion from text


# --- async execution --------------------------------------------------------------------------


async def _async_double(n: int) -> int:
    """Double n."""
    await asyncio.sleep(0)
    return n * 2


async def test_execute_async_awaits_async_function():
    made = function_tool(_async_double, effect="read")
    assert await made.run({"n": 4}) == "8"


def _sync_triple(n: int) -> int:
    """Triple n, in a worker thread."""
    return n * 3


async def test_execute_async_wraps_sync_in_executor():
    """A plain tool runs on a tool thread, never on the event loop's."""
    seen: list[str] = []

    def where() -> str:
        """Which thread."""
        seen.append(threading.current_thread().name)
        return "ok"

    assert await function_tool(_sync_triple, effect="read").run({"n": 2}) == "6"
    assert await function_tool(where, effect="read").run({}) == "ok"
    assert seen[0].startswith("gathering-tool") and seen[0] != threading.current_thread().name


async def test_a_blocking_tool_does_not_stall_the_event_loop():
    """Loop lag while a plain tool blocks for 0.3 s: ticks keep coming."""

    def block() -> str:
        """Blocks its thread."""
        time.sleep(0.3)  # on a tool thread, which is the point
        return "done"

    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.01)
            ticks += 1

    counting = asyncio.create_task(ticker())
    try:
        assert await function_tool(block, effect="read").run({}) == "done"
    finally:
        counting.cancel()
    assert ticks >= 5  # a blocked loop would have ticked at most once


def test_execute_sync_rejects_async_tool():
    made = function_tool(_async_double, effect="read")
    with pytest.raises(InvalidInputError, match=r"is async: await tool.run"):
        made.run_sync({"n": 1})
    tools = ToolRegistry([made])
    with pytest.raises(InvalidInputError, match=r"registry\.execute"):
        tools.execute_sync("_async_double", {"n": 1})


async def test_concurrent_async_tools_run_parallel():
    """Two tools that each wait on an event the other sets can only finish if they overlap."""
    first, second = asyncio.Event(), asyncio.Event()

    async def ping() -> str:
        """Sets one, waits for the other."""
        first.set()
        await second.wait()
        return "ping"

    async def pong() -> str:
        """Sets the other, waits for the first."""
        second.set()
        await first.wait()
        return "pong"

    tools = ToolRegistry([function_tool(ping, effect="read"), function_tool(pong, effect="read")])
    async with asyncio.timeout(5):
        results = await asyncio.gather(tools.execute("ping", {}), tools.execute("pong", {}))
    assert results == ["ping", "pong"]


async def test_the_async_path_validates_before_running():
    ran = False

    async def needs_n(n: int) -> str:
        """Needs n."""
        nonlocal ran
        ran = True
        return "ran"

    with pytest.raises(ToolArgumentsError, match='"n" is a required property'):
        await function_tool(needs_n, effect="read").run({})
    assert ran is False


async def test_a_hung_plain_tool_times_out_without_holding_the_caller():
    release = threading.Event()

    def hang() -> str:
        """Waits until released."""
        release.wait(10)
        return "late"

    tools = ToolRegistry([function_tool(hang, effect="read", timeout=0.1)])
    try:
        with pytest.raises(ToolTimeoutError):
            await tools.execute("hang", {})
    finally:
        release.set()


async def test_exceptions_from_a_sync_tool_surface_through_the_async_path():
    def broken() -> str:
        """Breaks."""
        raise ValueError("bad value inside")

    tools = ToolRegistry([function_tool(broken, effect="read")])
    with pytest.raises(Exception, match="tool 'broken' failed: ValueError: bad value inside"):
        await tools.execute("broken", {})


# --- hostile arguments (found by review) --------------------------------------------------------


def _tag(labels: set[str], code: Annotated[str, Field(pattern=r"^([A-Z0-9]+-?)+$")]) -> str:
    """Tag things."""
    return "ok"


@pytest.mark.timeout(60)
def test_unique_items_and_patterns_are_checked_in_linear_time():
    """A pure-Python validator compares unique items pairwise and backtracks on patterns: a
    54 kB body took 6.8 s, and each extra character of the pattern case doubled the time.
    Here both are far larger and end within the test's timeout."""
    made = function_tool(_tag, effect="read")
    mixed = [i if i % 2 else str(i) for i in range(200_000)]
    with pytest.raises(ToolArgumentsError):
        made.run_sync({"labels": mixed, "code": "A"})
    with pytest.raises(ToolArgumentsError, match="code"):
        made.run_sync({"labels": [], "code": "A" * 5_000 + "!"})


def test_refusals_are_capped_whoever_finds_them():
    def total(numbers: list[int]) -> int:
        """Add numbers."""
        return sum(numbers)

    made = function_tool(total, effect="read")
    with pytest.raises(ToolArgumentsError) as caught:
        made.run_sync({"numbers": [1e300] * 100_000})  # integers to JSON Schema, not to Python
    assert len(caught.value.details["errors"]) <= 10
    assert len(str(caught.value)) < 5_000 and "more" in str(caught.value)
