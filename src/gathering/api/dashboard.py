"""The dashboard's build, served at `/`: hashed assets cached for good, and the page itself for
every address a browser navigates to (the dashboard routes in the browser).

`make run` builds it from `dashboard/` into `dashboard_build/` beside this module, which the
wheel ships. A browser's navigation (`Sec-Fetch-Mode: navigate`) to an address the API also
serves (`/agents`) gets the page; the same address fetched by a script gets the API's JSON.
Without a build, `/` says how to make one and the API works as before.
"""

from __future__ import annotations

import mimetypes
from pathlib import Path

from starlette.datastructures import Headers, MutableHeaders
from starlette.responses import FileResponse, Response
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

BUILD = Path(__file__).with_name("dashboard_build")
ASSETS_PATH = "/assets"
IMMUTABLE = "public, max-age=31536000, immutable"
# One address answers a browser's navigation with the page and a script with JSON: caches (the
# back button's too) keep them apart by these headers.
VARY = "Sec-Fetch-Mode, Sec-Fetch-Dest"
# Addresses that stay the API's own even when a browser navigates to them.
API_PAGES = ("/docs", "/redoc", "/openapi.json", "/health", "/metrics", "/ws", ASSETS_PATH)


# Looked at once, on import (a file check inside a running event loop would block it): a
# server started before `make dashboard` serves the build after a restart.
BUILT = (BUILD / "index.html").is_file()
# Starlette guesses each file's type; the first guess reads the system's type tables, a file
# read that would block the event loop: read them now.
mimetypes.init()


class _Assets(StaticFiles):
    """Vite's hashed files: a name changes with its content, so a browser keeps it for good."""

    def file_response(self, *args: object, **kwargs: object) -> Response:
        response = super().file_response(*args, **kwargs)  # type: ignore[arg-type]
        response.headers["Cache-Control"] = IMMUTABLE
        return response


def assets() -> ASGIApp:
    """The app serving `/assets/*` of the build."""
    return _Assets(directory=BUILD / "assets", check_dir=False)


def page() -> Response:
    """The dashboard's page, never cached (it names the current assets)."""
    return FileResponse(
        BUILD / "index.html",
        media_type="text/html",
        headers={"Cache-Control": "no-cache", "Vary": VARY},
    )


def _navigation(scope: Scope) -> bool:
    if scope["type"] != "http" or scope["method"] not in ("GET", "HEAD"):
        return False
    path: str = scope["path"]
    if path == "/" or any(path == p or path.startswith(p + "/") for p in API_PAGES):
        return False
    headers = Headers(scope=scope)
    return headers.get("sec-fetch-mode") == "navigate" and headers.get("sec-fetch-dest") in (
        "document",
        None,
    )


class DashboardNavigationMiddleware:
    """Answer a browser's navigation to a dashboard address with the dashboard's page."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if not BUILT or scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if _navigation(scope):
            await page()(scope, receive, send)
            return

        async def send_varying(message: Message) -> None:
            if message["type"] == "http.response.start":
                MutableHeaders(scope=message).append("Vary", VARY)
            await send(message)

        await self.app(scope, receive, send_varying)
