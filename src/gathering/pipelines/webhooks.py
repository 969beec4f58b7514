"""Webhook triggers: a pipeline whose trigger is `kind: webhook` is started by a POST that
carries its secret. The secret is made (or replaced) by its owner and shown once; only its
SHA-256 is stored, and it is compared in constant time."""

from __future__ import annotations

import hashlib
import hmac
import secrets

from gathering.db.database import Queries
from gathering.db.named_queries import queries_of
from gathering.errors import AuthenticationError, NotFoundError

_SQL = queries_of("gathering.pipelines")
SECRET_HEADER = "X-Gathering-Webhook-Secret"  # noqa: S105 - a header name


def _digest(secret: str) -> bytes:
    return hashlib.sha256(secret.encode("utf-8", "surrogatepass")).digest()


async def new_webhook_secret(db: Queries, pipeline_id: int) -> str:
    """A new secret for the pipeline's webhook (the previous one stops working)."""
    secret = "gwh_" + secrets.token_urlsafe(32)
    if await db.fetch_one(_SQL["set_webhook_secret"], pipeline_id, _digest(secret)) is None:
        raise NotFoundError(f"no pipeline {pipeline_id}")
    return secret


async def check_webhook_secret(db: Queries, pipeline_id: int, secret: str | None) -> None:
    """`AuthenticationError` unless `secret` is the pipeline's webhook secret; the same error
    for a missing pipeline, one without a secret and a wrong secret."""
    row = await db.fetch_one(_SQL["webhook_secret_hash"], pipeline_id)
    stored = bytes(row["webhook_secret_hash"]) if row and row["webhook_secret_hash"] else None
    given = _digest(secret) if secret else b""
    if stored is None or not hmac.compare_digest(stored, given):
        raise AuthenticationError(
            "invalid webhook secret",
            hint=f"send the pipeline's webhook secret in the {SECRET_HEADER} header; its owner "
            "makes one with POST /pipelines/{id}/webhook-secret",
        )
