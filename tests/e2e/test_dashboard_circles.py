"""The circles pages in a real browser (Debian's chromium) against a real single-user
`gathering serve` with its embedded worker, the model faked at its HTTP wire (the LLM stub,
Ollama's format), as in test_workflows.py: a circle made in the page is activated and
archived; in the circle `team` (made through the API) a task created in the page moves live
across the board to review (the reviewer's answer held meanwhile), back for changes and to
completed; a conversation's turns appear as they are said; with no reviewer left, a person
asks for changes and approves from the board. Every page is checked with axe-core and
photographed (test-artifacts/dashboard/)."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import httpx
import pytest
from browser import check_page, chromium, new_page
from live_server import LiveServer
from playwright.async_api import Dialog, Page, expect

from gathering.circles.work import review_prompt
from gathering.testing import LLMStubServer

pytestmark = [pytest.mark.slow, pytest.mark.e2e]
CHANGES = '{"verdict": "changes_requested", "feedback": "handle the empty file"}'
APPROVED = '{"verdict": "approved", "feedback": "good"}'
SLOW = 30_000  # ms: an agent's turn goes through a job


async def _post(
    api: httpx.AsyncClient, path: str, body: dict[str, Any] | None = None
) -> dict[str, Any]:
    answer = await api.post(path, json=body)
    assert answer.status_code in (200, 201, 202), answer.text
    found: dict[str, Any] = answer.json()
    return found


async def _team(api: httpx.AsyncClient) -> int:
    """Circle `team` (not active yet) with the agents coder (a member) and critic (kept for the
    page to add); the circle's id."""
    for name in ("coder", "critic"):
        await _post(api, "/agents", {"name": name, "provider": "ollama", "model": "llama3.2"})
    circle = await _post(api, "/circles", {"name": "team", "description": "parsers"})
    await _post(
        api, f"/circles/{circle['id']}/members", {"agent": "coder", "competencies": {"python": 4}}
    )
    return int(circle["id"])


def _first_review(task: dict[str, Any], work: str) -> str:
    """The prompt of critic's review of the first attempt of `task` (handed in as `work`)."""
    attempt = SimpleNamespace(**{**task, "iteration": 1, "result": {"text": work}})
    return review_prompt(SimpleNamespace(name="team"), SimpleNamespace(name="critic"), attempt)  # type: ignore[arg-type]


def _column(page: Page, label: str) -> Any:
    return page.get_by_role("region", name=label)


async def _accept(dialog: Dialog) -> None:
    await dialog.accept()


async def _a_circle_is_made_activated_and_archived(page: Page, base: str) -> None:
    await page.goto(base + "/circles")
    await expect(page.get_by_role("heading", name="Circles")).to_be_visible()
    await expect(page.get_by_role("link", name="team")).to_be_visible()
    await check_page(page, "circles")
    await page.get_by_role("button", name="New circle").click()
    await page.get_by_label("Name").fill("scratch")
    await page.get_by_role("button", name="Create", exact=True).click()
    await expect(page.get_by_role("heading", name="scratch")).to_be_visible()
    await page.get_by_role("button", name="Activate scratch").click()
    await expect(page.get_by_text("active", exact=True)).to_be_visible()
    await (
        page.get_by_role("navigation", name="Sections").get_by_role("link", name="Circles").click()
    )
    page.once("dialog", _accept)
    await page.get_by_role("button", name="Archive scratch").click()
    row = page.get_by_role("row").filter(has_text="scratch")
    await expect(row.get_by_text("archived")).to_be_visible()


async def _add_the_reviewer(page: Page) -> None:
    await page.get_by_role("link", name="team").click()
    await expect(page.get_by_role("heading", name="team")).to_be_visible()
    await expect(page.get_by_role("status").filter(has_text="Live")).to_be_visible()
    form = page.get_by_role("form", name="Add a member")
    await form.get_by_label("Agent").select_option("critic")
    await form.get_by_label("Role").select_option("reviewer")
    await form.get_by_label("Competencies").fill("code=4")
    await form.get_by_role("button", name="Add").click()
    critic = page.get_by_role("region", name="Members").get_by_role("row").filter(has_text="critic")
    await expect(critic).to_contain_text("reviewer")
    await expect(critic).to_contain_text("code 4")
    await check_page(page, "circle-members")


async def _create_task(page: Page, title: str, needs: str = "") -> None:
    await page.get_by_role("button", name="New task").click()
    form = page.get_by_role("form", name="New task")
    await form.get_by_label("Title").fill(title)
    if needs:
        await form.get_by_label("Needs").fill(needs)
    await form.get_by_role("button", name="Create task").click()
    await expect(form).to_be_hidden()


