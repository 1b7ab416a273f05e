"""`council chat`: a conversation with the council in the terminal.

Each line is a turn of one conversation (a follow-up sees the earlier turns);
the stages show on one line while they run, the chairman's answer streams as it
is written. Ctrl-C stops the turn that is running, not the program; Ctrl-D or
``/quit`` ends it.
"""

from __future__ import annotations

import asyncio
import signal
import sys
from pathlib import Path

from nats.aio.client import Client
from rich.console import Console
from rich.markup import escape

from council.assembly.settings import Settings
from council.bus.client.ask import follow, presets, stop, submit
from council.bus.documents import BadDocument, read_file
from council.bus.errors import CouncilError
from council.bus.events import FinalAnswer, SessionCancelled, SessionEvent, SessionFailed
from council.bus.messages import DEFAULT_PRESET, Document, Question, TokenDelta
from council.bus.session import FollowedSession
from council.bus.transport.connection import connect, whoami
from council.bus.transport.stream import conversation, conversations
from council.cli.conversations import conversations_table, exported
from council.cli.presets import presets_table
from council.cli.readable import readable

HELP = """commands:
  /new                 a new conversation
  /members A,B,C       the members of the next turns (empty: the chairman's default)
  /chairman MODEL      the chairman of the next turns (empty: the default)
  /preset [NAME]       the named council of the next turns (without NAME: list them)
  /file PATH           attach a file to the next question (text, Markdown, code, PDF)
  /list [TEXT]         the stored conversations (those containing TEXT)
  /open ID             continue a stored conversation
  /export FILE [full]  this conversation as Markdown (.json: every event)
  /quit                end (Ctrl-D too); Ctrl-C stops the turn that is running"""


class StageLine:
    """The stages' progress on one line (rewritten in place on a terminal), as the
    session's fold counts it."""

    def __init__(self, console: Console, session_id: str) -> None:
        self.console = console
        self.session = FollowedSession(session_id)
        self.shown = ""

    def event(self, event: SessionEvent) -> None:
        if self.session.follow(event):
            self.show()

    def show(self) -> None:
        line = self.session.progress_line()
        if line == self.shown:
            return
        self.shown = line
        if self.console.is_terminal:
            self.console.print(f"\r\x1b[2K[dim]{line}[/]", end="")
        else:
            self.console.print(f"[dim]{line}[/]")

    def clear(self) -> None:
        if self.console.is_terminal and self.shown:
            self.console.print("\r\x1b[2K", end="")
        self.shown = ""


