"""`gathering providers list|add|remove|test` and `gathering models list|price`: the catalog from
the command line, on a real database; the key read from standard input, stored encrypted and
shown masked, the test call made at the wire stub."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from gathering.cli import app
from gathering.config import get_settings
from gathering.testing import LLMStubServer

runner = CliRunner()
KEY = "sk-cli-provider-key-0123456789-LAST"


@pytest.fixture
def catalog_env(monkeypatch: pytest.MonkeyPatch, migrated_database_url: str) -> str:
    monkeypatch.setenv("GATHERING_DATABASE_URL", migrated_database_url)
    for name in ("OPENAI_API_KEY", "GATHERING_OPENAI_API_KEY", "OPENAI_BASE_URL"):
        monkeypatch.delenv(name, raising=False)
    get_settings.cache_clear()
    yield migrated_database_url
    get_settings.cache_clear()


def invoke(*args: str, input: str | None = None) -> tuple[int, str]:
    result = runner.invoke(app, list(args), input=input, env={"COLUMNS": "200"})
    return result.exit_code, result.output


def test_providers_from_the_command_line(catalog_env: str, llm_stub: LLMStubServer) -> None:
    base_url = f"{llm_stub.url}/v1"
    code, out = invoke(
        "providers",
        "add",
        "openai",
        "--kind",
        "openai",
        "--base-url",
        base_url,
        "--key-stdin",
        input=KEY + "\n",
    )
    assert code == 0, out
    assert "added provider openai" in out and "sk-...LAST" in out and KEY not in out
    code, out = invoke("providers", "list")
    assert code == 0 and "sk-...LAST" in out and "catalog" in out and KEY not in out
    code, out = invoke("providers", "test", "openai", "--model", "gpt-4o")
    assert code == 0 and "ok: openai answered with gpt-4o" in out, out
    assert llm_stub.last.headers["authorization"] == f"Bearer {KEY}"
    llm_stub.add_json({"error": {"message": "Incorrect API key provided"}}, status=401)
    code, out = invoke("providers", "test", "openai")
    assert code == 1 and "provider_authentication_failed" in out and KEY not in out
    code, out = invoke("providers", "add", "openai", "--kind", "openai")
    assert code == 1 and "exists already" in out
    code, out = invoke("providers", "add", "Bad Name", "--kind", "openai")
    assert code == 1 and "not a provider name" in out
    code, out = invoke("providers", "add", "x", "--kind", "openai", "--key-stdin", input="\n")
    assert code == 1 and "held no key" in out
    code, out = invoke("providers", "remove", "openai", "--yes")
    assert code == 0 and "removed provider openai" in out
    code, out = invoke("providers", "remove", "openai", "--yes")
    assert code == 1 and "not found" in out


def test_models_from_the_command_line(catalog_env: str) -> None:
    code, out = invoke("models", "list", "--provider", "anthropic")
    assert code == 0 and "claude-sonnet-4-5" in out and "gpt-4o" not in out
    code, out = invoke("models", "price", "openai", "gpt-4o")
    assert code == 0 and "input 2.5, output 10, cached input 1.25" in out
    assert "context window 128000 (table), max output 16384" in out
    code, out = invoke("models", "price", "openai", "gpt-4o", "--input", "1", "--output", "3")
    assert code == 0 and "input 1, output 3, cached input as input" in out
    code, out = invoke("models", "list", "--provider", "openai")
    assert code == 0 and "catalog" in out
    code, out = invoke("models", "price", "openai", "gpt-4o", "--input", "1")
    assert code == 1 and "go together" in out
    code, out = invoke("models", "price", "openai", "gpt-4o", "--reset")
    assert code == 0 and "input 2.5" in out
    code, out = invoke("models", "price", "openai", "gpt-4o", "--reset")
    assert code == 1 and "no override" in out
    code, out = invoke("models", "price", "openai-compatible", "mystery")
    assert code == 0 and "unpriced" in out
    code, out = invoke("models", "list", "--provider", "no-such-provider")
    assert code == 1 and "no models of provider 'no-such-provider'" in out
    code, out = invoke(
        "models", "price", "openai", "gpt-4o", "--input", "123456.789", "--output", "3"
    )
    assert code == 0 and "input 123456.789, output 3" in out  # prices are shown as given
    code, out = invoke("models", "list", "--provider", "openai")
    assert "123456.789" in out
