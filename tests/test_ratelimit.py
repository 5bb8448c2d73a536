"""The shared rate limiter against real PostgreSQL, and across real OS processes."""

from __future__ import annotations

import asyncio
import itertools
import time

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

# The benchmark's worker processes are the load the acceptance check needs: imported, not copied.
from bench import bench_ratelimit as bench
from ingest.api import ApiClient, RateLimiter
from ingest.api.ratelimit import Bucket
from ingest.config import Secret, Settings
from ingest.simulator import Simulator, SimulatorStats


async def acquire_for(limiters: list[RateLimiter], seconds: float, tasks: int = 8) -> list[float]:
    """Times of every acquire that returned, from `tasks` callers per limiter, for `seconds`."""
    times: list[float] = []
    stop = time.monotonic() + seconds

    async def caller(limiter: RateLimiter) -> None:
        while time.monotonic() < stop:
            await limiter.acquire()
            times.append(time.monotonic())

    await asyncio.gather(*(caller(lim) for lim in limiters for _ in range(tasks)))
    # Callers already queued at `stop` still get their tokens; count the window only.
    return sorted(t for t in times if t < stop)


def busiest_second(times: list[float]) -> int:
    stats = SimulatorStats(request_times=times)
    return stats.max_in_window(1.0)


async def bucket(engine: AsyncEngine, name: str = "api") -> dict[str, float]:
    async with engine.connect() as conn:
        row = (
            await conn.execute(
                text(
                    "SELECT tokens, factor, EXTRACT(EPOCH FROM paused_until - now())::float8"
                    " AS paused_for FROM rate_limits WHERE name = :n"
                ),
                {"n": name},
            )
        ).one()
    return dict(row._mapping)


async def test_one_limiter_paces_at_the_rate_with_few_round_trips(engine: AsyncEngine) -> None:
    limiter = RateLimiter(engine, 100)
    try:
        times = await acquire_for([limiter], 1.5, tasks=16)
    finally:
        await limiter.close()
    assert busiest_second(times) <= 100
    assert 0.9 * 150 <= len(times) <= 150 + 1
    assert limiter.grants * 3 < len(times)  # the database is not asked once per request
    assert limiter.wait_seconds_total > 0


async def test_limiters_on_one_row_share_the_rate(engine: AsyncEngine) -> None:
    a, b = RateLimiter(engine, 40), RateLimiter(engine, 40)
    try:
        times = await acquire_for([a, b], 2.0)
    finally:
        await a.close()
        await b.close()
    assert busiest_second(times) <= 40
    assert len(times) >= 0.9 * 80
    assert a.grants >= 5 and b.grants >= 5  # both got their turns
    other = RateLimiter(engine, 40, name="other")  # another name is another bucket
    try:
        assert len(await acquire_for([other], 0.5)) >= 15
    finally:
        await other.close()


async def test_an_idle_bucket_holds_one_token_and_paces_the_rest_exactly(
    engine: AsyncEngine,
) -> None:
    rate, pace = 20.0, 0.97
    bucket = Bucket(
        engine,
        rate,
        name="api",
        burst=1.0,
        pace=pace,
        grant_seconds=1.0,
        recovery=0.1,
        min_factor=0.1,
    )
    try:
        await bucket.take(1)
        await asyncio.sleep(1.0)  # idle: the bucket refills, but only to one token
        before = time.monotonic()
        slots = await bucket.take(5)
        after = time.monotonic()
    finally:
        await bucket.close()
    assert before <= slots[0] <= after  # the one token goes at once
    gaps = [b - a for a, b in itertools.pairwise(slots)]
    assert gaps == pytest.approx([1 / (rate * pace)] * 4)  # the rest are paced, no burst


async def test_a_dead_worker_wastes_at_most_one_grant(engine: AsyncEngine) -> None:
    dead = RateLimiter(engine, 50)
    # Many waiters: it reserves a full grant, then dies before using any of it.
    waiters = [asyncio.create_task(dead.acquire()) for _ in range(50)]
    await asyncio.sleep(0.05)
    for w in waiters:
        w.cancel()
    await asyncio.gather(*waiters, return_exceptions=True)
    await dead.close()
    alive = RateLimiter(engine, 50)
    try:
        started = time.monotonic()
        await alive.acquire()
        assert time.monotonic() - started <= 0.25  # at most grant_seconds of lost capacity
        assert len(await acquire_for([alive], 1.0)) >= 40
    finally:
        await alive.close()


