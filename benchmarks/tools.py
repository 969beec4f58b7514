"""Tool calls: the cost of validation plus dispatch, and the cost of starting a sandbox.

1. Dispatch: `await tool.run({"n": 1})` on a `function_tool` around a no-op function with one
   int parameter (JSON Schema check, pydantic conversion, the call, rendering the result), in
   microseconds per call, against calling the same function directly. Measured for an async
   function (called on the event loop) and a plain one (which `run` sends to a tool thread).
   Target: validation plus dispatch <= 50 µs per call.
2. Sandbox start: `python3 -c pass` through `run_sandboxed` (bubblewrap, namespaces, rlimits,
   output capture) against a bare `asyncio.create_subprocess_exec` of the same program, in
   milliseconds per run and as a ratio. Target: <= 2x. `/bin/true` is shown as well, where
   the start-up is nearly all there is.

Best of a few alternating rounds for each side, in the same process. Bounded in count and
time; touches nothing but a temporary workspace. Run: `.venv/bin/python benchmarks/tools.py`.
"""

from __future__ import annotations

import asyncio
import shutil
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from gathering.tools import function_tool
from gathering.tools.sandbox import SandboxLimits, check_sandbox, run_sandboxed

DISPATCH_CALLS = 20_000
SANDBOX_RUNS = 20
ROUNDS = 5
DISPATCH_TARGET_US = 50.0
SANDBOX_TARGET = 2.0
PART_TIMEOUT = 300.0


async def per_call(call: Callable[[], Awaitable[Any]], calls: int) -> float:
    """Seconds per call of `call`, over `calls` calls in a row."""
    started = time.perf_counter()
    for _ in range(calls):
        await call()
    return (time.perf_counter() - started) / calls


async def best_of(
    baseline: Callable[[], Awaitable[Any]], ours: Callable[[], Awaitable[Any]], calls: int
) -> tuple[float, float]:
    """The best seconds per call of each, over `ROUNDS` alternating rounds (after a warm-up)."""
    await per_call(baseline, max(1, calls // 10))
    await per_call(ours, max(1, calls // 10))
    base: list[float] = []
    mine: list[float] = []
    for round_number in range(ROUNDS):
        pair = [(baseline, base), (ours, mine)]
        for call, times in pair if round_number % 2 == 0 else reversed(pair):
            times.append(await per_call(call, calls))
    return min(base), min(mine)


# --- 1. validation plus dispatch -------------------------------------------------------------


def noop(n: int) -> int:
    """Return its argument.

    Args:
        n: Any whole number.
    """
    return n


async def async_noop(n: int) -> int:
    """Return its argument.

    Args:
        n: Any whole number.
    """
    return n


async def dispatch() -> None:
    print(f"validated no-op tool call, {DISPATCH_CALLS:,} calls, best of {ROUNDS} rounds")
    for label, function, tool in (
        ("async function", async_noop, function_tool(async_noop, name="async_noop")),
        ("plain function", noop, function_tool(noop, name="noop")),
    ):

        async def bare(function: Callable[..., Any] = function) -> Any:
            result = function(n=1)
            return await result if asyncio.iscoroutine(result) else result

        async def through_tool(tool: Any = tool) -> Any:
            return await tool.run({"n": 1})

        calls = DISPATCH_CALLS if label == "async function" else DISPATCH_CALLS // 10
        base, ours = await best_of(bare, through_tool, calls)
        overhead_us = (ours - base) * 1e6
        verdict = "ok" if overhead_us <= DISPATCH_TARGET_US else "ABOVE TARGET"
        print(f"  {label} ({calls:,} calls)")
        print(f"    bare call            : {base * 1e6:10.2f} µs")
        print(f"    await tool.run(...)  : {ours * 1e6:10.2f} µs")
        print(
            f"    overhead             : {overhead_us:10.2f} µs  (ratio {ours / base:,.0f}x; "
            f"target <= {DISPATCH_TARGET_US:.0f} µs: {verdict})"
        )


# --- 2. sandbox start ------------------------------------------------------------------------


async def bare_process(argv: list[str], workspace: Path) -> None:
    process = await asyncio.create_subprocess_exec(
        *argv,
        cwd=workspace,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    await process.communicate()
    assert process.returncode == 0


async def sandbox_start() -> None:
    await check_sandbox()
    workspace = Path(await asyncio.to_thread(tempfile.mkdtemp, prefix="gathering-bench-tools-"))
    limits = SandboxLimits(wall_seconds=30)
    try:
        print(f"sandbox start, {SANDBOX_RUNS} runs, best of {ROUNDS} rounds")
        for argv in (["/usr/bin/python3", "-c", "pass"], ["/bin/true"]):

            async def bare(argv: list[str] = argv) -> None:
                await bare_process(argv, workspace)

            async def sandboxed(argv: list[str] = argv) -> None:
                result = await run_sandboxed(argv, workspace, limits=limits)
                assert result.exit_code == 0, result

            base, ours = await best_of(bare, sandboxed, SANDBOX_RUNS)
            ratio = ours / base
            verdict = "ok" if ratio <= SANDBOX_TARGET else "ABOVE TARGET"
            print(f"  {' '.join(argv)}")
            print(f"    bare subprocess      : {base * 1e3:10.2f} ms")
            print(f"    run_sandboxed        : {ours * 1e3:10.2f} ms")
            target = f"target <= {SANDBOX_TARGET:g}x: {verdict}" if "python3" in argv[0] else ""
            print(f"    ratio                : {ratio:10.2f}  {target}".rstrip())
        samples = [
            (await run_sandboxed(["/bin/true"], workspace, limits=limits)).duration
            for _ in range(SANDBOX_RUNS)
        ]
        median_ms = statistics.median(samples) * 1e3
        print(f"  SandboxResult.duration of /bin/true: median {median_ms:.2f} ms")
    finally:
        await asyncio.to_thread(shutil.rmtree, workspace, True)


async def main() -> None:
    async with asyncio.timeout(PART_TIMEOUT):
        await dispatch()
    async with asyncio.timeout(PART_TIMEOUT):
        await sandbox_start()


if __name__ == "__main__":
    asyncio.run(main())
