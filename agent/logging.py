"""structlog setup for cellard.

The daemon log bus lives in ``observe.daemonlog`` (it also feeds the daemon-log RPC); this module
uses it when present and otherwise configures structlog itself, so cellard logs from day one.
"""

from __future__ import annotations

import importlib
import logging
import sys
from typing import Any

import structlog


def _fallback(json: bool | None, level: str) -> None:
    """Key-value events on stderr: JSON when not a TTY (journald, files), console in a terminal."""
    if json is None:
        json = not sys.stderr.isatty()
    renderer: Any = structlog.processors.JSONRenderer() if json else structlog.dev.ConsoleRenderer()
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelNamesMapping()[level.upper()]),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=False,
    )


def configure(json: bool | None = None, level: str = "info") -> Any:
    """Configure structlog; return the daemon log bus, or None when observe.daemonlog is absent."""
    try:
        daemonlog = importlib.import_module("observe.daemonlog")
    except ImportError:
        _fallback(json, level)
        return None
    return daemonlog.configure(json=json, level=level)