async def test_circles_board_review_and_conversation_live(
    server: LiveServer, stub: LLMStubServer
) -> None:
    async with httpx.AsyncClient(base_url=server.base, timeout=30) as api:
        circle_id = await _team(api)
        async with chromium() as browser:
            page = await new_page(browser)
            await _a_circle_is_made_activated_and_archived(page, server.base)
            await _add_the_reviewer(page)

            # A task made in the page waits (the circle is not active), then moves live.
            await page.get_by_role("link", name="Task board").click()
            await _create_task(page, "parse the file", "python=3")
            [task] = (await api.get(f"/circles/{circle_id}/tasks")).json()
            card = page.get_by_role("article", name=f"Task {task['id']}: parse the file")
            await expect(_column(page, "Pending").get_by_role("article")).to_have_count(1)
            await expect(card.get_by_role("button", name="Cancel task")).to_be_visible()
            held = stub.hold(_first_review(task, "draft one"))
            stub.add_reply("draft one", CHANGES, "draft two", APPROVED)
            await page.get_by_role("button", name="Activate team").click()
            await expect(_column(page, "In review").get_by_role("article")).to_have_count(
                1, timeout=SLOW
            )
            await expect(card).to_contain_text("coder")
            await expect(card).to_contain_text("Review by")  # critic, who is held
            await expect(card.get_by_role("button", name="Request changes")).to_be_visible()
            await check_page(page, "circle-board-in-review")
            held.release()
            await expect(_column(page, "Completed").get_by_role("article")).to_have_count(
                1, timeout=SLOW
            )
            await expect(card).to_contain_text("2 of 5")
            await expect(card.get_by_role("button")).to_have_count(0)  # it ended: no move

            await card.get_by_role("link", name="parse the file").click()
            history = page.get_by_role("region", name="History")
            await expect(history.get_by_role("row")).to_have_count(9)  # a header, 8 moves
            await expect(page.get_by_role("region", name="Reviews")).to_contain_text(
                "handle the empty file"
            )
            await check_page(page, "circle-task")

            # A conversation: each turn appears, then the summary.
            stub.add_reply("coder says: test the empty file", "critic agrees", "the summary")
            await page.get_by_role("link", name="Conversations").click()
            form = page.get_by_role("form", name="Start a conversation")
            await form.get_by_label("Topic").fill("How should we test the parser?")
            await form.get_by_label("Turns at most").fill("2")
            await form.get_by_role("button", name="Start").click()
            transcript = page.get_by_role("region", name="Transcript")
            await expect(transcript.get_by_role("article", name="coder, turn 1")).to_contain_text(
                "test the empty file", timeout=SLOW
            )
            await expect(transcript.get_by_role("article", name="critic, turn 2")).to_contain_text(
                "critic agrees", timeout=SLOW
            )
            await expect(page.get_by_role("status", name="Status: finished")).to_be_visible(
                timeout=SLOW
            )
            await expect(page.get_by_role("region", name="Summary")).to_contain_text("the summary")
            await check_page(page, "circle-conversation")

            # With no reviewer left, a person reviews from the board.
            await page.get_by_role("link", name="Members").click()
            await page.get_by_role("button", name="Remove critic").click()
            members = page.get_by_role("region", name="Members")
            await expect(members.get_by_role("row").filter(has_text="critic")).to_contain_text(
                "left"
            )
            await page.get_by_role("link", name="Task board").click()
            stub.add_reply("the docs", "the docs, with an example")
            await _create_task(page, "write the docs")
            docs = page.get_by_role("article", name="write the docs")
            await expect(docs).to_contain_text("Waits for a person", timeout=SLOW)
            await expect(_column(page, "In review")).to_contain_text("write the docs")
            await docs.get_by_role("button", name="Request changes").click()
            await docs.get_by_label("Changes to make").fill("add an example")
            await check_page(page, "circle-board-person-review")
            await docs.get_by_role("button", name="Send the changes").click()
            await expect(docs).to_contain_text("2 of 5", timeout=SLOW)
            await expect(docs).to_contain_text("Waits for a person", timeout=SLOW)
            await docs.get_by_role("button", name="Approve").click()
            await docs.get_by_role("button", name="Send approval").click()
            await expect(_column(page, "Completed").get_by_role("article")).to_have_count(
                2, timeout=SLOW
            )
            await check_page(page, "circle-board")

            await page.get_by_role("link", name="Members").click()
            metrics = page.get_by_role("region", name="Metrics")
            coder = metrics.get_by_role("row").filter(has_text="coder")
            await expect(coder.get_by_role("cell").first).to_have_text("2")  # completed
        tasks = (await api.get(f"/circles/{circle_id}/tasks")).json()
    assert [t["status"] for t in tasks] == ["completed", "completed"]
