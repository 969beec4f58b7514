"""The dashboard's pipelines pages in a real browser (Debian's chromium) against a real
`gathering serve` with its embedded worker, the model faked at its HTTP wire (the LLM stub,
Ollama's format): build a three-node pipeline in the visual editor (a problem the API finds
shows on its node), run it from the form made from its input schema and watch the nodes turn
succeeded, cancel a run whose agent turn is held, retry a run whose agent failed, filter the
history; create a pipeline from YAML and delete it. Each page is checked with axe-core and
photographed (test-artifacts/dashboard/)."""

from __future__ import annotations

import re
from collections.abc import Iterator

import httpx
import pytest
from browser import check_page, chromium, new_page
from job_processes import ScratchDatabase, worker_env
from live_server import LiveServer
from playwright.async_api import Locator, Page, expect

from gathering.testing import LLMStubServer

pytestmark = [pytest.mark.slow, pytest.mark.e2e]
WAIT = 30_000  # ms: a run goes through the worker's queue

SCRATCH = """
name: scratch
description: made from YAML
nodes:
  - id: start
    type: trigger
  - id: pause
    type: delay
    config: {seconds: 1}
edges:
  - {from: start, to: pause}
"""


@pytest.fixture
def server(database: ScratchDatabase, stub: LLMStubServer) -> Iterator[LiveServer]:
    live = LiveServer(**worker_env(database, **stub.environment()))
    try:
        live.wait_ready()
        made = httpx.post(
            f"{live.base}/agents",
            json={"name": "helper", "provider": "ollama", "model": "llama3.2"},
        )
        assert made.status_code == 201, made.text
        yield live
    finally:
        live.stop()


def node(page: Page, node_id: str) -> Locator:
    """A node's card on the graph."""
    return page.locator(f'.react-flow__node[data-id="{node_id}"] .step')


async def start_run(page: Page, who: str) -> None:
    await page.get_by_role("link", name="Runs", exact=True).click()
    await page.get_by_label("Who (required)").fill(who)
    await page.get_by_role("button", name="Start run").click()
    await expect(page.get_by_role("heading", name=re.compile(r"^Run \d+$"))).to_be_visible()


async def build_pipeline(page: Page) -> None:
    """Create `greet` (start -> agent_1 -> condition_1) with the editor's controls."""
    await page.get_by_role("button", name="New pipeline").click()
    await page.get_by_label("Name").fill("greet")
    await page.get_by_role("button", name="Create").click()
    await expect(page.get_by_role("heading", name="greet", exact=True)).to_be_visible()
    await expect(node(page, "start")).to_be_visible()

    await page.get_by_label("Edit node").select_option("start")
    await page.get_by_label("Node type").select_option("agent")
    await page.get_by_role("button", name="Add after start").click()
    await expect(node(page, "agent_1")).to_be_visible()
    await expect(page.locator(".react-flow__edge")).to_have_count(1)

    # The new agent names no agent yet: the API's check puts the problem on its node.
    await page.get_by_role("button", name="Check").click()
    await expect(node(page, "agent_1")).to_have_attribute("data-problems", re.compile(r"\d"))
    await expect(node(page, "agent_1")).to_contain_text("problem")
    await check_page(page, "pipeline-editor-problem")

    await page.get_by_label("Agent (required)").fill("helper")
    await page.get_by_label("Prompt (required)").fill("Say hello to {{ input.who }}")
    await page.get_by_label("Node type").select_option("condition")
    await page.get_by_role("button", name="Add after agent_1").click()
    await expect(node(page, "condition_1")).to_be_visible()
    await page.get_by_label("Expression (required)").fill("len(outputs.agent_1) > 0")
    await page.get_by_label("Input schema").fill(
        '{"type": "object", "properties": {"who": {"type": "string"}}, "required": ["who"]}'
    )
    await page.get_by_role("button", name="Check").click()
    await expect(page.get_by_text("No problem found.")).to_be_visible()
    await expect(node(page, "agent_1")).not_to_have_attribute("data-problems", re.compile("."))
    await page.get_by_role("button", name="Save as new version").click()
    await expect(page.get_by_text("Saved as version 2.")).to_be_visible()
    await expect(page.locator(".react-flow__edge")).to_have_count(2)
    await check_page(page, "pipeline-editor")


