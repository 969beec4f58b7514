"""The egress policy, attacked: every SSRF trick we know is refused, with real sockets.

Servers are real asyncio servers on 127.0.0.1 (random ports). DNS is the one seam: a fake
resolver (`FakeDNS`) answers for `*.test` names and counts its calls. Happy paths allow-list
the loopback server (by name or by network); attack tests do not, and assert that the server
that must stay unreachable saw no request at all.
"""

from __future__ import annotations

import asyncio
import ipaddress
import shutil
import socket
import ssl
import subprocess
import time
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from gathering.errors import (
    InvalidInputError,
    PermissionDeniedError,
    ToolFailedError,
    ToolTimeoutError,
)
from gathering.tools.egress import (
    USER_AGENT,
    EgressPolicy,
    check_url,
    fetch,
    forbidden_reason,
    system_resolver,
)

PUBLIC_V4 = "93.184.215.14"
PUBLIC_V6 = "2606:2800:21f:cb07:6820:80da:af6b:8b2c"
Refused = (PermissionDeniedError, InvalidInputError)


# --- DNS seam ------------------------------------------------------------------------------------


class FakeDNS:
    """Answers for a few names; each name has a list of successive answers (the last one
    repeats), so a name can change its answer between two lookups (DNS rebinding)."""

    def __init__(self, answers: dict[str, list[list[str]]] | None = None) -> None:
        self.answers = answers or {}
        self.calls: list[str] = []

    async def __call__(self, host: str, port: int) -> list[str]:
        self.calls.append(host)
        if host not in self.answers:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        answers = self.answers[host]
        return answers.pop(0) if len(answers) > 1 else answers[0]


def dns(**names: str | list[str]) -> FakeDNS:
    """`dns(site_test="127.0.0.1")`: static answers, `_` in keyword names read as `.`."""
    return FakeDNS(
        {
            name.replace("_", "."): [[value] if isinstance(value, str) else value]
            for name, value in names.items()
        }
    )


# --- a real HTTP server on loopback ----------------------------------------------------------


@dataclass
class Seen:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


Route = Callable[[asyncio.StreamWriter, Seen], Awaitable[None]]


def reply(status: int = 200, body: bytes = b"ok", headers: dict[str, str] | None = None) -> Route:
    async def route(writer: asyncio.StreamWriter, seen: Seen) -> None:
        lines = [
            f"HTTP/1.1 {status} Status",
            f"Content-Length: {len(body)}",
            "Connection: close",
            *(f"{name}: {value}" for name, value in (headers or {}).items()),
        ]
        writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body)
        await writer.drain()

    return route


def redirect(location: str, status: int = 302) -> Route:
    return reply(status, b"", {"Location": location})


@dataclass
class LocalServer:
    """An HTTP/1.1 server on 127.0.0.1 that answers each path with its route (404 else) and
    records every request it receives."""

    tls: ssl.SSLContext | None = None
    routes: dict[str, Route] = field(default_factory=dict)
    seen: list[Seen] = field(default_factory=list)
    port: int = 0
    _handlers: set[asyncio.Task[None]] = field(default_factory=set)

    async def __aenter__(self) -> LocalServer:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0, ssl=self.tls)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._server.close()
        for task in list(self._handlers):
            task.cancel()
        await asyncio.gather(*self._handlers, return_exceptions=True)
        await self._server.wait_closed()

    def url(self, path: str = "/", host: str = "127.0.0.1") -> str:
        scheme = "https" if self.tls else "http"
        return f"{scheme}://{host}:{self.port}{path}"

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            request_line, *lines = head.decode("latin-1").split("\r\n")
            method, target, _version = request_line.split(" ", 2)
            headers = {}
            for line in lines:
                if line:
                    name, value = line.split(":", 1)
                    headers[name.strip().lower()] = value.strip()
            body = await reader.readexactly(int(headers.get("content-length", "0")))
            seen = Seen(method, target, headers, body)
            self.seen.append(seen)
            route = self.routes.get(target.split("?")[0], reply(404, b"not found"))
            await route(writer, seen)
        except (ConnectionError, asyncio.IncompleteReadError, ssl.SSLError):
            pass
        finally:
            self._handlers.discard(task)
            writer.close()


