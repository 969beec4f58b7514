"""The tool registry: definitions from typed functions, registration, lookups, execution,
plugins (the peer's registry behaviours, on real tools)."""

from __future__ import annotations

import asyncio
from importlib.metadata import EntryPoint
from typing import Literal

import pytest
from pydantic import BaseModel

from gathering.errors import (
    ConflictError,
    InvalidInputError,
    NotFoundError,
    ToolFailedError,
    ToolTimeoutError,
)
from gathering.llm import ToolSpec
from gathering.tools import (
    FunctionTool,
    ToolContext,
    ToolRegistry,
    ToolRetry,
    execute_tool,
    function_tool,
    get_tool,
    register_tool,
    tool,
)
from gathering.tools import registry as registry_module


def greet(name: str, punctuation: Literal["!", "."] = "!") -> str:
    """Say hello to someone.

    Args:
        name: Who to greet.
        punctuation: How to end the greeting.
    """
    return f"Hello, {name}{punctuation}"


async def slow_double(n: int) -> int:
    """Double a number, slowly."""
    await asyncio.sleep(0.01)
    return n * 2


@pytest.fixture
def tools() -> ToolRegistry:
    return ToolRegistry(
        [
            function_tool(greet, effect="read", category="social"),
            function_tool(slow_double, effect="read", category="math"),
        ]
    )


# --- definitions ------------------------------------------------------------------------------


def test_a_tool_is_built_from_a_typed_function():
    made = function_tool(greet, effect="read", category="social")
    assert made.name == "greet" and made.spec.description == "Say hello to someone."
    assert made.category == "social" and made.plugin is None and not made.is_async
    schema = made.spec.parameters
    assert schema["required"] == ["name"] and schema["additionalProperties"] is False
    assert schema["properties"]["name"] == {
        "description": "Who to greet.",
        "title": "Name",
        "type": "string",
    }
    assert schema["properties"]["punctuation"]["enum"] == ["!", "."]


def test_the_decorator_builds_the_same_tool():
    @tool(effect="write", timeout=5, category="notes", max_output_chars=100)
    async def note(text: str, ctx: ToolContext) -> str:
        """Keep a note."""
        return text

    assert isinstance(note, FunctionTool) and note.is_async
    assert (note.effect, note.timeout, note.category) == ("write", 5, "notes")
    assert note.context_parameter == "ctx"
    assert "ctx" not in note.spec.parameters["properties"]  # the model never sees it


class Point(BaseModel):
    x: int
    y: int


def test_pydantic_models_become_nested_schemas():
    def plot(point: Point) -> str:
        """Plot a point."""
        return f"{point.x},{point.y}"

    made = function_tool(plot, effect="read")
    assert made.run_sync({"point": {"x": 1, "y": 2}}) == "1,2"
    assert "Point" in made.spec.parameters["$defs"]


@pytest.mark.parametrize(
    "build",
    [
        lambda: function_tool(lambda: "x", name="", description="no name"),
        lambda: function_tool(lambda: "x", name="nameless"),  # no description
        lambda: function_tool(42),  # type: ignore[arg-type]
        lambda: FunctionTool(ToolSpec("x"), "not callable"),  # type: ignore[arg-type]
        lambda: FunctionTool(ToolSpec("x"), greet, effect="maybe"),  # type: ignore[arg-type]
        lambda: FunctionTool(ToolSpec("x"), greet, timeout=0),
        lambda: FunctionTool(ToolSpec("x", parameters={"type": "object", "required": 3}), greet),
    ],
)
def test_invalid_definitions_are_refused(build):
    with pytest.raises(InvalidInputError):
        build()


def test_args_and_kwargs_cannot_be_described():
    def loose(*args: int, **kwargs: int) -> int:
        """Anything."""
        return 0

    with pytest.raises(InvalidInputError, match=r"\*args"):
        function_tool(loose)


