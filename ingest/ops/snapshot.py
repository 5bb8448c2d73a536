"""The database's side of the metrics and the status page, read on a timer and cached.

Every worker process serves its own metrics port, and Prometheus scrapes each one; a query per
scrape (or per open browser tab) would multiply with replicas and viewers. So one task per
process reads the queue every `interval_s` and everything else reads the cached `Snapshot`.
Drift needs a scan of every stored payload's notes, so it is read on a slower timer.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass, field
from datetime import datetime

import structlog
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from ingest.db.tables import QUEUE_STATES
from ingest.logs import scrub

log = structlog.get_logger("ingest.ops.snapshot")

CHART_MINUTES = 60
LATEST_DEAD = 20

_COUNTS = text(
    """
    SELECT state, count(*),
        extract(epoch FROM now() - min(available_at)
            FILTER (WHERE state = 'pending' AND available_at <= now()))::float8
    FROM ingest_queue GROUP BY state
    """
)
# Bucket 0 is the last 60 s, so the buckets add up to `status`'s 60-minute throughput.
_PER_MINUTE = text(
    """
    SELECT floor(extract(epoch FROM now() - finished_at) / 60)::int AS ago, state, count(*)
    FROM ingest_queue
    WHERE finished_at > now() - make_interval(mins => :minutes) AND state IN ('done', 'dead')
    GROUP BY ago, state
    """
)
# retry-dead deletes the dead letter too, but a run may be dead-lettered again later: show
# only runs that are dead now.
_LATEST_DEAD = text(
    """
    SELECT d.run_id, d.kind, d.reason, d.http_status, d.attempts, d.created_at
    FROM dead_letters d JOIN ingest_queue q USING (run_id)
    WHERE q.state = 'dead'
    ORDER BY d.created_at DESC, d.run_id LIMIT :limit
    """
)
_DEAD_BY_KIND = text(
    """
    SELECT d.kind, count(*) FROM dead_letters d JOIN ingest_queue q USING (run_id)
    WHERE q.state = 'dead' GROUP BY d.kind ORDER BY count(*) DESC, d.kind
    """
)
_DRIFT = text(
    """
    SELECT d->>'kind' AS kind, count(DISTINCT run_id) FROM run_payloads,
        jsonb_array_elements(drift) d GROUP BY kind ORDER BY count(DISTINCT run_id) DESC, kind
    LIMIT 50
    """
)


@dataclass(frozen=True, slots=True)
class DeadLetter:
    run_id: str
    kind: str  # a FailureKind value, as stored (an older worker may know kinds this one does not)
    reason: str
    http_status: int | None
    attempts: int
    at: datetime


@dataclass(frozen=True)
class Snapshot:
    taken_at: datetime  # the database's clock
    counts: dict[str, int]
    oldest_due_age_s: float | None  # None: nothing pending is due
    # Runs finished per minute, index = minutes ago (0 = the last 60 s).
    done_per_minute: list[int]
    dead_per_minute: list[int]
    dead_letters: list[DeadLetter]  # the latest
    dead_by_kind: list[tuple[str, int]]  # every dead run, by failure kind, most first
    drift: list[tuple[str, int]]  # (kind, runs), as of `drift_at`
    drift_at: datetime | None


async def _now(conn: AsyncConnection) -> datetime:
    value: datetime = (await conn.execute(text("SELECT now()"))).scalar_one()
    return value


async def read_queue(conn: AsyncConnection) -> tuple[dict[str, int], float | None]:
    counts = dict.fromkeys(QUEUE_STATES, 0)
    oldest: float | None = None
    for state, n, age in await conn.execute(_COUNTS):
        counts[state] = n
        if age is not None:
            oldest = float(age)
    return counts, oldest


async def read_per_minute(conn: AsyncConnection) -> tuple[list[int], list[int]]:
    done, dead = [0] * CHART_MINUTES, [0] * CHART_MINUTES
    for ago, state, n in await conn.execute(_PER_MINUTE, {"minutes": CHART_MINUTES}):
        if 0 <= ago < CHART_MINUTES:
            (done if state == "done" else dead)[ago] = n
    return done, dead


async def read_dead_letters(conn: AsyncConnection, limit: int = LATEST_DEAD) -> list[DeadLetter]:
    return [
        # A reason can quote the API's error body: scrub it like a log line.
        DeadLetter(str(run_id), kind, scrub(reason), status, attempts, at)
        for run_id, kind, reason, status, attempts, at in await conn.execute(
            _LATEST_DEAD, {"limit": limit}
        )
    ]


async def read_dead_by_kind(conn: AsyncConnection) -> list[tuple[str, int]]:
    return [(str(kind), int(n)) for kind, n in await conn.execute(_DEAD_BY_KIND)]


async def read_drift(conn: AsyncConnection) -> list[tuple[str, int]]:
    return [(str(kind), int(n)) for kind, n in await conn.execute(_DRIFT)]


@dataclass
class SnapshotPoller:
    """Keeps `latest` fresh: the queue every `interval_s`, drift every `drift_interval_s`."""

    engine: AsyncEngine
    interval_s: float = 5.0
    drift_interval_s: float = 60.0
    latest: Snapshot | None = None
    error: str | None = None  # why the last read failed; cleared by the next success
    failures: int = 0
    refreshed_at: float | None = None  # time.time() of the last success
    _drift: list[tuple[str, int]] = field(default_factory=list)
    _drift_at: datetime | None = None
    _drift_read: float = float("-inf")  # time.monotonic()
    _task: asyncio.Task[None] | None = None
    _lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    async def refresh(self) -> Snapshot:
        """Read the database now (tests call it to see a drain at once)."""
        async with self._lock, self.engine.connect() as conn:
            now = await _now(conn)
            counts, oldest = await read_queue(conn)
            done, dead = await read_per_minute(conn)
            dead_letters = await read_dead_letters(conn)
            dead_by_kind = await read_dead_by_kind(conn)
            if time.monotonic() - self._drift_read >= self.drift_interval_s:
                self._drift, self._drift_at = await read_drift(conn), now
                self._drift_read = time.monotonic()
        self.latest = Snapshot(
            taken_at=now,
            counts=counts,
            oldest_due_age_s=oldest,
            done_per_minute=done,
            dead_per_minute=dead,
            dead_letters=dead_letters,
            dead_by_kind=dead_by_kind,
            drift=self._drift,
            drift_at=self._drift_at,
        )
        self.error = None
        self.refreshed_at = time.time()
        return self.latest

    def force_drift(self) -> None:
        """Read drift on the next refresh, not when its slower timer says."""
        self._drift_read = float("-inf")

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._loop(), name="ops-snapshot")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _loop(self) -> None:
        while True:
            try:
                await self.refresh()
            except Exception as exc:  # the page says so; the worker goes on regardless
                self.failures += 1
                self.error = scrub(f"{type(exc).__name__}: {exc}".splitlines()[0])[:300]
                log.warning("status snapshot failed", error=self.error)
            await asyncio.sleep(self.interval_s)
