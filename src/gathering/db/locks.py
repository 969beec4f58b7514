"""PostgreSQL advisory-lock keys: one stable 64-bit key per (namespace, name)."""

from __future__ import annotations

import hashlib


def advisory_key(namespace: str, name: str = "") -> int:
    """A stable signed 64-bit lock key for `name` inside `namespace` (e.g. "migrations")."""
    digest = hashlib.blake2b(f"gathering:{namespace}:{name}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)
