"""The one settings object: defaults, overridden by ``COUNCIL_*`` variables, then flags.

Read only here, in the entry point; roles receive plain arguments.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec

from council.bus.client import Credentials
from council.bus.members import model_of
from council.bus.reports import Calibration
from council.chairman.strategies import DEFAULT, STRATEGIES

DEFAULT_MEMBERS = "qwen2.5-coder-1.5b,qwen2.5-coder-1.5b#2,qwen2.5-coder-1.5b#3"
"""Three samples of the strongest packaged model: 87.5% against 79.4% for the three
models (smollm2-135m, qwen2.5-coder-0.5b, qwen2.5-coder-1.5b) on the 160 development
questions in one run (docs/quality.md, `evals/results/dev--defaults-ab.report.json`)."""
DEFAULT_CHAIRMAN = "qwen2.5-coder-1.5b"


def _setting(
    default: Any, env: str, help: str, flag: str | None = None, shown: str | None = None
) -> Any:
    """A setting; ``shown`` is how its default reads when it is computed at run time."""
    return field(default=default, metadata={"env": env, "help": help, "flag": flag, "shown": shown})


def _default_models_dir() -> Path:
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache) / "council" / "models"


@dataclass(frozen=True)
class Settings:
    nats_url: str = _setting(
        "nats://127.0.0.1:4222", "COUNCIL_NATS_URL", "NATS server URL", "--nats"
    )
    nats_user: str = _setting("", "COUNCIL_NATS_USER", "NATS user (nats.conf has one per role)")
    nats_password: str = _setting("", "COUNCIL_NATS_PASSWORD", "NATS password of that user")
    nats_creds: str = _setting("", "COUNCIL_NATS_CREDS", "a NATS .creds file, instead of a user")
    nats_tls_ca: str = _setting(
        "", "COUNCIL_NATS_TLS_CA", "CA file that signed the server's TLS certificate"
    )
    nats_tls_cert: str = _setting(
        "", "COUNCIL_NATS_TLS_CERT", "client TLS certificate, for a server that verifies clients"
    )
    nats_tls_key: str = _setting("", "COUNCIL_NATS_TLS_KEY", "private key of that certificate")
    members: str = _setting(
        DEFAULT_MEMBERS,
        "COUNCIL_MEMBERS",
        "council members, comma-separated: MODEL, MODEL@PERSONA, MODEL+code for a member that "
        "answers by a program run in the sandbox, and MODEL#2 for a second sample (the "
        "default, three samples of the 1.5B, measured above three distinct models: "
        "docs/quality.md)",
    )
    chairman: str = _setting(DEFAULT_CHAIRMAN, "COUNCIL_CHAIRMAN", "the chairman's model")
    mode: str = _setting(
        "pairwise",
        "COUNCIL_MODE",
        "review mode: pairwise, rank, or compute (reviewers check by a program in the sandbox)",
    )
    models: str = _setting(
        "", "COUNCIL_AGENT_MODELS", "models `council agents` serves", shown="the members' models"
    )
    runtime: str = _setting(
        "auto",
        "COUNCIL_RUNTIME",
        "auto (each model to the first runtime that serves it: ollama, openai, then embedded), "
        "or one runtime by name (an unknown name lists them)",
    )
    ollama_host: str = _setting(
        "http://127.0.0.1:11434", "COUNCIL_OLLAMA_HOST", "Ollama server for the ollama runtime"
    )
    openai_base_url: str = _setting(
        "",
        "COUNCIL_OPENAI_BASE_URL",
        "an OpenAI-compatible server (http://host:port/v1) whose models agents may serve",
    )
    openai_api_key: str = _setting("", "COUNCIL_OPENAI_API_KEY", "the key that server asks for")
    models_dir: str = _setting(
        "",
        "COUNCIL_MODELS_DIR",
        "where pulled GGUF models are stored",
        shown="~/.cache/council/models",
    )
    threads: int = _setting(
        0,
        "COUNCIL_THREADS",
        "generation threads per call, at most (the host's share of the cores may be fewer)",
        shown="0 (all cores)",
    )
    n_ctx: int = _setting(4096, "COUNCIL_N_CTX", "context window of embedded models")
    batch: int = _setting(
        6,
        "COUNCIL_BATCH",
        "embedded runtime: concurrent calls to one model decoded together, up to this "
        "many (0: one call at a time)",
    )
    share_cores: bool = _setting(
        True,
        "COUNCIL_SHARE_CORES",
        "embedded runtime: the council processes of this host divide its cores among those "
        "generating, so a call alone has every core (1/0; see docs/performance.md)",
    )
    quorum: int = _setting(2, "COUNCIL_QUORUM", "opinions needed for a session to go on")
    opinions_deadline: float = _setting(180.0, "COUNCIL_OPINIONS_DEADLINE", "stage 1 deadline, s")
    reviews_deadline: float = _setting(300.0, "COUNCIL_REVIEWS_DEADLINE", "stage 2 deadline, s")
    synthesis_deadline: float = _setting(240.0, "COUNCIL_SYNTHESIS_DEADLINE", "stage 3 deadline, s")
    agent_silence: float = _setting(
        15.0,
        "COUNCIL_AGENT_SILENCE",
        "seconds without word from an agent before its request is asked of another",
    )
    strategy: str = _setting(
        DEFAULT,
        "COUNCIL_STRATEGY",
        "how the chairman concludes: " + ", ".join(STRATEGIES) + " (docs/how-it-works.md)",
    )
    settle_early: bool = _setting(
        True,
        "COUNCIL_SETTLE_EARLY",
        "stop the opinions still running once a majority of all the members agrees, "
        "when the strategy lets a majority stand (1/0)",
    )
    close_margin: float = _setting(
        0.5, "COUNCIL_CLOSE_MARGIN", "strategy close: a lead under this calls the chairman"
    )
    temperature: float = _setting(
        0.0, "COUNCIL_TEMPERATURE", "sampling temperature of a member's opinion (0: greedy)"
    )
    sample_temperature: float = _setting(
        0.7,
        "COUNCIL_SAMPLE_TEMPERATURE",
        "temperature of a member's further samples (model#2, model#3, ...)",
    )
    review_check_first: bool = _setting(
        False,
        "COUNCIL_REVIEW_CHECK_FIRST",
        "pairwise reviewers work the answer out before their score (1/0)",
    )
    program_rounds: int = _setting(
        3,
        "COUNCIL_PROGRAM_ROUNDS",
        "programs a computing member (MODEL+code) may write per opinion: a failed one goes "
        "back to its model with the error",
    )
    conclude: bool = _setting(
        True,
        "COUNCIL_CONCLUDE",
        "ask a member whose opinion states no final answer for it, in one short turn (1/0)",
    )
    sandbox_wall: float = _setting(
        10.0, "COUNCIL_SANDBOX_WALL", "seconds of wall time a program may run in the sandbox"
    )
    sandbox_cpu: int = _setting(
        5, "COUNCIL_SANDBOX_CPU", "seconds of CPU time a program may use in the sandbox"
    )
    sandbox_memory: int = _setting(
        512, "COUNCIL_SANDBOX_MEMORY", "MB of memory (address space) a sandboxed program may use"
    )
    sandbox_processes: int = _setting(
        32, "COUNCIL_SANDBOX_PROCESSES", "processes a sandboxed program may run at once"
    )
    sandbox_concurrency: int = _setting(
        2, "COUNCIL_SANDBOX_CONCURRENCY", "programs `council tools` runs at once"
    )
    reviewer_weights: str = _setting(
        "",
        "COUNCIL_REVIEWER_WEIGHTS",
        "how much each model's reviews count: model=weight,... or the calibration file "
        "`council eval` writes (0: not asked to review; unnamed: 1)",
    )
    history_tokens: int = _setting(
        1024,
        "COUNCIL_HISTORY_TOKENS",
        "how much of a conversation's earlier turns every stage sees (estimated tokens; "
        "the oldest turns beyond it are left out)",
    )
    opinion_max_tokens: int = _setting(
        512,
        "COUNCIL_OPINION_MAX_TOKENS",
        "tokens per opinion (room for the working and the final-answer line)",
    )
    review_max_tokens: int = _setting(160, "COUNCIL_REVIEW_MAX_TOKENS", "tokens per review")
    synthesis_max_tokens: int = _setting(
        512, "COUNCIL_SYNTHESIS_MAX_TOKENS", "tokens of the final answer"
    )
    concurrency: int = _setting(
        6,
        "COUNCIL_AGENT_CONCURRENCY",
        "requests in flight per model (the embedded runtime decodes up to COUNCIL_BATCH together)",
    )
    max_sessions: int = _setting(16, "COUNCIL_MAX_SESSIONS", "sessions one chairman runs at once")
    stream_replicas: int = _setting(
        1, "COUNCIL_STREAM_REPLICAS", "session events' copies in a NATS cluster (3: lose 1 node)"
    )
    heartbeat: float = _setting(2.0, "COUNCIL_HEARTBEAT", "seconds between health heartbeats")
    session_lease: float = _setting(
        30.0,
        "COUNCIL_SESSION_LEASE",
        "seconds a session whose chairman went silent waits before another chairman takes it over",
    )
    node: str = _setting(
        "",
        "COUNCIL_NODE",
        "node name in heartbeats (agents append -ROLE to a set name); a chairman resumes the "
        "sessions of its name",
        shown="HOST-ROLE-PID; HOST-chairman",
    )
    scripted_delay_ms: float = _setting(
        0.0, "COUNCIL_SCRIPTED_DELAY_MS", "per-call delay of the scripted runtime"
    )
    dashboard_address: str = _setting(
        "127.0.0.1", "COUNCIL_DASHBOARD_ADDRESS", "address the dashboard listens on"
    )
    dashboard_port: int = _setting(8501, "COUNCIL_DASHBOARD_PORT", "port of the dashboard")
    dashboard_login: str = _setting(
        "",
        "COUNCIL_DASHBOARD_LOGIN",
        "password the dashboard asks for; required on an address beyond loopback "
        "(`council up` makes one there)",
    )
    api_address: str = _setting(
        "127.0.0.1", "COUNCIL_API_ADDRESS", "address the OpenAI-compatible API listens on"
    )
    api_port: int = _setting(8400, "COUNCIL_API_PORT", "port of the OpenAI-compatible API")
    api_key: str = _setting(
        "",
        "COUNCIL_API_KEY",
        "bearer token the API asks for; required on an address beyond loopback "
        "(`council up` makes one)",
    )
    ask_timeout: float = _setting(
        900.0,
        "COUNCIL_ASK_TIMEOUT",
        "how long `council ask` (and `council eval`, per question) waits for the answer, s",
    )
    evals_dir: str = _setting(
        "",
        "COUNCIL_EVALS_DIR",
        "where `council eval` keeps records and reports (the dashboard's Eval page reads them)",
        shown="~/.local/share/council/evals",
    )
    log_format: str = _setting(
        "auto", "COUNCIL_LOG_FORMAT", "auto (console on a TTY), json, console"
    )
    log_level: str = _setting("info", "COUNCIL_LOG_LEVEL", "debug, info, warning, error")

    @property
    def credentials(self) -> Credentials:
        return Credentials(
            self.nats_user,
            self.nats_password,
            self.nats_creds,
            tls_ca=self.nats_tls_ca,
            tls_cert=self.nats_tls_cert,
            tls_key=self.nats_tls_key,
        )

    @property
    def data_path(self) -> Path:
        """council's own data (eval runs, `council up`'s NATS store): XDG's data home."""
        data = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
        return Path(data) / "council"

    @property
    def evals_path(self) -> Path:
        return Path(self.evals_dir).expanduser() if self.evals_dir else self.data_path / "evals"

    @property
    def member_list(self) -> list[str]:
        return [m.strip() for m in self.members.split(",") if m.strip()]

    @property
    def models_path(self) -> Path:
        return Path(self.models_dir).expanduser() if self.models_dir else _default_models_dir()

    @property
    def reviewer_weight_map(self) -> dict[str, float]:
        """``COUNCIL_REVIEWER_WEIGHTS`` read: inline pairs, or a calibration JSON file."""
        text = self.reviewer_weights.strip()
        if not text:
            return {}
        try:
            if "=" not in text:
                return msgspec.json.decode(
                    Path(text).expanduser().read_bytes(), type=Calibration
                ).weights
            pairs = (item.split("=", 1) for item in text.split(",") if item.strip())
            return {model.strip(): max(0.0, float(weight)) for model, weight in pairs}
        except (OSError, ValueError, msgspec.DecodeError) as exc:
            raise SystemExit(f"error: $COUNCIL_REVIEWER_WEIGHTS={text!r}: {exc}") from None

    @property
    def agent_models(self) -> list[str]:
        listed = [m.strip() for m in self.models.split(",") if m.strip()]
        if listed:
            return listed
        return list(dict.fromkeys(model_of(m) for m in self.member_list))


