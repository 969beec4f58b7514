"""Argon2id password hashing, off the event loop, with a dummy verification for unknown users."""

from __future__ import annotations

import asyncio
import functools
import secrets

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from gathering.errors import InvalidInputError

MIN_PASSWORD_LENGTH = 12
# Argon2 cost grows with the input; a cap keeps a huge "password" from being a CPU weapon.
MAX_PASSWORD_LENGTH = 1024

_hasher = PasswordHasher()  # argon2id with the RFC 9106 low-memory parameters


def check_password_policy(password: str) -> None:
    """Raise `InvalidInputError` when `password` is too short, too long or has a NUL byte."""
    if len(password) < MIN_PASSWORD_LENGTH:
        raise InvalidInputError(f"a password needs at least {MIN_PASSWORD_LENGTH} characters")
    if len(password) > MAX_PASSWORD_LENGTH:
        raise InvalidInputError(f"a password has at most {MAX_PASSWORD_LENGTH} characters")
    if "\x00" in password:
        raise InvalidInputError("a password cannot contain NUL characters")


def generate_password() -> str:
    """A random password for a generated account (about 128 bits)."""
    return secrets.token_urlsafe(16)


async def hash_password(password: str) -> str:
    """The argon2id hash of `password` (computed in a worker thread)."""
    check_password_policy(password)
    return await asyncio.to_thread(_hasher.hash, password)


@functools.lru_cache(maxsize=1)
def _dummy_hash() -> str:
    return _hasher.hash(secrets.token_urlsafe(16))


def _verify(stored_hash: str | None, password: str) -> bool:
    too_long = len(password) > MAX_PASSWORD_LENGTH
    if too_long:
        password = password[:MAX_PASSWORD_LENGTH]  # no such password can exist; still do the work
    if stored_hash is None or too_long:
        # Same work as for a real account, so response time does not reveal which emails exist.
        try:
            _hasher.verify(_dummy_hash(), password)
        except VerificationError:
            pass
        return False
    try:
        return _hasher.verify(stored_hash, password)
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


async def verify_password(stored_hash: str | None, password: str) -> bool:
    """True when `password` matches `stored_hash`; a None hash costs the same and is False."""
    return await asyncio.to_thread(_verify, stored_hash, password)


def needs_rehash(stored_hash: str) -> bool:
    """True when the hash was made with weaker parameters than today's."""
    try:
        return _hasher.check_needs_rehash(stored_hash)
    except InvalidHashError:
        return True