@pytest.fixture
async def server() -> AsyncIterator[LocalServer]:
    async with LocalServer() as running:
        yield running


@pytest.fixture
async def internal() -> AsyncIterator[LocalServer]:
    """A second loopback server: the "internal service" an attacker wants to reach."""
    async with LocalServer() as running:
        running.routes["/secret"] = reply(200, b"internal secret")
        yield running


def allow_site(**settings: object) -> EgressPolicy:
    """Allows the name site.test (and other.test) whatever it resolves to, on any port."""
    return EgressPolicy(allowed_hosts={"site.test", "other.test"}, allowed_ports=None, **settings)  # type: ignore[arg-type]


def allow_loopback(**settings: object) -> EgressPolicy:
    """Allows the address 127.0.0.1, on any port unless `allowed_ports` is given."""
    settings.setdefault("allowed_ports", None)
    return EgressPolicy(allowed_networks=["127.0.0.1/32"], **settings)  # type: ignore[arg-type]


# --- the check alone (no connection) ------------------------------------------------------------


async def test_public_addresses_pass_the_check():
    resolver = dns(example_test=PUBLIC_V4, six_test=PUBLIC_V6)
    target = await check_url("https://example.test/a?b=1#frag", EgressPolicy(), resolver)
    assert target.address == ipaddress.ip_address(PUBLIC_V4)
    assert (target.scheme, target.host, target.port) == ("https", "example.test", 443)
    assert str(target.url) == "https://example.test/a?b=1"  # the fragment is never sent
    assert str(target.connect_url()) == f"https://{PUBLIC_V4}/a?b=1"
    assert target.host_header == "example.test"

    six = await check_url("http://six.test./", EgressPolicy(), resolver)  # trailing dot
    assert six.host == "six.test" and six.address == ipaddress.ip_address(PUBLIC_V6)
    literal = await check_url(f"http://{PUBLIC_V4}/", EgressPolicy(), resolver)
    assert literal.ip_literal and literal.address == ipaddress.ip_address(PUBLIC_V4)
    assert resolver.calls == ["example.test", "six.test"]  # literals are never resolved


async def test_international_names_are_resolved_in_their_ascii_form():
    resolver = dns(**{"xn--bcher-kva_test": PUBLIC_V4})
    target = await check_url("http://BÜCHER.test/", EgressPolicy(), resolver)
    assert resolver.calls == ["xn--bcher-kva.test"]
    assert target.host_header == "xn--bcher-kva.test"


ATTACKS = [
    "http://127.0.0.1",
    "http://localhost",
    "http://LOCALHOST.",
    "http://app.localhost/",
    "http://[::1]",
    "http://[::ffff:127.0.0.1]",
    "http://[::ffff:7f00:1]",
    "http://[::127.0.0.1]",  # IPv4-compatible
    "http://[::]",
    "http://0.0.0.0",
    "http://0/",
    "http://2130706433",
    "http://0177.0.0.1",
    "http://0x7f000001",
    "http://0x7f.1",
    "http://127.1",
    "http://127.0.0.1.",
    "http://1.2.3.4.5/",
    "http://%31%32%37.0.0.1/",
    "http://169.254.169.254/latest/meta-data",
    "http://[::ffff:169.254.169.254]/latest/meta-data",
    "http://[64:ff9b::a9fe:a9fe]/",  # NAT64 of the metadata address
    "http://[2002:7f00:1::]/",  # 6to4 of 127.0.0.1
    "http://metadata.google.internal/computeMetadata/v1/",
    "http://[fe80::1%25eth0]",
    "http://[fe80::1]",
    "http://10.0.0.1",
    "http://192.168.1.1",
    "http://172.16.0.1",
    "http://100.64.0.1",  # CGNAT: refused
    "http://224.0.0.1",
    "http://[ff02::1]",
    "http://255.255.255.255",
    "http://240.0.0.1",
    "http://[fd00:ec2::254]",
    "http://[fc00::1]",
    "http://[fec0::1]",
    "http://evil.test/",  # a name resolving to loopback
    "http://private.test/",  # ... to a private address
    "http://mixed.test/",  # one public and one private answer
    "http://mapped.test/",  # ... to an IPv4-mapped address
    "http://meta.test/",  # ... to the metadata address
    "http://allowed.test@127.0.0.1/",
    "http://127.0.0.1#@allowed.test/",
    "http://127.0.0.1\\@allowed.test/",
    "http://127.0.0.1:80\\@allowed.test/",
    "file:///etc/passwd",
    "gopher://127.0.0.1:6379/_INFO",
    "ftp://example.test/",
    "dict://127.0.0.1:11211/stat",
    "//example.test/",
    "http:///path",
    "http://example.test:22/",  # ports other than 80 and 443
    "http://example.test:0/",
    "http://example.test:65536/",
]


