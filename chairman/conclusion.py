"""Stage 3 of a session: the final answer."""

from __future__ import annotations

import asyncio
from collections import Counter

from council.bus.events import Failure, FinalAnswer, MemberSummary, ReviewSummary, StageStarted
from council.bus.fences import unfenced
from council.bus.members import model_of
from council.bus.messages import AgentError, Completion, GenerationOptions, SynthesisRequest, Usage
from council.bus.session import State
from council.chairman import aggregate, extract, prompts, strategies
from council.chairman.core import SessionCore
from council.chairman.strategies import Standing


class ConclusionStage(SessionCore):
    """Stage 3: the final answer, by the strategy: an opinion that stands, the
    top-ranked, or the chairman's synthesis."""

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
            return self._final_answer(unfenced(synthesis.text), synthesis.usage)
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
                prompts.in_context(prompts.asked(plan), plan.history),
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
