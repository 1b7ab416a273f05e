"""A file a person attaches to a question, read into the text every stage sees.

Read on the client (`council ask --file`, the Chat page, the API), so that what
travels is text: UTF-8 text, Markdown and source code as they are, a PDF's text
as pypdf extracts it. Anything else gets a clear refusal naming the file: a
binary file, an encrypted PDF, a PDF with no text (a scan), a file too large.
"""

from __future__ import annotations

import io
from pathlib import Path

from council.bus.errors import CouncilError
from council.bus.messages import MAX_STORED_CHARS, Document

MAX_FILE_BYTES = 20 * 1024 * 1024
"""A file larger is refused before it is read (a PDF's text is far smaller)."""


READABLE = "attach text, Markdown, source code or a PDF"


class BadDocument(CouncilError):
    def __init__(self, name: str, why: str) -> None:
        super().__init__(f"cannot attach {name}: {why}")
        self.name = name
        self.why = why


def read_document(name: str, data: bytes) -> Document:
    """``data`` (a file's bytes) as a document named ``name``."""
    name = Path(name).name or "document"
    if len(data) > MAX_FILE_BYTES:
        raise BadDocument(name, f"{len(data):,} bytes; the limit is {MAX_FILE_BYTES:,}")
    text = _pdf_text(name, data) if data.startswith(b"%PDF-") else _plain_text(name, data)
    if not text.strip():
        raise BadDocument(name, "it holds no text")
    if len(text) > MAX_STORED_CHARS:
        raise BadDocument(
            name, f"{len(text):,} characters of text; a file holds at most {MAX_STORED_CHARS:,}"
        )
    return Document(name=name, text=text)


def read_file(path: Path) -> Document:
    """The file at ``path`` (``~`` is the home folder) as a document."""
    path = path.expanduser()
    try:
        size = path.stat().st_size
        if size > MAX_FILE_BYTES:
            raise BadDocument(path.name, f"{size:,} bytes; the limit is {MAX_FILE_BYTES:,}")
        return read_document(path.name, path.read_bytes())
    except OSError as exc:
        raise BadDocument(path.name, exc.strerror or str(exc)) from None


def _plain_text(name: str, data: bytes) -> str:
    if b"\x00" in data[:8192]:
        raise BadDocument(name, "it is a binary file: attach text, Markdown, code or a PDF")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise BadDocument(
            name, "it is not UTF-8 text: attach text, Markdown, code or a PDF"
        ) from None


def _pdf_text(name: str, data: bytes) -> str:
    from pypdf import PdfReader  # only where a PDF is read
    from pypdf.errors import PdfReadError

    try:
        reader = PdfReader(io.BytesIO(data))
        if reader.is_encrypted:
            raise BadDocument(name, "the PDF is encrypted: attach one without a password")
        pages = [page.extract_text() or "" for page in reader.pages]
    except (PdfReadError, ValueError, KeyError) as exc:
        raise BadDocument(name, f"not a readable PDF ({exc})") from None
    if not any(p.strip() for p in pages):
        raise BadDocument(name, "the PDF has no text to read (a scan needs OCR first)")
    return "\n\n".join(p for p in pages if p.strip())
