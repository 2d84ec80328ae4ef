"""Logging for every PatrolLink process: structlog, one call to set it up.

    from dispatch import logs
    logs.configure(level="info")          # once, at process start
    log = logs.get_logger(__name__)
    log.info("order.sent", unit_id="P-12", eta_s=95)

Lines are JSON when stderr is not a terminal (containers, CI, files) and
coloured key=value text when it is. Timestamps are ISO 8601 in UTC. Values
bound with ``structlog.contextvars.bind_contextvars(incident_id=...,
correlation_id=...)`` for the message being handled appear on every line
logged while handling it. The standard library's ``logging`` (nats-py,
FastStream, aiohttp, aiortc ...) goes through the same renderer, with the
chattiest libraries held at WARNING.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

import structlog

__all__ = ["NOISY_LOGGERS", "configure", "get_logger"]

# Per-message or per-packet chatter at INFO/DEBUG; their warnings still show.
NOISY_LOGGERS = (
    "nats",
    "faststream.access",
    "aiohttp.access",
    "aiortc",
    "aioice",
    "av",
    "asyncio",
    "urllib3",
)


def _level_number(level: str | int) -> int:
    if isinstance(level, int):
        return level
    number = logging.getLevelName(level.strip().upper())
    if not isinstance(number, int):
        raise ValueError(f"unknown log level {level!r}: use debug, info, warning, error or critical")
    return number


def configure(level: str | int = "info", json: bool | None = None, direct: bool = False) -> None:
    """Set up structlog and stdlib logging for this process. Safe to call again.

    ``json=None`` picks JSON when stderr is not a TTY. ``direct=True`` (the engine, which logs a
    line per incident event) renders structlog's own lines straight to stderr, without a detour
    through the standard library's records, handlers and formatter: the same lines, a few times
    cheaper. Libraries' stdlib records still go through the stdlib handler either way.
    """
    number = _level_number(level)
    if json is None:
        json = not (hasattr(sys.stderr, "isatty") and sys.stderr.isatty())

    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.StackInfoRenderer(),
    ]
    renderer: Any
    if json:
        shared.append(structlog.processors.format_exc_info)
        renderer = structlog.processors.JSONRenderer()
    else:
        renderer = structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())

    if direct:
        structlog.configure(
            processors=[*shared, renderer],
            logger_factory=_LineLogger,
            # levels below `number` are no-ops, decided once here instead of on every call
            wrapper_class=structlog.make_filtering_bound_logger(number),
            cache_logger_on_first_use=False,
        )
    else:
        # structlog loggers hand their event dict to stdlib logging, which renders
        # it with the same processors as records from third-party libraries.
        structlog.configure(
            processors=[
                structlog.stdlib.filter_by_level,
                *shared,
                structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
            ],
            logger_factory=structlog.stdlib.LoggerFactory(),
            wrapper_class=structlog.stdlib.BoundLogger,
            # Not cached, so a later configure() (tests, CLI flags) takes effect
            # on loggers made at import time.
            cache_logger_on_first_use=False,
        )

    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=shared,
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(formatter)
    handler.set_name("patrollink")

    root = logging.getLogger()
    for old in [h for h in root.handlers if h.get_name() == "patrollink"]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(number)
    for name in NOISY_LOGGERS:
        logging.getLogger(name).setLevel(max(number, logging.WARNING))


class _LineLogger:
    """structlog's output end for ``direct=True``: one rendered line to the current stderr.

    ``name`` is what ``add_logger_name`` reports, as a stdlib logger's would be."""

    def __init__(self, name: str | None = None, *args: Any) -> None:
        self.name = name or ""

    def msg(self, message: str) -> None:
        f = sys.stderr
        f.write(message + "\n")
        f.flush()

    debug = info = warning = warn = error = critical = exception = fatal = failure = log = msg


def get_logger(name: str | None = None, **initial: Any) -> structlog.stdlib.BoundLogger:
    """A logger named ``name`` (shows as ``logger`` in each line), with optional bound values."""
    log = structlog.stdlib.get_logger(name)
    return log.bind(**initial) if initial else log
