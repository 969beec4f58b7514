"""Provider keys at rest: Fernet under a key derived from the server's secret. Another secret
cannot decrypt a stored key (a clear, typed error); the row in PostgreSQL holds no plaintext;
a server without SECRET_KEY uses the key file of its data directory; only a mask is shown."""

from __future__ import annotations

from pathlib import Path

import pytest

from gathering.auth.accounts import CLI_ACTOR
from gathering.catalog.crypto import (
    decrypt_key,
    encrypt_key,
    key_cipher,
    mask_key,
    server_cipher,
)
from gathering.catalog.providers import add_provider, agent_provider_config
from gathering.config import get_settings, load_settings
from gathering.db import Database
from gathering.errors import ProviderKeyUnreadableError

KEY = "sk-proj-unit-test-key-0123456789-abcd"


def test_a_key_decrypts_with_its_secret_only() -> None:
    token = encrypt_key(key_cipher(b"a" * 48), KEY)
    assert KEY.encode() not in token
    assert decrypt_key(key_cipher(b"a" * 48), token, "p") == KEY
    with pytest.raises(ProviderKeyUnreadableError, match="cannot be decrypted") as caught:
        decrypt_key(key_cipher(b"b" * 48), token, "p")
    assert KEY not in str(caught.value) and "SECRET_KEY" in (caught.value.hint or "")
    with pytest.raises(ProviderKeyUnreadableError):
        decrypt_key(key_cipher(b"a" * 48), b"not a token", "p")


def test_two_encryptions_of_one_key_differ() -> None:
    cipher = key_cipher(b"a" * 48)
    assert encrypt_key(cipher, KEY) != encrypt_key(cipher, KEY)  # random IV, timestamp


def test_only_a_mask_is_shown() -> None:
    assert mask_key(KEY) == "sk-...abcd"
    assert mask_key("short-key-12345") == "..."


async def test_without_secret_key_the_data_directorys_key_file_is_the_secret(
    tmp_path: Path,
) -> None:
    first = await server_cipher(load_settings(data_dir=tmp_path / "one"))
    again = await server_cipher(load_settings(data_dir=tmp_path / "one"))
    other = await server_cipher(load_settings(data_dir=tmp_path / "two"))
    token = encrypt_key(first, KEY)
    assert decrypt_key(again, token, "p") == KEY
    with pytest.raises(ProviderKeyUnreadableError):
        decrypt_key(other, token, "p")
    configured = await server_cipher(load_settings(data_dir=tmp_path, secret_key="s" * 64))
    assert decrypt_key(key_cipher(b"s" * 64), encrypt_key(configured, KEY), "p") == KEY


async def test_the_stored_row_holds_no_plaintext(db: Database) -> None:
    record = await add_provider(
        db, CLI_ACTOR, "openai", "openai-compatible", base_url="http://127.0.0.1:1/v1", key=KEY
    )
    row = await db.fetch_one(
        "SELECT convert_from(key_ciphertext, 'SQL_ASCII') AS sealed, key_mask,"
        " row_to_json(p)::text AS whole FROM catalog.providers p WHERE id = $1",
        record.id,
    )
    assert row is not None and row["key_mask"] == "sk-...abcd"
    for text in (row["sealed"], row["whole"]):
        assert KEY not in text and KEY[3:-4] not in text
    audit = await db.fetch_val("SELECT string_agg(details::text, ' ') FROM auth.audit_log")
    assert KEY not in audit
    # The server's own secret gives the key back to the agent that uses the provider.
    assert (await agent_provider_config(db, "openai"))["api_key"] == KEY


async def test_a_key_stored_under_another_secret_fails_the_agents_call_clearly(
    db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("OPENAI_API_KEY", "GATHERING_OPENAI_API_KEY"):
        monkeypatch.delenv(name, raising=False)  # it would win: the stored key goes unread
    monkeypatch.setenv("SECRET_KEY", "x" * 64)
    get_settings.cache_clear()
    try:
        await add_provider(db, CLI_ACTOR, "openai", "openai", key=KEY)
        monkeypatch.setenv("SECRET_KEY", "y" * 64)
        get_settings.cache_clear()
        with pytest.raises(ProviderKeyUnreadableError, match="'openai'"):
            await agent_provider_config(db, "openai")
    finally:
        monkeypatch.delenv("SECRET_KEY")
        get_settings.cache_clear()
