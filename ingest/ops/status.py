"""What `status` shows: queue counts, oldest due age, throughput, dead letters, drift."""

from __future__ import annotations

import dataclasses
from dataclasses import asdict, dataclass, field

import orjson
from sqlalchemy.ext.asyncio import AsyncEngine

from ingest import queue
from ingest.discovery.state import SYNC_STATE, read_freshness
from ingest.failures import phrase_of
from ingest.logs import scrub
from ingest.ops.drain import PACE_WINDOW_S, describe, estimate
from ingest.ops.snapshot import read_drift

THROUGHPUT_WINDOWS_MIN = (1, 5, 60)
LANDED_WITHIN_S = 3600.0


@dataclass
class StatusReport:
    counts: dict[str, int]
    polling: int  # pending only to poll runs still scheduled/running upstream
    oldest_due_age_s: float | None
    throughput: dict[int, int]  # minutes -> runs finished done in that window
    # Dead runs by failure kind, each named by its phrase ("HTTP 404", "payload rejected").
    dead_reasons: list[tuple[str, int]] = field(default_factory=list)
    drift: list[tuple[str, int]] = field(default_factory=list)
    # Freshness: the last successful sync (its watermark), failed syncs since, and the oldest
    # run still scheduled/running upstream.
    last_sync: str | None = None
    last_sync_age_s: float | None = None
    sync_failures: int = 0
    sync_error: str | None = None
    oldest_non_terminal_age_s: float | None = None
    # Runs first stored finished in the last hour, by how they came: [source, runs, p50, p95]
    # of completed_at -> stored, seconds.
    landed: list[tuple[str, int, float, float]] = field(default_factory=list)
    # `hr-ingest pause` in force (SPEC: `"paused": true/false`), and its since, by and reason.
    paused: bool = False
    pause: queue.Pause | None = None
    # What a drain has left and when it is through (ingest.ops.drain): runs, runs/s over the
    # last five minutes, the rate limit, seconds at that pace and at the limit, and in words.
    to_do: int = 0
    pace_per_s: float = 0.0
    rate_limit: float | None = None
    eta_s: float | None = None
    eta_at_limit_s: float | None = None
    drain: str = ""

    def to_json(self) -> str:
        return orjson.dumps(asdict(self), option=orjson.OPT_NON_STR_KEYS).decode()


async def collect(engine: AsyncEngine, rate_limit: float | None = None) -> StatusReport:
    """`rate_limit`: this process's setting, used when no worker has set the shared one."""
    async with engine.connect() as conn:
        # The same readings the status page and /metrics show (ingest.ops.snapshot).
        counts = await queue.counts(conn)
        done = await queue.done_within(conn, THROUGHPUT_WINDOWS_MIN)
        dead = [(phrase_of(kind), n) for kind, n in await queue.dead_by_kind(conn)]
        drift = await read_drift(conn)
        fresh = await read_freshness(conn, SYNC_STATE)
        landed = await queue.freshness(conn, LANDED_WITHIN_S)
        pause = await queue.paused(conn)
        left = await estimate(conn, counts.outstanding, PACE_WINDOW_S, rate_limit)
    return StatusReport(
        counts=counts.states,
        polling=counts.polling,
        oldest_due_age_s=counts.oldest_due_age_s,
        throughput=done,
        dead_reasons=dead,
        drift=drift,
        last_sync=None if fresh.last_sync is None else fresh.last_sync.isoformat(),
        last_sync_age_s=fresh.age_s(fresh.last_sync),
        sync_failures=fresh.sync_failures,
        sync_error=scrub(fresh.sync_error) if fresh.sync_error else None,
        oldest_non_terminal_age_s=fresh.age_s(fresh.oldest_non_terminal),
        landed=[(f.source, f.runs, f.p50_s, f.p95_s) for f in landed],
        paused=pause is not None,
        pause=pause and dataclasses.replace(pause, reason=pause.reason and scrub(pause.reason)),
        to_do=left.to_do,
        pace_per_s=left.per_s,
        rate_limit=left.limit_per_s,
        eta_s=left.eta_s,
        eta_at_limit_s=left.floor_s,
        drain=describe(left, paused=pause is not None),
    )
