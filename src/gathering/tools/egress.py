"""The egress policy: the one gate every outbound HTTP request of a tool goes through.

`check_url` decides whether a URL may be fetched and resolves it once; `fetch` makes the
request to the address that was checked, and checks every redirect again. The rules, in the
order they are applied (the first failure refuses the URL):

1. **Parsing.** The URL is read by httpx's parser (the one that later sends the request), so the
   host we check is the host we connect to. Only `allowed_schemes` (http, https). A URL with
   userinfo (`http://user@host/`) is refused: it is how `http://allowed@127.0.0.1/` and
   `http://127.0.0.1\\@allowed/` confuse other parsers, and we never send credentials in URLs.
2. **Host form.** An IPv6 literal (without a zone id), a canonical dotted-quad IPv4, or a
   name of letters, digits, `-` and `_` (IDNA names are encoded by httpx; one trailing dot is
   dropped). A host whose last label is a number but is not a canonical IPv4
   (`2130706433`, `0x7f000001`, `0177.0.0.1`, `127.1`, `0`) is refused: `inet_aton` and
   browsers read those as addresses. `localhost` and `*.localhost` are refused unless allowed.
3. **Port.** 1-65535 and, unless `allowed_ports` is None, one of `allowed_ports` (default 80
   and 443, for every destination: an allow-listed host on another port needs its port
   listed too).
4. **Addresses.** A name is resolved once, with `loop.getaddrinfo` (off the event loop) or an
   injected resolver. Every answer must be allowed: one forbidden answer refuses the URL
   (a name with a public and a private answer is refused, whichever would be used).
   Forbidden: loopback, private (RFC 1918, ULA), link-local, multicast, unspecified
   (`0.0.0.0/8`, `::`), reserved, site-local, shared address space (CGNAT `100.64.0.0/10`),
   anything `ipaddress` does not call global, and IPv6 forms embedding such an IPv4 (NAT64,
   6to4). The allow-list (`allowed_hosts`, `allowed_networks`) lifts these refusals. Two
   refusals cannot be lifted: cloud metadata addresses (`169.254.169.254`, `fd00:ec2::254`,
   ...) and IPv4-mapped / IPv4-compatible IPv6 addresses (`::ffff:127.0.0.1`,
   `::127.0.0.1`), which a real server never needs.
5. **Pinning.** The connection goes to a checked address (the first; the next one only if
   connecting fails, before anything is sent): httpx is given a URL whose host is that IP,
   with the `Host` header and (https) the TLS SNI name and certificate check set to the
   original host name. httpx never sees the name, so it cannot resolve it again: DNS
   rebinding between the check and the connection is impossible.
6. **Redirects** are followed by hand (at most `max_redirects`); each `Location` goes through
   steps 1-5 again. 301/302/303 turn a POST into a GET without body; `Authorization` is
   dropped when the origin changes. Each hop uses a new client: no cookie, connection or
   TLS session carries over.
7. **Response.** The body is read as a stream and cut at `max_response_bytes` after
   decompression (gzip/deflate are decoded here, bounded, so a compression bomb is cut too);
   a cut body is flagged `truncated`, not an error. Headers are bounded by httpcore (100 KiB).
   `connect_timeout` and `read_timeout` bound each step, `total_timeout` the whole fetch.

Requests carry our `User-Agent` and only the caller headers in `CALLER_HEADERS` (Accept,
Accept-Language, Content-Type, Authorization for APIs); no cookie, proxy, `.netrc` or other
credential of the server is ever sent (`trust_env=False`). Refusals are logged without query
strings or userinfo.

>>> policy = EgressPolicy(allowed_networks=["10.1.0.0/16"], allowed_ports=[80, 443, 8080])
>>> policy.allows_address(ipaddress.ip_address("10.1.2.3"))
True
>>> forbidden_reason(ipaddress.ip_address("::ffff:127.0.0.1"), EgressPolicy())
'an IPv4-mapped IPv6 address (of 127.0.0.1)'
"""

from __future__ import annotations

import asyncio
import codecs
import dataclasses
import functools
import ipaddress
import re
import socket
import ssl
import zlib
from collections.abc import Awaitable, Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from email.message import Message
from typing import Any, Final, Literal, get_args

import httpx
import structlog

from gathering import __version__
from gathering.config import get_settings
from gathering.errors import (
    GatheringError,
    InvalidInputError,
    PermissionDeniedError,
    ProviderAddressRefusedError,
    ProviderTimeoutError,
    ProviderUnavailableError,
    ToolFailedError,
    ToolTimeoutError,
)

log = structlog.get_logger(__name__)

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
Resolver = Callable[[str, int], Awaitable[Sequence[str]]]
"""`resolver(host, port)` -> the addresses of `host`, as strings ("93.184.215.14", "::1")."""
Method = Literal["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"]

