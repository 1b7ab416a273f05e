"""`council eval`: the council, each member alone and the chairman's model alone on
checkable questions, through the bus as any client asks.

Each question's record is appended to a results file as soon as it is known, so
a rerun resumes where the last one stopped and Ctrl-C leaves a usable report.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import os
import time
from dataclasses import dataclass
from pathlib import Path

import msgspec
import structlog
from nats.aio.client import Client
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from council.bus.client.ask import follow, submit
from council.bus.errors import CouncilError, QuestionRejected, SessionTimeout
from council.bus.events import FinalAnswer, MemberFailed, Opinion, Ranking, Review, SessionEvent
from council.bus.members import method_of, model_of
from council.bus.messages import Accepted, Question, ReviewMode
from council.bus.transport.connection import Credentials, connect
from council.bus.tunables import tunable
from council.chairman.extract import checked_text, conclusion
from council.evaluation.questions import EvalQuestion, load
from council.evaluation.records import Answer, CouncilAnswer, Record, ReviewScore
from council.evaluation.report import build_report, print_report

log = structlog.get_logger()

BEST_MAX_TOKENS = 1024
"""A model at its best has room for its whole working."""


@dataclass(frozen=True)
class Versus:
    """Another council asked each question in the same run: the figures of a change
    of default, before and after, come from one run."""

    members: list[str]
    strategy: str = ""
    mode: ReviewMode | None = None
    """Its review mode (None: the same as the council's)."""

    @classmethod
    def parse(
        cls, members: str, strategy: str = "", mode: ReviewMode | None = None
    ) -> Versus | None:
        names = [m.strip() for m in members.split(",") if m.strip()]
        if not names:
            if strategy or mode:
                raise SystemExit("error: --versus-strategy and --versus-mode need --versus MEMBERS")
            return None
        return cls(names, strategy, mode)

    def describe(self) -> str:
        mode = f", {self.mode} reviews" if self.mode else ""
        return f"{self.strategy or 'default strategy'} ({', '.join(self.members)}{mode})"


@dataclass(frozen=True)
class EvalPlan:
    path: Path
    members: list[str]
    chairman: str
    mode: ReviewMode
    limit: int | None
    name: str
    sample: int | None = None
    same_prompt: bool = True
    """Also ask each model alone as the council asks it (beside it at its best)."""
    with_tool: bool = True
    """Also ask each model alone with the tool at its best (``MODEL+code``, greedy)."""
    strategy: str = ""
    """The council's strategy ("": the chairman's setting)."""
    versus: Versus | None = None
    alone: list[str] | None = None
    """The models asked alone (None: every model of the councils and their chairmen)."""
    best_max_tokens: int = BEST_MAX_TOKENS

    def label(self) -> str:
        """The results' name: given, or the council asked for (``default``: the chairman's)."""
        if self.name:
            return self.name
        if not (self.members or self.chairman or self.strategy or self.versus):
            return f"default-{self.mode}"
        asked = f"{','.join(self.members)}|{self.chairman}|{self.mode}|{self.strategy}"
        if self.versus:
            asked += f"|{self.versus.describe()}"
        if self.alone is not None:
            asked += f"|alone {','.join(self.alone)}"
        return f"custom-{hashlib.sha256(asked.encode()).hexdigest()[:8]}"


def spread(questions: list[EvalQuestion], count: int | None) -> list[EvalQuestion]:
    """``count`` questions evenly spaced through the file, so every kind is in."""
    if count is None or count >= len(questions):
        return questions
    step = len(questions) / max(count, 1)
    return [questions[int(i * step)] for i in range(count)]


@dataclass(frozen=True)
class Evals:
    evals_dir: str = tunable(
        "",
        "COUNCIL_EVALS_DIR",
        "where `council eval` keeps records and reports (the dashboard's Eval page reads them)",
        shown="~/.local/share/council/evals",
    )

    @property
    def evals_path(self) -> Path:
        if self.evals_dir:
            return Path(self.evals_dir).expanduser()
        data = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
        return Path(data) / "council" / "evals"


@dataclass(frozen=True)
class Target:
    """Where the council is, how long a question may take, and where results go."""

    nats_url: str
    credentials: Credentials
    evals_dir: Path
    timeout_s: float


def results_path(evals_dir: Path, plan: EvalPlan) -> Path:
    return evals_dir / f"{plan.path.stem}--{plan.label()}.jsonl"


def read_records(path: Path) -> list[Record]:
    """Records already saved; a line cut short by a crash is skipped."""
    if not path.exists():
        return []
    records = []
    for line in path.read_bytes().splitlines():
        try:
            records.append(msgspec.json.decode(line, type=Record))
        except (msgspec.DecodeError, msgspec.ValidationError):
            log.warning("eval_record_unreadable", path=str(path))
    return records


async def run_eval(target: Target, plan: EvalPlan, *, as_json: bool) -> int:
    questions = spread(load(plan.path), plan.sample)[: plan.limit]
    out = results_path(target.evals_dir, plan)
    out.parent.mkdir(parents=True, exist_ok=True)
    done = {r.id: r for r in read_records(out)}
    todo = [q for q in questions if q.id not in done]
    console = Console(stderr=True)
    console.print(
        f"eval {plan.path.name}: {len(questions)} questions, {len(questions) - len(todo)} "
        f"already in {out}"
    )
    nc = await connect(target.nats_url, name="council-eval", credentials=target.credentials)
    interrupted = False
    try:
        with Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=console,
        ) as progress:
            task = progress.add_task("asking", total=len(questions), completed=len(done))
            for question in todo:
                record = await evaluate(nc, question, plan, target.timeout_s)
                with out.open("ab") as f:
                    f.write(msgspec.json.encode(record) + b"\n")
                done[record.id] = record
                mark = "✓" if record.council.correct else "✗"
                progress.update(task, advance=1, description=f"{mark} {question.id}")
    except (asyncio.CancelledError, KeyboardInterrupt):
        interrupted = True
    finally:
        await nc.close()
    records = [done[q.id] for q in questions if q.id in done]
    report = build_report(records, dataset=plan.path.name, label=plan.label(), total=len(questions))
    report_file = out.with_suffix(".report.json")
    report_file.write_bytes(msgspec.json.format(msgspec.json.encode(report)))
    if report.calibration is not None:
        calibration_file = out.with_suffix(".calibration.json")
        calibration_file.write_bytes(msgspec.json.format(msgspec.json.encode(report.calibration)))
        console.print(f"reviewer calibration: {calibration_file} (COUNCIL_REVIEWER_WEIGHTS)")
    if as_json:
        print(msgspec.json.encode(report).decode())
    else:
        print_report(report, Console())
    console.print(f"records: {out}\nreport: {report_file}")
    if interrupted:
        console.print(f"interrupted: {len(records)} of {len(questions)} questions; rerun to resume")
        return 130
    return 0


