"""Which failures mean "the database is unavailable, retry later": one classification for all faces."""

from __future__ import annotations

import math
import time

import asyncpg
from sqlalchemy import exc as sa_exc

from app.errors import Unavailable

# What a face must catch to ask `is_unavailable` (REST registers one handler per class).
# OSError covers TimeoutError, ConnectionRefusedError and the rest of the socket failures.
DATABASE_ERRORS: tuple[type[Exception], ...] = (
    sa_exc.SQLAlchemyError,
    asyncpg.PostgresError,
    asyncpg.InterfaceError,
    asyncpg.exceptions.InternalClientError,  # a pooled connection the server dropped
    OSError,
)

# Errors that say nothing about the request and everything about the database or the path to
# it: server down, starting, shutting down, connection killed, pool or statement time-out.
_TRANSIENT: tuple[type[BaseException], ...] = (
    sa_exc.OperationalError,  # asyncpg's connection failures, translated by SQLAlchemy
    sa_exc.InterfaceError,  # "connection is closed"
    sa_exc.DisconnectionError,
    sa_exc.TimeoutError,  # pool checkout time-out (QueuePool)
    asyncpg.PostgresConnectionError,  # ConnectionDoesNotExist, ConnectionFailure, rejections
    asyncpg.exceptions.OperatorInterventionError,  # admin shutdown, cannot connect now, cancel
    asyncpg.exceptions.InsufficientResourcesError,  # too many connections, out of memory/disk
    asyncpg.InterfaceError,  # client side: "connection is closed", "another operation"
    asyncpg.exceptions.InternalClientError,  # protocol state lost with the connection
    ConnectionError,
    TimeoutError,  # connect timeout, command_timeout (asyncio.TimeoutError is TimeoutError)
)

_NOT_TRANSIENT: tuple[type[BaseException], ...] = (
    # asyncpg.DataError derives from InterfaceError but means a bad parameter: a bug, not an outage.
    asyncpg.exceptions.DataError,
    asyncpg.exceptions.ClientConfigurationError,
)

_MAX_DEPTH = 8  # bound the walk along causes (cycles are possible in __context__)


def _chain(exc: BaseException) -> list[BaseException]:
    seen: list[BaseException] = []
    todo: list[BaseException | None] = [exc]
    while todo and len(seen) < _MAX_DEPTH:
        e = todo.pop(0)
        if e is None or any(e is s for s in seen):
            continue
        seen.append(e)
        todo.extend([getattr(e, "orig", None), e.__cause__, e.__context__])
    return seen


def is_unmigrated(exc: BaseException) -> bool:
    """A table or column the code expects is missing: the schema is behind the code."""
    return any(
        isinstance(e, asyncpg.UndefinedTableError | asyncpg.UndefinedColumnError)
        for e in _chain(exc)
    )


def is_unavailable(exc: BaseException) -> bool:
    """True when `exc` (or what caused it) means the database cannot serve now."""
    for e in _chain(exc):
        if isinstance(e, _NOT_TRANSIENT):
            return False
        if isinstance(e, _TRANSIENT):
            return True
        if isinstance(e, sa_exc.DBAPIError) and e.connection_invalidated:
            return True
        if isinstance(e, OSError) and not isinstance(e, FileNotFoundError | PermissionError):
            # A socket error (EHOSTUNREACH, ENETUNREACH, ...) rather than a file problem.
            return e.errno is not None and e.filename is None
    return False


class LogThrottle:
    """At most one log line per `every` seconds; counts what it held back."""

    def __init__(self, every: float = 1.0) -> None:
        self.every = every
        self._last = -math.inf
        self._held = 0

    def due(self) -> bool:
        now = time.monotonic()
        if now - self._last >= self.every:
            self._last = now
            return True
        self._held += 1
        return False

    def take(self) -> int:
        held, self._held = self._held, 0
        return held


outage_log = LogThrottle()


def unavailable(exc: BaseException) -> Unavailable:
    """The problem a face returns for a database failure; names the kind, never the message."""
    return Unavailable(f"the database is unavailable ({type(exc).__name__}); retry later")


__all__ = ["DATABASE_ERRORS", "LogThrottle", "is_unavailable", "outage_log", "unavailable"]