async def test_build_run_cancel_and_retry_a_pipeline_in_the_dashboard(
    server: LiveServer, stub: LLMStubServer
) -> None:
    async with chromium() as browser:
        page = await new_page(browser)
        await page.goto(server.base + "/pipelines")
        await expect(page.get_by_role("heading", name="Pipelines")).to_be_visible()
        await expect(page.get_by_text("No pipeline yet")).to_be_visible()
        await check_page(page, "pipelines-empty")

        await build_pipeline(page)

        # A run from the form made from the input schema: every node ends succeeded.
        await start_run(page, "Ada")
        for node_id in ("start", "agent_1", "condition_1"):
            await expect(node(page, node_id)).to_have_attribute(
                "data-status", "succeeded", timeout=WAIT
            )
        await expect(page.locator(".badge.run-status").first).to_have_text("succeeded")
        await page.get_by_role("button", name="agent_1", exact=True).click()
        panel = page.get_by_role("region", name="Node agent_1")
        await expect(panel).to_contain_text("Output of start")
        await expect(panel.get_by_role("heading", name="Output")).to_be_visible()
        await expect(page.get_by_role("list", name="Timeline of the nodes")).to_contain_text(
            "condition_1"
        )
        await check_page(page, "pipeline-run-succeeded")
        await page.get_by_role("button", name="Switch to the dark theme").click()
        await expect(page.locator(".react-flow.dark")).to_be_visible()
        await check_page(page, "pipeline-run-dark")  # and the pages after it, in the dark theme

        # A run whose agent turn is held by the model: cancelled while it runs.
        hold = stub.hold("Say hello to Bob")
        await start_run(page, "Bob")
        await expect(node(page, "agent_1")).to_have_attribute(
            "data-status", "running", timeout=WAIT
        )
        await page.get_by_role("button", name="Cancel run").click()
        await expect(page.locator(".badge.run-status").first).to_have_text(
            "cancelled", timeout=WAIT
        )
        await expect(node(page, "agent_1")).to_have_attribute(
            "data-status", re.compile("cancelled|failed"), timeout=WAIT
        )
        await expect(node(page, "condition_1")).to_have_attribute("data-status", "cancelled")
        hold.release()
        await check_page(page, "pipeline-run-cancelled")

        # A run whose agent fails (the model answers 400): retried from the failure.
        stub.add_json({"error": "the model refuses"}, status=400)
        await start_run(page, "Cy")
        await expect(node(page, "agent_1")).to_have_attribute("data-status", "failed", timeout=WAIT)
        await expect(page.locator(".badge.run-status").first).to_have_text("failed")
        await page.get_by_role("button", name="agent_1", exact=True).click()
        await expect(page.get_by_role("region", name="Node agent_1")).to_contain_text("Error")
        await check_page(page, "pipeline-run-failed")
        await page.get_by_role("button", name="Retry from the failure").click()
        await expect(page.get_by_role("link", name=re.compile(r"retry of run \d+"))).to_be_visible()
        await expect(node(page, "condition_1")).to_have_attribute(
            "data-status", "succeeded", timeout=WAIT
        )
        await expect(page.locator(".badge.run-status").first).to_have_text("succeeded")
        await check_page(page, "pipeline-run-retried")

        # The history, filtered by status.
        await page.get_by_role("link", name="Runs", exact=True).click()
        history = page.get_by_role("region", name="Runs")
        await expect(history.get_by_role("row")).to_have_count(5)  # a header and four runs
        await history.get_by_label("Status").select_option("failed")
        await expect(history.get_by_role("row")).to_have_count(2)
        await expect(history).to_contain_text("failed")
        await check_page(page, "pipeline-runs")


async def test_create_a_pipeline_from_yaml_and_delete_it(server: LiveServer) -> None:
    async with chromium() as browser:
        page = await new_page(browser)
        await page.goto(server.base + "/pipelines")
        await page.get_by_role("button", name="New pipeline").click()
        await page.get_by_label("A definition (JSON or YAML)").check()
        await page.get_by_label("Definition", exact=True).fill(SCRATCH)
        await check_page(page, "pipeline-new-from-yaml")
        await page.get_by_role("button", name="Create").click()
        await expect(page.get_by_role("heading", name="scratch", exact=True)).to_be_visible()
        await expect(node(page, "pause")).to_contain_text("delay")

        await page.get_by_role("link", name="Pipelines", exact=True).first.click()
        row = page.get_by_role("row", name=re.compile("scratch"))
        await expect(row).to_contain_text("made from YAML")
        page.once("dialog", lambda dialog: dialog.accept())
        await page.get_by_role("button", name="Delete scratch").click()
        await expect(page.get_by_text("No pipeline yet")).to_be_visible()
        await check_page(page, "pipelines-after-delete")
