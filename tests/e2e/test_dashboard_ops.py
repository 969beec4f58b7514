"""The dashboard's schedules, background tasks and goals in a real browser (Debian's chromium)
against a single-user `gathering serve` with its embedded worker, the model faked at its HTTP
wire: a schedule made in the page fires and its runs show up without a reload; a task started
in the page logs its steps live and ends; another is paused, resumed and cancelled; a goal
gets subgoals, a dependency and a decomposition, then runs to done. Each page is checked with
axe-core and photographed (test-artifacts/dashboard/)."""

from __future__ import annotations

import asyncio

import httpx
import pytest
from browser import check_page, chromium, new_page
from live_server import LiveServer
from playwright.async_api import Dialog, Page, expect

from gathering.llm.types import ToolCall
from gathering.testing import LLMStubServer

pytestmark = [pytest.mark.slow, pytest.mark.e2e]
LIVE = 30_000  # ms: how long a live change may take to show


def _agent(server: LiveServer, name: str, *tools: str) -> int:
    """A new agent (through the API: quicker than the page), `tools` enabled for it."""
    body = {"name": name, "provider": "ollama", "model": "llama3.2"}
    made = httpx.post(f"{server.base}/agents", json=body, timeout=10)
    assert made.status_code == 201, made.text
    agent_id: int = made.json()["id"]
    for tool in tools:
        url = f"{server.base}/agents/{agent_id}/tools/{tool}"
        enabled = httpx.put(url, json={"enabled": True}, timeout=10)
        assert enabled.status_code == 200, enabled.text
    return agent_id


def _accept_dialogs(page: Page) -> None:
    async def accept(dialog: Dialog) -> None:
        await dialog.accept()

    page.on("dialog", accept)


async def test_a_schedule_made_in_the_page_fires_and_its_runs_show_live(
    server: LiveServer,
) -> None:
    async with chromium() as browser:
        page = await new_page(browser)
        await page.goto(server.base + "/")
        await page.get_by_role("link", name="Schedules").click()
        await expect(page.get_by_role("heading", name="Schedules")).to_be_visible()
        await expect(page.get_by_text("No schedule yet.")).to_be_visible()

        await page.get_by_role("button", name="New schedule").click()
        form = page.get_by_role("form", name="New schedule")
        await form.get_by_label("Name").fill("ping")
        # The cron helper previews what is typed, as the server plans it.
        await form.get_by_role("button", name="Weekdays at 09:00").click()
        await form.get_by_label("Time zone").fill("Europe/Paris")
        fires = form.get_by_role("list", name="Next fire times").get_by_role("listitem")
        await expect(fires).to_have_count(5)
        await form.get_by_label("Cron expression").fill("61 * * * *")
        await expect(form.get_by_text("invalid cron expression '61 * * * *'")).to_be_visible()
        # The server's preview refused it (422), which the browser logs.
        await check_page(page, "schedule-new", expected_errors=1)

        await form.get_by_role("combobox", name="Kind").select_option("interval")
        await form.get_by_role("spinbutton", name="Every").fill("3")
        await form.get_by_role("combobox", name="Unit").select_option("seconds")
        await expect(fires).to_have_count(5)
        await form.get_by_label("Title").fill("Ping from the dashboard")
        await form.get_by_role("button", name="Create").click()

        await expect(page.get_by_role("heading", name="ping")).to_be_visible()
        upcoming = page.get_by_role("list", name="Upcoming runs").get_by_role("listitem")
        await expect(upcoming).to_have_count(5)
        runs = page.get_by_role("table", name="Run history")
        await expect(runs.get_by_text("succeeded").first).to_be_visible(timeout=LIVE)
        await expect(runs.get_by_role("cell", name="slot").first).to_be_visible()

        await page.get_by_role("button", name="Pause").click()
        await expect(page.get_by_text("paused", exact=True)).to_be_visible()
        await page.get_by_role("button", name="Resume").click()
        await expect(page.get_by_text("active", exact=True)).to_be_visible()
        await page.get_by_role("button", name="Run now").click()
        manual = runs.get_by_role("row").filter(has_text="manual")
        await expect(manual.get_by_text("succeeded")).to_be_visible(timeout=LIVE)
        await check_page(page, "schedule")

        await page.get_by_role("button", name="Edit").click()
        edit = page.get_by_role("form", name="Edit ping")
        await expect(edit.get_by_role("spinbutton", name="Every")).to_have_value("3")
        await edit.get_by_role("spinbutton", name="Every").fill("1")
        await edit.get_by_role("combobox", name="Unit").select_option("hours")
        await edit.get_by_role("button", name="Save").click()
        await expect(page.get_by_text("every 1 h")).to_be_visible()

        await page.get_by_role("link", name="All schedules").click()
        row = page.get_by_role("table", name="Schedules").get_by_role("row").filter(has_text="ping")
        await expect(row.get_by_text("every 1 h")).to_be_visible()
        await expect(row.get_by_text("active")).to_be_visible()
        await check_page(page, "schedules")


