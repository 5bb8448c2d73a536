"""One request rate for every process on the database: a token bucket in a `rate_limits` row.

How it works
- The row holds the bucket level `tokens` as of `refilled_at`. The level may go negative:
  tokens handed out ahead of time are a debt that refills at the paced rate, which makes
  every grant a reservation of the next free time slots, spaced 1/rate apart across all
  processes (GCRA, in token form).
- A process takes a grant of up to `grant_seconds` worth of tokens (at least 1, no more than
  it has waiters) with one upsert ... RETURNING on its own autocommit connection, and
  releases its waiters locally at the slot times it was given. So the database sees a few
  statements per second per process, not one per request, and a process that dies wastes at
  most one grant (`grant_seconds` of capacity), never the rest's tokens.
- Pace is rate * (1 - headroom): an upstream that counts requests in a sliding one-second
  window sees R+1 in a window as soon as one request arrives a little later than the next
  one; 3% of headroom absorbs up to ~30 ms of such scheduling jitter.
- Within a process, `slots.SlotDispatcher` hands the granted slots to waiting requests; a
  request that would go too late after its slot takes the next one instead, so that the
  tolerance holds whatever the load. Too late is `headroom / 3` seconds at low rates, growing
  towards `headroom` as the rate grows (see `_max_lateness`).
- Burst is 1 token by default: after an idle spell one request goes at once, the rest are
  paced. A bigger burst would let R + burst requests into one second, which an upstream
  enforcing R answers with 429s.
- `penalize` (on a 429) pauses the bucket for everyone until `Retry-After` (1 s when none)
  and halves `factor`; the factor then recovers by `recovery` per second back to 1.
"""

from __future__ import annotations

import asyncio
import math
import time
from typing import cast

from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from ingest.api.slots import SlotDispatcher
from ingest.db.driver import Db, Record, driver_connection, unavailable_as_error
from ingest.logs import get_logger

log = get_logger("ingest.api.ratelimit")

# Seconds of refill since the row was last touched; nothing refills while paused.
_ELAPSED = """GREATEST(0.0, EXTRACT(EPOCH FROM
    GREATEST(statement_timestamp(), b.paused_until) - GREATEST(b.refilled_at, b.paused_until)
)::float8)"""

_GRANT = f"""
INSERT INTO rate_limits AS b (name, tokens, rate, burst, factor, paused_until, refilled_at)
VALUES ($1, $4::float8 - $2::float8, $3::float8, $4::float8, 1.0, NULL, statement_timestamp())
ON CONFLICT (name) DO UPDATE SET
    rate = EXCLUDED.rate,
    burst = EXCLUDED.burst,
    tokens = LEAST(EXCLUDED.burst,
                   b.tokens + {_ELAPSED} * EXCLUDED.rate * $5::float8 * b.factor)
             - $2::float8,
    factor = LEAST(1.0, b.factor + $6::float8 * {_ELAPSED}),
    refilled_at = GREATEST(statement_timestamp(), b.paused_until)
RETURNING
    b.tokens + $2::float8 AS available,
    EXTRACT(EPOCH FROM b.refilled_at - statement_timestamp())::float8 AS delay,
    b.rate * $5::float8 * b.factor AS pace_rate
"""

# One 429 seen by many requests at once halves the factor once: not again while paused.
_PENALIZE = """
UPDATE rate_limits SET
    factor = CASE WHEN paused_until IS NULL OR paused_until <= statement_timestamp()
                  THEN GREATEST($3::float8, factor * 0.5)
                  ELSE factor END,
    tokens = LEAST(tokens, 0.0),
    paused_until = GREATEST(paused_until,
                            statement_timestamp() + make_interval(secs => $2::float8))
WHERE name = $1
"""


