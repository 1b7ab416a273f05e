"""Files in a question: read on the client (text, Markdown, code, a PDF's text by
pypdf; clear refusals otherwise), carried with the question and its turn, seen by
every stage and by a follow-up (the stage prompts themselves: `test_bus`)."""

from __future__ import annotations

import asyncio
import base64
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import openai
import pytest
from conftest import council_cli
from helpers import stored_at
from nats.aio.client import Client
from nats.js.errors import ObjectNotFoundError
from pypdf import PdfReader, PdfWriter
from test_api import serving_api
from test_bus import council

from council.bus.documents import MAX_FILE_BYTES, BadDocument, read_document, read_file
from council.bus.events import SessionStarted
from council.bus.messages import MAX_STORED_CHARS
from council.bus.transport.server import EmbeddedNats
from council.bus.transport.stream import conversation, stored_events

CLAUSE = "The lease of flat 4B ends on 31 March 2027."


def pdf_with(text: str) -> bytes:
    """A one-page PDF showing ``text`` (written by hand: no PDF writer draws text)."""
    content = f"BT /F1 12 Tf 72 720 Td ({text}) Tj ET".encode()
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R "
        b"/Resources << /Font << /F1 5 0 R >> >> >>",
        b"<< /Length %d >>\nstream\n" % len(content) + content + b"\nendstream",
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
    ]
    out = io.BytesIO()
    out.write(b"%PDF-1.4\n")
    offsets = []
    for number, body in enumerate(objects, 1):
        offsets.append(out.tell())
        out.write(b"%d 0 obj\n" % number + body + b"\nendobj\n")
    xref = out.tell()
    out.write(b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1))
    out.writelines(b"%010d 00000 n \n" % offset for offset in offsets)
    out.write(b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (
        len(objects) + 1, xref))  # fmt: skip
    return out.getvalue()


def encrypted(pdf: bytes) -> bytes:
    writer = PdfWriter(clone_from=PdfReader(io.BytesIO(pdf)))
    writer.encrypt("secret")
    out = io.BytesIO()
    writer.write(out)
    return out.getvalue()


def test_text_markdown_code_and_a_pdfs_text_are_read() -> None:
    assert read_document("notes.md", b"# Notes\n\n- one").text == "# Notes\n\n- one"
    assert read_document("main.py", "print('é')\n".encode()).text == "print('é')\n"
    assert read_document("bom.txt", b"\xef\xbb\xbfhello").text == "hello"
    read = read_document("/somewhere/lease.pdf", pdf_with(CLAUSE))
    assert (read.name, read.text) == ("lease.pdf", CLAUSE)


