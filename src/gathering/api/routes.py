"""The app's HTTP routes, as a flat list, whatever way FastAPI keeps included routers."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from fastapi import routing
from starlette.routing import Match
from starlette.types import Scope


def http_routes(app: Any) -> Iterator[Any]:
    """Every HTTP route of `app`, with its routers' prefixes and dependencies applied (a
    FastAPI that includes routers lazily wraps each route in a context that says so)."""
    contexts = getattr(routing, "iter_route_contexts", None)
    routes: list[Any] = list(contexts(app.routes) if contexts else app.routes)
    for route in routes:
        if isinstance(getattr(route, "original_route", route), routing.APIRoute):
            yield route


def allowed_methods(app: Any, scope: Scope) -> list[str]:
    """The methods some route of `app` answers on the path of `scope` (a 405's `Allow`)."""
    methods: set[str] = set()
    for route in http_routes(app):
        match, _ = route.matches(scope)
        if match != Match.NONE:
            methods |= set(route.methods or ())
    return sorted(methods)
