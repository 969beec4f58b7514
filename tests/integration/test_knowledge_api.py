"""`/knowledge` over HTTP: documents added, listed, read, edited (a new content is cut and
indexed again), deleted and searched; files uploaded (a real multi-page PDF made here with
fpdf2, Markdown, CSV, HTML) and indexed by a real job worker, then found by their text; the
events of their progress; the limits (413, 415, 422); project uploads and who may make them;
re-embedding; and the deprecated `/memories/knowledge` paths, answered by the same handlers."""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import AsyncIterator

import httpx
import pytest
from fpdf import FPDF

from gathering.agents.chunking import chunk_text
from gathering.api.routers.memories import get_embedder
from gathering.auth.users import UserStore
from gathering.db import Database
from gathering.events import EventBus
from gathering.jobs import JobQueue, JobServices, JobWorker
from gathering.projects.jobs import blueprint

KEY = "k" * 64
PASSWORD = "correct horse battery staple"
THIRD_PAGE = "The lighthouse keeper of Zanzibar polishes the brass lantern every dawn."


def client_for(app) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test")


def pdf_of(pages: list[str]) -> bytes:
    """A real PDF with one page per text (fpdf2: nothing binary is committed)."""
    pdf = FPDF()
    pdf.set_font("Helvetica", size=12)
    for page in pages:
        pdf.add_page()
        pdf.multi_cell(0, 8, page)
    return bytes(pdf.output())


def book(pages: int = 6) -> list[str]:
    filler = "Chapter {n} tells of tides, harbours and the weather along the coast. "
    texts = [(filler.format(n=n + 1) * 12).strip() for n in range(pages)]
    texts[2] = f"{texts[2]}\n\n{THIRD_PAGE}"
    return texts


@pytest.fixture
def single(app_for):
    return app_for()


@pytest.fixture
async def api(single) -> AsyncIterator[httpx.AsyncClient]:
    async with client_for(single) as client:
        yield client


@pytest.fixture
async def worker(single) -> AsyncIterator[JobWorker]:
    """A job worker on the app's database that runs the `knowledge:*` jobs."""
    db = await single.state.gathering.database()
    bus = EventBus(db, poll_interval=0.2)
    await bus.start()
    queue = await JobQueue(db, blueprints={"knowledge": blueprint}).open()
    running = JobWorker(queue, JobServices(db, bus), concurrency=2)
    await running.start()
    yield running
    await running.stop()
    await queue.close()
    await bus.close(grace=1)


async def wait_until_indexed(api, ids: list[int], limit: float = 60) -> list[dict]:
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        documents = [(await api.get(f"/knowledge/{i}")).json() for i in ids]
        if all(d["status"] != "pending" for d in documents):
            return documents
        await asyncio.sleep(0.1)
    raise AssertionError(f"documents {ids} still pending after {limit}s")


def files(*items: tuple[str, bytes, str]) -> list[tuple[str, tuple[str, bytes, str]]]:
    return [("files", item) for item in items]


# --- JSON documents ---------------------------------------------------------------------------


