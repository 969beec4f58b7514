"""The events of a file uploaded into a project (`POST /knowledge/upload` with `project_id`),
indexed by a real job worker with the real `openai` embedding provider at the wire of a local
server: `knowledge.document.progress` after each batch of embeddings, then
`knowledge.document.ready`, each published durably on the subject of the person who uploaded
it (`user:<id>`) and on the project's (`project:<id>`), and delivered to another instance's
subscribers of either subject."""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from embedding_wire import EmbeddingWire, embedding_wire
from fastapi import FastAPI
from task_api import client_for, login

from gathering.agents.chunking import chunk_text
from gathering.agents.retrieval import EMBEDDING_BATCH_SIZE
from gathering.db import Database
from gathering.events import Event, EventBus
from gathering.jobs import JobQueue, JobServices, JobWorker
from gathering.projects.jobs import blueprint

KEY = "k" * 64
TEXT = "\n\n".join(
    f"Paragraph {n}: the ferry to the outer islands leaves when the tide turns. " * 16
    for n in range(90)
)


@pytest.fixture
def wire() -> Iterator[EmbeddingWire]:
    with embedding_wire() as running:
        yield running


@pytest.fixture
def model(wire: EmbeddingWire, settings_env: Callable[..., None]) -> str:
    """The embedding model of this test (a name of its own: providers are cached by name),
    served by `wire`, for the app and for the worker."""
    name = f"bow-{secrets.token_hex(3)}"
    settings_env(**wire.env(name))
    return name


@pytest.fixture
def app(app_for: Callable[..., FastAPI], model: str, tmp_path: Path) -> FastAPI:
    return app_for(auth="required", secret_key=KEY, projects_root=tmp_path / "projects")


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


@pytest.fixture
async def elsewhere(app: FastAPI) -> AsyncIterator[EventBus]:
    """The event bus of another instance on the same database (the API's, say)."""
    bus = EventBus(await app.state.gathering.database(), poll_interval=0.2)
    await bus.start()
    yield bus
    await bus.close(grace=1)


async def _until(check: Callable[[], Any], what: str, limit: float = 60) -> None:
    deadline = time.monotonic() + limit
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {limit}s: {what}")
        await asyncio.sleep(0.1)


def _steps(events: list[tuple[str, dict[str, Any]]]) -> list[tuple[str, int | None]]:
    return [(kind.rpartition(".")[2], data.get("chunks_done")) for kind, data in events]


async def test_a_project_upload_reports_its_progress_to_the_uploader_and_the_project(
    app: FastAPI, worker: JobWorker, elsewhere: EventBus, wire: EmbeddingWire, model: str
) -> None:
    chunks = len(chunk_text(TEXT))
    assert chunks > EMBEDDING_BATCH_SIZE  # more than one batch: progress in between
    async with client_for(app) as client:
        owner = await login(app, client)
        writer = await login(app, client)
        writer_id = (await client.get("/auth/me", headers=writer)).json()["id"]
        made = await client.post("/projects", json={"name": "ferries"}, headers=owner)
        assert made.status_code == 201, made.text
        project_id = made.json()["id"]
        member = await client.put(
            f"/projects/{project_id}/members/{writer_id}",
            json={"permissions": ["read", "write"]},
            headers=owner,
        )
        assert member.status_code == 200, member.text

        user_subject, project_subject = f"user:{writer_id}", f"project:{project_id}"
        heard: dict[str, list[Event]] = {user_subject: [], project_subject: []}
        elsewhere.subscribe(
            "knowledge.document.*", heard[user_subject].append, subjects=user_subject
        )
        elsewhere.subscribe(
            "knowledge.document.*", heard[project_subject].append, subjects=project_subject
        )

        uploaded = await client.post(
            "/knowledge/upload",
            files=[("files", ("tides.md", TEXT.encode(), "text/markdown"))],
            data={"project_id": str(project_id)},
            headers=writer,
        )
        assert uploaded.status_code == 202, uploaded.text
        [document] = uploaded.json()
        assert document["owner_id"] == writer_id
        path = f"/knowledge/{document['id']}"

        async def indexed() -> bool:
            answer = await client.get(path, headers=writer)
            return bool(answer.json()["status"] != "pending")

        await _until(indexed, f"document {document['id']} is indexed")
        done = (await client.get(path, headers=writer)).json()
        assert done["status"] == "ready", done
        assert done["chunk_count"] == chunks and done["embedding_model"] == f"openai/{model}"
        assert {request["model"] for request in wire.requests} == {model}

    batches = range(0, chunks, EMBEDDING_BATCH_SIZE)  # chunks embedded before each batch
    expected = [("progress", n) for n in batches] + [("progress", chunks), ("ready", chunks)]

    # Durably: each event once on each subject, with the same data.
    db: Database = await app.state.gathering.database()
    rows = await db.fetch_all(
        "SELECT type, subject, data FROM events.outbox WHERE data->>'document_id' = $1"
        " ORDER BY cursor",
        str(document["id"]),
    )
    assert {row["subject"] for row in rows} == {user_subject, project_subject}
    by_subject = {
        subject: [(row["type"], row["data"]) for row in rows if row["subject"] == subject]
        for subject in (user_subject, project_subject)
    }
    assert _steps(by_subject[user_subject]) == expected
    assert by_subject[project_subject] == by_subject[user_subject]
    for kind, data in by_subject[project_subject]:
        assert data["title"] == "tides.md", (kind, data)
        assert (data["scope"], data["scope_id"]) == ("project", str(project_id))
        assert data["chunks_total"] == chunks, (kind, data)
    assert by_subject[project_subject][-1][1]["model"] == f"openai/{model}"

    # Live, to another instance's subscribers of either subject.
    async def heard_to_the_end() -> bool:
        return all(
            events and events[-1].type == "knowledge.document.ready" for events in heard.values()
        )

    await _until(heard_to_the_end, "the ready event reaches both subjects' subscribers", 20)
    for subject in (user_subject, project_subject):
        events = heard[subject]
        assert {event.subject for event in events} == {subject}
        assert _steps([(event.type, event.data) for event in events]) == expected
        assert all(event.data["document_id"] == document["id"] for event in events)
