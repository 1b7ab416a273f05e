"""`council dashboard`: serve the Streamlit app, talking to the council only through NATS."""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import sys
from pathlib import Path

import council.dashboard
from council.assembly.settings import Settings
from council.dashboard.config import DashboardConfig


def dashboard_command(settings: Settings) -> list[str]:
    app = Path(council.dashboard.__file__).parent / "app.py"
    return [
        sys.executable, "-m", "streamlit", "run", str(app),
        "--server.headless", "true",
        "--server.address", settings.dashboard.address,
        "--server.port", str(settings.dashboard.port),
        "--browser.gatherUsageStats", "false",
        "--theme.base", "dark",
        "--client.toolbarMode", "minimal",
        "--server.fileWatcherType", "none",  # polling our installed sources cost ~10% of a core
    ]  # fmt: skip


def dashboard_config(settings: Settings) -> DashboardConfig:
    """What the Streamlit process is handed: the dashboard's settings, and where the
    bus and the eval reports are."""
    return dataclasses.replace(
        settings.dashboard,
        nats_url=settings.nats_url,
        credentials=settings.credentials,
        evals_dir=str(settings.evals.evals_path),
    )


def dashboard_env(settings: Settings) -> dict[str, str]:
    return {**os.environ, **dashboard_config(settings).env()}


def exposed(address: str) -> bool:
    """Whether the dashboard would listen beyond this machine (a name other than
    localhost counts: it may resolve to anything)."""
    if address == "localhost":
        return False
    try:
        return not ipaddress.ip_address(address).is_loopback
    except ValueError:
        return True


def unguarded(settings: Settings) -> str:
    """Why the dashboard must not start as configured, or ""."""
    if exposed(settings.dashboard.address) and not settings.dashboard.login:
        return (
            f"the dashboard would listen on {settings.dashboard.address} without a login: "
            "anyone who reaches it could ask the council. Set COUNCIL_DASHBOARD_LOGIN to a "
            "password, or listen on 127.0.0.1"
        )
    return ""


def dashboard_url(settings: Settings) -> str:
    return f"http://{settings.dashboard.address}:{settings.dashboard.port}"


def run_dashboard(settings: Settings) -> int:
    """Become the Streamlit server, so that signals reach it directly (no orphan on stop)."""
    if refusal := unguarded(settings):
        print(f"council dashboard: {refusal}", file=sys.stderr)
        return 2
    print(
        f"council dashboard on {dashboard_url(settings)} (NATS {settings.nats_url})",
        file=sys.stderr,
    )
    command = dashboard_command(settings)
    os.execve(command[0], command, dashboard_env(settings))