async def test_documents_are_added_listed_read_edited_searched_and_deleted(api, single):
    added = await api.post(
        "/knowledge",
        json={
            "title": "Deployment runbook",
            "content": "To roll back a release, run deploy --previous.",
            "category": "Ops",
            "metadata": {"team": "platform"},
        },
    )
    assert added.status_code == 201, added.text
    document = added.json()
    assert document["status"] == "ready" and document["chunk_count"] == 1
    assert document["category"] == "ops" and document["error"] is None
    assert document["chunks_done"] == document["chunks_total"] == 1

    listed = (await api.get("/knowledge")).json()
    assert [d["id"] for d in listed] == [document["id"]]
    assert (await api.get("/knowledge", params={"status": "pending"})).json() == []
    full = (await api.get(f"/knowledge/{document['id']}")).json()
    assert full["content"].startswith("To roll back")

    # Category and metadata only: the chunks stay as they are.
    db_chunks = "SELECT id FROM agent.chunks WHERE document_id = $1"
    db = await single.state.gathering.database()
    before = await db.fetch_all(db_chunks, document["id"])
    changed = await api.patch(
        f"/knowledge/{document['id']}", json={"category": "runbooks", "metadata": {"v": 2}}
    )
    assert changed.status_code == 200, changed.text
    assert changed.json()["category"] == "runbooks" and changed.json()["metadata"] == {"v": 2}
    assert await db.fetch_all(db_chunks, document["id"]) == before

    # A new content is cut and indexed again: the old text is no longer found, the new one is.
    content = "Paragraph about the kettle.\n\n" + "The espresso machine lives upstairs. " * 60
    edited = await api.patch(f"/knowledge/{document['id']}", json={"content": content})
    assert edited.status_code == 200, edited.text
    assert edited.json()["chunk_count"] == len(chunk_text(content)) > 1
    assert edited.json()["status"] == "ready"
    found = (await api.post("/knowledge/search", json={"query": "espresso machine"})).json()
    assert found["results"] and found["results"][0]["document_id"] == document["id"]
    assert (await api.post("/knowledge/search", json={"query": "roll back"})).json()[
        "results"
    ] == []
    retitled = await api.patch(f"/knowledge/{document['id']}", json={"title": "Kitchen notes"})
    assert retitled.json()["title"] == "Kitchen notes"
    by_title = (await api.post("/knowledge/search", json={"query": "kitchen"})).json()
    assert by_title["results"][0]["document_title"] == "Kitchen notes"

    assert (await api.delete(f"/knowledge/{document['id']}")).status_code == 204
    assert (await api.get(f"/knowledge/{document['id']}")).status_code == 404
    assert (await api.patch(f"/knowledge/{document['id']}", json={"title": "x"})).status_code == 404
    assert (await api.delete(f"/knowledge/{document['id']}")).status_code == 404


async def test_bad_edits_are_refused(api):
    document = (await api.post("/knowledge", json={"title": "t", "content": "c"})).json()
    for body in (
        {"content": "   "},
        {"title": ""},
        {"unknown": 1},
        {"metadata": {"nested": {"a": 1}}},
        {"content": "x" * 2_000_001},
    ):
        response = await api.patch(f"/knowledge/{document['id']}", json=body)
        assert response.status_code == 422, (body, response.text)
        assert response.headers["content-type"].startswith("application/problem+json")


# --- uploads indexed by jobs ------------------------------------------------------------------


async def test_files_uploaded_at_once_are_indexed_by_a_worker_and_found(api, single, worker):
    pdf = pdf_of(book(6))
    html = (
        "<html><head><title>Menu</title></head><body><nav>Home | About</nav><article>"
        "<h1>Canteen</h1><p>" + "The canteen serves saffron risotto on Fridays. " * 8 + "</p>"
        "</article></body></html>"
    ).encode()
    response = await api.post(
        "/knowledge/upload",
        files=files(
            ("almanac.pdf", pdf, "application/pdf"),
            ("notes.md", b"# Notes\n\nBring **umbrellas** to the quay.", "text/markdown"),
            ("prices.csv", b"item,price\nharbour pass,12\n", "text/csv"),
            ("menu.html", html, "text/html"),
        ),
        data={"category": "Coast"},
    )
    assert response.status_code == 202, response.text
    uploaded = response.json()
    assert [d["title"] for d in uploaded] == ["almanac.pdf", "notes.md", "prices.csv", "menu.html"]
    assert all(d["category"] == "coast" and d["scope"] == "global" for d in uploaded)
    assert {d["status"] for d in uploaded} <= {"pending", "ready"}
    assert uploaded[0]["metadata"] == {
        "filename": "almanac.pdf",
        "media_type": "application/pdf",
        "size_bytes": len(pdf),
        "pages": 6,
    }

    documents = await wait_until_indexed(api, [d["id"] for d in uploaded])
    assert [d["status"] for d in documents] == ["ready"] * 4
    assert all(d["chunk_count"] >= 1 and d["chunks_done"] == d["chunks_total"] for d in documents)
    almanac = documents[0]
    assert THIRD_PAGE.split()[1] in (await api.get(f"/knowledge/{almanac['id']}")).json()["content"]

    found = (
        await api.post("/knowledge/search", json={"query": "lighthouse keeper Zanzibar"})
    ).json()
    assert found["results"], found
    assert found["results"][0]["document_id"] == almanac["id"]
    assert "Zanzibar" in found["results"][0]["content"]
    risotto = (await api.post("/knowledge/search", json={"query": "saffron risotto"})).json()
    assert risotto["results"][0]["document_title"] == "menu.html"
    assert (
        "Home | About" not in (await api.get(f"/knowledge/{documents[3]['id']}")).json()["content"]
    )

    db = await single.state.gathering.database()
    events = await db.fetch_all(
        "SELECT type, subject, data FROM events.outbox WHERE data->>'document_id' = $1"
        " ORDER BY cursor",
        str(almanac["id"]),
    )
    kinds = [event["type"] for event in events]
    assert kinds[0] == "knowledge.document.progress" and kinds[-1] == "knowledge.document.ready"
    assert {event["subject"] for event in events} == {f"user:{almanac['owner_id']}"}
    assert events[-1]["data"]["chunks_done"] == almanac["chunk_count"]


