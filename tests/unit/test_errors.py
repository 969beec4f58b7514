"""The error hierarchy carries codes, statuses and hints."""

from __future__ import annotations

from gathering import errors


def test_error_dict_has_code_message_and_hint():
    error = errors.NotFoundError("agent 3 does not exist", hint="list agents with GET /agents")
    assert error.to_dict() == {
        "code": "not_found",
        "message": "agent 3 does not exist",
        "hint": "list agents with GET /agents",
    }
    assert str(error) == "agent 3 does not exist (list agents with GET /agents)"
    assert error.http_status == 404


def test_rate_limit_errors_carry_retry_after():
    assert errors.RateLimitedError("slow down", retry_after=3).details == {"retry_after": 3}
    provider = errors.ProviderRateLimitError("429", retry_after=1.5)
    assert provider.retry_after == 1.5 and provider.retryable


def test_every_error_is_a_gathering_error_with_a_client_or_server_status():
    classes = [c for c in vars(errors).values() if isinstance(c, type) and issubclass(c, Exception)]
    for cls in classes:
        assert issubclass(cls, errors.GatheringError)
        assert 400 <= cls.http_status < 600
        assert cls.code and cls.code == cls.code.lower()
