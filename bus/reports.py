"""The report of a `council eval` run: the contract between `council eval`, which
writes it, and its readers (the dashboard's Eval page, `council docs`), so that
each reads one typed structure rather than keys of its own."""

from __future__ import annotations

import msgspec


class Calibration(msgspec.Struct, kw_only=True):
    """What `council eval` measured of each reviewer model, as the chairman reads it."""

    weights: dict[str, float]
    """Per model: its review discrimination, floored at 0."""
    dataset: str = ""
    questions: int = 0
    date: str = ""


class SystemRow(msgspec.Struct, kw_only=True):
    system: str
    group: str
    """``council``, ``best`` (one model alone at its best), ``alone`` (one model as
    the council asks it), ``stage 1`` (one member's opinion inside
    the council: a second sample of it alone), ``replayed`` (another strategy on
    the recorded stages) or ``bound`` (oracle, members' mean)."""
    correct: int
    n: int
    accuracy: float | None = None
    """``correct`` over ``n`` (``share`` reads either)."""
    low: float | None = None
    high: float | None = None
    tokens: float | None = None
    """Mean per question."""
    wall_s: float | None = None
    """Mean per question."""
    vs_chairman: float | None = None
    """``wall_s`` over the chairman's model alone's (the ratio of mean times)."""
    gained: int | None = None
    """Questions this system got right where the best model's own opinion in the
    same session was wrong: a comparison free of that model's sampling luck."""
    lost: int | None = None
    """The reverse of ``gained``."""

    @property
    def share(self) -> float | None:
        """The accuracy, read from ``correct`` over ``n`` where a report lacks it."""
        if self.accuracy is not None:
            return self.accuracy
        return self.correct / self.n if self.n else None


class Paired(msgspec.Struct, kw_only=True):
    """The council against one other system on the same questions: only the
    questions where exactly one of them was right tell them apart."""

    system: str
    council_only: int
    """Questions the council got right and the other system wrong."""
    other_only: int
    p_value: float
    """Two-sided exact sign test on those questions: how likely a split at least
    this uneven is if neither system is better."""


class Agreement(msgspec.Struct, kw_only=True):
    pair: str
    questions: int
    agree: float
    right_when_agreeing: float | None
    either_right: float


