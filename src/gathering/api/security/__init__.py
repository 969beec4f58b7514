"""The security layer: modes, users, tokens, API keys, ownership, audit, rate limits, defenses.

Routers use `current_principal`, `require_admin`, `require_scope`, `ensure_owner` /
`not_found`, `rate_limit(tier)`, `public_route` and `viewer_allowed`; see docs/security.md.
"""

from gathering.api.security.dependencies import (
    authenticate_socket,
    current_principal,
    ensure_owner,
    not_found,
    optional_principal,
    public_route,
    rate_limit,
    require_admin,
    require_scope,
    viewer_allowed,
)
from gathering.api.security.install import install_security
from gathering.auth.principal import Principal

__all__ = [
    "Principal",
    "authenticate_socket",
    "current_principal",
    "ensure_owner",
    "install_security",
    "not_found",
    "optional_principal",
    "public_route",
    "rate_limit",
    "require_admin",
    "require_scope",
    "viewer_allowed",
]
