"""What `gathering mcp serve` holds while it runs, and who calls it.

The process keeps what an API instance keeps for a chat turn: an `AppState` (the database,
the event bus, the live agents, the approvals duty) and a `SecurityState` (the account stores,
the signing key, the per-user turn admission and the rate limiter). A caller is a `Principal`,
found exactly as the API finds one: the local owner in single-user mode, else the user of an
access token or of an API key (revoked, expired, forged or disabled: refused).
"""

from __future__ import annotations

from dataclasses import replace

from gathering.agents import Agent, AgentRecord, PostgresAgentStore
from gathering.api.approval_duty import ApprovalDutyComponent
from gathering.api.security.dependencies import principal_from_api_key, principal_from_token
from gathering.api.security.ratelimit import rate_limited
from gathering.api.security.spending import TurnSlot
from gathering.api.security.state import SecurityState
from gathering.api.state import AppState
from gathering.auth.api_keys import KEY_MARKER
from gathering.auth.principal import Principal
from gathering.config import Settings
from gathering.db import Database
from gathering.errors import (
    AuthenticationError,
    NotFoundError,
    PermissionDeniedError,
    StartupError,
)

API_KEY_VARIABLE = "GATHERING_API_KEY"
LIVE_AGENTS = 256  # agents kept in memory (as the API keeps them), least recently used leave


class McpRuntime:
    """The database, event bus, duties and account stores of one `gathering mcp serve`."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.state = AppState(settings)
        self.security = SecurityState(settings, self.state)
        # A turn that waits for a person's approval goes on, once answered, on whichever
        # instance holds this duty: this process counts as an instance like any API server.
        admit = self.security.turn_admission.admit_user
        self.state.lifecycle.add(ApprovalDutyComponent(self.state, admit=admit))

    async def start(self) -> None:
        """Connect (and migrate, unless GATHERING_AUTO_MIGRATE=false) and start the duties."""
        await self.state.lifecycle.start()

    async def stop(self) -> None:
        """Stop the duties, let running turns finish, close the database."""
        await self.state.lifecycle.stop()
        await self.security.close()

    async def database(self) -> Database:
        return await self.state.database()

    # --- callers ------------------------------------------------------------------------------

    async def principal_for(self, credential: str | None) -> Principal:
        """The caller a credential names: the local owner in single-user mode (no credential
        needed), else the user of an API key (`gth_...`) or of an access token."""
        if not self.settings.auth_required:
            return await self.security.local_owner()
        if not credential:
            raise AuthenticationError(
                "authentication required",
                hint="send `Authorization: Bearer <access token or API key>`",
            )
        if credential.startswith(f"{KEY_MARKER}_"):
            return await principal_from_api_key(self.security, credential)
        return await principal_from_token(self.security, credential)

    async def stdio_principal(self, credential: str | None) -> Principal:
        """The caller of a stdio server, checked once at start: refuses to start in
        multi-user mode without a valid API key in GATHERING_API_KEY."""
        if not self.settings.auth_required:
            return await self.security.local_owner()
        if not credential:
            raise StartupError(
                f"multi-user mode (GATHERING_AUTH=required): the stdio server acts for the "
                f"user of an API key, and {API_KEY_VARIABLE} is not set",
                hint=f"create a key (POST /auth/api-keys) and set it as {API_KEY_VARIABLE} in "
                "the MCP client's configuration of this server (its `env`)",
            )
        try:
            return await self.principal_for(credential)
        except AuthenticationError:
            raise StartupError(
                f"the API key in {API_KEY_VARIABLE} is not valid: unknown, revoked, expired, "
                "or its user is disabled",
                hint="create a new key (POST /auth/api-keys) and put it in the MCP client's "
                "configuration of this server",
            ) from None

    # --- what a tool may do -------------------------------------------------------------------

    @staticmethod
    def require_scope(principal: Principal, scope: str) -> None:
        """Refuse a caller whose API key lacks `scope` (users by token have every scope)."""
        if not principal.has_scope(scope):
            raise PermissionDeniedError(
                f"this API key lacks the scope {scope!r}",
                hint=f"create a key with {scope!r} (or `*`) for this MCP server",
            )

    @staticmethod
    def require_writer(principal: Principal) -> None:
        """Refuse a viewer (read-only role), as the API refuses its unsafe requests."""
        if principal.read_only:
            raise PermissionDeniedError(
                "a viewer has read-only access",
                hint="ask an administrator for the member role (PUT /users/{id}/role)",
            )

    async def own_agent(self, principal: Principal, ref: str) -> AgentRecord:
        """The caller's agent `ref` (id or name). Another user's agent is "not found", for
        administrators too: over MCP everyone acts on their own agents only."""
        store = PostgresAgentStore(await self.database())
        try:
            return await store.load_agent(ref.strip(), owner_id=principal.user_id)
        except NotFoundError:
            raise NotFoundError(
                f"agent {ref!r} not found", hint="the tool list_agents names your agents"
            ) from None

    async def live_agent(self, record: AgentRecord) -> Agent:
        """This process's `Agent` for `record`, kept (as the API keeps it) so its provider
        client is reused; turns are serialised by agent id in the database, so replacing or
        evicting this object never lets two run at once."""
        live = self.state.agents
        assert record.id is not None
        agent = live.get(record.id)
        if agent is None or agent.record() != replace(record, created_at=None):
            agent = Agent.from_record(record, store=PostgresAgentStore(await self.database()))
            agent.event_bus = await self.state.event_bus()
            live[record.id] = agent
        live.move_to_end(record.id)
        while len(live) > LIVE_AGENTS:
            live.popitem(last=False)
        return agent

    async def admit_turn(self, principal: Principal) -> TurnSlot:
        """Count a chat turn against the `chat` rate tier and the user's running turns, as the
        API's chat routes do; `RateLimitedError` past either."""
        settings = self.settings
        if settings.rate_limit_enabled:
            status = await self.security.limiter().hit(
                self.security.tiers["chat"], "tier", "chat", "MCP chat", f"user:{principal.user_id}"
            )
            if status is not None and not status.allowed:
                raise rate_limited(status, "chat turns")
        return self.security.turn_admission.admit(principal)
