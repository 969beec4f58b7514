"""The error hierarchy of GatheRing.

Every error the framework raises on purpose is a `GatheringError`. Each class carries a
machine-readable `code`, the HTTP status the API answers with, and an optional `hint` that
tells the user what to do about it.
"""

from __future__ import annotations

from typing import Any


class GatheringError(Exception):
    """Base class of every error GatheRing raises on purpose."""

    code: str = "gathering_error"
    http_status: int = 500

    def __init__(
        self, message: str, *, hint: str | None = None, details: dict[str, Any] | None = None
    ) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint
        self.details: dict[str, Any] = details or {}

    def __str__(self) -> str:
        return f"{self.message} ({self.hint})" if self.hint else self.message

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready description of the error, without any stack trace."""
        body: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.hint:
            body["hint"] = self.hint
        if self.details:
            body["details"] = self.details
        return body


# --- configuration and start-up -------------------------------------------------------------


class ConfigurationError(GatheringError):
    """Settings are missing or invalid; start-up cannot go on."""

    code = "configuration_error"


class StartupError(GatheringError):
    """The process cannot start (port in use, data directory not writable, ...)."""

    code = "startup_error"


# --- database ---------------------------------------------------------------------------------


class DatabaseError(GatheringError):
    """A database operation failed."""

    code = "database_error"


class DatabaseUnavailableError(DatabaseError):
    """The database cannot be reached."""

    code = "database_unavailable"
    http_status = 503


class DatabaseBusyError(DatabaseError):
    """A transient conflict in the database (a deadlock, a serialization failure): the same
    request again succeeds."""

    code = "database_busy"
    http_status = 503


class MigrationError(DatabaseError):
    """A schema migration failed or the schema is not in the expected state."""

    code = "migration_error"
    http_status = 503


class FeatureUnavailableError(GatheringError):
    """A feature needs something this installation lacks (e.g. the pgvector extension)."""

    code = "feature_unavailable"
    http_status = 501


# --- requests -------------------------------------------------------------------------------


class InvalidInputError(GatheringError, ValueError):
    """Input was rejected; the message says which part and why. Also a `ValueError`."""

    code = "invalid_input"
    http_status = 422


class NotFoundError(GatheringError):
    """The requested resource does not exist (or is not visible to the caller)."""

    code = "not_found"
    http_status = 404


class ConflictError(GatheringError):
    """The request conflicts with the current state of a resource."""

    code = "conflict"
    http_status = 409


class ShuttingDownError(GatheringError):
    """The server is draining and accepts no new work."""

    code = "shutting_down"
    http_status = 503


# --- security -------------------------------------------------------------------------------


class AuthenticationError(GatheringError):
    """Credentials are missing, invalid, expired or revoked."""

    code = "unauthenticated"
    http_status = 401


class PermissionDeniedError(GatheringError):
    """The caller is authenticated but may not do this."""

    code = "permission_denied"
    http_status = 403


class _RetryAfter(GatheringError):
    """An error that tells the caller how many seconds to wait (`retry_after`) before again."""

    def __init__(
        self, message: str, *, retry_after: float | None = None, hint: str | None = None
    ) -> None:
        super().__init__(message, hint=hint, details={"retry_after": retry_after})
        self.retry_after = retry_after


class RateLimitedError(_RetryAfter):
    """Too many requests; `retry_after` says how many seconds to wait."""

    code = "rate_limited"
    http_status = 429


class PathTraversalError(InvalidInputError):
    """A user-supplied path tried to leave its workspace."""

    code = "path_traversal"


# --- LLM providers --------------------------------------------------------------------------


class LLMError(GatheringError):
    """A language-model provider call failed.

    `message` may name internal endpoints (an Ollama host, a `base_url`) or quote the
    provider's answer: it is for logs. Clients get `public_message`, fixed per class.
    """

    code = "llm_error"
    http_status = 502
    retryable: bool = False
    public_message: str | None = "the model provider failed"


class UnknownProviderError(LLMError, InvalidInputError):
    """No provider has that name."""

    code = "unknown_provider"
    http_status = 422
    public_message = None  # the message only quotes the caller's input: it is shown as it is


class ProviderNotConfiguredError(LLMError):
    """The provider needs a setting (usually an API key) that is not set."""

    code = "provider_not_configured"
    http_status = 503
    public_message = "the model provider is not configured on this server"


class ProviderAddressRefusedError(LLMError):
    """A provider's host resolved, just before a request, to an address model providers are
    never called at (a cloud metadata address): the request was not sent."""

    code = "provider_address_refused"
    http_status = 502
    public_message = "the model provider's address was refused by the egress rules"


class ProviderKeyUnreadableError(ProviderNotConfiguredError):
    """A provider key stored in the catalog cannot be decrypted with this server's secret."""

    code = "provider_key_unreadable"
    public_message = "the model provider's stored key cannot be read on this server"


class ProviderAuthenticationError(LLMError):
    """The provider rejected the credentials."""

    code = "provider_authentication_failed"
    public_message = "the model provider refused this server's credentials"


class ProviderRateLimitError(LLMError, _RetryAfter):
    """The provider asked us to slow down."""

    code = "provider_rate_limited"
    http_status = 503
    retryable = True
    public_message = "the model provider asked us to slow down"


class ProviderBusyError(LLMError, _RetryAfter):
    """An in-process model (the local one) has more calls queued than it accepts; retry later."""

    code = "provider_busy"
    http_status = 503
    public_message = "the model is busy with other calls"