async def evaluate(nc: Client, question: EvalQuestion, plan: EvalPlan, timeout_s: float) -> Record:
    """The council on one question, then each model alone at its best (greedy, room
    for its working), with the tool at its best, and as the council asks it: one
    after another, so each alone call is timed with the machine to itself."""
    seed = int(hashlib.sha256(question.id.encode()).hexdigest()[:7], 16)
    council = await ask_council(nc, question, plan, seed, timeout_s)
    versus = None
    if plan.versus:
        versus = await ask_council(
            nc,
            question,
            dataclasses.replace(
                plan,
                members=plan.versus.members,
                strategy=plan.versus.strategy,
                mode=plan.versus.mode or plan.mode,
                versus=None,
            ),
            seed,
            timeout_s,
        )
    alone: dict[str, Answer] = {}
    best: dict[str, Answer] = {}
    models = [model_of(m) for c in (council, versus) if c for m in [*c.members, c.chairman]]
    for model in plan.alone if plan.alone is not None else dict.fromkeys(models):
        if not model:
            continue
        best[model] = await ask_alone(
            nc, question, model, seed, timeout_s, temperature=0.0, max_tokens=plan.best_max_tokens
        )
        if plan.with_tool and method_of(model) == "words":
            computing = f"{model}+code"
            best[computing] = await ask_alone(
                nc, question, computing, seed, timeout_s, temperature=0.0,
                max_tokens=plan.best_max_tokens,
            )  # fmt: skip
        if plan.same_prompt:
            alone[model] = await ask_alone(nc, question, model, seed, timeout_s)
    return Record(
        id=question.id, kind=question.kind, council=council, alone=alone, best=best, versus=versus
    )


def judged(question: EvalQuestion, text: str) -> tuple[bool, str]:
    """Whether an answer is right, read from its conclusion when it states one."""
    return question.check.accepts(checked_text(text)), conclusion(text)


