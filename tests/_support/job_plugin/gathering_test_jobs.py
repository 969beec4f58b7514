"""Tasks for the job runtime's tests, installed as a `gathering.jobs` plugin: put this folder
on PYTHONPATH and `gathering worker` runs them as `testjobs:<task>`.

Each task writes to `job_test_marks` (created by the test) so that a test sees, from its own
connection, which process ran what and how often."""

from __future__ import annotations

import asyncio
import os

import procrastinate

from gathering.errors import ToolFailedError
from gathering.jobs import ON_SHUTDOWN, services_of
from gathering.tools import FunctionTool, function_tool
from gathering.tools.context import ToolContext

blueprint = procrastinate.Blueprint()


async def _mark(context: procrastinate.JobContext, key: str, what: str) -> None:
    db = services_of(context).db
    await db.execute(
        "INSERT INTO job_test_marks (key, what, pid, job_id) VALUES ($1, $2, $3, $4)",
        key,
        what,
        os.getpid(),
        context.job.id,
    )


@blueprint.task(name="mark", pass_context=True, retry=ON_SHUTDOWN)
async def mark(context: procrastinate.JobContext, key: str) -> str:
    await _mark(context, key, "done")
    return key


@blueprint.task(name="sleep", pass_context=True, retry=ON_SHUTDOWN)
async def sleep(context: procrastinate.JobContext, key: str, seconds: float) -> None:
    await _mark(context, key, "started")
    await asyncio.sleep(seconds)
    await _mark(context, key, "done")


@blueprint.task(name="fail", pass_context=True, retry=ON_SHUTDOWN)
async def fail(context: procrastinate.JobContext, key: str) -> None:
    await _mark(context, key, "failed")
    raise RuntimeError(f"{key} fails on purpose")


# --- tools for pipeline nodes run by worker processes -----------------------------------------


async def _tool_mark(context: ToolContext, key: str, what: str) -> None:
    await context.require_db().execute(
        "INSERT INTO job_test_marks (key, what, pid) VALUES ($1, $2, $3)", key, what, os.getpid()
    )


async def slow_write(key: str, seconds: float, context: ToolContext) -> str:
    """Mark `key` started, wait `seconds`, mark it done (a write: safe to repeat)."""
    await _tool_mark(context, key, "started")
    await asyncio.sleep(seconds)
    await _tool_mark(context, key, "done")
    return f"{key} done"


async def slow_external(key: str, seconds: float, context: ToolContext) -> str:
    """Like slow_write, but an external effect: never repeated by itself."""
    return await slow_write(key, seconds, context)


async def always_fails(key: str, context: ToolContext) -> str:
    """Mark `key` called, then fail."""
    await _tool_mark(context, key, "called")
    raise ToolFailedError(f"{key} fails on purpose")


async def mark_run(context: ToolContext) -> str:
    """Mark the pipeline run this call is part of (its call id is run/node/attempt)."""
    run = (context.call_id or "").split("/")[0]
    await _tool_mark(context, run, "ran")
    return run


def tools() -> list[FunctionTool]:
    """The plugin's tools (the `gathering.tools` entry point)."""
    return [
        function_tool(mark_run, effect="write"),
        function_tool(slow_write, effect="write", timeout=600),
        function_tool(slow_external, effect="external", timeout=600),
        function_tool(always_fails, effect="read"),
    ]
