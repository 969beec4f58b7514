"""One place that turns errors into problem+json responses; no stack trace reaches a client."""

from __future__ import annotations

from typing import Any

import structlog
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from gathering.api.routes import allowed_methods
from gathering.errors import DatabaseError, GatheringError, LLMError, MigrationError

log = structlog.get_logger(__name__)

PROBLEM_JSON = "application/problem+json"


def problem(status: int, code: str, detail: str, **extra: Any) -> JSONResponse:
    """An RFC 9457 problem+json response with our machine-readable `code`."""
    body = {
        "type": f"urn:gathering:error:{code}",
        "title": code.replace("_", " "),
        "status": status,
        "detail": detail,
        "code": code,
        **{k: v for k, v in extra.items() if v is not None},
    }
    headers = {}
    retry_after = extra.get("retry_after")
    if retry_after is not None:
        headers["Retry-After"] = str(max(1, round(float(retry_after))))
    return JSONResponse(body, status_code=status, media_type=PROBLEM_JSON, headers=headers)


# Seconds a 503 asks the client to wait when the error does not say (the database restarting,
# a dependency down): long enough not to hammer, short enough to feel live.
UNAVAILABLE_RETRY_AFTER = 2

# What a client is told about a database error: the driver's text (constraint and table
# names, server addresses) is logged, never sent.
_PUBLIC_DATABASE_ERRORS = {
    409: "that conflicts with an existing record (a unique value is already taken)",
    422: "the database refused these values",
    503: "the database is unavailable; retry shortly",
}


# Of a model provider's failure, a client gets the class's fixed `public_message`, our hint
# (what to do) and only these details; the provider's text is logged.
_PUBLIC_LLM_DETAILS = ("provider", "status", "retry_after")


def _public_llm_error(exc: LLMError, public_message: str) -> dict[str, Any]:
    request_id = structlog.contextvars.get_contextvars().get("request_id")
    log.warning("model provider error", error=exc.code, message=exc.message, hint=exc.hint)
    where = f" under request id {request_id}" if request_id else ""
    body: dict[str, Any] = {
        "code": exc.code,
        "message": f"{public_message}; the server log has the details{where}",
    }
    if exc.hint:
        body["hint"] = exc.hint
    details = {key: exc.details[key] for key in _PUBLIC_LLM_DETAILS if key in exc.details}
    if details:
        body["details"] = details
    return body


def public_error(exc: GatheringError) -> dict[str, Any]:
    """What a client may see of `exc`: code, message, hint and details."""
    if isinstance(exc, DatabaseError) and not isinstance(exc, MigrationError):
        log.warning("database error", error=exc.code, message=exc.message, **exc.details)
        message = _PUBLIC_DATABASE_ERRORS.get(
            exc.http_status, "a database error occurred; it has been logged"
        )
        return {"code": exc.code, "message": message}
    if isinstance(exc, LLMError) and exc.public_message is not None:
        return _public_llm_error(exc, exc.public_message)
    return exc.to_dict()


async def _gathering_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, GatheringError)
    if exc.http_status >= 500:
        log.error("request failed", path=request.url.path, error=exc.code, message=exc.message)
    public = public_error(exc)
    response = problem(
        exc.http_status,
        exc.code,
        public["message"],
        hint=public.get("hint"),
        details=public.get("details"),
        retry_after=exc.details.get("retry_after")
        or (UNAVAILABLE_RETRY_AFTER if exc.http_status == 503 else None),
    )
    if exc.http_status == 401:
        response.headers["WWW-Authenticate"] = 'Bearer realm="gathering"'
    return response


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = [
        {"loc": list(e.get("loc", ())), "msg": e.get("msg", ""), "type": e.get("type", "")}
        for e in exc.errors()
    ]
    return problem(422, "invalid_input", "the request is invalid; see `errors`", errors=errors)


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
    response = problem(exc.status_code, code, str(exc.detail))
    response.headers.update(exc.headers or {})
    if exc.status_code == 405:  # Starlette names the methods of one route; list every one
        response.headers["Allow"] = ", ".join(allowed_methods(request.app, request.scope))
    return response


async def _unexpected_error(request: Request, exc: Exception) -> JSONResponse:
    log.exception("unhandled error", path=request.url.path, method=request.method)
    return problem(500, "internal_error", "an unexpected error occurred; it has been logged")


def install_error_handlers(app: FastAPI) -> None:
    """Register the handlers on `app`."""
    app.add_exception_handler(GatheringError, _gathering_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(Exception, _unexpected_error)