class Bucket:
    """The `rate_limits` row `name`: grants of slot times, and the pause after a 429."""

    def __init__(
        self,
        engine: AsyncEngine,
        rate: float,
        *,
        name: str,
        burst: float,
        pace: float,
        grant_seconds: float,
        recovery: float,
        min_factor: float,
    ) -> None:
        self.grants = 0  # database round trips taken for grants
        self._engine, self._rate, self._name, self._burst = engine, rate, name, burst
        self._pace, self._grant_seconds = pace, grant_seconds
        self._recovery, self._min_factor = recovery, min_factor
        self._pace_rate = rate * pace  # as of the last grant
        self._conn: AsyncConnection | None = None
        self._db: Db  # the driver's connection under _conn, once connected
        self._conn_lock = asyncio.Lock()

    async def take(self, waiting: int) -> list[float]:
        """Slot times (time.monotonic()) for up to `waiting` requests, no more than
        `grant_seconds` worth, at least one."""
        n = max(1, min(waiting, math.ceil(self._pace_rate * self._grant_seconds)))
        row, sent_at = await self._execute(
            _GRANT, self._name, float(n), self._rate, self._burst, self._pace, self._recovery
        )
        assert row is not None  # an upsert always returns its row
        available, delay, pace_rate = (cast(float, row[i]) for i in range(3))
        self.grants += 1
        self._pace_rate = pace_rate
        # From when the statement was sent, not when its answer was read: a slow event loop
        # must make the slots late (and dropped), not shift them onto other processes' slots.
        start = sent_at + max(0.0, delay)
        return [start + max(0.0, i + 1 - available) / pace_rate for i in range(n)]

    async def penalize(self, pause: float) -> None:
        await self._execute(_PENALIZE, self._name, pause, self._min_factor)

    async def close(self) -> None:
        async with self._conn_lock:
            if self._conn is not None:
                conn, self._conn = self._conn, None
                # Closed for good rather than pooled: it carries synchronous_commit=off.
                await conn.invalidate()
                await conn.close()

    async def _execute(self, statement: str, *args: object) -> tuple[Record | None, float]:
        """One statement on the bucket's own autocommit connection (one round trip, no BEGIN):
        its first row (None when it returns none) and the time.monotonic() it was sent at."""
        async with self._conn_lock:
            with unavailable_as_error():
                if self._conn is None:
                    conn = await self._engine.connect()
                    self._conn = await conn.execution_options(isolation_level="AUTOCOMMIT")
                    # A grant need not wait for the WAL to reach disk: every process's grants
                    # go through this one row, so each fsync wait would hold up the others too.
                    # A crash of the server can forget the last few grants (a brief burst),
                    # nothing else. The setting never leaves this connection: see close().
                    await self._conn.exec_driver_sql("SET synchronous_commit TO off")
                    self._db = await driver_connection(self._conn)
                sent_at = time.monotonic()
                try:
                    return await self._db.fetchrow(statement, *args), sent_at
                except Exception:
                    # Not reused after an error: the next call reconnects.
                    conn, self._conn = self._conn, None
                    await conn.invalidate()
                    raise


class RateLimiter:
    """`await limiter.acquire()` before each request; shared through the database."""

    def __init__(
        self,
        engine: AsyncEngine,
        rate: float,
        *,
        name: str = "api",
        burst: float | None = None,
        headroom: float = 0.03,
        grant_seconds: float = 0.2,
        recovery: float = 0.1,
        min_factor: float = 0.1,
    ) -> None:
        if rate <= 0:
            raise ValueError("rate must be greater than 0")
        self.rate = rate
        self.name = name
        self.burst = 1.0 if burst is None else max(1.0, burst)
        pace = 1.0 - headroom
        self._bucket = Bucket(
            engine,
            rate,
            name=name,
            burst=self.burst,
            pace=pace,
            grant_seconds=grant_seconds,
            recovery=recovery,
            min_factor=min_factor,
        )
        # How late a request may go after its slot: late requests bunch up with the next
        # ones, and headroom absorbs up to (headroom * rate - 2 * burst) of them in a second.
        max_lateness = min(
            headroom, max(headroom / 3, (headroom * rate - 2 * self.burst) / (rate * pace))
        )
        self._slots = SlotDispatcher(self._bucket, max_lateness=max_lateness)

    @property
    def grants(self) -> int:
        return self._bucket.grants

    @property
    def wait_seconds_total(self) -> float:
        return self._slots.wait_seconds_total

    @property
    def slots_dropped(self) -> int:
        return self._slots.slots_dropped

    async def acquire(self) -> None:
        """Wait for one token; DatabaseUnavailable if the bucket cannot be reached."""
        await self._slots.acquire()

    async def penalize(self, retry_after: float | None) -> None:
        """An upstream 429: every process pauses for `retry_after` (1 s if None), then slows."""
        pause = 1.0 if retry_after is None else max(0.0, retry_after)
        self._slots.drop_slots()
        log.warning("ratelimit.penalized", name=self.name, pause_s=pause)
        try:
            await asyncio.shield(self._bucket.penalize(pause))
        except Exception as exc:
            # Best effort: the caller is already handling a 429, and the next grant will
            # surface a database that is really gone.
            log.warning("ratelimit.penalize_failed", name=self.name, error=str(exc))

    async def close(self) -> None:
        await self._slots.close()
        await self._bucket.close()


async def configured_rate(conn: AsyncConnection, name: str = "api") -> float | None:
    """The requests/s the workers last set for the shared bucket `name` (None: none has)."""
    db = await driver_connection(conn)
    return cast(
        float | None, await db.fetchval("SELECT rate FROM rate_limits WHERE name = $1", name)
    )
