"""The one settings object, gathered from the settings the roles declare.

Each setting is declared once, beside the code that reads it (``bus.tunables``):
the connection's in ``bus/transport/connection.py``, the chairman's in
``chairman/config.py``, ``chairman/admission.py`` and ``chairman/service.py``, the
runtimes' in ``agents/runtimes/base.py``, the sandbox's in ``tools/sandbox.py``,
and so on.
Here they are gathered, a section per role's config: defaults, overridden by
``COUNCIL_*`` variables, then by flags. A command takes every setting of the
sections it reads (``cli/main.py``), so a setting it reads is one of its flags.
Read only in the entry point; roles receive their own config.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, get_type_hints

from council.agents.runtimes.base import RuntimeOptions
from council.agents.service import AgentOptions
from council.api.mcp_server import McpConfig
from council.api.server import ApiConfig
from council.assembly.logs import Logging
from council.bus.client.ask import Asking
from council.bus.members import model_of
from council.bus.transport.connection import Connection, Credentials
from council.bus.transport.health import Health
from council.bus.tunables import Tunable, declared
from council.chairman.admission import Defaults
from council.chairman.config import CouncilConfig
from council.chairman.service import ChairmanOptions
from council.dashboard.config import DashboardConfig
from council.evaluation.run import Evals
from council.tools.sandbox import Limits
from council.tools.service import ToolsOptions


@dataclass(frozen=True)
class Settings:
    """Every role's settings, a section each (the role's own config)."""

    connection: Connection = field(default_factory=Connection)
    logging: Logging = field(default_factory=Logging)
    defaults: Defaults = field(default_factory=Defaults)
    council: CouncilConfig = field(default_factory=CouncilConfig)
    chairman: ChairmanOptions = field(default_factory=ChairmanOptions)
    runtime: RuntimeOptions = field(default_factory=RuntimeOptions)
    agents: AgentOptions = field(default_factory=AgentOptions)
    health: Health = field(default_factory=Health)
    sandbox: Limits = field(default_factory=Limits)
    tools: ToolsOptions = field(default_factory=ToolsOptions)
    dashboard: DashboardConfig = field(default_factory=DashboardConfig)
    api: ApiConfig = field(default_factory=ApiConfig)
    mcp: McpConfig = field(default_factory=McpConfig)
    asking: Asking = field(default_factory=Asking)
    evals: Evals = field(default_factory=Evals)

    @property
    def nats_url(self) -> str:
        return self.connection.nats_url

    @property
    def credentials(self) -> Credentials:
        return self.connection.credentials

    @property
    def agent_models(self) -> list[str]:
        """The models an agents process serves: those named, else the members' models."""
        if self.agents.models:
            return list(self.agents.models)
        return list(dict.fromkeys(model_of(m) for m in self.defaults.members))

    @property
    def data_path(self) -> Path:
        """council's own data (`council up`'s NATS store): XDG's data home."""
        data = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
        return Path(data) / "council"


SECTIONS: dict[str, type[Any]] = get_type_hints(Settings)


@dataclass(frozen=True)
class Setting:
    """One tunable field of one section, as the command line and the docs show it."""

    section: str
    name: str
    tunable: Tunable
    default: Any

    @property
    def key(self) -> str:
        """Its place in the settings object (``council.quorum``); the flags' dest."""
        return f"{self.section}.{self.name}"

    def parse(self, text: str) -> Any:
        """A value given as text (a variable, a flag); ValueError says what is wrong."""
        if isinstance(self.default, bool):
            return _boolean(text)
        if isinstance(self.default, tuple):
            return tuple(item.strip() for item in text.split(",") if item.strip())
        return type(self.default)(text)

    def format(self, value: Any) -> str:
        """A value as its variable says it (what `council up` hands its children)."""
        if isinstance(value, bool):
            return "1" if value else "0"
        if isinstance(value, tuple):
            return ",".join(value)
        if isinstance(value, float):
            return f"{value:g}"
        return str(value)

    @property
    def shown(self) -> str:
        """How the default reads in ``--help`` and the docs."""
        if self.tunable.shown:
            return self.tunable.shown
        return self.format(self.default) or "none"


def _gathered() -> dict[str, Setting]:
    found = {}
    for section, config in SECTIONS.items():
        defaults = {f.name: f.default for f in dataclasses.fields(config)}
        for name, mark in declared(config).items():
            setting = Setting(section, name, mark, defaults[name])
            found[setting.key] = setting
    return found


SETTINGS: dict[str, Setting] = _gathered()
"""Every setting, by key, section by section."""

FIRST = (
    "defaults.members", "defaults.chairman", "defaults.strategy", "defaults.mode",
    "runtime.runtime", "runtime.models_dir", "connection.nats_url", "dashboard.port",
    "api.port", "logging.log_level",
)  # fmt: skip
"""The settings a first user reaches for (the README's short table; docs/settings.md
has them all)."""


def _boolean(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered not in {"1", "true", "yes", "on", "0", "false", "no", "off"}:
        raise ValueError(f"{text!r} is not one of 1/0, true/false, yes/no, on/off")
    return lowered in {"1", "true", "yes", "on"}


def of_sections(sections: Sequence[str]) -> list[Setting]:
    return [s for s in SETTINGS.values() if s.section in sections]


def settings_rows(keys: Sequence[str] = tuple(SETTINGS)) -> list[list[str]]:
    """Flag, environment variable, default and meaning of these settings."""
    return [
        [SETTINGS[k].tunable.flag, SETTINGS[k].tunable.env, SETTINGS[k].shown,
         SETTINGS[k].tunable.help]
        for k in keys
    ]  # fmt: skip


def add_settings(parser: argparse.ArgumentParser, sections: Sequence[str]) -> None:
    """Every setting of these sections as a flag of ``parser``."""
    group = parser.add_argument_group("settings (flag > environment variable > default)")
    for s in of_sections(sections):
        group.add_argument(
            s.tunable.flag,
            dest=s.key,
            metavar=s.tunable.flag.removeprefix("--").replace("-", "_").upper(),
            type=_flag_type(s),
            default=None,
            help=f"{s.tunable.help} [${s.tunable.env}, default {s.shown}]",
        )


def _flag_type(setting: Setting) -> Callable[[str], Any]:
    def parse(text: str) -> Any:
        try:
            return setting.parse(text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    parse.__name__ = type(setting.default).__name__  # argparse names it in its errors
    return parse


def explicit(key: str, args: argparse.Namespace, environ: Mapping[str, str] = os.environ) -> bool:
    """Whether the user set ``key`` (by flag or environment) rather than left the default."""
    return getattr(args, key, None) is not None or bool(environ.get(SETTINGS[key].tunable.env))


def load(
    args: argparse.Namespace | None = None, environ: Mapping[str, str] = os.environ
) -> Settings:
    sections: dict[str, dict[str, Any]] = {name: {} for name in SECTIONS}
    for s in SETTINGS.values():
        text = environ.get(s.tunable.env)
        if text is not None and text != "":
            try:
                sections[s.section][s.name] = s.parse(text)
            except ValueError as exc:
                raise SystemExit(f"error: ${s.tunable.env}={text!r}: {exc}") from None
        flag = getattr(args, s.key, None) if args is not None else None
        if flag is not None:
            sections[s.section][s.name] = flag
    return Settings(**{name: SECTIONS[name](**values) for name, values in sections.items()})


def environment(settings: Settings) -> dict[str, str]:
    """Every setting as its variable: what a child process is handed to run as this one."""
    return {
        s.tunable.env: s.format(getattr(getattr(settings, s.section), s.name))
        for s in SETTINGS.values()
    }