def test_a_tool_of_unknown_effect_is_external():
    """Unless it says otherwise, a tool may reach outside: recovery never repeats it."""
    assert FunctionTool(ToolSpec("x"), greet).effect == "external"
    assert function_tool(greet).effect == "external"


# --- the registry -----------------------------------------------------------------------------


def test_register_get_and_list(tools):
    assert tools.get("greet") is not None and tools.get("nope") is None
    assert "greet" in tools and len(tools) == 2
    assert [t.name for t in tools.list()] == ["greet", "slow_double"]


def test_a_second_tool_of_the_same_name_is_refused(tools):
    with pytest.raises(ConflictError, match="already registered"):
        tools.register(function_tool(greet, effect="read"))
    assert tools.get("greet").category == "social"  # no silent overwrite


def test_unregister(tools):
    assert tools.unregister("greet") is True
    assert tools.get("greet") is None
    assert tools.unregister("greet") is False


def test_lists_by_category_and_plugin(tools):
    assert [t.name for t in tools.list(category="math")] == ["slow_double"]
    assert tools.list(category="cooking") == []
    assert tools.list(plugin="somebody") == []
    assert all(t.plugin is None for t in tools.list())


def test_categories_follow_registrations(tools):
    assert tools.categories() == {"social", "math"}
    tools.register(function_tool(greet, name="greet_again", effect="read", category="math"))
    tools.unregister("slow_double")
    assert tools.categories() == {"social", "math"}  # still used by greet_again
    tools.unregister("greet_again")
    assert tools.categories() == {"social"}
    assert ToolRegistry().categories() == set()


def test_stats(tools):
    assert tools.stats() == {
        "tools": 2,
        "categories": 2,
        "plugins": 0,
        "by_category": {"social": 1, "math": 1},
        "by_effect": {"read": 2},
    }


def test_clear(tools):
    tools.clear()
    assert tools.list() == [] and tools.categories() == set() and len(tools) == 0


def test_only_tools_can_be_registered(tools):
    with pytest.raises(InvalidInputError, match="not a tool"):
        tools.register(greet)  # type: ignore[arg-type]


# --- execution --------------------------------------------------------------------------------


async def test_execute_passes_the_arguments_and_returns_the_result(tools):
    assert await tools.execute("greet", {"name": "Ada"}) == "Hello, Ada!"
    assert await tools.execute("slow_double", {"n": 21}) == "42"  # rendered for the model


async def test_executing_an_unknown_tool_is_not_found(tools):
    with pytest.raises(NotFoundError, match="no tool named 'nope'") as caught:
        await tools.execute("nope", {})
    assert "greet" in (caught.value.hint or "")


async def test_an_exception_in_a_tool_names_the_tool(tools):
    def explode() -> str:
        """Fail."""
        raise RuntimeError("disk on fire")

    tools.register(function_tool(explode, effect="read"))
    with pytest.raises(ToolFailedError, match=r"tool 'explode' failed: RuntimeError: disk on fire"):
        await tools.execute("explode", {})


async def test_a_retry_request_is_a_typed_failure_outside_a_turn(tools):
    def picky(n: int) -> str:
        """Wants an even number."""
        if n % 2:
            raise ToolRetry("give an even number")
        return "ok"

    tools.register(function_tool(picky, effect="read"))
    with pytest.raises(ToolFailedError, match="give an even number"):
        await tools.execute("picky", {"n": 1})


async def test_a_hung_tool_times_out(tools):
    async def hang() -> str:
        """Never returns."""
        await asyncio.Event().wait()
        return ""

    tools.register(function_tool(hang, effect="read", timeout=0.05))
    with pytest.raises(ToolTimeoutError, match=r"within 0\.05s"):
        await tools.execute("hang", {})


async def test_long_output_is_cut_with_a_marker():
    def chatty() -> str:
        """Talks a lot."""
        return "x" * 150

    made = function_tool(chatty, effect="read", max_output_chars=100)
    output = await made.run({})
    assert output.startswith("x" * 100) and output.endswith(
        "[output truncated: 50 more characters]"
    )


