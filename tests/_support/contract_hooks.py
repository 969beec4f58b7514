"""Schemathesis hooks for tests/test_api_contract.py (loaded with SCHEMATHESIS_HOOKS).

Agents the contract test creates or changes use the scripted provider, so their chats answer
at once (and never need a model or a key). Only a valid provider name is replaced: a request
meant to be invalid stays invalid.
"""

from __future__ import annotations

from typing import Any

import schemathesis

from gathering.llm import known_providers

AGENT_WRITES = {("POST", "/agents"), ("PATCH", "/agents/{agent_id}")}


@schemathesis.hook
def before_call(context: Any, case: Any, kwargs: dict[str, Any]) -> None:
    operation = (case.operation.method.upper(), case.operation.path)
    body = case.body
    if operation in AGENT_WRITES and isinstance(body, dict):
        if body.get("provider") in known_providers():
            body["provider"] = "scripted"
