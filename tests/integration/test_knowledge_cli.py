"""`gathering knowledge upload|list|reembed` against a migrated database: files stored then
indexed by jobs that the command runs itself when no worker is alive, with progress bars; a
project's documents; a file that cannot be read refused with a clear message (exit 1, no
traceback) while the others are kept; and re-embedding after the embedding model changed,
through the real `openai` provider at the wire of a local server."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from embedding_wire import EmbeddingWire, embedding_wire
from fpdf import FPDF
from typer.testing import CliRunner, Result

from gathering.cli import app
from gathering.config import get_settings

runner = CliRunner()
WIDE = {"COLUMNS": "200"}


@pytest.fixture
def database(
    monkeypatch: pytest.MonkeyPatch, migrated_database_url: str, tmp_path: Path
) -> Iterator[str]:
    monkeypatch.setenv("GATHERING_DATABASE_URL", migrated_database_url)
    monkeypatch.setenv("GATHERING_PROJECTS_ROOT", str(tmp_path / "projects"))
    get_settings.cache_clear()
    yield migrated_database_url
    get_settings.cache_clear()


@pytest.fixture
def wire() -> Iterator[EmbeddingWire]:
    with embedding_wire() as running:
        yield running


def run(*args: str) -> Result:
    return runner.invoke(app, list(args), env=WIDE)


def invoke(*args: str) -> str:
    result = run(*args)
    assert result.exit_code == 0, result.output
    return result.output


def use_model(monkeypatch: pytest.MonkeyPatch, wire: EmbeddingWire, model: str) -> None:
    for name, value in wire.env(model).items():
        monkeypatch.setenv(name, value)
    get_settings.cache_clear()


def pdf_file(path: Path, pages: list[str]) -> Path:
    pdf = FPDF()
    pdf.set_font("Helvetica", size=12)
    for page in pages:
        pdf.add_page()
        pdf.multi_cell(0, 8, page)
    path.write_bytes(bytes(pdf.output()))
    return path


def test_upload_stores_the_files_then_follows_their_jobs_to_the_end(database, tmp_path):
    notes = tmp_path / "notes.md"
    notes.write_text("# Quay\n\nThe ferry leaves at nine. " * 40)
    pages = [f"Page {n}: " + "tides and currents " * 60 for n in range(1, 5)]
    pages[2] += " The harbour master keeps a green parrot."
    almanac = pdf_file(tmp_path / "almanac.pdf", pages)

    output = invoke("knowledge", "upload", str(notes), str(almanac), "--category", "Coast")
    assert "files stored" in output and "2/2" in output
    assert "chunks embedded" in output
    assert "runs the jobs itself" in output  # no worker was alive
    ready = re.findall(r"ready (\d+) (\S+): (\d+) chunk", output)
    assert [name for _, name, _ in ready] == ["notes.md", "almanac.pdf"], output
    assert all(int(chunks) >= 1 for _, _, chunks in ready)

    listed = invoke("knowledge", "list")
    assert "2 document(s)" in listed
    assert "almanac.pdf" in listed and "coast" in listed and "pending" not in listed
    assert "ready" in invoke("knowledge", "list", "--status", "ready", "--category", "coast")
    assert "0 document(s)" in invoke("knowledge", "list", "--status", "failed")


def test_a_file_that_cannot_be_read_is_refused_and_the_others_are_kept(database, tmp_path):
    good = tmp_path / "good.txt"
    good.write_text("Lanterns are lit at dusk.")
    image = tmp_path / "photo.png"
    image.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(256)))
    result = run("knowledge", "upload", str(image), str(good), str(tmp_path / "missing.md"))
    assert result.exit_code == 1, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    assert "Traceback" not in result.output
    assert "photo.png" in result.output and "not a document type" in result.output
    assert "missing.md" in result.output
    assert re.search(r"ready \d+ good\.txt", result.output), result.output
    assert "1 document(s)" in invoke("knowledge", "list")


def test_upload_into_a_project_and_list_its_documents(database, tmp_path):
    made = invoke("projects", "create", "harbour")
    assert "harbour" in made
    plan = tmp_path / "plan.csv"
    plan.write_text("berth,ship\n1,Aurora\n2,Borealis\n")
    output = invoke("knowledge", "upload", str(plan), "--project", "harbour")
    assert re.search(r"ready \d+ plan\.csv", output), output
    listed = invoke("knowledge", "list", "--project", "harbour")
    assert "plan.csv" in listed and "project:" in listed
    refused = run("knowledge", "upload", str(plan), "--project", "nowhere")
    assert refused.exit_code == 1 and "no project named 'nowhere'" in refused.output


def test_reembed_follows_the_jobs_of_documents_of_another_model(
    database, tmp_path, monkeypatch, wire
):
    use_model(monkeypatch, wire, "bow-a")
    text = tmp_path / "guide.md"
    text.write_text("The pilot boards ships at the outer buoy.\n\n" * 120)
    first = invoke("knowledge", "upload", str(text))
    assert "openai/bow-a" in first, first
    assert wire.requests and {r["model"] for r in wire.requests} == {"bow-a"}

    nothing = invoke("knowledge", "reembed")
    assert "nothing to index again" in nothing and "openai/bow-a" in nothing

    use_model(monkeypatch, wire, "bow-b")
    output = invoke("knowledge", "reembed")
    assert "1 document(s) queued to be embedded with openai/bow-b" in output
    assert "chunks embedded" in output
    assert re.search(r"ready \d+ guide\.md: \d+ chunk\(s\), openai/bow-b", output), output
    assert wire.requests[-1]["model"] == "bow-b"
    assert "openai/bow-b" in invoke("knowledge", "list")
    assert "nothing to index again" in invoke("knowledge", "reembed")
