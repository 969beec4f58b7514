"""The FastAPI application: `create_app()` and the module-level `app`."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.routing import APIRoute

from gathering import __version__
from gathering.api import dashboard
from gathering.api.approval_duty import ApprovalDutyComponent
from gathering.api.body_limit import BodyLimitMiddleware
from gathering.api.dashboard import DashboardNavigationMiddleware
from gathering.api.errors import install_error_handlers
from gathering.api.middleware import RequestContextMiddleware
from gathering.api.openapi import install_openapi
from gathering.api.routers import (
    agents,
    api_docs,
    api_keys,
    approvals,
    audit,
    auth,
    circles,
    debug,
    goals,
    health,
    home,
    knowledge,
    mcp,
    memories,
    metrics,
    pipeline_runs,
    pipelines,
    project_files,
    project_git,
    project_terminal,
    projects,
    schedules,
    tasks,
    tools,
    users,
    ws,
)
from gathering.api.routers import budgets as budgets_routes
from gathering.api.routers import events as events_routes
from gathering.api.routers import models as models_routes
from gathering.api.routers import personas as personas_routes
from gathering.api.routers import providers as providers_routes
from gathering.api.routers import settings as settings_routes
from gathering.api.routers import usage as usage_routes
from gathering.api.security import install_security
from gathering.api.security.audit_retention import AuditRetentionComponent
from gathering.api.state import AppState
from gathering.config import Settings, get_settings
from gathering.db import Database
from gathering.observability import configure_tracing


@asynccontextmanager
async def _lifespan(app: FastAPI) -> AsyncIterator[None]:
    state: AppState = app.state.gathering
    await state.lifecycle.start()
    try:
        yield
    finally:
        await state.lifecycle.stop()


def operation_id(route: APIRoute) -> str:
    """A stable operation id, `<tag>-<function>` (e.g. `agents-chat`), for generated clients."""
    return f"{route.tags[0]}-{route.name}" if route.tags else route.name


def create_app(
    testing: bool = False, *, settings: Settings | None = None, database: Database | None = None
) -> FastAPI:
    """Build an app. `testing=True` gives it an isolated database of its own."""
    settings = settings or get_settings()
    app = FastAPI(
        title="GatheRing",
        version=__version__,
        summary="Collaborative multi-agent AI framework and server",
        lifespan=_lifespan,
        # FastAPI's own documentation routes would bypass the security gate: `api_docs` serves
        # them behind it instead.
        openapi_url=None,
        docs_url=None,
        redoc_url=None,
        generate_unique_id_function=operation_id,
    )
    state = AppState(settings, testing=testing, database=database)
    app.state.gathering = state
    install_error_handlers(app)
    # Added first, so innermost of our middleware: it refuses an oversized body before routing
    # reads it, after the Host/Origin guard, and its 413 gets the request id, the security
    # headers and CORS like any other response.
    app.add_middleware(
        BodyLimitMiddleware,
        max_body_bytes=settings.max_body_bytes,
        max_upload_bytes=settings.max_upload_bytes,
    )
    # A browser's navigation gets the dashboard's page; inside the security headers' middleware.
    app.add_middleware(DashboardNavigationMiddleware)
    install_security(app, settings)  # before any include_router: routes get its gate
    state.lifecycle.add(AuditRetentionComponent(app.state.security))
    admission = app.state.security.turn_admission
    state.lifecycle.add(ApprovalDutyComponent(state, admit=admission.admit_user))
    app.add_middleware(RequestContextMiddleware, drain=state.drain)
    if configure_tracing(settings):
        from opentelemetry.instrumentation.asgi import OpenTelemetryMiddleware

        app.add_middleware(OpenTelemetryMiddleware)
    app.include_router(home.router)
    app.include_router(health.router)
    app.include_router(api_docs.docs_router(settings))
    app.include_router(metrics.router)
    app.include_router(auth.router)
    app.include_router(api_keys.router)
    app.include_router(audit.router)
    app.include_router(users.router)
    app.include_router(agents.router)
    app.include_router(providers_routes.router)
    app.include_router(models_routes.router)
    app.include_router(personas_routes.router)
    app.include_router(settings_routes.router)
    app.include_router(memories.router)
    app.include_router(knowledge.router)
    app.include_router(knowledge.deprecated_router)
    app.include_router(tools.router)
    app.include_router(approvals.router)
    app.include_router(mcp.router)
    app.include_router(pipelines.router)
    app.include_router(pipeline_runs.router)
    app.include_router(schedules.router)
    app.include_router(tasks.router)
    app.include_router(goals.router)
    app.include_router(circles.router)
    app.include_router(projects.router)
    app.include_router(usage_routes.router)
    app.include_router(budgets_routes.router)
    app.include_router(project_git.router)
    app.include_router(project_files.router)
    app.include_router(project_terminal.router)
    app.include_router(events_routes.router)
    app.include_router(ws.router)
    if dashboard.BUILT:
        app.mount(dashboard.ASSETS_PATH, dashboard.assets(), name="dashboard-assets")
    if settings.debug_endpoints:
        app.include_router(debug.router)
    install_openapi(app, settings)
    return app


app = create_app()
