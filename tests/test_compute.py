"""Members that compute, agreement across methods and reviews that check by code: the
conductor on the scripted runtime, its programs run in the real sandbox."""

from __future__ import annotations

import msgspec
import pytest
from conftest import TEST_MODEL
from helpers import Collected
from nats.aio.client import Client

from council.agents.runtimes.embedded import EmbeddedRuntime
from council.agents.runtimes.router import RoutedRuntime
from council.agents.runtimes.scripted import ScriptedRuntime
from council.assembly.wiring import LocalAgents, LocalTools, local_council
from council.bus.client.ask import follow, submit
from council.bus.events import FinalAnswer, MemberFailed, Opinion, Review, SessionFailed
from council.bus.members import method_of, model_of, sample_of, split_member
from council.bus.messages import Question
from council.bus.transport.connection import connect
from council.bus.transport.server import EmbeddedNats
from council.chairman import prompts
from council.chairman.admission import Defaults
from council.chairman.compute import answer_printed, program_in
from council.chairman.conductor import Conductor
from council.chairman.config import CouncilConfig
from council.chairman.core import Plan
from council.chairman.strategies import named
from council.tools.sandbox import Limits, Sandbox, missing
from council.tools.service import ToolService

needs_sandbox = pytest.mark.skipif(bool(missing()), reason=missing() or "")


def fenced(code: str) -> str:
    return f"Here is the program:\n```python\n{code}\n```"


def plan(members: list[str], mode: str = "pairwise", question: str = "What is 6 times 7?") -> Plan:
    return Plan(
        session_id="c1", question=question, members=members, chairman="w",
        mode=mode, seed=3,  # type: ignore[arg-type]
    )  # fmt: skip


async def run(
    runtime: ScriptedRuntime, p: Plan, strategy: str = "synthesize", **config: object
) -> tuple[FinalAnswer | SessionFailed, Collected, LocalTools]:
    sink = Collected()
    tools = LocalTools(Sandbox(Limits(wall_s=5, cpu_s=3)))
    config.setdefault("settle_early", False)
    config.setdefault("conclude", False)
    conductor = Conductor(
        p if p.strategy else msgspec.structs.replace(p, strategy=strategy),
        CouncilConfig(**config),  # type: ignore[arg-type]
        LocalAgents(runtime), sink, tools=tools,
    )  # fmt: skip
    return await conductor.run(), sink, tools


def test_a_member_name_says_its_method() -> None:
    """``+code`` is a method between persona and sample, and the model stays the model."""
    spec = "qwen2.5:1.5b@careful+code#2"
    assert (model_of(spec), split_member(spec), method_of(spec), sample_of(spec)) == (
        "qwen2.5:1.5b",
        ("qwen2.5:1.5b", "careful"),
        "code",
        2,
    )
    assert method_of("qwen2.5:1.5b#2") == "words"
    assert model_of("model+unknown") == "model+unknown"


def test_the_program_is_read_from_the_reply() -> None:
    """The longest fenced block; a bare program that prints; nothing from prose."""
    assert program_in(fenced("print(1)") + "\n```py\nx = 2\nprint(x * 21)\n```") == (
        "x = 2\nprint(x * 21)"
    )
    assert program_in("print(6 * 7)") == "print(6 * 7)"
    assert program_in("The answer is 42.") == ""
    assert answer_printed("working\n\n42\n") == "42"


@needs_sandbox
async def test_a_computing_member_answers_with_what_its_program_printed() -> None:
    """The program runs in the sandbox; its code, output and answer are the opinion."""
    runtime = ScriptedRuntime(["w", "c"])
    runtime.enqueue("w", "6 times 7 is 42.\nFinal answer: 42")
    runtime.enqueue("c", fenced("print(6 * 7)"))
    outcome, sink, tools = await run(runtime, plan(["w", "c+code"]), "majority-then-synthesize")
    assert isinstance(outcome, FinalAnswer)
    opinion = next(o for o in sink.of(Opinion) if o.member == "c+code")
    assert "print(6 * 7)" in opinion.text
    assert "Output:" in opinion.text
    assert opinion.conclusion == "42"
    assert tools.programs == ["print(6 * 7)"]
    assert outcome.reviews_skipped
    program_call = next(c for c in runtime.history if c.model == "c")
    assert program_call.messages[0].content == prompts.PROGRAM_SYSTEM