SETTINGS = {f.name: f for f in dataclasses.fields(Settings)}


def _kind(name: str) -> Callable[[str], Any]:
    default: Any = SETTINGS[name].default
    return _boolean if isinstance(default, bool) else type(default)


def _boolean(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered not in {"1", "true", "yes", "on", "0", "false", "no", "off"}:
        raise ValueError(f"{text!r} is not one of 1/0, true/false, yes/no, on/off")
    return lowered in {"1", "true", "yes", "on"}


def flag_of(name: str) -> str:
    return SETTINGS[name].metadata["flag"] or "--" + name.replace("_", "-")


def shown_default(name: str) -> str:
    f = SETTINGS[name]
    default: Any = f.default
    if f.metadata["shown"]:
        return str(f.metadata["shown"])
    if isinstance(default, bool):
        return "1" if default else "0"
    if isinstance(default, float):
        return f"{default:g}"
    return str(default) if default != "" else "none"


FIRST = ("members", "chairman", "strategy", "mode", "runtime", "models_dir", "nats_url",
         "dashboard_port", "api_port", "log_level")  # fmt: skip
"""The settings a first user reaches for (the README's short table; docs/settings.md
has them all)."""


def settings_rows(names: Sequence[str] = tuple(SETTINGS)) -> list[list[str]]:
    """Flag, environment variable, default and meaning of these settings."""
    return [
        [flag_of(name), SETTINGS[name].metadata["env"], shown_default(name),
         SETTINGS[name].metadata["help"]]
        for name in names
    ]  # fmt: skip


def add_settings(parser: argparse.ArgumentParser, names: Sequence[str]) -> None:
    group = parser.add_argument_group("settings (flag > environment variable > default)")
    for name in names:
        f = SETTINGS[name]
        group.add_argument(
            flag_of(name),
            dest=name,
            type=_kind(name),
            default=None,
            help=f"{f.metadata['help']} [${f.metadata['env']}, default {shown_default(name)}]",
        )


def explicit(name: str, args: argparse.Namespace, environ: Mapping[str, str] = os.environ) -> bool:
    """Whether the user set ``name`` (by flag or environment) rather than left the default."""
    return getattr(args, name, None) is not None or bool(
        environ.get(SETTINGS[name].metadata["env"])
    )


def load(
    args: argparse.Namespace | None = None, environ: Mapping[str, str] = os.environ
) -> Settings:
    values: dict[str, Any] = {}
    for name, f in SETTINGS.items():
        env = environ.get(f.metadata["env"])
        if env is not None and env != "":
            try:
                values[name] = _kind(name)(env)
            except ValueError as exc:
                raise SystemExit(f"error: ${f.metadata['env']}={env!r}: {exc}") from None
        flag = getattr(args, name, None) if args is not None else None
        if flag is not None:
            values[name] = flag
    return Settings(**values)