@pytest.mark.parametrize("url", ATTACKS)
async def test_the_attack_corpus_is_refused(url: str):
    resolver = dns(
        evil_test="127.0.0.1",
        private_test="10.1.2.3",
        mixed_test=[PUBLIC_V4, "10.0.0.1"],
        mapped_test="::ffff:127.0.0.1",
        meta_test="169.254.169.254",
        example_test=PUBLIC_V4,
        allowed_test=PUBLIC_V4,
        localhost="127.0.0.1",
    )
    with pytest.raises(Refused):
        await check_url(url, EgressPolicy(), resolver)
    assert set(resolver.calls) <= {
        "evil.test",
        "private.test",
        "mixed.test",
        "mapped.test",
        "meta.test",
    }


async def test_a_refusal_names_the_address_and_how_to_allow_it():
    with pytest.raises(PermissionDeniedError) as caught:
        await check_url("http://private.test/x", EgressPolicy(), dns(private_test="10.1.2.3"))
    error = caught.value
    assert "private.test resolves to 10.1.2.3, a private address" in error.message
    assert error.hint is not None and "allowed_networks" in error.hint
    assert error.details == {"host": "private.test", "address": "10.1.2.3"}


async def test_one_forbidden_answer_refuses_the_name_whatever_its_order():
    for answers in ([PUBLIC_V4, "127.0.0.1"], ["127.0.0.1", PUBLIC_V4], [PUBLIC_V6, "::1"]):
        with pytest.raises(PermissionDeniedError):
            await check_url("http://mixed.test/", EgressPolicy(), dns(mixed_test=answers))


async def test_the_allow_list_cannot_open_metadata_or_ipv4_mapped_addresses():
    policy = EgressPolicy(
        allowed_networks=["0.0.0.0/0", "::/0"], allowed_hosts={"meta.test"}, allowed_ports=None
    )
    resolver = dns(meta_test="169.254.169.254")
    for url in (
        "http://169.254.169.254/",
        "http://[fd00:ec2::254]/",
        "http://[::ffff:127.0.0.1]/",
        "http://[::ffff:10.0.0.1]/",
        "http://[::127.0.0.1]/",
        "http://meta.test/",
    ):
        with pytest.raises(PermissionDeniedError, match=r"metadata|IPv4-"):
            await check_url(url, policy, resolver)
    # Other private addresses are what the allow-list is for.
    for url in ("http://10.0.0.1/", "http://169.254.1.1/", "http://[fd12::1]/", "http://[::1]/"):
        await check_url(url, policy, resolver)


async def test_allowed_hosts_and_networks():
    policy = EgressPolicy(
        allowed_hosts={"*.corp.test", "wiki.test.", "10.9.9.9"}, allowed_networks=["10.1.0.0/16"]
    )
    resolver = dns(
        a_corp_test="10.5.0.1", corp_test="10.5.0.1", evilcorp_test="10.5.0.1", wiki_test="::1"
    )
    await check_url("http://a.corp.test/", policy, resolver)
    await check_url("http://WIKI.test/", policy, resolver)
    await check_url("http://10.1.200.3/", policy, resolver)
    await check_url("http://10.9.9.9/", policy, resolver)  # an IP in allowed_hosts: a network
    for url in (
        "http://corp.test/",
        "http://evilcorp.test/",
        "http://10.2.0.1/",
        "http://10.9.9.8/",
    ):
        with pytest.raises(PermissionDeniedError):
            await check_url(url, policy, resolver)
    assert policy.allowed_networks == ("10.9.9.9/32", "10.1.0.0/16")


