"""The floor under council's bus overhead: raw NATS on this machine, with our message types.

Measures what no council code can beat: a request/reply round trip to
another process (an ``OpinionRequest`` out, a ``Completion`` back), core
publishes of encoded ``Opinion`` events, and acked JetStream publishes of
them (one at a time, as the chairman records events, and pipelined with
``publish_async``). JetStream runs twice in the same run: on a server with
the ``jetstream`` block of the project's ``nats.conf`` (``sync_interval:
always``, an fsync before every ack) and on one with the NATS default (fsync
every 2 minutes), so the price of durability is measured, not guessed.

    python -m bench.bus_raw [--quick] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js.api import StorageType, StreamConfig

from bench.common import Table, machine, median, parser, percentile, quiet_logs, report
from council.bus.codec import encode
from council.bus.events import Opinion
from council.bus.messages import ChatMessage, Completion, OpinionRequest, Usage
from council.bus.transport.connection import connect
from council.bus.transport.server import EmbeddedNats

NATS_CONF = Path(__file__).resolve().parent.parent / "nats.conf"
ECHO = "bench.echo"
STREAM = "BENCH"
ANSWER = " ".join(["Canberra was chosen as a compromise between Sydney and Melbourne."] * 16)
"""About 1 kB: a typical opinion of a small model."""


def opinion(seq: int) -> bytes:
    return encode(
        Opinion(
            session_id="0123456789abcdef",
            seq=seq,
            member="qwen2.5-coder-0.5b@careful",
            model="qwen2.5-coder-0.5b",
            label="Response B",
            text=ANSWER,
            usage=Usage(180, 250),
            latency_ms=2400.0,
        )
    )


def opinion_request() -> bytes:
    return encode(
        OpinionRequest(
            session_id="0123456789abcdef",
            member="qwen2.5-coder-0.5b@careful",
            model="qwen2.5-coder-0.5b",
            messages=[ChatMessage("system", "You are a member."), ChatMessage("user", ANSWER)],
        )
    )


# --- the responder: another process -------------------------------------------------


async def respond(url: str) -> None:
    """Answer every request on ECHO with an encoded Completion, until stdin closes."""
    nc = await connect(url, name="bench-responder")
    reply = encode(
        Completion(member="m", model="m", text=ANSWER, usage=Usage(180, 250), latency_ms=1.0)
    )

    async def on_request(msg: Msg) -> None:
        await msg.respond(reply)

    await nc.subscribe(ECHO, cb=on_request)
    await nc.flush()
    print("ready", flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
    await nc.close()


def start_responder(url: str) -> subprocess.Popen[str]:
    """``respond`` in a child process; returns once it is subscribed."""
    process = subprocess.Popen(
        [sys.executable, "-m", "bench.bus_raw", "--respond", url],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    if process.stdout is None or process.stdout.readline().strip() != "ready":
        process.kill()
        raise SystemExit("the responder process did not start")
    return process


async def round_trips(nc: Client, count: int) -> dict[str, float]:
    payload = opinion_request()
    for _ in range(100):
        await nc.request(ECHO, payload, timeout=5)
    times = []
    for _ in range(count):
        started = time.perf_counter()
        await nc.request(ECHO, payload, timeout=5)
        times.append((time.perf_counter() - started) * 1000)
    return {"median_ms": round(median(times), 3), "p99_ms": round(percentile(times, 99), 3)}


# --- publishing -----------------------------------------------------------------------


async def core_rate(nc: Client, count: int) -> float:
    """Core publishes per second, until the server has read them all (flush)."""
    payload = opinion(1)
    started = time.perf_counter()
    for _ in range(count):
        await nc.publish("bench.core.opinion", payload)
    await nc.flush()
    return count / (time.perf_counter() - started)


async def js_rate(nc: Client, count: int, *, pipelined: bool, offset: int) -> float:
    """Acked JetStream publishes per second, each with a Nats-Msg-Id as council sends."""
    js = nc.jetstream()
    payloads = [opinion(i) for i in range(count)]
    started = time.perf_counter()
    for i, payload in enumerate(payloads):
        headers = {"Nats-Msg-Id": f"bench-{offset + i}"}
        if pipelined:
            await js.publish_async("bench.js.opinion", payload, headers=headers)
        else:
            await js.publish("bench.js.opinion", payload, headers=headers)
    if pipelined:
        await js.publish_async_completed()
    return count / (time.perf_counter() - started)


def durable_config(tmp: Path) -> Path:
    """The project's jetstream block with store_dir moved to ``tmp`` (users are left out)."""
    text = NATS_CONF.read_text()
    start = re.search(r"^jetstream\s*\{", text, re.MULTILINE)
    if not start:
        raise SystemExit(f"no jetstream block in {NATS_CONF}")
    depth, end = 0, start.start()
    for end in range(start.start(), len(text)):
        depth += {"{": 1, "}": -1}.get(text[end], 0)
        if text[end] == "}" and depth == 0:
            break
    block = text[start.start() : end + 1]
    block = re.sub(r"store_dir:.*", f'store_dir: "{tmp / "store"}"', block)
    config = tmp / "nats.conf"
    config.write_text(block + "\n")
    return config