@pytest.mark.slow
async def test_a_429_pauses_everyone_then_the_rate_recovers(engine: AsyncEngine) -> None:
    a, b = RateLimiter(engine, 20), RateLimiter(engine, 20)
    try:
        await a.acquire()
        await b.acquire()
        await a.penalize(1.0)
        await b.penalize(1.0)  # the same 429 seen twice halves the rate once
        state = await bucket(engine)
        assert state["factor"] == 0.5 and 0.8 < state["paused_for"] <= 1.0
        started = time.monotonic()
        await b.acquire()
        assert time.monotonic() - started >= 0.8  # b never saw the 429 itself
        # Halved, then climbing back at +0.1 per second.
        slow = await acquire_for([a, b], 1.0)
        assert 6 <= len(slow) <= 14
        await asyncio.sleep(1.0)
        await a.acquire()
        assert 0.65 <= (await bucket(engine))["factor"] <= 0.9
    finally:
        await a.close()
        await b.close()


async def test_penalize_without_retry_after_pauses_one_second(engine: AsyncEngine) -> None:
    limiter = RateLimiter(engine, 10)
    try:
        await limiter.acquire()
        await limiter.penalize(None)
        assert 0.8 < (await bucket(engine))["paused_for"] <= 1.0
    finally:
        await limiter.close()


@pytest.mark.slow
async def test_two_processes_keep_an_upstream_limit_of_the_same_rate(settings: Settings) -> None:
    """The acceptance check: simulator limiting at R, two worker processes configured at R."""
    rate, seconds = 50.0, 4.0
    assert settings.database_url is not None
    async with Simulator(runs=300, latency_ms=20, rate_limit=rate, api_key=bench.API_KEY) as sim:
        report = await bench.run_workers(
            sim, settings.database_url.reveal(), settings.db_schema, rate, 2, seconds, 8
        )
    assert report["429s"] == 0 and sim.stats.by_status[429] == 0, report
    assert report["max_1s"] <= rate, report  # the burst of 1 token fits under R as well
    assert report["utilisation"] >= 0.9, report
    assert all(w["sent"] > 0.3 * rate * seconds and w["errors"] == 0 for w in report["workers"]), (
        report
    )


async def test_a_429_through_the_client_slows_every_process(
    engine: AsyncEngine, settings: Settings
) -> None:
    async with Simulator(runs=5, api_key="k") as sim:
        run_id = sim.run_ids()[0]
        sim.set_status_override(run_id, 429, b"", headers={"Retry-After": "1"}, times=1)
        limiter = RateLimiter(engine, 20)
        api_settings = settings.with_overrides(api_key=Secret("k"), base_url=sim.base_url)
        try:
            async with ApiClient(api_settings, limiter) as api:
                fetched = await api.get_run(run_id)
        finally:
            await limiter.close()
    assert fetched.attempts == 2
    assert 0.5 <= (await bucket(engine))["factor"] < 0.6  # halved, barely recovered yet


async def test_a_busy_event_loop_does_not_waste_slots_at_a_high_rate(engine: AsyncEngine) -> None:
    # A worker's loop is busy for tens of ms at a time (a batch being encoded). At a rate far
    # above what is used, every waiter whose slot came due meanwhile must still get to go:
    # dropping them would cost a database round trip for each new grant.
    limiter = RateLimiter(engine, 100_000)
    stop = time.monotonic() + 1.5

    async def busy() -> None:
        while time.monotonic() < stop:
            time.sleep(0.02)  # noqa: ASYNC251 - blocks the loop, as CPU-bound work does
            await asyncio.sleep(0.005)

    try:
        hog = asyncio.create_task(busy())
        times = await acquire_for([limiter], 1.5, tasks=32)
        await hog
    finally:
        await limiter.close()
    assert len(times) > 1000
    assert limiter.slots_dropped <= len(times) // 100


async def test_the_limiters_commit_setting_never_reaches_other_connections(
    engine: AsyncEngine,
) -> None:
    limiter = RateLimiter(engine, 50)
    await limiter.acquire()
    await limiter.close()
    # Grants commit without waiting for the disk; batches of runs must not.
    conns = [await engine.connect() for _ in range(3)]
    try:
        settings = [(await c.execute(text("SHOW synchronous_commit"))).scalar() for c in conns]
    finally:
        for c in conns:
            await c.close()
    assert settings == ["on"] * 3