async def test_a_file_of_another_type_or_without_text_is_refused_and_nothing_is_stored(api):
    png = b"\x89PNG\r\n\x1a\n" + secrets.token_bytes(64)
    for name, data, media_type, status in [
        ("picture.png", png, "image/png", 415),
        ("blob", secrets.token_bytes(64), "application/octet-stream", 415),
        ("empty.txt", b"   \n", "text/plain", 422),
        ("broken.pdf", b"%PDF-1.4 not really", "application/pdf", 422),
        ("nul.txt", b"a\x00b" * 10, "text/plain", 415),
    ]:
        response = await api.post(
            "/knowledge/upload",
            files=files(("good.md", b"# fine", "text/markdown"), (name, data, media_type)),
        )
        assert response.status_code == status, (name, response.text)
        assert response.headers["content-type"].startswith("application/problem+json")
    assert (await api.post("/knowledge/upload", data={"category": "x"})).status_code == 422
    assert (await api.get("/knowledge")).json() == []  # all or nothing


async def test_an_upload_over_the_limit_is_413(app_for):
    app = app_for(max_upload_bytes=64 * 1024)
    async with client_for(app) as client:
        big = b"word " * 20_000
        response = await client.post(
            "/knowledge/upload", files=files(("big.txt", big, "text/plain"))
        )
        assert response.status_code == 413, response.text
        assert response.json()["code"] == "request_too_large"
        small = await client.post(
            "/knowledge/upload", files=files(("small.txt", b"word " * 100, "text/plain"))
        )
        assert small.status_code == 202, small.text


# --- projects, re-embedding, the deprecated paths ---------------------------------------------


@pytest.fixture
def multi(app_for, tmp_path):
    return app_for(auth="required", secret_key=KEY, projects_root=tmp_path / "projects")


async def account(app, client, *, is_admin: bool = False) -> tuple[dict[str, str], int]:
    email = f"u-{secrets.token_hex(4)}@example.com"
    user = await UserStore(await app.state.gathering.database()).create(
        email, PASSWORD, is_admin=is_admin
    )
    response = await client.post("/auth/login", json={"email": email, "password": PASSWORD})
    assert response.status_code == 200, response.text
    return {"Authorization": f"Bearer {response.json()['access_token']}"}, user.id