async def test_tasks_started_in_the_page_log_their_steps_live_and_obey_the_controls(
    server: LiveServer, stub: LLMStubServer
) -> None:
    await asyncio.to_thread(_agent, server, "Tasker", "calculator")
    first = stub.hold("Work out 6 times 7")
    stub.add_reply(ToolCall("", "calculator", {"expression": "6*7"}), "The answer is 42.")
    async with chromium() as browser:
        page = await new_page(browser)
        _accept_dialogs(page)
        await page.goto(server.base + "/")
        await page.get_by_role("link", name="Tasks").click()
        await expect(page.get_by_role("heading", name="Background tasks")).to_be_visible()

        async def start(goal: str) -> None:
            await page.get_by_role("button", name="Start a task").click()
            form = page.get_by_role("form", name="Start a task")
            await form.get_by_label("Agent").select_option("Tasker")
            await form.get_by_label("Goal").fill(goal)
            await form.get_by_label("Max steps").fill("5")
            await form.get_by_role("button", name="Start").click()

        await start("Work out 6 times 7")
        await expect(page.get_by_text("Status: running")).to_be_visible(timeout=LIVE)
        await expect(page.get_by_text("No step yet.")).to_be_visible()
        await asyncio.to_thread(first.arrived.wait, 15)
        first.release()
        steps = page.get_by_role("list", name="Step log")
        await expect(steps.get_by_role("listitem", name="Step 1")).to_contain_text("calculator")
        await expect(steps.get_by_role("listitem", name="Step 2")).to_contain_text(
            "The answer is 42."
        )
        await expect(page.get_by_text("Status: succeeded")).to_be_visible(timeout=LIVE)
        for move in ("Pause", "Resume", "Cancel task"):
            await expect(page.get_by_role("button", name=move)).to_be_disabled()
        await steps.get_by_text("calculator").click()
        await expect(steps.get_by_text("42", exact=True)).to_be_visible()
        await check_page(page, "task")

        held = stub.hold("Wait in the model")
        await page.get_by_role("link", name="All tasks").click()
        await start("Wait in the model")
        await expect(page.get_by_text("Status: running")).to_be_visible(timeout=LIVE)
        await asyncio.to_thread(held.arrived.wait, 15)
        await expect(page.get_by_role("button", name="Resume")).to_be_disabled()
        await page.get_by_role("button", name="Pause").click()
        await expect(page.get_by_text("Status: paused")).to_be_visible()
        await expect(page.get_by_role("button", name="Pause")).to_be_disabled()
        await page.get_by_role("button", name="Resume").click()
        await expect(page.get_by_text("Status: running")).to_be_visible(timeout=LIVE)
        await page.get_by_role("button", name="Cancel task").click()
        await expect(page.get_by_text("Status: cancelled")).to_be_visible()
        await expect(page.get_by_text("cancelled by request")).to_be_visible()
        await check_page(page, "task-cancelled")

        await page.get_by_role("link", name="All tasks").click()
        table = page.get_by_role("table", name="Tasks")
        await expect(table.get_by_role("row")).to_have_count(3)
        await page.get_by_label("Show").select_option("cancelled")
        await expect(table.get_by_role("row")).to_have_count(2)
        await expect(table).to_contain_text("Wait in the model")
        await check_page(page, "tasks")


