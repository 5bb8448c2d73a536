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
- A waiter that wakes up too late after its slot (a busy event loop, a stalled process) does
  not use it and takes the next one, so that tolerance holds whatever the load: late requests
  are what push a sliding window over R. Too late is `headroom / 3` seconds at low rates,
  growing towards `headroom` as the rate grows (see `_max_lateness`).
- Waiters queue in FIFO order; every slot due within that tolerance is handed out at once, so
  its waiters wake together, while later slots are handed out only as they come due.
- Burst is 1 token by default: after an idle spell one request goes at once, the rest are
  paced. A bigger burst would let R + burst requests into one second, which an upstream
  enforcing R answers with 429s.
- `penalize` (on a 429) pauses the bucket for everyone until `Retry-After` (1 s when none)
  and halves `factor`; the factor then recovers by `recovery` per second back to 1.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections import deque
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from ingest.logs import get_logger

log = get_logger("ingest.api.ratelimit")

# Seconds of refill since the row was last touched; nothing refills while paused.
_ELAPSED = """GREATEST(0.0, EXTRACT(EPOCH FROM
    GREATEST(statement_timestamp(), b.paused_until) - GREATEST(b.refilled_at, b.paused_until)
)::float8)"""

_GRANT = text(
    f"""
INSERT INTO rate_limits AS b (name, tokens, rate, burst, factor, paused_until, refilled_at)
VALUES (:name, CAST(:burst AS float8) - CAST(:n AS float8), :rate, :burst, 1.0, NULL,
        statement_timestamp())
ON CONFLICT (name) DO UPDATE SET
    rate = EXCLUDED.rate,
    burst = EXCLUDED.burst,
    tokens = LEAST(EXCLUDED.burst,
                   b.tokens + {_ELAPSED} * EXCLUDED.rate * CAST(:pace AS float8) * b.factor)
             - CAST(:n AS float8),
    factor = LEAST(1.0, b.factor + CAST(:recovery AS float8) * {_ELAPSED}),
    refilled_at = GREATEST(statement_timestamp(), b.paused_until)
RETURNING
    b.tokens + CAST(:n AS float8) AS available,
    EXTRACT(EPOCH FROM b.refilled_at - statement_timestamp())::float8 AS delay,
    b.rate * CAST(:pace AS float8) * b.factor AS pace_rate
"""
)

