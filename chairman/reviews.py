"""Stage 2 of a session: reviews and the ranking."""

from __future__ import annotations

import random
import time
from contextlib import aclosing

from council.bus.events import Ranking, Review, ReviewFailed, StageStarted
from council.bus.members import method_of, model_of, split_member
from council.bus.messages import (
    AgentError,
    Completion,
    OpinionRequest,
    ReviewRequest,
    ReviewResult,
    Usage,
)
from council.bus.session import State
from council.chairman import aggregate, compute, extract, prompts
from council.chairman.core import SessionCore, until


class ReviewsStage(SessionCore):
    """Stage 2: the reviews (pairwise, ranked, or computed by programs), unless an
    answer stands without them, and the ranking they make."""

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
        asked = prompts.in_context(prompts.asked(plan), plan.history)
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
        async with aclosing(until(deadline, calls)) as replies:
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
        async with aclosing(until(deadline, calls)) as replies:
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
            messages=prompts.program_messages(prompts.asked(self.plan), self.plan.history),
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