@needs_sandbox
async def test_a_failed_program_goes_back_with_its_error() -> None:
    """The error's traceback is the next round's prompt; the mended program answers."""
    runtime = ScriptedRuntime(["w", "c"])
    runtime.enqueue("w", "Final answer: 42")
    runtime.enqueue("c", fenced("print(6 * seven)"), "no program here", fenced("print(42)"))
    outcome, sink, tools = await run(runtime, plan(["w", "c+code"]), "majority-then-synthesize")
    assert isinstance(outcome, FinalAnswer)
    assert tools.programs == ["print(6 * seven)", "print(42)"]
    calls = [c for c in runtime.history if c.model == "c"]
    assert "NameError" in calls[1].messages[-1].content
    assert calls[2].messages[-1].content == prompts.NO_PROGRAM
    opinion = next(o for o in sink.of(Opinion) if o.member == "c+code")
    assert opinion.conclusion == "42"
    assert opinion.usage.completion_tokens == sum(
        len(str(t).split(" "))
        for t in [fenced("print(6 * seven)"), "no program here", fenced("print(42)")]
    )


@needs_sandbox
async def test_a_member_whose_programs_all_fail_is_named_and_the_rest_go_on() -> None:
    """Rounds spent: the member fails with ``program_failed``; the others answer."""
    runtime = ScriptedRuntime(["w", "c"])
    runtime.enqueue("w", "Final answer: 42", "Final answer: 42")
    runtime.enqueue("c", *[fenced("raise SystemExit(3)")] * 2)
    outcome, sink, _ = await run(
        runtime, plan(["w", "w#2", "c+code"]), "majority-then-synthesize", program_rounds=2
    )
    assert isinstance(outcome, FinalAnswer)
    failed = {f.member: f for f in sink.of(MemberFailed)}
    assert failed["c+code"].reason == "program_failed"
    assert "2 rounds" in failed["c+code"].detail


async def test_without_tools_a_computing_member_fails_by_name() -> None:
    """No sandbox anywhere: ``tool_unavailable``, and the words members carry on."""
    runtime = ScriptedRuntime(["w", "c"])
    runtime.enqueue("w", "Final answer: 42", "Final answer: 42")
    runtime.enqueue("c", fenced("print(42)"))
    sink = Collected()
    conductor = Conductor(
        msgspec.structs.replace(plan(["w", "w#2", "c+code"]), strategy="majority-then-synthesize"),
        CouncilConfig(settle_early=False, conclude=False),
        LocalAgents(runtime),
        sink,
    )
    outcome = await conductor.run()
    assert isinstance(outcome, FinalAnswer)
    failed = {f.member: f for f in sink.of(MemberFailed)}
    assert failed["c+code"].reason == "tool_unavailable"


@needs_sandbox
async def test_across_methods_stands_on_the_first_wave_when_methods_agree() -> None:
    """Words and code agree at once: the further samples are never asked."""
    runtime = ScriptedRuntime(["w", "c"])
    runtime.enqueue("w", "Final answer: 42")
    runtime.enqueue("c", fenced("print(42)"))
    members = ["w", "c+code", "w#2", "c+code#2"]
    outcome, sink, tools = await run(runtime, plan(members), "across-methods")
    assert isinstance(outcome, FinalAnswer)
    assert outcome.reviews_skipped
    assert outcome.conclusion == "42"
    not_needed = {f.member for f in sink.of(MemberFailed) if f.reason == "not_needed"}
    assert not_needed == {"w#2", "c+code#2"}
    assert len(runtime.history) == 2