def test_a_bad_policy_is_refused_when_built():
    for settings in (
        {"allowed_networks": ["10.0.0.1/8"]},  # host bits set: a typo, not a network
        {"allowed_networks": ["intranet"]},
        {"allowed_hosts": ["http://x"]},
        {"allowed_schemes": {"http", "ftp"}},
        {"allowed_ports": {0}},
        {"max_redirects": -1},
        {"max_response_bytes": 0},
        {"total_timeout": 0},
    ):
        with pytest.raises(InvalidInputError):
            EgressPolicy(**settings)
    assert EgressPolicy(allowed_ports=[80, 8080]) == EgressPolicy(allowed_ports={8080, 80})


async def test_ports():
    resolver = dns(example_test=PUBLIC_V4)
    await check_url("http://example.test:80/", EgressPolicy(), resolver)
    await check_url("https://example.test/", EgressPolicy(), resolver)
    with pytest.raises(PermissionDeniedError, match="port 8080 is not allowed"):
        await check_url("http://example.test:8080/", EgressPolicy(), resolver)
    await check_url("http://example.test:8080/", EgressPolicy(allowed_ports={8080}), resolver)
    await check_url("http://example.test:8080/", EgressPolicy(allowed_ports=None), resolver)
    with pytest.raises(InvalidInputError, match="out of range"):
        await check_url("http://example.test:0/", EgressPolicy(allowed_ports=None), resolver)


async def test_names_that_do_not_resolve():
    with pytest.raises(InvalidInputError, match="does not resolve"):
        await check_url("http://nowhere.test/", EgressPolicy(), dns())
    with pytest.raises(InvalidInputError, match="no address"):
        await check_url("http://empty.test/", EgressPolicy(), dns(empty_test=[]))

    async def slow(host: str, port: int) -> list[str]:
        await asyncio.sleep(10)
        return [PUBLIC_V4]

    with pytest.raises(ToolTimeoutError):
        await check_url("http://slow.test/", EgressPolicy(connect_timeout=0.05), slow)


async def test_the_system_resolver_answers_without_blocking_the_loop():
    # blockbuster fails this test if getaddrinfo ran on the event loop's thread.
    answers = await system_resolver("localhost", 80)
    assert {"127.0.0.1", "::1"} & set(answers)
    with pytest.raises(PermissionDeniedError):
        await check_url("http://localhost/", EgressPolicy())


def test_forbidden_reason_classes():
    policy = EgressPolicy()
    reasons = {
        address: forbidden_reason(ipaddress.ip_address(address), policy)
        for address in ("0.1.2.3", "100.100.100.200", "168.63.129.16", "::ffff:8.8.8.8", PUBLIC_V4)
    }
    assert reasons == {
        "0.1.2.3": "an address of 0.0.0.0/8",
        "100.100.100.200": "a cloud metadata address",
        "168.63.129.16": "a cloud metadata address",
        "::ffff:8.8.8.8": "an IPv4-mapped IPv6 address (of 8.8.8.8)",
        PUBLIC_V4: None,
    }


# --- live requests --------------------------------------------------------------------------


async def test_loopback_in_every_spelling_never_reaches_a_live_server(server: LocalServer):
    server.routes["/"] = reply(200, b"should never be served")
    port = server.port
    policy = EgressPolicy(allowed_ports=None)  # only the address rules stand in the way
    resolver = dns(evil_test="127.0.0.1", rebound_test="::ffff:127.0.0.1")
    for host in (
        "127.0.0.1",
        "localhost",
        "[::ffff:127.0.0.1]",
        "[::ffff:7f00:1]",
        "[::127.0.0.1]",
        "2130706433",
        "0x7f000001",
        "0177.0.0.1",
        "127.1",
        "0",
        "0.0.0.0",
        "evil.test",
        "rebound.test",
    ):
        with pytest.raises(Refused):
            await fetch("GET", f"http://{host}:{port}/", policy, resolver=resolver)
    assert server.seen == []


