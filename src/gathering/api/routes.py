"""The app's HTTP routes, as a flat list, whatever way FastAPI keeps included routers."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from fastapi import routing
from starlette.convertors import Convertor, register_url_convertor
from starlette.routing import Match
from starlette.types import Scope


class IdConvertor(Convertor[int]):
    """`{name:id}` in a path: a decimal id of at most 19 digits, perhaps written as a whole
    decimal ("19.0", as the schema's integers may be). Starlette's `int` would parse a
    5,000-digit segment and fail with a 500."""

    regex = r"[0-9]{1,19}(?:\.0{0,19})?"

    def convert(self, value: str) -> int:
        return int(value.partition(".")[0])

    def to_string(self, value: int) -> str:
        return str(value)


register_url_convertor("id", IdConvertor())


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
