"""Fixtures of the provider tests: the wire stub (`gathering.testing.LLMStubServer`, a real
HTTP server on 127.0.0.1), recorded provider payloads to queue on it, and no keys at all.

The SDKs under test send real requests over TCP and parse real bytes (JSON bodies, SSE,
NDJSON); each test queues the responses it wants and inspects the requests it caused.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from gathering.config import get_settings
from gathering.testing import LLMStubServer

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "llm"


class Recorded:
    """Recorded provider payloads from tests/fixtures/llm."""

    def text(self, name: str) -> str:
        return (FIXTURES / name).read_text()

    def json(self, name: str) -> Any:
        return json.loads(self.text(name))


@pytest.fixture
def stub(llm_stub: LLMStubServer) -> Iterator[LLMStubServer]:
    """The session's provider stub (`gathering.testing.LLMStubServer`), reset around the test:
    queue the responses a test wants, inspect the requests it caused."""
    llm_stub.reset()
    yield llm_stub
    llm_stub.reset()


@pytest.fixture(scope="session")
def recorded() -> Recorded:
    return Recorded()


@pytest.fixture
def no_keys(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """No API key anywhere in the environment, and settings re-read without them."""
    for name in (
        "ANTHROPIC_API_KEY",
        "GATHERING_ANTHROPIC_API_KEY",
        "OPENAI_API_KEY",
        "GATHERING_OPENAI_API_KEY",
        "OPENAI_BASE_URL",
        "GATHERING_OPENAI_BASE_URL",
        "GATHERING_DEFAULT_PROVIDER",
    ):
        monkeypatch.delenv(name, raising=False)
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()