@needs_sandbox
async def test_across_methods_draws_more_samples_when_methods_disagree() -> None:
    """Words say 40, code says 42: the second wave is asked, and 42 (given in both
    methods, by more members) stands."""
    runtime = ScriptedRuntime(["w", "c"])
    runtime.enqueue("w", "Final answer: 40", "Final answer: 42")
    runtime.enqueue("c", fenced("print(42)"), fenced("print(6 * 7)"))
    members = ["w", "c+code", "w#2", "c+code#2"]
    outcome, sink, _ = await run(runtime, plan(members), "across-methods")
    assert isinstance(outcome, FinalAnswer)
    assert len(sink.of(Opinion)) == 4
    assert outcome.reviews_skipped
    assert outcome.conclusion == "42"


@needs_sandbox
async def test_across_methods_asks_the_second_wave_when_a_first_member_fails() -> None:
    """The words member of the first wave fails: the program's answer alone is no
    agreement across methods, so the further samples are asked, and 42 stands on them."""
    runtime = ScriptedRuntime(["w", "c"])
    runtime.enqueue("w", RuntimeError("model crashed"), "Final answer: 42")
    runtime.enqueue("c", fenced("print(42)"), fenced("print(6 * 7)"))
    members = ["w", "c+code", "w#2", "c+code#2"]
    outcome, sink, _ = await run(runtime, plan(members), "across-methods")
    assert isinstance(outcome, FinalAnswer)
    assert {f.member: f.reason for f in sink.of(MemberFailed)} == {"w": "runtime_error"}
    assert {o.member for o in sink.of(Opinion)} == {"c+code", "w#2", "c+code#2"}
    assert outcome.conclusion == "42"


@needs_sandbox
async def test_across_methods_settles_a_disagreement_on_the_most_members() -> None:
    """The first wave disagrees (36 in words, 26 in code), and so do the further
    samples: 36 and 26 have two members each, and 36, given by more members in words,
    stands without reviews."""
    runtime = ScriptedRuntime(["w", "c"])
    runtime.enqueue("w", "Final answer: 36", "Final answer: 36", "Final answer: 30")
    runtime.enqueue("c", fenced("print(26)"), fenced("print(20 + 6)"))
    members = ["w", "c+code", "w#2", "c+code#2", "w#3"]
    outcome, sink, _ = await run(runtime, plan(members), "across-methods")
    assert isinstance(outcome, FinalAnswer)
    assert len(sink.of(Opinion)) == 5
    assert outcome.reviews_skipped
    assert not sink.of(Review)
    assert outcome.conclusion == "36"


def test_across_methods_stands_on_methods_agreeing_then_on_the_most_members() -> None:
    """One method alone falls back to a majority. The first wave stands only on an
    answer both methods gave; with the further samples in, the answer most members
    gave stands, a tie going to the one more members gave in words, then to the
    earlier member's."""
    strategy = named("across-methods")

    def stood(texts: dict[str, str]) -> list[str] | None:
        stands = strategy.stands(texts, "a")
        return stands.members if stands else None

    assert stood({"a": "Final answer: 3", "a#2": "Final answer: 3", "a#3": "4"}) == ["a", "a#2"]
    assert stood({"a": "Final answer: 3", "a+code": "Final answer: 4"}) is None
    assert stood({"a": "Final answer: 3", "a+code": "Final answer: 3.0"}) == ["a", "a+code"]
    assert stood({"a": "3", "a+code": "4", "a#2": "3", "a+code#2": "4", "a#3": "5"}) == [
        "a",
        "a#2",
    ]
    assert stood({"a": "3", "a+code": "4", "a#2": "4", "a+code#2": "3"}) == ["a", "a+code#2"]
    assert stood({"a": "3", "a+code": "4", "a#2": "5", "a+code#2": "4"}) == ["a+code", "a+code#2"]
    assert stood({"a": "", "a+code": "4", "a#2": "5", "a+code#2": ""}) == ["a#2"]
    assert stood({"a": "", "a+code": "", "a#2": ""}) is None  # none concluded: reviews


