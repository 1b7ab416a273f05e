"""A conversation exported: Markdown for people, JSON (its turns and every event of its
sessions) for programs. Pure functions of what the stream holds."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import msgspec

from council.bus.events import FinalAnswer, Opinion, Review, SessionEvent
from council.bus.messages import Turn


def when(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M UTC") if ts else ""


def title(turns: list[Turn]) -> str:
    """A conversation's name for lists: its first question, on one line."""
    first = turns[0].question if turns else ""
    line = " ".join(first.split())
    return line if len(line) <= 80 else line[:79] + "…"


def markdown(turns: list[Turn], sessions: dict[str, list[SessionEvent]] | None = None) -> str:
    """Each turn's question and answer; with ``sessions``, every member's opinion and
    every review of it too (de-anonymized)."""
    out = [f"# {title(turns)}", ""]
    if turns:
        out += [f"Conversation `{turns[0].conversation}`, {when(turns[0].ts)}", ""]
    for number, turn in enumerate(turns, 1):
        out += [f"## {number}. {turn.question}", ""]
        for document in turn.documents:
            cut = f", cut to its first {len(document.text):,}" if document.cut else ""
            size = f"{len(document.text) + document.cut:,} characters{cut}"
            out += [
                f"<details><summary>Attached: {document.name} ({size})</summary>", "",
                "~~~text", document.text, "~~~", "", "</details>", "",
            ]  # fmt: skip
        out += [turn.answer, ""]
        events = (sessions or {}).get(turn.session_id, [])
        opinions = [e for e in events if isinstance(e, Opinion)]
        reviews = [e for e in events if isinstance(e, Review)]
        for opinion in opinions:
            out += [f"### Opinion of {opinion.member}", "", opinion.text, ""]
        if reviews:
            out += ["### Reviews", ""]
            out += [
                f"- {r.reviewer} → {r.reviewed}: {r.score:g}/10. {r.justification}" for r in reviews
            ]
            out.append("")
        final = next((e for e in events if isinstance(e, FinalAnswer)), None)
        if final is not None and sessions is not None:
            ranking = ", ".join(f"{e.rank}. {e.member}" for e in final.ranking)
            out += [f"*{final.strategy}; ranking: {ranking or 'none'}*", ""]
    return "\n".join(out).rstrip() + "\n"


def as_json(turns: list[Turn], sessions: dict[str, list[SessionEvent]]) -> bytes:
    """The turns and every stored event of their sessions, as the stream holds them."""
    body: dict[str, Any] = {
        "conversation": turns[0].conversation if turns else "",
        "turns": turns,
        "sessions": sessions,
    }
    return msgspec.json.format(msgspec.json.encode(body))


def matches(turns: list[Turn], text: str) -> bool:
    """Whether any question or answer of the conversation contains ``text`` (any case)."""
    needle = text.lower()
    return any(needle in t.question.lower() or needle in t.answer.lower() for t in turns)
