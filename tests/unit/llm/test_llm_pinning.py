"""Provider requests pinned to the addresses checked for them (`gathering.llm.pinning`, with
`gathering.tools.egress.model_endpoint_addresses` as the pin): a name that rebinds to a cloud
metadata address between two calls is refused before anything is sent, the connection goes
to the checked address with the host's own `Host` header, and the next address is tried when
one cannot be connected to. The name server is a function given to the pin; the provider's
server is the wire stub, on loopback."""

from __future__ import annotations

import functools
import socket
from collections.abc import Callable

import pytest

from gathering.errors import LLMError, ProviderAddressRefusedError, ProviderUnavailableError
from gathering.llm import AnthropicProvider, Message, OllamaProvider, OpenAIProvider, RetryPolicy
from gathering.llm.base import BaseProvider
from gathering.testing import LLMStubServer
from gathering.tools.egress import model_endpoint_addresses

ONCE = RetryPolicy(max_attempts=1)


@pytest.fixture(autouse=True)
def named_hosts(settings_env) -> None:  # type: ignore[no-untyped-def]
    """The tests' switch refuses model hosts that are not loopback names; these connect to
    the stub on loopback whatever name they say (the pin decides where they connect)."""
    settings_env(model_requests="any")


HOST = "models.internal.example"


def port(stub: LLMStubServer) -> int:
    return int(stub.url.rpartition(":")[2])


class NameServer:
    """Answers each lookup with the next of `answers` (the last one again once they run out);
    counts the lookups."""

    def __init__(self, *answers: list[str] | Exception) -> None:
        self.answers = list(answers)
        self.lookups: list[tuple[str, int]] = []

    async def __call__(self, host: str, port: int) -> list[str]:
        self.lookups.append((host, port))
        answer = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
        if isinstance(answer, Exception):
            raise answer
        return answer


def openai(stub: LLMStubServer, dns: NameServer) -> BaseProvider:
    return OpenAIProvider(
        "gpt-4o",
        api_key="sk-test",
        base_url=f"http://{HOST}:{port(stub)}/v1",
        retry=ONCE,
        pin=functools.partial(model_endpoint_addresses, resolver=dns),
    )


def anthropic(stub: LLMStubServer, dns: NameServer) -> BaseProvider:
    return AnthropicProvider(
        "claude-sonnet-5-5",
        api_key="sk-ant-test",
        base_url=f"http://{HOST}:{port(stub)}",
        retry=ONCE,
        pin=functools.partial(model_endpoint_addresses, resolver=dns),
    )


def ollama(stub: LLMStubServer, dns: NameServer) -> BaseProvider:
    return OllamaProvider(
        "llama3.2",
        host=f"http://{HOST}:{port(stub)}",
        retry=ONCE,
        pin=functools.partial(model_endpoint_addresses, resolver=dns),
    )


KINDS: list[tuple[Callable[[LLMStubServer, NameServer], BaseProvider], str]] = [
    (openai, "openai_chat.json"),
    (anthropic, "anthropic_message.json"),
    (ollama, "ollama_chat.json"),
]


@pytest.mark.parametrize(("make", "reply"), KINDS, ids=["openai", "anthropic", "ollama"])
async def test_a_name_that_rebinds_to_metadata_is_refused_before_the_request(
    stub, recorded, make, reply
):
    dns = NameServer(["127.0.0.1"], ["169.254.169.254"])
    provider = make(stub, dns)
    stub.add_json(recorded.json(reply))
    await provider.generate([Message.user("Hi")])
    assert stub.last.headers["host"] == f"{HOST}:{port(stub)}"  # the host's, not the address
    sent = len(stub.requests)
    stub.add_json(recorded.json(reply))
    with pytest.raises(ProviderAddressRefusedError) as refused:
        await provider.generate([Message.user("Hi again")])
    assert "169.254.169.254" in refused.value.message and HOST in refused.value.message
    assert refused.value.public_message is not None and HOST not in refused.value.public_message
    assert len(stub.requests) == sent  # nothing went out
    assert dns.lookups == [(HOST, port(stub)), (HOST, port(stub))]  # one lookup per request


async def test_the_next_address_is_tried_when_one_cannot_be_connected_to(stub, recorded):
    dns = NameServer(["127.0.0.2", "127.0.0.1"])  # nothing listens on 127.0.0.2
    stub.add_json(recorded.json("openai_chat.json"))
    completion = await openai(stub, dns).generate([Message.user("Hi")])
    assert completion.text and len(stub.requests) == 1


