"""Runs one session through its three stages, recording each step as an event.

Talks to agents through an ``AgentGateway`` (the bus in production, plain
functions in tests) and emits events through a sink; knows no NATS.
"""

from __future__ import annotations

import asyncio
import functools
import json
import random
import time
from collections import Counter
from collections.abc import AsyncGenerator, Awaitable, Callable, Coroutine
from contextlib import aclosing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, TypeAlias, TypeVar

import msgspec
import structlog

from council.bus.members import method_of, model_of, sample_of, split_member
from council.bus.messages import (
    AgentError,
    AgentLost,
    ChatMessage,
    Completion,
    Failure,
    FinalAnswer,
    GenerationOptions,
    MemberFailed,
    MemberSummary,
    Opinion,
    OpinionRequest,
    Ranking,
    Review,
    ReviewFailed,
    ReviewRequest,
    ReviewResult,
    ReviewSummary,
    SessionEvent,
    SessionFailed,
    SessionPlan,
    SessionStarted,
    StageStarted,
    SynthesisRequest,
    Usage,
)
from council.bus.session import SessionState, State
from council.bus.tunables import tunable
from council.chairman import aggregate, compute, extract, prompts, strategies
from council.chairman.compute import NoTools, ToolGateway
from council.chairman.strategies import Standing, Stands

log = structlog.get_logger()

R = TypeVar("R")
EventSink = Callable[[SessionEvent], Awaitable[None]]


class AgentGateway(Protocol):
    async def opinion(self, request: OpinionRequest) -> Completion | AgentError: ...

    async def review(self, request: ReviewRequest) -> ReviewResult | AgentError: ...

    async def synthesize(self, request: SynthesisRequest) -> Completion | AgentError: ...


@dataclass(frozen=True)
class CouncilConfig:
    """How the chairman runs a session: the settings of ``council chairman``."""

    quorum: int = tunable(2, "COUNCIL_QUORUM", "opinions needed for a session to go on")
    opinions_deadline_s: float = tunable(
        180.0, "COUNCIL_OPINIONS_DEADLINE", "stage 1 deadline, s", flag="--opinions-deadline"
    )
    reviews_deadline_s: float = tunable(
        300.0, "COUNCIL_REVIEWS_DEADLINE", "stage 2 deadline, s", flag="--reviews-deadline"
    )
    synthesis_deadline_s: float = tunable(
        240.0, "COUNCIL_SYNTHESIS_DEADLINE", "stage 3 deadline, s", flag="--synthesis-deadline"
    )
    agent_silence_s: float = tunable(
        15.0,
        "COUNCIL_AGENT_SILENCE",
        "seconds without word from an agent before its request is asked of another",
        flag="--agent-silence",
    )
    settle_early: bool = tunable(
        True,
        "COUNCIL_SETTLE_EARLY",
        "stop the opinions still running once a majority of all the members agrees, "
        "when the strategy lets a majority stand (1/0)",
    )
    close_margin: float = tunable(
        0.5, "COUNCIL_CLOSE_MARGIN", "strategy close: a lead under this calls the chairman"
    )
    temperature: float = tunable(
        0.0, "COUNCIL_TEMPERATURE", "sampling temperature of a member's opinion (0: greedy)"
    )
    sample_temperature: float = tunable(
        0.7,
        "COUNCIL_SAMPLE_TEMPERATURE",
        "temperature of a member's further samples (model#2, model#3, ...)",
    )
    review_check_first: bool = tunable(
        False,
        "COUNCIL_REVIEW_CHECK_FIRST",
        "pairwise reviewers work the answer out before their score (1/0)",
    )
    program_rounds: int = tunable(
        3,
        "COUNCIL_PROGRAM_ROUNDS",
        "programs a computing member (MODEL+code) may write per opinion: a failed one goes "
        "back to its model with the error",
    )
    conclude: bool = tunable(
        True,
        "COUNCIL_CONCLUDE",
        "ask a member whose opinion states no final answer for it, in one short turn (1/0)",
    )
    reviewer_weights: str = tunable(
        "",
        "COUNCIL_REVIEWER_WEIGHTS",
        "how much each model's reviews count: model=weight,... or the calibration file "
        "`council eval` writes (0: not asked to review; unnamed: 1)",
    )
    history_tokens: int = tunable(
        1024,
        "COUNCIL_HISTORY_TOKENS",
        "how much of a conversation's earlier turns every stage sees (estimated tokens; "
        "the oldest turns beyond it are left out)",
    )
    opinion_max_tokens: int = tunable(
        512,
        "COUNCIL_OPINION_MAX_TOKENS",
        "tokens per opinion (room for the working and the final-answer line)",
    )
    review_max_tokens: int = tunable(160, "COUNCIL_REVIEW_MAX_TOKENS", "tokens per review")
    synthesis_max_tokens: int = tunable(
        512, "COUNCIL_SYNTHESIS_MAX_TOKENS", "tokens of the final answer"
    )
    review_temperature: float = 0.2
    synthesis_temperature: float = 0.3
    conclude_max_tokens: int = 40

    @functools.cached_property
    def weights(self) -> dict[str, float]:
        """Per reviewer model, how much its scores count (its measured discrimination),
        read from ``reviewer_weights``: a model at 0 is not asked to review; a model
        not named counts 1. ValueError says what cannot be read."""
        return reviewer_weights(self.reviewer_weights)


