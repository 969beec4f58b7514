"""How the API serves the dashboard's build (made before the tests): the page for a browser's
navigation under the strict CSP, JSON for a script at the same address, each response saying
that it varies by those headers, hashed assets cached for good, nothing else under /assets."""

from __future__ import annotations

import re

import httpx
import pytest

from gathering.api import dashboard
from gathering.api.security.headers import STRICT_CSP

NAVIGATE = {"Sec-Fetch-Mode": "navigate", "Sec-Fetch-Dest": "document"}


@pytest.fixture
async def client(app_for):  # type: ignore[no-untyped-def]
    assert dashboard.BUILT, "the dashboard is not built: run `make dashboard`"
    app = app_for()
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as ac:
        yield ac


async def test_a_navigation_gets_the_page_and_a_script_the_json(client: httpx.AsyncClient):
    page = await client.get("/agents", headers=NAVIGATE)
    assert page.headers["content-type"].startswith("text/html")
    assert page.headers["content-security-policy"] == STRICT_CSP
    assert page.headers["cache-control"] == "no-cache"
    assert "Sec-Fetch-Mode" in page.headers["vary"]
    api = await client.get("/agents")
    assert api.headers["content-type"] == "application/json"
    assert "Sec-Fetch-Mode" in api.headers["vary"]  # the back button never shows one for the other
    for path in ("/docs", "/openapi.json", "/health", "/health/ready"):
        kept = await client.get(path, headers=NAVIGATE)
        assert 'id="root"' not in kept.text, path


async def test_lookalikes_of_the_docs_get_the_strict_policy(client: httpx.AsyncClient):
    for path in ("/docsX", "/docs-evil/agents", "/redocs"):
        page = await client.get(path, headers=NAVIGATE)
        assert page.headers["content-security-policy"] == STRICT_CSP, path
    docs = await client.get("/docs")
    assert "cdn.jsdelivr.net" in docs.headers["content-security-policy"]


async def test_assets_are_immutable_and_nothing_else_is_served(client: httpx.AsyncClient):
    index = (await client.get("/", headers=NAVIGATE)).text
    asset = re.search(r'src="(/assets/[^"]+\.js)"', index)
    assert asset is not None, index
    served = await client.get(asset.group(1))
    assert served.status_code == 200
    assert served.headers["cache-control"] == "public, max-age=31536000, immutable"
    for path in ("/assets/nope.js", "/assets/../dashboard.py", "/assets/..%2f..%2fconfig.py"):
        missing = await client.get(path)
        assert missing.status_code == 404, path
        assert "immutable" not in missing.headers.get("cache-control", ""), path