USER_AGENT: Final = f"GatheRing/{__version__}"
MAX_URL_CHARS: Final = 8192
MAX_HEADER_VALUE_CHARS: Final = 8192
DEFAULT_PORTS: Final = {"http": 80, "https": 443}
SUPPORTED_SCHEMES: Final = frozenset(DEFAULT_PORTS)
CALLER_HEADERS: Final = {
    "accept": "Accept",
    "accept-language": "Accept-Language",
    "content-type": "Content-Type",
    "authorization": "Authorization",
}
REDIRECT_STATUSES: Final = frozenset({301, 302, 303, 307, 308})

# Cloud metadata and host-agent endpoints: refused even when an allowed network covers them.
METADATA_ADDRESSES: Final = frozenset(
    ipaddress.ip_address(address)
    for address in (
        "169.254.169.254",  # AWS, GCP, Azure, OpenStack, DigitalOcean, Oracle ...
        "169.254.170.2",  # AWS ECS task metadata
        "169.254.169.253",  # AWS DNS resolver
        "fd00:ec2::254",  # AWS IMDS over IPv6
        "fd00:ec2::253",  # AWS DNS resolver over IPv6
        "fd20:ce::254",  # GCP metadata over IPv6
        "100.100.100.200",  # Alibaba Cloud
        "168.63.129.16",  # Azure WireServer
        "192.0.0.192",  # Oracle Cloud (legacy)
    )
)
METADATA_NAMES: Final = frozenset(
    {"metadata", "metadata.google.internal", "metadata.goog", "instance-data.ec2.internal"}
)
_IPV4_COMPATIBLE = ipaddress.IPv6Network("::/96")
_THIS_NETWORK = ipaddress.IPv4Network("0.0.0.0/8")
_SHARED = ipaddress.IPv4Network("100.64.0.0/10")
_NAT64 = (ipaddress.IPv6Network("64:ff9b::/96"), ipaddress.IPv6Network("64:ff9b:1::/48"))
# WHATWG URL "ends in a number": such a host is an IPv4 address to browsers and inet_aton.
_NUMERIC_LABEL = re.compile(r"[0-9]+|0[xX][0-9a-fA-F]*")
_LABEL = re.compile(r"[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?")
_HEADER_VALUE = re.compile(r"[\t\x20-\x7e]*")
_HINT_ALLOW = (
    "if this destination is trusted (an intranet service, a test server), add its name to "
    "EgressPolicy(allowed_hosts=...) or its network to EgressPolicy(allowed_networks=...)"
)


# --- the policy -------------------------------------------------------------------------------


