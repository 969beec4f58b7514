"""The `config` each node type takes, as pydantic models (unknown keys are refused).

Texts that the run fills in (an agent's prompt, a tool's arguments, a webhook's body) are
Jinja2 templates, checked here in the sandboxed environment the run uses; conditions are
expressions over `input` and `outputs` (see `conditions`).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from cronsim import CronSim, CronSimError
from jinja2 import TemplateSyntaxError
from jinja2.exceptions import SecurityError
from jinja2.sandbox import ImmutableSandboxedEnvironment
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from gathering.pipelines.conditions import check_expression
from gathering.pipelines.definition import ID_PATTERN, MAX_TEXT

MAX_RENDERED_CHARS = 1_000_000  # what one template may produce
MAX_RANGE = 10_000


class BoundedSandbox(ImmutableSandboxedEnvironment):
    """Jinja2's immutable sandbox, bounded: `*` may not build a string or list longer than
    `MAX_RENDERED_CHARS`, `**` only small powers, `range` at most `MAX_RANGE` numbers. (The
    executor renders in a thread, so a slow template never stops the event loop.)"""

    intercepted_binops = frozenset({"*", "**"})

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        if operator == "**" and (
            not isinstance(right, int | float) or abs(right) > 64 or _too_long(left, 1)
        ):
            raise SecurityError("a power in a template is limited to exponents up to 64")
        if operator == "*":
            for sequence, count in ((left, right), (right, left)):
                if isinstance(sequence, str | list | tuple) and isinstance(count, int):
                    if len(sequence) * count > MAX_RENDERED_CHARS:
                        raise SecurityError(
                            f"a template may not build more than {MAX_RENDERED_CHARS:,} items"
                        )
        return super().call_binop(context, operator, left, right)


def _too_long(value: Any, _: int) -> bool:
    return isinstance(value, int) and abs(value) > 10**18


MAX_LOOP_STEPS = 100_000  # numbers all the range() loops of one rendering may go through
_budget = threading.local()


def _bounded_range(*args: int) -> Iterator[int]:
    numbers = range(*args)
    if len(numbers) > MAX_RANGE:
        raise SecurityError(f"range() in a template is limited to {MAX_RANGE:,} numbers")
    return _counted(numbers)


def _counted(numbers: range) -> Iterator[int]:
    """`numbers`, each one spent from the rendering's budget (nested loops multiply)."""
    for number in numbers:
        left = getattr(_budget, "steps", None)
        if left is not None:
            if left <= 0:
                raise SecurityError(
                    f"the loops of a template may go through at most {MAX_LOOP_STEPS:,} numbers"
                )
            _budget.steps = left - 1
        yield number


def render_bounded(template: str, **context: Any) -> str:
    """`template` rendered in the bounded sandbox: its `range` loops share a budget of
    `MAX_LOOP_STEPS`, and it stops as soon as it has produced `MAX_RENDERED_CHARS`
    characters (never holding more); `SecurityError` past either."""
    _budget.steps = MAX_LOOP_STEPS
    try:
        parts: list[str] = []
        size = 0
        for chunk in TEMPLATES.from_string(template).generate(**context):
            size += len(chunk)
            if size > MAX_RENDERED_CHARS:
                raise SecurityError(
                    f"a template may render at most {MAX_RENDERED_CHARS:,} characters"
                )
            parts.append(chunk)
        return "".join(parts)
    finally:
        _budget.steps = None


TEMPLATES = BoundedSandbox(autoescape=False)
TEMPLATES.globals["range"] = _bounded_range
Text = Annotated[str, Field(min_length=1, max_length=MAX_TEXT)]


def check_template(text: str) -> str:
    """`text` when it is a valid template, else `ValueError` naming the line."""
    try:
        TEMPLATES.parse(text)
    except TemplateSyntaxError as exc:
        raise ValueError(f"template error on line {exc.lineno}: {exc.message}") from None
    return text


def _templates(value: Any) -> Any:
    """Check every string inside `value` (a tool's arguments, a body) as a template."""
    if isinstance(value, str):
        check_template(value)
    elif isinstance(value, dict):
        for item in value.values():
            _templates(item)
    elif isinstance(value, list):
        for item in value:
            _templates(item)
    return value


class _Config(BaseModel):
    model_config = ConfigDict(extra="forbid")


