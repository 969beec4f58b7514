"""Shutdown draining, with the real server in a subprocess and a real SIGTERM."""

from __future__ import annotations

import signal
import threading
import time

import httpx
import pytest
from live_server import LiveServer

from gathering.api.draining import DrainState
from gathering.api.lifecycle import Component, Health, Lifecycle

pytestmark = pytest.mark.slow


@pytest.fixture
def server():
    """A real `gathering serve` with the debug endpoints, on its own port."""
    live = LiveServer(
        GATHERING_DEBUG_ENDPOINTS="true",
        GATHERING_ENV="development",
        GATHERING_SHUTDOWN_TIMEOUT="20",
    )
    live.wait_ready()
    yield live.process, live.base
    if live.process.poll() is None:
        live.process.kill()
        live.process.wait(timeout=10)


def _slow_requests(base: str, count: int, seconds: float) -> tuple[list, list[threading.Thread]]:
    results: list = []

    def call() -> None:
        try:
            response = httpx.get(f"{base}/_debug/sleep", params={"seconds": seconds}, timeout=30)
            results.append(response.status_code)
        except httpx.HTTPError as exc:  # recorded, so the assertion shows it
            results.append(repr(exc))

    threads = [threading.Thread(target=call) for _ in range(count)]
    for thread in threads:
        thread.start()
    return results, threads


def test_sigterm_drains_in_flight_requests_and_exits_zero(server):
    process, base = server
    results, threads = _slow_requests(base, count=4, seconds=3)
    time.sleep(1.0)  # let the four requests reach the handler
    process.send_signal(signal.SIGTERM)

    # During the drain: the socket still accepts, readiness and new work answer 503.
    saw_not_ready = saw_refused_work = False
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and not (saw_not_ready and saw_refused_work):
        ready = httpx.get(f"{base}/health/ready", timeout=5)
        saw_not_ready |= ready.status_code == 503 and ready.json()["reason"] == "shutting down"
        work = httpx.get(f"{base}/_debug/sleep", params={"seconds": 0}, timeout=5)
        saw_refused_work |= work.status_code == 503 and work.json()["code"] == "shutting_down"
        time.sleep(0.1)
    assert saw_not_ready and saw_refused_work

    for thread in threads:
        thread.join(timeout=30)
    assert results == [200, 200, 200, 200]
    assert process.wait(timeout=25) == 0


def test_second_signal_during_drain_stops_at_once(server):
    process, base = server
    results, threads = _slow_requests(base, count=1, seconds=15)
    time.sleep(1.0)
    process.send_signal(signal.SIGTERM)
    time.sleep(0.5)
    assert httpx.get(f"{base}/health/ready", timeout=5).status_code == 503
    process.send_signal(signal.SIGINT)
    assert process.wait(timeout=25) in (0, 1, 130, -signal.SIGINT)
    for thread in threads:
        thread.join(timeout=30)
    assert results and results[0] != 200  # cut off rather than waited for 15 s


def test_reload_keeps_the_bind_host_and_drains(tmp_path):
    # `serve --reload` builds the app in a child process from the environment: it must still
    # accept its bind host as Host, and drain in-flight requests on SIGTERM like `serve`.
    live = LiveServer(
        "--reload",
        "--host",
        "127.0.0.2",
        cwd=str(tmp_path),  # what it watches for changes
        GATHERING_DEBUG_ENDPOINTS="true",
        GATHERING_ENV="development",
        GATHERING_SHUTDOWN_TIMEOUT="20",
    )
    live.base = f"http://127.0.0.2:{live.port}"
    try:
        live.wait_ready()  # its Host is 127.0.0.2:port, the bind host
        results, threads = _slow_requests(live.base, count=2, seconds=3)
        time.sleep(1.0)
        live.process.send_signal(signal.SIGTERM)
        for thread in threads:
            thread.join(timeout=30)
        assert results == [200, 200], live.output()
        assert live.process.wait(timeout=25) == 0
    finally:
        live.stop()


class _Recorder(Component):
    def __init__(
        self, name: str, log: list[str], *, fail_start: bool = False, hang_stop: bool = False
    ) -> None:
        self.name, self.log = name, log
        self.fail_start, self.hang_stop = fail_start, hang_stop
        self.stop_timeout = 0.2

    async def start(self) -> None:
        if self.fail_start:
            raise RuntimeError(f"{self.name} cannot start")
        self.log.append(f"start {self.name}")

    async def stop(self) -> None:
        if self.hang_stop:
            import asyncio

            await asyncio.sleep(60)
        self.log.append(f"stop {self.name}")

    async def health(self) -> Health:
        return Health(self.name != "sick", "bad" if self.name == "sick" else "ok")


async def test_components_start_in_order_and_stop_in_reverse():
    log: list[str] = []
    lifecycle = Lifecycle([_Recorder("database", log), _Recorder("events", log)])
    lifecycle.add(_Recorder("scheduler", log))
    await lifecycle.start()
    await lifecycle.stop()
    assert log == [
        "start database",
        "start events",
        "start scheduler",
        "stop scheduler",
        "stop events",
        "stop database",
    ]


async def test_failed_start_stops_what_already_started():
    log: list[str] = []
    lifecycle = Lifecycle(
        [
            _Recorder("database", log),
            _Recorder("events", log, fail_start=True),
            _Recorder("scheduler", log),
        ]
    )
    with pytest.raises(RuntimeError, match="events cannot start"):
        await lifecycle.start()
    assert log == ["start database", "stop database"]


async def test_a_hanging_component_does_not_block_the_others():
    log: list[str] = []
    lifecycle = Lifecycle([_Recorder("database", log), _Recorder("worker", log, hang_stop=True)])
    await lifecycle.start()
    await lifecycle.stop()  # the worker's stop times out after 0.2 s
    assert log[-1] == "stop database"


async def test_health_reports_each_component():
    lifecycle = Lifecycle([_Recorder("database", []), _Recorder("sick", [])])
    report = await lifecycle.health()
    assert report["database"].ok and not report["sick"].ok


async def test_drain_state_counts_requests():
    drain = DrainState()
    drain.request_started()
    assert not await drain.wait_idle(0.05)
    drain.request_finished()
    assert await drain.wait_idle(0.05)
