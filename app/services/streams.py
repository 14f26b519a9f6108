"""Bulk stream slots: at most N streams at once per client, across every process of a deployment.

A slot is a PostgreSQL session advisory lock, (SLOT_LOCK, hash(client id, slot number)), held
on a connection of its own for the life of the stream. Every worker and every process of the
deployment asks the same server, so the limit holds whatever `--workers` is; a process that
dies loses its connections, and with them its slots, at once. Releasing is unlocking and
closing that connection, in a `finally` of the stream whatever ends it (the last line, an
error, the client going away, a cancellation at shutdown).

Without the database (the connection cannot be opened), slots are counted in this process
only: the limit then holds per process, and a warning says so.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections import Counter

import asyncpg

from app.errors import TooManyStreams
from app.repositories import streams as repo

log = logging.getLogger("tepat.streams")

RETRY_AFTER = 10  # seconds: a slot frees when a stream ends, which nothing here can predict
_CLOSE_TIMEOUT = 2.0


class ClientGone(Exception):
    """The client closed the connection: nobody is left to answer, nothing to report as a fault."""


def slot_key(client_id: str, slot: int) -> int:
    """The advisory lock key of a client's slot: a signed 32-bit hash (collisions only refuse)."""
    digest = hashlib.blake2b(f"{client_id}\x00{slot}".encode(), digest_size=4).digest()
    return int.from_bytes(digest, "big", signed=True)


class Slot:
    """One held stream slot; `release` is idempotent and safe under cancellation."""

    __slots__ = ("_conn", "_owner", "client_id", "released")

    def __init__(self, owner: StreamSlots, client_id: str, conn: asyncpg.Connection | None) -> None:
        self._owner = owner
        self._conn = conn
        self.client_id = client_id
        self.released = False

    async def release(self) -> None:
        if self.released:
            return
        self.released = True
        self._owner._forget(self.client_id)
        conn, self._conn = self._conn, None
        if conn is None:
            return
        try:
            async with asyncio.timeout(_CLOSE_TIMEOUT):
                await repo.release_all(conn)
                await conn.close()
        except BaseException:
            # Cancelled (shutdown) or the server is gone: closing the socket ends the session,
            # and the server drops its locks with it.
            conn.terminate()
            raise


class StreamSlots:
    """The slots of one process; `acquire` per stream, `Slot.release` when it ends."""

    def __init__(
        self,
        per_client: int,
        *,
        dsn: str | None = None,
        connect_timeout: float = 5.0,
        server_settings: dict[str, str] | None = None,
    ) -> None:
        self.per_client = per_client
        self.dsn = dsn
        self.connect_timeout = connect_timeout
        self.server_settings = {"application_name": "tepat-streams", **(server_settings or {})}
        self.held: Counter[str] = Counter()  # slots this process holds, per client

    def _forget(self, client_id: str) -> None:
        self.held[client_id] -= 1
        if self.held[client_id] <= 0:
            del self.held[client_id]

    def _refuse(self, client_id: str) -> TooManyStreams:
        return TooManyStreams(
            f"at most {self.per_client} bulk streams at once per client; "
            f"retry in {RETRY_AFTER} s, or when one of this client's streams has ended",
            retry_after=RETRY_AFTER,
        )

    async def acquire(self, client_id: str) -> Slot:
        """A free slot of this client's, or TooManyStreams (429)."""
        if self.per_client <= 0:
            self.held[client_id] += 1
            return Slot(self, client_id, None)
        conn = await self._connect()
        if conn is not None:
            try:
                for n in range(self.per_client):
                    if await repo.try_slot(conn, slot_key(client_id, n)):
                        self.held[client_id] += 1
                        return Slot(self, client_id, conn)
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError) as e:
                log.warning(
                    "stream slots unavailable (%s); counting in this process", type(e).__name__
                )
                conn.terminate()
            except BaseException:
                conn.terminate()
                raise
            else:
                conn.terminate()  # it holds nothing: no need for a polite goodbye
                raise self._refuse(client_id)
        # Without the database: this process's count only.
        if self.held[client_id] >= self.per_client:
            raise self._refuse(client_id)
        self.held[client_id] += 1
        return Slot(self, client_id, None)

    async def _connect(self) -> asyncpg.Connection | None:
        if self.dsn is None:
            return None
        try:
            conn: asyncpg.Connection = await asyncpg.connect(
                self.dsn,
                timeout=self.connect_timeout,
                command_timeout=self.connect_timeout,  # a frozen server cannot hold a request
                server_settings=self.server_settings,
            )
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError) as e:
            log.warning("stream slots unavailable (%s); counting in this process", type(e).__name__)
            return None
        return conn


__all__ = ["RETRY_AFTER", "ClientGone", "Slot", "StreamSlots", "slot_key"]
