"""Putting runs in line: new IDs in bulk, and dead runs given another set of attempts."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import cast

from sqlalchemy.ext.asyncio import AsyncConnection

from ingest.db.driver import driver_connection
from ingest.queue.notify import notify


@dataclass(frozen=True, slots=True)
class EnqueueResult:
    added: int
    refreshed: int  # done (or polling) runs scheduled for a fresh fetch now
    unchanged: int  # already pending, running (marked for one more fetch), or dead

    def __add__(self, other: EnqueueResult) -> EnqueueResult:
        """The tally of two enqueues (of several chunks, or several sources)."""
        return EnqueueResult(
            self.added + other.added,
            self.refreshed + other.refreshed,
            self.unchanged + other.unchanged,
        )


# Up to this many ids go as one array parameter (a webhook's call: one statement); more are
# COPYed into a temporary table first (a backfill's: 100,000 at a time).
SMALL = 1000

_UPSERT = """
WITH upserted AS (
    INSERT INTO ingest_queue AS q (run_id, source, priority)
    SELECT DISTINCT run_id, $1::text, $2::smallint FROM {ids}
    ON CONFLICT (run_id) DO UPDATE SET
        state = CASE WHEN q.state = 'running' THEN 'running' ELSE 'pending' END,
        refresh_requested = q.state = 'running',
        available_at = CASE WHEN q.state = 'running' THEN q.available_at ELSE now() END,
        attempts = CASE WHEN q.state = 'done' THEN 0 ELSE q.attempts END,
        awaiting_terminal = false,
        priority = greatest(q.priority, excluded.priority),
        source = excluded.source,
        polls = CASE WHEN q.state = 'done' THEN 0 ELSE q.polls END,
        updated_at = now()
    WHERE q.state IN ('done', 'running')
       OR (q.state = 'pending' AND (q.awaiting_terminal OR excluded.priority > q.priority))
    RETURNING (xmax = 0) AS inserted
)
SELECT count(*) FILTER (WHERE inserted) AS added,
       count(*) FILTER (WHERE NOT inserted) AS touched,
       (SELECT count(DISTINCT run_id) FROM {ids}) AS total
FROM upserted
"""


async def enqueue(
    conn: AsyncConnection,
    run_ids: Sequence[uuid.UUID],
    *,
    source: str = "manual",
    priority: int = 0,
) -> EnqueueResult:
    """Add run IDs, idempotently, in one upsert (past SMALL ids, COPYed in first).

    A pending run keeps its place, unless this enqueue's priority is higher (a webhook's):
    then it moves ahead, due now; a done run is scheduled for a refresh; a running run is
    fetched once more after its current attempt; a dead run stays dead (see retry-dead).
    `source` is what enqueued a run last (among the rows this changes).
    """
    if not run_ids:
        return EnqueueResult(0, 0, 0)
    db = await driver_connection(conn)
    if len(run_ids) <= SMALL:
        ids, args = "unnest($3::uuid[]) AS u(run_id)", [source, priority, list(run_ids)]
    else:
        await db.execute(
            "CREATE TEMP TABLE IF NOT EXISTS _enqueue (run_id uuid) ON COMMIT DELETE ROWS"
        )
        await db.copy_records_to_table("_enqueue", records=[(r,) for r in run_ids])
        ids, args = "_enqueue", [source, priority]
    row = await db.fetchrow(_UPSERT.format(ids=ids), *args)
    await notify(db)
    assert row is not None  # an aggregate without GROUP BY returns one row
    added, touched, total = (cast(int, row[k]) for k in ("added", "touched", "total"))
    return EnqueueResult(added=added, refreshed=touched, unchanged=total - added - touched)


async def retry_dead(
    conn: AsyncConnection,
    run_ids: Sequence[uuid.UUID] | None = None,
    *,
    kind: str | None = None,
    since: datetime | None = None,
    dry_run: bool = False,
) -> dict[str, int]:
    """Move dead runs back to pending with a fresh set of attempts: all, or those of these
    ids, of this failure kind, dead-lettered since then (every filter given must match).
    Returns how many by failure kind; with `dry_run`, only counts them."""
    db = await driver_connection(conn)
    chosen = """
        SELECT q.run_id, coalesce(d.kind, 'unknown') AS kind FROM ingest_queue q
        LEFT JOIN dead_letters d USING (run_id)
        WHERE q.state = 'dead' AND ($1::uuid[] IS NULL OR q.run_id = ANY($1::uuid[]))
          AND ($2::text IS NULL OR d.kind = $2) AND ($3::timestamptz IS NULL OR d.created_at >= $3)
    """
    args = (None if run_ids is None else list(run_ids), kind, since)
    if dry_run:
        rows = await db.fetch(f"SELECT kind, count(*) FROM ({chosen}) AS c GROUP BY kind", *args)
        return {cast(str, r[0]): cast(int, r[1]) for r in rows}
    rows = await db.fetch(
        f"""
        WITH chosen AS ({chosen}),
        moved AS (
            UPDATE ingest_queue q SET state = 'pending', attempts = 0, available_at = now(),
                finished_at = NULL, updated_at = now()
            FROM chosen WHERE q.run_id = chosen.run_id AND q.state = 'dead'
            RETURNING q.run_id
        ),
        forgotten AS (DELETE FROM dead_letters WHERE run_id IN (SELECT run_id FROM moved))
        SELECT chosen.kind, count(*) FROM chosen JOIN moved USING (run_id) GROUP BY chosen.kind
        """,
        *args,
    )
    by_kind = {cast(str, r[0]): cast(int, r[1]) for r in rows}
    if by_kind:
        await notify(db)
    return by_kind