async def test_a_goal_tree_is_built_decomposed_and_run_in_the_page(
    server: LiveServer, stub: LLMStubServer
) -> None:
    await asyncio.to_thread(_agent, server, "Planner")
    async with chromium() as browser:
        page = await new_page(browser)
        _accept_dialogs(page)
        await page.goto(server.base + "/")
        await page.get_by_role("link", name="Goals").click()
        await expect(page.get_by_role("heading", name="Goals")).to_be_visible()

        await page.get_by_role("button", name="New goal").click()
        form = page.get_by_role("form", name="New goal")
        await form.get_by_label("Title").fill("Launch the docs site")
        await form.get_by_label("Agent").select_option("Planner")
        await form.get_by_role("button", name="Create").click()
        await expect(page.get_by_role("heading", name="Launch the docs site")).to_be_visible()

        for title in ("Draft the pages", "Publish"):
            await page.get_by_role("button", name="Add subgoal: Launch the docs site").click()
            sub = page.get_by_role("form", name="New subgoal of Launch the docs site")
            await sub.get_by_label("Title").fill(title)
            await sub.get_by_role("button", name="Add subgoal", exact=True).click()
            await expect(page.get_by_role("listitem", name=title)).to_be_visible()

        publish = page.get_by_role("listitem", name="Publish")
        await page.get_by_role("button", name="Add dependency: Publish").click()
        depend = page.get_by_role("form", name="New dependency of Publish")
        await depend.get_by_label("Wait for").select_option(label="Draft the pages")
        await depend.get_by_role("button", name="Add dependency", exact=True).click()
        await expect(publish).to_contain_text("waits for")
        await expect(publish).to_contain_text("Draft the pages")
        # A goal cannot wait for the goal it is part of: the server says why.
        await page.get_by_role("button", name="Add dependency: Publish").click()
        await depend.get_by_label("Wait for").select_option(label="Launch the docs site")
        await depend.get_by_role("button", name="Add dependency", exact=True).click()
        await expect(depend.get_by_role("alert")).to_be_visible()
        await check_page(page, "goal-refused", expected_errors=1)  # the browser logs the 409
        await depend.get_by_role("button", name="Cancel").click()
        await page.get_by_role("button", name="Stop Publish waiting for Draft the pages").click()
        await expect(publish).not_to_contain_text("waits for")
        await page.get_by_role("button", name="Add dependency: Publish").click()
        await depend.get_by_label("Wait for").select_option(label="Draft the pages")
        await depend.get_by_role("button", name="Add dependency", exact=True).click()
        await expect(publish).to_contain_text("waits for")

        stub.add_reply(
            '[{"title": "Outline", "description": "", "success_criteria": "", "depends_on": []},'
            ' {"title": "Write", "description": "", "success_criteria": "", "depends_on": [1]}]'
        )
        await page.get_by_role("button", name="Decompose: Draft the pages").click()
        split = page.get_by_role("form", name="Decompose Draft the pages")
        await split.get_by_role("combobox", name="Agent that splits it").select_option("Planner")
        await split.get_by_role("button", name="Decompose").click()
        write = page.get_by_role("listitem", name="Write")
        await expect(write).to_contain_text("waits for")
        await expect(write).to_contain_text("Outline")
        await expect(page.get_by_role("listitem", name="Outline")).to_be_visible()
        await check_page(page, "goal-tree")

        await page.get_by_role("button", name="Start: Launch the docs site").click()
        launch = page.get_by_role("form", name="Start Launch the docs site")
        await launch.get_by_role("combobox").select_option("Planner")  # for those naming none
        await launch.get_by_role("button", name="Start").click()
        bar = page.get_by_role("progressbar", name="Progress of Launch the docs site")
        await expect(bar).to_have_attribute("value", "1", timeout=60_000)
        done = page.get_by_text("Status of Launch the docs site: done")
        await expect(done).to_be_visible(timeout=LIVE)
        for title in ("Outline", "Write", "Publish"):
            await expect(page.get_by_text(f"Status of {title}: done")).to_be_visible()
        await expect(page.get_by_role("list", name="Activity")).to_contain_text("started")
        await check_page(page, "goal-done")

        await page.get_by_role("link", name="All goals").click()
        goals = page.get_by_role("list", name="Goals")
        await expect(goals.get_by_role("listitem")).to_have_count(1)
        await expect(goals).to_contain_text("100%")
        await check_page(page, "goals")
