"""A local HTTP server answering `POST /v1/embeddings` the way OpenAI does, with deterministic
bag-of-words vectors, so that the real `openai` embedding provider (in this process or in a
worker process, through `OPENAI_BASE_URL`) runs at the wire. `hold()` makes every request
wait until `release()`; `arrived` is set when a held request came in."""

from __future__ import annotations

import hashlib
import json
import math
import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

DIMENSIONS = 16


def bag_of_words(text: str, dimensions: int = DIMENSIONS) -> list[float]:
    vector = [0.0] * dimensions
    for word in re.findall(r"[a-z]+", text.lower()):
        digest = hashlib.sha256(word.encode()).digest()
        vector[int.from_bytes(digest[:4], "big") % dimensions] += 1.0
    norm = math.sqrt(sum(x * x for x in vector))
    return [x / norm for x in vector] if norm else [1.0] + [0.0] * (dimensions - 1)


class EmbeddingWire:
    def __init__(self) -> None:
        self.requests: list[dict] = []
        self.arrived = threading.Event()
        self._open = threading.Event()
        self._open.set()
        wire = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: object) -> None:
                return

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["content-length"])))
                wire.requests.append(body)
                if not wire._open.is_set():
                    wire.arrived.set()
                    wire._open.wait(120)
                texts = body["input"] if isinstance(body["input"], list) else [body["input"]]
                payload = {
                    "object": "list",
                    "model": body["model"],
                    "data": [
                        {"object": "embedding", "index": i, "embedding": bag_of_words(t)}
                        for i, t in enumerate(texts)
                    ],
                    "usage": {"prompt_tokens": 1, "total_tokens": 1},
                }
                data = json.dumps(payload).encode()
                try:
                    self.send_response(200)
                    self.send_header("content-type", "application/json")
                    self.send_header("content-length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except OSError:  # the client (a killed worker) went away
                    pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def base_url(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}/v1"

    def env(self, model: str) -> dict[str, str]:
        """The settings that make `openai` embeddings of `model` go to this server."""
        return {
            "GATHERING_EMBEDDING_PROVIDER": "openai",
            "GATHERING_EMBEDDING_MODEL": model,
            "OPENAI_BASE_URL": self.base_url,
            "OPENAI_API_KEY": "sk-test",
        }

    def hold(self) -> None:
        self.arrived.clear()
        self._open.clear()

    def release(self) -> None:
        self._open.set()


@contextmanager
def embedding_wire() -> Iterator[EmbeddingWire]:
    wire = EmbeddingWire()
    wire.thread.start()
    try:
        yield wire
    finally:
        wire.release()
        wire.server.shutdown()
        wire.server.server_close()