@needs_sandbox
async def test_computed_reviews_score_by_comparing_answers_in_code() -> None:
    """A computing reviewer checks with its opinion's program; each reviewer in words
    samples a program of its own, so no two reviewers share one. Every review is 10
    where the final answers agree and 1 where they differ."""
    runtime = ScriptedRuntime(["w"])
    runtime.enqueue(
        "w", "Final answer: 40", fenced("print(42)"), "Final answer: 42",
        fenced("print(6 * 7)"), fenced("print(6 * 7)"),
    )  # fmt: skip
    outcome, sink, tools = await run(runtime, plan(["w", "w+code", "w#2"], mode="compute"))
    assert isinstance(outcome, FinalAnswer)
    reviews = {(r.reviewer, r.reviewed): r.score for r in sink.of(Review)}
    assert reviews[("w", "w#2")] == 10
    assert reviews[("w", "w+code")] == 10
    assert reviews[("w+code", "w")] == 1
    assert reviews[("w#2", "w")] == 1
    assert tools.programs[1:] == ["print(6 * 7)", "print(6 * 7)"]  # one per word reviewer
    checks = list(runtime.history)[3:5]  # after the three opinions, before the synthesis
    assert [c.options.temperature for c in checks] == [0.7, 0.7]
    assert sorted(c.options.seed for c in checks) == [3, 5]  # each reviewer's own seed
    assert {r.computed for r in sink.of(Review)} == {"42"}
    synthesis = runtime.history[-1].messages[-1].content
    assert "own programs, run to check the answers, printed:\n- 42 (by 3)" in synthesis
    assert outcome.ranking[-1].member == "w"


async def test_a_member_that_states_no_answer_is_asked_for_it() -> None:
    """Two members that say Jupiter in other words agree once asked what they concluded;
    a short answer is its own conclusion and is not asked."""
    runtime = ScriptedRuntime(["a", "b", "c"])
    runtime.enqueue(
        "a", "The largest planet in our solar system is Jupiter.", "Jupiter."
    )  # a concluding turn that forgets the line but is short is its own conclusion
    runtime.enqueue("b", "Jupiter")
    runtime.enqueue(
        "c", "Neptune is very large, I think it is the largest.", "Final answer: Neptune"
    )
    outcome, sink, _ = await run(
        runtime,
        plan(["a", "b", "c"], question="Which is the largest planet?"),
        "majority-then-synthesize",
        conclude=True,
    )
    assert isinstance(outcome, FinalAnswer)
    conclusions = {o.member: o.conclusion for o in sink.of(Opinion)}
    assert conclusions == {"a": "Jupiter", "b": "Jupiter", "c": "Neptune"}
    assert outcome.reviews_skipped
    assert "jupiter" in outcome.answer.lower()
    asked = [c.model for c in runtime.history if c.messages[-1].content == prompts.CONCLUDE]
    assert sorted(asked) == ["a", "c"]


@needs_sandbox
async def test_a_computing_member_on_the_real_model_runs_what_it_wrote(
    embedded: EmbeddedRuntime,
) -> None:
    """The test model asked as ``+code``: every program it wrote ran in the sandbox, and
    the member either answers with what one printed or fails by name."""
    tools = LocalTools(Sandbox(Limits(wall_s=5, cpu_s=3)))
    agents = LocalAgents(embedded, keep_requests=True)
    sink = Collected()
    member = f"{TEST_MODEL}+code"
    conductor = Conductor(
        Plan(
            session_id="t.real-code", question="What is 17 times 3?", members=[member],
            chairman=TEST_MODEL, mode="pairwise", seed=5, alone=True, max_tokens=160,
        ),
        CouncilConfig(program_rounds=2),
        agents,
        sink,
        tools=tools,
    )  # fmt: skip
    outcome = await conductor.run()
    asked = [r for r in agents.requests if r.member == member]
    assert 1 <= len(asked) <= 2
    assert asked[0].messages[0].content == prompts.PROGRAM_SYSTEM
    assert len(tools.programs) <= len(asked)
    if isinstance(outcome, FinalAnswer):
        opinion = sink.of(Opinion)[0]
        assert tools.programs[-1].strip() in opinion.text
        assert "Output:" in opinion.text
        assert opinion.conclusion == outcome.conclusion
        assert opinion.conclusion
    else:
        failed = sink.of(MemberFailed)[0]
        assert failed.reason == "program_failed"
        assert "2 rounds" in failed.detail