@dataclass(frozen=True)
class EgressPolicy:
    """Where outbound HTTP may go, and how much of it. Immutable; safe defaults.

    `allowed_hosts` are names (`"intranet.example"`, or `"*.corp.example"` for its
    subdomains; an IP literal is treated as a one-address network) whose addresses may be
    private; `allowed_networks` are CIDR networks (`"10.1.0.0/16"`) whose addresses may be.
    `allowed_ports=None` allows every port. `ssl_context` replaces the default certificate
    store (the certifi bundle, or `SSL_CERT_FILE`), e.g. for an intranet CA.
    """

    allowed_hosts: Collection[str] = frozenset()
    allowed_networks: Collection[str] = ()
    allowed_schemes: Collection[str] = frozenset({"http", "https"})
    allowed_ports: Collection[int] | None = frozenset({80, 443})
    max_redirects: int = 5
    max_response_bytes: int = 5 * 1024 * 1024
    max_request_bytes: int = 1024 * 1024
    connect_timeout: float = 10.0
    read_timeout: float = 30.0
    total_timeout: float = 60.0
    ssl_context: ssl.SSLContext | None = field(default=None, compare=False)
    networks: tuple[IPNetwork, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        hosts: set[str] = set()
        networks: list[IPNetwork] = []
        for entry in self.allowed_hosts:
            name = entry.strip().lower().removesuffix(".")
            try:
                networks.append(ipaddress.ip_network(name.strip("[]")))
                continue
            except ValueError:
                pass
            bare = name.removeprefix("*.")
            if not bare or not all(_LABEL.fullmatch(label) for label in bare.split(".")):
                raise InvalidInputError(
                    f"allowed host {entry!r} is not a host name",
                    hint="give names such as 'intranet.example' or '*.corp.example'",
                )
            hosts.add(name)
        for entry in self.allowed_networks:
            try:
                networks.append(ipaddress.ip_network(entry.strip(), strict=True))
            except ValueError as exc:
                raise InvalidInputError(
                    f"allowed network {entry!r} is not a CIDR network: {exc}",
                    hint="give networks such as '10.1.0.0/16' or 'fd12:3456::/48'",
                ) from None
        schemes = frozenset(scheme.lower() for scheme in self.allowed_schemes)
        if not schemes <= SUPPORTED_SCHEMES:
            raise InvalidInputError(
                f"unsupported schemes {sorted(schemes - SUPPORTED_SCHEMES)}",
                hint="egress speaks http and https only",
            )
        ports = None if self.allowed_ports is None else frozenset(self.allowed_ports)
        if ports is not None and not all(1 <= port <= 65535 for port in ports):
            raise InvalidInputError("allowed ports must be between 1 and 65535")
        limits = (self.max_response_bytes, self.max_request_bytes)
        timeouts = (self.connect_timeout, self.read_timeout, self.total_timeout)
        if self.max_redirects < 0 or min(limits) < 1 or min(timeouts) <= 0:
            raise InvalidInputError(
                "egress limits must be positive (max_redirects may be 0)",
                hint="check max_redirects, max_*_bytes and the timeouts",
            )
        object.__setattr__(self, "allowed_hosts", frozenset(hosts))
        object.__setattr__(self, "allowed_networks", tuple(str(net) for net in networks))
        object.__setattr__(self, "networks", tuple(networks))
        object.__setattr__(self, "allowed_schemes", schemes)
        object.__setattr__(self, "allowed_ports", ports)

    def allows_host(self, host: str) -> bool:
        """Whether `host` (a normalized ASCII name) is allow-listed by name."""
        return any(
            host == allowed or (allowed.startswith("*.") and host.endswith(allowed[1:]))
            for allowed in self.allowed_hosts
        )

    def allows_address(self, address: IPAddress) -> bool:
        """Whether `address` is in an allow-listed network."""
        plain = _unscoped(address)
        return any(plain in network for network in self.networks)

    def allows_port(self, port: int) -> bool:
        """Whether `port` may be connected to."""
        return self.allowed_ports is None or port in self.allowed_ports


def policy_from_settings() -> EgressPolicy:
    """The egress policy the settings describe (`GATHERING_EGRESS_ALLOWED_*`)."""
    settings = get_settings()
    return EgressPolicy(
        allowed_hosts=frozenset(settings.egress_allowed_hosts),
        allowed_networks=tuple(settings.egress_allowed_networks),
        allowed_ports=frozenset(settings.egress_allowed_ports),
    )


def forbidden_reason(
    address: IPAddress, policy: EgressPolicy, *, host_allowed: bool = False
) -> str | None:
    """Why `address` may not be connected to under `policy`, or None if it may.

    `host_allowed` says the name being resolved is allow-listed (the address may then be
    private). Metadata and IPv4-mapped/compatible addresses are refused in every case.
    """
    address = _unscoped(address)
    embedded = _embedded_ipv4(address)
    if address in METADATA_ADDRESSES or embedded in METADATA_ADDRESSES:
        return "a cloud metadata address"
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return f"an IPv4-mapped IPv6 address (of {address.ipv4_mapped})"
    if isinstance(address, ipaddress.IPv6Address) and _is_ipv4_compatible(address):
        return f"an IPv4-compatible IPv6 address (of {embedded})"
    if host_allowed or policy.allows_address(address):
        return None
    if embedded is not None:
        inner = _address_class(embedded)
        if inner is not None:
            return f"an IPv6 address embedding {embedded}, {inner}"
    return _address_class(address)


def _unscoped(address: IPAddress) -> IPAddress:
    """`address` without an IPv6 zone (`fe80::1%eth0` -> `fe80::1`), for comparisons."""
    if isinstance(address, ipaddress.IPv6Address) and address.scope_id is not None:
        return ipaddress.IPv6Address(int(address))
    return address


def _is_ipv4_compatible(address: ipaddress.IPv6Address) -> bool:
    """`::a.b.c.d` (deprecated), but not `::` and `::1`, which are addresses of their own."""
    return address in _IPV4_COMPATIBLE and int(address) > 1


def _embedded_ipv4(address: IPAddress) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 one carries (mapped, compatible, NAT64, 6to4), if any."""
    if not isinstance(address, ipaddress.IPv6Address):
        return None
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address.sixtofour is not None:
        return address.sixtofour
    if _is_ipv4_compatible(address) or any(address in net for net in _NAT64):
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return None


def _address_class(address: IPAddress) -> str | None:
    """The class of a non-public address ("a private address", ...), None for a public one."""
    checks = (
        (address.is_unspecified, "the unspecified address"),
        (address.is_loopback, "a loopback address"),
        (address.is_link_local, "a link-local address"),
        (address.is_multicast, "a multicast address"),
        (address in _THIS_NETWORK, "an address of 0.0.0.0/8"),
        (address in _SHARED, "a shared (CGNAT) address"),
        (address.is_private, "a private address"),
        (address.is_reserved, "a reserved address"),
        (getattr(address, "is_site_local", False), "a site-local address"),
        (not address.is_global, "an address that is not public"),
    )
    return next((reason for matched, reason in checks if matched), None)


# --- checking a URL ---------------------------------------------------------------------------


@dataclass(frozen=True)
class ResolvedTarget:
    """A URL that passed the policy, with the addresses its host resolved to (all allowed).

    `url` is the URL as checked (no userinfo, no fragment, the host normalized); the
    connection goes to `address`, the first resolved address.
    """

    url: httpx.URL
    scheme: str
    host: str
    port: int
    addresses: tuple[IPAddress, ...]
    ip_literal: bool

    @property
    def address(self) -> IPAddress:
        """The address the connection is pinned to."""
        return self.addresses[0]

    @property
    def origin(self) -> tuple[str, str, int]:
        """(scheme, host, port): a redirect that changes it drops `Authorization`."""
        return (self.scheme, self.host, self.port)

    @property
    def host_header(self) -> str:
        """The `Host` header: the original host (and its port, unless the default)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return host if self.port == DEFAULT_PORTS[self.scheme] else f"{host}:{self.port}"

    def connect_url(self, address: IPAddress | None = None) -> httpx.URL:
        """`url` with its host replaced by `address` (one of `addresses`; default the first)."""
        chosen = self.address if address is None else address
        if chosen not in self.addresses:
            raise ValueError(f"{chosen} is not a checked address of {self.host}")
        return self.url.copy_with(host=str(chosen), port=self.port)


async def system_resolver(host: str, port: int) -> list[str]:
    """The addresses of `host` from the system resolver, via `loop.getaddrinfo` (run on the
    loop's executor: it never blocks the event loop)."""
    loop = asyncio.get_running_loop()
    answers = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP)
    return [str(sockaddr[0]) for _family, _type, _proto, _name, sockaddr in answers]


