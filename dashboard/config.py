"""What the dashboard process is given: one value, made by `council dashboard` from
the settings object and handed to the Streamlit process in one environment
variable (secrets stay off the command line, and no page reads settings itself)."""

from __future__ import annotations

import os
from collections.abc import Mapping

import msgspec

from council.bus.client import DEFAULT_URL, Credentials

ENV = "COUNCIL_DASHBOARD_CONFIG"


class DashboardConfig(msgspec.Struct, frozen=True, kw_only=True):
    nats_url: str = DEFAULT_URL
    credentials: Credentials = Credentials()
    evals_dir: str = ""
    """Where `council eval` saved its runs (the Eval page reads them)."""
    login: str = ""
    """The password the dashboard asks for; none when empty."""

    def env(self) -> dict[str, str]:
        return {ENV: msgspec.json.encode(self).decode()}

    @classmethod
    def given(cls, environ: Mapping[str, str] = os.environ) -> DashboardConfig:
        """The config `council dashboard` passed; the defaults when run otherwise."""
        text = environ.get(ENV, "")
        return msgspec.json.decode(text, type=cls) if text else cls()
