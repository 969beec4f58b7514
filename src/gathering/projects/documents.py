"""Files as knowledge-base documents: the text of Markdown, plain text, CSV, HTML and PDF.

```python
document = extract_document("handbook.pdf", data)      # CPU-bound: call it in a thread
document.title, document.media_type, document.pages    # "handbook.pdf", "application/pdf", 212
```

The type comes from the file name's extension, else from the declared media type, else from
the content (a PDF starts with `%PDF-`); anything else is `UnsupportedDocumentError` (415).
Text is read as UTF-8 (a byte-order mark is dropped), else in the encoding charset-normalizer
recognises; HTML gives its main text (trafilatura), or all its text when it has no main part;
a PDF gives the text of each page (pypdf), pages separated by a blank line, read page by page
and no further than the document limit. A file that gives no text (a scanned PDF), or more
than a document may hold, is `InvalidInputError` (422).
"""

from __future__ import annotations

import codecs
import io
import posixpath
import unicodedata
from dataclasses import dataclass
from typing import TYPE_CHECKING

from gathering.agents.knowledge import MAX_DOCUMENT_CHARS, MAX_TITLE_CHARS
from gathering.errors import InvalidInputError, UnsupportedDocumentError

if TYPE_CHECKING:
    from pypdf import PageObject

MARKDOWN, TEXT, CSV, HTML, PDF = (
    "text/markdown",
    "text/plain",
    "text/csv",
    "text/html",
    "application/pdf",
)
EXTENSIONS: dict[str, str] = {
    ".md": MARKDOWN,
    ".markdown": MARKDOWN,
    ".txt": TEXT,
    ".text": TEXT,
    ".csv": CSV,
    ".html": HTML,
    ".htm": HTML,
    ".pdf": PDF,
}
# Declared media types taken for one of ours (a client's guess for a file without extension).
MEDIA_TYPES: dict[str, str] = {
    MARKDOWN: MARKDOWN,
    "text/x-markdown": MARKDOWN,
    TEXT: TEXT,
    CSV: CSV,
    HTML: HTML,
    "application/xhtml+xml": HTML,
    PDF: PDF,
}
SUPPORTED = "Markdown (.md), text (.txt), CSV (.csv), HTML (.html) and PDF (.pdf)"
MAX_PDF_PAGES = 5_000
PAGE_SEPARATOR = "\n\n"
# pypdf may report a little more text than a page's result (line breaks between runs): the
# check while extracting leaves this much room; the exact count is made on the result.
_PAGE_SLACK_CHARS = 10_000
MAX_EXTENSION_CHARS = 20  # a longer "extension" is no type of ours: cut like the rest


@dataclass(frozen=True)
class ExtractedDocument:
    """A file's text, ready to be stored as a document."""

    filename: str
    media_type: str
    text: str
    size_bytes: int
    pages: int | None = None  # of a PDF

    @property
    def title(self) -> str:
        """The document's title: its file name."""
        return self.filename

    def metadata(self) -> dict[str, str | int]:
        """What the document keeps about the file it came from."""
        kept: dict[str, str | int] = {
            "filename": self.filename,
            "media_type": self.media_type,
            "size_bytes": self.size_bytes,
        }
        if self.pages is not None:
            kept["pages"] = self.pages
        return kept


def clean_filename(name: str | None) -> str:
    """The last part of a client's file name, without control characters or surrounding
    blanks, at most `MAX_TITLE_CHARS` long (a longer name loses the end of its stem and keeps
    its extension); "untitled" when nothing is left."""
    base = posixpath.basename((name or "").replace("\\", "/"))
    kept = "".join(c for c in base if unicodedata.category(c)[0] != "C")
    kept = " ".join(kept.split())
    if len(kept) > MAX_TITLE_CHARS:
        # Shorten the stem, not the extension: the type comes from the extension.
        stem, extension = posixpath.splitext(kept)
        if not 0 < len(extension) <= MAX_EXTENSION_CHARS:
            stem, extension = kept, ""
        kept = stem[: MAX_TITLE_CHARS - len(extension)].strip() + extension
    return kept.strip() or "untitled"


def media_type_of(filename: str, declared: str | None, data: bytes) -> str:
    """The type of the file (see the module's docstring); `UnsupportedDocumentError` when it
    is none of ours."""
    extension = posixpath.splitext(filename)[1].lower()
    if extension in EXTENSIONS:
        return EXTENSIONS[extension]
    media_type = (declared or "").split(";")[0].strip().lower()
    if media_type in MEDIA_TYPES:
        return MEDIA_TYPES[media_type]
    if data.startswith(b"%PDF-"):
        return PDF
    raise UnsupportedDocumentError(
        f"{filename!r} is not a document type the knowledge base reads"
        + (f" ({media_type})" if media_type else ""),
        hint=f"upload {SUPPORTED}",
    )