class Report(msgspec.Struct, kw_only=True):
    """A run of `council eval`, as saved beside its records and read back by the
    dashboard's Eval page and `council docs`. Every field but ``systems`` has a
    default, so a report of an older version still reads (without what it lacked)."""

    dataset: str = ""
    label: str = ""
    date: str = ""
    machine: str = ""
    questions: int | None = None
    answered: int | None = None
    members: list[str] = []
    chairman: str = ""
    systems: list[SystemRow]
    review_discrimination: float | None = None
    """Mean per-reviewer z-score given to right answers minus wrong ones."""
    discrimination_by_reviewer: dict[str, float] = {}
    synthesis_broke: int | None = None
    """Synthesized answers that were wrong although the top-ranked opinion was right."""
    synthesis_fixed: int | None = None
    fallbacks: int | None = None
    council_errors: int | None = None
    time_vs_chairman: float | None = None
    """The council's mean wall time per question over the chairman's model alone's."""
    time_vs_chairman_median: float | None = None
    """The median of the per-question ratios (short answers weigh as much as long)."""
    by_kind: dict[str, dict[str, float]] = {}
    versus_best: Paired | None = None
    """The council against the most accurate model alone at its best."""
    versus_other: Paired | None = None
    """The council against the other council asked in the same run."""
    concluded: dict[str, float] = {}
    """Per member, the share of its opinions that ended on a final-answer line (the
    rest were cut off by the token cap, or ignored the format)."""
    calibration: Calibration | None = None
    """Each reviewer model's weight, as the chairman reads it."""
    agreement: list[Agreement] = []
    """Per pair of the members' first samples: how often they agree, and how often
    they are right then (across methods, agreement is the stronger sign)."""

    COLUMNS = (
        "system", "accuracy", "95% interval", "right", "tokens/q", "s/q", "× chairman",
        "vs best's opinion",
    )  # fmt: skip

    def cells(self) -> list[list[str]]:
        """The systems table as printed: one row of cells per system."""
        return [
            [
                row.system,
                _percent(row.share),
                "" if row.low is None or row.high is None else f"{row.low:.1%}–{row.high:.1%}",
                f"{row.correct}/{row.n}",
                "" if row.tokens is None else f"{row.tokens:.0f}",
                "" if row.wall_s is None else f"{row.wall_s:.1f}",
                "" if row.vs_chairman is None else f"{row.vs_chairman:.1f}×",
                "" if row.gained is None else f"+{row.gained}/−{row.lost}",
            ]
            for row in self.systems
        ]

    def notes(self) -> list[str]:
        """What the table does not show, a line each."""
        lines = []
        if self.review_discrimination is not None:
            by = ", ".join(f"{k} {v:+.2f}" for k, v in self.discrimination_by_reviewer.items())
            lines.append(f"review discrimination {self.review_discrimination:+.2f} ({by})")
        lines.append(
            f"synthesis turned a right top-ranked answer wrong {self.synthesis_broke}×, "
            f"a wrong one right {self.synthesis_fixed}×; fallbacks {self.fallbacks}; "
            f"council errors {self.council_errors}"
        )
        if self.time_vs_chairman is not None:
            lines.append(
                f"council time / chairman's model alone: {self.time_vs_chairman:.1f}× "
                f"(median per question {self.time_vs_chairman_median or 0:.1f}×)"
            )
        if self.concluded:
            shares = ", ".join(f"{m} {share:.0%}" for m, share in self.concluded.items())
            lines.append(f"opinions that stated a final answer: {shares}")
        if self.calibration is not None:
            weights = ",".join(f"{m}={w:g}" for m, w in self.calibration.weights.items())
            lines.append(f"reviewer weights (COUNCIL_REVIEWER_WEIGHTS): {weights}")
        for a in self.agreement:
            right = "" if a.right_when_agreeing is None else f", right {a.right_when_agreeing:.0%}"
            lines.append(
                f"{a.pair}: agree on {a.agree:.0%} of {a.questions}{right} when they agree; "
                f"either right {a.either_right:.0%}"
            )
        for v in (self.versus_best, self.versus_other):
            if v is not None:
                lines.append(
                    f"council against {v.system}: right where it was wrong {v.council_only}×, "
                    f"wrong where it was right {v.other_only}× (sign test p = {v.p_value:.2f})"
                )
        return lines

    @property
    def title(self) -> str:
        answered = "?" if self.answered is None else self.answered
        return f"{self.dataset} · {self.label} · {answered}/{self.questions or '?'}"

    def markdown(self) -> str:
        """The same report for a Markdown page, with the accuracy per kind."""
        out = [f"**{self.title}** ({self.date}, {self.machine})", ""]
        out += markdown_table(list(self.COLUMNS), self.cells())
        out += [""] + [f"- {line}" for line in self.notes()]
        if self.by_kind:
            systems = [s for s in next(iter(self.by_kind.values())) if s != "questions"]
            rows = [
                [kind, f"{shares['questions']:.0f}", *(_share(shares.get(s)) for s in systems)]
                for kind, shares in self.by_kind.items()
            ]
            headers = ["kind", "questions", *systems]
            out += ["", "Accuracy per kind:", ""] + markdown_table(headers, rows)
        return "\n".join(out)


def _share(share: float | None) -> str:
    return "–" if share is None else f"{share:.0%}"


def _percent(share: float | None) -> str:
    return "–" if share is None else f"{share:.1%}"


def markdown_table(headers: list[str], rows: list[list[str]], *, numbers: bool = True) -> list[str]:
    """A Markdown table; with ``numbers``, every column but the first is right-aligned."""
    right = ["---" if i == 0 or not numbers else "---:" for i in range(len(headers))]

    def line(cells: list[str]) -> str:
        return "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |"

    return [line(headers), "|" + "|".join(right) + "|", *map(line, rows)]