class Chat:
    def __init__(self, nc: Client, settings: Settings, console: Console) -> None:
        self.nc = nc
        self.settings = settings
        self.console = console
        self.conversation = ""
        self.members: list[str] = []
        self.chairman = ""
        self.preset = ""
        self.attached: list[Document] = []
        """Files for the next question."""

    async def turn(self, text: str) -> None:
        """Ask one turn, show its stages, stream its answer; Ctrl-C (a cancel of this
        task) stops the session."""
        question = Question(
            question=text,
            conversation=self.conversation,
            members=self.members,
            chairman=self.chairman,
            preset=self.preset,
            documents=self.attached,
        )
        accepted = await submit(self.nc, question)
        self.attached = []
        line = StageLine(self.console, accepted.session_id)
        streamed: list[str] = []

        def on_delta(delta: TokenDelta) -> None:
            if delta.stage == "synthesis" and delta.text:
                if not streamed:
                    line.clear()
                streamed.append(delta.text)
                self.console.print(delta.text, end="", markup=False, highlight=False)

        try:
            async for event in follow(
                self.nc,
                accepted.session_id,
                timeout_s=self.settings.asking.ask_timeout,
                on_delta=on_delta,
            ):
                if not streamed:
                    line.event(event)
                if isinstance(event, FinalAnswer):  # a turn stored: the next one follows up
                    self.conversation = accepted.conversation
                    self._answered(event, streamed, line)
                elif isinstance(event, SessionCancelled):
                    line.clear()
                    self.console.print(f"[yellow]stopped[/] {event.detail}")
                elif isinstance(event, SessionFailed):
                    line.clear()
                    self.console.print(f"[red]the session failed: {event.reason}[/] {event.detail}")
        except asyncio.CancelledError:
            line.clear()
            try:
                stopped = await stop(self.nc, accepted.session_id, reason="Ctrl-C in council chat")
                self.console.print(f"[yellow]stopped[/] during its {stopped.stage}")
            except CouncilError as exc:
                self.console.print(f"[yellow]not stopped:[/] {exc}")

    def _answered(self, final: FinalAnswer, streamed: list[str], line: StageLine) -> None:
        shown = readable(final.answer)
        if streamed:
            self.console.print()
            if shown != final.answer:  # its math streamed as LaTeX: once more as text
                self.console.rule("[dim]the math as text[/]", style="dim")
                self.console.print(shown, markup=False, highlight=False)
        else:
            line.clear()
            self.console.print(shown, markup=False, highlight=False)
        seconds = final.latency_ms.get("total", 0.0) / 1000
        how = f"{final.strategy}" + (f" of {final.selected}" if final.selected else "")
        how += f" · preset {self.preset}" if self.preset else ""
        self.console.print(
            f"[dim]{how} · {seconds:.1f} s · conversation {self.conversation}[/]", highlight=False
        )

    async def command(self, line: str) -> bool:
        """Run a /command; False to end the chat."""
        name, _, rest = line[1:].partition(" ")
        rest = rest.strip()
        match name:
            case "quit" | "exit":
                return False
            case "new":
                self.conversation = ""
                self.console.print("[dim]a new conversation[/]")
            case "members":
                self.members = [m.strip() for m in rest.split(",") if m.strip()]
                self.console.print(f"[dim]members: {', '.join(self.members) or 'the default'}[/]")
            case "chairman":
                self.chairman = rest
                self.console.print(f"[dim]chairman: {rest or 'the default'}[/]")
            case "preset":
                await self._preset(rest)
            case "file":
                await self.attach(rest)
            case "list":
                self.console.print(
                    conversations_table(await conversations(self.nc, whoami(self.nc)), rest)
                )
            case "open":
                turns = await conversation(self.nc, rest)
                if not turns:
                    self.console.print(f"[red]no conversation {escape(rest)} is stored[/]")
                else:
                    self.conversation = rest
                    self.preset = turns[-1].preset  # it goes on with the council it had
                    for turn in turns:
                        self.console.print(f"[bold]you>[/] {escape(turn.question)}")
                        self.console.print(turn.answer, markup=False, highlight=False)
            case "export":
                await self._export(rest)
            case _:
                self.console.print(HELP)
        return True

    async def attach(self, path: str | Path) -> None:
        """A file for the next question (a refusal says why, and attaches nothing)."""
        try:
            document = await asyncio.to_thread(read_file, Path(path))
        except BadDocument as exc:
            self.console.print(f"[red]{escape(str(exc))}[/]")
            return
        self.attached.append(document)
        self.console.print(
            f"[dim]attached {document.name} ({len(document.text):,} characters) to the next "
            "question[/]"
        )

    async def _preset(self, name: str) -> None:
        """Choose the named council of the next turns, or list them (an unknown name
        lists them too)."""
        listed = await presets(self.nc)
        if name and name in {p.name for p in listed}:
            self.preset = "" if name == DEFAULT_PRESET else name
            self.console.print(f"[dim]preset: {name}[/]")
            return
        if name:
            self.console.print(f"[red]no preset {escape(name)}[/]")
        self.console.print(presets_table(listed, self.preset))

    async def _export(self, args: str) -> None:
        target, _, mode = args.partition(" ")
        if not target or not self.conversation:
            self.console.print("usage: /export FILE [full], in a conversation with a turn")
            return
        path = Path(target)
        data, count = await exported(
            self.nc,
            self.conversation,
            as_json=path.suffix == ".json",
            full=mode.strip() == "full",
        )
        await asyncio.to_thread(path.write_bytes, data)
        self.console.print(f"[dim]exported {count} turn(s) to {path}[/]")


async def run_chat(
    settings: Settings, conversation_id: str = "", preset: str = "", files: list[Path] | None = None
) -> int:
    console = Console(highlight=False)
    nc = await connect(settings.nats_url, name="council-chat", credentials=settings.credentials)
    chat = Chat(nc, settings, console)
    chat.preset = preset
    for path in files or []:
        await chat.attach(path)
    loop = asyncio.get_running_loop()
    lines = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(lines), sys.stdin)
    running: asyncio.Task[None] | None = None
    loop.add_signal_handler(
        signal.SIGINT, lambda: running.cancel() if running and not running.done() else None
    )
    try:
        if conversation_id:
            await chat.command(f"/open {conversation_id}")
        console.print("[dim]council chat: ask anything; /help for commands[/]")
        while True:
            console.print("[bold]you>[/] ", end="")
            raw = await lines.readline()
            if not raw:  # Ctrl-D
                console.print()
                return 0
            text = raw.decode().strip()
            if not text:
                continue
            try:
                if text.startswith("/"):
                    if not await chat.command(text):
                        return 0
                    continue
                running = asyncio.create_task(chat.turn(text))
                await running
            except asyncio.CancelledError:
                this = asyncio.current_task()
                if this is not None and this.cancelling():
                    raise  # the program is stopped, not only the turn
                console.print("[yellow]stopped[/] before the council took the question")
            except CouncilError as exc:
                console.print(f"[red]{escape(str(exc))}[/]")
            finally:
                running = None
    finally:
        loop.remove_signal_handler(signal.SIGINT)
        await nc.close()
