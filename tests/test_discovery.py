"""Discovery against the simulator (in-process, real HTTP) and real PostgreSQL."""

from __future__ import annotations

import asyncio
import itertools
import signal
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from ingest import cli, discovery
from ingest.api.client import open_client
from ingest.api.errors import ApiError
from ingest.api.retry import RetryPolicy
from ingest.config import Settings
from ingest.discovery import Paging, SyncOptions, listing
from ingest.simulator import Simulator
from ingest.simulator.data import FINISHED, RUNNING
from ingest.worker import Worker, WorkerOptions
from tests.helpers import API_KEY, api_settings, run_cli_async, scalar, sim_env, start_cli

# Small pages and shallow sub-windows, so a few thousand runs exercise cuts and dense instants.
PAGING = Paging(page_size=200, max_pages=3, retry=RetryPolicy(retries=0))
DRAIN = WorkerOptions(drain=True, retry_base_s=0.05, flush_interval_s=0.05, idle_poll_s=0.5)


class ListCalls:
    """Records the `start` bound of every GET /runs the simulator answers."""

    def __init__(self, sim: Simulator) -> None:
        self.starts: list[datetime | None] = []
        original = sim.runs.query

        def query(**params: Any) -> list[dict[str, Any]]:
            self.starts.append(params["start"])
            return original(**params)

        sim.runs.query = query  # type: ignore[method-assign]

    def __len__(self) -> int:
        return len(self.starts)


async def column(engine: AsyncEngine, sql: str) -> list[Any]:
    async with engine.connect() as conn:
        return [r[0] for r in await conn.execute(text(sql))]


async def rows(engine: AsyncEngine, sql: str) -> list[Any]:
    async with engine.connect() as conn:
        return [tuple(r) for r in await conn.execute(text(sql))]


def now() -> datetime:
    return datetime.now(UTC)


async def finished_windows(engine: AsyncEngine) -> list[tuple[datetime, datetime]]:
    return [
        (w[0], w[1])
        for w in await rows(engine, "SELECT window_start, window_end FROM discovery_windows")
    ]


def assert_not_relisted(calls: ListCalls, finished: list[tuple[datetime, datetime]]) -> None:
    for start in calls.starts:
        assert start is not None
        assert not any(a <= start < b for a, b in finished), f"re-listed {start}"


# -- listing ---------------------------------------------------------------------------------


def test_gaps_skip_finished_windows() -> None:
    d = [datetime(2025, 1, day, tzinfo=UTC) for day in range(1, 11)]
    assert listing.uncovered(d[0], d[9], [(d[1], d[3]), (d[3], d[4]), (d[6], d[9])]) == [
        (d[0], d[1]),
        (d[4], d[6]),
    ]
    assert listing.uncovered(d[2], d[5], [(d[0], d[8])]) == []


class FakeList:
    """A list endpoint that answers every request with `page` (whatever the offset)."""

    def __init__(self, page: list[dict[str, Any]]) -> None:
        self.page = page

    async def list_runs(self, **_: Any) -> list[dict[str, Any]]:
        return self.page


@pytest.mark.parametrize(
    ("order", "problem"),
    [(reversed, "did not sort"), (list, "same page")],
)
async def test_listing_refuses_an_api_that_breaks_paging(
    order: Callable[[list[dict[str, Any]]], Any], problem: str
) -> None:
    t0 = datetime(2025, 1, 1, tzinfo=UTC)
    page = [
        {"id": str(uuid.uuid4()), "timestamp": (t0 + timedelta(seconds=i)).isoformat()}
        for i in range(4)
    ]
    lister = listing.Lister(
        FakeList(list(order(page))),  # type: ignore[arg-type]
        Paging(page_size=4, max_pages=2),
        discovery.Filters(),
    )
    with pytest.raises(discovery.DiscoveryError, match=problem):
        await lister.slice(t0, t0 + timedelta(days=1), set())


# -- backfill --------------------------------------------------------------------------------


