"""Debian's chromium driven by Playwright (never a downloaded browser), with an axe-core check
and a screenshot of each page's final state under test-artifacts/dashboard/."""

from __future__ import annotations

import asyncio
import json
import shutil
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from playwright.async_api import Browser, ConsoleMessage, Page, async_playwright

ROOT = Path(__file__).resolve().parents[2]
AXE = ROOT / "dashboard" / "node_modules" / "axe-core" / "axe.min.js"
BUILD = ROOT / "src" / "gathering" / "api" / "dashboard_build" / "index.html"
ARTIFACTS = ROOT / "test-artifacts" / "dashboard"
ADMIN = ("ada@example.com", "a long enough passphrase")  # the multi_user fixture's administrator
# Without the background-networking flags chromium tries to reach Google at every start.
FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def chromium_path() -> str:
    """Debian's chromium; a clear failure when it (or the dashboard's build) is missing."""
    path = shutil.which("chromium")
    assert path, "Debian's chromium is missing: `make test` installs it (apt-get install chromium)"
    assert BUILD.is_file(), "the dashboard is not built: run `make dashboard`"
    assert AXE.is_file(), "the dashboard's npm packages are missing: run `make dashboard`"
    return path


@asynccontextmanager
async def chromium() -> AsyncIterator[Browser]:
    """A headless chromium for one test."""
    async with async_playwright() as playwright:
        path = await asyncio.to_thread(chromium_path)
        browser = await playwright.chromium.launch(executable_path=path, args=FLAGS)
        try:
            yield browser
        finally:
            await browser.close()


_errors: dict[int, list[str]] = {}


async def new_page(browser: Browser) -> Page:
    """A page whose console errors and uncaught exceptions (a CSP refusal among them) are kept:
    `check_page` fails on any."""
    page = await browser.new_page()
    errors = _errors.setdefault(id(page), [])

    def on_console(message: ConsoleMessage) -> None:
        if message.type == "error":
            errors.append(f"console: {message.text}")

    page.on("console", on_console)
    page.on("pageerror", lambda error: errors.append(f"uncaught: {error}"))
    return page


def page_errors(page: Page) -> list[str]:
    """What went wrong in `page` so far (console errors, uncaught exceptions)."""
    return list(_errors.get(id(page), []))


async def accessibility_violations(page: Page) -> list[dict[str, Any]]:
    """axe-core's serious and critical violations on the page as it is now."""
    # Evaluated through the devtools protocol: the page's CSP (rightly) refuses inline scripts.
    await page.evaluate(await asyncio.to_thread(AXE.read_text))
    result = await page.evaluate(
        "async () => (await axe.run(document, {resultTypes: ['violations']})).violations"
    )
    return [
        {"id": v["id"], "impact": v["impact"], "nodes": [n["target"] for n in v["nodes"]][:5]}
        for v in result
        if v["impact"] in ("serious", "critical")
    ]


async def check_page(page: Page, name: str, *, expected_errors: int = 0) -> None:
    """Save a screenshot of the page as `name`.png, then fail on accessibility violations and
    on console errors since the last check (pages made by `new_page`; `expected_errors` for a
    page that makes a request fail on purpose, which the browser logs)."""
    await asyncio.to_thread(ARTIFACTS.mkdir, parents=True, exist_ok=True)
    await page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)
    violations = await accessibility_violations(page)
    assert not violations, f"{name}: {json.dumps(violations, indent=1)}"
    errors = page_errors(page)
    _errors.get(id(page), []).clear()  # the next check counts from here
    assert len(errors) == expected_errors, f"{name}: {errors}"
