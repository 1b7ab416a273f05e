"""A real model (SmolLM2-135M, embedded runtime) through a real council.

The in-process tests share the session's loaded model; the process tests run
the `council` commands themselves, as a user does.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import MEMBERS, TEST_MODEL, ask_json, council_env
from nats.aio.client import Client

from council.agents.runtimes.embedded import EmbeddedRuntime
from council.agents.runtimes.router import RoutedRuntime
from council.assembly.wiring import local_council
from council.bus import subjects
from council.bus.client.ask import follow, submit
from council.bus.codec import decode_event
from council.bus.events import (
    FinalAnswer,
    Opinion,
    Ranking,
    Review,
    ReviewFailed,
    SessionEvent,
    StageStarted,
)
from council.bus.messages import Question
from council.bus.transport.connection import connect
from council.bus.transport.probe import answers
from council.bus.transport.server import EmbeddedNats, free_port
from council.chairman import extract
from council.chairman.admission import Defaults
from council.chairman.config import CouncilConfig

pytestmark = pytest.mark.model

SMALL = CouncilConfig(
    opinion_max_tokens=96, review_max_tokens=64, synthesis_max_tokens=128, conclude=False
)


async def run_council(
    url: str,
    runtime: EmbeddedRuntime,
    question: Question,
    config: CouncilConfig = SMALL,
    strategy: str = "synthesize",
) -> tuple[list[SessionEvent], list[SessionEvent]]:
    """Agents and chairman as tasks on their own real connections; returns (live, stored)."""
    agents_nc = await connect(url, name="e2e-agents")
    chairman_nc = await connect(url, name="e2e-chairman")
    client = await connect(url, name="e2e-client")
    routed = RoutedRuntime.serving(runtime, [TEST_MODEL])
    try:
        async with local_council(
            agents_nc, chairman_nc, routed,
            Defaults(tuple(MEMBERS), TEST_MODEL, strategy=strategy), config,
        ):  # fmt: skip
            accepted = await submit(client, question)
            seen = [e async for e in follow(client, accepted.session_id, timeout_s=300)]
            stored = await stored_events(client, accepted.session_id)
    finally:
        for nc in (agents_nc, chairman_nc, client):
            await nc.close()
    return seen, stored


async def stored_events(nc: Client, session_id: str) -> list[SessionEvent]:
    """Every event of the session as the COUNCIL stream holds it, in stream order."""
    sub = await nc.jetstream().subscribe(subjects.session_events(session_id), ordered_consumer=True)
    events = []
    try:
        while True:
            try:
                msg = await sub.next_msg(timeout=1.0)
            except TimeoutError:
                return events
            events.append(decode_event(msg.data, msg.subject))
    finally:
        await sub.unsubscribe()


async def test_three_member_pairwise_council_on_a_real_model(
    nats_server: EmbeddedNats, embedded: EmbeddedRuntime
) -> None:
    """3 opinions, 6 reviews, a ranking and a non-empty answer, all stored in seq order."""
    seen, stored = await run_council(
        nats_server.url, embedded, Question(question="What is the capital of France?", seed=1)
    )
    final = seen[-1]
    assert isinstance(final, FinalAnswer), final
    opinions = [e for e in seen if isinstance(e, Opinion)]
    reviews = [e for e in seen if isinstance(e, Review)]
    failed_reviews = [e for e in seen if isinstance(e, ReviewFailed)]
    assert len(opinions) == 3
    assert len(reviews) + len(failed_reviews) == 6
    assert len(reviews) >= 4, failed_reviews
    assert all(o.text and o.usage.completion_tokens > 0 for o in opinions)
    assert all(o.usage.prompt_tokens > 0 for o in opinions)
    assert all(1 <= r.score <= 10 for r in reviews)
    [ranking] = [e for e in seen if isinstance(e, Ranking)]
    assert sorted(e.rank for e in ranking.entries) == [1, 2, 3]
    assert final.answer.strip()
    assert final.usage["total"].completion_tokens > 0
    assert final.usage["synthesis"].completion_tokens > 0
    assert final.latency_ms["total"] > 0
    assert stored == seen
    assert [e.seq for e in stored] == list(range(1, len(stored) + 1))


async def test_rank_mode_council_on_a_real_model(
    nats_server: EmbeddedNats, embedded: EmbeddedRuntime
) -> None:
    """rank mode: one call per reviewer; the session still ends with a ranking and answer."""
    seen, _ = await run_council(
        nats_server.url, embedded, Question(question="Name a primary colour.", mode="rank", seed=2)
    )
    assert isinstance(seen[-1], FinalAnswer)
    assert len([e for e in seen if isinstance(e, Opinion)]) == 3
    ranking = [e for e in seen if isinstance(e, Ranking)]
    assert len(ranking) == 1
    assert len(ranking[0].entries) == 3


async def test_majority_or_chairman_answers_from_stage_one_on_a_real_model(
    nats_server: EmbeddedNats, embedded: EmbeddedRuntime
) -> None:
    """Every member runs the chairman's model here, so whether or not a majority
    agrees, an opinion stands: no review, no synthesis, all of it stored."""
    seen, stored = await run_council(
        nats_server.url, embedded, Question(question="What is 6 times 7?", seed=3),
        strategy="majority-or-chairman",
    )  # fmt: skip
    final = seen[-1]
    assert isinstance(final, FinalAnswer), final
    opinions = {e.member: e.text for e in seen if isinstance(e, Opinion)}
    assert len(opinions) == 3
    assert not [e for e in seen if isinstance(e, Review | ReviewFailed)]
    assert final.reviews_skipped
    assert final.answer == opinions[final.selected]
    assert final.usage["synthesis"].completion_tokens == 0
    assert final.usage["reviews"].completion_tokens == 0
    [ranking] = [e for e in seen if isinstance(e, Ranking)]
    assert ranking.entries[0].member == final.selected
    assert stored == seen


async def test_deliberate_reviews_exactly_when_a_real_models_samples_disagree(
    nats_server: EmbeddedNats, embedded: EmbeddedRuntime
) -> None:
    """Two samples of the model and a persona of it: each opinion's conclusion is read
    from its own text, reviews run exactly when the conclusions differ, the stage
    says why, and the final answer states its own conclusion."""
    members = [TEST_MODEL, f"{TEST_MODEL}#2", f"{TEST_MODEL}@careful"]
    config = dataclasses.replace(SMALL, opinion_max_tokens=160)
    question = Question(question="What is 6 times 7?", members=members, seed=3)
    seen, stored = await run_council(nats_server.url, embedded, question, config, "deliberate")
    final = seen[-1]
    assert isinstance(final, FinalAnswer), final
    opinions = {e.member: e for e in seen if isinstance(e, Opinion)}
    assert set(opinions) == set(members)
    for opinion in opinions.values():
        assert opinion.conclusion == extract.conclusion(opinion.text)
    agreed = bool(extract.unanimous({m: o.text for m, o in opinions.items()}))
    [reviews] = [e for e in seen if isinstance(e, StageStarted) and e.stage == "reviews"]
    assert reviews.reason
    assert (reviews.expected == 0) == agreed == final.reviews_skipped
    assert len([e for e in seen if isinstance(e, Review | ReviewFailed)]) == (0 if agreed else 6)
    assert final.conclusion == extract.conclusion(final.answer)
    assert stored == seen


def check_final_answer_json(stdout: str) -> dict:
    final = json.loads(stdout)
    assert final["type"] == "final_answer"
    assert final["session_id"]
    assert final["answer"].strip()
    assert len(final["ranking"]) == 3
    assert [e["rank"] for e in final["ranking"]] == [1, 2, 3]
    assert len(final["opinions"]) == 3
    assert all(o["usage"]["completion_tokens"] > 0 for o in final["opinions"])
    assert len(final["reviews"]) + len(final["failed"]) >= 4
    assert all({"model", "usage", "latency_ms"} <= set(r) for r in final["reviews"])
    assert set(final["usage"]) == {"opinions", "reviews", "synthesis", "total"}
    assert set(final["latency_ms"]) == {"opinions", "reviews", "synthesis", "total"}
    return final


def test_council_ask_json_against_agent_and_chairman_processes(
    council_processes: dict[str, str],
) -> None:
    """`council ask --json` prints one complete FinalAnswer from real processes."""
    result = ask_json(council_processes, "What is 3 + 4?")
    assert result.returncode == 0, result.stderr[-3000:]
    check_final_answer_json(result.stdout)
    assert "opinions" in result.stderr  # progress went to stderr, not into the JSON


def test_council_up_ask_runs_the_whole_council_from_one_command(
    models_dir: Path, test_model_path: Path, tmp_path: Path
) -> None:
    """`council up --ask` starts nats-server, agents and chairman, answers, and stops all."""
    url = f"nats://127.0.0.1:{free_port()}"
    env = council_env(url, models_dir, tmp_path)
    shutil.copy(Path(__file__).parent.parent / "nats.conf", tmp_path)  # the shipped config
    result = subprocess.run(
        [sys.executable, "-m", "council.cli", "up", "--json", "--ask", "Name a planet."],
        env=env, capture_output=True, text=True, timeout=300, cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    check_final_answer_json(result.stdout)
    assert "started nats-server" in result.stderr
    assert "config nats.conf" in result.stderr
    assert (tmp_path / ".council-jetstream").is_dir()
    assert not answers(url), "council up left its nats-server running"