def safe_url(url: httpx.URL | str) -> str:
    """`url` for logs and messages: scheme, host, port and path only (no userinfo, no query,
    no fragment, which may carry secrets), at most 200 characters."""
    try:
        parsed = url if isinstance(url, httpx.URL) else httpx.URL(url)
        port = f":{parsed.port}" if parsed.port is not None else ""
        host = parsed.raw_host.decode("ascii", "replace")
        host = f"[{host}]" if ":" in host else host
        shown = f"{parsed.scheme}://{host}{port}{parsed.raw_path.split(b'?')[0].decode()}"
    except (httpx.InvalidURL, UnicodeDecodeError, TypeError):
        shown = "(unparsable URL)"
    return shown if len(shown) <= 200 else shown[:200] + "…"


def _invalid(url: httpx.URL | None, reason: str, hint: str) -> InvalidInputError:
    log.info("egress refused", reason=reason, url=safe_url(url) if url else None)
    return InvalidInputError(f"the URL is refused: {reason}", hint=hint)


def _denied(target: str, reason: str, hint: str, **details: Any) -> PermissionDeniedError:
    log.warning("egress refused", reason=reason, url=target, **details)
    return PermissionDeniedError(
        f"the URL {target} is refused: {reason}", hint=hint, details=details
    )


async def check_url(
    url: str | httpx.URL, policy: EgressPolicy, resolver: Resolver | None = None
) -> ResolvedTarget:
    """Check `url` against `policy` and resolve its host once (see the module docstring).

    Returns the target with every resolved address (all allowed). Raises `InvalidInputError`
    for a malformed URL or host, `PermissionDeniedError` for a forbidden scheme, port or
    address (its `details` name the host and address), `ToolTimeoutError` if the resolver
    does not answer within `policy.connect_timeout`.
    """
    parsed, host, literal = _parse(url, policy)
    port = parsed.port if parsed.port is not None else DEFAULT_PORTS[parsed.scheme]
    shown = safe_url(parsed)
    if not 1 <= port <= 65535:
        raise _invalid(parsed, f"port {port} is out of range", "use a port from 1 to 65535")
    if not policy.allows_port(port):
        raise _denied(
            shown,
            f"port {port} is not allowed",
            f"allowed ports: {sorted(policy.allowed_ports or ())}; add it to "
            "EgressPolicy(allowed_ports=...) if it is needed",
            host=host,
            port=port,
        )
    host_allowed = literal is None and policy.allows_host(host)
    if literal is None and not host_allowed:
        if host == "localhost" or host.endswith(".localhost"):
            raise _denied(shown, "localhost is a loopback name", _HINT_ALLOW, host=host)
    if literal is None and host in METADATA_NAMES:
        raise _denied(shown, "a cloud metadata host", "metadata is never fetched", host=host)
    addresses = (literal,) if literal is not None else await _resolve(host, port, policy, resolver)
    for address in addresses:
        reason = forbidden_reason(address, policy, host_allowed=host_allowed)
        if reason is not None:
            refused = str(address)
            via = "" if literal is not None else f"{host} resolves to {refused}, "
            never = "metadata" in reason or "IPv4-" in reason
            hint = (
                "this address is never fetched, whatever the allow-list" if never else _HINT_ALLOW
            )
            raise _denied(shown, f"{via}{reason}", hint, host=host, address=refused)
    return ResolvedTarget(
        url=parsed.copy_with(host=host, fragment=None),
        scheme=parsed.scheme,
        host=host,
        port=port,
        addresses=addresses,
        ip_literal=literal is not None,
    )


