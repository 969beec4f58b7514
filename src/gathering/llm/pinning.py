"""Requests to a provider's address pinned to the addresses checked for them.

A provider whose address an admin stored is called through a pinned transport: just before
each request, `pin(host, port)` resolves the host and checks every address (the egress rules
of model endpoints, given by the layers above: never a cloud metadata address). The
connection goes to a checked address, with the `Host` header and the TLS name (SNI and the
certificate check) of the host: the name is never resolved again, so it cannot rebind to
another address between the check and the connection. The next address is tried only when
connecting to one fails or times out, before anything is sent. Connections are pooled per host
name (never one host's TLS connection for another name on the same address). Redirects are
followed as the SDKs' own clients do, each hop resolved and checked again, but none to another
origin (a key would go with it). No HTTP proxy of the environment is used.

The OpenAI and Anthropic SDKs send through `httpx2` (`pinned_http_client`), Ollama's through
`httpx` (`PinnedTransport`): the same logic, over either library.
"""

from __future__ import annotations

import ipaddress
import ssl
from typing import Any

import httpx
import httpx2

from gathering.errors import LLMError
from gathering.llm.common import AddressPin

_DEFAULT_PORTS = {"http": 80, "https": 443}


def _is_literal(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


async def _send_pinned(
    pin: AddressPin, pools: dict[Any, Any], tls: ssl.SSLContext, request: Any, library: Any
) -> Any:
    """`request` (of `library`: httpx or httpx2) sent to a checked address of its host, on the
    pool of its scheme, host and port in `pools` (made at first use, with the `tls` context
    made once: loading certificates reads files, which the event loop must not wait for)."""
    url = request.url
    host = url.host
    port = url.port or _DEFAULT_PORTS.get(url.scheme, 80)
    addresses = await pin(host, port)
    key = (url.scheme, host, port)
    inner = pools.get(key)
    if inner is None:
        inner = pools[key] = library.AsyncHTTPTransport(verify=tls, trust_env=False)
    if not addresses:
        raise library.ConnectError(f"{host} has no address", request=request)
    extensions = dict(request.extensions)
    if url.scheme == "https" and not _is_literal(host):
        extensions["sni_hostname"] = host  # and the certificate is checked for it
    failure: Exception | None = None
    for address in addresses:
        pinned = library.Request(
            request.method,
            url.copy_with(host=address),
            headers=request.headers,  # its Host header names the host, not the address
            stream=request.stream,
            extensions=extensions,
        )
        try:
            return await inner.handle_async_request(pinned)
        except (library.ConnectError, library.ConnectTimeout) as exc:  # nothing was sent
            failure = exc  # the next address
    assert failure is not None
    raise failure


class PinnedTransport(httpx.AsyncBaseTransport):
    """An httpx transport that connects each request to the addresses `pin` checked for its
    host (see the module docstring)."""

    def __init__(self, pin: AddressPin) -> None:
        self._pin = pin
        self._pools: dict[tuple[str, str, int], httpx.AsyncHTTPTransport] = {}
        self._tls = httpx.create_ssl_context()  # SSL_CERT_FILE honoured; built off the loop

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        """Send `request` to a checked address of its host."""
        response: httpx.Response = await _send_pinned(
            self._pin, self._pools, self._tls, request, httpx
        )
        return response

    async def aclose(self) -> None:
        """Close the pooled connections."""
        for pool in self._pools.values():
            await pool.aclose()


class PinnedTransport2(httpx2.AsyncBaseTransport):
    """`PinnedTransport` over httpx2 (the OpenAI and Anthropic SDKs' HTTP library)."""

    def __init__(self, pin: AddressPin) -> None:
        self._pin = pin
        self._pools: dict[tuple[str, str, int], httpx2.AsyncHTTPTransport] = {}
        self._tls = httpx2.create_ssl_context()  # SSL_CERT_FILE honoured; built off the loop

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        """Send `request` to a checked address of its host."""
        response: httpx2.Response = await _send_pinned(
            self._pin, self._pools, self._tls, request, httpx2
        )
        return response

    async def aclose(self) -> None:
        """Close the pooled connections."""
        for pool in self._pools.values():
            await pool.aclose()


async def same_origin_redirects_only(response: httpx.Response | httpx2.Response) -> None:
    """A response hook that refuses to follow a redirect to another origin: the SDKs' key
    headers (`x-api-key`, `Authorization`) would go with it (httpx drops only
    `Authorization`), and each new host would keep a pool of its own."""
    if not response.has_redirect_location:
        return
    here = response.request.url
    there = here.join(response.headers["location"])
    if (there.scheme, there.host, there.port) != (here.scheme, here.host, here.port):
        raise LLMError(
            f"the provider at {here.host} redirected to another origin ({there.scheme}://"
            f"{there.host}): not followed, the provider's key would go there",
            hint="check the provider's base_url: it should name the server itself",
        )


def pinned_http_client(pin: AddressPin, timeout: float) -> httpx2.AsyncClient:
    """An httpx2 client whose every request goes through `PinnedTransport2(pin)`, for an SDK
    client (`http_client=`); it follows redirects within the provider's origin, as the SDKs'
    own clients do."""
    return httpx2.AsyncClient(
        transport=PinnedTransport2(pin),
        timeout=timeout,
        trust_env=False,
        follow_redirects=True,
        event_hooks={"response": [same_origin_redirects_only]},
    )
