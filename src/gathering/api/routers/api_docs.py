"""The API documentation: `/openapi.json`, `/docs` (Swagger UI) and `/redoc`.

FastAPI would serve these itself, outside our routers and so outside the security gate;
`create_app` turns its own off and includes this router instead. In multi-user mode they need
credentials like any route (`GATHERING_DOCS_ACCESS=authenticated`, the default) unless
`GATHERING_DOCS_ACCESS=public`; in single-user mode every local caller reads them.
"""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import HTMLResponse, JSONResponse

from gathering.api.security import public_route
from gathering.config import Settings

OPENAPI_PATH = "/openapi.json"


def _openapi_url(request: Request) -> str:
    return str(request.scope.get("root_path", "")).rstrip("/") + OPENAPI_PATH


def docs_router(settings: Settings) -> APIRouter:
    """The documentation routes, public or behind the gate as `settings` say."""
    public = settings.docs_access == "public" or not settings.auth_required
    router = APIRouter(
        tags=["docs"],
        include_in_schema=False,
        dependencies=[Depends(public_route)] if public else [],
    )

    @router.get(OPENAPI_PATH)
    async def openapi_document(request: Request) -> JSONResponse:
        return JSONResponse(request.app.openapi())

    @router.get("/docs")
    async def swagger_ui(request: Request) -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url=_openapi_url(request), title=f"{request.app.title} - Swagger UI"
        )

    @router.get("/redoc")
    async def redoc(request: Request) -> HTMLResponse:
        return get_redoc_html(
            openapi_url=_openapi_url(request), title=f"{request.app.title} - ReDoc"
        )

    return router
