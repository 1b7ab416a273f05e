r"""A model's math: found once (``bus.mathtext``), set by KaTeX on the dashboard, read as
text in the terminal; money stays money and code stays code everywhere."""

from __future__ import annotations

import asyncio
import os

import pytest
from nats.aio.client import Client
from test_browser import dashboard_in_chromium, find_or_install_chromium
from test_bus import ask, council

from council.bus.events import FinalAnswer, SessionPlan, SessionStarted
from council.bus.mathtext import Piece, pieces, written_so_far
from council.bus.messages import Question
from council.bus.transport.server import EmbeddedNats
from council.cli.readable import readable
from council.dashboard.common import said
from council.dashboard.view import SessionView, threads

ANSWER = (
    "Each of the 3 friends pays \\( \\frac{2}{3} \\) of $5, that is\n"
    "\\[ \\frac{2}{3} \\times 5 = \\frac{10}{3} \\text{ dollars} \\]\n"
    "so the total is $10. In code: `price = $5`.\n\n\\boxed{\\dfrac{10}{3}}"
)


def test_math_prose_and_code_are_told_apart_and_join_back() -> None:
    found = pieces(ANSWER)
    assert [p.kind for p in found] == [
        "text", "inline", "text", "display", "text", "code", "text", "inline"
    ]  # fmt: skip
    assert found[1] == Piece("inline", " \\frac{2}{3} ")
    assert found[5] == Piece("code", "`price = $5`")
    assert found[-1] == Piece("inline", "\\boxed{\\dfrac{10}{3}}")
    assert pieces("a $$x^2$$ b")[1] == Piece("display", "x^2")
    assert pieces("still being written: \\( \\frac{1}") == [
        Piece("text", "still being written: \\( \\frac{1}")
    ]
    assert pieces("\\boxed{8") == [Piece("text", "\\boxed{8")]
    assert pieces("```\nprint('\\(x\\)')\n```") == [Piece("code", "```\nprint('\\(x\\)')\n```")]


def test_a_formula_still_being_written_is_held_back_until_it_closes() -> None:
    assert written_so_far("so \\(x = 2\\), then \\(2x^2 - 7") == "so \\(x = 2\\), then "
    assert written_so_far("we get \\[ \\frac{1}") == "we get "
    assert written_so_far("total $$3 +") == "total "
    assert written_so_far("so \\boxed{8") == "so "
    assert written_so_far("costs $5, and \\(x\\) is set") == "costs $5, and \\(x\\) is set"
    assert written_so_far("```\nprint('\\(')") == "```\nprint('\\(')"  # code is code


def test_the_dashboard_sets_math_for_katex_and_keeps_money_and_code() -> None:
    shown = said(ANSWER)
    assert "$\\frac{2}{3}$" in shown
    assert "\n$$\n\\frac{2}{3} \\times 5 = \\frac{10}{3} \\text{ dollars}\n$$\n" in shown
    assert "$\\boxed{\\dfrac{10}{3}}$" in shown
    assert "of \\$5" in shown
    assert "total is \\$10" in shown
    assert "`price = $5`" in shown  # a backslash in code would show
    assert said("\\( \\$5 + $3 \\)") == "$\\$5 + \\$3$"  # a dollar inside math too


def test_the_terminal_reads_math_as_text() -> None:
    text = readable(ANSWER)
    assert "pays 2/3 of $5" in text
    assert "2/3 × 5 = 10/3 dollars" in text
    assert text.rstrip().endswith("10/3")
    assert "`price = $5`" in text
    assert readable("\\( \\frac{a+b}{2} \\leq \\sqrt{x} \\)") == "(a+b)/2 ≤ √(x)"
    assert readable("no math, $4 each") == "no math, $4 each"


def test_the_chat_lists_conversations_not_a_measurements_sessions() -> None:
    def started(sid: str, *, remember: bool) -> SessionView:
        view = SessionView(sid)
        plan = SessionPlan(
            session_id=sid, question=sid, members=["m"], chairman="m", mode="pairwise",
            seed=1, remember=remember,
        )  # fmt: skip
        view.follow(SessionStarted(session_id=sid, seq=1, plan=plan, quorum=1))
        return view

    views = [started("p.kept", remember=True), started("p.eval", remember=False)]
    assert list(threads(views)) == ["p.kept"]


@pytest.mark.browser
async def test_a_fraction_renders_as_math_in_the_browser_and_money_stays_money(
    nats_server: EmbeddedNats, nc: Client
) -> None:
    """An answer with inline and display math, a box and prices, asked of a member alone
    (its opinion is the answer), opened from the Chat page's sidebar in Chromium."""
    chromium = find_or_install_chromium()
    if chromium is None:
        pytest.skip("no Chromium, and it cannot be installed here (needs root and apt-get)")
    async with council(nats_server) as c:
        c.runtime.enqueue("m2", ANSWER)
        events = await ask(nc, Question(question="How much each?", members=["m2"], alone=True))
        assert isinstance(events[-1], FinalAnswer)
        assert events[-1].answer == ANSWER
        env = {**os.environ, "COUNCIL_NATS_URL": nats_server.url}
        rendered = await asyncio.to_thread(open_in_chromium, chromium, env)
    assert rendered["katex"] >= 3  # two formulas and the box
    assert rendered["display"] >= 1  # (the deliberation repeats the opinion)
    assert "of $5" in rendered["text"]
    assert "total is $10" in rendered["text"]
    assert "\\frac" not in rendered["text"]


def open_in_chromium(chromium: str, env: dict[str, str]) -> dict:
    from playwright.sync_api import expect

    with dashboard_in_chromium(chromium, env) as page:
        expect(page.get_by_text("Chat with the council")).to_be_visible(timeout=60_000)
        page.get_by_role("button", name="How much each? (1)").click()
        answer = page.locator('[data-testid="stChatMessage"]').last
        expect(answer.locator(".katex").first).to_be_visible(timeout=60_000)
        return {
            "katex": answer.locator(".katex").count(),
            "display": answer.locator(".katex-display").count(),
            "text": answer.inner_text(),
        }
