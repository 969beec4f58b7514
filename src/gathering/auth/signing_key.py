"""The JWT signing key: `SECRET_KEY`, or one generated once and kept in the data directory."""

from __future__ import annotations

import contextlib
import os
import secrets
import stat
from pathlib import Path

import structlog

from gathering.config import Settings
from gathering.errors import ConfigurationError

log = structlog.get_logger(__name__)

KEY_FILE_NAME = "secret_key"
MIN_KEY_BYTES = 32


def key_file(settings: Settings) -> Path:
    """Where a generated key is kept."""
    return settings.data_dir / KEY_FILE_NAME


def _read_key(path: Path) -> bytes:
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        log.warning("the secret key file is readable by others; restricting it", path=str(path))
        path.chmod(0o600)
    key = path.read_bytes().strip()
    if len(key) < MIN_KEY_BYTES:
        raise ConfigurationError(
            f"the secret key in {path} is shorter than {MIN_KEY_BYTES} bytes",
            hint="delete the file to have a new one generated, or set SECRET_KEY",
        )
    return key


def _create_key(path: Path) -> None:
    """Write a new key atomically: a reader never sees a partial file, and the first writer wins."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{secrets.token_hex(6)}")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(secrets.token_urlsafe(64).encode())
            out.flush()
            os.fsync(out.fileno())
        with contextlib.suppress(FileExistsError):  # another process created it first
            os.link(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


def load_signing_key(settings: Settings) -> bytes:
    """The configured key, else the stored one, else a new stored one (blocking file I/O)."""
    if settings.secret_key is not None:
        return settings.secret_key.get_secret_value().encode()
    if settings.auth_required and settings.database_url:
        # The settings validator refuses this already; kept for settings built without it.
        raise ConfigurationError(
            "SECRET_KEY is required with GATHERING_AUTH=required and an external database",
            hint="set SECRET_KEY (at least 32 bytes) to the same value on every instance",
        )
    path = key_file(settings)
    try:
        if not path.exists():
            _create_key(path)
            log.info("generated a secret key for signing tokens", path=str(path))
        return _read_key(path)
    except OSError as exc:
        raise ConfigurationError(
            f"cannot read or create the secret key file {path}: {exc.strerror or exc}",
            hint="make the data directory writable (GATHERING_DATA_DIR) or set SECRET_KEY",
        ) from None
