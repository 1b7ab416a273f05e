"""Stage 1 of a session: the members' opinions."""

from __future__ import annotations

import time
from collections.abc import Callable
from contextlib import aclosing

import msgspec

from council.bus.events import MemberFailed, Opinion, StageStarted
from council.bus.members import method_of, sample_of, split_member
from council.bus.messages import AgentError, ChatMessage, Completion, OpinionRequest
from council.bus.session import State
from council.chairman import compute, extract, prompts, strategies
from council.chairman.core import SessionCore, until


class OpinionsStage(SessionCore):
    """Stage 1: each member's opinion (a program's for one that computes), asked in
    waves where the strategy stages them, settled early once a majority stands."""

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
                prompts.program_messages(prompts.asked(plan), plan.history)
                if method_of(member) == "code"
                else prompts.opinion_messages(prompts.asked(plan), persona, plan.history)
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
        async with aclosing(until(deadline, calls)) as replies:
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
        if not isinstance(concluded, Completion) or not (said := extract.stated(concluded.text)):
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
