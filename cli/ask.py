"""`council ask`: live stage progress on stderr, the answer and its tables on stdout."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from textwrap import indent

import msgspec
from nats.aio.client import Client
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from council.assembly.settings import Settings
from council.bus.client.ask import follow, stop, submit
from council.bus.documents import read_file
from council.bus.errors import CouncilError
from council.bus.events import (
    AgentLost,
    FinalAnswer,
    MemberFailed,
    Opinion,
    Review,
    ReviewFailed,
    SessionCancelled,
    SessionEvent,
    SessionFailed,
    SessionQueued,
    StageStarted,
)
from council.bus.members import method_of
from council.bus.messages import Question, TokenDelta
from council.bus.session import FollowedSession
from council.bus.transport.connection import connect
from council.chairman import prompts
from council.cli.readable import readable


class Progress:
    """Prints one line per event and streams the chairman's tokens, all on stderr;
    the counts are the session fold's."""

    def __init__(self, console: Console, session_id: str) -> None:
        self.console = console
        self.session = FollowedSession(session_id)
        self.streaming = False

    def event(self, event: SessionEvent) -> None:
        for applied in self.session.follow(event):
            self._print(applied)

    def _done(self, stage: str) -> str:
        done, expected = self.session.progress()[stage]
        return f"{done}/{expected}"

    def _print(self, event: SessionEvent) -> None:
        c = self.console
        match event:
            case SessionQueued(ahead=ahead):
                c.print(
                    f"[yellow]… waiting for a slot: {ahead} session(s) ahead[/]", highlight=False
                )
            case StageStarted(stage=stage, expected=expected, reason=reason):
                why = f": {reason}" if reason else ""
                c.print(
                    f"[bold cyan]▶ {stage}[/] ({expected} call{'s' * (expected != 1)}){why}",
                    highlight=False,
                )
            case Opinion(member=member, usage=usage, latency_ms=ms, conclusion=said, text=text):
                stated = f" → [bold]{escape(said)}[/]" if said else " (no final answer line)"
                c.print(
                    f"  opinion {self._done('opinions')} "
                    f"{member}: {usage.completion_tokens} tokens, {ms / 1000:.1f} s{stated}",
                    highlight=False,
                )
                if method_of(member) == "code":  # its program and what it printed
                    worked = text.rpartition(prompts.FINAL_LINE)[0].strip()
                    c.print(indent(worked, "    "), style="dim", markup=False, highlight=False)
            case MemberFailed(member=member, reason="not_needed", detail=detail):
                c.print(f"  [dim]· {member} not needed ({escape(detail)})[/]")
            case MemberFailed(member=member, stage=stage, reason=reason, detail=detail):
                c.print(f"  [red]✗ {member} failed in {stage}: {reason}[/] {detail}")
            case AgentLost(member=member, node=node, reissued=reissued):
                then = "asked another agent" if reissued else "gave up"
                c.print(f"  [yellow]! agent {node} went silent on {member}: {then}[/]")
            case Review(reviewer=reviewer, reviewed=reviewed, score=score, latency_ms=ms):
                c.print(
                    f"  review {self._done('reviews')} {reviewer} → {reviewed}: "
                    f"{score:g}/10 ({ms / 1000:.1f} s)"
                )
            case ReviewFailed(reviewer=reviewer, reason=reason, detail=detail):
                c.print(f"  [yellow]review by {reviewer} failed: {reason}[/] {detail}")
            case FinalAnswer() | SessionFailed():
                if self.streaming:
                    c.print()
            case _:
                pass

    def delta(self, delta: TokenDelta) -> None:
        if delta.stage == "synthesis" and delta.text:
            self.streaming = True
            self.console.print(delta.text, end="", style="dim", markup=False, highlight=False)


def ranking_table(final: FinalAnswer) -> Table:
    table = Table(title="Ranking (score: mean normalized review score)")
    for column in ("rank", "member", "label", "score", "raw mean /10", "spread", "reviews"):
        table.add_column(column)
    for e in final.ranking:
        tie = " (tie)" if e.tied else ""
        table.add_row(
            f"{e.rank}{tie}", e.member, e.label, f"{e.score:+.2f}",
            f"{e.raw_mean:.1f}", f"{e.spread:.1f}", str(e.reviews),
        )  # fmt: skip
    return table


