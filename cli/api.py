"""`council api`: serve the council as an OpenAI-compatible model over HTTP."""

from __future__ import annotations

import dataclasses
import sys

import uvicorn

from council.api.server import ApiConfig, CouncilApi
from council.assembly.settings import Settings
from council.cli.dashboard import exposed


def api_url(settings: Settings) -> str:
    return f"http://{settings.api.address}:{settings.api.port}/v1"


def api_config(settings: Settings) -> ApiConfig:
    """The API's settings, with where the bus is and how long a question may take."""
    return dataclasses.replace(
        settings.api,
        nats_url=settings.nats_url,
        credentials=settings.credentials,
        timeout_s=settings.asking.ask_timeout,
    )


async def run_api(settings: Settings) -> int:
    if exposed(settings.api.address) and not settings.api.key:
        print(
            f"council api: it would listen on {settings.api.address} without a key: anyone "
            "who reaches it could ask the council. Set COUNCIL_API_KEY, or listen on 127.0.0.1",
            file=sys.stderr,
        )
        return 2
    print(f"council api on {api_url(settings)} (NATS {settings.nats_url})", file=sys.stderr)
    server = uvicorn.Server(
        uvicorn.Config(
            CouncilApi(api_config(settings)).app(),
            host=settings.api.address,
            port=settings.api.port,
            log_level="warning",
            lifespan="on",
        )
    )
    await server.serve()
    return 0