async def test_project_uploads_need_write_and_members_see_project_documents(multi):
    async with client_for(multi) as client:
        (alice, _), (bob, bob_id) = await account(multi, client), await account(multi, client)
        (carol, carol_id), (mallory, _) = await account(multi, client), await account(multi, client)
        made = await client.post("/projects", headers=alice, json={"name": "harbour"})
        assert made.status_code == 201, made.text
        project = made.json()["id"]
        for user, permissions in ((bob_id, ["read"]), (carol_id, ["read", "write"])):
            put = await client.put(
                f"/projects/{project}/members/{user}",
                headers=alice,
                json={"permissions": permissions},
            )
            assert put.status_code == 200, put.text
        note = files(("tides.md", b"# Tides\n\nHigh tide at noon.", "text/markdown"))

        outsider = await client.post(
            "/knowledge/upload", headers=mallory, files=note, data={"project_id": str(project)}
        )
        assert outsider.status_code == 404, outsider.text
        reader = await client.post(
            "/knowledge/upload", headers=bob, files=note, data={"project_id": str(project)}
        )
        assert reader.status_code == 403, reader.text
        missing = await client.post(
            "/knowledge/upload", headers=carol, files=note, data={"project_id": "999999"}
        )
        assert missing.status_code == 404

        writer = await client.post(
            "/knowledge/upload", headers=carol, files=note, data={"project_id": str(project)}
        )
        assert writer.status_code == 202, writer.text
        [document] = writer.json()
        assert (document["scope"], document["scope_id"]) == ("project", str(project))
        assert document["owner_id"] == carol_id

        # Members read the project's documents; only writers change them; others see nothing.
        listed = await client.get("/knowledge", headers=bob, params={"project_id": project})
        assert [d["id"] for d in listed.json()] == [document["id"]]
        assert (await client.get("/knowledge", headers=bob)).json() == []
        path = f"/knowledge/{document['id']}"
        assert (await client.get(path, headers=bob)).status_code == 200
        assert (await client.patch(path, headers=bob, json={"title": "x"})).status_code == 403
        assert (await client.delete(path, headers=bob)).status_code == 403
        assert (await client.get(path, headers=mallory)).status_code == 404
        assert (await client.delete(path, headers=mallory)).status_code == 404
        assert (
            await client.get("/knowledge", headers=mallory, params={"project_id": project})
        ).status_code == 404
        # Adding a project's document as JSON needs `write` on it too.
        shared = {"title": "Berths", "content": "Berth 4 is free.", "scope": "project"}
        shared["scope_id"] = str(project)
        assert (await client.post("/knowledge", headers=mallory, json=shared)).status_code == 404
        assert (await client.post("/knowledge", headers=bob, json=shared)).status_code == 403
        added = await client.post("/knowledge", headers=carol, json=shared)
        assert added.status_code == 201, added.text
        listed = await client.get("/knowledge", headers=bob, params={"project_id": project})
        assert len(listed.json()) == 2
        found = await client.post(
            "/knowledge/search", headers=bob, json={"query": "berth", "project_id": project}
        )
        assert [hit["document_id"] for hit in found.json()["results"]] == [added.json()["id"]]
        elsewhere = await client.post(
            "/knowledge/search",
            headers=bob,
            json={"query": "berth", "project_id": project, "scopes": [{"scope": "global"}]},
        )
        assert elsewhere.json()["results"] == []

        renamed = await client.patch(path, headers=alice, json={"title": "Tide table"})
        assert renamed.status_code == 200 and renamed.json()["title"] == "Tide table"

        # Only admins re-embed.
        assert (await client.post("/knowledge/reembed", headers=alice)).status_code == 403

        # An API key needs projects:write besides memories:write to upload into a project.
        key = await client.post(
            "/auth/api-keys", headers=carol, json={"name": "k", "scopes": ["memories:write"]}
        )
        scoped = {"X-API-Key": key.json()["key"]}
        refused = await client.post(
            "/knowledge/upload", headers=scoped, files=note, data={"project_id": str(project)}
        )
        assert refused.status_code == 403
        assert (
            await client.post("/knowledge/upload", headers=scoped, files=note)
        ).status_code == 202


class FixedEmbedder:
    name = "fake"
    model = "fixed-8"

    async def embed(self, texts):
        return [[1.0] + [0.0] * 7 for _ in texts]

    async def dimension(self) -> int:
        return 8


