"""The catalog's rules that need no database: the built-in personas are whole and valid, the
persona model still answers at its old import path, each declared setting is a real field of
`Settings` with its default, values are checked strictly (text from the command line parsed),
and a secret's value is masked and never quoted in an error."""

from __future__ import annotations

import re

import pytest

from gathering.agents import Persona as AgentsPersona
from gathering.agents.persona import Persona as OldPathPersona
from gathering.catalog.personas import BUILTIN_PERSONAS, PERSONA_NAME_PATTERN, Persona
from gathering.catalog.settings import (
    MASK,
    SETTINGS,
    SettingValue,
    _validated,
    setting_spec,
)
from gathering.config import Settings
from gathering.errors import InvalidInputError, NotFoundError


def test_the_persona_model_is_one_class_wherever_it_is_imported() -> None:
    assert AgentsPersona is Persona is OldPathPersona


def test_the_built_in_personas_are_the_five_and_each_is_whole() -> None:
    assert list(BUILTIN_PERSONAS) == ["architect", "developer", "reviewer", "researcher", "writer"]
    for name, entry in BUILTIN_PERSONAS.items():
        assert entry.builtin and entry.id is None and entry.name == name
        persona = entry.persona
        assert persona.role and persona.traits and persona.specializations
        assert persona.communication_style and entry.description
        assert len(persona.base_prompt.split()) > 120, name  # a real prompt, not a one-liner
        rendered = persona.render("Ada")
        assert rendered.startswith(f"You are Ada, {persona.role}.")
        assert persona.base_prompt.strip() in rendered
        assert re.match(PERSONA_NAME_PATTERN, name)


def test_each_declared_setting_is_a_settings_field_with_its_default() -> None:
    assert set(SETTINGS) == {
        "default_provider",
        "anthropic_model",
        "openai_model",
        "ollama_model",
        "local_model",
        "pipeline_max_running_runs",
        "metrics_token",
    }
    for name, spec in SETTINGS.items():
        assert name in Settings.model_fields, name
        assert spec.env_var == f"GATHERING_{name.upper()}"
        assert spec.description
    assert SETTINGS["pipeline_max_running_runs"].default == 1000
    assert SETTINGS["default_provider"].default is None
    assert SETTINGS["metrics_token"].secret and not SETTINGS["ollama_model"].secret


def test_values_are_checked_strictly_and_text_is_parsed() -> None:
    runs = SETTINGS["pipeline_max_running_runs"]
    assert _validated(runs, 5, from_text=False) == 5
    assert _validated(runs, " 5 ", from_text=True) == 5
    for bad in ("5", 5.0, True, 0):
        with pytest.raises(InvalidInputError, match="pipeline_max_running_runs must be a valid"):
            _validated(runs, bad, from_text=False)
    with pytest.raises(InvalidInputError, match="valid integer"):
        _validated(runs, "five", from_text=True)
    assert _validated(SETTINGS["default_provider"], " Ollama", from_text=False) == "ollama"
    with pytest.raises(InvalidInputError, match="unknown provider 'gpt'; known: "):
        _validated(SETTINGS["default_provider"], "gpt", from_text=True)


def test_a_secret_is_masked_and_never_quoted_in_an_error() -> None:
    token = SETTINGS["metrics_token"]
    with pytest.raises(InvalidInputError) as refused:
        _validated(token, "short-secret-value", from_text=True)
    assert "short-secret-value" not in f"{refused.value.message} {refused.value.hint}"
    with pytest.raises(InvalidInputError):
        _validated(token, "with a space" + "x" * 40, from_text=False)
    assert SettingValue(token, {"sha256": "ab"}, "stored").shown == MASK
    assert SettingValue(token, None, "default").shown is None
    assert SettingValue(SETTINGS["ollama_model"], "m", "stored").shown == "m"


def test_an_unknown_setting_names_the_known_ones() -> None:
    with pytest.raises(NotFoundError) as unknown:
        setting_spec("secret_key")
    assert "default_provider" in (unknown.value.hint or "")
    assert setting_spec(" Ollama_Model ").name == "ollama_model"
