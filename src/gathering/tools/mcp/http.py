"""The HTTP client of a streamable-HTTP MCP server: every request goes to an address the egress
policy allowed, and every response body stops at `MAX_RESPONSE_BYTES`.

The SDK's own client would resolve the host again after our check (DNS rebinding could then
reach loopback) and read a response of any size. Here each request's host is resolved and
checked (`egress.check_url`), and the connection goes to the checked address itself, with the
original `Host` header and TLS server name; a body past the cap ends the request with an error.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping

import httpx2

from gathering.tools.egress import EgressPolicy, check_url

MAX_RESPONSE_BYTES = 8 * 1024 * 1024  # one response of an MCP server; a model reads 50,000 chars
# The SDK's own defaults (mcp.shared._httpx_utils): a response stream may stay open a while.
TIMEOUT = httpx2.Timeout(30.0, read=300.0)


class ResponseTooLargeError(httpx2.ReadError):
    """An MCP server's response passed `MAX_RESPONSE_BYTES`."""


class _CappedStream(httpx2.AsyncByteStream):
    def __init__(self, inner: httpx2.AsyncByteStream, limit: int) -> None:
        self._inner, self._limit = inner, limit

    async def __aiter__(self) -> AsyncIterator[bytes]:
        seen = 0
        async for chunk in self._inner:
            seen += len(chunk)
            if seen > self._limit:
                raise ResponseTooLargeError(
                    f"the MCP server's response passed {self._limit} bytes; it was cut off"
                )
            yield chunk

    async def aclose(self) -> None:
        await self._inner.aclose()


class GuardedTransport(httpx2.AsyncBaseTransport):
    """Pins each request to the address its host resolved to and the `policy` allowed (no
    check without a policy: a server of the config file), and caps each response body."""

    def __init__(self, policy: EgressPolicy | None, limit: int = MAX_RESPONSE_BYTES) -> None:
        self._inner = httpx2.AsyncHTTPTransport()
        self._policy, self._limit = policy, limit

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        if self._policy is not None:
            target = await check_url(str(request.url), self._policy)
            request.url = request.url.copy_with(host=str(target.address))
            request.headers["Host"] = target.host_header
            if target.scheme == "https" and not target.ip_literal:
                request.extensions = {**request.extensions, "sni_hostname": target.host}
        response = await self._inner.handle_async_request(request)
        assert isinstance(response.stream, httpx2.AsyncByteStream)
        return httpx2.Response(
            response.status_code,
            headers=response.headers,
            stream=_CappedStream(response.stream, self._limit),
            extensions=response.extensions,
        )

    async def aclose(self) -> None:
        await self._inner.aclose()


def guarded_client(
    policy: EgressPolicy | None, headers: Mapping[str, str] | None = None
) -> httpx2.AsyncClient:
    """An HTTP client for the SDK's streamable-HTTP transport (see the module docstring)."""
    return httpx2.AsyncClient(
        transport=GuardedTransport(policy), headers=dict(headers or {}), timeout=TIMEOUT
    )