async def test_reembed_queues_what_another_model_embedded_and_the_worker_indexes_it(
    api, single, worker
):
    old = (await api.post("/knowledge", json={"title": "Old", "content": "Old text."})).json()
    assert old["embedding_model"] is None
    # The configured model changes (here: the API's embedder; the worker keeps its own, none).
    single.dependency_overrides[get_embedder] = FixedEmbedder
    fresh = (await api.post("/knowledge", json={"title": "New", "content": "New text."})).json()
    assert fresh["embedding_model"] == "fake/fixed-8"
    answered = await api.post("/knowledge/reembed")
    assert answered.status_code == 202, answered.text
    assert answered.json() == {
        "queued": 1,
        "document_ids": [old["id"]],
        "embedding_model": "fake/fixed-8",
    }
    [done] = await wait_until_indexed(api, [old["id"]])
    assert done["status"] == "ready" and done["chunk_count"] == 1
    # Nothing is queued twice: a second call finds only what is still not of the model.
    again = (await api.post("/knowledge/reembed")).json()
    assert again["document_ids"] == [old["id"]]  # the worker embeds with its own model: none
    await wait_until_indexed(api, [old["id"]])


async def test_the_deprecated_paths_answer_as_before(api, single):
    created = await api.post(
        "/memories/knowledge", json={"title": "Legacy", "content": "Old clients still work."}
    )
    assert created.status_code == 201
    document = created.json()
    assert (await api.get("/memories/knowledge")).json()[0]["id"] == document["id"]
    assert (await api.get(f"/memories/knowledge/{document['id']}")).json()["content"]
    found = await api.post("/memories/knowledge/search", json={"query": "clients"})
    assert found.json()["results"][0]["document_id"] == document["id"]
    assert (await api.delete(f"/memories/knowledge/{document['id']}")).status_code == 204
    assert (await api.get(f"/knowledge/{document['id']}")).status_code == 404

    paths = single.openapi()["paths"]
    old = {
        ("/memories/knowledge", "get"),
        ("/memories/knowledge", "post"),
        ("/memories/knowledge/search", "post"),
        ("/memories/knowledge/{document_id}", "get"),
        ("/memories/knowledge/{document_id}", "delete"),
    }
    for path, method in old:
        operation = paths[path][method]
        assert operation["deprecated"] is True, (path, method)
        assert operation["operationId"].startswith("memories-")
        new = paths[path.replace("/memories", "")][method]
        assert "deprecated" not in new and new["operationId"].startswith("knowledge-")
    assert "patch" not in paths["/memories/knowledge/{document_id}"]
    assert not any(p.startswith("/memories/knowledge/upload") for p in paths)
    assert set(paths["/knowledge/upload"]["post"]["responses"]) >= {"202", "404", "413", "415"}
    body = paths["/knowledge/upload"]["post"]["requestBody"]["content"]
    assert "multipart/form-data" in body


async def test_indexing_survives_a_missing_document_and_an_edit_meanwhile(api, single):
    """A job whose document was deleted, or edited before it ran, does nothing."""
    from gathering.projects.ingestion import ingest

    db: Database = await single.state.gathering.database()
    note = files(("a.txt", b"alpha beta", "text/plain"), ("b.txt", b"gamma delta", "text/plain"))
    first, second = (await api.post("/knowledge/upload", files=note)).json()
    jobs = {
        row["id"]: row["job_id"]
        for row in await db.fetch_all("SELECT id, job_id FROM agent.documents")
    }
    await api.delete(f"/knowledge/{first['id']}")
    assert (await ingest(db, None, first["id"], jobs[first["id"]])).outcome == "skipped"
    await api.patch(f"/knowledge/{second['id']}", json={"content": "epsilon zeta"})
    assert (await ingest(db, None, second["id"], jobs[second["id"]])).outcome == "skipped"
    kept = (await api.get(f"/knowledge/{second['id']}")).json()
    assert kept["status"] == "ready" and kept["content"] == "epsilon zeta"