# One 429 seen by many requests at once halves the factor once: not again while paused.
_PENALIZE = text(
    """
UPDATE rate_limits SET
    factor = CASE WHEN paused_until IS NULL OR paused_until <= statement_timestamp()
                  THEN GREATEST(CAST(:min_factor AS float8), factor * 0.5)
                  ELSE factor END,
    tokens = LEAST(tokens, 0.0),
    paused_until = GREATEST(paused_until,
                            statement_timestamp() + make_interval(secs => CAST(:pause AS float8)))
WHERE name = :name
"""
)


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
        self.wait_seconds_total = 0.0  # time callers spent in acquire(), for metrics
        self.grants = 0  # database round trips taken for grants
        self._engine = engine
        self._pace = 1.0 - headroom
        # How late a request may go after its slot: late requests bunch up with the next
        # ones, and headroom absorbs up to (headroom * rate - 2 * burst) of them in a second.
        self._max_lateness = min(
            headroom, max(headroom / 3, (headroom * rate - 2 * self.burst) / (rate * self._pace))
        )
        self.slots_dropped = 0  # slots a late waiter let go, for metrics
        self._grant_seconds = grant_seconds
        self._recovery = recovery
        self._min_factor = min_factor
        self._pace_rate = rate * self._pace  # as of the last grant
        self._slots: deque[float] = deque()  # monotonic times this process may send at
        # Callers inside acquire(), with a slot or not: those waiting on a slot will soon be
        # back for the next one, so a grant covers all of them (within grant_seconds).
        self._waiting = 0
        self._line: deque[asyncio.Future[float]] = deque()  # callers waiting for a slot
        self._dispatcher: asyncio.Task[None] | None = None
        self._conn: AsyncConnection | None = None
        self._conn_lock = asyncio.Lock()

    async def acquire(self) -> None:
        """Wait for one token."""
        started = time.monotonic()
        self._waiting += 1
        try:
            while True:
                turn: asyncio.Future[float] = asyncio.get_running_loop().create_future()
                self._line.append(turn)
                if self._dispatcher is None or self._dispatcher.done():
                    self._dispatcher = asyncio.create_task(self._dispatch())
                slot = await turn
                delay = slot - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
                if time.monotonic() - slot <= self._max_lateness:
                    return
                self.slots_dropped += 1
        finally:
            self._waiting -= 1
            self.wait_seconds_total += time.monotonic() - started

    async def _dispatch(self) -> None:
        """Hand out slots to the line in FIFO order: every slot due within the lateness
        tolerance at once, so that their waiters wake in the same turn of the event loop
        (handed over one waiter per turn, on a busy loop a whole grant's slots turn late),
        and later ones only when they come due, so that a process holds no more than one
        grant it has not used yet: if it dies, that is all the others lose."""
        try:
            await self._serve()
        except BaseException as exc:
            # Closed (cancelled) or a bug: nobody may be left waiting for a slot that never comes.
            error = exc if isinstance(exc, Exception) else RuntimeError("rate limiter closed")
            while self._line:
                turn = self._line.popleft()
                if not turn.done():
                    turn.set_exception(error)
            raise

    async def _serve(self) -> None:
        line, slots = self._line, self._slots
        while line:
            if line[0].done():  # its caller was cancelled
                line.popleft()
                continue
            if not slots:
                try:
                    await self._take_grant()
                except Exception as exc:
                    # Its caller sees the error, as if it had asked itself; the next one in
                    # line asks again.
                    first = line.popleft()
                    if not first.done():
                        first.set_exception(exc)
                    continue
            horizon = time.monotonic() + self._max_lateness
            while line and slots and slots[0] <= horizon:
                turn = line.popleft()
                if not turn.done():
                    turn.set_result(slots.popleft())
            if line and slots:
                await asyncio.sleep(slots[0] - horizon)

    async def _take_grant(self) -> None:
        n = max(1, min(self._waiting, math.ceil(self._pace_rate * self._grant_seconds)))
        row, sent_at = await self._execute(
            _GRANT,
            {
                "name": self.name,
                "n": float(n),
                "rate": self.rate,
                "burst": self.burst,
                "pace": self._pace,
                "recovery": self._recovery,
            },
        )
        assert row is not None  # an upsert always returns its row
        available, delay, pace_rate = float(row[0]), float(row[1]), float(row[2])
        self.grants += 1
        self._pace_rate = pace_rate
        # From when the statement was sent, not when its answer was read: a slow event loop
        # must make the slots late (and dropped), not shift them onto other processes' slots.
        start = sent_at + max(0.0, delay)
        self._slots.extend(start + max(0.0, i + 1 - available) / pace_rate for i in range(n))

    async def penalize(self, retry_after: float | None) -> None:
        """An upstream 429: every process pauses for `retry_after` (1 s if None), then slows."""
        pause = 1.0 if retry_after is None else max(0.0, retry_after)
        self._slots.clear()
        log.warning("ratelimit.penalized", name=self.name, pause_s=pause)
        params = {"name": self.name, "pause": pause, "min_factor": self._min_factor}
        try:
            await asyncio.shield(self._execute(_PENALIZE, params))
        except Exception as exc:
            # Best effort: the caller is already handling a 429, and the next grant will
            # surface a database that is really gone.
            log.warning("ratelimit.penalize_failed", name=self.name, error=str(exc))

    async def close(self) -> None:
        if self._dispatcher is not None:
            self._dispatcher.cancel()
            with contextlib.suppress(BaseException):
                await self._dispatcher
        async with self._conn_lock:
            if self._conn is not None:
                conn, self._conn = self._conn, None
                # Closed for good rather than pooled: it carries synchronous_commit=off.
                await conn.invalidate()
                await conn.close()

    async def _execute(self, statement: Any, params: dict[str, Any]) -> tuple[Any, float]:
        """One statement on the limiter's own autocommit connection (one round trip, no BEGIN):
        its first row (None when it returns none) and the time.monotonic() it was sent at."""
        async with self._conn_lock:
            if self._conn is None:
                conn = await self._engine.connect()
                self._conn = await conn.execution_options(isolation_level="AUTOCOMMIT")
                # A grant need not wait for the WAL to reach disk: every process's grants go
                # through this one row, so each fsync wait would hold up the others too. A
                # crash of the server can forget the last few grants (a brief burst), nothing
                # else. The setting never leaves this connection: see close().
                await self._conn.exec_driver_sql("SET synchronous_commit TO off")
            sent_at = time.monotonic()
            try:
                result = await self._conn.execute(statement, params)
            except Exception:
                # Not reused after an error: the next call reconnects.
                conn, self._conn = self._conn, None
                await conn.invalidate()
                raise
            return (result.first() if result.returns_rows else None), sent_at
