"""The OpenAPI document tells the whole truth, so that a client generated from it works.

Each operation lists the problem+json answers it can give (one shared `Problem` schema), who
may call it (the bearer token and `X-API-Key` schemes; public operations need neither) and the
links from a created resource to the operations on it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from pydantic import BaseModel, ConfigDict, Field

from gathering.agents.persona import NO_NUL
from gathering.api.deps import MAX_ID
from gathering.api.errors import PROBLEM_JSON
from gathering.api.routers.metrics import metrics_reader
from gathering.api.routes import http_routes
from gathering.api.security.dependencies import (
    account_services,
    dependency_calls,
    route_policy,
)
from gathering.config import Settings
from gathering.llm.registry import TEST_PROVIDERS, known_providers


class FieldError(BaseModel):
    """Why one field of the request was refused."""

    loc: list[str | int] = Field(description='Where: e.g. ["body", "name"] or ["query", "limit"]')
    msg: str
    type: str


class Problem(BaseModel):
    """An RFC 9457 problem: every error answer of the API."""

    model_config = ConfigDict(extra="allow")

    type: str = Field(description="urn:gathering:error:<code>")
    title: str
    status: int
    detail: str = Field(description="What happened, for a person")
    code: str = Field(description="What happened, for a program (e.g. not_found, rate_limited)")
    hint: str | None = Field(default=None, description="What to do about it")
    details: dict[str, Any] | None = None
    errors: list[FieldError] | None = Field(
        default=None, description="invalid_input: each refused field"
    )


BEARER = "bearerAuth"
API_KEY = "apiKeyAuth"
SECURITY_SCHEMES = {
    BEARER: {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"},
    API_KEY: {"type": "apiKey", "in": "header", "name": "X-API-Key"},
}
_EVERY_OPERATION = {
    400: "Malformed request: a Host that is not served, a NUL in the URL, a bad Content-Length"
    " (HTTP the server cannot parse is answered in text/plain, before the app sees it)",
    403: "Refused: a cross-origin request, or the caller lacks the role or scope",
    429: "Rate limited: wait for Retry-After seconds",
    500: "An unexpected error; it has been logged",
    503: "Unavailable (draining, or the database is): retry after Retry-After seconds",
    413: "The body is larger than the server accepts (checked for every request)",
}
_AUTHENTICATED = {401: "Missing, invalid, expired or revoked credentials"}
_WITH_PATH_ID = {404: "Not found (or not yours)"}
_WITH_INPUT = {422: "Invalid input: `errors` names each refused field"}
_ACCOUNTS = {409: "Single-user mode has no accounts or tokens"}
_METHODS = ("get", "put", "post", "delete", "patch")
_PLAIN_TEXT = {"text/plain": {"schema": {"type": "string"}}}


def _open_to_anyone(route: Any, settings: Settings) -> bool:
    """Whether `route` needs no credentials: single-user mode, a public route, or /metrics
    opened with `GATHERING_METRICS_ACCESS=public` (else an admin or the scrape token)."""
    if not settings.auth_required:
        return True
    if metrics_reader in dependency_calls(route.dependant):
        return settings.metrics_access == "public"
    return route_policy(route).public


def _problem_answers(route: Any, settings: Settings) -> dict[int, str]:
    """The error statuses `route` can answer with, and why."""
    answers = dict(_EVERY_OPERATION)
    if not _open_to_anyone(route, settings):
        answers |= _AUTHENTICATED
    if route.dependant.path_params:
        answers |= _WITH_PATH_ID
    if route.dependant.path_params or route.dependant.query_params or route.body_field:
        answers |= _WITH_INPUT
    if account_services in dependency_calls(route.dependant):
        answers |= _ACCOUNTS
    return answers


def _document_problems(operation: dict[str, Any], answers: dict[int, str]) -> None:
    responses: dict[str, Any] = operation.setdefault("responses", {})
    problem_content = {PROBLEM_JSON: {"schema": {"$ref": "#/components/schemas/Problem"}}}
    for code, description in answers.items():
        answer = responses.setdefault(str(code), {"description": description})
        if answer["description"] == "Validation Error":  # FastAPI's own
            answer["description"] = description
    for status, response in responses.items():
        content = response.get("content")
        # FastAPI's own 422 says `HTTPValidationError`, which we never send.
        if int(status) >= 400 and (content is None or "HTTPValidationError" in str(content)):
            response["content"] = dict(problem_content)
    # uvicorn answers a request it cannot parse (a malformed Content-Length) itself.
    responses["400"]["content"] = {**responses["400"]["content"], **_PLAIN_TEXT}


@dataclass(frozen=True)
class Link:
    """An answer that names a resource: `status` answers of operations returning `model`
    link to every operation with the path parameter `parameter`, filled from the answer's
    `field` (only those under the answering operation's own path, with `same_path`)."""

    parameter: str
    field: str = "id"
    status: str = "201"
    same_path: bool = False


# Creates link to the operations on what they made (stateful tests and clients follow them).
LINKS = {
    "AgentOut": Link("agent_id"),
    "ApiKeyCreatedResponse": Link("key_id"),
    "DocumentOut": Link("document_id"),
    "MemoryOut": Link("memory_id"),
    "PipelineOut": Link("pipeline_id"),
    # A run started, retried or forked (202) is followed by its id.
    "RunOut": Link("run_id", status="202"),
    "UserResponse": Link("user_id"),
    "ScheduleOut": Link("schedule_id"),
    "TaskOut": Link("task_id", status="202"),
    "GoalOut": Link("goal_id"),
    "ProjectDetailOut": Link("project_id"),
    "ProviderOut": Link("provider_id"),
    # `name` is also a tool's path parameter: only /mcp/servers/{name} is this server.
    "McpServerOut": Link("name", "name", same_path=True),
    # A call that waits for a person (202) names its approval.
    "InvokeOut": Link("approval_id", "approval_id", status="202"),
}


def _link_created(paths: dict[str, Any]) -> None:
    """Add each answer's links (see `LINKS`)."""
    targets: dict[str, list[tuple[str, str]]] = {}
    for path, item in paths.items():
        for method in _METHODS:
            operation = item.get(method)
            for parameter in operation.get("parameters", []) if operation else []:
                if parameter["in"] == "path":
                    targets.setdefault(parameter["name"], []).append(
                        (path, operation["operationId"])
                    )
    for path, item in paths.items():
        for method in _METHODS:
            responses = (item.get(method) or {}).get("responses", {})
            for model, link in LINKS.items():
                answer = responses.get(link.status)
                ref = str((answer or {}).get("content", {}).get("application/json", {}))
                if answer is None or f"/{model}'" not in ref:
                    continue
                answer["links"] = {
                    target: {
                        "operationId": target,
                        "parameters": {link.parameter: f"$response.body#/{link.field}"},
                    }
                    for target_path, target in targets.get(link.parameter, [])
                    if not link.same_path or target_path.startswith(path + "/")
                }


def _provider_choices(schemas: dict[str, Any], settings: Settings) -> None:
    """The providers registered when the document is built (`register_provider` may add some
    after import); outside development the API refuses the test providers, and so does this."""
    names = [
        name
        for name in known_providers()
        if settings.env == "development" or name not in TEST_PROVIDERS
    ]
    for model in schemas.values():
        provider = model.get("properties", {}).get("provider", {})
        for choice in [provider, *provider.get("anyOf", [])]:
            if "enum" in choice:
                choice["enum"] = names


# Pydantic names the bounds of a type that has its own validator (`WholeNumber`) as written.
_BOUNDS = {"ge": "minimum", "le": "maximum", "gt": "exclusiveMinimum", "lt": "exclusiveMaximum"}


def _exact_rules(node: Any) -> None:
    """Rules as the server applies them. Bounds in JSON Schema's words and exact: FastAPI's
    schema model keeps them as floats, and 2**63 - 1 (the largest id) would come out as 2**63,
    an id the server refuses. A map's key rule as `propertyNames`: pydantic writes the key
    pattern as `patternProperties`, which lets a key that does not match through."""
    if isinstance(node, dict) and node.get("type") in ("integer", "number"):
        for ours, theirs in _BOUNDS.items():
            if ours in node:
                node[theirs] = node.pop(ours)
    if isinstance(node, dict) and len(keyed := node.get("patternProperties", {})) == 1:
        [(pattern, value)] = keyed.items()
        del node["patternProperties"]
        node["propertyNames"] = node.get("propertyNames", {}) | {"pattern": pattern}
        node["additionalProperties"] = value
    items = node.items() if isinstance(node, dict) else enumerate(node)
    for key, value in list(items):
        if isinstance(value, float) and value == float(MAX_ID):
            node[key] = MAX_ID
        elif isinstance(value, dict | list):
            _exact_rules(value)


def _parameters_as_sent(operation: dict[str, Any]) -> None:
    """Parameters as a URL or a header carries them. One left out is None to the route, one
    sent is never JSON null: `anyOf: [X, null]` (pydantic's optional parameter) is just X.
    And no URL may hold a NUL (the Host/Origin guard answers 400): a text parameter says so."""
    for parameter in operation.get("parameters", []):
        schema = parameter.get("schema", {})
        choices = schema.get("anyOf", [])
        others = [choice for choice in choices if choice != {"type": "null"}]
        if len(others) == 1 and len(choices) == 2:
            del schema["anyOf"]
            schema.update(others[0])
        texts = [schema, schema.get("items", {})]
        for text in texts:
            if text.get("type") == "string" and "pattern" not in text and "enum" not in text:
                text["pattern"] = NO_NUL


def build_openapi(app: FastAPI, settings: Settings) -> dict[str, Any]:
    """The OpenAPI document of `app` as served in the mode `settings` describe."""
    schema = get_openapi(
        title=app.title,
        version=app.version,
        summary=app.summary,
        routes=app.routes,
    )
    components = schema.setdefault("components", {})
    schemas = components.setdefault("schemas", {})
    schemas.pop("HTTPValidationError", None)
    schemas.pop("ValidationError", None)
    problem = Problem.model_json_schema(ref_template="#/components/schemas/{model}")
    schemas.update(problem.pop("$defs"))
    schemas["Problem"] = problem
    components["securitySchemes"] = SECURITY_SCHEMES
    if settings.auth_required:
        schema["security"] = [{BEARER: []}, {API_KEY: []}]
    for route in http_routes(app):
        if not route.include_in_schema:
            continue
        item = schema["paths"][route.path_format]
        for method in route.methods:
            operation = item[method.lower()]
            _document_problems(operation, _problem_answers(route, settings))
            _parameters_as_sent(operation)
            if settings.auth_required and _open_to_anyone(route, settings):
                operation["security"] = []
    _provider_choices(schemas, settings)
    _exact_rules(schema)
    _link_created(schema["paths"])
    return schema


def install_openapi(app: FastAPI, settings: Settings) -> None:
    """Serve `build_openapi` as `app.openapi()`, built once."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = build_openapi(app, settings)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
