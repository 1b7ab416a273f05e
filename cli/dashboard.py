"""`council dashboard`: serve the Streamlit app, talking to the council only through NATS."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import council.dashboard
from council.cli.settings import Settings


def dashboard_command(settings: Settings) -> list[str]:
    app = Path(council.dashboard.__file__).parent / "app.py"
    return [
        sys.executable, "-m", "streamlit", "run", str(app),
        "--server.headless", "true",
        "--server.address", settings.dashboard_address,
        "--server.port", str(settings.dashboard_port),
        "--browser.gatherUsageStats", "false",
        "--theme.base", "dark",
        "--client.toolbarMode", "minimal",
    ]  # fmt: skip


def dashboard_env(settings: Settings) -> dict[str, str]:
    return {
        **os.environ,
        "COUNCIL_NATS_URL": settings.nats_url,
        "COUNCIL_NATS_USER": settings.nats_user,
        "COUNCIL_NATS_PASSWORD": settings.nats_password,
        "COUNCIL_NATS_CREDS": settings.nats_creds,
        "COUNCIL_NATS_TLS_CA": settings.nats_tls_ca,
        "COUNCIL_NATS_TLS_CERT": settings.nats_tls_cert,
        "COUNCIL_NATS_TLS_KEY": settings.nats_tls_key,
    }


def dashboard_url(settings: Settings) -> str:
    return f"http://{settings.dashboard_address}:{settings.dashboard_port}"


def run_dashboard(settings: Settings) -> int:
    """Become the Streamlit server, so that signals reach it directly (no orphan on stop)."""
    print(
        f"council dashboard on {dashboard_url(settings)} (NATS {settings.nats_url})",
        file=sys.stderr,
    )
    command = dashboard_command(settings)
    os.execve(command[0], command, dashboard_env(settings))