async def test_a_name_that_does_not_resolve_is_unreachable_not_refused(stub):
    dns = NameServer(socket.gaierror(socket.EAI_NONAME, "Name or service not known"))
    with pytest.raises(ProviderUnavailableError):
        await openai(stub, dns).generate([Message.user("Hi")])
    assert stub.requests == []


async def test_a_private_address_is_allowed(stub, recorded):
    """Self-hosted model servers live on private networks and on loopback: only metadata
    addresses (and IPv4-mapped forms) are never called."""
    dns = NameServer(["::ffff:169.254.169.254"])
    with pytest.raises(ProviderAddressRefusedError):
        await openai(stub, dns).generate([Message.user("Hi")])
    dns = NameServer(["127.0.0.1"])
    stub.add_json(recorded.json("openai_chat.json"))
    assert (await openai(stub, dns).generate([Message.user("Hi")])).text


@pytest.mark.parametrize(("make", "reply"), KINDS, ids=["openai", "anthropic", "ollama"])
async def test_redirects_are_followed_and_each_hop_is_checked(stub, recorded, make, reply):
    """As the SDKs' own clients do, a redirect is followed; its target is resolved and checked
    like the first request, so a redirect to a metadata address is refused unsent."""
    dns = NameServer(["127.0.0.1"])
    provider = make(stub, dns)
    path = stub_path(reply)
    stub.add_json({}, status=307, headers={"location": f"http://{HOST}:{port(stub)}{path}"})
    stub.add_json(recorded.json(reply))
    await provider.generate([Message.user("Hi")])
    assert [r.path for r in stub.requests[-2:]] == [path, path]
    sent = len(stub.requests)
    stub.add_json({}, status=307, headers={"location": "http://169.254.169.254/latest/meta-data/"})
    with pytest.raises(LLMError) as refused:  # another origin (SDKs with keys), or refused
        await provider.generate([Message.user("Hi")])
    assert len(stub.requests) == sent + 1  # the redirect only
    chain, cause = [], refused.value.__cause__
    while cause is not None and cause not in chain:
        chain.append(cause)
        cause = cause.__cause__
    assert cause is None and refused.value not in chain  # a chain, not a loop


@pytest.mark.parametrize(("make", "reply"), KINDS, ids=["openai", "anthropic", "ollama"])
async def test_a_name_server_answer_that_is_no_address_is_an_unreachable_provider(
    stub, make, reply
):
    dns = NameServer(["not-an-address"])
    with pytest.raises(ProviderUnavailableError) as unreachable:
        await make(stub, dns).generate([Message.user("Hi")])
    assert HOST not in (unreachable.value.public_message or "")
    assert stub.requests == []


def stub_path(reply: str) -> str:
    return {
        "openai_chat.json": "/v1/chat/completions",
        "anthropic_message.json": "/v1/messages",
        "ollama_chat.json": "/api/chat",
    }[reply]


@pytest.mark.parametrize(("make", "reply"), KINDS, ids=["openai", "anthropic", "ollama"])
async def test_a_redirect_to_another_origin_is_not_followed_with_the_key(
    stub, recorded, make, reply
):
    """httpx drops `Authorization` on such a redirect, not a key in another header (older
    Anthropic SDKs send `x-api-key`): no pinned client follows a redirect to another origin
    (nor keeps a pool for each host a redirect names)."""
    dns = NameServer(["127.0.0.1"])  # the other name leads to the same stub: it would see it
    provider = make(stub, dns)
    other = f"http://collector.example:{port(stub)}{stub_path(reply)}"
    stub.add_json({}, status=307, headers={"location": other})
    stub.add_json(recorded.json(reply))
    with pytest.raises(LLMError) as refused:
        await provider.generate([Message.user("Hi")])
    assert "redirected to another origin" in refused.value.message
    assert [r.headers["host"] for r in stub.requests] == [f"{HOST}:{port(stub)}"]


async def test_a_host_form_no_provider_has_is_refused_not_retried() -> None:
    """A numeric host that is no canonical address (what inet_aton reads as 127.0.0.1) is a
    refusal, which is not retried, not an unreachable provider."""
    for host in ("2130706433", "0x7f.1", "127.1"):
        with pytest.raises(ProviderAddressRefusedError):
            await model_endpoint_addresses(host, 80)