def reviewer_weights(text: str) -> dict[str, float]:
    """``model=weight,...``, or the path of the calibration file `council eval` writes."""
    text = text.strip()
    if not text:
        return {}
    if "=" not in text:
        try:
            weights = json.loads(Path(text).expanduser().read_text())["weights"]
            return {str(model): max(0.0, float(w)) for model, w in weights.items()}
        except (OSError, KeyError, TypeError, AttributeError, json.JSONDecodeError) as exc:
            raise ValueError(f"{text}: not a calibration file ({exc!r})") from None
    pairs = (item.split("=", 1) for item in text.split(",") if item.strip())
    return {model.strip(): max(0.0, float(weight)) for model, weight in pairs}


Plan: TypeAlias = SessionPlan
"""What a session runs: the protocol's struct, recorded whole when the session starts."""


class Conductor:
    def __init__(
        self,
        plan: Plan,
        config: CouncilConfig,
        agents: AgentGateway,
        sink: EventSink,
        *,
        owner: str = "",
        state: SessionState | None = None,
        tools: ToolGateway | None = None,
    ) -> None:
        """``state``: a session rebuilt from its events, to finish what it had left;
        ``tools``: the sandbox that computing members' programs run in."""
        self.config = config
        chosen = plan.strategy if plan.strategy in strategies.STRATEGIES else strategies.DEFAULT
        self.strategy = strategies.named(chosen, close_margin=config.close_margin)
        self.plan = msgspec.structs.replace(plan, strategy=self.strategy.name)
        """The plan with the strategy in force, recorded so that a resumed session
        concludes as it began, whatever the chairman's setting is by then."""
        self.agents = agents
        self.tools = tools or NoTools()
        self.sink = sink
        self.owner = owner
        self.state = state or SessionState(plan.session_id)
        self._recording = asyncio.Lock()
        self.labels = dict(zip(plan.members, prompts.labels_for(len(plan.members)), strict=True))
        self.latency_ms: dict[str, float] = {}
        self.log = log.bind(session_id=plan.session_id)

    async def record(self, event: SessionEvent) -> None:
        """Apply and store one event; the lock keeps the stream in seq order."""
        async with self._recording:
            event.seq = self.state.seq + 1
            self.state.apply(event)
            await self.sink(event)

    async def agent_lost(self, member: str, node: str, reissued: bool) -> None:
        stage = self.state.state.value
        if stage not in ("opinions", "reviews", "synthesis"):
            return
        await self.record(
            AgentLost(
                session_id=self.plan.session_id,
                member=member,
                stage=stage,  # type: ignore[arg-type]
                node=node or "unknown",
                detail=f"no word from the agent for {self.config.agent_silence_s:g} s",
                reissued=reissued,
            )
        )

    async def run(self) -> FinalAnswer | SessionFailed:
        """Run the session, or finish a rebuilt one from the stage it had reached."""
        started = time.perf_counter()
        plan = self.plan
        if self.state.state is State.NEW:
            await self.record(
                SessionStarted(
                    session_id=plan.session_id,
                    plan=plan,
                    quorum=self.config.quorum,
                    labels={label: member for member, label in self.labels.items()},
                    owner=self.owner,
                )
            )
        try:
            if self.state.state in (State.STARTED, State.OPINIONS):
                await self._stage("opinions", self._opinions)
                answered = self.state.answered
                if len(answered) < (1 if plan.alone else self.config.quorum):
                    why = "; ".join(f"{f.member}: {f.reason}" for f in self.state.failures.values())
                    return await self._fail(
                        "quorum_not_met",
                        f"{len(answered)} of {len(plan.members)} members answered; "
                        f"quorum is {self.config.quorum}" + (f" ({why})" if why else ""),
                        "opinions",
                    )
            if self.state.state in (State.OPINIONS, State.REVIEWS):
                await self._stage("reviews", self._reviews)
            final = await self._stage("synthesis", self._conclude)
            self.latency_ms["total"] = _ms_since(started)
            final.latency_ms = {k: round(v, 1) for k, v in self.latency_ms.items()}
            await self.record(final)
            return final
        except Exception as exc:
            self.log.exception("session_crashed")
            return await self._fail("internal_error", repr(exc), self.state.state.value)

    async def _stage(self, name: str, body: Callable[[], Coroutine[Any, Any, R]]) -> R:
        started = time.perf_counter()
        self.log.info("stage_started", stage=name)
        result = await body()
        self.latency_ms[name] = _ms_since(started)
        self.log.info("stage_finished", stage=name, ms=round(self.latency_ms[name]))
        return result

    async def _fail(self, reason: str, detail: str, stage: str) -> SessionFailed:
        self.log.warning("session_failed", reason=reason, detail=detail)
        failed = SessionFailed(
            session_id=self.plan.session_id, reason=reason, detail=detail, stage=stage
        )
        await self.record(failed)
        return failed

    def _options(self, member: str, max_tokens: int, temperature: float) -> GenerationOptions:
        index = self.plan.members.index(member) if member in self.plan.members else 99
        return GenerationOptions(
            temperature=temperature, seed=self.plan.seed + index, max_tokens=max_tokens
        )

    async def _opinions(self) -> None:
        plan, config = self.plan, self.config
        if self.state.state is State.STARTED:
            await self.record(
                StageStarted(
                    session_id=plan.session_id, stage="opinions", expected=len(plan.members)
                )
            )
        deadline = time.monotonic() + config.opinions_deadline_s
        max_tokens = plan.max_tokens or config.opinion_max_tokens

        def request(member: str) -> OpinionRequest:
            model, persona = split_member(member)
            messages = (
                prompts.program_messages(plan.question, plan.history)
                if method_of(member) == "code"
                else prompts.opinion_messages(plan.question, persona, plan.history)
            )
            return OpinionRequest(
                session_id=plan.session_id,
                member=member,
                model=model,
                messages=messages,
                options=self._options(member, max_tokens, self._temperature(member)),
                timeout_s=config.opinions_deadline_s,
            )

        settled = self.state.opinions.keys() | self.state.failures.keys()
        waves = [[m for m in plan.members if m not in settled]]
        if self.strategy.staged and not settled:
            first = strategies.first_wave(plan.members)
            waves = [first, [m for m in plan.members if m not in first]]
        for wave in waves:
            pending = await self._ask_opinions(wave, request, deadline)
            if pending:
                await self._not_needed(pending, "a majority of all the members agreed without it")
                return
            if wave is waves[0] and len(waves) > 1 and self._first_wave_stands(wave):
                await self._not_needed(waves[1], "the first members' answer stood without it")
                return

    def _first_wave_stands(self, wave: list[str]) -> bool:
        """Whether the first wave's answer stands: only when every member of it answered
        (a wave of two with one failed is no agreement across methods)."""
        return all(m in self.state.opinions for m in wave) and self._stands() is not None

    async def _ask_opinions(
        self, members: list[str], request: Callable[[str], OpinionRequest], deadline: float
    ) -> list[str]:
        """Ask ``members`` for their opinions; the members still out when the opinions
        were settled early (their calls are stopped)."""
        calls = {m: self._answer(request(m)) for m in members}
        pending = list(calls)
        async with aclosing(_until(deadline, calls)) as replies:
            async for member, reply in replies:
                pending.remove(member)
                await self._record_opinion(member, reply)
                if (
                    self.config.settle_early
                    and len(self.state.answered) >= self.config.quorum
                    and self.strategy.settled(self._texts(), pending)
                ):
                    return pending  # closing the calls cancels them: agents stop generating
        return []

    async def _not_needed(self, members: list[str], why: str) -> None:
        for member in members:
            await self.record(
                MemberFailed(
                    session_id=self.plan.session_id,
                    member=member,
                    stage="opinions",
                    reason="not_needed",
                    detail=f"stopped: {why}",
                )
            )

    async def _answer(self, request: OpinionRequest) -> Completion | AgentError:
        """A member's opinion: a program's answer for one that computes; for one that
        states no final answer, its answer after one short turn that asks for it."""
        if method_of(request.member) == "code":
            return await compute.compute(
                self.agents, self.tools, request, rounds=self.config.program_rounds
            )
        reply = await self.agents.opinion(request)
        if (
            not self.config.conclude
            or not isinstance(reply, Completion)
            or extract.conclusion(reply.text)
            or extract.is_short(reply.text)
        ):
            return reply
        asked = msgspec.structs.replace(
            request,
            messages=[
                *request.messages,
                ChatMessage("assistant", reply.text),
                ChatMessage("user", prompts.CONCLUDE),
            ],
            options=msgspec.structs.replace(
                request.options, max_tokens=self.config.conclude_max_tokens, temperature=0.0
            ),
        )
        concluded = await self.agents.opinion(asked)
        said = extract.stated(concluded.text) if isinstance(concluded, Completion) else ""
        if not said:
            return reply
        line = f"{prompts.FINAL_LINE}{said}"
        return msgspec.structs.replace(
            reply,
            text=f"{reply.text}\n\n{line}",
            usage=reply.usage + concluded.usage,
            latency_ms=reply.latency_ms + concluded.latency_ms,
        )

    def _temperature(self, member: str) -> float:
        if self.plan.temperature is not None:
            return self.plan.temperature
        first = sample_of(member) == 1
        return self.config.temperature if first else self.config.sample_temperature

    async def _record_opinion(self, member: str, reply: Completion | AgentError | None) -> None:
        if isinstance(reply, Completion):
            await self.record(
                Opinion(
                    session_id=self.plan.session_id,
                    member=member,
                    model=reply.model,
                    label=self.labels[member],
                    text=reply.text,
                    usage=reply.usage,
                    latency_ms=reply.latency_ms,
                    conclusion=extract.stated(reply.text),
                )
            )
        else:
            await self.record(
                MemberFailed(
                    session_id=self.plan.session_id,
                    member=member,
                    stage="opinions",
                    reason=reply.code if reply else "timeout",
                    detail=reply.detail if reply else "passed the opinions deadline",
                )
            )

    def _review_requests(self) -> dict[str, ReviewRequest]:
        """Pairwise: one call per (reviewer, other). Rank: one call per reviewer.
        Compute: one (reviewer, other) pair per review, checked in code."""
        plan, config = self.plan, self.config
        if plan.mode == "compute":
            return {
                f"{reviewer}\x00{other}": ReviewRequest(
                    session_id=plan.session_id,
                    member=reviewer,
                    model=model_of(reviewer),
                    messages=[],
                    mode="compute",
                    labels=[self.labels[other]],
                )
                for reviewer in self._reviewers()
                for other in self.state.answered
                if other != reviewer
            }
        answered = self.state.answered
        draw = random.Random(plan.seed)
        requests: dict[str, ReviewRequest] = {}
        asked = prompts.in_context(plan.question, plan.history)
        for reviewer in self._reviewers():
            model, _ = split_member(reviewer)
            others = [m for m in answered if m != reviewer]
            groups = [[o] for o in others] if plan.mode == "pairwise" else [others]
            for group in groups:
                if plan.mode == "rank":
                    draw.shuffle(group)
                shown = [(self.labels[o], self.state.opinions[o].text) for o in group]
                messages = (
                    prompts.pairwise_messages(
                        asked, *shown[0], check_first=config.review_check_first
                    )
                    if plan.mode == "pairwise"
                    else prompts.rank_messages(asked, shown)
                )
                key = f"{reviewer}\x00{','.join(group)}"
                requests[key] = ReviewRequest(
                    session_id=plan.session_id,
                    member=reviewer,
                    model=model,
                    messages=messages,
                    options=self._options(
                        reviewer, config.review_max_tokens, config.review_temperature
                    ),
                    timeout_s=config.reviews_deadline_s,
                    mode=plan.mode,
                    labels=[self.labels[o] for o in group],
                    check_first=config.review_check_first and plan.mode == "pairwise",
                )
        return requests

    def _already_reviewed(self, request: ReviewRequest) -> bool:
        """Whether a resumed session has this call's outcome (a rank call recorded even
        in part counts: its scores came from one reply)."""
        members_by_label = {label: m for m, label in self.labels.items()}
        group = {members_by_label[label] for label in request.labels}
        return any(
            r.reviewer == request.member and r.reviewed in group for r in self.state.reviews
        ) or any(
            f.reviewer == request.member and set(f.reviewed) == group
            for f in self.state.review_failures
        )

    def _reviewers(self) -> list[str]:
        """The answered members whose reviews count (weight above 0)."""
        return [m for m in self.state.answered if self._weight(m) > 0]

    def _weight(self, member: str) -> float:
        """A reviewer's configured weight; every reviewer counts 1 when none of the
        answered members has a weight above 0, so that a session is never left
        unreviewed by its weights."""
        weights = self.config.weights
        answered = self.state.answered
        if not any(weights.get(model_of(m), 1.0) > 0 for m in answered):
            return 1.0
        return weights.get(model_of(member), 1.0)

    def _texts(self) -> dict[str, str]:
        """Each answered member's opinion, in member order; a member stopped as not
        needed counts as one who gave no answer (a majority stood without it)."""
        opinions, failures = self.state.opinions, self.state.failures
        return {
            m: opinions[m].text if m in opinions else ""
            for m in self.plan.members
            if m in opinions or (m in failures and failures[m].reason == "not_needed")
        }

    def _stands(self) -> Stands | None:
        """The answer that stands without reviews: decided by the strategy right after
        the opinions, and recorded when the reviews stage begins (who stood, how), so
        that a resumed session reads the decision it made instead of deriving it anew."""
        plan, state = self.plan, self.state
        if plan.alone:
            return Stands(state.answered, "select", "asked alone")
        if state.state is State.OPINIONS:
            return self.strategy.stands(self._texts(), plan.chairman)
        begun = state.stages.get("reviews")
        if begun is None or not begun.stood:
            return None
        return Stands(begun.stood, begun.how or "vote", begun.reason)

    def _unreviewed(self) -> Stands:
        """What stands when nobody can review (one member answered, or every reviewer
        weighs 0): the chairman's model's own answer, else the first answer."""
        fallback = strategies.STRATEGIES["majority-or-chairman"]
        stands = fallback.stands(self._texts(), self.plan.chairman)
        return stands or Stands(self.state.answered[:1], "vote", "only one member answered")

    def _why_reviews(self, requests: dict[str, ReviewRequest]) -> str:
        forms = list(
            dict.fromkeys(extract.extract(t) or "no answer" for t in self._texts().values())
        )
        if len(forms) < 2 and len(self.state.answered) < 2:
            return "only one member answered: nobody to review"
        if self.strategy.always_reviews:
            why = f"strategy {self.strategy.name} reviews every session"
        else:
            why = f"the members disagree ({'; '.join(forms)})"
        skipped = [m for m in self.state.answered if m not in {r.member for r in requests.values()}]
        if skipped and requests:
            why += f"; not reviewing: {', '.join(skipped)} (reviewer weight 0)"
        return why

    async def _reviews(self) -> None:
        plan = self.plan
        if self.state.state is State.OPINIONS:
            stands = self._stands()
            requests = {} if stands else self._review_requests()
            reason = stands.reason if stands else self._why_reviews(requests)
            if not stands and not requests:
                stands = self._unreviewed()
            await self.record(
                StageStarted(
                    session_id=plan.session_id,
                    stage="reviews",
                    expected=len(requests),
                    reason=reason,
                    stood=stands.members if stands else [],
                    how=stands.how if stands else "",
                )
            )
        stands = self._stands()
        requests = {} if stands else self._review_requests()
        if self.state.ranking is not None:
            return
        if stands:
            entries, ties, rule = aggregate.by_agreement(
                self.state.answered,
                self.labels,
                stands.members,
                f"reviews skipped: {stands.reason}",
            )
            await self.record(
                Ranking(session_id=plan.session_id, entries=entries, ties=ties, tie_break=rule)
            )
            return
        deadline = time.monotonic() + self.config.reviews_deadline_s
        if plan.mode == "compute":
            await self._computed_reviews(requests, deadline)
            return await self._rank()
        members_by_label = {label: m for m, label in self.labels.items()}
        calls = {
            key: self.agents.review(req)
            for key, req in requests.items()
            if not self._already_reviewed(req)
        }
        async with aclosing(_until(deadline, calls)) as replies:
            async for key, reply in replies:
                await self._record_review(requests[key], reply, members_by_label)
        await self._rank()

    async def _rank(self) -> None:
        plan = self.plan
        scores = [
            aggregate.Score(r.reviewer, r.reviewed, r.score, self._weight(r.reviewer))
            for r in self.state.reviews
        ]
        entries, ties, rule = aggregate.rank(
            self.state.answered, self.labels, scores, seed=plan.seed
        )
        await self.record(
            Ranking(session_id=plan.session_id, entries=entries, ties=ties, tie_break=rule)
        )

    async def _computed_reviews(self, requests: dict[str, ReviewRequest], deadline: float) -> None:
        """Each reviewer's own computed answer (one program per reviewer, whatever the
        number of answers it checks), then its review of each answer, scored in code
        (``compute.checked``).

        A reviewer that computes checks with its own opinion's program; one that
        answers in words writes a program of its own (``_computed_check``)."""
        members_by_label = {label: m for m, label in self.labels.items()}
        to_check: dict[str, list[str]] = {}
        for request in requests.values():
            if not self._already_reviewed(request):
                reviewed = members_by_label[request.labels[0]]
                to_check.setdefault(request.member, []).append(reviewed)
        calls = {reviewer: self._computed_check(reviewer) for reviewer in to_check}
        async with aclosing(_until(deadline, calls)) as replies:
            async for reviewer, reply in replies:
                own = reply if isinstance(reply, Completion) else None
                computed = extract.extract(own.text) if own else ""
                for i, other in enumerate(to_check[reviewer]):
                    answer = extract.extract(self.state.opinions[other].text)
                    score, why = compute.checked(computed, answer)
                    await self.record(
                        Review(
                            session_id=self.plan.session_id,
                            reviewer=reviewer,
                            reviewed=other,
                            score=score,
                            justification=why,
                            # its program's cost once (nothing for one reused)
                            usage=own.usage if i == 0 and own else Usage(),
                            latency_ms=own.latency_ms if i == 0 and own else 0.0,
                            mode="compute",
                            computed=computed,
                        )
                    )

    async def _computed_check(self, reviewer: str) -> Completion | AgentError:
        """A reviewer's program. A reviewer that answers in words samples one of its
        own (its seed, the samples' temperature): a copy of a computing member's
        greedy program would make every reviewer of a model agree by construction,
        and a check that is not independent adds nothing to the answer it checks."""
        own = self.state.opinions.get(reviewer)
        if own is not None and method_of(reviewer) == "code":
            return Completion(
                member=reviewer, model=own.model, text=own.text, usage=Usage(), latency_ms=0.0
            )
        config = self.config
        request = OpinionRequest(
            session_id=self.plan.session_id,
            member=reviewer,
            model=model_of(reviewer),
            messages=prompts.program_messages(self.plan.question, self.plan.history),
            options=self._options(reviewer, config.opinion_max_tokens, config.sample_temperature),
            timeout_s=config.reviews_deadline_s,
        )
        return await compute.compute(self.agents, self.tools, request, rounds=config.program_rounds)

    async def _record_review(
        self,
        request: ReviewRequest,
        reply: ReviewResult | AgentError | None,
        members_by_label: dict[str, str],
    ) -> None:
        plan = self.plan
        if isinstance(reply, ReviewResult):
            for i, (label, score) in enumerate(sorted(reply.scores.items())):
                await self.record(
                    Review(
                        session_id=plan.session_id,
                        reviewer=request.member,
                        reviewed=members_by_label[label],
                        score=score,
                        justification=reply.justification,
                        # One rank-mode call scores several members: its cost is
                        # counted once, on the first review it produced.
                        usage=reply.usage if i == 0 else Usage(),
                        latency_ms=reply.latency_ms if i == 0 else 0.0,
                        mode=request.mode,
                        repaired=reply.repaired,
                    )
                )
        else:
            await self.record(
                ReviewFailed(
                    session_id=plan.session_id,
                    reviewer=request.member,
                    reviewed=[members_by_label[label] for label in request.labels],
                    reason=reply.code if reply else "timeout",
                    detail=reply.detail if reply else "passed the reviews deadline",
                )
            )

    async def _conclude(self) -> FinalAnswer:
        """The final answer, by the strategy; the top-ranked opinion, marked as a
        fallback, when the chairman's model fails."""
        assert self.state.ranking is not None
        entries = self.state.ranking.entries
        order = [e.member for e in entries]
        stands = self._stands()
        if stands:
            pick = strategies.Pick(stands.how, stands.members[0])
            why = f"not needed: {stands.reason}"
        else:
            standing = Standing(
                order, entries[0].margin, entries[0].tied, [e.score for e in entries]
            )
            pick = self.strategy.concludes(self._texts(), standing)
            why = (
                f"strategy {self.strategy.name}: "
                + ("the chairman's model writes the answer" if pick.how == "synthesize"
                   else f"the {pick.how} of the reviews stands, no synthesis")
            )  # fmt: skip
        if self.state.state is State.REVIEWS:
            await self.record(
                StageStarted(
                    session_id=self.plan.session_id,
                    stage="synthesis",
                    expected=int(pick.how == "synthesize"),
                    reason=why,
                )
            )
        if pick.how != "synthesize":
            text = self.state.opinions[pick.member].text
            return self._final_answer(text, Usage(), how=pick.how, selected=pick.member)
        synthesis = await self._synthesis()
        if isinstance(synthesis, Completion):
            return self._final_answer(prompts.unfenced(synthesis.text), synthesis.usage)
        reason = f"synthesis_{synthesis.code}: {synthesis.detail}"
        self.log.warning("synthesis_fallback", reason=reason)
        return self._final_answer(
            self.state.opinions[order[0]].text,
            Usage(),
            how="select",
            selected=order[0],
            fallback=reason,
        )

    async def _synthesis(self) -> Completion | AgentError:
        plan, config = self.plan, self.config
        assert self.state.ranking is not None
        entries = self.state.ranking.entries
        answers = [(self.labels[m], self.state.opinions[m].text) for m in self.state.answered]
        request = SynthesisRequest(
            session_id=plan.session_id,
            member="chairman",
            model=plan.chairman,
            messages=prompts.synthesis_messages(
                prompts.in_context(plan.question, plan.history),
                answers,
                entries,
                aggregate.dissent(entries),
                self._computed_answers(),
            ),
            options=GenerationOptions(
                temperature=config.synthesis_temperature,
                seed=plan.seed,
                max_tokens=config.synthesis_max_tokens,
            ),
            timeout_s=config.synthesis_deadline_s,
        )
        try:
            return await asyncio.wait_for(
                self.agents.synthesize(request), config.synthesis_deadline_s
            )
        except TimeoutError:
            return AgentError(code="timeout", detail="passed the synthesis deadline")

    def _computed_answers(self) -> dict[str, int]:
        """What the reviewers' own programs printed, and how many printed each: in
        ``compute`` mode, the checks the synthesis weighs beside the ranking."""
        by_reviewer = {r.reviewer: r.computed for r in self.state.reviews if r.computed}
        return dict(Counter(by_reviewer.values()).most_common())

    def _final_answer(
        self,
        text: str,
        synthesis_usage: Usage,
        *,
        how: strategies.How = "synthesize",
        selected: str = "",
        fallback: str = "",
    ) -> FinalAnswer:
        state, plan = self.state, self.plan
        assert state.ranking is not None
        models = {m: model_of(m) for m in plan.members}
        opinion_usage = sum((o.usage for o in state.opinions.values()), Usage())
        review_usage = sum((r.usage for r in state.reviews), Usage())
        usage = {
            "opinions": opinion_usage,
            "reviews": review_usage,
            "synthesis": synthesis_usage,
            "total": opinion_usage + review_usage + synthesis_usage,
        }
        by_model: dict[str, Usage] = {}
        for member, used in [(o.member, o.usage) for o in state.opinions.values()] + [
            (r.reviewer, r.usage) for r in state.reviews
        ]:
            by_model[models[member]] = by_model.get(models[member], Usage()) + used
        if synthesis_usage != Usage():
            by_model[plan.chairman] = by_model.get(plan.chairman, Usage()) + synthesis_usage
        failed = [
            Failure(member=f.member, stage=f.stage, reason=f.reason, detail=f.detail)
            for f in state.failures.values()
        ]
        return FinalAnswer(
            session_id=plan.session_id,
            answer=text,
            chairman=plan.chairman,
            ranking=state.ranking.entries,
            opinions=[
                MemberSummary(
                    member=o.member, model=o.model, usage=o.usage, latency_ms=o.latency_ms
                )
                for o in state.opinions.values()
            ],
            reviews=[
                ReviewSummary(
                    reviewer=r.reviewer,
                    reviewed=r.reviewed,
                    model=models[r.reviewer],
                    score=r.score,
                    usage=r.usage,
                    latency_ms=r.latency_ms,
                )
                for r in state.reviews
            ],
            failed=failed,
            usage=usage,
            usage_by_model=by_model,
            latency_ms={k: round(v, 1) for k, v in self.latency_ms.items()},
            strategy=how,
            selected=selected,
            fallback=fallback,
            reviews_skipped=self.state.reviews_skipped,
            conclusion=extract.stated(text),
        )


async def _until(
    deadline: float, calls: dict[str, Coroutine[Any, Any, R]]
) -> AsyncGenerator[tuple[str, R | None], None]:
    """Yield (key, reply) as calls finish; at the deadline, (key, None) for the rest."""
    tasks = {asyncio.ensure_future(call): key for key, call in calls.items()}
    pending = set(tasks)
    try:
        while pending:
            timeout = max(0.0, deadline - time.monotonic())
            done, pending = await asyncio.wait(
                pending, timeout=timeout, return_when=asyncio.FIRST_COMPLETED
            )
            if not done:
                break
            for task in done:
                yield tasks[task], task.result()
        for task in pending:
            task.cancel()
            yield tasks[task], None
    finally:
        for task in pending:
            task.cancel()


def _ms_since(started: float) -> float:
    return (time.perf_counter() - started) * 1000