class TriggerConfig(_Config):
    """How runs start: by hand (API, CLI), a webhook (with the pipeline's secret), a
    schedule, or an event on the bus."""

    kind: Literal["manual", "webhook", "schedule", "event"] = "manual"
    cron: str | None = Field(default=None, max_length=200)
    event: str | None = Field(default=None, max_length=200)

    @model_validator(mode="after")
    def _needs(self) -> TriggerConfig:
        if self.kind == "schedule" and not self.cron:
            raise ValueError("a schedule trigger needs `cron`")
        if self.kind == "schedule" and self.cron:
            try:
                CronSim(self.cron, datetime.now(UTC))
            except CronSimError as exc:
                raise ValueError(f"invalid cron expression {self.cron!r}: {exc}") from None
        if self.kind == "event" and not self.event:
            raise ValueError("an event trigger needs `event` (an event type, e.g. memory.added)")
        return self


class AgentConfig(_Config):
    """One turn of an agent: `prompt` is a template over `input` and `outputs`; the reply is
    its text, or JSON checked against `output_schema`."""

    agent: Annotated[str, Field(min_length=1, max_length=100)] | Annotated[int, Field(ge=1)]
    prompt: Text
    output: Literal["text", "json"] = "text"
    output_schema: dict[str, Any] | None = None

    _prompt = field_validator("prompt")(check_template)


class ToolConfig(_Config):
    """A call of a registered tool; its arguments may hold templates."""

    tool: Annotated[str, Field(pattern=ID_PATTERN)]
    arguments: dict[str, Any] = Field(default_factory=dict)

    _arguments = field_validator("arguments")(_templates)


class ConditionConfig(_Config):
    """`expression` over `input` and `outputs`: the nodes after it run when it is true, and
    are skipped when it is false."""

    expression: Text

    _expression = field_validator("expression")(check_expression)


class ActionConfig(_Config):
    """A notification webhook, an API call, or an event on the bus (HTTP through the tools'
    egress policy)."""

    kind: Literal["webhook", "call_api", "emit_event"]
    url: str | None = Field(default=None, max_length=2048)
    method: Literal["GET", "POST", "PUT", "PATCH", "DELETE"] = "POST"
    body: Any = None
    event: str | None = Field(default=None, max_length=200)

    _body = field_validator("body")(_templates)

    @model_validator(mode="after")
    def _needs(self) -> ActionConfig:
        if self.kind in ("webhook", "call_api") and not self.url:
            raise ValueError(f"a {self.kind} action needs `url`")
        if self.kind == "emit_event" and not self.event:
            raise ValueError("an emit_event action needs `event`")
        return self


class ParallelConfig(_Config):
    """The join of the branches (edges) into it: it runs once all of them have finished, as
    soon as any one went through, or once `n` did; the nodes after it fan out again."""

    join: Literal["all", "any", "n"] = "all"
    n: int | None = Field(default=None, ge=1, le=1_000)

    @model_validator(mode="after")
    def _needs(self) -> ParallelConfig:
        if (self.join == "n") != (self.n is not None):
            raise ValueError("`n` is given exactly when join is n")
        return self


class DelayConfig(_Config):
    """A durable wait of `seconds` (a job scheduled for later, not a sleeping process)."""

    seconds: float = Field(gt=0, le=366 * 86_400)


class ApprovalConfig(_Config):
    """A person approves (or denies) before the run goes on; the run holds no process."""

    message: Text
    timeout_seconds: float | None = Field(default=None, gt=0, le=366 * 86_400)

    _message = field_validator("message")(check_template)


class SubPipelineConfig(_Config):
    """A run of another pipeline, with `input` (templates) as its input."""

    pipeline: Annotated[str, Field(min_length=1, max_length=100)] | Annotated[int, Field(ge=1)]
    input: dict[str, Any] = Field(default_factory=dict)

    _input = field_validator("input")(_templates)


CONFIGS: dict[str, type[_Config]] = {
    "trigger": TriggerConfig,
    "agent": AgentConfig,
    "tool": ToolConfig,
    "condition": ConditionConfig,
    "action": ActionConfig,
    "parallel": ParallelConfig,
    "delay": DelayConfig,
    "approval": ApprovalConfig,
    "sub_pipeline": SubPipelineConfig,
}
