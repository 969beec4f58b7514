"""The dashboard in a real browser (Debian's chromium) against a real `gathering serve` on a
migrated database, the model faked at its HTTP wire: sign in, create an agent, chat with the
reply streaming in, decide an approval. Each page is checked with axe-core and photographed
(test-artifacts/dashboard/)."""

from __future__ import annotations

import asyncio
import re

import httpx
import pytest
from browser import ADMIN, check_page, chromium, new_page
from live_server import LiveServer
from playwright.async_api import Page, expect

from gathering.llm.types import ToolCall
from gathering.testing import LLMStubServer

pytestmark = [pytest.mark.slow, pytest.mark.e2e]


async def _sign_in(page: Page, base: str) -> None:
    await page.goto(base + "/")
    await expect(page.get_by_role("form", name="Sign in")).to_be_visible()
    await check_page(page, "login", expected_errors=1)  # the browser logs /auth/me's 401
    await page.get_by_label("Email").fill(ADMIN[0])
    await page.get_by_label("Password").fill(ADMIN[1])
    await page.get_by_role("button", name="Sign in").click()
    await expect(page.get_by_role("heading", name="Overview")).to_be_visible()


async def test_sign_in_create_an_agent_and_chat_with_the_reply_streaming(
    multi_user: LiveServer, stub: LLMStubServer
) -> None:
    stub.add_reply("Hello from the stub model, streamed.")
    async with chromium() as browser:
        page = await new_page(browser)
        await _sign_in(page, multi_user.base)
        await expect(page.get_by_text("Live")).to_be_visible()
        await check_page(page, "overview")

        await page.get_by_role("link", name="Agents").click()
        await page.get_by_role("button", name="New agent").click()
        await page.get_by_label("Name").fill("Ada")
        await page.get_by_role("button", name="Create").click()
        await expect(page.get_by_role("heading", name="Ada")).to_be_visible()

        await page.get_by_label("Message").fill("Say hello")
        await page.get_by_role("button", name="Send").click()
        reply = page.get_by_role("article", name="assistant")
        await expect(reply).to_contain_text("Hello from the stub model, streamed.")
        await expect(reply).to_contain_text("tokens")
        await check_page(page, "agent-chat")

        # The overview's activity: the turn's events, read back (GET /events), then live.
        await page.get_by_role("link", name="Overview").click()
        feed = page.get_by_role("list", name="Activity")
        await expect(feed).to_contain_text("turn.finished")
        await expect(feed).to_contain_text("agent.created")
        await page.go_back()

        # A reload keeps the session and the conversation (the page is served at its address).
        await page.reload()
        await expect(page.get_by_role("article", name="assistant")).to_contain_text(
            "Hello from the stub model"
        )
        await page.get_by_role("button", name="Sign out").click()
        await expect(page.get_by_role("form", name="Sign in")).to_be_visible()


async def test_a_tool_call_approved_in_the_inbox_while_the_chat_waits(
    server: LiveServer, stub: LLMStubServer
) -> None:
    base = server.base
    body = {"name": "Counter", "provider": "ollama", "model": "llama3.2"}
    made = await asyncio.to_thread(httpx.post, f"{base}/agents", json=body, timeout=10)
    agent_id = made.json()["id"]
    tool = {"enabled": True, "policy": "ask"}
    url = f"{base}/agents/{agent_id}/tools/calculator"
    assert (await asyncio.to_thread(httpx.put, url, json=tool, timeout=10)).status_code == 200
    stub.add_reply(ToolCall("", "calculator", {"expression": "6*7"}), "The answer is 42.")
    async with chromium() as browser:
        chat = await new_page(browser)
        await chat.goto(f"{base}/agents/{agent_id}")  # no login: single-user mode
        await chat.get_by_label("Message", exact=True).fill("What is 6*7?")
        await chat.get_by_role("button", name="Send").click()
        await expect(chat.get_by_role("status")).to_contain_text("waits for a decision")
        await check_page(chat, "agent-chat-waiting")

        inbox = await new_page(browser)
        await inbox.goto(f"{base}/approvals")
        card = inbox.get_by_role("article", name=re.compile("Approval"))
        await expect(card).to_contain_text("calculator")
        await expect(card).to_contain_text('"expression": "6*7"')
        await check_page(inbox, "approvals")
        await card.get_by_label("Comment (optional)").fill("fine")
        await card.get_by_role("button", name="Approve").click()
        await expect(inbox.get_by_text("None.")).to_be_visible()  # the pending list empties

        # The chat, left open, hears the turn go on and shows the reply.
        answer = chat.get_by_role("article", name="assistant").last
        await expect(answer).to_contain_text("The answer is 42.")
        await expect(chat.get_by_role("status")).to_have_count(0)
        await check_page(chat, "agent-chat-approved")


def test_a_script_still_gets_json_where_a_browser_gets_the_page(multi_user: LiveServer) -> None:
    navigate = {"Sec-Fetch-Mode": "navigate", "Sec-Fetch-Dest": "document"}
    page = httpx.get(f"{multi_user.base}/agents", headers=navigate)
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert page.headers["cache-control"] == "no-cache"
    api = httpx.get(f"{multi_user.base}/agents")
    assert api.status_code == 401 and api.headers["content-type"] == "application/problem+json"
    asset = page.text.split('src="', 1)[1].split('"', 1)[0]
    cached = httpx.get(multi_user.base + asset)
    assert cached.status_code == 200
    assert cached.headers["cache-control"] == "public, max-age=31536000, immutable"
