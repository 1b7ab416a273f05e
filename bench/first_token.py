"""Time to the first content token of a streamed completion: the council against one
of its members alone, through `council api`, on a running council.

The API runs in this process against the council at ``--nats`` (start one with
`council up --no-dashboard --no-api`); the official `openai` client asks each of
the first N development questions (`evals/dev.jsonl`) twice with
``stream=True``, once of the council (model ``council``) and once of the member
alone (``--alone``), alternating which goes first. Measured per request: the
first chunk of any kind (the role), the first progress chunk, the first content
token and the last chunk. Printed: medians, and the council's over the member
alone's, measured in the same run.

    python -m bench.first_token [--nats URL] [--questions N] [--alone MODEL] [--save]
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from pathlib import Path
from typing import Any

import openai
import uvicorn

from bench.common import Table, machine, medians, parser, quiet_logs, report
from council.api.server import ApiConfig, CouncilApi
from council.bus.transport.connection import Credentials
from council.bus.transport.server import free_port
from council.chairman.admission import Defaults

DEV = Path(__file__).parent.parent / "evals" / "dev.jsonl"


async def timed(client: openai.AsyncOpenAI, model: str, question: str) -> dict[str, float]:
    started = time.perf_counter()
    first = progress = content = 0.0
    stream = await client.chat.completions.create(
        model=model, messages=[{"role": "user", "content": question}], stream=True
    )
    async for chunk in stream:
        now = time.perf_counter() - started
        first = first or now
        if (chunk.model_extra or {}).get("council_progress"):
            progress = progress or now
        if chunk.choices and chunk.choices[0].delta.content:
            content = content or now
    return {"first_chunk": first, "progress": progress, "content": content,
            "total": time.perf_counter() - started}  # fmt: skip


async def measure(url: str, credentials: Credentials, n: int, alone: str) -> dict[str, Any]:
    questions = [json.loads(line)["question"] for line in DEV.read_text().splitlines()[:n]]
    port = free_port()
    app = CouncilApi(ApiConfig(url, credentials, timeout_s=900)).app()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    serving = asyncio.create_task(server.serve())
    for _ in range(500):  # uvicorn says it has started with a flag only
        if server.started:
            break
        await asyncio.sleep(0.02)
    client = openai.AsyncOpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="-", timeout=900)
    runs: dict[str, list[dict[str, float]]] = {"council": [], alone: []}
    try:
        for i, question in enumerate(questions):
            order = ["council", alone] if i % 2 == 0 else [alone, "council"]
            for model in order:
                runs[model].append(await timed(client, model, question))
                print(f"{i + 1}/{n} {model}: {runs[model][-1]['content']:.1f} s", flush=True)
    finally:
        server.should_exit = True
        await serving

    council, member = medians(runs["council"]), medians(runs[alone])
    return {
        "questions": n,
        "alone": alone,
        "council": council,
        "member": member,
        "content_ratio": round(council["content"] / member["content"], 2),
        "total_ratio": round(council["total"] / member["total"], 2),
        **machine(),
    }


def tables(r: dict[str, Any]) -> list[Table]:
    rows = [
        [name, r[key]["first_chunk"], r[key]["progress"] or "none", r[key]["content"],
         r[key]["total"]]
        for name, key in (("council (the default)", "council"), (f"{r['alone']} alone", "member"))
    ]  # fmt: skip
    rows.append(["council / alone", "", "", r["content_ratio"], r["total_ratio"]])
    return [
        Table(
            f"Streamed completions through `council api`, medians of {r['questions']} "
            "development questions, s",
            ["asked", "first chunk", "first progress", "first content token", "last chunk"],
            rows,
        )
    ]


def main() -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--nats", default=os.environ.get("COUNCIL_NATS_URL", "nats://127.0.0.1:4222"))
    p.add_argument("--questions", type=int, default=10)
    p.add_argument("--alone", default=Defaults().chairman, help="the member asked alone")
    args = p.parse_args()
    quiet_logs()
    credentials = Credentials(
        os.environ.get("COUNCIL_NATS_USER", ""), os.environ.get("COUNCIL_NATS_PASSWORD", "")
    )
    n = 2 if args.quick else args.questions
    result = asyncio.run(measure(args.nats, credentials, n, args.alone))
    report(result, tables(result), args)


if __name__ == "__main__":
    main()
