"""The embedding provider fails while a job indexes an uploaded file: the real `openai`
provider, at the wire of a local server that answers 503 until it is told to work. The document
ends `failed` with the provider's error, `knowledge.document.failed` carries that error (on the
uploader's subject and the project's), and re-embedding (`POST /knowledge/reembed`, or
`gathering knowledge reembed`) queues the failed document again: once the provider works, it
ends `ready` with every chunk, and it is found by meaning."""

from __future__ import annotations

import asyncio
import json
import re
import secrets
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from embedding_wire import EmbeddingWire, embedding_wire
from fastapi import FastAPI
from task_api import client_for
from typer.testing import CliRunner, Result

from gathering.agents.chunking import chunk_text
from gathering.cli import app as cli
from gathering.config import get_settings
from gathering.db import Database
from gathering.events import EventBus
from gathering.jobs import JobQueue, JobServices, JobWorker
from gathering.projects.jobs import blueprint

OUTAGE = "The embedding service is overloaded, try again later"
TEXT = "\n\n".join(
    f"Section {n}: the lighthouse keeper trims the lamp wick before the storm. " * 12
    for n in range(8)
)


class FlakyEmbeddings:
    """`EmbeddingWire` that answers every request with HTTP 503 and an OpenAI error body
    while `down` is set (the requests are recorded in `failed`), and as the wire does after."""

    def __init__(self, wire: EmbeddingWire) -> None:
        self.wire = wire
        self.down = True
        self.failed: list[dict[str, Any]] = []
        flaky = self
        answering = wire.server.RequestHandlerClass

        class Handler(answering):  # type: ignore[misc, valid-type]
            def do_POST(self) -> None:
                if not flaky.down:
                    super().do_POST()
                    return
                flaky.failed.append(
                    json.loads(self.rfile.read(int(self.headers["content-length"])))
                )
                error = {"message": OUTAGE, "type": "server_error", "param": None, "code": None}
                data = json.dumps({"error": error}).encode()
                self.send_response(503)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        wire.server.RequestHandlerClass = Handler


@pytest.fixture
def flaky() -> Iterator[FlakyEmbeddings]:
    with embedding_wire() as wire:
        yield FlakyEmbeddings(wire)


@pytest.fixture
def model(flaky: FlakyEmbeddings, settings_env: Callable[..., None]) -> str:
    """The embedding model of this test (a name of its own: providers are cached by name),
    served by the flaky wire, for the app, the worker and the command line."""
    name = f"bow-{secrets.token_hex(3)}"
    settings_env(**flaky.wire.env(name))
    return name


async def _until(check: Callable[[], Any], what: str, limit: float = 60) -> None:
    deadline = time.monotonic() + limit
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {limit}s: {what}")
        await asyncio.sleep(0.1)


async def _events(db: Database, document_id: int) -> list[tuple[str, str, dict[str, Any]]]:
    rows = await db.fetch_all(
        "SELECT type, subject, data FROM events.outbox WHERE data->>'document_id' = $1"
        " ORDER BY cursor",
        str(document_id),
    )
    return [(row["type"].rpartition(".")[2], row["subject"], row["data"]) for row in rows]


# --- over HTTP, with a job worker -------------------------------------------------------------


@pytest.fixture
def app(app_for: Callable[..., FastAPI], model: str, tmp_path: Path) -> FastAPI:
    return app_for(projects_root=tmp_path / "projects")


@pytest.fixture
async def worker(app: FastAPI) -> AsyncIterator[JobWorker]:
    """A job worker on the app's database that runs the `knowledge:*` jobs."""
    db = await app.state.gathering.database()
    bus = EventBus(db, poll_interval=0.2)
    await bus.start()
    queue = await JobQueue(db, blueprints={"knowledge": blueprint}).open()
    running = JobWorker(queue, JobServices(db, bus), concurrency=2)
    await running.start()
    yield running
    await running.stop()
    await queue.close()
    await bus.close(grace=1)


async def _settled(client: httpx.AsyncClient, document_id: int) -> dict[str, Any]:
    """The document once its job has ended (not `pending`)."""
    seen: dict[str, Any] = {}

    async def settled() -> bool:
        seen.update((await client.get(f"/knowledge/{document_id}")).json())
        return bool(seen["status"] != "pending")

    await _until(settled, f"document {document_id} leaves pending")
    return seen


