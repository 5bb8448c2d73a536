"""What operators read of the queue: counts by state, throughput, dead letters by kind.

The status page, `/metrics`, `status` and the demo's summary all read through these, so a
number means the same wherever it is shown.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import cast

from sqlalchemy.ext.asyncio import AsyncConnection

from ingest.db.driver import driver_connection
from ingest.db.tables import QUEUE_STATES
from ingest.queue.work import POLLING


@dataclass(frozen=True, slots=True)
class QueueCounts:
    states: dict[str, int]  # every state, 0 when empty
    polling: int  # pending only to poll runs still scheduled/running upstream
    oldest_due_age_s: float | None  # None: nothing pending is due

    @property
    def outstanding(self) -> int:
        """What `outstanding()` counts (work.OUTSTANDING), from these counts: running, and
        pending but for polls."""
        return self.states["running"] + self.states["pending"] - self.polling


@dataclass(frozen=True, slots=True)
class DeadLetter:
    run_id: str
    kind: str  # a FailureKind value, as stored (an older worker may know kinds this one does not)
    reason: str
    http_status: int | None
    attempts: int
    at: datetime


async def counts(conn: AsyncConnection) -> QueueCounts:
    db = await driver_connection(conn)
    rows = await db.fetch(
        f"""
        SELECT state, count(*), count(*) FILTER (WHERE {POLLING}),
            extract(epoch FROM now() - min(available_at)
                FILTER (WHERE state = 'pending' AND available_at <= now()))::float8
        FROM ingest_queue GROUP BY state
        """
    )
    states = dict.fromkeys(QUEUE_STATES, 0)
    polling, oldest = 0, None
    for state, n, polls, age in (cast(tuple[str, int, int, float | None], tuple(r)) for r in rows):
        states[state] = n
        polling += polls
        oldest = age if age is not None else oldest
    return QueueCounts(states, polling, oldest)


async def finished_per_minute(conn: AsyncConnection, minutes: int) -> tuple[list[int], list[int]]:
    """Runs that ended done, and dead, per minute; index = minutes ago (0 = the last 60 s, so
    the buckets add up to `done_within`'s windows)."""
    db = await driver_connection(conn)
    rows = await db.fetch(
        """
        SELECT floor(extract(epoch FROM now() - finished_at) / 60)::int AS ago, state, count(*)
        FROM ingest_queue
        WHERE finished_at > now() - make_interval(mins => $1) AND state IN ('done', 'dead')
        GROUP BY ago, state
        """,
        minutes,
    )
    done, dead = [0] * minutes, [0] * minutes
    for ago, state, n in (cast(tuple[int, str, int], tuple(r)) for r in rows):
        if 0 <= ago < minutes:
            (done if state == "done" else dead)[ago] = n
    return done, dead


async def done_within(conn: AsyncConnection, windows_min: Sequence[int]) -> dict[int, int]:
    """Runs finished done in each of the last `windows_min` minutes."""
    db = await driver_connection(conn)
    rows = await db.fetch(
        """
        SELECT w.m, count(q.run_id) FROM unnest($1::int[]) AS w(m)
        LEFT JOIN ingest_queue q
            ON q.state = 'done' AND q.finished_at > now() - make_interval(mins => w.m)
        GROUP BY w.m
        """,
        list(windows_min),
    )
    return dict(cast(tuple[int, int], tuple(r)) for r in rows)


async def latest_dead(conn: AsyncConnection, limit: int) -> list[DeadLetter]:
    """The latest dead letters of runs dead now (retry-dead deletes a run's dead letter, but
    the run may be dead-lettered again later)."""
    db = await driver_connection(conn)
    rows = await db.fetch(
        """
        SELECT d.run_id, d.kind, d.reason, d.http_status, d.attempts, d.created_at
        FROM dead_letters d JOIN ingest_queue q USING (run_id)
        WHERE q.state = 'dead'
        ORDER BY d.created_at DESC, d.run_id LIMIT $1
        """,
        limit,
    )
    fields = tuple[uuid.UUID, str, str, int | None, int, datetime]
    return [
        DeadLetter(str(run_id), kind, reason, status, attempts, at)
        for run_id, kind, reason, status, attempts, at in (cast(fields, tuple(r)) for r in rows)
    ]


async def dead_by_kind(conn: AsyncConnection) -> list[tuple[str, int]]:
    """Every dead run by failure kind (as stored), most first."""
    db = await driver_connection(conn)
    rows = await db.fetch(
        """
        SELECT d.kind, count(*) FROM dead_letters d JOIN ingest_queue q USING (run_id)
        WHERE q.state = 'dead' GROUP BY d.kind ORDER BY count(*) DESC, d.kind
        """
    )
    return [cast(tuple[str, int], tuple(r)) for r in rows]


@dataclass(frozen=True, slots=True)
class Freshness:
    """How long after their completed_at the runs that landed recently were in the tables."""

    source: str  # what enqueued them: webhook, sync, backfill, manual
    runs: int
    p50_s: float
    p95_s: float


async def freshness(conn: AsyncConnection, within_s: float = 3600.0) -> list[Freshness]:
    """p50 and p95 of completed_at -> stored, by source, over the runs that landed (were
    first stored finished) in the last `within_s` seconds; a source without one is left out."""
    db = await driver_connection(conn)
    rows = await db.fetch(
        """
        SELECT source, count(*),
            percentile_cont(0.5) WITHIN GROUP (ORDER BY freshness_s),
            percentile_cont(0.95) WITHIN GROUP (ORDER BY freshness_s)
        FROM ingest_queue
        WHERE landed_at > now() - make_interval(secs => $1) AND freshness_s IS NOT NULL
        GROUP BY source ORDER BY source
        """,
        within_s,
    )
    return [Freshness(*cast(tuple[str, int, float, float], tuple(r))) for r in rows]


async def finished_within(conn: AsyncConnection, seconds: float) -> int:
    """Runs that ended done or dead in the last `seconds` (index on finished_at)."""
    db = await driver_connection(conn)
    return cast(
        int,
        await db.fetchval(
            "SELECT count(*) FROM ingest_queue"
            " WHERE finished_at > now() - make_interval(secs => $1) AND state IN ('done', 'dead')",
            seconds,
        ),
    )
