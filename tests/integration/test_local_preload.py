"""The server loads the local model in the background at start-up, when new agents default to
it: the first chat does not wait for the load, and readiness never does."""

from __future__ import annotations

import asyncio

import pytest

from gathering.api.lifecycle import LocalModelComponent
from gathering.api.state import AppState
from gathering.config import get_settings
from gathering.llm.local import DEFAULT_MODEL, LocalProvider

pytestmark = pytest.mark.slow


async def test_the_local_model_is_loaded_in_the_background(settings_env):
    settings_env(local_preload="true", default_provider="local")
    component = LocalModelComponent(AppState(get_settings()))
    await component.start()
    assert (await component.health()).ok  # never holds readiness back
    for _ in range(600):
        if (await component.health()).detail != "loading in the background":
            break
        await asyncio.sleep(0.1)
    assert (await component.health()).detail == "loaded"
    assert (await LocalProvider(DEFAULT_MODEL).local_model_off_loop()).is_loaded


async def test_nothing_is_loaded_when_agents_default_to_another_provider(settings_env):
    settings_env(local_preload="true", default_provider="openai")
    component = LocalModelComponent(AppState(get_settings()))
    await component.start()
    assert (await component.health()).detail == "not preloaded"
