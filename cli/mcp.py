"""`council mcp`: the council's MCP server, over stdio or streamable HTTP."""

from __future__ import annotations

import dataclasses
import sys

import uvicorn

from council.api.mcp_server import Council, McpConfig, http_app, server
from council.assembly.settings import Settings
from council.cli.dashboard import exposed


def mcp_config(settings: Settings) -> McpConfig:
    """The MCP server's settings, with where the bus is, the API's key and how long a
    question may take."""
    return dataclasses.replace(
        settings.mcp,
        nats_url=settings.nats_url,
        credentials=settings.credentials,
        key=settings.api.key,
        timeout_s=settings.asking.ask_timeout,
    )


async def run_mcp(settings: Settings) -> int:
    config = mcp_config(settings)
    if config.transport not in ("stdio", "http"):
        print(f"council mcp: transport {config.transport!r}: stdio or http", file=sys.stderr)
        return 2
    if config.transport == "http" and exposed(config.address) and not config.key:
        print(
            f"council mcp: it would listen on {config.address} without a key: anyone who "
            "reaches it could ask the council. Set COUNCIL_API_KEY, or listen on 127.0.0.1",
            file=sys.stderr,
        )
        return 2
    council = Council(config)
    mcp = server(council)
    try:
        if config.transport == "stdio":  # stdout is the protocol's: logs go to stderr
            await mcp.run_stdio_async()
            return 0
        print(
            f"council mcp on http://{config.address}:{config.port}/mcp (NATS {config.nats_url})",
            file=sys.stderr,
        )
        app = http_app(mcp, council)
        await uvicorn.Server(
            uvicorn.Config(app, host=config.address, port=config.port, log_level="warning")
        ).serve()
        return 0
    finally:
        await council.close()
