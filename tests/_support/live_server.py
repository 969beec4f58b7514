"""Real `gathering serve` processes for tests: started on a free port, waited for until ready."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time

import httpx
import pytest


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def serve_on_port(command: list[str], port: int, seconds: float = 30) -> subprocess.Popen[bytes]:
    """Start `command` (a server that listens on 127.0.0.1:`port`), and wait until it does."""
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                return process
        time.sleep(0.1)
    process.kill()
    raise AssertionError(f"{command[:3]} did not listen on port {port} within {seconds}s")


def environment(**overrides: str | None) -> dict[str, str]:
    """This process's environment with `overrides` (None removes a variable)."""
    env = dict(os.environ)
    for key, value in overrides.items():
        if value is None:
            env.pop(key, None)
        else:
            env[key] = value
    return env


class LiveServer:
    """`gathering serve --port P [args]` in a subprocess; its output goes to a temporary file."""

    def __init__(self, *args: str, cwd: str | None = None, **env: str | None) -> None:
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self._output = tempfile.TemporaryFile(mode="w+")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "gathering", "serve", "--port", str(self.port), *args],
            cwd=cwd,
            env=environment(**env),
            stdout=self._output,
            stderr=subprocess.STDOUT,
            text=True,
        )

    def output(self) -> str:
        """Everything the server printed so far."""
        self._output.seek(0)
        return self._output.read()

    def wait_ready(self, limit: float = 60) -> httpx.Response:
        """The first 200 answer of /health/ready; fails the test if none comes in `limit` s."""
        deadline = time.monotonic() + limit
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                pytest.fail(f"the server exited during start-up:\n{self.output()}")
            try:
                response = httpx.get(f"{self.base}/health/ready", timeout=2)
                if response.status_code == 200:
                    return response
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        pytest.fail(f"the server on port {self.port} did not become ready:\n{self.output()}")

    def stop(self, timeout: float = 30) -> int:
        """SIGTERM, then wait; returns the exit code (kills it if it does not stop in time)."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        self._output.close()
        return self.process.returncode
