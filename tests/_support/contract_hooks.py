"""Schemathesis hooks for tests/test_api_contract.py (loaded with SCHEMATHESIS_HOOKS).

Agents the contract test creates or changes use the scripted provider, so their chats answer
at once (and never need a model or a key). Only a valid provider name is replaced: a request
meant to be invalid stays invalid.

A pipeline definition's graph (edges between known nodes, no cycle, a trigger, every node
reached), its templates, expressions and input schema are checked on save, beyond what JSON
Schema can say, and a random graph is almost never valid. A schema-valid definition that those
checks refuse gets a graph they accept (its other fields stay as generated); a definition the
server would refuse for any other reason is sent as it is, so the test still sees it.
"""

from __future__ import annotations

import copy
from typing import Any

import schemathesis

from gathering.errors import InvalidInputError
from gathering.llm import known_providers
from gathering.pipelines import parse_definition, validate

AGENT_WRITES = {("POST", "/agents"), ("PATCH", "/agents/{agent_id}")}
PIPELINE_SAVES = {("POST", "/pipelines"), ("PUT", "/pipelines/{pipeline_id}")}
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


@schemathesis.hook
def before_call(context: Any, case: Any, kwargs: dict[str, Any]) -> None:
    operation = (case.operation.method.upper(), case.operation.path)
    body = case.body
    if operation in AGENT_WRITES and isinstance(body, dict):
        if body.get("provider") in known_providers():
            body["provider"] = "scripted"
    if operation in PIPELINE_SAVES and isinstance(body, dict) and _positive(case):
        _with_a_checked_graph(body)
