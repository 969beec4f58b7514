"""Settings: environment names, validation, .env files."""

from __future__ import annotations

import pytest

from gathering.config import Settings, load_settings
from gathering.errors import ConfigurationError


def test_conventional_names_are_read(monkeypatch):
    monkeypatch.delenv("GATHERING_DATABASE_URL", raising=False)
    monkeypatch.setenv("DATABASE_URL", "postgresql://u@db.example/app")
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-test")
    monkeypatch.setenv("OLLAMA_HOST", "http://10.0.0.5:11434")
    settings = load_settings()
    assert settings.database_url == "postgresql://u@db.example/app"
    assert settings.anthropic_api_key is not None
    assert settings.anthropic_api_key.get_secret_value() == "sk-ant-test"
    assert settings.ollama_host == "http://10.0.0.5:11434"


def test_prefixed_names_are_read(monkeypatch):
    monkeypatch.setenv("GATHERING_PORT", "9001")
    monkeypatch.setenv("GATHERING_HOST", "::1")
    settings = load_settings()
    assert (settings.host, settings.port) == ("::1", 9001)


def test_defaults_bind_loopback(monkeypatch):
    monkeypatch.delenv("GATHERING_HOST", raising=False)
    monkeypatch.delenv("GATHERING_PORT", raising=False)
    settings = Settings(_env_file=None)
    assert settings.host == "127.0.0.1"
    assert settings.port == 8000


def test_dotenv_file_is_read(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("GATHERING_LOG_LEVEL", raising=False)
    (tmp_path / ".env").write_text("GATHERING_LOG_LEVEL=DEBUG\n")
    assert load_settings().log_level == "DEBUG"


def test_every_problem_is_one_line_naming_the_variable(monkeypatch):
    monkeypatch.setenv("GATHERING_PORT", "not-a-port")
    monkeypatch.setenv("GATHERING_DATABASE_URL", "mysql://root@localhost/db")
    monkeypatch.setenv("GATHERING_LOG_LEVEL", "LOUD")
    with pytest.raises(ConfigurationError) as info:
        load_settings()
    lines = info.value.details["problems"]
    assert len(lines) == 3
    assert any(line.startswith("GATHERING_PORT:") for line in lines)
    assert any(line.startswith("GATHERING_DATABASE_URL / DATABASE_URL:") for line in lines)
    assert any("GATHERING_LOG_LEVEL" in line for line in lines)


@pytest.mark.parametrize(
    "url",
    ["postgresql://a b", "http://example.com/db", "postgresql://u@h/db?sslmode=nonsense&x=1 y"],
)
def test_malformed_database_urls_are_refused(url):
    with pytest.raises(ConfigurationError, match="DATABASE_URL"):
        load_settings(database_url=url)


def test_blank_database_url_means_embedded():
    assert load_settings(database_url="  ").database_url is None


def test_keyword_conninfo_is_accepted():
    assert (
        load_settings(database_url="host=localhost dbname=x").database_url
        == "host=localhost dbname=x"
    )


def test_embedded_pgdata_is_under_data_dir(tmp_path):
    assert load_settings(data_dir=tmp_path).embedded_pgdata == tmp_path / "pgdata"


@pytest.mark.parametrize("given", ["warning", "Warning", " WARNING "])
def test_the_log_level_and_format_take_any_case(monkeypatch, given):
    monkeypatch.setenv("GATHERING_LOG_LEVEL", given)
    monkeypatch.setenv("GATHERING_LOG_FORMAT", "JSON")
    settings = load_settings()
    assert (settings.log_level, settings.log_format) == ("WARNING", "json")