async def run(quick: bool) -> dict[str, Any]:
    rounds = 1 if quick else 3
    rtt_count = 500 if quick else 5000
    core_count = 20_000 if quick else 200_000
    js_one, js_async = (300, 3000) if quick else (2000, 20_000)
    before = machine()
    with tempfile.TemporaryDirectory(prefix="council-bench-") as tmp_name:
        tmp = Path(tmp_name)
        servers = {
            "default": EmbeddedNats(tmp / "default").start(),
            "sync_always": EmbeddedNats(tmp / "durable", config=durable_config(tmp)).start(),
        }
        responder = start_responder(servers["default"].url)
        try:
            clients = {k: await connect(s.url, name=f"bench-{k}") for k, s in servers.items()}
            for nc in clients.values():
                await nc.jetstream().add_stream(
                    StreamConfig(
                        name=STREAM,
                        subjects=["bench.js.>"],
                        storage=StorageType.FILE,
                        duplicate_window=120,
                    )
                )
            nc = clients["default"]
            rtt = await round_trips(nc, rtt_count)
            core = [await core_rate(nc, core_count) for _ in range(rounds)]
            js: dict[str, dict[str, list[float]]] = {
                k: {"one_at_a_time": [], "publish_async": []} for k in servers
            }
            for r in range(rounds):  # both servers in every round, side by side
                for name, client in clients.items():
                    js[name]["one_at_a_time"].append(
                        await js_rate(client, js_one, pipelined=False, offset=r * 10**6)
                    )
                    js[name]["publish_async"].append(
                        await js_rate(client, js_async, pipelined=True, offset=r * 10**6 + js_one)
                    )
            for client in clients.values():
                await client.close()
        finally:
            if responder.stdin:
                responder.stdin.close()
            responder.wait(10)
            for server in servers.values():
                server.stop()
    return {
        "benchmark": "bus_raw",
        "quick": quick,
        "payload_bytes": {"opinion_event": len(opinion(1)), "request": len(opinion_request())},
        "request_reply": {"count": rtt_count, **rtt},
        "core_publish_per_s": round(median(core)),
        "jetstream_per_s": {
            name: {mode: round(median(v)) for mode, v in modes.items()}
            for name, modes in js.items()
        },
        "counts": {"core": core_count, "js_one_at_a_time": js_one, "js_publish_async": js_async},
        "machine_before": before,
        "machine_after": machine(),
    }


def tables(result: dict[str, Any]) -> list[Table]:
    rr = result["request_reply"]
    js = result["jetstream_per_s"]
    latency = Table(
        "Request/reply to another process (ms)",
        ["round trips", "median", "p99"],
        [[rr["count"], rr["median_ms"], rr["p99_ms"]]],
    )
    rates = Table(
        f"Publishes of a {result['payload_bytes']['opinion_event']}-byte Opinion event per second",
        ["kind", "NATS default sync", "nats.conf (sync always)"],
        [
            ["core publish", result["core_publish_per_s"], "-"],
            ["JetStream, one at a time", js["default"]["one_at_a_time"],
             js["sync_always"]["one_at_a_time"]],
            ["JetStream, publish_async", js["default"]["publish_async"],
             js["sync_always"]["publish_async"]],
        ],
    )  # fmt: skip
    return [latency, rates]


def main() -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--respond", metavar="URL", help=argparse.SUPPRESS)  # the responder
    args = p.parse_args()
    quiet_logs()
    if args.respond:
        asyncio.run(respond(args.respond))
        return
    result = asyncio.run(run(args.quick))
    report(result, tables(result), args)


if __name__ == "__main__":
    main()
