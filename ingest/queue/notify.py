"""New work announced with NOTIFY, and a LISTEN that outlives a database restart."""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable

import structlog
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from ingest.db.driver import Db, driver_connection

log = structlog.get_logger("ingest.queue")


def notify_channel(schema: str) -> str:
    return f"hr_ingest_{schema}"


async def _channel(db: Db) -> str:
    # One channel per schema: workers of another schema in the same database are not woken.
    return notify_channel(str(await db.fetchval("SELECT current_schema()")))


async def notify(db: Db) -> None:
    """Wake the workers listening (sent when the transaction commits). One round trip: the
    channel is notify_channel(current_schema()), computed by the server."""
    await db.execute("SELECT pg_notify('hr_ingest_' || current_schema(), '')")


async def listen(
    conn: AsyncConnection, on_work: Callable[[], None]
) -> Callable[[], Awaitable[None]]:
    """LISTEN for new work on `conn` (held for the worker's life). Returns an async
    function that stops listening before the connection goes back to the pool."""
    db = await driver_connection(conn)
    channel = await _channel(db)

    def callback(*_: object) -> None:
        on_work()

    await db.add_listener(channel, callback)

    async def stop() -> None:
        await db.remove_listener(channel, callback)

    return stop


class Listener:
    """LISTEN on a connection of its own, opened again after the database restarts (until
    then, and if LISTEN fails, the worker's slow poll still finds work)."""

    def __init__(self, engine: AsyncEngine, on_work: Callable[[], None]) -> None:
        self._engine, self._on_work = engine, on_work
        self._conn: AsyncConnection | None = None
        self._stop: Callable[[], Awaitable[None]] | None = None

    async def ensure(self, *, startup: bool = False) -> None:
        """Listen if not listening. At startup a database that cannot be reached is an error
        (the worker exits and says so); later it is an outage to wait out."""
        if self._conn is not None and not self._conn.closed and not self._conn.invalidated:
            db = await driver_connection(self._conn)
            if not db.is_closed():
                return
        await self.close()
        try:
            self._conn = await self._engine.connect()
            self._stop = await listen(self._conn, self._on_work)
        except Exception as exc:
            await self.close()
            if startup:
                raise
            log.warning("LISTEN unavailable, polling only for now", error=str(exc))

    async def close(self) -> None:
        stop, conn = self._stop, self._conn
        self._stop = self._conn = None
        with contextlib.suppress(Exception):  # a dead connection has nothing left to undo
            if stop is not None:
                await stop()
        with contextlib.suppress(Exception):
            if conn is not None:
                await conn.close()
