"""A DATABASE_URL password with an unencoded '@' is half shown by every error and log."""
from __future__ import annotations

import io
import logging

import pytest
import structlog

from gathering.config import get_settings, load_settings
from gathering.db import Database, redact_url
from gathering.errors import DatabaseUnavailableError
from gathering.observability import configure_logging

SECRET_TAIL = "horsebatterystaple"
URL = f"postgresql://bob:correct@{SECRET_TAIL}@127.0.0.1:1/app"  # password: correct@horsebatterystaple


def test_redact_url_shows_the_password_after_its_first_at_sign():
    shown = redact_url(URL)
    print(shown)
    # Expected: no part of the password; observed: postgresql://bob@horsebatterystaple@127.0.0.1:1/app
    assert SECRET_TAIL not in shown, shown


async def test_connection_error_and_its_log_line_show_the_password_tail():
    configure_logging(get_settings().model_copy(update={"log_format": "json"}))
    written = io.StringIO()
    handler = logging.getLogger().handlers[0]
    handler.setStream(written)
    try:
        database = Database(url=URL, settings=load_settings(db_connect_timeout=2))
        with pytest.raises(DatabaseUnavailableError) as failed:
            await database.connect()
        structlog.get_logger("attack").error("database down", error=failed.value.message)
    finally:
        logging.getLogger().handlers.clear()
    print(failed.value.message)
    print(written.getvalue())
    leaks = [where for where, text in (("error", str(failed.value)), ("log", written.getvalue()))
             if SECRET_TAIL in text]
    assert not leaks, f"password tail {SECRET_TAIL!r} shown in: {leaks}"
