"""What watching costs: the same questions answered while the dashboard's Chat page
follows the session in a browser on the same machine, and while nothing watches.

On a small machine the dashboard and the browser share the cores with the models;
a page that reruns every second takes its share from the members' tokens. The
council at ``--nats`` (start one with `council up --no-dashboard --no-api`) is
asked the first N development questions (`evals/dev.jsonl`) twice, once with the
Chat page open on the session (a `council dashboard` process and headless
Chromium, both started here) and once with the page on `about:blank`,
alternating which goes first. Measured per session, from its final answer: the
opinions stage's seconds and the members' tokens a second in it. Printed:
medians, and watched over unwatched, from the same run. Needs Chromium and the
test extra's Playwright. The questions are deleted afterwards.

    python -m bench.watched [--nats URL] [--questions N] [--save]
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

from bench.common import Table, machine, medians, parser, quiet_logs, report
from council.bus.client.ask import follow, forget, submit
from council.bus.events import FinalAnswer
from council.bus.messages import Question
from council.bus.transport.connection import Credentials, connect
from council.bus.transport.server import free_port

DEV = Path(__file__).parent.parent / "evals" / "dev.jsonl"
BROWSER_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run"]


def figures(final: FinalAnswer) -> dict[str, float]:
    seconds = final.latency_ms["opinions"] / 1000
    tokens = final.usage["opinions"].completion_tokens
    return {"opinions_s": seconds, "tokens_per_s": tokens / seconds if seconds else 0.0}


async def measure(
    url: str, credentials: Credentials, n: int, chromium: str, port: int
) -> dict[str, Any]:
    """``port``: the dashboard's."""
    from playwright.async_api import async_playwright

    questions = [json.loads(line)["question"] for line in DEV.read_text().splitlines()[:n]]
    nc = await connect(url, name="bench-watched", credentials=credentials)
    runs: dict[str, list[dict[str, float]]] = {"watched": [], "unwatched": []}
    asked: list[str] = []
    try:
        async with async_playwright() as playwright:
            browser = await playwright.chromium.launch(executable_path=chromium, args=BROWSER_FLAGS)
            page = await browser.new_page(viewport={"width": 1280, "height": 1000})
            for i, question in enumerate(questions):
                order = ["watched", "unwatched"] if i % 2 == 0 else ["unwatched", "watched"]
                for how in order:
                    await page.goto("about:blank")
                    accepted = await submit(nc, Question(question=question))
                    asked.append(accepted.conversation)
                    if how == "watched":  # the Chat page, on this session's conversation
                        await page.goto(f"http://127.0.0.1:{port}", timeout=60_000)
                        title = question.strip().splitlines()[0][:60]
                        await page.get_by_role("button", name=title).first.click(timeout=60_000)
                    events = [e async for e in follow(nc, accepted.session_id, timeout_s=900)]
                    final = events[-1]
                    assert isinstance(final, FinalAnswer), final
                    runs[how].append(figures(final))
                    print(f"{i + 1}/{n} {how}: {runs[how][-1]['opinions_s']:.1f} s", flush=True)
            await browser.close()
    finally:
        for conversation in asked:
            await forget(nc, conversation)
        await nc.close()

    watched, unwatched = medians(runs["watched"]), medians(runs["unwatched"])
    return {
        "questions": n,
        "watched": watched,
        "unwatched": unwatched,
        "time_ratio": round(watched["opinions_s"] / unwatched["opinions_s"], 2),
        "speed_ratio": round(watched["tokens_per_s"] / unwatched["tokens_per_s"], 2),
        **machine(),
    }


def tables(r: dict[str, Any]) -> list[Table]:
    rows: list[list[Any]] = [
        [how, r[how]["opinions_s"], r[how]["tokens_per_s"]] for how in ("unwatched", "watched")
    ]
    rows.append(["watched / unwatched", r["time_ratio"], r["speed_ratio"]])
    return [
        Table(
            f"The council's opinions stage with and without the Chat page following it, "
            f"medians of {r['questions']} development questions",
            ["asked", "opinions, s", "members' tokens/s"],
            rows,
        )
    ]


def main() -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--nats", default=os.environ.get("COUNCIL_NATS_URL", "nats://127.0.0.1:4222"))
    p.add_argument("--questions", type=int, default=4)
    args = p.parse_args()
    quiet_logs()
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        sys.exit("bench.watched needs Chromium (apt-get install chromium)")
    credentials = Credentials(
        os.environ.get("COUNCIL_NATS_USER", ""), os.environ.get("COUNCIL_NATS_PASSWORD", "")
    )
    n = 2 if args.quick else args.questions
    port = free_port()
    dashboard = subprocess.Popen(
        [sys.executable, "-m", "council.cli", "dashboard", "--dashboard-port", str(port)],
        env={**os.environ, "COUNCIL_NATS_URL": args.nats},
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        for _ in range(240):  # the Streamlit server starting
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/_stcore/health", timeout=2)
                break
            except OSError:
                time.sleep(0.5)
        result = asyncio.run(measure(args.nats, credentials, n, chromium, port))
    finally:
        dashboard.terminate()
        dashboard.wait(30)
    report(result, tables(result), args)


if __name__ == "__main__":
    main()