async def test_the_connection_is_pinned_to_the_checked_address(server: LocalServer):
    server.routes["/hello"] = reply(200, b"hello", {"Content-Type": "text/plain; charset=utf-8"})
    resolver = dns(site_test="127.0.0.1")
    result = await fetch(
        "GET", server.url("/hello", "site.test"), allow_loopback(), resolver=resolver
    )
    assert (result.status, result.content, result.truncated) == (200, b"hello", False)
    assert result.url == server.url("/hello", "site.test")
    assert resolver.calls == ["site.test"]  # one lookup: ours; httpx was given the address
    [request] = server.seen
    assert request.headers["host"] == f"site.test:{server.port}"
    assert request.headers["user-agent"] == USER_AGENT
    assert "cookie" not in request.headers and "authorization" not in request.headers


async def test_the_next_checked_address_is_tried_when_one_refuses_connections(server: LocalServer):
    # Nothing listens on 127.0.0.2 (the server is bound to 127.0.0.1): connecting fails before
    # anything is sent, and the second checked address is used. No other address ever is.
    server.routes["/"] = reply(200, b"second address")
    resolver = dns(multi_test=["127.0.0.2", "127.0.0.1"])
    policy = EgressPolicy(allowed_networks=["127.0.0.0/8"], allowed_ports=None)
    result = await fetch("GET", server.url("/", "multi.test"), policy, resolver=resolver)
    assert result.content == b"second address"
    assert resolver.calls == ["multi.test"] and len(server.seen) == 1


async def test_proxy_settings_of_the_environment_are_ignored(
    server: LocalServer, internal: LocalServer, monkeypatch: pytest.MonkeyPatch
):
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "all_proxy"):
        monkeypatch.setenv(name, internal.url("/"))
    server.routes["/"] = reply(200, b"direct")
    result = await fetch("GET", server.url("/"), allow_loopback())
    assert result.content == b"direct"
    assert internal.seen == []


async def test_dns_rebinding_cannot_redirect_the_connection(server: LocalServer):
    # The check sees 127.0.0.1 (allowed here); any later lookup would give 10.0.0.1 (refused)
    # or 127.0.0.2 (a loopback address no server listens on). One lookup, one connection.
    server.routes["/"] = reply(200, b"pinned")
    resolver = FakeDNS({"rebind.test": [["127.0.0.1"], ["10.0.0.1"], ["127.0.0.2"]]})
    result = await fetch("GET", server.url("/", "rebind.test"), allow_loopback(), resolver=resolver)
    assert result.content == b"pinned"
    assert resolver.calls == ["rebind.test"]
    assert server.seen[0].headers["host"] == f"rebind.test:{server.port}"
    with pytest.raises(PermissionDeniedError, match=r"10\.0\.0\.1"):  # the next answer is refused
        await check_url(server.url("/", "rebind.test"), allow_loopback(), resolver)

    # First public, then private: each answer is judged; fetch would use only the first.
    flip = FakeDNS({"flip.test": [[PUBLIC_V4], ["127.0.0.1"]]})
    assert (await check_url("http://flip.test/", EgressPolicy(), flip)).address.is_global
    with pytest.raises(PermissionDeniedError, match="loopback"):
        await check_url("http://flip.test/", EgressPolicy(), flip)


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
@pytest.mark.parametrize(
    "location",
    [
        "http://127.0.0.1:{port}/secret",
        "http://localhost:{port}/secret",
        "http://internal.test:{port}/secret",
        "http://[::ffff:127.0.0.1]:{port}/secret",
        "http://2130706433:{port}/secret",
        "//127.0.0.1:{port}/secret",
        "http://site.test@127.0.0.1:{port}/secret",
    ],
)
async def test_a_redirect_to_an_internal_address_is_refused(
    server: LocalServer, internal: LocalServer, status: int, location: str
):
    server.routes["/go"] = redirect(location.format(port=internal.port), status)
    resolver = dns(site_test="127.0.0.1", internal_test="127.0.0.1")
    with pytest.raises(Refused, match="redirect"):
        await fetch(
            "POST", server.url("/go", "site.test"), allow_site(), body="x", resolver=resolver
        )
    assert len(server.seen) == 1
    assert internal.seen == []


