"""One-time WebSocket tickets: a browser's way to open `/ws` without a token in the URL.

A browser cannot set headers on a WebSocket handshake. Rather than put its access token in the
query string (where proxies and histories keep it), it asks `POST /auth/ws-ticket` for a
ticket and opens `/ws?ticket=<ticket>`. A ticket is 256 random bits, lives `WS_TICKET_TTL`
seconds, and opens one socket on any instance: the rows are in `auth.ws_tickets` and one
`DELETE ... RETURNING` spends a ticket, so two instances cannot both accept it. Only a SHA-256
of the ticket is stored (random secrets need no slow hash; see `api_keys.py`).

A ticket stands for the credential that asked for it and carries no more (`TicketGrant`):
the access token's jti and session, or the API key, and that credential's scopes. `consume`
refuses a ticket of a user disabled meanwhile; the caller still checks that the credential
itself was not revoked (`gathering.api.security.dependencies.authenticate_socket`).

    store = WsTicketStore(db)
    issued = await store.issue(principal)       # issued.ticket is shown once
    grant = await store.consume(issued.ticket)  # its TicketGrant; None the second time
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from typing import Literal

from gathering.auth.principal import Principal
from gathering.db import Database
from gathering.db.named_queries import queries_of
from gathering.errors import InvalidInputError

WS_TICKET_TTL = 30  # seconds
MAX_TICKET_LENGTH = 128  # longer input is not one of ours; it is not even hashed
_SQL = queries_of("gathering.auth")


def _digest(ticket: str) -> str:
    return hashlib.sha256(ticket.encode()).hexdigest()


@dataclass(frozen=True)
class TicketGrant:
    """The credential a ticket stands for: an access token (its jti, session and expiry) or
    an API key, with its scopes. Whoever accepts it checks that credential is still valid."""

    user_id: int
    method: Literal["token", "api_key"]
    scopes: frozenset[str]
    token_id: str | None = None
    family_id: str | None = None
    token_expires_at: int | None = None
    api_key_id: int | None = None

    @classmethod
    def of(cls, principal: Principal) -> TicketGrant:
        """The grant of `principal`'s credential; `InvalidInputError` for the local owner."""
        if principal.method == "token":
            if (
                principal.token_id is None
                or principal.family_id is None
                or principal.token_expires_at is None
            ):
                raise InvalidInputError("a token principal without its token's id and session")
            method: Literal["token", "api_key"] = "token"
        elif principal.method == "api_key":
            if principal.api_key_id is None:
                raise InvalidInputError("an API key principal without its key id")
            method = "api_key"
        else:
            raise InvalidInputError(f"no tickets for {principal.method!r} principals")
        return cls(
            user_id=principal.user_id,
            method=method,
            scopes=principal.scopes,
            token_id=principal.token_id,
            family_id=principal.family_id,
            token_expires_at=principal.token_expires_at,
            api_key_id=principal.api_key_id,
        )


@dataclass(frozen=True)
class IssuedTicket:
    """A new ticket (shown once) and how many seconds it lives."""

    ticket: str
    expires_in: int


class WsTicketStore:
    """Queries on `auth.ws_tickets`."""

    def __init__(self, db: Database) -> None:
        self.db = db

    async def issue(self, principal: Principal, *, ttl: int = WS_TICKET_TTL) -> IssuedTicket:
        """A ticket that opens one socket as `principal`, for `ttl` seconds.

        `principal` must come from an access token or an API key (the local owner needs no
        ticket). Expired tickets are deleted on the way (they can only accumulate for `ttl`).
        """
        grant = TicketGrant.of(principal)
        if ttl < 1:
            raise InvalidInputError(f"ttl must be at least 1 second, got {ttl}")
        ticket = secrets.token_urlsafe(32)
        await self.db.execute(
            _SQL["insert_ws_ticket"],
            _digest(ticket),
            grant.user_id,
            grant.method,
            sorted(grant.scopes),
            grant.token_id,
            grant.family_id,
            grant.token_expires_at,
            grant.api_key_id,
            ttl,
        )
        return IssuedTicket(ticket, ttl)

    async def consume(self, presented: str) -> TicketGrant | None:
        """What a live ticket stands for, spending it; None when it is unknown, spent or
        expired, or when its user is disabled (or deleted) now. A presented ticket is gone
        afterwards, whether or not it was still valid."""
        if not presented or len(presented) > MAX_TICKET_LENGTH:
            return None
        row = await self.db.fetch_one(_SQL["consume_ws_ticket"], _digest(presented))
        if row is None or not row["live"] or not row["user_active"]:
            return None
        return TicketGrant(
            user_id=row["user_id"],
            method=row["auth_method"],
            scopes=frozenset(row["scopes"]),
            token_id=row["token_id"],
            family_id=row["family_id"],
            token_expires_at=row["token_expires_at"],
            api_key_id=row["api_key_id"],
        )
