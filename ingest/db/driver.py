"""The database boundary: the driver's connection as a typed interface, and the one place that
decides which errors mean "the database is unavailable" (as procrastinate's connector does).

Statements are plain SQL with `$n` parameters sent to asyncpg (COPY and array parameters need
it); SQLAlchemy owns the schema, the pool and the transaction. Callers never look at asyncpg's
or SQLAlchemy's exception types: a fault of the connection arrives as `DatabaseUnavailable`.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator, Sequence
from typing import Protocol, TypeVar, cast

import asyncpg
import structlog
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

log = structlog.get_logger("ingest.db")
T = TypeVar("T")


class Record(Protocol):
    """A result row: by column name or position. Values are what the column's type decodes
    to; each statement's caller states which (`cast`), next to the SQL that says so."""

    def __getitem__(self, key: str | int, /) -> object: ...

    def __iter__(self) -> Iterator[object]: ...

    def keys(self) -> Iterator[str]: ...


class Db(Protocol):
    """The part of asyncpg's connection the statements use."""

    async def execute(self, query: str, *args: object) -> str: ...

    async def fetch(self, query: str, *args: object) -> list[Record]: ...

    async def fetchrow(self, query: str, *args: object) -> Record | None: ...

    async def fetchval(self, query: str, *args: object) -> object: ...

    async def copy_records_to_table(
        self,
        table_name: str,
        *,
        records: Iterable[Sequence[object]],
        columns: Sequence[str] | None = None,
    ) -> str: ...

    def is_in_transaction(self) -> bool: ...

    def is_closed(self) -> bool: ...

    async def add_listener(self, channel: str, callback: Callable[..., None]) -> None: ...

    async def remove_listener(self, channel: str, callback: Callable[..., None]) -> None: ...


class DatabaseUnavailable(Exception):
    """The database could not be reached, or dropped the connection (a restart, the network):
    the same work succeeds later. Not the fault of the rows being written."""


async def driver_connection(conn: AsyncConnection) -> Db:
    """The asyncpg connection under a SQLAlchemy one.

    It shares the SQLAlchemy connection's transaction: statements on it commit or roll back
    with `engine.begin()`'s block.
    """
    raw = await conn.get_raw_connection()
    db = cast(Db, raw.driver_connection)
    if conn.in_transaction() and not db.is_in_transaction():
        # SQLAlchemy begins lazily, on its first statement; without this, statements sent
        # straight to asyncpg would each commit on their own.
        await conn.execute(text("SELECT 1"))
    return db


def rowcount(status: str) -> int:
    """The row count of a command status such as `UPDATE 3`."""
    return int(status.rsplit(" ", 1)[-1])


_UNAVAILABLE = (
    DatabaseUnavailable,
    OperationalError,
    InterfaceError,
    OSError,  # ConnectionError and TimeoutError too
    asyncpg.exceptions.ConnectionDoesNotExistError,
    asyncpg.exceptions.CannotConnectNowError,
    asyncpg.exceptions.InterfaceError,
    asyncpg.exceptions.AdminShutdownError,
)


def _unavailable(exc: BaseException) -> bool:
    # SQLAlchemy wraps the driver's error (a plain DBAPIError for "the database system is
    # shutting down"): look down the chain of causes too.
    seen: BaseException | None = exc
    for _ in range(8):
        if seen is None:
            return False
        if isinstance(seen, _UNAVAILABLE):
            return True
        if isinstance(seen, DBAPIError) and seen.connection_invalidated:
            return True
        seen = seen.__cause__
    return False


@contextlib.contextmanager
def unavailable_as_error() -> Iterator[None]:
    """Raise a connection fault inside the block as `DatabaseUnavailable`; others unchanged."""
    try:
        yield
    except DatabaseUnavailable:
        raise
    except Exception as exc:
        if _unavailable(exc):
            raise DatabaseUnavailable(f"{type(exc).__name__}: {exc}") from exc
        raise


@contextlib.asynccontextmanager
async def transaction(engine: AsyncEngine) -> AsyncIterator[AsyncConnection]:
    """`engine.begin()`, with connection faults raised as `DatabaseUnavailable`."""
    with unavailable_as_error():
        async with engine.begin() as conn:
            yield conn


@contextlib.asynccontextmanager
async def connection(engine: AsyncEngine) -> AsyncIterator[AsyncConnection]:
    """`engine.connect()`, with connection faults raised as `DatabaseUnavailable`."""
    with unavailable_as_error():
        async with engine.connect() as conn:
            yield conn


def values_refused(exc: BaseException) -> bool:
    """Whether PostgreSQL refused the values themselves (a data exception, class 22, or a value
    nested deeper than its stack allows, 54001): the same rows fail the same way every time."""
    seen: BaseException | None = exc
    for _ in range(5):
        if seen is None:
            break
        state = getattr(seen, "sqlstate", None)
        if isinstance(state, str):
            return state.startswith("22") or state == "54001"
        seen = seen.__cause__
    return False


async def wait_out_unavailable(
    action: Callable[[], Awaitable[T]],
    *,
    attempts: int = 0,
    stopping: Callable[[], bool] = lambda: False,
) -> T:
    """Run `action`, again and again while the database is unavailable (0 attempts: until it
    answers, or three tries once `stopping()`). Other errors propagate at once."""
    delay, n = 0.5, 0
    while True:
        try:
            return await action()
        except DatabaseUnavailable as exc:
            n += 1
            if (attempts and n >= attempts) or (stopping() and n >= 3):
                raise
            log.warning("database unreachable; retrying", error=str(exc), in_s=delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 10.0)
