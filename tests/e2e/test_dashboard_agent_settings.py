"""An agent's settings page in a real browser (Debian's chromium) against a real `gathering
serve` (single-user, the model faked at its HTTP wire): rename the agent, enable a tool under
`ask` (stored, as the API reads it back), follow a change made elsewhere live, remember a memory
and forget it. Each state is checked with axe-core and photographed (test-artifacts/dashboard/)."""

from __future__ import annotations

import asyncio

import httpx
import pytest
from browser import check_page, chromium, new_page
from live_server import LiveServer
from playwright.async_api import Dialog, expect

pytestmark = [pytest.mark.slow, pytest.mark.e2e]


async def _tools(base: str, agent_id: int) -> dict[str, dict[str, object]]:
    answer = await asyncio.to_thread(httpx.get, f"{base}/agents/{agent_id}/tools", timeout=10)
    assert answer.status_code == 200, answer.text
    return {tool["name"]: tool for tool in answer.json()}


async def test_rename_an_agent_set_a_tool_policy_and_keep_a_memory(server: LiveServer) -> None:
    base = server.base
    body = {"name": "Scribe", "provider": "ollama", "model": "llama3.2"}
    made = await asyncio.to_thread(httpx.post, f"{base}/agents", json=body, timeout=10)
    assert made.status_code == 201, made.text
    agent_id = made.json()["id"]

    async with chromium() as browser:
        page = await new_page(browser)
        await page.goto(f"{base}/agents")  # no login: single-user mode
        await page.get_by_role("link", name="Settings of Scribe").click()
        await expect(page.get_by_role("heading", name="Scribe: settings")).to_be_visible()
        await expect(page.get_by_role("status").filter(has_text="Live")).to_be_visible()
        await expect(page.get_by_label("Enable calculator")).not_to_be_checked()
        await check_page(page, "agent-settings")

        # Rename it: the page and the API show the new name.
        await page.get_by_label("Name", exact=True).fill("Scribe II")
        await page.get_by_label("Model calls per turn at most").fill("12")
        await page.get_by_role("button", name="Save", exact=True).click()
        await expect(page.get_by_role("heading", name="Scribe II: settings")).to_be_visible()
        await expect(page.get_by_role("status").filter(has_text="Saved.")).to_be_visible()
        agent = (await asyncio.to_thread(httpx.get, f"{base}/agents/{agent_id}", timeout=10)).json()
        assert (agent["name"], agent["config"]["max_iterations"]) == ("Scribe II", 12)
        await check_page(page, "agent-settings-renamed")

        # A name the API refuses shows its problem.
        await page.get_by_label("Name", exact=True).fill("  ")
        await page.get_by_role("button", name="Save", exact=True).click()
        await expect(page.get_by_role("alert")).to_be_visible()
        await check_page(page, "agent-settings-refused", expected_errors=1)  # the 422 logged
        await page.get_by_label("Name", exact=True).fill("Scribe II")

        # Enable the calculator under `ask`: stored.
        await page.get_by_label("Enable calculator").click()  # checked once the API stored it
        await expect(page.get_by_label("Enable calculator")).to_be_checked()
        await expect(page.get_by_label("Enable calculator")).to_be_enabled()
        await page.get_by_label("Policy of calculator").select_option("ask")
        row = page.get_by_role("row").filter(has=page.get_by_label("Policy of calculator"))
        await expect(row.get_by_role("cell").last).to_have_text("ask")
        calculator = (await _tools(base, agent_id))["calculator"]
        assert (calculator["enabled"], calculator["policy_set"], calculator["policy"]) == (
            True,
            "ask",
            "ask",
        )
        await check_page(page, "agent-settings-tools")

        # A change made elsewhere comes in live (agent.tools_changed).
        url = f"{base}/agents/{agent_id}/tools/read_file"
        changed = await asyncio.to_thread(
            httpx.put, url, json={"enabled": True, "policy": "deny"}, timeout=10
        )
        assert changed.status_code == 200, changed.text
        await expect(page.get_by_label("Enable read_file")).to_be_checked()
        await expect(page.get_by_label("Policy of read_file")).to_have_value("deny")

        # Remember something, see it listed, forget it.
        remember = page.get_by_role("form", name="Remember")
        await remember.get_by_label("New memory").fill("The release train leaves on Thursdays.")
        await remember.get_by_label("Kind").select_option("instruction")
        await remember.get_by_label("Tags (separated by commas)").fill("release, ops")
        await remember.get_by_role("button", name="Remember").click()
        memories = page.get_by_role("list", name="Memories")
        memory = memories.get_by_role("listitem").filter(has_text="release train")
        await expect(memory).to_be_visible()
        await expect(memory).to_contain_text("instruction")
        await expect(memory).to_contain_text("tags: release, ops")
        await check_page(page, "agent-settings-memory")

        async def accept(dialog: Dialog) -> None:
            await dialog.accept()

        page.once("dialog", accept)
        await memory.get_by_role("button", name="Forget").click()
        await expect(page.get_by_text("No memory yet.")).to_be_visible()
        listed = await asyncio.to_thread(
            httpx.get, f"{base}/memories/agents/{agent_id}", timeout=10
        )
        assert listed.json() == []

        # Knowledge: every document it sees.
        await page.get_by_label("Every document it sees").check()
        await page.get_by_role("button", name="Save knowledge").click()
        await expect(page.get_by_role("status").filter(has_text="Saved.")).to_be_visible()
        agent = (await asyncio.to_thread(httpx.get, f"{base}/agents/{agent_id}", timeout=10)).json()
        assert agent["config"]["knowledge"] == "all"
        await check_page(page, "agent-settings-knowledge")

        # The chat page links back here.
        await page.get_by_role("link", name="Chat", exact=True).click()
        await expect(page.get_by_role("heading", name="Scribe II")).to_be_visible()
        await page.get_by_role("link", name="Agent settings").click()
        await expect(page.get_by_role("heading", name="Scribe II: settings")).to_be_visible()