async def test_a_redirect_to_another_port_of_an_allowed_address_is_refused(
    server: LocalServer, internal: LocalServer
):
    server.routes["/go"] = redirect(internal.url("/secret"))
    policy = allow_loopback(allowed_ports={server.port})
    with pytest.raises(PermissionDeniedError, match=f"port {internal.port} is not allowed"):
        await fetch("GET", server.url("/go"), policy)
    assert internal.seen == []


@pytest.mark.parametrize(
    "location",
    ["file:///etc/passwd", "gopher://127.0.0.1:6379/_FLUSHALL", "ftp://site.test/", "HTTPX://x/"],
)
async def test_a_redirect_to_another_scheme_is_refused(server: LocalServer, location: str):
    server.routes["/go"] = redirect(location)
    with pytest.raises(PermissionDeniedError, match="scheme"):
        await fetch("GET", server.url("/go"), allow_loopback())
    assert len(server.seen) == 1


async def test_a_redirect_to_a_malformed_location_fails(server: LocalServer):
    server.routes["/go"] = redirect("data:,x")  # httpx cannot parse it: nothing is followed
    with pytest.raises(ToolFailedError, match="invalid URL"):
        await fetch("GET", server.url("/go"), allow_loopback())


async def test_a_redirect_loop_is_capped(server: LocalServer):
    server.routes["/loop"] = redirect("/loop", 307)
    with pytest.raises(ToolFailedError, match="more than 3"):
        await fetch("GET", server.url("/loop"), allow_loopback(max_redirects=3))
    assert len(server.seen) == 4  # the request and 3 redirects


async def test_redirects_within_the_policy_are_followed(server: LocalServer):
    server.routes["/a"] = redirect("/b", 301)
    server.routes["/b"] = redirect(server.url("/c", "site.test") + "?x=1", 308)
    server.routes["/c"] = reply(200, b"arrived")
    resolver = dns(site_test="127.0.0.1")
    result = await fetch("GET", server.url("/a", "site.test"), allow_site(), resolver=resolver)
    assert (result.status, result.content) == (200, b"arrived")
    assert result.url == server.url("/c", "site.test") + "?x=1"
    assert result.redirects == (server.url("/b", "site.test"), result.url)
    assert resolver.calls == ["site.test"] * 3  # each hop is checked (and resolved) again


async def test_redirect_methods_follow_http(server: LocalServer):
    server.routes["/see-other"] = redirect("/target", 303)
    server.routes["/temporary"] = redirect("/target", 307)
    server.routes["/target"] = reply(200, b"done")
    headers = {"Content-Type": "application/json"}
    await fetch("POST", server.url("/see-other"), allow_loopback(), body="{}", headers=headers)
    await fetch("POST", server.url("/temporary"), allow_loopback(), body="{}", headers=headers)
    after_303, after_307 = server.seen[1], server.seen[3]
    assert (after_303.method, after_303.body) == ("GET", b"")
    assert "content-type" not in after_303.headers
    assert (after_307.method, after_307.body) == ("POST", b"{}")
    assert after_307.headers["content-type"] == "application/json"


async def test_authorization_does_not_cross_origins_and_cookies_are_never_sent(
    server: LocalServer, internal: LocalServer
):
    internal.routes["/landing"] = reply(200, b"landed")
    server.routes["/same"] = reply(302, b"", {"Location": "/other", "Set-Cookie": "sid=1"})
    server.routes["/other"] = redirect(internal.url("/landing", "other.test"))
    resolver = dns(site_test="127.0.0.1", other_test="127.0.0.1")
    await fetch(
        "GET",
        server.url("/same", "site.test"),
        allow_site(),
        headers={"Authorization": "Bearer token"},
        resolver=resolver,
    )
    first, second = server.seen
    [third] = internal.seen
    assert first.headers["authorization"] == second.headers["authorization"] == "Bearer token"
    assert "authorization" not in third.headers
    assert "cookie" not in second.headers and "cookie" not in third.headers


