"""Tools from typed Python functions: the JSON Schema comes from the type hints (pydantic), the
description from the docstring.

    @tool(effect="read")
    def weather(city: str, unit: Literal["C", "F"] = "C") -> str:
        \"""Today's weather in a city.

        Args:
            city: The city's name.
            unit: Celsius or Fahrenheit.
        \"""

A parameter typed `ToolContext` receives the call's context and is not shown to the model.
"""

from __future__ import annotations

import inspect
import re
import typing
from collections.abc import Callable
from typing import Any

from pydantic import ConfigDict, Field, PydanticUserError, create_model

from gathering.errors import InvalidInputError
from gathering.llm import ToolSpec
from gathering.tools.context import ToolContext
from gathering.tools.function import MAX_OUTPUT_CHARS, Effect, FunctionTool

_ARGS_HEADER = re.compile(r"^\s*(Args|Arguments|Parameters):\s*$")
_ARG_LINE = re.compile(r"^\s+(\*{0,2}\w+)(?:\s*\([^)]*\))?:\s*(.*)$")
_SECTION = re.compile(r"^\s*[A-Z][A-Za-z ]*:\s*$")


def function_tool(
    function: Callable[..., Any],
    *,
    name: str | None = None,
    description: str | None = None,
    effect: Effect = "external",
    timeout: float | None = None,
    max_output_chars: int = MAX_OUTPUT_CHARS,
    category: str = "general",
    plugin: str | None = None,
    ask_first: bool = False,
) -> FunctionTool:
    """A `FunctionTool` calling `function`, its schema built from the function's signature."""
    if not callable(function):
        raise InvalidInputError(f"a tool needs a callable, not {type(function).__name__}")
    tool_name = name or str(getattr(function, "__name__", ""))
    summary, documented = _read_docstring(inspect.getdoc(function) or "")
    text = (description if description is not None else summary).strip()
    if not text:
        raise InvalidInputError(
            f"tool {tool_name!r} has no description",
            hint="give the function a docstring, or pass description=...",
        )
    fields, context_parameter = _fields(function, tool_name, documented)
    try:
        model = create_model(
            f"{tool_name}_arguments", __config__=ConfigDict(extra="forbid"), **fields
        )
        schema = model.model_json_schema()
    except (PydanticUserError, TypeError) as exc:
        raise InvalidInputError(
            f"tool {tool_name!r}: its parameters cannot be described as JSON Schema: {exc}",
            hint="type each parameter with JSON types, dataclasses or pydantic models",
        ) from None
    schema.pop("title", None)
    return FunctionTool(
        ToolSpec(tool_name, text, schema),
        function,
        effect=effect,
        timeout=timeout,
        max_output_chars=max_output_chars,
        category=category,
        plugin=plugin,
        arguments_model=model,
        context_parameter=context_parameter,
        ask_first=ask_first,
    )


def tool(
    *,
    name: str | None = None,
    description: str | None = None,
    effect: Effect = "external",
    timeout: float | None = None,
    max_output_chars: int = MAX_OUTPUT_CHARS,
    category: str = "general",
    ask_first: bool = False,
) -> Callable[[Callable[..., Any]], FunctionTool]:
    """Decorator form of `function_tool`: `@tool(effect="read")` above a typed function."""

    def decorate(function: Callable[..., Any]) -> FunctionTool:
        return function_tool(
            function,
            name=name,
            description=description,
            effect=effect,
            timeout=timeout,
            max_output_chars=max_output_chars,
            category=category,
            ask_first=ask_first,
        )

    return decorate


def _fields(
    function: Callable[..., Any], tool_name: str, documented: dict[str, str]
) -> tuple[dict[str, Any], str | None]:
    """The pydantic fields of `function`'s parameters, and its `ToolContext` parameter."""
    try:
        hints = typing.get_type_hints(function, include_extras=True)
    except NameError as exc:
        raise InvalidInputError(
            f"tool {tool_name!r}: a type hint cannot be resolved: {exc}"
        ) from None
    fields: dict[str, Any] = {}
    context_parameter = None
    for parameter in inspect.signature(function).parameters.values():
        if parameter.kind in (parameter.VAR_POSITIONAL, parameter.VAR_KEYWORD):
            raise InvalidInputError(
                f"tool {tool_name!r}: *args and **kwargs cannot be described to a model",
                hint="name each parameter",
            )
        if parameter.kind is parameter.POSITIONAL_ONLY:
            raise InvalidInputError(f"tool {tool_name!r}: tools are called with keywords")
        hint = hints.get(parameter.name, Any)
        if hint is ToolContext:
            context_parameter = parameter.name
            continue
        default = ... if parameter.default is parameter.empty else parameter.default
        fields[parameter.name] = (hint, Field(default, description=documented.get(parameter.name)))
    return fields, context_parameter


def _read_docstring(doc: str) -> tuple[str, dict[str, str]]:
    """The docstring's text before its sections, and each documented parameter's line(s)."""
    summary: list[str] = []
    described: dict[str, str] = {}
    current: str | None = None
    section = None
    for line in doc.splitlines():
        if _ARGS_HEADER.match(line):
            section = "args"
            continue
        if _SECTION.match(line):
            section = "other"
            continue
        if section is None:
            summary.append(line)
        elif section == "args":
            if found := _ARG_LINE.match(line):
                current = found.group(1).lstrip("*")
                described[current] = found.group(2).strip()
            elif current is not None and line.strip():
                described[current] += " " + line.strip()
    return "\n".join(summary).strip(), described
