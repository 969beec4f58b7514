"""The catalog tests' keys and fixtures: no provider variable of the machine leaks in (they
are set per test with `no_provider_env(NAME=value)`), and apps in either mode."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator

import httpx
import pytest
from fastapi import FastAPI
from task_api import client_for, multi_user_app

from gathering.config import get_settings
from gathering.testing import LLMStubServer

OPENAI_KEY = "sk-catalog-openai-0123456789abcdefWXYZ"
ANTHROPIC_KEY = "sk-ant-catalog-0123456789abcdefQRST"
ENV_KEY = "sk-from-the-environment-9876543210zz"
PROVIDER_VARIABLES = (
    "ANTHROPIC_API_KEY",
    "GATHERING_ANTHROPIC_API_KEY",
    "ANTHROPIC_BASE_URL",
    "OPENAI_API_KEY",
    "GATHERING_OPENAI_API_KEY",
    "OPENAI_BASE_URL",
    "GATHERING_OPENAI_BASE_URL",
    "OLLAMA_HOST",
    "GATHERING_OLLAMA_HOST",
)


@pytest.fixture(name="no_provider_env")
def no_provider_env_fixture(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[..., None]]:
    """No provider variable set; `setenv(NAME=value)` sets some (settings re-read)."""
    for name in PROVIDER_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    get_settings.cache_clear()

    def setenv(**values: str) -> None:
        for name, value in values.items():
            monkeypatch.setenv(name, value)
        get_settings.cache_clear()

    yield setenv
    get_settings.cache_clear()


@pytest.fixture(name="stub")
def catalog_stub_fixture(llm_stub: LLMStubServer) -> LLMStubServer:
    """The wire stub, its environment not set: the catalog points agents at it."""
    llm_stub.reset()
    return llm_stub


@pytest.fixture(name="api")
async def catalog_api_fixture(
    app_for: Callable[..., FastAPI], no_provider_env: Callable[..., None]
) -> AsyncIterator[httpx.AsyncClient]:
    """Single-user mode: the caller is the local owner, an admin."""
    async with client_for(app_for()) as client:
        yield client


@pytest.fixture(name="multi")
async def catalog_multi_fixture(
    migrated_database_url: str, no_provider_env: Callable[..., None]
) -> AsyncIterator[tuple[FastAPI, httpx.AsyncClient]]:
    """Multi-user mode, no lifespan."""
    app = multi_user_app(migrated_database_url)
    async with client_for(app) as client:
        yield app, client
    await app.state.gathering.close()