MODEL_ENDPOINTS: Final = EgressPolicy(
    allowed_hosts=frozenset({"localhost", "*.localhost"}),
    allowed_networks=("0.0.0.0/0", "::/0"),
    allowed_ports=None,
)
"""Where a model provider may be called: any host and port (self-hosted servers live on private
networks), never a cloud metadata address, a metadata name or a non-canonical numeric host."""


async def _no_lookup(host: str, port: int) -> list[str]:
    return ["192.0.2.1"]  # TEST-NET-1: stands for "some address" when names are not resolved


async def check_model_endpoint(url: str, *, resolve: bool = True) -> None:
    """Raise `InvalidInputError` unless `url` may be a model provider's address under
    `MODEL_ENDPOINTS`; with `resolve`, every address its host resolves to is checked too (a
    name that does not resolve passes: the call itself then reports it unreachable)."""
    try:
        await check_url(url, MODEL_ENDPOINTS, None if resolve else _no_lookup)
    except PermissionDeniedError as exc:
        raise InvalidInputError(
            f"the provider address {safe_url(url)} is refused: {exc.message.rpartition(': ')[2]}",
            hint="model providers are never called at cloud metadata addresses",
        ) from None
    except InvalidInputError as exc:
        if "does not resolve" in exc.message or "has no address" in exc.message:
            return
        raise InvalidInputError(
            f"the provider address {safe_url(url)} is refused: "
            f"{exc.message.removeprefix('the URL is refused: ')}",
            hint=exc.hint,
        ) from None
    except ToolTimeoutError:
        return  # a slow name server: the call itself reports what happens


async def model_endpoint_addresses(
    host: str, port: int, *, resolver: Resolver | None = None
) -> list[str]:
    """The addresses a model provider's request to `host`:`port` connects to, resolved now
    (with `resolver`, default the system's) and checked as `check_model_endpoint` checks a
    stored address (never a cloud metadata address): the `pin` of `gathering.llm.pinning`.
    `ProviderAddressRefusedError` when one is refused; `ProviderUnavailableError` when the
    name does not resolve (or the answer is no address), `ProviderTimeoutError` when it
    does not in time."""
    url = httpx.URL(scheme="http", host=host, port=port, path="/")
    try:
        target = await check_url(url, MODEL_ENDPOINTS, resolver)
    except ToolTimeoutError:
        raise ProviderTimeoutError(
            f"the provider's host {host} did not resolve in time", hint="try again later"
        ) from None
    except PermissionDeniedError as exc:
        raise ProviderAddressRefusedError(
            f"the provider address {host}:{port} is refused: {exc.message.rpartition(': ')[2]}",
            hint="model providers are never called at cloud metadata addresses; "
            "check the provider's base_url and its DNS",
            details={"host": host, "port": port},
        ) from None
    except InvalidInputError as exc:
        if "does not resolve" not in exc.message and "has no address" not in exc.message:
            raise ProviderAddressRefusedError(  # a host form no provider has (2130706433)
                f"the provider address {host}:{port} is refused: {exc.message}",
                hint="check the provider's base_url",
                details={"host": host, "port": port},
            ) from None
        raise ProviderUnavailableError(
            f"cannot reach the provider at {host}:{port}: {exc.message}",
            hint="check the provider's base_url and its DNS",
        ) from None
    except GatheringError as exc:  # a name server's answer that is no address
        raise ProviderUnavailableError(
            f"cannot reach the provider at {host}:{port}: {exc.message}",
            hint="check the provider's base_url and its DNS",
        ) from None
    return [str(address) for address in target.addresses]