@needs_sandbox
async def test_over_the_bus_the_chairman_runs_programs_in_the_tools_role(
    nats_server: EmbeddedNats, nc: Client
) -> None:
    """Agents, a chairman and `council tools` on a real server: a computing member's
    program runs in the tools role; with the tools role stopped, the member fails as
    ``tool_unavailable`` and the session still answers."""
    runtime = ScriptedRuntime(["w", "c"])
    agents_nc = await connect(nats_server.url, name="compute-agents")
    chairman_nc = await connect(nats_server.url, name="compute-chairman")
    tools = ToolService(nc, Sandbox(Limits(wall_s=5)), node="compute-tools", heartbeat_s=60)
    await tools.start()
    question = Question(
        question="What is 6 times 7?", members=["w", "w#2", "c+code"],
        strategy="majority-then-synthesize",
    )  # fmt: skip
    try:
        async with local_council(
            agents_nc, chairman_nc, RoutedRuntime.serving(runtime, ["w", "c"]),
            Defaults(("w", "w#2"), "w"), CouncilConfig(settle_early=False), heartbeat_s=0.2,
        ):  # fmt: skip
            runtime.enqueue("w", "Final answer: 42", "Final answer: 42")
            runtime.enqueue("c", fenced("print(6 * 7)"))
            events = [
                e async for e in follow(nc, (await submit(nc, question)).session_id, timeout_s=60)
            ]
            computed = next(e for e in events if isinstance(e, Opinion) and e.member == "c+code")
            assert computed.conclusion == "42"
            assert tools.served == 1
            await tools.stop()
            runtime.enqueue("w", "Final answer: 42", "Final answer: 42")
            runtime.enqueue("c", fenced("print(6 * 7)"))
            events = [
                e async for e in follow(nc, (await submit(nc, question)).session_id, timeout_s=60)
            ]
    finally:
        await tools.stop()
        await chairman_nc.close()
        await agents_nc.close()
    failed = [e for e in events if isinstance(e, MemberFailed)]
    assert [(f.member, f.reason) for f in failed] == [("c+code", "tool_unavailable")]
    assert "council tools" in failed[0].detail
    assert isinstance(events[-1], FinalAnswer)


async def test_the_real_model_is_asked_for_its_conclusion_when_it_states_none(
    embedded: EmbeddedRuntime,
) -> None:
    """On the test model (which often ignores the final-answer format): whenever an
    opinion states no conclusion of its own, one short greedy turn asks for it, and
    what that turn concludes is the opinion's conclusion."""
    agents = LocalAgents(embedded, keep_requests=True)
    sink = Collected()
    members = [f"{TEST_MODEL}@concise", f"{TEST_MODEL}@careful#2"]
    conductor = Conductor(
        Plan(
            session_id="t.real-conclude", question="Which planet is the largest?",
            members=members, chairman=TEST_MODEL, mode="pairwise", seed=11, max_tokens=64,
            strategy="majority-then-synthesize",
        ),
        CouncilConfig(conclude=True, settle_early=False, synthesis_max_tokens=48,
                      review_max_tokens=48),
        agents,
        sink,
    )  # fmt: skip
    await conductor.run()
    for opinion in sink.of(Opinion):
        asked = [r for r in agents.requests if r.member == opinion.member]
        first = asked[0]
        turns = [r for r in asked if r.messages[-1].content == prompts.CONCLUDE]
        if turns:
            assert turns[0].options.temperature == 0.0
            assert turns[0].options.max_tokens == CouncilConfig().conclude_max_tokens
            assert turns[0].messages[: len(first.messages)] == first.messages
        else:  # it stated one, or said little enough to be its own
            assert opinion.conclusion
        if turns and opinion.conclusion:  # the turn's answer, added as the member's last line
            assert opinion.text.endswith(f"{prompts.FINAL_LINE}{opinion.conclusion}")


