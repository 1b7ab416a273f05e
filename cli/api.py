"""`council api`: serve the council as an OpenAI-compatible model over HTTP."""

from __future__ import annotations

import sys

import uvicorn

from council.api.server import ApiConfig, CouncilApi
from council.cli.dashboard import exposed
from council.cli.settings import Settings


def api_url(settings: Settings) -> str:
    return f"http://{settings.api_address}:{settings.api_port}/v1"


def api_config(settings: Settings) -> ApiConfig:
    return ApiConfig(
        nats_url=settings.nats_url,
        credentials=settings.credentials,
        key=settings.api_key,
        timeout_s=settings.ask_timeout,
    )


async def run_api(settings: Settings) -> int:
    if exposed(settings.api_address) and not settings.api_key:
        print(
            f"council api: it would listen on {settings.api_address} without a key: anyone "
            "who reaches it could ask the council. Set COUNCIL_API_KEY, or listen on 127.0.0.1",
            file=sys.stderr,
        )
        return 2
    print(f"council api on {api_url(settings)} (NATS {settings.nats_url})", file=sys.stderr)
    server = uvicorn.Server(
        uvicorn.Config(
            CouncilApi(api_config(settings)).app(),
            host=settings.api_address,
            port=settings.api_port,
            log_level="warning",
            lifespan="on",
        )
    )
    await server.serve()
    return 0