async def test_userinfo_tricks_are_refused(server: LocalServer):
    server.routes["/"] = reply(200, b"should never be served")
    resolver = dns(site_test=PUBLIC_V4)
    policy = EgressPolicy(allowed_hosts={"site.test"}, allowed_ports=None)
    for url in (
        f"http://site.test@127.0.0.1:{server.port}/",
        f"http://site.test:pass@127.0.0.1:{server.port}/",
        f"http://127.0.0.1:{server.port}#@site.test/",
        f"http://127.0.0.1:{server.port}\\@site.test/",
        f"http://127.0.0.1:{server.port}?@site.test/",
    ):
        with pytest.raises(Refused):
            await fetch("GET", url, policy, resolver=resolver)
    assert server.seen == []


async def test_a_large_response_is_cut_and_flagged(server: LocalServer):
    server.routes["/big"] = reply(200, b"x" * 30_000)
    server.routes["/exact"] = reply(200, b"y" * 10_000)
    result = await fetch("GET", server.url("/big"), allow_loopback(max_response_bytes=10_000))
    assert (len(result.content), result.truncated) == (10_000, True)
    result = await fetch("GET", server.url("/exact"), allow_loopback(max_response_bytes=10_000))
    assert (len(result.content), result.truncated) == (10_000, False)


def _gzip_bomb(megabytes: int) -> bytes:
    compressor = zlib.compressobj(9, zlib.DEFLATED, 31)
    chunk = b"\0" * (1 << 20)
    return b"".join(compressor.compress(chunk) for _ in range(megabytes)) + compressor.flush()


async def test_a_compression_bomb_is_cut_at_the_cap(server: LocalServer):
    bomb = _gzip_bomb(64)  # 64 MiB of zeros in about 64 KiB
    server.routes["/bomb"] = reply(200, bomb, {"Content-Encoding": "gzip"})
    server.routes["/small"] = reply(200, zlib.compress(b"hello"), {"Content-Encoding": "deflate"})
    server.routes["/br"] = reply(200, b"??", {"Content-Encoding": "br"})
    result = await fetch("GET", server.url("/bomb"), allow_loopback(max_response_bytes=100_000))
    assert (len(result.content), result.truncated) == (100_000, True)
    assert len(bomb) < 100_000
    result = await fetch("GET", server.url("/small"), allow_loopback())
    assert (result.content, result.truncated) == (b"hello", False)
    with pytest.raises(ToolFailedError, match="Content-Encoding"):
        await fetch("GET", server.url("/br"), allow_loopback())


async def test_a_slow_server_times_out(server: LocalServer):
    async def silent(writer: asyncio.StreamWriter, seen: Seen) -> None:
        await asyncio.sleep(30)

    server.routes["/slow"] = silent
    started = time.monotonic()
    with pytest.raises(ToolTimeoutError, match="did not answer in time"):
        await fetch("GET", server.url("/slow"), allow_loopback(read_timeout=0.3))
    assert time.monotonic() - started < 5


async def test_a_dripping_server_hits_the_total_time_limit(server: LocalServer):
    async def drip(writer: asyncio.StreamWriter, seen: Seen) -> None:
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 1000000\r\n\r\n")
        while True:  # one byte every 50 ms: each read is quick, the whole is endless
            writer.write(b"x")
            await writer.drain()
            await asyncio.sleep(0.05)

    server.routes["/drip"] = drip
    started = time.monotonic()
    with pytest.raises(ToolTimeoutError, match=r"took over 0\.5s"):
        await fetch("GET", server.url("/drip"), allow_loopback(read_timeout=5, total_timeout=0.5))
    assert time.monotonic() - started < 5


async def test_a_huge_header_is_refused(server: LocalServer):
    server.routes["/huge"] = reply(200, b"ok", {"X-Huge": "a" * 200_000})
    with pytest.raises(ToolFailedError, match="RemoteProtocolError"):
        await fetch("GET", server.url("/huge"), allow_loopback())


async def test_a_closed_port_fails_cleanly():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(ToolFailedError, match="ConnectError"):
        await fetch("GET", f"http://127.0.0.1:{port}/", allow_loopback())