def _parse(url: str | httpx.URL, policy: EgressPolicy) -> tuple[httpx.URL, str, IPAddress | None]:
    """The parsed URL, its normalized host, and the host as an address if it is a literal."""
    text = str(url)
    if len(text) > MAX_URL_CHARS:
        raise _invalid(None, f"it is longer than {MAX_URL_CHARS} characters", "use a shorter URL")
    try:
        parsed = url if isinstance(url, httpx.URL) else httpx.URL(url)
    except (httpx.InvalidURL, TypeError, UnicodeError) as exc:
        raise _invalid(
            None, f"it cannot be parsed ({exc})", "give an absolute http(s) URL"
        ) from None
    if parsed.scheme not in policy.allowed_schemes:
        scheme = parsed.scheme or "(none)"
        raise _denied(
            safe_url(parsed) if parsed.scheme else "(relative URL)",
            f"the scheme {scheme!r} is not allowed",
            f"allowed schemes: {sorted(policy.allowed_schemes)}",
            scheme=scheme[:20],
        )
    if parsed.userinfo:
        raise _invalid(
            parsed,
            "it has userinfo (credentials before '@')",
            "remove the 'user@' part; give credentials in an Authorization header",
        )
    raw = parsed.raw_host.decode("ascii", "replace")
    if not raw:
        raise _invalid(parsed, "it has no host", "give an absolute http(s) URL")
    if ":" in raw:  # an IPv6 literal (httpx validated it)
        if "%" in raw:
            raise _invalid(parsed, "IPv6 zone identifiers are not accepted", "remove the %zone")
        try:
            return parsed, raw, ipaddress.IPv6Address(raw)
        except ValueError:
            raise _invalid(parsed, "invalid IPv6 address", "check the address") from None
    host = raw.removesuffix(".")
    labels = host.split(".")
    if _NUMERIC_LABEL.fullmatch(labels[-1]):
        try:
            return parsed, host, ipaddress.IPv4Address(host)
        except ValueError:
            raise _invalid(
                parsed,
                f"{host!r} is not a canonical IPv4 address (octal, hex, integer or short forms "
                "are read as other addresses)",
                "write IPv4 addresses as four decimal numbers, e.g. 93.184.215.14",
            ) from None
    if len(host) > 253 or not all(_LABEL.fullmatch(label) for label in labels):
        raise _invalid(
            parsed,
            "the host is not a valid name",
            "host names are letters, digits, '-' and '.' (international names are accepted)",
        )
    return parsed, host, None


async def _resolve(
    host: str, port: int, policy: EgressPolicy, resolver: Resolver | None
) -> tuple[IPAddress, ...]:
    resolve = resolver or system_resolver
    try:
        async with asyncio.timeout(policy.connect_timeout):
            answers = await resolve(host, port)
    except TimeoutError:
        raise ToolTimeoutError(
            f"the name {host!r} did not resolve within {policy.connect_timeout:g}s",
            hint="try again later; the DNS server may be slow",
        ) from None
    except OSError as exc:  # socket.gaierror
        log.info("egress name does not resolve", host=host, error=str(exc))
        raise InvalidInputError(
            f"the host name {host!r} does not resolve",
            hint="check the spelling of the host name",
        ) from None
    addresses: list[IPAddress] = []
    for answer in answers:
        try:
            address = ipaddress.ip_address(answer)
        except ValueError:
            raise ToolFailedError(f"the resolver gave an invalid address for {host!r}") from None
        if address not in addresses:
            addresses.append(address)
    if not addresses:
        raise InvalidInputError(
            f"the host name {host!r} has no address", hint="check the host name"
        )
    return tuple(addresses)


# --- fetching -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class FetchResult:
    """The final response of `fetch`: its body (decoded from gzip/deflate, at most
    `max_response_bytes`; `truncated` if cut), the final URL and the redirects followed."""

    status: int
    headers: httpx.Headers
    content: bytes
    truncated: bool
    url: str
    redirects: tuple[str, ...] = ()

    @property
    def media_type(self) -> str:
        """The content type without parameters, lower-case ("" if none)."""
        content_type: str = self.headers.get("content-type", "")
        return content_type.split(";")[0].strip().lower()

    @property
    def charset(self) -> str | None:
        """The charset named by the Content-Type header, if Python knows it."""
        message = Message()
        message["content-type"] = self.headers.get("content-type", "")
        charset = message.get_content_charset()
        if charset is None:
            return None
        try:
            return str(codecs.lookup(charset).name)
        except LookupError:
            return None

    def text(self, default_charset: str = "utf-8") -> str:
        """The body as text, decoded with its charset (else `default_charset`); undecodable
        bytes (and a character cut by truncation) become U+FFFD."""
        return self.content.decode(self.charset or default_charset, errors="replace")


