"""`FunctionTool`: a `ToolSpec` paired with the Python callable that runs it, its effect
class and its limits."""

from __future__ import annotations

import asyncio
import contextvars
import functools
import inspect
import json
import threading
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Literal, get_args

from pydantic import BaseModel, ValidationError

from gathering.errors import InvalidInputError, ToolArgumentsError
from gathering.llm import ToolSpec
from gathering.tools.context import ToolContext
from gathering.tools.validation import (
    Validator,
    check_arguments,
    field_path,
    refusal,
    schema_validator,
)

TOOL_THREADS = 8  # plain-function tools running at once in a process


class ToolThreadsBusyError(RuntimeError):
    """Every tool thread is taken (by tools still running, or hung past their timeout)."""


class _ToolThreads:
    """Plain-function tools run on threads of their own, never on the default executor:
    a tool that hangs past its timeout keeps its thread (a thread cannot be stopped), and
    must not starve name lookups, password hashing or other work that uses the default one.
    When every thread is taken, a new call is refused at once instead of queueing forever.
    """

    def __init__(self, size: int) -> None:
        self.size = size
        self.busy = 0
        self._lock = threading.Lock()
        self._executor = ThreadPoolExecutor(size, thread_name_prefix="gathering-tool")

    async def run(self, function: Callable[..., Any], arguments: Mapping[str, Any]) -> Any:
        with self._lock:
            if self.busy >= self.size:
                raise ToolThreadsBusyError(
                    f"all {self.size} tool threads are busy (tools running or hung); "
                    "try again later"
                )
            self.busy += 1
        call = functools.partial(
            contextvars.copy_context().run, functools.partial(function, **arguments)
        )
        try:
            future = self._executor.submit(call)
        except BaseException:
            self._finished()
            raise
        future.add_done_callback(lambda _: self._finished())
        return await asyncio.wrap_future(future)

    def _finished(self) -> None:
        with self._lock:
            self.busy -= 1


_threads = _ToolThreads(TOOL_THREADS)


class ToolRetry(Exception):
    """Raised by a tool to ask the model to try again: the message is sent to the model as the
    tool's result, and the call does not count as a failure."""


Effect = Literal["read", "write", "external"]
"""What a call may change: `read` nothing (safe to repeat), `write` only its workspace (safe to
repeat with the same idempotency key), `external` the world outside (never repeated)."""
EFFECTS: tuple[Effect, ...] = get_args(Effect)
Policy = Literal["allow", "ask", "deny"]
"""Whether an agent's call runs (`allow`), waits for a person's approval (`ask`) or is refused
(`deny`)."""
POLICIES: tuple[Policy, ...] = get_args(Policy)
MAX_OUTPUT_CHARS = 50_000  # a tool's output beyond this is cut, with a marker saying so


@dataclass(frozen=True)
class FunctionTool:
    """A tool an agent can call: `handler(**arguments)`, sync or async, returns its output.

    Arguments are checked against `spec.parameters` (JSON Schema) before the handler runs.
    `timeout` (seconds; None: `GATHERING_TOOL_TIMEOUT`) and `max_output_chars` bound a call;
    `ask_first` makes `ask` its default policy whatever its effect.
    Tools built by `function_tool` also carry the pydantic model that turns checked JSON
    arguments into the handler's typed values, and the name of their `ToolContext` parameter.
    """

    spec: ToolSpec
    handler: Callable[..., Any]
    effect: Effect = "external"
    timeout: float | None = None
    max_output_chars: int = MAX_OUTPUT_CHARS
    category: str = "general"
    plugin: str | None = None
    arguments_model: type[BaseModel] | None = None
    context_parameter: str | None = None
    ask_first: bool = False
    validator: Validator = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not callable(self.handler):
            raise InvalidInputError(f"tool {self.spec.name!r}: the handler is not callable")
        if self.effect not in EFFECTS:
            raise InvalidInputError(
                f"tool {self.spec.name!r}: unknown effect {self.effect!r}",
                hint=f"one of: {', '.join(EFFECTS)}",
            )
        if self.timeout is not None and not self.timeout > 0:
            raise InvalidInputError(f"tool {self.spec.name!r}: the timeout must be positive")
        if self.max_output_chars < 1:
            raise InvalidInputError(f"tool {self.spec.name!r}: max_output_chars must be >= 1")
        object.__setattr__(self, "validator", schema_validator(self.name, self.spec.parameters))

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def default_policy(self) -> Policy:
        """`ask` for tools that reach outside or ask first (shell, python), else `allow`."""
        return "ask" if self.effect == "external" or self.ask_first else "allow"

    @property
    def is_async(self) -> bool:
        """Whether the handler is a coroutine function (`run_sync` cannot call it)."""
        return inspect.iscoroutinefunction(self.handler)

    def arguments_for(
        self, arguments: Mapping[str, Any], context: ToolContext | None = None
    ) -> dict[str, Any]:
        """The handler's keyword arguments: checked against the schema (`ToolArgumentsError`),
        typed by the arguments model, and the context added where the handler asks for it."""
        if not isinstance(arguments, Mapping):
            raise ToolArgumentsError(
                f"the arguments of tool {self.name!r} must be a JSON object",
                details={"tool": self.name, "errors": []},
            )
        check_arguments(self.name, self.validator, arguments)
        values = dict(arguments)
        if self.arguments_model is not None:
            try:
                model = self.arguments_model.model_validate(values)
            except ValidationError as exc:
                raise _pydantic_refusal(self.name, exc) from None
            values = {name: getattr(model, name) for name in type(model).model_fields}
        if self.context_parameter is not None:
            values[self.context_parameter] = context or ToolContext()
        return values

    async def run(self, arguments: Mapping[str, Any], context: ToolContext | None = None) -> str:
        """Check the arguments, call the handler (a plain function on a tool thread, off the
        event loop) and render its result as text for the model, cut to `max_output_chars`."""
        values = self.arguments_for(arguments, context)
        if self.is_async:
            result = await self.handler(**values)
        else:  # a plain function may block: keep it off the event loop
            result = await _threads.run(self.handler, values)
            if inspect.isawaitable(result):
                result = await result
        return self.render(result)

    def run_sync(self, arguments: Mapping[str, Any], context: ToolContext | None = None) -> str:
        """`run` for a plain-function tool, in the caller's thread (no event loop needed)."""
        if self.is_async:
            raise InvalidInputError(
                f"tool {self.name!r} is async: await tool.run(...) (or registry.execute(...))",
                hint="run_sync only calls plain-function tools",
            )
        return self.render(self.handler(**self.arguments_for(arguments, context)))

    def render(self, result: Any) -> str:
        """`result` as the text the model reads: a string as is, anything else as JSON."""
        text = result if isinstance(result, str) else json.dumps(result, default=str)
        if len(text) <= self.max_output_chars:
            return text
        cut = len(text) - self.max_output_chars
        return f"{text[: self.max_output_chars]}\n[output truncated: {cut} more characters]"


def _pydantic_refusal(name: str, error: ValidationError) -> ToolArgumentsError:
    errors = [
        {"path": field_path(item["loc"]), "message": item["msg"]}
        for item in error.errors(include_url=False, include_input=False)
    ]
    return refusal(name, errors)
