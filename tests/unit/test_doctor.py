"""The checks of `gathering doctor`, each under real conditions: a PATH with or without the
program, a data directory on tmp_path, a real (or unreachable) PostgreSQL and Redis."""

from __future__ import annotations

import shutil
import stat
import sys
import tomllib
from pathlib import Path

import pytest

from gathering import doctor
from gathering.config import Settings, load_settings
from gathering.doctor import (
    Check,
    CheckResult,
    check_bubblewrap,
    check_chromium,
    check_database,
    check_disk_space,
    check_local_model,
    check_node,
    check_provider_keys,
    check_python,
    check_redis,
    run_checks,
)

PYPROJECT = Path(__file__).resolve().parents[2] / "pyproject.toml"
LOCAL_MISSING = "the local extra is not installed: pip install 'gathering[local]'"


def install_program(directory: Path, name: str, prints: str = "") -> Path:
    """A real executable `name` in `directory` that prints `prints` for --version."""
    directory.mkdir(parents=True, exist_ok=True)
    program = directory / name
    program.write_text(f"#!/bin/sh\necho '{prints}'\n")
    program.chmod(program.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return program


@pytest.fixture
def only_path(monkeypatch, tmp_path):
    """PATH is a single empty directory; programs put there are all that can be found."""
    directory = tmp_path / "bin"
    directory.mkdir()
    monkeypatch.setenv("PATH", str(directory))
    return directory


# --- python -------------------------------------------------------------------------------------


def test_requires_python_is_read_from_the_package():
    declared = tomllib.loads(PYPROJECT.read_text())["project"]["requires-python"]
    assert doctor.required_python() == declared


def test_this_python_is_ok():
    result = check_python()
    assert result.status == "ok"
    assert f"{sys.version_info.major}.{sys.version_info.minor}" in result.detail
    assert not result.blocking


def test_a_python_too_old_blocks_with_the_command_to_fix_it():
    result = check_python((3, 10, 4), ">=3.11")
    assert result.status == "missing" and result.blocking
    assert "3.10.4" in result.detail and ">=3.11" in result.detail
    assert result.fix is not None and "PYTHON=python3.11" in result.fix


def test_upper_bounds_and_other_clauses():
    assert check_python((3, 13, 0), ">=3.11,<3.13").status == "missing"
    assert check_python((3, 12, 9), ">=3.11, <3.13").status == "ok"
    assert check_python((3, 12, 0), "!=3.11.2,>=3.11").status == "ok"


# --- disk ---------------------------------------------------------------------------------------


def test_disk_space_of_a_data_dir_that_does_not_exist_yet(tmp_path):
    result = check_disk_space(tmp_path / "not" / "yet")
    assert result.status == "ok"
    assert "free for" in result.detail and str(tmp_path / "not" / "yet") in result.detail


def test_little_disk_space_warns_and_none_blocks(tmp_path):
    free = shutil.disk_usage(tmp_path).free
    low = check_disk_space(tmp_path, warn_below=free + 2**30, missing_below=1)
    assert low.status == "warn" and not low.blocking
    assert low.fix is not None and "GATHERING_DATA_DIR" in low.fix
    none = check_disk_space(tmp_path, warn_below=free + 2**31, missing_below=free + 2**30)
    assert none.status == "missing" and none.blocking
    assert "only" in none.detail


# --- programs on PATH ---------------------------------------------------------------------------


def test_bubblewrap_missing_says_how_to_install_it(only_path):
    result = check_bubblewrap()
    assert result.status == "warn" and not result.blocking
    assert result.fix == "apt-get install bubblewrap"
    assert "shell" in result.detail


def test_bubblewrap_found(only_path):
    bwrap = install_program(only_path, "bwrap", "bubblewrap 0.8.0")
    result = check_bubblewrap()
    assert result.status == "ok"
    assert str(bwrap) in result.detail and "0.8.0" in result.detail


def test_node_missing_too_old_and_fine(only_path):
    assert check_node().status == "warn"
    assert "Node 20" in (check_node().fix or "")
    install_program(only_path, "node", "v18.19.1")
    old = check_node()
    assert old.status == "warn" and "v18.19.1" in old.detail
    install_program(only_path, "node", "v20.11.0")
    assert check_node().status == "ok"


def test_chromium_missing_then_found(only_path):
    missing = check_chromium()
    assert missing.status == "warn" and missing.fix == "apt-get install chromium"
    install_program(only_path, "chromium")
    assert check_chromium().status == "ok"


# --- provider keys ------------------------------------------------------------------------------


def test_keys_are_reported_set_or_not_set_never_shown():
    secret = "sk-ant-doctor-unit-0123456789"
    settings = load_settings(anthropic_api_key=secret, openai_api_key=None)
    results = {result.name: result for result in check_provider_keys(settings)}
    assert set(results) == {"anthropic key", "openai key"}
    assert results["anthropic key"].status == "ok"
    assert results["anthropic key"].detail == "ANTHROPIC_API_KEY is set"
    assert results["openai key"].status == "info"
    assert "OPENAI_API_KEY is not set" in results["openai key"].detail
    assert not any(secret in repr(result) for result in results.values())


# --- redis --------------------------------------------------------------------------------------


def test_redis_is_checked_only_when_configured():
    assert check_redis(load_settings(rate_limit_storage="memory://")) is None


def test_unreachable_redis_warns_without_its_password():
    settings = load_settings(rate_limit_storage="redis://:redis-pass-42@127.0.0.1:1/0")
    result = check_redis(settings)
    assert result is not None
    assert result.status == "warn" and not result.blocking
    assert "127.0.0.1:1" in result.detail
    assert "redis-pass-42" not in f"{result.detail} {result.fix}"


def test_reachable_redis_is_ok(redis_url):
    result = check_redis(load_settings(rate_limit_storage=redis_url))
    assert result is not None and result.status == "ok"


# --- database -----------------------------------------------------------------------------------


def test_a_reachable_database_and_its_pgvector(fresh_database_url):
    database, pgvector = check_database(load_settings(database_url=fresh_database_url))
    assert database.status == "ok" and not database.blocking
    assert "PostgreSQL" in database.detail and "pending" in database.detail
    assert pgvector.name == "pgvector" and pgvector.status == "ok"
    assert "available" in pgvector.detail


def test_an_unreachable_database_blocks_without_showing_its_password():
    settings = load_settings(
        database_url="postgresql://ada:pg-pass-77@127.0.0.1:1/app", db_connect_timeout=2
    )
    database, pgvector = check_database(settings)
    assert database.status == "missing" and database.blocking
    assert "127.0.0.1:1" in database.detail
    assert "pg-pass-77" not in f"{database.detail} {database.fix}"
    assert database.fix and "DATABASE_URL" in database.fix
    assert pgvector.status == "warn" and not pgvector.blocking


# --- local model --------------------------------------------------------------------------------


def test_without_the_local_extra_the_fix_is_the_pip_command(monkeypatch):
    monkeypatch.setitem(sys.modules, "llama_cpp", None)
    result = check_local_model(load_settings())
    assert result.status == "warn" and not result.blocking
    assert result.fix is not None
    assert "pip install 'gathering[local]'" in result.fix and "GGML_NATIVE=OFF" in result.fix


def test_a_configured_model_file_that_does_not_exist(tmp_path):
    pytest.importorskip("llama_cpp", reason=LOCAL_MISSING)
    result = check_local_model(load_settings(local_model_path=tmp_path / "none.gguf"))
    assert result.status == "warn"
    assert "does not exist" in result.detail
    assert result.fix and "GATHERING_LOCAL_MODEL_PATH" in result.fix


@pytest.mark.slow
def test_the_bundled_model_loads_with_its_context():
    pytest.importorskip("llama_cpp", reason=LOCAL_MISSING)
    result = check_local_model(load_settings(local_context=2048))
    assert result.status == "ok", result
    assert "smollm2-135m-instruct" in result.detail
    assert "context 2048 tokens" in result.detail and "trained for 8192" in result.detail


# --- running ------------------------------------------------------------------------------------


def _broken(settings: Settings) -> CheckResult:
    raise RuntimeError("the probe\nfell over")


def test_a_check_that_raises_becomes_a_missing_line():
    results = run_checks(
        load_settings(),
        [
            Check("fine", lambda settings: CheckResult("fine", "ok", "yes")),
            Check("optional", _broken),
            Check("vital", _broken, critical=True),
        ],
    )
    fine, optional, vital = results
    assert fine.status == "ok"
    assert optional.status == "missing" and not optional.blocking
    assert optional.detail == "the check failed: RuntimeError: the probe fell over"
    assert vital.blocking
    assert doctor.blocked(results)
    assert doctor.as_json(results)["blocked"] is True
    assert not doctor.blocked(results[:2])


def test_run_checks_says_which_check_starts():
    started: list[str] = []
    run_checks(
        load_settings(),
        [Check("bubblewrap", lambda settings: check_bubblewrap())],
        on_start=started.append,
    )
    assert started == ["bubblewrap"]


def test_the_verdict_names_what_blocks():
    blocking = CheckResult("database", "missing", "down", fix="start it", blocking=True)
    warning = CheckResult("node", "warn", "old", fix="install Node 20")
    assert "stop `make run`: database" in doctor.verdict([blocking, warning]).plain
    assert "nothing stops `make run`; 1 warning" in doctor.verdict([warning]).plain
    assert "everything" in doctor.verdict([CheckResult("python", "ok", "3.11")]).plain