async def test_backfill_finds_every_run_exactly_once(
    settings: Settings, engine: AsyncEngine
) -> None:
    async with Simulator(runs=4000, seed=3, api_key=API_KEY) as sim:
        # 700 runs at one instant: deeper than max_pages, so that instant is paged to its end.
        dense = sim.add_runs(700, at=now() - timedelta(days=2))
        s = api_settings(settings, sim)
        async with open_client(s, engine) as client:
            since = now() - timedelta(days=8)
            tally = await discovery.discover(
                engine, client, since=since, until=now(), paging=PAGING
            )
        expected = set(sim.run_ids())
    assert len(expected) == 4700
    queued = await column(engine, "SELECT run_id FROM ingest_queue WHERE source = 'backfill'")
    assert len(queued) == len(expected) and set(queued) == expected
    assert tally.runs == tally.added == len(expected)  # listed exactly once each
    assert set(dense) <= set(queued)
    listed = await scalar(
        engine,
        "SELECT count(*) FROM runs WHERE listed_at IS NOT NULL AND data ? 'load_id'"
        " AND fetched_at IS NULL",
    )
    assert listed == len(expected)
    # The finished sub-windows tile the window from `since`, without gaps or overlaps; only
    # the last ones (too close to now to be settled) are left unrecorded.
    windows = await rows(
        engine, "SELECT window_start, window_end, runs_found FROM discovery_windows ORDER BY 1"
    )
    assert windows[0][0] == since
    assert all(a[1] == b[0] for a, b in itertools.pairwise(windows))
    assert windows[-1][1] > now() - discovery.SETTLE - PAGING.span
    assert sum(w[2] for w in windows) <= tally.runs
    # The dense instant was paged to its end as a window of its own.
    assert any(w[1] - w[0] == discovery.RESOLUTION and w[2] >= 500 for w in windows)


async def test_a_killed_discover_resumes_without_relisting(
    settings: Settings, engine: AsyncEngine, subprocess_env: dict[str, str]
) -> None:
    async with Simulator(runs=3000, seed=6, api_key=API_KEY) as sim:
        calls = ListCalls(sim)
        env = sim_env(subprocess_env, sim, INGEST_RATE_LIMIT="50")
        argv = ("discover", "--since", "8d", "--window", "2h", "--page-size", "100")
        proc = await start_cli(env, *argv)
        while len(await finished_windows(engine)) < 10:
            assert proc.returncode is None, await proc.communicate()
            await asyncio.sleep(0.02)
        proc.kill()
        await proc.wait()
        finished = await finished_windows(engine)
        first_run = len(calls)
        calls.starts.clear()
        code, out, err = await run_cli_async(env, *argv)
        assert code == 0, err
        assert f"({len(finished)} finished earlier, skipped)" in out
        assert_not_relisted(calls, finished)
        assert first_run + len(calls) < 200
        expected = set(sim.run_ids())
    queued = await column(engine, "SELECT run_id FROM ingest_queue")
    assert len(queued) == len(expected) and set(queued) == expected


async def test_an_api_fault_stops_discover_and_a_rerun_resumes(
    settings: Settings, engine: AsyncEngine
) -> None:
    async with Simulator(runs=2000, seed=9, api_key=API_KEY) as sim:
        calls = ListCalls(sim)
        original, broken = sim.runs.query, [False]

        def query(**params: Any) -> list[dict[str, Any]]:
            # From the 15th request on the list endpoint fails until repaired (HTTP 500).
            if broken[0] or len(calls) > 15:
                broken[0] = True
                raise RuntimeError("injected fault")
            return original(**params)

        sim.runs.query = query  # type: ignore[method-assign]
        s = api_settings(settings, sim)
        since = now() - timedelta(days=8)
        paging = Paging(page_size=100, max_pages=3, span=timedelta(hours=6), retry=PAGING.retry)
        async with open_client(s, engine) as client:
            with pytest.raises(ApiError):
                await discovery.discover(engine, client, since=since, until=now(), paging=paging)
            finished = await finished_windows(engine)
            assert finished
            broken[0] = False
            sim.runs.query = original  # type: ignore[method-assign]
            calls = ListCalls(sim)
            tally = await discovery.discover(
                engine, client, since=since, until=now(), paging=paging
            )
        assert_not_relisted(calls, finished)
        assert tally.windows_skipped == len(finished)
        expected = set(sim.run_ids())
    assert set(await column(engine, "SELECT run_id FROM ingest_queue")) == expected


