"""structlog set-up, done once per process: console on a TTY, JSON otherwise."""

from __future__ import annotations

import logging
import sys
from dataclasses import dataclass

import structlog

from council.bus.tunables import tunable


@dataclass(frozen=True)
class Logging:
    log_format: str = tunable(
        "auto", "COUNCIL_LOG_FORMAT", "auto (console on a TTY), json, console"
    )
    log_level: str = tunable("info", "COUNCIL_LOG_LEVEL", "debug, info, warning, error")


def configure_logging(fmt: str = "auto", level: str = "info") -> None:
    json_lines = fmt == "json" or (fmt == "auto" and not sys.stderr.isatty())
    renderer: structlog.types.Processor = (
        structlog.processors.JSONRenderer()
        if json_lines
        else structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(
            logging.getLevelNamesMapping().get(level.upper(), logging.INFO)
        ),
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
        cache_logger_on_first_use=True,
    )
