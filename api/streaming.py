"""What a streamed completion sends of the answer, and when: the answer's own words as
soon as they exist, not the whole answer once the council has decided.

The answer is, by how the session concludes: the chairman's synthesis (its tokens
stream from ``council.live`` as its model writes them); an opinion that stood
without reviews (complete when the reviews are skipped: sent at once); the
member's own opinion for a model asked alone (its tokens, as written); or a
ranked opinion (known at the final answer). Whatever the final answer adds to
what was sent follows it. The synthesis is cleaned as it streams as the chairman
cleans it (``bus.fences``: a marker of its prompt the model echoed, such as
``<<<Response A>>>``, is left out, so a line is held back from its first ``<``
until it ends), and blank lines around it wait for words to follow: a client's
text is the answer itself. Should the final answer still differ from what was
sent (the chairman's model failed mid-answer, and the top-ranked opinion replaced
it), it follows a rule (``---``), so the text a client has ends with it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from council.bus import fences
from council.bus.events import FinalAnswer, Opinion, SessionEvent, SessionStarted, StageStarted
from council.bus.messages import TokenDelta

REPLACED = "\n\n---\n\n"
"""Between text sent and a final answer that is not its continuation."""


@dataclass
class AnswerStream:
    sent: str = ""
    line: str = ""
    """The synthesis's line being written (a marker may be beginning in it)."""
    line_sent: int = 0
    """How much of ``line`` was sent: what no marker can change."""
    held: str = ""
    """Newlines at the end of what was written: sent only once words follow them."""
    alone: str = ""
    """The member asked alone: its opinion is the answer."""
    opinions: dict[str, str] = field(default_factory=dict)
    done: bool = False

    def event(self, event: SessionEvent) -> str:
        """The answer's text this event makes known ("" for none)."""
        if self.done:
            return ""
        match event:
            case SessionStarted(plan=plan) if plan.alone:
                self.alone = plan.members[0]
            case Opinion(member=member, text=text):
                self.opinions[member] = text
            case StageStarted(stood=[first, *_], how="select" | "vote") if not self.sent:
                return self._send(self.opinions.get(first, ""))
            case FinalAnswer(answer=answer):
                self.done = True
                if answer.startswith(self.sent):
                    return self._send(answer[len(self.sent) :])
                return self._send(REPLACED + answer)
        return ""

    def delta(self, delta: TokenDelta) -> str:
        """The answer's text a live delta carries: the synthesis's, or the opinion of the
        member asked alone."""
        writing = delta.stage == "synthesis" or (
            delta.stage == "opinions" and delta.member == self.alone and self.alone
        )
        if not writing or self.done:
            return ""
        text = delta.text
        if delta.stage == "synthesis":
            text = self._unfenced(delta.text)
        text = self.held + text
        if not self.sent:
            text = text.lstrip("\n")
        words = text.rstrip("\n")
        self.held = text[len(words) :]
        return self._send(words)

    def _unfenced(self, written: str) -> str:
        """What ``written`` adds to the synthesis as the chairman will clean it: the lines
        it completes without echoed markers, and of the line still being written, what
        no marker can change."""
        lines = (self.line + written).splitlines(keepends=True)
        self.line = lines.pop() if lines and lines[-1] == lines[-1].splitlines()[0] else ""
        settled = fences.settled(self.line)
        cleaned = "".join(fences.unfenced_line(line) for line in lines) + self.line[:settled]
        already, self.line_sent = self.line_sent, settled
        return cleaned[already:]

    def _send(self, text: str) -> str:
        self.sent += text
        return text
