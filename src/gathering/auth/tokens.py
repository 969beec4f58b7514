"""JWT access and refresh tokens: issue, and decode with only the configured algorithm."""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass
from typing import Any, Literal

import jwt

from gathering.errors import AuthenticationError

TokenType = Literal["access", "refresh"]
ISSUER = "gathering"
REQUIRED_CLAIMS = ("jti", "sub", "exp", "iat", "type", "fam")

# One message for every bad token: expired, forged, wrong type, revoked, unknown user...
INVALID_CREDENTIALS = "invalid or expired credentials"


def invalid_credentials() -> AuthenticationError:
    """The single 401 error every invalid-credential case raises (identical bodies)."""
    return AuthenticationError(INVALID_CREDENTIALS)


def new_token_id() -> str:
    """A random, unguessable token or family id."""
    return secrets.token_urlsafe(24)


@dataclass(frozen=True)
class TokenClaims:
    """The verified claims of a token."""

    jti: str
    user_id: int
    token_type: TokenType
    family_id: str
    issued_at: int
    expires_at: int


@dataclass(frozen=True)
class IssuedToken:
    """A freshly signed token and its claims."""

    token: str
    claims: TokenClaims


class TokenService:
    """Signs and verifies tokens with one key and one HMAC algorithm."""

    def __init__(self, key: bytes, *, algorithm: str, access_ttl: int, refresh_ttl: int) -> None:
        self._key = key
        self.algorithm = algorithm
        self.ttl: dict[TokenType, int] = {"access": access_ttl, "refresh": refresh_ttl}

    def issue(
        self, user_id: int, token_type: TokenType, family_id: str, *, now: int | None = None
    ) -> IssuedToken:
        """A signed token of `token_type` for `user_id` in session `family_id`."""
        issued_at = int(time.time()) if now is None else now
        claims = TokenClaims(
            jti=new_token_id(),
            user_id=user_id,
            token_type=token_type,
            family_id=family_id,
            issued_at=issued_at,
            expires_at=issued_at + self.ttl[token_type],
        )
        payload: dict[str, Any] = {
            "iss": ISSUER,
            "sub": str(user_id),
            "jti": claims.jti,
            "type": token_type,
            "fam": family_id,
            "iat": issued_at,
            "nbf": issued_at,
            "exp": claims.expires_at,
        }
        token = jwt.encode(payload, self._key, algorithm=self.algorithm)
        return IssuedToken(token, claims)

    def decode(self, token: str, expected_type: TokenType) -> TokenClaims:
        """The claims of a valid token of `expected_type`; anything else is the same 401."""
        try:
            header = jwt.get_unverified_header(token)
            if header.get("alg") != self.algorithm:
                raise invalid_credentials()
            payload = jwt.decode(
                token,
                self._key,
                algorithms=[self.algorithm],
                issuer=ISSUER,
                options={"require": list(REQUIRED_CLAIMS)},
            )
        except jwt.PyJWTError:
            raise invalid_credentials() from None
        try:
            claims = TokenClaims(
                jti=_text(payload["jti"]),
                user_id=int(_text(payload["sub"])),
                token_type=payload["type"],
                family_id=_text(payload["fam"]),
                issued_at=int(payload["iat"]),
                expires_at=int(payload["exp"]),
            )
        except (TypeError, ValueError):
            raise invalid_credentials() from None
        if claims.token_type != expected_type:
            raise invalid_credentials()
        return claims


def _text(value: Any) -> str:
    if not isinstance(value, str) or not value or len(value) > 256:
        raise ValueError("not a token identifier")
    return value
