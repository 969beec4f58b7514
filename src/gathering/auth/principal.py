"""Who a request acts as: a user (by token), a service key, or the single-user local owner."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from gathering.auth.api_keys import scope_allows
from gathering.auth.users import Role

AuthMethod = Literal["local", "token", "api_key"]
ALL_SCOPES = frozenset({"*"})


def effective_role(role: Role, scopes: frozenset[str]) -> Role:
    """The role a credential acts with: an API key of an admin is one only with `admin`."""
    if role == "admin" and not scope_allows(scopes, "admin"):
        return "member"
    return role


@dataclass(frozen=True)
class Principal:
    """The authenticated caller of a request.

    `role` is what the request may do: `admin`, `member`, or `viewer` (read-only). `is_admin`
    is `role == "admin"`: `is_admin=True` makes the role `admin`, `is_admin=False` turns an
    `admin` role into `member` (so `replace(principal, is_admin=False)` demotes).
    """

    user_id: int
    email: str
    is_admin: bool
    method: AuthMethod
    role: Role = "member"
    scopes: frozenset[str] = ALL_SCOPES
    token_id: str | None = None
    family_id: str | None = None
    token_expires_at: int | None = None
    api_key_id: int | None = None

    def __post_init__(self) -> None:
        # `is_admin` decides between admin and not; `role` between member and viewer.
        if self.is_admin:
            object.__setattr__(self, "role", "admin")
        elif self.role == "admin":
            object.__setattr__(self, "role", "member")

    @property
    def read_only(self) -> bool:
        """True for a viewer: safe methods only, besides its own logout and password."""
        return self.role == "viewer"

    def has_scope(self, scope: str) -> bool:
        """True when this caller may do `scope` (users by token or locally have every scope)."""
        return scope_allows(self.scopes, scope)

    def owns(self, owner_id: int | None) -> bool:
        """True when a resource owned by `owner_id` is visible to this caller."""
        return self.is_admin or owner_id == self.user_id

    @property
    def owner_filter(self) -> int | None:
        """For list queries: None for admins (everything), else the caller's user id.

        `WHERE ($1::bigint IS NULL OR owner_id = $1)` with this as `$1`.
        """
        return None if self.is_admin else self.user_id