async def test_request_headers_and_bodies_are_restricted(server: LocalServer):
    server.routes["/echo"] = reply(200, b"ok")
    for headers in (
        {"Host": "internal"},
        {"Cookie": "a=1"},
        {"X-Forwarded-For": "127.0.0.1"},
        {"User-Agent": "curl"},
        {"Transfer-Encoding": "chunked"},
        {"Accept": "text/html\r\nX-Injected: 1"},
        {"Authorization": "é"},
    ):
        with pytest.raises(InvalidInputError):
            await fetch("GET", server.url("/echo"), allow_loopback(), headers=headers)
    with pytest.raises(InvalidInputError, match="over 10"):
        await fetch(
            "POST", server.url("/echo"), allow_loopback(max_request_bytes=10), body="x" * 11
        )
    with pytest.raises(InvalidInputError, match="method"):
        await fetch("CONNECT", server.url("/echo"), allow_loopback())
    assert server.seen == []

    await fetch(
        "POST",
        server.url("/echo"),
        allow_loopback(),
        body="é",
        headers={"accept": "text/plain", "Content-Type": "text/plain; charset=utf-8"},
    )
    [request] = server.seen
    assert request.body == "é".encode()
    assert request.headers["accept"] == "text/plain"
    assert request.headers["user-agent"] == USER_AGENT


async def test_refusals_are_logged_without_secrets():
    with capture_logs() as logs:
        with pytest.raises(PermissionDeniedError):
            await check_url("http://10.0.0.1/admin?token=SECRET", EgressPolicy())
        with pytest.raises(InvalidInputError):
            await check_url("http://user:SECRET@example.test/", EgressPolicy())
    refused = [entry for entry in logs if entry["event"] == "egress refused"]
    assert [entry["url"] for entry in refused] == ["http://10.0.0.1/admin", "http://example.test/"]
    assert refused[0]["address"] == "10.0.0.1"
    assert "SECRET" not in repr(logs)


# --- TLS: the certificate is checked for the name, the socket goes to the address -------------


@dataclass
class TLS:
    client: ssl.SSLContext
    server: ssl.SSLContext


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> TLS:
    """A test CA and a certificate for site.test, made with the openssl command."""
    if shutil.which("openssl") is None:
        pytest.skip("the openssl command is needed to make test certificates")
    folder: Path = tmp_path_factory.mktemp("tls")
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]

    def openssl(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=folder, check=True, capture_output=True)

    openssl(
        "req",
        "-x509",
        *ec,
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-days",
        "2",
        "-subj",
        "/CN=GatheRing test CA",
    )
    openssl("req", *ec, "-keyout", "site.key", "-out", "site.csr", "-subj", "/CN=site.test")
    (folder / "san.cnf").write_text("subjectAltName=DNS:site.test\n")
    openssl(
        "x509", "-req", "-in", "site.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
        "-CAcreateserial", "-out", "site.pem", "-days", "2", "-extfile", "san.cnf",
    )  # fmt: skip
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(folder / "site.pem", folder / "site.key")
    return TLS(client=ssl.create_default_context(cafile=str(folder / "ca.pem")), server=server)


async def test_https_checks_the_certificate_of_the_name_while_pinned(tls: TLS):
    names: list[str | None] = []
    tls.server.sni_callback = lambda _socket, name, _context: names.append(name)
    async with LocalServer(tls=tls.server) as secure:
        secure.routes["/"] = reply(200, b"secure")
        resolver = dns(site_test="127.0.0.1", other_test="127.0.0.1")
        policy = allow_site(ssl_context=tls.client)
        result = await fetch("GET", secure.url("/", "site.test"), policy, resolver=resolver)
        assert result.content == b"secure"
        assert names == ["site.test"]  # SNI: the name, though the socket went to 127.0.0.1
        assert secure.seen[0].headers["host"] == f"site.test:{secure.port}"

        # Same address, another name: the certificate (for site.test) does not match it.
        with pytest.raises(ToolFailedError, match="CERTIFICATE_VERIFY_FAILED"):
            await fetch("GET", secure.url("/", "other.test"), policy, resolver=resolver)
        # The address itself is no name of the certificate either.
        with pytest.raises(ToolFailedError, match="CERTIFICATE_VERIFY_FAILED"):
            await fetch("GET", secure.url("/"), allow_loopback(ssl_context=tls.client))
        assert len(secure.seen) == 1
