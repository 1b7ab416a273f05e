"""What a NATS address says before any login: whether it listens, and whether its
greeting (the INFO line, sent before TLS) requires TLS."""

from __future__ import annotations

import asyncio
import json
import socket
from urllib.parse import urlparse


def address(server: str) -> tuple[str, int]:
    """``nats://host:port``, ``tls://host``, or a bare ``host:port`` → (host, port)."""
    parsed = urlparse(server if "://" in server else f"nats://{server}")
    return parsed.hostname or "127.0.0.1", parsed.port or 4222


def answers(server: str, timeout_s: float = 0.5) -> bool:
    """Whether something accepts TCP connections at this server address."""
    try:
        with socket.create_connection(address(server), timeout_s):
            return True
    except OSError:
        return False


async def any_answers(servers: list[str], timeout_s: float) -> bool:
    for server in servers:
        if await asyncio.to_thread(answers, server, timeout_s):
            return True
    return False


async def without_tls(servers: list[str], timeout_s: float) -> list[str]:
    """The listening servers whose greeting does not require TLS; a server that sends
    none is left to nats-py."""
    plain: list[str] = []
    for server in servers:
        host, port = address(server)
        try:
            reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout_s)
        except (OSError, TimeoutError):
            continue
        try:
            line = await asyncio.wait_for(reader.readline(), timeout_s)
        except (OSError, TimeoutError):
            line = b""
        finally:
            writer.close()
        if line.startswith(b"INFO "):
            try:
                info = json.loads(line[5:])
            except ValueError:
                continue
            if not info.get("tls_required"):
                plain.append(f"{host}:{port}")
    return plain