def render(final: FinalAnswer, console: Console) -> None:
    console.rule("[bold]Final answer")
    console.print(readable(final.answer), markup=False, highlight=False)
    if final.conclusion:
        console.print(f"[bold]Answer:[/] {escape(readable(final.conclusion))}", highlight=False)
    if any(e.reviews for e in final.ranking):
        console.print(ranking_table(final))
    else:  # a table of +1.00 scores from no review would read as a verdict
        console.print("[dim]No review ran, so there is no ranking.[/]")
    usage = Table(title="Tokens and wall time")
    for column in ("stage", "prompt tokens", "completion tokens", "wall time s"):
        usage.add_column(column)
    for stage, used in final.usage.items():
        ms = final.latency_ms.get(stage, 0.0)
        usage.add_row(
            stage, str(used.prompt_tokens), str(used.completion_tokens), f"{ms / 1000:.1f}"
        )
    console.print(usage)
    for f in final.failed:
        if f.reason == "not_needed":
            continue  # a majority stood without it: said above, not a failure
        console.print(f"[red]failed:[/] {f.member} in {f.stage}: {f.reason} {f.detail}")


async def run_ask(
    settings: Settings,
    text: str,
    *,
    members: list[str],
    chairman: str,
    mode: str,
    as_json: bool,
    seed: int | None,
    strategy: str = "",
    conversation: str = "",
    preset: str = "",
    files: list[Path] | None = None,
) -> int:
    err = Console(stderr=True)
    documents = [read_file(path) for path in files or []]  # BadDocument: before asking
    nc = await connect(settings.nats_url, name="council-ask", credentials=settings.credentials)
    try:
        question = Question(
            question=text,
            members=members,
            chairman=chairman,
            mode=mode,  # type: ignore[arg-type]
            seed=seed,
            strategy=strategy,
            conversation=conversation,
            preset=preset,
            documents=documents,
        )
        accepted = await submit(nc, question)
        named = f"preset {accepted.preset}: " if accepted.preset else ""
        for document in documents:
            err.print(f"attached {document.name}: {len(document.text):,} characters of text")
        err.print(
            f"session [bold]{accepted.session_id}[/]: {named}{', '.join(accepted.members)}; "
            f"chairman {accepted.chairman}; {accepted.mode} reviews; strategy {accepted.strategy}"
        )
        err.print(f"follow up with: council ask --conversation {accepted.conversation} QUESTION")
        progress = Progress(err, accepted.session_id)
        outcome: FinalAnswer | SessionFailed | None = None
        try:
            async for event in follow(
                nc,
                accepted.session_id,
                timeout_s=settings.asking.ask_timeout,
                on_delta=progress.delta,
            ):
                progress.event(event)
                if isinstance(event, FinalAnswer | SessionFailed):
                    outcome = event
        except asyncio.CancelledError:  # Ctrl-C: stop the session, not only the waiting
            await stop_session(nc, accepted.session_id, err)
            return 130
    finally:
        await nc.close()
    if isinstance(outcome, SessionCancelled):
        err.print(f"[yellow]session stopped[/] {outcome.detail}")
        return 130
    if isinstance(outcome, SessionFailed):
        err.print(f"[red]session failed: {outcome.reason}[/] {outcome.detail}")
        if as_json:
            sys.stdout.write(msgspec.json.encode(outcome).decode() + "\n")
        return 1
    assert isinstance(outcome, FinalAnswer)
    if as_json:
        sys.stdout.write(msgspec.json.encode(outcome).decode() + "\n")
    else:
        render(outcome, Console() if sys.stdout.isatty() else Console(width=120))
    return 0


async def stop_session(nc: Client, session_id: str, err: Console) -> None:
    try:
        stopped = await stop(nc, session_id, reason="interrupted (Ctrl-C)")
    except CouncilError as exc:
        err.print(f"[yellow]not stopped:[/] {exc}")
        return
    err.print(f"[yellow]stopped[/] session {session_id} during its {stopped.stage}")


async def run_stop(settings: Settings, session_id: str) -> int:
    """`council stop SESSION`: end a running session; its agents stop its calls."""
    nc = await connect(settings.nats_url, name="council-stop", credentials=settings.credentials)
    try:
        stopped = await stop(nc, session_id, reason="council stop")
    finally:
        await nc.close()
    print(f"stopped session {stopped.session_id} during its {stopped.stage}")
    return 0