@pytest.mark.parametrize(
    ("name", "data", "why"),
    [
        ("photo.png", b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", "binary file"),
        ("latin1.txt", "café".encode("latin-1"), "not UTF-8 text"),
        ("empty.txt", b"  \n", "holds no text"),
        ("locked.pdf", encrypted(pdf_with(CLAUSE)), "encrypted"),
        ("scan.pdf", pdf_with(""), "no text to read"),
        ("broken.pdf", b"%PDF-1.4\nnot really", "not a readable PDF"),
        ("huge.txt", b"a" * (MAX_STORED_CHARS + 1), "at most 5,000,000"),
    ],
)
def test_a_file_that_cannot_be_read_is_refused_by_name(name: str, data: bytes, why: str) -> None:
    with pytest.raises(BadDocument, match=why) as refused:
        read_document(name, data)
    assert str(refused.value).startswith(f"cannot attach {name}: ")


def test_a_file_too_large_is_refused_before_it_is_read(tmp_path: Path) -> None:
    big = tmp_path / "big.log"
    with big.open("wb") as out:
        out.truncate(MAX_FILE_BYTES + 1)
    with pytest.raises(BadDocument, match="the limit is"):
        read_file(big)
    with pytest.raises(BadDocument, match="No such file"):
        read_file(tmp_path / "missing.txt")


async def test_council_ask_and_chat_attach_files_that_a_follow_up_sees(
    nats_server: EmbeddedNats, nc: Client, tmp_path: Path
) -> None:
    """`council ask --file` (a PDF and a source file), a follow-up by `--conversation`
    (the files come with it), `council chat --file` and `/file`, and a binary file
    refused with exit code 2 before anything is asked."""
    lease, code = tmp_path / "lease.pdf", tmp_path / "rent.py"
    lease.write_bytes(pdf_with(CLAUSE))
    code.write_text("RENT = 950  # euros a month\n")
    env = {**os.environ, "COUNCIL_NATS_URL": nats_server.url}
    async with council(nats_server):
        asked = await asyncio.to_thread(
            council_cli, env, ["ask", "--file", str(lease), "--file", str(code), "When?"]
        )
        assert asked.returncode == 0, asked.stderr[-2000:]
        assert "attached lease.pdf: 43 characters" in asked.stderr
        cid = asked.stderr.split("--conversation ", 1)[1].split()[0]
        again = await asyncio.to_thread(
            council_cli, env, ["ask", "--conversation", cid, "And the rent?"]
        )
        assert again.returncode == 0, again.stderr[-2000:]
        binary = tmp_path / "photo.png"
        binary.write_bytes(b"\x89PNG\x00\x00")
        refused = await asyncio.to_thread(council_cli, env, ["ask", "--file", str(binary), "Q?"])
        assert refused.returncode == 2
        assert "cannot attach photo.png: it is a binary file" in refused.stderr

        chat = await asyncio.to_thread(
            subprocess.run,
            [sys.executable, "-m", "council.cli", "chat", "--file", str(code)],
            input=f"How much?\n/file {lease}\nAnd until when?\n/quit\n",
            env=env, capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert chat.returncode == 0, chat.stderr[-2000:]
        assert "attached rent.py (28 characters) to the next question" in chat.stdout
    turns = await conversation(nc, cid)
    assert [[d.name for d in t.documents] for t in turns] == [["lease.pdf", "rent.py"], []]
    follow_up = (await stored_events(nc, turns[1].session_id))[0]
    assert isinstance(follow_up, SessionStarted)
    assert [d.text for d in follow_up.plan.conversation_documents] == [
        CLAUSE, "RENT = 950  # euros a month\n"
    ]  # fmt: skip
    chats = [t for t in (await all_threads(nc)) if t[0].question == "How much?"]
    assert [[d.name for d in t.documents] for t in chats[0]] == [["rent.py"], ["lease.pdf"]]


async def all_threads(nc: Client) -> list[list]:
    from council.bus.transport.stream import conversations

    return list((await conversations(nc)).values())


def file_part(name: str, data: str) -> dict[str, object]:
    return {"type": "file", "file": {"filename": name, "file_data": data}}


async def test_the_api_takes_files_as_content_parts(nats_server: EmbeddedNats, nc: Client) -> None:
    """A PDF and a source file as OpenAI `file` content parts reach the session; a follow-up that
    resends the thread continues it (the file already there); a binary file is a 400
    that names it."""
    encoded = base64.b64encode(pdf_with(CLAUSE)).decode()
    part = file_part("lease.pdf", f"data:application/pdf;base64,{encoded}")
    code = file_part("rent.py", base64.b64encode(b"RENT = 950\n").decode())
    asked = [{"type": "text", "text": "When?"}, part, code]
    first_messages = [{"role": "user", "content": asked}]
    async with serving_api(nats_server) as api:
        first = await api.chat.completions.create(model="council", messages=first_messages)
        summary = (first.model_extra or {})["council"]
        started = (await stored_events(nc, summary["session_id"]))[0]
        assert isinstance(started, SessionStarted)
        assert [(d.name, d.text) for d in started.plan.documents] == [
            ("lease.pdf", CLAUSE), ("rent.py", "RENT = 950\n")
        ]  # fmt: skip
        answer = first.choices[0].message.content
        again = await api.chat.completions.create(
            model="council",
            messages=[*first_messages, {"role": "assistant", "content": answer},
                      {"role": "user", "content": "Until when, again?"}],
        )  # fmt: skip
        followed = (again.model_extra or {})["council"]
        assert followed["conversation"] == summary["conversation"]
        started = (await stored_events(nc, followed["session_id"]))[0]
        assert isinstance(started, SessionStarted)
        assert [d.name for d in started.plan.conversation_documents] == ["lease.pdf", "rent.py"]
        assert not started.plan.documents
        binary = file_part("x.bin", base64.b64encode(b"\x00\x01").decode())
        with pytest.raises(openai.BadRequestError, match="cannot attach x.bin"):
            await api.chat.completions.create(
                model="council", messages=[{"role": "user", "content": [binary]}]
            )


@pytest.mark.model
def test_a_pdf_and_a_follow_up_on_the_real_council(
    council_processes: dict[str, str], tmp_path: Path
) -> None:
    """The real test council answers a question about an attached PDF, and a follow-up
    asked later carries the file to every stage again."""
    lease = tmp_path / "lease.pdf"
    lease.write_bytes(pdf_with(CLAUSE))
    first = council_cli(
        council_processes, ["ask", "--json", "--file", str(lease), "When does the lease end?"]
    )
    assert first.returncode == 0, first.stderr[-2000:]
    assert json.loads(first.stdout)["answer"]
    cid = first.stderr.split("--conversation ", 1)[1].split()[0]
    second = council_cli(council_processes, ["ask", "--json", "--conversation", cid, "Which flat?"])
    assert second.returncode == 0, second.stderr[-2000:]
    session = json.loads(second.stdout)["session_id"]
    started = asyncio.run(stored_at(council_processes["COUNCIL_NATS_URL"], session))[0]
    assert isinstance(started, SessionStarted)
    assert [d.text for d in started.plan.conversation_documents] == [CLAUSE]


@pytest.mark.browser
async def test_files_attached_on_the_chat_page_reach_the_council(
    nats_server: EmbeddedNats, nc: Client, tmp_path: Path
) -> None:
    """In Chromium: a PDF and a source file attached with the chat box's button go with
    the question; the turn shows each, and the session's plan holds their text."""
    from test_browser import find_or_install_chromium

    chromium = find_or_install_chromium()
    if chromium is None:
        pytest.skip("no Chromium, and it cannot be installed here (needs root and apt-get)")
    lease, code = tmp_path / "lease.pdf", tmp_path / "rent.py"
    lease.write_bytes(pdf_with(CLAUSE))
    code.write_text("RENT = 950  # euros a month\n")
    env = {**os.environ, "COUNCIL_NATS_URL": nats_server.url}
    async with council(nats_server):
        shown = await asyncio.to_thread(attach_in_chromium, chromium, env, [lease, code])
    assert "lease.pdf (43 characters)" in shown
    assert "rent.py (28 characters)" in shown
    (thread,) = [t for t in await all_threads(nc) if t[0].question == "What do these say?"]
    started = (await stored_events(nc, thread[0].session_id))[0]
    assert isinstance(started, SessionStarted)
    assert [(d.name, d.text) for d in started.plan.documents] == [
        ("lease.pdf", CLAUSE), ("rent.py", "RENT = 950  # euros a month\n")
    ]  # fmt: skip


def attach_in_chromium(chromium: str, env: dict[str, str], files: list[Path]) -> str:
    """The Chat page in Chromium: attach, ask, and the text of the turn once answered."""
    from playwright.sync_api import expect
    from test_browser import dashboard_in_chromium

    with dashboard_in_chromium(chromium, env, viewport={"width": 1280, "height": 900}) as page:
        expect(page.get_by_text("Chat with the council")).to_be_visible(timeout=60_000)
        chat = page.locator('[data-testid="stChatInput"]')
        chat.locator('input[type="file"]').set_input_files([str(f) for f in files])
        expect(chat.get_by_text("rent.py")).to_be_visible(timeout=30_000)
        box = page.get_by_placeholder("Ask the council")
        box.fill("What do these say?")
        box.press("Enter")
        expect(page.get_by_text("Deliberation")).to_have_count(1, timeout=120_000)
        return str(page.locator('[data-testid="stChatMessage"]').first.inner_text())


async def test_a_large_file_goes_through_the_object_store_and_stays_its_persons(
    nats_server: EmbeddedNats, nc: Client
) -> None:
    """A file past the inline size is sent ahead in parts (its question carries a key):
    the session reads it whole, cut to the budget as any file; another person's key
    is refused; a key with parts missing is refused; deleting the conversation
    deletes the file."""
    from test_bus import ask

    from council.bus.client.ask import INLINE_CHARS, forget, store_document, submit
    from council.bus.errors import QuestionRejected
    from council.bus.messages import PART_CHARS, Document, Question

    text = "".join(f"line {n}: the rent is 950 euros.\n" for n in range(8000))
    assert len(text) > max(INLINE_CHARS, PART_CHARS)  # more than one part
    async with council(nats_server):
        events = await ask(nc, Question(question="The rent?", documents=[Document(
            name="ledger.txt", text=text)]))  # fmt: skip
        started = events[0]
        assert isinstance(started, SessionStarted)
        (seen,) = started.plan.documents
        assert seen.stored.startswith("anyone.")
        assert seen.chars == len(text)
        assert text.startswith(seen.text)
        assert seen.cut == len(text) - len(seen.text) > 0

        theirs = Document(name="x.txt", text="", stored="bob.0123456789abcdef", chars=5)
        with pytest.raises(QuestionRejected) as refused:
            await submit(nc, Question(question="Q?", documents=[theirs]))
        assert refused.value.reason == "not_yours"
        partial = await store_document(nc, Document(name="y.txt", text="z" * 10))
        lying = Document(name="y.txt", text="", stored=partial.stored, chars=11)
        with pytest.raises(QuestionRejected, match="10 of its 11 characters"):
            await submit(nc, Question(question="Q?", documents=[lying]))

        store = await nc.jetstream().object_store("COUNCIL_DOCUMENTS")
        assert (await store.get(f"{seen.stored}.1")).data
        await forget(nc, started.plan.conversation)
        with pytest.raises(ObjectNotFoundError):
            await store.get(f"{seen.stored}.0")
