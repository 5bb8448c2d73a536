"""Every SQL statement of discovery: listed runs into `runs`, the sub-windows `discover` has
finished (`discovery_windows`), the watermarks of `sync_state`, the sync lock, and the runs
`sync` enqueues again."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import cast

from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from ingest import queue
from ingest.db import tables
from ingest.db.bulk import Target
from ingest.db.driver import driver_connection
from ingest.discovery.listing import ListedIssue, ListedRun, Slice
from ingest.logs import scrub

NON_TERMINAL = ("scheduled", "running")
SYNC_STATE = "sync"  # the `sync_state` row of sync's watermark
# Two int4 keys for pg_try_advisory_lock: this constant, and a hash of the schema name, so
# syncs of different schemas in one database do not block each other.
_SYNC_LOCK_CLASS = 0x68725359  # "hrSY"


# -- listed runs -----------------------------------------------------------------------------

_LISTED = Target.of(tables.runs, ListedRun)
# A fetched body knows more than a listing: once a run has been fetched, the listing only adds
# `data` and a completed_at the fetch did not have (a run does not un-complete).
_LISTING_DEFERS_TO_FETCH = ", ".join(
    f'"{c}" = CASE WHEN r.fetched_at IS NULL THEN excluded."{c}" ELSE r."{c}" END'
    for c in _LISTED.columns
    if c not in ("id", "completed_at", "data")
)


def _upsert_listed(known_only: bool) -> str:
    """The upsert of listed runs. `known_only`: runs not stored yet are left out, and only
    fetched runs that changed upstream are returned (change capture's relisting)."""
    insert_from = "listed WHERE id IN (SELECT id FROM prior)" if known_only else "listed"
    # A listed status, annotation or completion time other than the fetched one: the run
    # changed upstream since (`data` needs no fetch: the listing is its only source).
    changed = (
        "(p.status IS DISTINCT FROM l.status OR p.annotation IS DISTINCT FROM l.annotation"
        " OR (l.completed_at IS NOT NULL AND p.completed_at IS DISTINCT FROM l.completed_at))"
    )
    needs_fetch = (
        f"p.fetched_at IS NOT NULL AND {changed}"
        if known_only
        else f"p.id IS NULL OR p.fetched_at IS NULL OR {changed}"
    )
    return f"""
WITH listed AS (
    {_LISTED.unnest_select()} AS l({_LISTED.names})
),
prior AS (
    SELECT r.id, r.status, r.annotation, r.completed_at, r.fetched_at
    FROM runs r JOIN listed USING (id)
),
upserted AS (
    INSERT INTO runs AS r ({_LISTED.names}, listed_at)
    SELECT *, now() FROM {insert_from}
    ON CONFLICT (id) DO UPDATE SET
        {_LISTING_DEFERS_TO_FETCH},
        -- once a fetch has its own completed_at, that one wins
        completed_at = CASE WHEN r.fetched_at IS NULL
                            THEN coalesce(excluded.completed_at, r.completed_at)
                            ELSE coalesce(r.completed_at, excluded.completed_at) END,
        data = coalesce(excluded.data, r.data),
        listed_at = excluded.listed_at,
        updated_at = now()
)
-- `prior` reads the rows as they were before the upsert (one snapshot for the statement)
SELECT l.id FROM listed l LEFT JOIN prior p USING (id) WHERE {needs_fetch}
"""


_UPSERT_LISTED = _upsert_listed(known_only=False)
_UPDATE_RELISTED = _upsert_listed(known_only=True)


async def store_listed(
    conn: AsyncConnection, runs: Sequence[ListedRun], *, known_only: bool = False
) -> list[uuid.UUID]:
    """Upsert listed runs into `runs` (in the caller's transaction); returns the ids that
    need a fetch: unknown before, never fetched, or listed with a status, annotation or
    completion time other than the stored one. `known_only`: only update runs stored
    already, and return only fetched ones that changed."""
    if not runs:
        return []
    db = await driver_connection(conn)
    statement = _UPDATE_RELISTED if known_only else _UPSERT_LISTED
    rows = await db.fetch(statement, *_LISTED.arrays(runs))
    return [cast(uuid.UUID, r["id"]) for r in rows]


# -- issues changed upstream -------------------------------------------------------------------

_CHANGED_ISSUES = """
WITH upstream AS (
    SELECT * FROM unnest($2::uuid[], $3::uuid[], $4::text[], $5::timestamptz[])
        AS u(id, run_id, status, updated_at)
)
-- added, moved to another run, or changed (status, or anything that moves updated_at)
SELECT u.run_id FROM upstream u
JOIN runs r ON r.id = u.run_id AND r.fetched_at IS NOT NULL
LEFT JOIN run_issues i ON i.id = u.id
WHERE i.id IS NULL OR i.run_id IS DISTINCT FROM u.run_id
   OR i.status IS DISTINCT FROM u.status OR i.updated_at IS DISTINCT FROM u.updated_at
UNION
-- removed: stored for a run of this use case, listed no more
SELECT i.run_id FROM run_issues i
JOIN runs r ON r.id = i.run_id AND r.use_case_id = $1
WHERE NOT EXISTS (SELECT 1 FROM upstream u WHERE u.id = i.id)
"""


async def runs_with_changed_issues(
    conn: AsyncConnection, use_case_id: uuid.UUID, issues: Sequence[ListedIssue]
) -> list[uuid.UUID]:
    """The stored runs of `use_case_id` whose issues differ from `issues`, all of the use
    case's issues as `GET /issues` lists them now: one added, changed, moved or removed."""
    db = await driver_connection(conn)
    columns = [
        [i.id for i in issues],
        [i.run_id for i in issues],
        [i.status for i in issues],
        [i.updated_at for i in issues],
    ]
    rows = await db.fetch(_CHANGED_ISSUES, use_case_id, *columns)
    return [cast(uuid.UUID, r["run_id"]) for r in rows]


async def known_use_cases(engine: AsyncEngine) -> list[uuid.UUID]:
    """The use cases whose runs are stored (from the catalog, or the runs themselves)."""
    async with engine.connect() as conn:
        db = await driver_connection(conn)
        rows = await db.fetch(
            "SELECT id FROM use_cases UNION"
            " SELECT DISTINCT use_case_id FROM runs"
            " WHERE use_case_id IS NOT NULL AND NOT EXISTS (SELECT 1 FROM use_cases)"
        )
    return sorted(cast(uuid.UUID, r["id"]) for r in rows)


# -- finished sub-windows --------------------------------------------------------------------


async def finished_windows(
    engine: AsyncEngine, scope: str, start: datetime, end: datetime
) -> list[tuple[datetime, datetime]]:
    """The sub-windows earlier discovers under `scope` finished that overlap [start, end),
    oldest first."""
    async with engine.connect() as conn:
        db = await driver_connection(conn)
        rows = await db.fetch(
            "SELECT window_start, window_end FROM discovery_windows"
            " WHERE scope = $1 AND window_end > $2 AND window_start < $3 ORDER BY window_start",
            scope,
            start,
            end,
        )
    return [cast(tuple[datetime, datetime], tuple(r)) for r in rows]


async def record_window(conn: AsyncConnection, scope: str, piece: Slice) -> None:
    """Record `piece` as finished under `scope`, in the caller's transaction (with its runs)."""
    db = await driver_connection(conn)
    await db.execute(
        """
        INSERT INTO discovery_windows (scope, window_start, window_end, runs_found)
        VALUES ($1, $2, $3, $4)
        ON CONFLICT (scope, window_start) DO UPDATE SET
            window_end = greatest(discovery_windows.window_end, excluded.window_end),
            runs_found = excluded.runs_found, finished_at = now()
        """,
        scope,
        piece.start,
        piece.end,
        len(piece.runs),
    )


# -- watermarks ------------------------------------------------------------------------------

_SET_WATERMARK = """
INSERT INTO sync_state (name, watermark) VALUES ($1, $2)
ON CONFLICT (name) DO UPDATE SET watermark = excluded.watermark, updated_at = now(),
    failures = 0
"""
_RECORD_FAILURE = """
INSERT INTO sync_state (name, failures, failed_at, last_error) VALUES ($1, 1, now(), $2)
ON CONFLICT (name) DO UPDATE SET failures = sync_state.failures + 1, failed_at = now(),
    last_error = excluded.last_error, updated_at = now()
"""


async def read_watermark(engine: AsyncEngine, name: str) -> datetime | None:
    """The `sync_state` row `name` (sync's and the catalog's parts each keep one)."""
    async with engine.connect() as conn:
        db = await driver_connection(conn)
        watermark = await db.fetchval("SELECT watermark FROM sync_state WHERE name = $1", name)
    return cast(datetime | None, watermark)


async def write_watermark(conn: AsyncConnection, name: str, at: datetime) -> None:
    """Move `name` to `at`, in the caller's transaction (so it moves only with what it
    covers)."""
    db = await driver_connection(conn)
    await db.execute(_SET_WATERMARK, name, at)


async def record_failure(engine: AsyncEngine, name: str, error: str) -> None:
    """One more failure of `name` since its watermark last moved (a success resets the
    count); `error` is kept, one line."""
    async with engine.begin() as conn:
        db = await driver_connection(conn)
        line = scrub(error.splitlines()[0])[:500] if error else ""
        await db.execute(_RECORD_FAILURE, name, line)


@dataclass(frozen=True, slots=True)
class Freshness:
    """How current the tables are: what `status`, the status page and the metrics show."""

    read_at: datetime  # the database's clock when these were read
    last_sync: datetime | None  # the watermark of the last successful sync
    sync_failures: int  # failed syncs since then
    sync_failed_at: datetime | None
    sync_error: str | None  # the last failure's, one line
    oldest_non_terminal: datetime | None  # start of the oldest run still scheduled/running

    def age_s(self, t: datetime | None) -> float | None:
        """Seconds from `t` to when these were read (both the database's clock)."""
        return None if t is None else max(0.0, (self.read_at - t).total_seconds())


_FRESHNESS = """
SELECT now(), s.watermark, coalesce(s.failures, 0), s.failed_at, s.last_error,
    (SELECT min(coalesce("timestamp", listed_at)) FROM runs WHERE status = ANY($2::text[]))
FROM (SELECT 1) AS one LEFT JOIN sync_state AS s ON s.name = $1
"""


async def read_freshness(conn: AsyncConnection, sync_name: str) -> Freshness:
    db = await driver_connection(conn)
    row = await db.fetchrow(_FRESHNESS, sync_name, list(NON_TERMINAL))
    assert row is not None  # one row, whatever sync_state holds
    fields = tuple[datetime, datetime | None, int, datetime | None, str | None, datetime | None]
    return Freshness(*cast(fields, tuple(row)))


# -- sync: the lock and the runs enqueued again ----------------------------------------------


@contextlib.asynccontextmanager
async def sync_lock(engine: AsyncEngine) -> AsyncIterator[bool]:
    """Session-level advisory lock on a connection of its own, held for the block: yields
    False at once if another sync holds it. A killed process's lock goes with its session."""
    async with engine.connect() as conn:
        db = await driver_connection(conn)
        held = bool(
            await db.fetchval(
                "SELECT pg_try_advisory_lock($1, hashtext(current_schema()))", _SYNC_LOCK_CLASS
            )
        )
        try:
            yield held
        finally:
            if held:
                try:
                    await db.fetchval(
                        "SELECT pg_advisory_unlock($1, hashtext(current_schema()))",
                        _SYNC_LOCK_CLASS,
                    )
                except Exception:
                    # Never hand a connection that may still hold the lock back to the pool.
                    await conn.invalidate()
                    raise


async def requeue_non_terminal(engine: AsyncEngine, days: float) -> int:
    """Enqueue runs still not terminal that started within `days`; returns how many were
    added or refreshed in the queue."""
    return await _requeue(
        engine,
        "SELECT id FROM runs WHERE status = ANY($1::text[])"
        ' AND coalesce("timestamp", listed_at) > now() - make_interval(secs => $2)',
        list(NON_TERMINAL),
        days * 86400.0,
    )


async def requeue_finished(engine: AsyncEngine, days: float, age: timedelta) -> int:
    """Enqueue terminal runs finished within `days` and last fetched longer than `age` ago
    (their issues keep changing after the run ends)."""
    return await _requeue(
        engine,
        "SELECT id FROM runs WHERE NOT status = ANY($1::text[])"
        ' AND coalesce(completed_at, "timestamp")'
        "     > now() - make_interval(secs => $2)"
        " AND fetched_at < now() - make_interval(secs => $3)",
        list(NON_TERMINAL),
        days * 86400.0,
        age.total_seconds(),
    )


async def _requeue(engine: AsyncEngine, sql: str, *args: object) -> int:
    async with engine.begin() as conn:
        db = await driver_connection(conn)
        ids = [cast(uuid.UUID, r["id"]) for r in await db.fetch(sql, *args)]
        result = await queue.enqueue(conn, ids, source="sync")
    return result.added + result.refreshed