@pytest.mark.parametrize(
    "argv",
    [
        ["discover", "--since", "yesterday"],
        ["discover", "--since", "1d", "--use-case", "nope"],
        ["discover", "--since", "1d", "--page-size", "9000"],
        ["sync", "--overlap", "soon"],
        ["sync", "--recheck", "soon"],
        ["sync", "--recheck-every", "0s"],
        ["worker", "--sync-every", "0s"],
    ],
)
def test_bad_times_and_flags_exit_2_with_one_line(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    # Refused before any work: by the parser (SystemExit), or as configuration (exit code).
    try:
        code = cli.main(argv)
    except SystemExit as exit_:
        code = exit_.code
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1, err


async def test_discover_cli_reports_errors_in_one_line(
    settings: Settings, subprocess_env: dict[str, str]
) -> None:
    async with Simulator(runs=10, seed=2, api_key="another-key") as sim:
        env = sim_env(subprocess_env, sim)
        code, _, err = await run_cli_async(env, "discover", "--since", "1d", "--until", "2d")
        assert code == 2 and err.startswith("hr-ingest: error: --since") and err.count("\n") == 1
        code, _, err = await run_cli_async(env, "discover", "--since", "2d")
    assert code == 1
    line = [x for x in err.splitlines() if x.startswith("hr-ingest:")]
    assert len(line) == 1 and "discover stopped" in line[0] and "401" in line[0], err
    assert "another-key" not in err and API_KEY not in err


# -- sync ------------------------------------------------------------------------------------


async def test_sync_finds_runs_added_while_and_after_paging(
    settings: Settings, engine: AsyncEngine
) -> None:
    async with Simulator(runs=1500, seed=4, api_key=API_KEY) as sim:
        during: list[uuid.UUID] = []
        original = sim.runs.query

        def query(**params: Any) -> list[dict[str, Any]]:
            # Runs arriving while the first sync pages: inside the window it is paging
            # (shifting every offset after them) and after its end.
            if not during:
                during.extend(sim.add_runs(40, at=now() - timedelta(minutes=3)))
                during.extend(sim.add_runs(10))
            return original(**params)

        sim.runs.query = query  # type: ignore[method-assign]
        s = api_settings(settings, sim)
        options = SyncOptions(paging=PAGING)
        async with open_client(s, engine) as client:
            first = await discovery.sync(engine, client, options)
            after = sim.add_runs(25)
            # Arrived late: stamped before the last watermark, within the overlap.
            late = sim.add_runs(15, at=now() - timedelta(minutes=10))
            # Started days ago, finished a minute ago: only the completion listing has it.
            (old,) = sim.add_runs(1, at=now() - timedelta(days=3))
            run = sim.runs.by_key[str(old)]
            run.stage, run.duration_s = FINISHED, timedelta(days=3, minutes=-1).total_seconds()
            second = await discovery.sync(engine, client, options)
        assert first.ran and second.ran
        assert first.since is not None and first.until is not None
        assert second.since == first.until - options.overlap
        expected = {
            r.id
            for r in sim.runs.by_key.values()
            if (r.timestamp >= first.since or (r.completed_at or r.timestamp) >= first.since)
        }
    queued = set(await column(engine, "SELECT run_id FROM ingest_queue WHERE source = 'sync'"))
    assert set(during) | set(after) | set(late) | {old} <= queued
    assert queued == expected
    # The second sync listed only the overlap and what came after it.
    assert second.tally.runs < first.tally.runs


async def test_a_running_run_is_refetched_until_it_ends(
    settings: Settings, engine: AsyncEngine
) -> None:
    async with Simulator(runs=300, seed=5, api_key=API_KEY) as sim:
        by_stage = {
            stage: [r for r in sim.runs.by_key.values() if r.stage == stage]
            for stage in (RUNNING, FINISHED)
        }
        running = by_stage[RUNNING]
        assert running
        s = api_settings(settings, sim)
        options = SyncOptions(since=now() - timedelta(days=8), paging=PAGING)
        async with open_client(s, engine) as client:
            await discovery.sync(engine, client, options)
            await Worker(s, engine, client, DRAIN).run()
            stored = dict(await rows(engine, "SELECT id, status FROM runs"))
            assert {stored[r.id] for r in running} == {"running"}
            # The worker left them waiting for a later poll; sync makes them due now.
            result = await discovery.sync(engine, client, options)
            assert result.non_terminal + result.tally.refreshed >= len(running)
            await Worker(s, engine, client, DRAIN).run()
            # A third sync lists them all again, and enqueues nothing that has not changed.
            await discovery.sync(engine, client, options)
            await Worker(s, engine, client, DRAIN).run()
        events = dict(await rows(engine, "SELECT run_id, count(*) FROM run_events GROUP BY 1"))
        stored = dict(await rows(engine, "SELECT id, status FROM runs"))
        for r in running:
            assert stored[r.id] == r.final_status and events[r.id] == r.n_events
        # Runs already finished when first fetched were never fetched again.
        assert all(sim.fetch_count(r.id) == 1 for r in by_stage[FINISHED])


async def test_refresh_days_refetches_recently_finished_runs(
    settings: Settings, engine: AsyncEngine
) -> None:
    async with Simulator(runs=120, seed=10, api_key=API_KEY) as sim:
        s = api_settings(settings, sim)
        async with open_client(s, engine) as client:
            await discovery.sync(engine, client, SyncOptions(since=now() - timedelta(days=8)))
            await Worker(s, engine, client, DRAIN).run()
            finished = await scalar(
                engine,
                "SELECT count(*) FROM runs WHERE status NOT IN ('scheduled', 'running')"
                " AND completed_at > now() - interval '2 days'",
            )
            result = await discovery.sync(
                engine, client, SyncOptions(refresh_days=2, refresh_age=timedelta(0))
            )
    assert finished and result.refreshed == finished


async def test_only_one_sync_runs_at_a_time(
    settings: Settings, engine: AsyncEngine, subprocess_env: dict[str, str]
) -> None:
    async with Simulator(runs=100, seed=8, api_key=API_KEY, latency_ms=200) as sim:
        s = api_settings(settings, sim)
        async with open_client(s, engine) as client:
            # Without change capture, so that each listing is one request (the lock is tested).
            options = SyncOptions(paging=PAGING, recheck=timedelta(0))
            a, b = await asyncio.gather(
                discovery.sync(engine, client, options), discovery.sync(engine, client, options)
            )
        assert sorted([a.ran, b.ran]) == [False, True]
        async with discovery.sync_lock(engine) as held:
            assert held
            started = asyncio.get_running_loop().time()
            code, out, err = await run_cli_async(sim_env(subprocess_env, sim), "sync")
            assert code == 0 and "another sync is running" in out, err
            assert asyncio.get_running_loop().time() - started < 10
        # One page per window here: only the sync that ran called the API.
        assert sim.stats.total_requests == a.tally.windows + b.tally.windows


FETCHED = "SELECT id FROM runs WHERE fetched_at IS NOT NULL"


async def test_worker_sync_every_keeps_the_tables_current(
    settings: Settings, engine: AsyncEngine, subprocess_env: dict[str, str]
) -> None:
    async with Simulator(runs=200, seed=11, api_key=API_KEY) as sim:
        env = sim_env(subprocess_env, sim, INGEST_RATE_LIMIT="500")
        proc = await start_cli(env, "worker", "--sync-every", "1s")
        try:
            added = sim.add_runs(5)
            deadline = asyncio.get_running_loop().time() + 20
            fetched: set[uuid.UUID] = set()
            while not set(added) <= fetched:
                assert asyncio.get_running_loop().time() < deadline, "new runs never fetched"
                assert proc.returncode is None
                await asyncio.sleep(0.2)
                fetched = set(await column(engine, FETCHED))
            later = sim.add_runs(3)
            while not set(later) <= fetched:
                assert asyncio.get_running_loop().time() < deadline, "later runs never fetched"
                await asyncio.sleep(0.2)
                fetched = set(await column(engine, FETCHED))
        finally:
            proc.send_signal(signal.SIGTERM)
            _, err = await asyncio.wait_for(proc.communicate(), 30)
        assert proc.returncode == 0, err
        assert b"sync.done" in err
