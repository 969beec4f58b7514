"""Files as knowledge-base documents (`gathering.projects.documents`): how a type is told,
text decoded, HTML and PDF read, file names cleaned, and what is refused (415 or 422)."""

from __future__ import annotations

import codecs

import pytest
from fpdf import FPDF

from gathering.errors import InvalidInputError, UnsupportedDocumentError
from gathering.projects.documents import (
    CSV,
    HTML,
    MARKDOWN,
    PDF,
    TEXT,
    clean_filename,
    extract_document,
    media_type_of,
)


def pdf_of(*pages: str, password: str | None = None) -> bytes:
    pdf = FPDF()
    pdf.set_font("Helvetica", size=12)
    if password is not None:
        pdf.set_encryption(owner_password="owner", user_password=password)
    for page in pages:
        pdf.add_page()
        pdf.multi_cell(0, 8, page)
    return bytes(pdf.output())


@pytest.mark.parametrize(
    ("name", "declared", "data", "expected"),
    [
        ("a.md", None, b"", MARKDOWN),
        ("A.MARKDOWN", None, b"", MARKDOWN),
        ("a.txt", "application/octet-stream", b"", TEXT),
        ("a.csv", None, b"", CSV),
        ("a.htm", None, b"", HTML),
        ("a.pdf", None, b"", PDF),
        ("readme", "text/x-markdown; charset=utf-8", b"", MARKDOWN),
        ("page", "application/xhtml+xml", b"", HTML),
        ("scan", None, b"%PDF-1.7 ...", PDF),
    ],
)
def test_the_type_comes_from_the_extension_then_the_media_type_then_the_content(
    name, declared, data, expected
):
    assert media_type_of(name, declared, data) == expected


@pytest.mark.parametrize(
    ("name", "declared"), [("photo.png", "image/png"), ("archive", None), ("x.docx", None)]
)
def test_other_types_are_415(name, declared):
    with pytest.raises(UnsupportedDocumentError) as raised:
        media_type_of(name, declared, b"PK\x03\x04")
    assert raised.value.http_status == 415 and "Markdown" in (raised.value.hint or "")


def test_text_is_utf8_without_its_bom_else_in_the_encoding_found():
    assert extract_document("a.txt", codecs.BOM_UTF8 + "héllo".encode()).text == "héllo"
    latin = "Le café du port ouvre à l'aube, près de la jetée où les pêcheurs réparent.".encode(
        "latin-1"
    )
    assert extract_document("b.txt", latin).text.startswith("Le café du port")
    with pytest.raises(UnsupportedDocumentError, match="binary"):
        extract_document("c.txt", b"\x00\x01\x02" * 40)


def test_html_gives_its_main_text_or_all_of_it():
    page = (
        "<html><body><nav>Home | Shop | Contact</nav><main><article><h1>Tides</h1>"
        + "<p>The spring tide floods the lower quay twice a month, at the new moon.</p>" * 5
        + "</article></main><footer>© Harbour</footer></body></html>"
    )
    text = extract_document("tides.html", page.encode()).text
    assert "spring tide" in text and "Contact" not in text
    assert extract_document("tiny.html", b"<p>Just one line.</p>").text == "Just one line."
    with pytest.raises(InvalidInputError, match="holds no text"):
        extract_document("blank.html", b"<html><body>   </body></html>")


def test_a_pdf_gives_each_pages_text_and_its_page_count():
    document = extract_document("book.pdf", pdf_of("First page.", "Second page.", "Third page."))
    assert document.pages == 3 and document.media_type == PDF
    assert document.text == "First page.\n\nSecond page.\n\nThird page."
    assert document.metadata()["pages"] == 3


def test_unreadable_pdfs_are_422():
    with pytest.raises(InvalidInputError, match="not a PDF that can be read"):
        extract_document("broken.pdf", b"%PDF-1.4\n1 0 obj garbage")
    with pytest.raises(InvalidInputError, match="encrypted"):
        extract_document("secret.pdf", pdf_of("Hidden.", password="s3cret"))
    with pytest.raises(InvalidInputError, match="holds no text") as raised:
        extract_document("images.pdf", pdf_of(""))
    assert "OCR" in (raised.value.hint or "")


def test_file_names_are_cleaned():
    assert clean_filename("../../etc/passwd") == "passwd"
    assert clean_filename("C:\\Users\\me\\notes.md") == "notes.md"
    assert clean_filename("bad\x00\x1bname .txt") == "badname .txt"
    assert clean_filename("   ") == clean_filename(None) == "untitled"
    assert len(clean_filename("x" * 1000 + ".md")) == 500
