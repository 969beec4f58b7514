"""The embedded PostgreSQL heals itself: under a steady load of writes through a real
`gathering serve`, the postmaster is killed with SIGKILL (as the OOM killer would). The server
answers again within 15 s without a restart of GatheRing, every write it acknowledged is
there, and what failed meanwhile failed with 503 and Retry-After, never 500."""

from __future__ import annotations

import os
import secrets
import signal
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
from live_server import LiveServer

from gathering.db.embedded import postmaster_alive, postmaster_pid
from gathering.testing import LLMStubServer

pytestmark = pytest.mark.slow


@dataclass
class Load:
    """Writers creating agents and chatting with them until told to stop."""

    base: str
    stop: threading.Event = field(default_factory=threading.Event)
    agents: list[str] = field(default_factory=list)  # names whose creation was acknowledged
    turns: list[tuple[int, str, str]] = field(default_factory=list)  # (agent, text, reply)
    failures: list[tuple[int, str | None, str]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def run(self, worker: int) -> None:
        with httpx.Client(base_url=self.base, timeout=30) as client:
            agent_id: int | None = None
            n = 0
            while not self.stop.is_set():
                n += 1
                if agent_id is None or n % 3 == 0:
                    name = f"w{worker}-{n}-{secrets.token_hex(2)}"
                    response = self._send(
                        client.post,
                        "/agents",
                        json={"name": name, "provider": "openai", "model": "gpt-4o"},
                    )
                    if response is not None and response.status_code == 201:
                        with self.lock:
                            self.agents.append(name)
                        agent_id = response.json()["id"]
                    continue
                text = f"message {worker}-{n}"
                response = self._send(
                    client.post, f"/agents/{agent_id}/chat", json={"message": text}
                )
                if response is not None and response.status_code == 200:
                    with self.lock:
                        self.turns.append((agent_id, text, response.json()["reply"]))

    def _send(self, method, url: str, **kwargs) -> httpx.Response | None:
        try:
            response = method(url, **kwargs)
        except httpx.TransportError as exc:
            with self.lock:
                self.failures.append((0, None, repr(exc)))
            return None
        if response.status_code >= 300:
            with self.lock:
                self.failures.append(
                    (response.status_code, response.headers.get("retry-after"), response.text)
                )
            time.sleep(0.2)
        return response


@pytest.fixture
def data_dir() -> Iterator[Path]:
    # Short, so the server's socket fits in the data directory.
    with tempfile.TemporaryDirectory(prefix="gsup-") as path:
        yield Path(path)


def test_a_killed_embedded_postgres_comes_back_by_itself(data_dir: Path, llm_stub: LLMStubServer):
    server = LiveServer(
        DATABASE_URL=None,
        GATHERING_DATABASE_URL=None,
        GATHERING_DATA_DIR=str(data_dir),
        GATHERING_DB_CONNECT_TIMEOUT="3",
        GATHERING_LOG_LEVEL="WARNING",
        **llm_stub.environment(),
    )
    pgdata = data_dir / "pgdata"
    try:
        server.wait_ready(120)
        load = Load(server.base)
        writers = [threading.Thread(target=load.run, args=(i,)) for i in range(2)]
        for writer in writers:
            writer.start()
        time.sleep(2)
        assert load.turns, "the load never got a reply"
        pid = postmaster_pid(pgdata)
        assert pid is not None and postmaster_alive(pgdata)
        os.kill(pid, signal.SIGKILL)
        killed_at = time.monotonic()
        deadline = killed_at + 15
        not_ready = []
        while time.monotonic() < deadline:
            try:
                ready = httpx.get(f"{server.base}/health/ready", timeout=2)
            except httpx.TransportError:
                ready = None
            if ready is not None and ready.status_code == 200:
                break
            if ready is not None:
                not_ready.append(ready)
            time.sleep(0.2)
        else:
            pytest.fail(f"not ready 15 s after the kill:\n{server.output()[-4000:]}")
        back_at = time.monotonic()
        assert not_ready and all(r.headers.get("retry-after") for r in not_ready)
        acknowledged_before = len(load.turns)
        time.sleep(2)  # writes go on after the restart
        load.stop.set()
        for writer in writers:
            writer.join(60)
        assert len(load.turns) > acknowledged_before, "no reply after the restart"
        assert postmaster_pid(pgdata) != pid and postmaster_alive(pgdata)

        with httpx.Client(base_url=server.base, timeout=30) as client:
            names = {a["name"] for a in client.get("/agents").json()}
            assert set(load.agents) <= names
            for agent_id, text, reply in load.turns:
                history = client.get(f"/agents/{agent_id}/history?limit=1000").json()
                lines = [(m["role"], m["content"]) for m in history]
                assert ("user", text) in lines and ("assistant", reply) in lines
        assert all(status == 503 and retry for status, retry, _ in load.failures), load.failures[:5]
        assert "restart" in server.output().lower()
        print(
            f"back after {back_at - killed_at:.1f} s; {len(load.failures)} requests failed "
            f"with 503 meanwhile; {len(load.turns)} turns acknowledged"
        )
    finally:
        server.stop()
