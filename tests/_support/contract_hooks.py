"""Schemathesis hooks for tests/test_api_contract.py (loaded with SCHEMATHESIS_HOOKS).

Agents the contract test creates or changes use the scripted provider, so their chats answer
at once (and never need a model or a key). Only a valid provider name is replaced: a request
meant to be invalid stays invalid.

A pipeline definition's graph (edges between known nodes, no cycle, a trigger, every node
reached), its templates, expressions and input schema are checked on save, beyond what JSON
Schema can say, and a random graph is almost never valid. A schema-valid definition that those
checks refuse gets a graph they accept (its other fields stay as generated); a definition the
server would refuse for any other reason is sent as it is, so the test still sees it. A
schedule gets the same treatment: one whose cron, time zone, instants or action config the
server's checks refuse is replaced by one they accept.
"""

from __future__ import annotations

import copy
from datetime import UTC, datetime
from typing import Any

import schemathesis

from gathering.errors import GatheringError, InvalidInputError
from gathering.llm import known_providers
from gathering.pipelines import parse_definition, validate
from gathering.scheduler import next_fire, parse_spec

NOBODY = 2**62  # an id no test creates
AGENT_WRITES = {("POST", "/agents"), ("PATCH", "/agents/{agent_id}")}
PIPELINE_SAVES = {("POST", "/pipelines"), ("PUT", "/pipelines/{pipeline_id}")}
SCHEDULE_SAVES = {("POST", "/schedules"), ("PUT", "/schedules/{schedule_id}")}
CHECKED_SCHEDULE = {
    "kind": "interval",
    "every_seconds": 86_400,
    "action": "send_notification",
    "config": {"title": "checked"},
}
CHECKED_GRAPH = {
    "input_schema": {"type": "object"},
    "nodes": [{"id": "start", "type": "trigger"}],
    "edges": [],
}


def _positive(case: Any) -> bool:
    return case.meta is not None and case.meta.generation.mode.is_positive


def _with_a_checked_graph(body: dict[str, Any]) -> None:
    try:
        problems = validate(parse_definition(body))
    except InvalidInputError:
        return
    if problems:
        body.update(copy.deepcopy(CHECKED_GRAPH))


def _with_a_checked_schedule(body: dict[str, Any]) -> None:
    """A schedule that the checks beyond JSON Schema refuse (a cron's syntax, a time zone,
    an instant passed, the action's config) becomes one they accept, its name kept."""
    document = {key: value for key, value in body.items() if key != "name"}
    try:
        spec = parse_spec(document)
        if next_fire(spec, datetime.now(UTC), datetime.now(UTC)) is not None:
            return
    except GatheringError:
        pass
    name = body.get("name", "s")
    body.clear()
    body.update(copy.deepcopy(CHECKED_SCHEDULE), name=name)


@schemathesis.hook
def before_call(context: Any, case: Any, kwargs: dict[str, Any]) -> None:
    operation = (case.operation.method.upper(), case.operation.path)
    body = case.body
    if operation in AGENT_WRITES and isinstance(body, dict):
        if body.get("provider") in known_providers():
            body["provider"] = "scripted"
    if operation in PIPELINE_SAVES and isinstance(body, dict) and _positive(case):
        _with_a_checked_graph(body)
    if operation in SCHEDULE_SAVES and isinstance(body, dict) and _positive(case):
        _with_a_checked_schedule(body)
    # A link inferred from a response's field that is null (a goal with no agent yet) gives
    # a path parameter None, which no client would send: it asks for an id nobody has.
    for name, value in list((case.path_parameters or {}).items()):
        if value is None:
            case.path_parameters[name] = NOBODY
