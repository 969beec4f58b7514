"""The dashboard's administration pages in a real browser (Debian's chromium) against a real
multi-user `gathering serve` on a migrated database, the model faked at its HTTP wire: an admin
adds a provider and tests it, overrides a model's price, creates a persona, a user and an API
key (its secret shown once, then revoked), finds all that in the audit log, sees a chat turn's
spending arrive on the usage page (charts, totals, CSV) and sets a budget. Each page is checked
with axe-core and photographed (test-artifacts/dashboard/admin-*.png)."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from browser import ADMIN, check_page, chromium, new_page
from job_processes import ScratchDatabase, worker_env
from live_server import LiveServer
from playwright.async_api import Dialog, Page, expect

from gathering.testing import LLMStubServer

pytestmark = [pytest.mark.slow, pytest.mark.e2e]
PROVIDER_KEY = "sk-provider-secret-0123456789"


def _money(usd: float) -> str:
    """`usd` as the dashboard shows it (en-US, 2 to 4 decimals)."""
    text = f"{usd:,.4f}".rstrip("0")
    decimals = len(text.split(".")[1])
    return "$" + (text + "0" * (2 - decimals) if decimals < 2 else text)


async def _accept(dialog: Dialog) -> None:
    await dialog.accept()


async def _sign_in(page: Page, base: str) -> None:
    await page.goto(base + "/")
    await expect(page.get_by_role("form", name="Sign in")).to_be_visible()
    await check_page(page, "admin-login", expected_errors=1)  # the browser logs /auth/me's 401
    await page.get_by_label("Email").fill(ADMIN[0])
    await page.get_by_label("Password").fill(ADMIN[1])
    await page.get_by_role("button", name="Sign in").click()
    await expect(page.get_by_role("heading", name="Overview")).to_be_visible()


async def _provider(page: Page, stub: LLMStubServer) -> None:
    await page.get_by_role("link", name="Settings").click()
    await expect(page.get_by_role("heading", name="Providers")).to_be_visible()
    await page.get_by_role("button", name="Add provider").click()
    form = page.get_by_role("form", name="New provider")
    await form.get_by_label("Name").fill("stub")
    await form.get_by_label("Kind").select_option("openai-compatible")
    await form.get_by_label("Address").fill(f"{stub.url}/v1")
    await form.get_by_label("API key").fill(PROVIDER_KEY)
    await form.get_by_role("button", name="Save provider").click()
    row = page.get_by_role("row").filter(has_text="OpenAI-compatible server")
    await expect(row).to_contain_text("stub")
    await expect(row).to_contain_text("...6789")  # the mask, never the key
    await expect(page.get_by_text(PROVIDER_KEY)).to_have_count(0)
    await page.get_by_role("button", name="Test stub", exact=True).click()
    await expect(row.get_by_role("status")).to_have_text(re.compile(r"OK in [\d.]+ m?s \(\S+\)"))
    await check_page(page, "admin-providers")


async def _model_price(page: Page, model: str) -> None:
    await page.get_by_role("link", name="Models and prices").click()
    await page.get_by_role("button", name="Override a model").click()
    form = page.get_by_role("form", name="Override a model")
    await form.get_by_label("Provider").fill("anthropic")
    await form.get_by_label("Model", exact=True).fill(model)
    await form.get_by_label("Input price", exact=True).fill("1000")
    await form.get_by_label("Output price").fill("2000")
    await form.get_by_role("button", name="Save override").click()
    await expect(form).to_have_count(0)
    await page.get_by_label("Overrides only").check()
    row = page.get_by_role("row").filter(has_text=model)
    await expect(row).to_contain_text("override")
    await expect(row).to_contain_text("$1000")
    await check_page(page, "admin-models")


async def _persona(page: Page) -> None:
    await page.get_by_role("link", name="Personas").click()
    await page.get_by_role("button", name="New persona").click()
    form = page.get_by_role("form", name="New persona")
    await form.get_by_label("Name").fill("strict-reviewer")
    await form.get_by_label("Description").fill("Reviews for security first")
    await form.get_by_label("Role").fill("security reviewer")
    await form.get_by_label("Traits").fill("careful, terse")
    await form.get_by_label("Base prompt").fill("Look for injection first.")
    await form.get_by_role("button", name="Create persona").click()
    row = page.get_by_role("row").filter(has_text="strict-reviewer")
    await expect(row).to_contain_text("security reviewer")
    await expect(page.get_by_role("button", name="Delete strict-reviewer")).to_be_visible()
    # Built-ins are read-only: copied, never changed or deleted.
    await expect(page.get_by_role("button", name="Copy architect")).to_be_visible()
    await expect(page.get_by_role("button", name="Delete architect")).to_have_count(0)
    await check_page(page, "admin-personas")


async def _user(page: Page) -> None:
    await page.get_by_role("link", name="Users and roles").click()
    await page.get_by_role("button", name="New user").click()
    form = page.get_by_role("form", name="New user")
    await form.get_by_label("Email").fill("bob@example.com")
    await form.get_by_label("Password").fill("bob's long passphrase")
    await form.get_by_label("Role").select_option("viewer")
    await form.get_by_role("button", name="Create user").click()
    row = page.get_by_role("row").filter(has_text="bob@example.com")
    await expect(page.get_by_label("Role of bob@example.com")).to_have_value("viewer")
    await page.get_by_label("Role of bob@example.com").select_option("member")
    await expect(page.get_by_role("status")).to_contain_text("bob@example.com is now member")
    await page.get_by_role("button", name="Disable bob@example.com").click()
    await expect(row).to_contain_text("disabled")
    await page.get_by_role("button", name="Enable bob@example.com").click()
    await expect(row).to_contain_text("active")
    await check_page(page, "admin-users")


async def _api_key(page: Page, base: str) -> None:
    await page.get_by_role("link", name="API keys").click()
    await page.get_by_role("button", name="New API key").click()
    form = page.get_by_role("form", name="New API key")
    await form.get_by_label("Name").fill("nightly import")
    await form.get_by_label("Scopes").fill("agents:read")
    await form.get_by_role("button", name="Create key").click()
    shown = page.get_by_label("The new key")
    await expect(shown).to_contain_text("gth_")
    secret = (await shown.inner_text()).strip()
    async with httpx.AsyncClient(base_url=base) as client:
        assert (await client.get("/agents", headers={"X-API-Key": secret})).status_code == 200
    await check_page(page, "admin-api-key-created")
    await page.get_by_role("button", name="I have saved it").click()
    await expect(page.get_by_text(secret)).to_have_count(0)  # shown once
    row = page.get_by_role("row").filter(has_text="nightly import")
    await expect(row).to_contain_text("active")
    await page.get_by_role("button", name="Revoke nightly import").click()
    await expect(row).to_contain_text("revoked")
    async with httpx.AsyncClient(base_url=base) as client:
        assert (await client.get("/agents", headers={"X-API-Key": secret})).status_code == 401
    await check_page(page, "admin-api-keys")


async def _audit(page: Page) -> None:
    await page.get_by_role("link", name="Audit log").click()
    search = page.get_by_role("form", name="Search the audit log")
    entries = page.get_by_role("table", name="Audit entries")
    for family, events in {
        "provider.*": ["provider.created"],
        "model.*": ["model.override_set"],
        "user.*": ["user.created", "user.role_changed", "user.disabled", "user.enabled"],
        "api_key.*": ["api_key.created", "api_key.revoked"],
    }.items():
        await search.get_by_label("Event").fill(family)
        await search.get_by_role("button", name="Search").click()
        for event in events:
            found = entries.get_by_role("rowheader", name=event, exact=True)
            await expect(found.first).to_be_visible()
        others = entries.get_by_role("rowheader").filter(has_not_text=family.rstrip("*"))
        await expect(others).to_have_count(0)
    await search.get_by_label("Outcome").select_option("success")
    await search.get_by_role("button", name="Search").click()
    await expect(entries).to_contain_text("api_key.revoked")
    await check_page(page, "admin-audit")


async def _chat(base: str, agent_id: int, token: str) -> None:
    async with httpx.AsyncClient(base_url=base, timeout=60) as client:
        turn = await client.post(
            f"/agents/{agent_id}/chat",
            json={"message": "Say hello"},
            headers={"Authorization": f"Bearer {token}"},
        )
        assert turn.status_code == 200, turn.text


async def _usage_and_budget(page: Page, base: str, agent: dict[str, object], token: str) -> None:
    await page.get_by_role("link", name="Usage").click()
    await expect(page.get_by_role("heading", name="Usage", exact=True)).to_be_visible()
    per_day = page.get_by_role("figure", name="Cost per day")
    await expect(per_day).to_contain_text("Nothing in this range.")
    await expect(page.get_by_text("No budget: spending is not capped.")).to_be_visible()

    # A turn made meanwhile arrives live (turn.finished), no reload.
    await _chat(base, int(str(agent["id"])), token)
    await expect(per_day.locator(".recharts-bar-rectangle").first).to_be_visible()
    by_agent = page.get_by_role("figure", name="Cost by agent")
    await expect(by_agent).to_contain_text(str(agent["name"]))
    await expect(page.get_by_role("figure", name="Cost by model")).to_contain_text(
        str(agent["model"])
    )
    async with httpx.AsyncClient(base_url=base) as client:
        summary = (
            await client.get("/usage/summary", headers={"Authorization": f"Bearer {token}"})
        ).json()
    spent = summary["today"]["cost_usd"]
    assert spent > 0.01  # the admin's price (1000 / 2000 $ per million tokens) applied
    totals = page.get_by_role("group", name="Totals")
    await expect(totals).to_contain_text(_money(spent))
    await page.get_by_label("Show").select_option("tokens")
    await expect(page.get_by_role("figure", name="Tokens per day")).to_contain_text("Output tokens")

    async with page.expect_download() as download_info:
        await page.get_by_role("button", name="Download CSV").click()
    download = await download_info.value
    csv = await asyncio.to_thread(Path(str(await download.path())).read_text)
    assert csv.splitlines()[0].startswith("period_start,key,calls")
    assert f",{agent['id']}," in csv

    await page.get_by_role("button", name="New budget").click()
    form = page.get_by_role("form", name="New budget")
    await form.get_by_label("Applies to").select_option("agent")
    await form.locator("select[name=target_id]").select_option(str(agent["id"]))
    await form.get_by_label("Period").select_option("month")
    await form.get_by_label("Limit in USD").fill("5")
    await form.get_by_role("button", name="Create budget").click()
    row = page.get_by_role("row").filter(has_text=f"agent {agent['name']}")
    await expect(row).to_contain_text(f"{_money(spent)} of $5.00")
    await expect(row).to_contain_text("per month (UTC)")
    await page.get_by_role("button", name=f"Change the budget of agent {agent['name']}").click()
    change = page.get_by_role("form", name=f"Change the budget of agent {agent['name']}")
    await change.get_by_label("Limit in USD").fill("10")
    await change.get_by_role("button", name="Save").click()
    await expect(row).to_contain_text("of $10.00")
    await page.get_by_label("Show").select_option("cost")
    await check_page(page, "admin-usage")


async def test_an_admin_runs_the_server_from_the_dashboard(
    multi_user: LiveServer, stub: LLMStubServer
) -> None:
    base = multi_user.base
    async with httpx.AsyncClient(base_url=base) as client:
        login = await client.post("/auth/login", json={"email": ADMIN[0], "password": ADMIN[1]})
        token = login.json()["access_token"]
        made = await client.post(
            "/agents", json={"name": "Rita"}, headers={"Authorization": f"Bearer {token}"}
        )
        assert made.status_code == 201, made.text
        agent = made.json()
    stub.add_reply("Hello from the stub model.")

    async with chromium() as browser:
        page = await new_page(browser)
        page.on("dialog", _accept)
        await _sign_in(page, base)
        await _provider(page, stub)
        await _model_price(page, agent["model"])
        await _persona(page)
        await _user(page)
        await _api_key(page, base)
        await _audit(page)
        await _usage_and_budget(page, base, agent, token)


@pytest.fixture
def single_user(database: ScratchDatabase) -> Iterator[LiveServer]:
    server = LiveServer(**worker_env(database))  # the suite's environment: single-user mode
    try:
        server.wait_ready()
        yield server
    finally:
        server.stop()


async def test_single_user_mode_has_no_accounts_but_keeps_the_rest(single_user: LiveServer) -> None:
    async with chromium() as browser:
        page = await new_page(browser)
        await page.goto(single_user.base + "/settings/users")
        await expect(page.get_by_role("heading", name="Users and roles")).to_be_visible()
        await expect(page.get_by_text("Accounts are off")).to_be_visible()
        await check_page(page, "admin-single-user-users")
        await page.get_by_role("link", name="Providers").click()
        await expect(page.get_by_text("No provider configured")).to_be_visible()
        await page.get_by_role("link", name="Usage").click()
        await expect(page.get_by_role("group", name="Totals")).to_contain_text("$0.00")
        await check_page(page, "admin-single-user-usage")