async def test_a_provider_failure_fails_the_document_and_reembed_indexes_it_again(
    app: FastAPI, worker: JobWorker, flaky: FlakyEmbeddings, model: str
) -> None:
    chunks = len(chunk_text(TEXT))
    async with client_for(app) as client:
        made = await client.post("/projects", json={"name": "lighthouse"})
        assert made.status_code == 201, made.text
        project_id = made.json()["id"]
        uploaded = await client.post(
            "/knowledge/upload",
            files=[("files", ("keeper.md", TEXT.encode(), "text/markdown"))],
            data={"project_id": str(project_id)},
        )
        assert uploaded.status_code == 202, uploaded.text
        [document] = uploaded.json()
        document_id, owner_id = document["id"], document["owner_id"]

        failed = await _settled(client, document_id)
        assert failed["status"] == "failed", failed
        error = failed["error"]
        assert error and "503" in error and OUTAGE in error, error
        assert failed["chunk_count"] == 0 and failed["embedding_model"] is None
        assert flaky.failed and {request["model"] for request in flaky.failed} == {model}
        listed = await client.get("/knowledge", params={"status": "failed"})
        assert [d["id"] for d in listed.json()] == [document_id]

        db: Database = await app.state.gathering.database()
        events = await _events(db, document_id)
        told = [(subject, data) for kind, subject, data in events if kind == "failed"]
        assert {subject for subject, _ in told} == {f"user:{owner_id}", f"project:{project_id}"}
        assert [data["error"] for _, data in told] == [error, error]
        assert [kind for kind, _, _ in events][-2:] == ["failed", "failed"]

        flaky.down = False
        answered = await client.post("/knowledge/reembed")
        assert answered.status_code == 202, answered.text
        assert answered.json() == {
            "queued": 1,
            "document_ids": [document_id],
            "embedding_model": f"openai/{model}",
        }
        ready = await _settled(client, document_id)
        assert ready["status"] == "ready", ready
        assert ready["error"] is None and ready["chunk_count"] == chunks
        assert ready["chunks_done"] == ready["chunks_total"] == chunks
        assert ready["embedding_model"] == f"openai/{model}"

        found = await client.post(
            "/knowledge/search", json={"query": "lighthouse keeper lamp wick"}
        )
        assert found.status_code == 200, found.text
        assert found.json()["semantic"] is True
        assert [hit["document_id"] for hit in found.json()["results"]][:1] == [document_id]

        after = [(kind, subject) for kind, subject, _ in (await _events(db, document_id))]
        assert after[-2:] == [("ready", f"user:{owner_id}"), ("ready", f"project:{project_id}")]
        assert (await client.post("/knowledge/reembed")).json()["queued"] == 0


# --- on the command line ----------------------------------------------------------------------

runner = CliRunner()
WIDE = {"COLUMNS": "200"}


@pytest.fixture
def database(
    monkeypatch: pytest.MonkeyPatch, migrated_database_url: str, tmp_path: Path, model: str
) -> Iterator[str]:
    monkeypatch.setenv("GATHERING_DATABASE_URL", migrated_database_url)
    monkeypatch.setenv("GATHERING_PROJECTS_ROOT", str(tmp_path / "projects"))
    get_settings.cache_clear()
    yield migrated_database_url
    get_settings.cache_clear()


def run(*args: str) -> Result:
    return runner.invoke(cli, list(args), env=WIDE)


def test_the_command_line_reports_the_failure_and_reembed_recovers_it(
    database: str, tmp_path: Path, flaky: FlakyEmbeddings, model: str
) -> None:
    notes = tmp_path / "keeper.md"
    notes.write_text(TEXT)
    failed = run("knowledge", "upload", str(notes))
    assert failed.exit_code == 1, failed.output
    assert "Traceback" not in failed.output
    output = " ".join(failed.output.split())
    found = re.search(r"failed (\d+) keeper\.md: (.+)", output)
    assert found, output
    assert "503" in found.group(2) and OUTAGE in found.group(2), output
    assert "failed" in run("knowledge", "list", "--status", "failed").output

    flaky.down = False
    recovered = run("knowledge", "reembed")
    assert recovered.exit_code == 0, recovered.output
    said = " ".join(recovered.output.split())
    assert f"1 document(s) queued to be embedded with openai/{model}" in said
    chunks = len(chunk_text(TEXT))
    assert f"ready {found.group(1)} keeper.md: {chunks} chunk(s), openai/{model}" in said, said
    assert "0 document(s)" in run("knowledge", "list", "--status", "failed").output
    assert "nothing to index again" in run("knowledge", "reembed").output