@needs_sandbox
async def test_computed_reviews_on_the_real_model(embedded: EmbeddedRuntime) -> None:
    """The test model as words and code members, every answer reviewed in compute mode:
    each reviewer's program runs in the sandbox, and its score says whether what it
    printed is the response's conclusion (5 when its program printed nothing usable)."""
    members = [TEST_MODEL, f"{TEST_MODEL}+code"]
    tools = LocalTools(Sandbox(Limits(wall_s=5, cpu_s=3)))
    sink = Collected()
    conductor = Conductor(
        Plan(
            session_id="t.real-reviews", question="What is 6 times 7?", members=members,
            chairman=TEST_MODEL, mode="compute", seed=2, max_tokens=96, strategy="select",
        ),
        CouncilConfig(program_rounds=2, synthesis_max_tokens=64, conclude=False),
        LocalAgents(embedded),
        sink,
        tools=tools,
    )  # fmt: skip
    outcome = await conductor.run()
    assert isinstance(outcome, FinalAnswer | SessionFailed)
    answered = {o.member for o in sink.of(Opinion)}
    reviews = sink.of(Review)
    assert bool(reviews) == (len(answered) > 1)
    for review in reviews:
        assert review.mode == "compute"
        assert review.score in (1, 5, 10)
        computed = review.justification.startswith("computed ")
        assert computed == (review.score != 5)
        assert (review.score == 10) == review.justification.endswith("as the response concludes")


@needs_sandbox
async def test_across_methods_on_the_real_model(embedded: EmbeddedRuntime) -> None:
    """The test model as words and code members under ``across-methods``: the first
    sample of each method is asked first, the further sample only when those two gave
    no shared answer, and an answer stands without reviews either way."""
    code = f"{TEST_MODEL}+code"
    members = [TEST_MODEL, code, f"{TEST_MODEL}#2"]
    agents = LocalAgents(embedded, keep_requests=True)
    sink = Collected()
    conductor = Conductor(
        Plan(
            session_id="t.real-methods", question="What is 6 times 7?", members=members,
            chairman=TEST_MODEL, mode="pairwise", seed=2, max_tokens=96, strategy="across-methods",
        ),
        CouncilConfig(program_rounds=2, synthesis_max_tokens=64, conclude=False),
        agents,
        sink,
        tools=LocalTools(Sandbox(Limits(wall_s=5, cpu_s=3))),
    )  # fmt: skip
    outcome = await conductor.run()
    assert isinstance(outcome, FinalAnswer | SessionFailed)
    asked = list(dict.fromkeys(r.member for r in agents.requests if r.member != "chairman"))
    assert set(asked[:2]) == {TEST_MODEL, code}
    settled = {o.member for o in sink.of(Opinion)} | {f.member for f in sink.of(MemberFailed)}
    assert settled == set(members)
    second = next(
        f for f in [*sink.of(Opinion), *sink.of(MemberFailed)] if f.member == f"{TEST_MODEL}#2"
    )
    stood = isinstance(second, MemberFailed) and second.reason == "not_needed"
    assert stood == (f"{TEST_MODEL}#2" not in asked)
    if isinstance(outcome, FinalAnswer) and any(o.text.strip() for o in sink.of(Opinion)):
        assert outcome.reviews_skipped  # the first wave stood, or the most members' answer
        assert not sink.of(Review)
