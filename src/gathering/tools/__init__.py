"""Tools agents can call, and the workspace path safety every file access goes through."""

from gathering.tools.function import FunctionTool, ToolRetry
from gathering.tools.workspace import resolve_in_workspace

__all__ = ["FunctionTool", "ToolRetry", "resolve_in_workspace"]