async def fetch(
    method: str,
    url: str,
    policy: EgressPolicy,
    *,
    body: bytes | str | None = None,
    headers: Mapping[str, str] | None = None,
    resolver: Resolver | None = None,
) -> FetchResult:
    """Make one HTTP request under `policy`, following redirects (each checked again).

    `headers` may only hold `CALLER_HEADERS`; a `str` body is sent as UTF-8. Non-2xx
    statuses are results, not errors. Raises the errors of `check_url` (for the URL and each
    redirect), `InvalidInputError` for a bad method, header or body, `ToolTimeoutError` when
    a timeout of the policy passes, `ToolFailedError` when the connection or the server
    fails (or redirects more than `max_redirects` times).
    """
    verb = method.upper()
    if verb not in get_args(Method):
        raise InvalidInputError(
            f"the method {method!r} is not supported",
            hint=f"use one of {', '.join(get_args(Method))}",
        )
    content = body.encode("utf-8") if isinstance(body, str) else body
    if content is not None and len(content) > policy.max_request_bytes:
        raise InvalidInputError(
            f"the request body is {len(content)} bytes, over {policy.max_request_bytes}",
            hint="send a smaller body",
        )
    request_headers = _request_headers(headers, has_body=content is not None)
    timer = asyncio.timeout(policy.total_timeout)
    try:
        async with timer:
            return await _follow(verb, url, policy, content, request_headers, resolver)
    except TimeoutError:
        if not timer.expired():
            raise
        raise ToolTimeoutError(
            f"fetching {safe_url(url)} took over {policy.total_timeout:g}s and was stopped",
            hint="the site is slow; try again later or ask for less",
        ) from None


def _request_headers(headers: Mapping[str, str] | None, *, has_body: bool) -> dict[str, str]:
    sent = {"User-Agent": USER_AGENT, "Accept": "*/*", "Accept-Encoding": "gzip, deflate"}
    for name, value in (headers or {}).items():
        key = str(name).strip().lower()
        if key not in CALLER_HEADERS:
            raise InvalidInputError(
                f"the request header {str(name)[:60]!r} is not allowed",
                hint=f"allowed request headers: {', '.join(CALLER_HEADERS.values())}",
            )
        if not isinstance(value, str) or len(value) > MAX_HEADER_VALUE_CHARS:
            raise InvalidInputError(f"the value of {CALLER_HEADERS[key]} is too long or not text")
        if not _HEADER_VALUE.fullmatch(value):
            raise InvalidInputError(
                f"the value of {CALLER_HEADERS[key]} has characters a header may not hold",
                hint="header values are printable ASCII, without line breaks",
            )
        sent[CALLER_HEADERS[key]] = value
    if not has_body:
        sent.pop("Content-Type", None)
    return sent


async def _follow(
    method: str,
    url: str,
    policy: EgressPolicy,
    content: bytes | None,
    headers: dict[str, str],
    resolver: Resolver | None,
) -> FetchResult:
    target = await check_url(url, policy, resolver)
    redirects: list[str] = []
    while True:
        result = await _exchange(target, method, content, headers, policy)
        if isinstance(result, FetchResult):
            return dataclasses.replace(result, redirects=tuple(redirects))
        status, location = result
        if len(redirects) >= policy.max_redirects:
            log.warning("egress redirects capped", url=safe_url(target.url), limit=len(redirects))
            raise ToolFailedError(
                f"{safe_url(url)} redirected more than {policy.max_redirects} times",
                hint="the site may loop; fetch the final URL directly",
            )
        try:
            next_url = target.url.join(location)
        except (httpx.InvalidURL, UnicodeError, TypeError):
            raise ToolFailedError(
                f"{safe_url(target.url)} redirected to an invalid URL",
                hint="the site is broken; try another URL",
            ) from None
        next_target = await _check_redirect(next_url, target, policy, resolver)
        if status == 303 or (status in (301, 302) and method == "POST"):
            method = "GET" if method != "HEAD" else method
            content = None
            headers = {k: v for k, v in headers.items() if k != "Content-Type"}
        if next_target.origin != target.origin:
            headers = {k: v for k, v in headers.items() if k != "Authorization"}
        redirects.append(str(next_target.url))
        target = next_target


async def _check_redirect(
    url: httpx.URL, previous: ResolvedTarget, policy: EgressPolicy, resolver: Resolver | None
) -> ResolvedTarget:
    try:
        return await check_url(url, policy, resolver)
    except (InvalidInputError, PermissionDeniedError) as exc:
        error = type(exc)(
            f"a redirect from {safe_url(previous.url)} was refused: {exc.message}",
            hint=exc.hint,
            details=exc.details,
        )
        raise error from None


@functools.cache
def _default_ssl_context() -> ssl.SSLContext:
    """httpx's default context (certifi, or SSL_CERT_FILE / SSL_CERT_DIR); it reads files,
    so it is built once, on a thread."""
    return httpx.create_ssl_context()


