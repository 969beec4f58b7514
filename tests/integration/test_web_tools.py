"""The web tools `http_fetch` and `web_page`, against a real `http.server` on loopback.

The server runs in a thread of its own (it blocks); the tools run in the event loop. The
policy allow-lists the name `site.test`, which a fake resolver maps to 127.0.0.1; the
egress rules themselves are attacked in test_egress.py.
"""

from __future__ import annotations

import gzip
import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from gathering.errors import InvalidInputError, PermissionDeniedError, ToolFailedError
from gathering.tools.builtins.web import MAX_TEXT_CHARS, http_fetch, web_page
from gathering.tools.egress import EgressPolicy

ARTICLE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Egress notes</title></head>
<body>
<nav><a href="/">Home</a> <a href="/about">About</a></nav>
<article>
<h1>Why pin the address</h1>
<p>A name is resolved once and the connection goes to the address that was checked, so a
second answer from the name server cannot move the request to a private address. Read the
<a href="/rfc">background notes</a> for the long story.</p>
<h2>What is refused</h2>
<ul><li>loopback and private addresses</li><li>metadata endpoints</li></ul>
<p>Every redirect goes through the same checks again, and the body is capped, with the cut
flagged rather than treated as an error. Café au lait is served in the canteen.</p>
</article>
<footer>Copyright</footer>
</body></html>"""


@dataclass
class Answer:
    status: int = 200
    content_type: str | None = "text/plain; charset=utf-8"
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class Received:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


class WebServer:
    """`http.server` on 127.0.0.1 in a thread, answering each path with its `Answer`."""

    def __init__(self) -> None:
        self.answers: dict[str, Answer] = {}
        self.received: list[Received] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def _answer(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length)
                server.received.append(
                    Received(
                        self.command,
                        self.path,
                        {k.lower(): v for k, v in self.headers.items()},
                        body,
                    )
                )
                answer = server.answers.get(self.path, Answer(404, body=b"not found"))
                if self.path == "/echo":
                    answer = Answer(
                        body=json.dumps({"method": self.command, "body": body.decode()}).encode()
                    )
                self.send_response(answer.status)
                if answer.content_type:
                    self.send_header("Content-Type", answer.content_type)
                for name, value in answer.headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(answer.body)))
                self.end_headers()
                self.wfile.write(answer.body)

            do_GET = do_POST = _answer

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def url(self, path: str) -> str:
        return f"http://site.test:{self.port}{path}"

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join()


@pytest.fixture(scope="module")
def web() -> Iterator[WebServer]:
    running = WebServer()
    yield running
    running.close()


@pytest.fixture
def site(web: WebServer) -> WebServer:
    web.answers.clear()
    web.received.clear()
    return web


async def resolver(host: str, port: int) -> list[str]:
    """The DNS seam: site.test is the loopback server; every other name is a private one."""
    return ["127.0.0.1"] if host == "site.test" else ["10.0.0.7"]


POLICY = EgressPolicy(allowed_hosts={"site.test"}, allowed_ports=None)


async def test_http_fetch_returns_status_safe_headers_and_decoded_text(site: WebServer):
    site.answers["/latin"] = Answer(
        content_type="text/plain; charset=iso-8859-1",
        body="café crème".encode("latin-1"),
        headers={"Set-Cookie": "sid=secret", "ETag": '"v1"', "WWW-Authenticate": "Basic"},
    )
    answer = await http_fetch("GET", site.url("/latin"), policy=POLICY, resolver=resolver)
    assert answer["status"] == 200
    assert answer["body"] == "café crème"
    assert answer["truncated"] is False
    assert answer["url"] == site.url("/latin")
    assert answer["headers"]["etag"] == '"v1"'  # names in lower case
    assert set(answer["headers"]) == {
        "content-type",
        "content-length",
        "etag",
        "date",
    }  # no Set-Cookie, no WWW-Authenticate, no Server
    assert site.received[0].headers["host"] == f"site.test:{site.port}"


async def test_http_fetch_posts_a_body_and_returns_error_statuses(site: WebServer):
    answer = await http_fetch(
        "POST",
        site.url("/echo"),
        body='{"q": "égal"}',
        headers={"Content-Type": "application/json"},
        policy=POLICY,
        resolver=resolver,
    )
    assert json.loads(answer["body"]) == {"method": "POST", "body": '{"q": "égal"}'}
    assert site.received[0].headers["content-type"] == "application/json"

    missing = await http_fetch("GET", site.url("/missing"), policy=POLICY, resolver=resolver)
    assert (missing["status"], missing["body"]) == (404, "not found")


async def test_http_fetch_cuts_long_bodies_and_flags_them(site: WebServer):
    site.answers["/long"] = Answer(body=b"a" * (MAX_TEXT_CHARS + 10))
    answer = await http_fetch("GET", site.url("/long"), policy=POLICY, resolver=resolver)
    assert (len(answer["body"]), answer["truncated"]) == (MAX_TEXT_CHARS, True)

    small_cap = EgressPolicy(
        allowed_hosts={"site.test"}, allowed_ports=None, max_response_bytes=100
    )
    site.answers["/gz"] = Answer(
        body=gzip.compress(b"b" * 5000), headers={"Content-Encoding": "gzip"}
    )
    answer = await http_fetch("GET", site.url("/gz"), policy=small_cap, resolver=resolver)
    assert (answer["body"], answer["truncated"]) == ("b" * 100, True)


async def test_http_fetch_does_not_decode_binary_bodies(site: WebServer):
    site.answers["/image"] = Answer(content_type="image/png", body=b"\x89PNG\r\n\x1a\n\x00\xff")
    answer = await http_fetch("GET", site.url("/image"), policy=POLICY, resolver=resolver)
    assert answer["body"] is None
    assert "binary (image/png, 10 bytes" in answer["note"]


async def test_http_fetch_refuses_what_the_policy_refuses(site: WebServer):
    with pytest.raises(PermissionDeniedError, match="loopback"):
        await http_fetch("GET", f"http://127.0.0.1:{site.port}/", policy=POLICY, resolver=resolver)
    with pytest.raises(PermissionDeniedError, match=r"10\.0\.0\.7"):
        await http_fetch(
            "GET", f"http://intranet.test:{site.port}/", policy=POLICY, resolver=resolver
        )
    with pytest.raises(InvalidInputError, match="method"):
        await http_fetch("DELETE", site.url("/"), policy=POLICY, resolver=resolver)  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError, match="GET request has no body"):
        await http_fetch("GET", site.url("/"), body="x", policy=POLICY, resolver=resolver)
    with pytest.raises(InvalidInputError, match="not allowed"):
        await http_fetch(
            "GET", site.url("/"), headers={"Cookie": "a"}, policy=POLICY, resolver=resolver
        )
    assert site.received == []


async def test_web_page_returns_the_main_text_as_markdown(site: WebServer):
    site.answers["/article"] = Answer(
        content_type="text/html; charset=utf-8", body=ARTICLE.encode()
    )
    page = await web_page(site.url("/article"), policy=POLICY, resolver=resolver)
    assert page["url"] == site.url("/article")
    assert page["title"] in ("Why pin the address", "Egress notes")
    assert page["truncated"] is False
    content = page["content"]
    assert "# Why pin the address" in content
    assert f"[background notes](http://site.test:{site.port}/rfc)" in content
    assert "- loopback and private addresses" in content
    assert "Café au lait" in content
    assert "Copyright" not in content  # the footer is not main text
    assert site.received[0].headers["accept"].startswith("text/html")


async def test_web_page_as_plain_text(site: WebServer):
    # No charset in the header: the page's own <meta charset> is honoured.
    site.answers["/article"] = Answer(content_type="text/html", body=ARTICLE.encode())
    page = await web_page(site.url("/article"), format="text", policy=POLICY, resolver=resolver)
    assert "Why pin the address" in page["content"]
    assert "#" not in page["content"] and "](" not in page["content"]
    assert "Café au lait" in page["content"]


async def test_web_page_follows_redirects_and_reads_plain_text(site: WebServer):
    site.answers["/old"] = Answer(301, None, headers={"Location": "/notes.txt"})
    site.answers["/notes.txt"] = Answer(body="plain notes, ünïcode".encode())
    page = await web_page(site.url("/old"), policy=POLICY, resolver=resolver)
    assert page == {
        "url": site.url("/notes.txt"),
        "title": None,
        "content": "plain notes, ünïcode",
        "truncated": False,
    }


async def test_web_page_refuses_other_content_and_error_statuses(site: WebServer):
    site.answers["/report.pdf"] = Answer(content_type="application/pdf", body=b"%PDF-1.7")
    site.answers["/broken"] = Answer(500, body=b"oops")
    site.answers["/redirect-inside"] = Answer(
        302, None, headers={"Location": "http://intranet.test/"}
    )
    with pytest.raises(InvalidInputError, match="not a web page but application/pdf"):
        await web_page(site.url("/report.pdf"), policy=POLICY, resolver=resolver)
    with pytest.raises(InvalidInputError, match="HTTP 404"):
        await web_page(site.url("/missing"), policy=POLICY, resolver=resolver)
    with pytest.raises(ToolFailedError, match="HTTP 500"):
        await web_page(site.url("/broken"), policy=POLICY, resolver=resolver)
    with pytest.raises(PermissionDeniedError, match="redirect"):
        await web_page(site.url("/redirect-inside"), policy=POLICY, resolver=resolver)
    with pytest.raises(InvalidInputError, match="format"):
        await web_page(site.url("/"), format="pdf", policy=POLICY, resolver=resolver)  # type: ignore[arg-type]


async def test_the_registry_tools_follow_the_egress_settings(site: WebServer, settings_env):
    """`web_page` and `http_fetch` as agents get them: refused until the settings allow the
    loopback server, then served."""
    from gathering.errors import PermissionDeniedError
    from gathering.tools import loaded_registry

    site.answers["/note"] = Answer(body=b"plain words")
    url = f"http://127.0.0.1:{site.port}/note"
    tools = await loaded_registry()
    assert tools.require("http_fetch").effect == "external"  # asks a person by default
    assert tools.require("web_page").effect == "read"
    with pytest.raises(PermissionDeniedError):
        await tools.execute("web_page", {"url": url})
    settings_env(egress_allowed_hosts="127.0.0.1", egress_allowed_ports=str(site.port))
    page = json.loads(await tools.execute("web_page", {"url": url}))
    assert page["content"] == "plain words"
    fetched = json.loads(await tools.execute("http_fetch", {"url": url}))
    assert fetched["status"] == 200 and fetched["body"] == "plain words"
