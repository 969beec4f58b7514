"""The web tools: `http_fetch` (one HTTP request, its answer as text) and `web_page` (the
main text of a page, as Markdown or plain text).

Both go through the egress policy of `gathering.tools.egress`: the URL and every redirect are
checked, the connection is pinned to the checked address, the body is capped. The policy is a
keyword argument, given by whoever registers the tools, never by the model.

Text given back to the model is cut at `MAX_TEXT_CHARS` characters; `"truncated": true` says
that the body (at the policy's byte cap) or the text was cut.
"""

from __future__ import annotations

import asyncio
from typing import Any, Literal

from gathering.errors import InvalidInputError, ToolFailedError
from gathering.tools.egress import EgressPolicy, FetchResult, Resolver, fetch

MAX_TEXT_CHARS = 100_000
MAX_HEADER_VALUE_CHARS = 1000
# Response headers the model may see: none sets or names credentials (Set-Cookie,
# WWW-Authenticate) and none describes the body before decoding (Content-Encoding).
SAFE_RESPONSE_HEADERS = frozenset(
    {
        "content-type",
        "content-length",
        "content-language",
        "content-disposition",
        "last-modified",
        "etag",
        "cache-control",
        "expires",
        "date",
        "location",
        "retry-after",
        "link",
    }
)
HTML_TYPES = frozenset({"text/html", "application/xhtml+xml"})
# Bodies shown as text besides text/*: JSON, XML and form-encoded answers of APIs.
TEXT_TYPES = frozenset(
    {
        "application/json",
        "application/xml",
        "application/javascript",
        "application/x-www-form-urlencoded",
        "application/x-ndjson",
        "application/yaml",
    }
)
_PAGE_ACCEPT = "text/html,application/xhtml+xml;q=0.9,text/plain;q=0.8,*/*;q=0.1"


def _is_text(media_type: str) -> bool:
    return (
        media_type.startswith("text/")
        or media_type in TEXT_TYPES
        or media_type.endswith(("+json", "+xml"))
    )


def _cut(text: str) -> tuple[str, bool]:
    return (text[:MAX_TEXT_CHARS], True) if len(text) > MAX_TEXT_CHARS else (text, False)


def _shown_headers(result: FetchResult) -> dict[str, str]:
    return {
        name: value[:MAX_HEADER_VALUE_CHARS]
        for name, value in result.headers.items()
        if name.lower() in SAFE_RESPONSE_HEADERS
    }


async def http_fetch(
    method: Literal["GET", "POST"],
    url: str,
    body: str | None = None,
    headers: dict[str, str] | None = None,
    *,
    policy: EgressPolicy,
    resolver: Resolver | None = None,
) -> dict[str, Any]:
    """Make one HTTP request (GET or POST) under `policy` and return its answer.

    Returns `{"status", "headers", "body", "truncated", "url"}`: `headers` is a safe subset
    (`SAFE_RESPONSE_HEADERS`, names in lower case), `body` the text decoded with the
    response's charset (UTF-8 by default), `url` the final URL after redirects. A binary
    body (an image, a PDF, ...) is not decoded: `body` is None and `note` says what it was.
    Statuses such as 404 or 500 are answers, not errors. `resolver` replaces the system DNS
    (tests). Raises the errors of `gathering.tools.egress.fetch`.
    """
    if method not in ("GET", "POST"):
        raise InvalidInputError(f"the method {method!r} is not supported", hint="use GET or POST")
    if body is not None and method == "GET":
        raise InvalidInputError("a GET request has no body", hint="use POST to send a body")
    result = await fetch(method, url, policy, body=body, headers=headers, resolver=resolver)
    answer: dict[str, Any] = {
        "status": result.status,
        "headers": _shown_headers(result),
        "url": result.url,
    }
    media_type = result.media_type
    if _is_text(media_type) or not media_type:
        text = result.text()
        binary = not media_type and "\ufffd" in text and not result.charset
    else:
        text, binary = "", True
    if binary:
        answer.update(
            body=None,
            truncated=result.truncated,
            note=f"the body is binary ({media_type or 'no content type'}, "
            f"{len(result.content)} bytes read); it is not shown",
        )
        return answer
    shown, cut = _cut(text)
    answer.update(body=shown, truncated=result.truncated or cut)
    return answer


async def web_page(
    url: str,
    format: Literal["markdown", "text"] = "markdown",
    *,
    policy: EgressPolicy,
    resolver: Resolver | None = None,
) -> dict[str, Any]:
    """Fetch a web page under `policy` and return its main text, without menus and ads.

    Returns `{"url", "title", "content", "truncated"}`: `url` is the final URL, `content`
    the text as Markdown (headings, lists, links) or plain text. HTML is read by trafilatura
    on a worker thread; a text/plain page is returned as it is. Raises `InvalidInputError`
    for another content type (use `http_fetch`) or a 4xx answer, `ToolFailedError` for a 5xx
    answer, and the errors of `gathering.tools.egress.fetch`.
    """
    if format not in ("markdown", "text"):
        raise InvalidInputError(f"unknown format {format!r}", hint="use 'markdown' or 'text'")
    result = await fetch("GET", url, policy, headers={"Accept": _PAGE_ACCEPT}, resolver=resolver)
    if result.status >= 400:
        error = InvalidInputError if result.status < 500 else ToolFailedError
        raise error(
            f"the page {result.url} answered HTTP {result.status}",
            hint="check the URL" if result.status < 500 else "the site failed; try later",
        )
    media_type = result.media_type or _sniffed(result.content)
    if media_type in HTML_TYPES:
        html: str | bytes = result.text() if result.charset else result.content
        title, content = await asyncio.to_thread(_extract, html, result.url, format)
    elif media_type.startswith("text/"):
        title, content = None, result.text()
    else:
        raise InvalidInputError(
            f"{result.url} is not a web page but {media_type or 'binary content'}",
            hint="use http_fetch for other content types",
        )
    shown, cut = _cut(content)
    return {
        "url": result.url,
        "title": title,
        "content": shown,
        "truncated": result.truncated or cut,
    }


def _sniffed(content: bytes) -> str:
    """A media type for a body sent without Content-Type: HTML if it looks like it."""
    start = content[:1024].lstrip().lower()
    if start.startswith((b"<!doctype html", b"<html")) or b"<body" in start:
        return "text/html"
    return "application/octet-stream"


def _extract(html: str | bytes, url: str, format: str) -> tuple[str | None, str]:
    """The title and main text of `html` (CPU-bound: runs on a worker thread)."""
    import trafilatura

    tree = trafilatura.load_html(html)
    if tree is None:
        return None, ""
    title = trafilatura.extract_metadata(tree, default_url=url, extensive=False).title
    content = trafilatura.extract(
        html,
        url=url,
        output_format="markdown" if format == "markdown" else "txt",
        include_links=format == "markdown",
        include_tables=True,
        include_comments=False,
    )
    if not content:  # no main text found: all the text of the page
        content = trafilatura.html2txt(html)
    return title, content
