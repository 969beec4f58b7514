"""Tools agents can call: typed functions with a JSON Schema, an effect class and limits; the
registry of built-in and plugin tools; and the workspace path safety every file access uses."""

from gathering.tools.context import ToolContext
from gathering.tools.function import Effect, FunctionTool, ToolRetry
from gathering.tools.registry import (
    ToolRegistry,
    default_registry,
    execute_tool,
    get_tool,
    loaded_registry,
    register_tool,
)
from gathering.tools.signature import function_tool, tool
from gathering.tools.workspace import resolve_in_workspace

__all__ = [
    "Effect",
    "FunctionTool",
    "ToolContext",
    "ToolRegistry",
    "ToolRetry",
    "default_registry",
    "execute_tool",
    "function_tool",
    "get_tool",
    "loaded_registry",
    "register_tool",
    "resolve_in_workspace",
    "tool",
]