def extract_document(
    filename: str | None, data: bytes, declared: str | None = None
) -> ExtractedDocument:
    """The text of a file (blocking and CPU-bound: run it in a thread)."""
    name = clean_filename(filename)
    media_type = media_type_of(name, declared, data)
    pages = None
    if media_type == PDF:
        text, pages = _pdf_text(name, data)
    elif media_type == HTML:
        text = _html_text(_decoded(name, data))
    else:
        text = _decoded(name, data)
    text = text.replace("\x00", "").strip()
    if not text:
        raise InvalidInputError(
            f"{name!r} holds no text",
            hint="a scanned PDF holds only images: run it through OCR first"
            if media_type == PDF
            else "upload a file with some text",
        )
    if len(text) > MAX_DOCUMENT_CHARS:
        raise InvalidInputError(
            f"the text of {name!r} has {len(text)} characters; a document holds at most "
            f"{MAX_DOCUMENT_CHARS}",
            hint="split the file into smaller ones",
        )
    return ExtractedDocument(name, media_type, text, len(data), pages)


def _decoded(name: str, data: bytes) -> str:
    """`data` as text: UTF-8, else the encoding charset-normalizer finds; binary is refused."""
    if data.startswith(codecs.BOM_UTF8):
        data = data[len(codecs.BOM_UTF8) :]
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        from charset_normalizer import from_bytes

        best = from_bytes(data).best()
        if best is None:
            raise UnsupportedDocumentError(
                f"{name!r} is not text in an encoding we recognise",
                hint=f"upload {SUPPORTED}, as UTF-8 where you can",
            ) from None
        text = str(best)
    if "\x00" in text:
        raise UnsupportedDocumentError(f"{name!r} is binary, not text", hint=f"upload {SUPPORTED}")
    return text


def _html_text(html: str) -> str:
    """The main text of a page (trafilatura), or all its text when it has no main part."""
    import trafilatura

    if trafilatura.load_html(html) is None:  # a fragment, or text without tags
        html = f"<html><body>{html}</body></html>"
        if trafilatura.load_html(html) is None:
            return ""
    text = trafilatura.extract(html, include_tables=True, include_comments=False)
    return text or trafilatura.html2txt(html)


class _TooMuchText(Exception):
    """Raised from pypdf's callbacks to stop extracting a page past the document limit."""


def _too_long(name: str) -> InvalidInputError:
    return InvalidInputError(
        f"the text of {name!r} has more than {MAX_DOCUMENT_CHARS} characters; a document holds "
        f"at most {MAX_DOCUMENT_CHARS}",
        hint="split the file into smaller ones",
    )


def _page_text(page: PageObject, budget: int) -> str | None:
    """The text of one page, or None as soon as it passes `budget` characters (pypdf reports
    the text it extracts as it goes: extraction stops there, not at the end of the page)."""
    extracted = 0

    def count(text: object, *_: object) -> None:
        nonlocal extracted
        extracted += len(text) if isinstance(text, str) else 0
        if extracted > budget + _PAGE_SLACK_CHARS:
            raise _TooMuchText

    def stop_when_over(*_: object) -> None:
        # pypdf swallows errors inside a form XObject: stop at the next operator instead.
        if extracted > budget + _PAGE_SLACK_CHARS:
            raise _TooMuchText

    try:
        text = page.extract_text(visitor_text=count, visitor_operand_before=stop_when_over) or ""
    except _TooMuchText:
        return None
    text = text.replace("\x00", "").strip()
    return None if text and len(text) > budget else text


def _pdf_text(name: str, data: bytes) -> tuple[str, int]:
    """The text of each page of a PDF, pages separated by a blank line, and its page count.

    Pages are read one by one, and reading stops (422) as soon as the text passes
    `MAX_DOCUMENT_CHARS`: a small file that draws the same large text on many pages costs at
    most one document's worth of extraction."""
    from pypdf import PdfReader

    # pypdf raises many kinds of error on a damaged or hostile file (PdfReadError, but also
    # ValueError, KeyError, RecursionError...): each means the upload is not a readable PDF.
    pages: list[str] = []
    total = 0
    try:
        reader = PdfReader(io.BytesIO(data))
        if reader.is_encrypted and not reader.decrypt(""):
            raise InvalidInputError(f"{name!r} is encrypted", hint="upload it without a password")
        count = len(reader.pages)
        if count > MAX_PDF_PAGES:
            raise InvalidInputError(
                f"{name!r} has {count} pages; at most {MAX_PDF_PAGES}",
                hint="split it into smaller files",
            )
        for page in reader.pages:
            separator = len(PAGE_SEPARATOR) if pages else 0
            text = _page_text(page, MAX_DOCUMENT_CHARS - total - separator)
            if text is None:
                raise _too_long(name)
            if text:
                pages.append(text)
                total += separator + len(text)
    except InvalidInputError:
        raise
    except Exception as exc:
        raise InvalidInputError(
            f"{name!r} is not a PDF that can be read: {type(exc).__name__}: {exc}"[:500],
            hint="check that the file is a complete PDF",
        ) from None
    return PAGE_SEPARATOR.join(pages), count
