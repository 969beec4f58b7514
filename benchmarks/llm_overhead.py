"""Overhead of `generate` through each remote provider, against the raw SDK call.

A zero-latency stub server (a separate process on 127.0.0.1 that answers every request at
once with a recorded payload, and stops by itself after a bounded number of requests or
seconds) stands in for Anthropic, OpenAI and Ollama. For each provider the same request is
made through the raw async SDK client and through GatheRing's provider, in alternating
rounds, and the median time per call of each is reported, in microseconds and as a ratio.

Target: GatheRing / raw SDK <= 1.10.

    python benchmarks/llm_overhead.py [--calls 100] [--rounds 15] [--warmup 100]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

FIXTURES = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "llm"
ROUTES = {
    b"/v1/messages": "anthropic_message.json",
    b"/v1/chat/completions": "openai_chat.json",
    b"/api/chat": "ollama_chat.json",
}
TARGET = 1.10
PROMPT = "Hello"
MAX_TOKENS = 1024
TIMEOUT = 30.0

Call = Callable[[], Awaitable[Any]]


# --- the stub server (runs in its own process) ------------------------------------------


def _canned_response(body: bytes) -> bytes:
    head = (
        "HTTP/1.1 200 OK\r\n"
        "content-type: application/json\r\n"
        f"content-length: {len(body)}\r\n"
        "connection: keep-alive\r\n\r\n"
    )
    return head.encode() + body


async def serve(max_requests: int, max_seconds: float) -> None:
    """Answer up to `max_requests` requests for at most `max_seconds`, then exit.

    A raw asyncio server rather than uvicorn: the stub must cost as little as possible so
    that the measured time is the client's.
    """
    responses = {
        path: _canned_response(json.dumps(json.loads((FIXTURES / name).read_text())).encode())
        for path, name in ROUTES.items()
    }
    not_found = b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n"
    served = 0
    finished = asyncio.Event()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal served
        try:
            while not finished.is_set():
                head = await reader.readuntil(b"\r\n\r\n")
                request_line, *header_lines = head.split(b"\r\n")
                path = request_line.split(b" ")[1].split(b"?")[0]
                length = 0
                for line in header_lines:
                    if line[:15].lower() == b"content-length:":
                        length = int(line[15:])
                if length:
                    await reader.readexactly(length)
                writer.write(responses.get(path, not_found))
                served += 1
                if served >= max_requests:
                    finished.set()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    print(port, flush=True)
    try:
        await asyncio.wait_for(finished.wait(), max_seconds)
    except TimeoutError:
        pass
    server.close()


# --- the measurement ----------------------------------------------------------------------


async def per_call_seconds(call: Call, calls: int) -> float:
    started = time.perf_counter()
    for _ in range(calls):
        await call()
    return (time.perf_counter() - started) / calls


async def compare(
    providers: dict[str, tuple[Call, Call]], *, calls: int, rounds: int, warmup: int
) -> dict[str, tuple[float, float]]:
    """Median seconds per call (raw, ours) for each provider.

    Everything is warmed up first; then each round times every provider's raw and wrapped
    call in turn (the order flipping from round to round) so that drift in machine speed
    hits both sides alike.
    """
    for raw, ours in providers.values():
        for _ in range(warmup):
            await raw()
            await ours()
    times: dict[str, tuple[list[float], list[float]]] = {name: ([], []) for name in providers}
    for round_number in range(rounds):
        for name, (raw, ours) in providers.items():
            raw_times, our_times = times[name]
            sides = [(raw, raw_times), (ours, our_times)]
            if round_number % 2:
                sides.reverse()
            for call, samples in sides:
                samples.append(await per_call_seconds(call, calls))
    return {
        name: (statistics.median(raw_times), statistics.median(our_times))
        for name, (raw_times, our_times) in times.items()
    }


def pairs(base_url: str) -> dict[str, tuple[Call, Call]]:
    from anthropic import AsyncAnthropic
    from ollama import AsyncClient
    from openai import AsyncOpenAI

    from gathering.llm import AnthropicProvider, Message, OllamaProvider, OpenAIProvider

    messages = [Message.user(PROMPT)]

    anthropic_raw = AsyncAnthropic(
        api_key="sk-bench", base_url=base_url, max_retries=0, timeout=TIMEOUT
    )
    anthropic_ours = AnthropicProvider(
        "claude-sonnet-5-5", api_key="sk-bench", base_url=base_url, timeout=TIMEOUT
    )

    async def anthropic_sdk() -> Any:
        return await anthropic_raw.messages.create(
            model="claude-sonnet-5-5",
            max_tokens=MAX_TOKENS,
            messages=[{"role": "user", "content": [{"type": "text", "text": PROMPT}]}],
        )

    openai_raw = AsyncOpenAI(
        api_key="sk-bench", base_url=f"{base_url}/v1", max_retries=0, timeout=TIMEOUT
    )
    openai_ours = OpenAIProvider(
        "gpt-4o", api_key="sk-bench", base_url=f"{base_url}/v1", timeout=TIMEOUT
    )

    async def openai_sdk() -> Any:
        return await openai_raw.chat.completions.create(
            model="gpt-4o",
            max_tokens=MAX_TOKENS,
            messages=[{"role": "user", "content": PROMPT}],
        )

    ollama_raw = AsyncClient(host=base_url, timeout=TIMEOUT)
    ollama_ours = OllamaProvider("llama3.2", host=base_url, timeout=TIMEOUT)

    async def ollama_sdk() -> Any:
        return await ollama_raw.chat(
            model="llama3.2",
            messages=[{"role": "user", "content": PROMPT}],
            options={"num_predict": MAX_TOKENS},
        )

    return {
        "anthropic": (anthropic_sdk, lambda: anthropic_ours.generate(messages)),
        "openai": (openai_sdk, lambda: openai_ours.generate(messages)),
        "ollama": (ollama_sdk, lambda: ollama_ours.generate(messages)),
    }


async def measure(base_url: str, args: argparse.Namespace) -> bool:
    print(
        f"{args.rounds} rounds x {args.calls} calls per side, {args.warmup} warm-up calls; "
        f"stub server on {base_url}"
    )
    print(
        f"{'provider':<10} {'raw SDK µs':>11} {'GatheRing µs':>13} {'overhead µs':>12} {'ratio':>7}"
    )
    ok = True
    results = await compare(
        pairs(base_url), calls=args.calls, rounds=args.rounds, warmup=args.warmup
    )
    for name, (raw_s, our_s) in results.items():
        ratio = our_s / raw_s
        ok &= ratio <= TARGET
        print(
            f"{name:<10} {raw_s * 1e6:>11.1f} {our_s * 1e6:>13.1f} "
            f"{(our_s - raw_s) * 1e6:>12.1f} {ratio:>6.3f}x"
        )
    print(f"target <= {TARGET:.2f}x: {'met' if ok else 'NOT met'}")
    return ok


def run(args: argparse.Namespace) -> bool:
    """Start the stub server process, measure against it, stop it."""
    per_provider = 2 * (args.warmup + args.calls * args.rounds)
    server = subprocess.Popen(
        [
            sys.executable,
            __file__,
            "--serve",
            "--max-requests",
            str(3 * per_provider + 100),
            "--max-seconds",
            str(args.max_seconds),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert server.stdout is not None
        port = int(server.stdout.readline())
        return asyncio.run(measure(f"http://127.0.0.1:{port}", args))
    finally:
        server.terminate()
        server.wait(timeout=10)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=100, help="calls per round and side")
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--warmup", type=int, default=100)
    parser.add_argument("--max-seconds", type=float, default=600.0, help="stub server lifetime")
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--max-requests", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        asyncio.run(serve(args.max_requests, args.max_seconds))
        return
    run(args)


if __name__ == "__main__":
    main()
