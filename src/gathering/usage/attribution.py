"""Who and what a call is charged to: a context variable set by the callers of a turn.

    with attributed(pipeline_id=3, pipeline_run_id=17):
        await agent.run("summarise the report")

The API and the CLI set the user who asked, pipelines' agent nodes the run, circles the
circle, background tasks the task; the turn loop adds the agent (and, when no user is set, the
agent's owner). Nested blocks add to the outer one.
"""

from __future__ import annotations

import contextvars
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, fields, replace


@dataclass(frozen=True)
class Attribution:
    """The ids a ledger row and a budget check are charged to (None: not part of one)."""

    user_id: int | None = None
    agent_id: int | None = None
    circle_id: int | None = None
    pipeline_id: int | None = None
    pipeline_run_id: int | None = None
    task_id: int | None = None

    def merged(self, **ids: int | None) -> Attribution:
        """This attribution with the given ids set (None values leave a field as it is)."""
        return replace(self, **{k: v for k, v in ids.items() if v is not None})

    def as_dict(self) -> dict[str, int | None]:
        """The ids by field name."""
        return {f.name: getattr(self, f.name) for f in fields(self)}


_NOBODY = Attribution()
_CURRENT: contextvars.ContextVar[Attribution | None] = contextvars.ContextVar(
    "gathering_usage_attribution", default=None
)


def current_attribution() -> Attribution:
    """The attribution of the running code (empty when no caller set one)."""
    return _CURRENT.get() or _NOBODY


@contextmanager
def attributed(**ids: int | None) -> Iterator[Attribution]:
    """Charge the calls made inside the block to `ids` too (user_id, agent_id, circle_id,
    pipeline_id, pipeline_run_id, task_id), on top of the current attribution."""
    attribution = current_attribution().merged(**ids)
    token = _CURRENT.set(attribution)
    try:
        yield attribution
    finally:
        _CURRENT.reset(token)


def charge_task_to(**ids: int | None) -> None:
    """Charge the rest of the running task's calls to `ids` too: for a task started for one
    request (its context is its own copy, so nothing leaks to other tasks)."""
    _CURRENT.set(current_attribution().merged(**ids))