async def ask_council(
    nc: Client, question: EvalQuestion, plan: EvalPlan, seed: int, timeout_s: float
) -> CouncilAnswer:
    asked = Question(
        question=question.question,
        members=plan.members,
        chairman=plan.chairman,
        mode=plan.mode,
        seed=seed,
        strategy=plan.strategy,
        remember=False,
    )
    started = time.perf_counter()
    accepted = await submit_when_free(nc, asked)
    try:
        events = [e async for e in follow(nc, accepted.session_id, timeout_s=timeout_s)]
    except CouncilError as exc:
        return CouncilAnswer(error=str(exc))
    wall_s = time.perf_counter() - started
    answer = council_answer(question, accepted.members, accepted.chairman, events, wall_s)
    answer.strategy_name = accepted.strategy
    return answer


def council_answer(
    question: EvalQuestion,
    members: list[str],
    chairman: str,
    events: list[SessionEvent],
    wall_s: float,
) -> CouncilAnswer:
    opinions = {
        e.member: Answer(
            text=e.text,
            correct=judged(question, e.text)[0],
            conclusion=e.conclusion,
            tokens=e.usage.prompt_tokens + e.usage.completion_tokens,
            wall_s=e.latency_ms / 1000,
        )
        for e in events
        if isinstance(e, Opinion)
    }
    reviews = [
        ReviewScore(reviewer=e.reviewer, reviewed=e.reviewed, score=e.score)
        for e in events
        if isinstance(e, Review)
    ]
    not_needed = [
        e.member for e in events if isinstance(e, MemberFailed) and e.reason == "not_needed"
    ]
    ranking = next((e for e in events if isinstance(e, Ranking)), None)
    final = events[-1]
    answer = CouncilAnswer(
        members=members,
        chairman=chairman,
        opinions=opinions,
        reviews=reviews,
        ranking=[r.member for r in ranking.entries] if ranking else [],
        margin=ranking.entries[0].margin if ranking and ranking.entries else 0.0,
        tied=bool(ranking and ranking.entries and ranking.entries[0].tied),
        scores=[r.score for r in ranking.entries] if ranking else [],
        wall_s=wall_s,
        not_needed=not_needed,
    )
    if not isinstance(final, FinalAnswer):
        answer.error = f"{getattr(final, 'reason', 'failed')}: {getattr(final, 'detail', '')}"
        return answer
    answer.text = final.answer
    answer.correct, answer.conclusion = judged(question, final.answer)
    answer.tokens = final.usage["total"].prompt_tokens + final.usage["total"].completion_tokens
    answer.stage_s = {k: v / 1000 for k, v in final.latency_ms.items()}
    answer.stage_tokens = {
        stage: used.prompt_tokens + used.completion_tokens for stage, used in final.usage.items()
    }
    answer.strategy = final.strategy
    answer.fallback = final.fallback
    answer.reviews_skipped = final.reviews_skipped
    return answer


async def submit_when_free(nc: Client, asked: Question, patience_s: float = 300) -> Accepted:
    """Submit, waiting out ``busy``; any other rejection means the whole run is wrong."""
    deadline = time.monotonic() + patience_s
    while True:
        try:
            return await submit(nc, asked, timeout_s=30)
        except QuestionRejected as exc:
            if exc.reason != "busy" or time.monotonic() > deadline:
                raise
            await asyncio.sleep(1.0)


async def ask_alone(
    nc: Client,
    question: EvalQuestion,
    model: str,
    seed: int,
    timeout_s: float,
    *,
    temperature: float | None = None,
    max_tokens: int | None = None,
) -> Answer:
    """``model`` alone: as the council asks its members, or with the decoding given."""
    asked = Question(
        question=question.question,
        members=[model],
        alone=True,
        seed=seed,
        temperature=temperature,
        max_tokens=max_tokens,
        remember=False,
    )
    started = time.perf_counter()
    try:
        accepted = await submit_when_free(nc, asked)
        events = [e async for e in follow(nc, accepted.session_id, timeout_s=timeout_s)]
    except QuestionRejected as exc:  # e.g. no agent serves the chairman's model for opinions
        return Answer(error=f"rejected: {exc.reason}: {exc.detail}")
    except SessionTimeout as exc:
        return Answer(error=str(exc))
    final = events[-1]
    if not isinstance(final, FinalAnswer):
        return Answer(error=f"{getattr(final, 'reason', 'failed')}: {getattr(final, 'detail', '')}")
    total = final.usage["total"]
    correct, stated = judged(question, final.answer)
    return Answer(
        text=final.answer,
        correct=correct,
        conclusion=stated,
        tokens=total.prompt_tokens + total.completion_tokens,
        wall_s=time.perf_counter() - started,
    )
