"""`GET /`: the dashboard, or without its build a short page that says what this server is."""

from __future__ import annotations

from fastapi import APIRouter, Depends
from fastapi.responses import HTMLResponse
from starlette.responses import Response

from gathering import __version__
from gathering.api import dashboard
from gathering.api.security import public_route

router = APIRouter(include_in_schema=False, dependencies=[Depends(public_route)])

_PAGE = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>GatheRing</title></head>
<body>
<h1>GatheRing {__version__}</h1>
<p>A collaborative multi-agent AI server. This address serves its API.</p>
<ul>
<li><a href="/docs">/docs</a>: the API reference (interactive)</li>
<li><a href="/openapi.json">/openapi.json</a>: the OpenAPI schema</li>
<li><a href="/health/ready">/health/ready</a>: whether the server is ready</li>
</ul>
<p>The dashboard is not built: <code>make run</code> (or <code>make dashboard</code>) builds it
from the source checkout; the Python wheel ships it built.</p>
<p>From a terminal: <code>gathering --help</code>.</p>
</body></html>
"""


@router.get("/")
async def home() -> Response:
    return dashboard.page() if dashboard.BUILT else HTMLResponse(_PAGE)
