"""The database's side of the metrics and the status page, read on a timer and cached.

Every worker process serves its own metrics port, and Prometheus scrapes each one; a query per
scrape (or per open browser tab) would multiply with replicas and viewers. So one task per
process reads the queue every `interval_s` and everything else reads the cached `Snapshot`.
Drift needs a scan of every stored payload's notes, so it is read on a slower timer.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import cast

import structlog
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from ingest import queue
from ingest.db.driver import driver_connection
from ingest.discovery.state import SYNC_STATE, Freshness, read_freshness
from ingest.logs import scrub

log = structlog.get_logger("ingest.ops.snapshot")

CHART_MINUTES = 60
LATEST_DEAD = 20

_DRIFT = """
    SELECT d->>'kind' AS kind, count(DISTINCT run_id) FROM run_payloads,
        jsonb_array_elements(drift) d GROUP BY kind ORDER BY count(DISTINCT run_id) DESC, kind
    LIMIT 50
"""


@dataclass(frozen=True)
class Snapshot:
    taken_at: datetime  # the database's clock
    counts: dict[str, int]
    oldest_due_age_s: float | None  # None: nothing pending is due
    # Runs finished per minute, index = minutes ago (0 = the last 60 s).
    done_per_minute: list[int]
    dead_per_minute: list[int]
    dead_letters: list[queue.DeadLetter]  # the latest
    dead_by_kind: list[tuple[str, int]]  # every dead run, by failure kind, most first
    drift: list[tuple[str, int]]  # (kind, runs), as of `drift_at`
    drift_at: datetime | None
    freshness: Freshness
    paused: queue.Pause | None = None  # `hr-ingest pause` in force


async def read_drift(conn: AsyncConnection) -> list[tuple[str, int]]:
    db = await driver_connection(conn)
    return [cast(tuple[str, int], tuple(r)) for r in await db.fetch(_DRIFT)]


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
            now = cast(datetime, await (await driver_connection(conn)).fetchval("SELECT now()"))
            counts = await queue.counts(conn)
            done, dead = await queue.finished_per_minute(conn, CHART_MINUTES)
            # A reason can quote the API's error body: scrubbed like a log line.
            dead_letters = [
                dataclasses.replace(d, reason=scrub(d.reason))
                for d in await queue.latest_dead(conn, LATEST_DEAD)
            ]
            dead_by_kind = await queue.dead_by_kind(conn)
            freshness = await read_freshness(conn, SYNC_STATE)
            paused = await queue.paused(conn)
            if time.monotonic() - self._drift_read >= self.drift_interval_s:
                self._drift, self._drift_at = await read_drift(conn), now
                self._drift_read = time.monotonic()
        self.latest = Snapshot(
            taken_at=now,
            counts=counts.states,
            oldest_due_age_s=counts.oldest_due_age_s,
            done_per_minute=done,
            dead_per_minute=dead,
            dead_letters=dead_letters,
            dead_by_kind=dead_by_kind,
            drift=self._drift,
            drift_at=self._drift_at,
            freshness=freshness,
            paused=paused,
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
