"""Logging for the command line: a level from ``-v``/``-q``/``--log-level``/``OMNIQ_LOG_LEVEL``,
rich's handler on a terminal, plain timestamped lines otherwise, JSON lines for log shippers."""

from __future__ import annotations

import json
import logging
import sys
from datetime import datetime, timezone
from typing import IO, Any
from urllib.parse import urlsplit, urlunsplit

HANDLER_NAME = "omniq-cli"
LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
FORMATS = ("auto", "text", "json")

# Fields the worker passes as ``extra=`` that a JSON line carries as its own keys.
EXTRA_FIELDS = ("worker_id", "task", "task_id", "queue", "outcome", "duration", "attempt")


def level_for(verbose: int = 0, quiet: int = 0, level: str | None = None) -> int:
    """``level`` (a name) wins; otherwise INFO, one step down per ``-v``, up per ``-q``."""
    if level:
        name = level.upper()
        if name not in LEVELS:
            raise ValueError(f"log level must be one of {', '.join(LEVELS)}, got {level!r}")
        return int(getattr(logging, name))
    return max(logging.DEBUG, min(logging.ERROR, logging.INFO + 10 * (quiet - verbose)))


class JsonFormatter(logging.Formatter):
    """One JSON object a line: time (UTC, ISO), level, logger, message and the task fields."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, timezone.utc).isoformat(),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key in EXTRA_FIELDS:
            if hasattr(record, key):
                line[key] = getattr(record, key)
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str)


class _StderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to whatever ``sys.stderr`` is at the time (click's test runner swaps it)."""

    @property
    def stream(self) -> IO[str]:
        return sys.stderr

    @stream.setter
    def stream(self, value: IO[str]) -> None:
        pass


def configure(level: int = logging.INFO, fmt: str = "auto", stream: IO[str] | None = None) -> None:
    """Send the ``omniq`` loggers' records at ``level`` and above to ``stream`` (stderr).

    ``auto`` is rich's handler on a terminal and plain lines elsewhere. Configuring again
    replaces the handler this function installed before (so tests and re-runs do not double up).
    """
    if fmt not in FORMATS:
        raise ValueError(f"log format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    handler: logging.Handler
    if fmt == "auto" and (stream or sys.stderr).isatty():
        from rich.console import Console
        from rich.logging import RichHandler

        console = Console(file=stream) if stream else Console(stderr=True)
        handler = RichHandler(console=console, show_path=False, markup=False)
    else:
        handler = logging.StreamHandler(stream) if stream else _StderrHandler()
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    elif isinstance(handler, logging.StreamHandler):  # rich's handler formats its own lines
        handler.setFormatter(
            logging.Formatter("%(asctime)s %(levelname)-7s %(message)s", "%Y-%m-%d %H:%M:%S")
        )
    handler.set_name(HANDLER_NAME)
    unconfigure()
    root = logging.getLogger("omniq")
    root.addHandler(handler)
    root.setLevel(level)


def unconfigure() -> None:
    """Undo ``configure``: the handler goes, the level is inherited again."""
    root = logging.getLogger("omniq")
    for old in [h for h in root.handlers if h.get_name() == HANDLER_NAME]:
        root.removeHandler(old)
    root.setLevel(logging.NOTSET)


def redact(url: str) -> str:
    """A location without any user name or password in it (``s3://key:secret@bucket/p``)."""
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url
    return urlunsplit(parts._replace(netloc="***@" + parts.netloc.rsplit("@", 1)[1]))
