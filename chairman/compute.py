"""A member that computes: its model writes a program, the sandbox runs it, and what
the program printed is the member's answer.

The protocol is text (a fenced program in a chat reply), so any runtime serves it;
a program that fails goes back to the model with its error, for a few rounds.
Each round is an ordinary opinion call to the member's agent, so its tokens
stream live and a stop cancels it as it cancels any call.
"""

from __future__ import annotations

import re
import time
from typing import Protocol

import msgspec

from council.bus.messages import (
    MAX_PROGRAM_CHARS,
    AgentError,
    ChatMessage,
    Completion,
    OpinionRequest,
    ProgramResult,
    RunProgram,
    Usage,
)
from council.chairman import prompts


class OpinionAgents(Protocol):
    async def opinion(self, request: OpinionRequest) -> Completion | AgentError: ...


class ToolGateway(Protocol):
    async def run(self, program: RunProgram) -> ProgramResult: ...


class NoTools:
    """A council with no sandbox: a computing member fails with a named reason."""

    async def run(self, program: RunProgram) -> ProgramResult:
        return ProgramResult(outcome="unavailable", detail="this council has no tools process")


_FENCED = re.compile(r"```[ \t]*(?:python3?|py)?[ \t]*\n(?P<code>.*?)(?:```|\Z)", re.DOTALL)


def program_in(reply: str) -> str:
    """The program in a model's reply: its longest fenced block, else the whole reply
    when it reads as Python (a model that forgot the fence)."""
    blocks = [m.group("code").strip() for m in _FENCED.finditer(reply)]
    blocks = [b for b in blocks if b]
    if blocks:
        return max(blocks, key=len)[:MAX_PROGRAM_CHARS]
    text = reply.strip()
    return text[:MAX_PROGRAM_CHARS] if "print(" in text else ""


def answer_printed(stdout: str) -> str:
    """The answer a program printed: its last non-empty line."""
    lines = [line.strip() for line in stdout.splitlines() if line.strip()]
    return lines[-1][:400] if lines else ""


def checked(computed: str, answer: str) -> tuple[int, str]:
    """A computed review's score and reason: 10 when an answer's final form is the one
    the reviewer's program computed, 1 when it differs, 5 when the program found none."""
    if not computed:
        return 5, "its program found no answer: cannot tell"
    if answer == computed:
        return 10, f"computed {computed}, as the response concludes"
    return 1, f"computed {computed}; the response concludes {answer}"


async def compute(
    agents: OpinionAgents, tools: ToolGateway, request: OpinionRequest, *, rounds: int = 3
) -> Completion | AgentError:
    """Up to ``rounds`` programs: the first that prints an answer is the opinion."""
    started = time.perf_counter()
    messages = list(request.messages)
    usage = Usage()
    last: ProgramResult | None = None
    model = request.model
    for _ in range(rounds):
        reply = await agents.opinion(msgspec.structs.replace(request, messages=messages))
        if isinstance(reply, AgentError):
            return reply
        usage = usage + reply.usage
        model = reply.model
        code = program_in(reply.text)
        messages = [*messages, ChatMessage("assistant", reply.text)]
        if not code:
            messages.append(ChatMessage("user", prompts.NO_PROGRAM))
            continue
        last = await tools.run(RunProgram(code=code, session_id=request.session_id))
        if last.outcome == "unavailable":
            return AgentError(code="tool_unavailable", detail=last.detail)
        answer = answer_printed(last.stdout) if last.outcome == "ok" else ""
        if answer:
            return Completion(
                member=request.member,
                model=model,
                text=prompts.computed_opinion(code, last.stdout, answer),
                usage=usage,
                latency_ms=(time.perf_counter() - started) * 1000,
                runtime=reply.runtime,
            )
        why = "it printed nothing" if last.outcome == "ok" else last.detail
        messages.append(prompts.program_failed(why, last.stderr))
    detail = f"no program printed an answer in {rounds} rounds"
    if last is not None:
        detail += f" (the last: {last.outcome}{': ' + last.detail if last.detail else ''})"
    return AgentError(code="program_failed", detail=detail)