async def test_the_context_reaches_the_tool_that_asks_for_it(tmp_path):
    def where(ctx: ToolContext) -> str:
        """Where am I."""
        return f"{ctx.agent_id}:{ctx.require_workspace()}"

    made = function_tool(where, effect="read")
    assert await made.run({}, ToolContext(agent_id=7, workspace=tmp_path)) == f"7:{tmp_path}"
    with pytest.raises(Exception, match="has no workspace"):
        await made.run({})


# --- the process's registry and plugins --------------------------------------------------------


@pytest.fixture
def clean_global_registry():
    before = registry_module.registry.list()
    yield registry_module.registry
    registry_module.registry.clear()
    for item in before:
        registry_module.registry.register(item)


async def test_module_functions_use_the_process_registry(clean_global_registry):
    made = register_tool(function_tool(greet, name="greet_global", effect="read"))
    assert get_tool("greet_global") is made
    assert clean_global_registry.get("greet_global") is made
    assert await execute_tool("greet_global", {"name": "Lin"}) == "Hello, Lin!"


def _entry_point(value: str) -> EntryPoint:
    return EntryPoint(name="sample", value=value, group=registry_module.PLUGIN_GROUP)


SAMPLE_TOOL = function_tool(greet, name="plugin_greet", effect="read")


def sample_tools() -> list[FunctionTool]:
    return [function_tool(slow_double, name="plugin_double", effect="read")]


@pytest.mark.parametrize(
    ("value", "names"),
    [
        (f"{__name__}:SAMPLE_TOOL", ["plugin_greet"]),
        (f"{__name__}:sample_tools", ["plugin_double"]),
    ],
)
def test_a_plugin_entry_point_gives_tools_marked_as_its_own(value, names):
    found = registry_module.plugin_tools(_entry_point(value))
    assert [t.name for t in found] == names
    assert all(t.plugin == "sample" for t in found)  # no distribution: the entry point's name


NOT_TOOLS = ["a string", 42]


def broken_factory() -> list[FunctionTool]:
    raise TypeError("the plugin's own bug")


def taken_and_new() -> list[FunctionTool]:
    return [
        function_tool(greet, name="plugin_fresh", effect="read"),
        function_tool(greet, name="plugin_greet", effect="read"),  # taken below
    ]


def test_a_plugin_that_gives_something_else_is_refused():
    with pytest.raises(InvalidInputError, match="not a tool"):
        registry_module.plugin_tools(_entry_point(f"{__name__}:NOT_TOOLS"))
    with pytest.raises(TypeError, match="the plugin's own bug"):  # not hidden as "not a tool"
        registry_module.plugin_tools(_entry_point(f"{__name__}:broken_factory"))


def test_a_plugin_is_registered_whole_or_not_at_all(monkeypatch):
    points = [_entry_point(f"{__name__}:SAMPLE_TOOL"), _entry_point(f"{__name__}:taken_and_new")]
    monkeypatch.setattr(registry_module, "entry_points", lambda group: points)
    target = ToolRegistry()
    assert registry_module.load_plugins(target) == ["plugin_greet"]
    assert target.get("plugin_fresh") is None  # its plugin also named a taken tool


async def test_naming_an_unloaded_plugin_tool_in_async_code_does_not_block(monkeypatch):
    monkeypatch.setattr(registry_module, "_plugins_loaded", False)
    assert registry_module.named_tool("calculator").name == "calculator"  # built in
    with pytest.raises(NotFoundError, match=r"await gathering\.tools\.loaded_registry"):
        registry_module.named_tool("from_a_plugin")


def test_a_broken_plugin_does_not_stop_the_others(monkeypatch, clean_global_registry):
    points = [_entry_point("no_such_module:x"), _entry_point(f"{__name__}:SAMPLE_TOOL")]
    monkeypatch.setattr(registry_module, "entry_points", lambda group: points)
    target = ToolRegistry()
    assert registry_module.load_plugins(target) == ["plugin_greet"]
    assert target.get("plugin_greet").plugin == "sample"
