"""The process policy every command runs under (`ingest.runtime.run`)."""

from __future__ import annotations

import asyncio
import dataclasses
import gc
import os
import signal
from collections.abc import Callable, Coroutine, Iterator
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from ingest import runtime
from ingest.config import Settings
from ingest.db.engine import create_engine
from ingest.simulator import Simulator
from ingest.worker import WorkerOptions, WorkerStats
from tests.helpers import API_KEY, FAST, api_settings, enqueue, wait_for


@pytest.fixture(autouse=True)
def gc_restored() -> Iterator[None]:
    threshold = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*threshold)


def test_run_tunes_the_collector_and_uses_uvloop() -> None:
    gc.set_threshold(700, 10, 10)
    gc.unfreeze()

    async def inside() -> str:
        return type(asyncio.get_running_loop()).__module__

    loop_module = runtime.run(inside())
    assert gc.get_threshold() == (200_000, 50, 100)
    assert gc.get_freeze_count() > 0  # what was alive at start is never walked again
    assert loop_module.startswith("uvloop")


# -- a worker in the runtime: built here as a test or a benchmark would build one ------------


async def _queue_states(settings: Settings) -> dict[str, int]:
    engine = create_engine(settings, pool_size=1)
    try:
        async with engine.connect() as conn:
            rows = await conn.execute(
                text("SELECT state, count(*) FROM ingest_queue GROUP BY state")
            )
            return {state: n for state, n in rows}
    finally:
        await engine.dispose()


async def _worker_under_runtime(
    settings: Settings,
    options: WorkerOptions,
    during: Callable[[AsyncEngine], Coroutine[Any, Any, None]],
) -> WorkerStats:
    """`runtime.run_worker` on 30 simulated runs, with `during` running beside it. The
    simulator answers slowly, so that the worker holds its claims for a while."""
    async with Simulator(runs=30, seed=7, api_key=API_KEY, latency_ms=300) as sim:
        engine = create_engine(settings)
        try:
            await enqueue(engine, sim.run_ids())
            beside = asyncio.create_task(during(engine))
            stats = await runtime.run_worker(api_settings(settings, sim), engine, options)
            await beside
            return stats
        finally:
            await engine.dispose()


async def _until_claimed(engine: AsyncEngine) -> None:
    """Until the worker holds a claim: its signal handlers are installed by then."""
    running = "SELECT count(*) FROM ingest_queue WHERE state = 'running'"
    await wait_for(engine, running, bool, within_s=30)


def test_a_worker_built_by_a_test_runs_under_the_production_policy(settings: Settings) -> None:
    gc.set_threshold(700, 10, 10)
    gc.unfreeze()
    seen: list[tuple[tuple[int, int, int], int, str]] = []

    async def look(engine: AsyncEngine) -> None:
        await _until_claimed(engine)
        loop = type(asyncio.get_running_loop()).__module__
        seen.append((gc.get_threshold(), gc.get_freeze_count(), loop))

    stats = runtime.run(_worker_under_runtime(settings, FAST, look))
    assert stats.claimed >= 30
    [(threshold, frozen, loop)] = seen
    assert threshold == (200_000, 50, 100)
    assert frozen > 0
    assert loop.startswith("uvloop")


def test_the_first_signal_stops_the_worker_and_returns_its_claims(settings: Settings) -> None:
    async def one_signal(engine: AsyncEngine) -> None:
        await _until_claimed(engine)
        os.kill(os.getpid(), signal.SIGTERM)

    options = dataclasses.replace(FAST, drain=False)
    stats = runtime.run(_worker_under_runtime(settings, options, one_signal))
    states = runtime.run(_queue_states(settings))
    # Every claim was either finished or handed back: none is left to wait out its lease.
    assert set(states) == {"pending", "done"} and sum(states.values()) == 30, states
    assert stats.claimed == 30 and stats.done < 30


def test_a_second_signal_exits_at_once(
    settings: Settings, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    exits: list[int] = []
    # os._exit would end pytest too: recorded instead, the first signal still stops the worker.
    monkeypatch.setattr(os, "_exit", exits.append)

    async def two_signals(engine: AsyncEngine) -> None:
        await _until_claimed(engine)
        os.kill(os.getpid(), signal.SIGINT)
        await asyncio.sleep(0.05)
        os.kill(os.getpid(), signal.SIGTERM)

    options = dataclasses.replace(FAST, drain=False)
    runtime.run(_worker_under_runtime(settings, options, two_signals))
    assert exits == [runtime.EXIT_FAILURE]
    assert "second signal, exiting now" in capsys.readouterr().err
