"""What the dashboard process is given: one value, made by `council dashboard` from
the settings object and handed to the Streamlit process in one environment
variable (secrets stay off the command line, and no page reads settings itself)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field

import msgspec

from council.bus.transport.connection import DEFAULT_URL, Credentials
from council.bus.tunables import tunable

ENV = "COUNCIL_DASHBOARD_CONFIG"


@dataclass(frozen=True, kw_only=True)
class DashboardConfig:
    address: str = tunable(
        "127.0.0.1",
        "COUNCIL_DASHBOARD_ADDRESS",
        "address the dashboard listens on",
        flag="--dashboard-address",
    )
    port: int = tunable(
        8501, "COUNCIL_DASHBOARD_PORT", "port of the dashboard", flag="--dashboard-port"
    )
    login: str = tunable(
        "",
        "COUNCIL_DASHBOARD_LOGIN",
        "password the dashboard asks for; required on an address beyond loopback "
        "(`council up` makes one there)",
        flag="--dashboard-login",
    )
    nats_url: str = DEFAULT_URL
    credentials: Credentials = field(default_factory=Credentials)
    evals_dir: str = ""
    """Where `council eval` saved its runs (the Eval page reads them)."""

    def env(self) -> dict[str, str]:
        return {ENV: msgspec.json.encode(self).decode()}

    @classmethod
    def given(cls, environ: Mapping[str, str] = os.environ) -> DashboardConfig:
        """The config `council dashboard` passed; the defaults when run otherwise."""
        text = environ.get(ENV, "")
        return msgspec.json.decode(text, type=cls) if text else cls()
