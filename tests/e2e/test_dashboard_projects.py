"""The projects workspace and the knowledge base in a real browser (Debian's chromium) against a
real single-user `gathering serve` on a migrated database, the model faked at its HTTP wire and
embeddings at theirs: a project made in the UI, a file created, edited in Monaco and saved, a
stale save shown as a conflict and overwritten, git init/stage/commit, an agent's write_file
edit appearing live in the editor and the tree, the sandboxed terminal; a PDF uploaded, indexed
by the server's worker (progress through the knowledge.document.* events), read, edited,
searched and deleted. Each page is checked with axe-core and photographed."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from browser import check_page, chromium, new_page
from embedding_wire import EmbeddingWire, embedding_wire
from fpdf import FPDF
from job_processes import ScratchDatabase, scratch_database, worker_env
from live_server import LiveServer
from playwright.async_api import Page, expect

from gathering.llm import ToolCall
from gathering.testing import LLMStubServer

pytestmark = [pytest.mark.slow, pytest.mark.e2e]
LIGHTHOUSE = "The lighthouse keeper of Zanzibar polishes the brass lantern every dawn."


@pytest.fixture
def stub(llm_stub: LLMStubServer) -> Iterator[LLMStubServer]:
    llm_stub.reset()
    try:
        yield llm_stub
    finally:
        llm_stub.reset()


@pytest.fixture
def wire() -> Iterator[EmbeddingWire]:
    with embedding_wire() as running:
        yield running


@pytest.fixture
def server(
    test_server_url: str, tmp_path: Path, stub: LLMStubServer, wire: EmbeddingWire
) -> Iterator[LiveServer]:
    """Single-user (the tests' default), its projects under tmp_path, the model at the stub
    and embeddings at the wire (OPENAI_BASE_URL is the wire's: the agents talk Anthropic)."""
    with scratch_database(test_server_url) as db:
        yield from _serve(db, tmp_path, stub, wire)


def _serve(
    db: ScratchDatabase, tmp_path: Path, stub: LLMStubServer, wire: EmbeddingWire
) -> Iterator[LiveServer]:
    env = worker_env(
        db,
        GATHERING_PROJECTS_ROOT=str(tmp_path / "projects"),
        GATHERING_DEFAULT_PROVIDER="anthropic",
        **{**stub.environment(), **wire.env("bow-e2e")},
    )
    live = LiveServer(**env)
    try:
        live.wait_ready()
        yield live
    finally:
        live.stop()


def pdf_of(pages: list[str]) -> bytes:
    """A real PDF with one page per text (fpdf2: nothing binary is committed)."""
    pdf = FPDF()
    pdf.set_font("Helvetica", size=12)
    for text in pages:
        pdf.add_page()
        pdf.multi_cell(0, 8, text)
    return bytes(pdf.output())


def editor_text(page: Page):  # type: ignore[no-untyped-def]
    return page.locator(".monaco-editor .view-lines")


async def type_at_end(page: Page, text: str) -> None:
    await editor_text(page).click()
    await page.keyboard.press("Control+End")
    await page.keyboard.type(text)


async def test_a_project_is_made_edited_committed_and_changed_live_by_an_agent(
    server: LiveServer, stub: LLMStubServer
) -> None:
    base = server.base
    api = httpx.AsyncClient(base_url=base, timeout=30)
    agent = await api.post("/agents", json={"name": "Builder"})
    assert agent.status_code == 201, agent.text
    agent_id = agent.json()["id"]
    enabled = await api.put(f"/agents/{agent_id}/tools/write_file", json={"enabled": True})
    assert enabled.status_code == 200, enabled.text

    async with chromium() as browser:
        page = await new_page(browser)
        await page.goto(base + "/projects")
        await expect(page.get_by_role("heading", name="Projects")).to_be_visible()
        await expect(page.get_by_text("No project yet")).to_be_visible()
        await check_page(page, "projects")

        # A project made in the UI opens as a workspace.
        await page.get_by_role("button", name="New project").click()
        await page.get_by_label("Name").fill("shop")
        await page.get_by_label("Description").fill("The web shop")
        await page.get_by_role("button", name="Create").click()
        await expect(page.get_by_role("heading", name="shop", exact=True)).to_be_visible()
        project_id = int(page.url.rstrip("/").rsplit("/", 1)[1])
        files = f"/projects/{project_id}/files/content"
        await expect(page.get_by_text("No file yet.")).to_be_visible()
        await expect(page.locator(".badge", has_text="Live")).to_be_visible()

        # A file created in the tree opens in Monaco (bundled, its worker one of ours).
        await page.get_by_role("button", name="New file").click()
        await page.get_by_label(re.compile("^Name")).fill("notes.md")
        await page.get_by_role("button", name="Create").click()
        await expect(page.get_by_role("heading", name="notes.md")).to_be_visible()
        await expect(page.get_by_role("button", name="notes.md", exact=True)).to_be_visible()
        await expect(page.locator(".monaco-editor")).to_be_visible()
        await type_at_end(page, "first_line")
        await expect(page.get_by_text("unsaved")).to_be_visible()
        await page.get_by_role("button", name="Save", exact=True).click()
        await expect(page.get_by_role("status").filter(has_text="Saved.")).to_be_visible()
        assert (await api.get(files, params={"path": "notes.md"})).json()["text"] == "first_line"
        await check_page(page, "project-editor")  # no console error: no CSP refusal

        # Edited here while someone changes it on disk: the page says so, and the save
        # (If-Match the version read) is a conflict to resolve.
        await type_at_end(page, "_mine")
        disk = await api.get(files, params={"path": "notes.md"})
        changed = await api.put(
            files,
            params={"path": "notes.md"},
            json={"text": "from_disk"},
            headers={"If-Match": disk.headers["etag"]},
        )
        assert changed.status_code == 200, changed.text
        await expect(page.get_by_text("changed on disk while you were editing it")).to_be_visible()
        await page.get_by_role("button", name="Save", exact=True).click()
        conflict = page.get_by_role("alert").filter(has_text="Conflict")
        await expect(conflict).to_contain_text("notes.md changed on disk since you opened it")
        await check_page(page, "project-conflict", expected_errors=1)  # the browser logs the 412
        await conflict.get_by_role("button", name="Overwrite with mine").click()
        await expect(page.get_by_role("status").filter(has_text="Saved.")).to_be_visible()
        await expect(conflict).to_be_hidden()
        assert (await api.get(files, params={"path": "notes.md"})).json()[
            "text"
        ] == "first_line_mine"

        # git: init, the file untracked in the tree, staged, committed.
        await page.get_by_role("button", name="Initialize a repository").click()
        git = page.get_by_role("tabpanel", name="Git")
        await expect(git.get_by_role("button", name="Stage notes.md")).to_be_visible()
        await expect(page.get_by_role("navigation", name="Files")).to_contain_text("(untracked)")
        await git.get_by_role("button", name="notes.md", exact=True).click()
        await git.get_by_role("button", name="Stage notes.md").click()
        await expect(git.get_by_role("button", name="Unstage notes.md")).to_be_visible()
        await git.get_by_role("button", name="notes.md", exact=True).click()
        await expect(git.get_by_label("Diff of notes.md (staged)")).to_contain_text(
            "+first_line_mine"
        )
        await git.get_by_label("Commit message").fill("First notes")
        await git.get_by_role("button", name="Commit staged changes").click()
        await expect(git.get_by_role("status")).to_contain_text("First notes")
        await expect(git.get_by_text("Nothing.").first).to_be_visible()
        await check_page(page, "project-git")

        # An agent linked here edits the open file and adds one: both appear live.
        await page.get_by_role("tab", name="Agent").click()
        panel = page.get_by_role("tabpanel", name="Agent")
        await panel.get_by_label("Agent to link").select_option(label="Builder")
        await panel.get_by_role("button", name="Link").click()
        await expect(panel.get_by_role("combobox", name="Agent", exact=True)).to_have_value(
            str(agent_id)
        )
        stub.add_reply(
            [
                ToolCall("", "write_file", {"path": "notes.md", "content": "written_by_agent\n"}),
                ToolCall("", "write_file", {"path": "plan/todo.md", "content": "- ship\n"}),
            ],
            "Both written.",
        )
        await panel.get_by_label("Message to the agent").fill("Rewrite the notes, add a plan")
        await panel.get_by_role("button", name="Send").click()
        await expect(panel.get_by_role("article", name="agent")).to_contain_text("Both written.")
        await expect(editor_text(page)).to_contain_text("written_by_agent")
        await expect(page.get_by_role("status").filter(has_text="changed on disk")).to_be_visible()
        await expect(page.get_by_role("button", name="plan (folder)")).to_be_visible()
        sent = json.dumps(stub.requests[0].json)
        assert "Rewrite the notes, add a plan" in sent and "`notes.md`" in sent
        await check_page(page, "project-agent")

        # The terminal: a shell in the sandbox, in the project's folder.
        await page.get_by_role("tab", name="Terminal").click()
        terminal = page.get_by_role("tabpanel", name="Terminal")
        await terminal.get_by_role("button", name="Open terminal").click()
        await expect(terminal.get_by_role("status")).to_contain_text("Connected", timeout=30_000)
        await page.keyboard.type("cat plan/todo.md; echo done_$((6*7))\n")
        await expect(terminal.locator(".xterm-rows")).to_contain_text("done_42")
        await expect(terminal.locator(".xterm-rows")).to_contain_text("- ship")
        await check_page(page, "project-terminal")
        await terminal.get_by_role("button", name="Close terminal").click()

        # Rename and delete in the tree; the editor follows the file it has open.
        tree = page.get_by_role("navigation", name="Files")
        await tree.get_by_role("button", name="plan (folder)").click()
        await tree.get_by_role("button", name="todo.md").click()
        await expect(page.get_by_role("heading", name="plan/todo.md")).to_be_visible()
        await tree.get_by_role("button", name="Rename").click()
        await page.get_by_label(re.compile("^New path")).fill("plan/tasks.md")
        await page.get_by_role("form", name="Rename").get_by_role("button", name="Rename").click()
        await expect(tree.get_by_role("button", name="tasks.md")).to_be_visible()
        await expect(page.get_by_role("heading", name="plan/tasks.md")).to_be_visible()
        page.once("dialog", lambda dialog: dialog.accept())
        await tree.get_by_role("button", name="Delete").click()
        await expect(tree.get_by_role("button", name="tasks.md")).to_be_hidden()
        await expect(page.get_by_text("was deleted or moved on disk")).to_be_visible()
        gone = await api.get(files, params={"path": "plan/tasks.md"})
        assert gone.status_code == 404
        await check_page(page, "project-tree")
    await api.aclose()


async def test_a_pdf_is_uploaded_indexed_read_edited_searched_and_deleted(
    server: LiveServer, wire: EmbeddingWire
) -> None:
    filler = "Chapter {n} tells of tides, harbours and the weather along the coast. "
    pages = [(filler.format(n=n + 1) * 12).strip() for n in range(4)]
    pages[2] += "\n\n" + LIGHTHOUSE
    pdf = pdf_of(pages)

    async with chromium() as browser:
        page = await new_page(browser)
        await page.goto(server.base + "/knowledge")
        await expect(page.get_by_role("heading", name="Knowledge", exact=True)).to_be_visible()
        await expect(page.get_by_text("No document yet")).to_be_visible()
        await check_page(page, "knowledge")

        upload = page.get_by_role("form", name="Upload files")
        await upload.get_by_label(re.compile("^Files")).set_input_files(
            [{"name": "almanac.pdf", "mimeType": "application/pdf", "buffer": pdf}]
        )
        await upload.get_by_label("Category").fill("Coast")
        row = page.get_by_role("row").filter(has_text="almanac.pdf")
        wire.hold()  # the embeddings wait: the indexing's progress shows from its events
        try:
            await upload.get_by_role("button", name="Upload").click()
            stored = page.get_by_role("status").filter(has_text="Stored almanac.pdf")
            await expect(stored).to_be_visible()
            progress = re.compile(r"indexing\s*0 of \d+ chunks")
            await expect(row).to_contain_text(progress, timeout=60_000)
            await expect(row.get_by_role("progressbar")).to_be_visible()
        finally:
            wire.release()
        await expect(row).to_contain_text("ready", timeout=60_000)
        await expect(row).to_contain_text("coast")
        assert wire.requests, "the worker embedded the chunks"
        await check_page(page, "knowledge-indexed")

        # Found by its text, semantically (the wire's embeddings) as well as by full text.
        await page.get_by_label("Query").fill("lighthouse keeper Zanzibar")
        await page.get_by_role("button", name="Search").click()
        hits = page.get_by_role("list").filter(has_text="almanac.pdf")
        await expect(hits).to_contain_text("Zanzibar")
        await expect(page.get_by_text("semantic and full-text")).to_be_visible()

        # The document: its text, an edit (indexed again), then deleted.
        await row.get_by_role("link", name="almanac.pdf").click()
        await expect(page.get_by_role("heading", name="almanac.pdf")).to_be_visible()
        await expect(page.get_by_label("The document's text")).to_contain_text("Zanzibar")
        await expect(page.get_by_text("embedded with openai/bow-e2e")).to_be_visible()
        await check_page(page, "knowledge-document")
        await page.get_by_role("button", name="Edit").click()
        await page.get_by_label("Title").fill("Coastal almanac")
        await page.get_by_role("button", name="Save").click()
        await expect(page.get_by_role("heading", name="Coastal almanac")).to_be_visible()

        page.once("dialog", lambda dialog: dialog.accept())
        await page.get_by_role("button", name="Delete").click()
        await expect(page.get_by_role("heading", name="Knowledge", exact=True)).to_be_visible()
        await expect(page.get_by_text("No document yet")).to_be_visible()
        await check_page(page, "knowledge-after-delete")