async def _exchange(
    target: ResolvedTarget,
    method: str,
    content: bytes | None,
    headers: dict[str, str],
    policy: EgressPolicy,
) -> FetchResult | tuple[int, str]:
    """One request to the target, pinned to its checked addresses: the response, or
    (status, Location) to follow. The next address is tried only when connecting to one
    fails, so nothing was sent yet."""
    context = policy.ssl_context
    if context is None:
        context = await asyncio.to_thread(_default_ssl_context)
    shown = safe_url(target.url)
    try:
        for address in target.addresses[:-1]:
            try:
                return await _request(target, address, method, content, headers, policy, context)
            except (httpx.ConnectError, httpx.ConnectTimeout):
                log.info("egress connect failed, next address", url=shown, address=str(address))
        last = target.addresses[-1]
        return await _request(target, last, method, content, headers, policy, context)
    except httpx.TimeoutException as exc:
        raise ToolTimeoutError(
            f"{shown} did not answer in time ({type(exc).__name__})",
            hint="the site is slow or down; try again later",
        ) from None
    except httpx.InvalidURL:  # httpx parses a redirect's Location before we see it
        raise ToolFailedError(
            f"{shown} answered with an invalid URL (a redirect to a malformed Location?)",
            hint="the site is broken; try another URL",
        ) from None
    except (httpx.HTTPError, httpx.StreamError) as exc:
        log.info("egress request failed", url=shown, error=type(exc).__name__)
        raise ToolFailedError(
            f"the request to {shown} failed: {type(exc).__name__}: {str(exc)[:200]}",
            hint="the site may be down, or not speak HTTP(S) on that port",
        ) from None


async def _request(
    target: ResolvedTarget,
    address: IPAddress,
    method: str,
    content: bytes | None,
    headers: dict[str, str],
    policy: EgressPolicy,
    context: ssl.SSLContext,
) -> FetchResult | tuple[int, str]:
    """The request on a new client (no cookie, connection or TLS session of another hop),
    connected to `address`; `Host` and TLS (SNI and certificate) name the original host."""
    timeout = httpx.Timeout(
        connect=policy.connect_timeout,
        read=policy.read_timeout,
        write=policy.read_timeout,
        pool=policy.connect_timeout,
    )
    extensions: dict[str, str] = {}
    if target.scheme == "https" and not target.ip_literal:
        extensions["sni_hostname"] = target.host  # and the certificate is checked for it
    async with (
        httpx.AsyncClient(
            verify=context, trust_env=False, timeout=timeout, follow_redirects=False
        ) as client,
        client.stream(
            method,
            target.connect_url(address),
            headers={**headers, "Host": target.host_header},
            content=content,
            extensions=extensions,
        ) as response,
    ):
        location = response.headers.get("location")
        if response.status_code in REDIRECT_STATUSES and location:
            return response.status_code, location
        data, truncated = await _read_body(response, policy.max_response_bytes)
        return FetchResult(response.status_code, response.headers, data, truncated, str(target.url))


async def _read_body(response: httpx.Response, limit: int) -> tuple[bytes, bool]:
    """At most `limit` decoded bytes of the body, and whether it was cut."""
    decoder = _BodyDecoder(response.headers.get("content-encoding", ""))
    chunks: list[bytes] = []
    size = 0
    async for raw in response.aiter_raw():
        data = decoder.decode(raw, limit - size + 1)
        if size + len(data) > limit:
            chunks.append(data[: limit - size])
            return b"".join(chunks), True
        chunks.append(data)
        size += len(data)
    rest = decoder.flush()
    if size + len(rest) > limit:
        chunks.append(rest[: limit - size])
        return b"".join(chunks), True
    chunks.append(rest)
    return b"".join(chunks), False


class _BodyDecoder:
    """Decodes a gzip or deflate body with a bound on each output: a compression bomb is
    cut at the byte cap instead of filling memory."""

    def __init__(self, content_encoding: str) -> None:
        codings = [c.strip().lower() for c in content_encoding.split(",") if c.strip()]
        codings = [c for c in codings if c != "identity"]
        self._zlib: Any = None
        if codings in (["gzip"], ["x-gzip"], ["deflate"]):
            self._zlib = zlib.decompressobj(32 + zlib.MAX_WBITS)  # gzip or zlib header
        elif codings:
            raise ToolFailedError(
                f"the server sent an unsupported Content-Encoding {content_encoding[:40]!r}",
                hint="only gzip and deflate are accepted",
            )

    def decode(self, data: bytes, at_most: int) -> bytes:
        """Up to `at_most` (>= 1) decoded bytes of `data`."""
        if self._zlib is None:
            return data[:at_most]
        try:
            out: bytes = self._zlib.decompress(data, at_most)
        except zlib.error:
            raise ToolFailedError("the server sent a corrupt compressed body") from None
        return out

    def flush(self) -> bytes:
        """What the decoder still holds at the end of the body."""
        if self._zlib is None:
            return b""
        try:
            out: bytes = self._zlib.flush()
        except zlib.error:
            raise ToolFailedError("the server sent a corrupt compressed body") from None
        return out