class ContextTooLongError(LLMError):
    """The prompt does not fit in the model's context window."""

    code = "context_too_long"
    http_status = 422
    public_message = "the conversation does not fit in the model's context window"


class ProviderTimeoutError(LLMError):
    """The provider did not answer in time."""

    code = "provider_timeout"
    http_status = 504
    retryable = True
    public_message = "the model provider did not answer in time"


class ProviderUnavailableError(LLMError):
    """The provider could not be reached or answered with a server error."""

    code = "provider_unavailable"
    http_status = 503
    retryable = True
    public_message = "the model provider could not be reached or failed"


# --- conversations ------------------------------------------------------------------------


class AgentBusyError(ConflictError, _RetryAfter):
    """The agent is in another turn and did not come free within the configured wait."""

    code = "agent_busy"
    http_status = 409


class TurnTimeoutError(GatheringError):
    """A turn ran past its deadline (`GATHERING_TURN_DEADLINE`); it is stored as failed."""

    code = "turn_timeout"
    http_status = 504


class TurnFailedError(ConflictError):
    """The turn started with this idempotency key did not complete; its error is given again."""

    code = "turn_failed"


# --- coordination ---------------------------------------------------------------------------


class LockUnavailableError(DatabaseUnavailableError):
    """An advisory lock could not be taken or checked; the guarded duty must not run."""

    code = "lock_unavailable"


# --- events ---------------------------------------------------------------------------------


class EventBackpressureError(GatheringError):
    """A subscriber with the `raise` policy stayed full; the event was not queued for it.

    The event was still delivered to every other subscriber.
    """

    code = "event_backpressure"
    http_status = 503


class EventStreamClosedError(GatheringError):
    """The stream was closed; no more events will come out of it."""

    code = "event_stream_closed"
    http_status = 410


# --- tools ----------------------------------------------------------------------------------


class ToolArgumentsError(InvalidInputError):
    """A tool call's arguments do not match the tool's schema; `details["errors"]` lists each
    refused field as `{"path": "config.level", "message": ...}`."""

    code = "invalid_tool_arguments"


class ToolFailedError(GatheringError):
    """A tool raised while it ran; the message names the tool."""

    code = "tool_failed"
    http_status = 502


class ToolTimeoutError(GatheringError):
    """A tool did not finish within its timeout and was stopped."""

    code = "tool_timeout"
    http_status = 504


class ToolDeniedError(PermissionDeniedError):
    """The agent's policy for this tool is `deny`: the call was not run."""

    code = "tool_denied"


class ApprovalRequiredError(ConflictError):
    """The call waits for a person's approval (policy `ask`); `details["approval_id"]` names
    the approval to answer. (`POST /tools/{name}/invoke` answers 202 with it in the body.)"""

    code = "approval_required"


# --- pipelines ------------------------------------------------------------------------------


class CircuitOpenError(GatheringError):
    """The target's circuit breaker is open: the node failed at once, without calling it."""

    code = "circuit_open"
    http_status = 503


class NodeFailedError(GatheringError):
    """A pipeline node failed; `code` is the cause's (a tool's, a provider's, `timeout`...)."""

    code = "node_failed"
    http_status = 502

    def __init__(self, message: str, *, code: str = "node_failed", **kwargs: Any) -> None:
        super().__init__(message, **kwargs)
        self.code = code


class ActionFailedError(GatheringError):
    """A scheduled action failed; `code` is the cause's (`http_503`, ...); `retryable` says
    whether trying it again is safe and may help."""

    code = "action_failed"
    http_status = 502

    def __init__(
        self, message: str, *, code: str = "action_failed", retryable: bool = True, **kwargs: Any
    ) -> None:
        super().__init__(message, **kwargs)
        self.code = code
        self.retryable = retryable


class DecompositionFailedError(GatheringError):
    """An agent asked to split a goal into subgoals gave an answer that is not a usable list."""

    code = "decomposition_failed"
    http_status = 502


class BudgetExhaustedError(GatheringError):
    """A background task reached one of its budgets (steps, tokens, seconds, dollars)."""

    code = "budget_exhausted"
    http_status = 409


class BudgetExceededError(GatheringError):
    """A model call was refused before it was made: it would take a money or token budget
    (of a user, agent, circle, pipeline or background task) over its limit. `details` names the
    budget, its period and when the period resets. 402, not 429: waiting a few seconds does
    not help (a day or a month may), and clients must not retry it on their own."""

    code = "budget_exceeded"
    http_status = 402


# --- circles ----------------------------------------------------------------------------------


class IllegalTransitionError(ConflictError):
    """A circle's task cannot move to that status from the one it is in; `details["allowed"]`
    lists the statuses that may follow."""

    code = "illegal_transition"


class FileLockedError(ConflictError):
    """A file of a circle's workspace is held by another task of the circle."""

    code = "file_locked"


# --- projects ---------------------------------------------------------------------------------


class StaleVersionError(GatheringError):
    """A write named a version of a file that is no longer its current one (optimistic
    concurrency); `details["current_version"]` is the version the file has now."""

    code = "stale_version"
    http_status = 412


class VersionRequiredError(GatheringError):
    """An overwrite did not say which version of the file it replaces (`If-Match`)."""

    code = "version_required"
    http_status = 428


class UnsupportedDocumentError(InvalidInputError):
    """A file of a type the knowledge base does not read (Markdown, text, CSV, HTML, PDF)."""

    code = "unsupported_document"
    http_status = 415
