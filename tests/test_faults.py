"""Faults: the worker killed, PostgreSQL restarted, the API misbehaving, a batch the database
refuses. Each test ends with every run `done` or `dead` with a reason, and the rows checked
against the raw payloads stored (`check_rows`, also used by `bench/soak.py`)."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import random
import signal
import subprocess
from asyncio.subprocess import Process
from collections.abc import AsyncIterator, Awaitable
from pathlib import Path
from typing import Any

import orjson
import pytest
import pytest_asyncio
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine

from ingest.config import Secret, Settings
from ingest.db import embedded, migrate
from ingest.db.engine import create_engine
from ingest.simulator import Simulator
from ingest.worker import WorkerStats
from tests import helpers
from tests.helpers import cli_env, enqueue, scalar, sim_env, wait_for
from tests.oracle import check_rows
from tests.payloads import make_run_payload

FAST = dataclasses.replace(helpers.FAST, idle_poll_s=0.3, batch_size=20)
pytestmark = pytest.mark.sim(runs=240, seed=11, stall_seconds=1.0)


async def drain(settings: Settings, engine: AsyncEngine, **client_options: Any) -> WorkerStats:
    return await helpers.drain(settings, engine, FAST, **client_options)


def start_worker(env: dict[str, str], *args: str, stderr: Any) -> Awaitable[Process]:
    return helpers.start_worker(env, *args, stdout=asyncio.subprocess.DEVNULL, stderr=stderr)


DONE = "SELECT count(*) FROM ingest_queue WHERE state IN ('done', 'dead') OR awaiting_terminal"


# -- the worker process killed ----------------------------------------------------------------


@pytest.mark.slow
async def test_sigkill_at_random_points_repeatedly_then_a_drain_loses_and_duplicates_nothing(
    settings: Settings, engine: AsyncEngine, sim: Simulator, tmp_path: Path
) -> None:
    rng = random.Random(int.from_bytes(os.urandom(4)))
    ids = sim.run_ids()
    await enqueue(engine, ids)
    sim.latency_ms = 40
    env = sim_env(cli_env(settings), sim, INGEST_CONCURRENCY="4")
    args = ("--lease-seconds", "1", "--batch-size", "10")
    log = (tmp_path / "workers.log").open("wb")
    for kill in range(3):
        before = await scalar(engine, DONE)
        victim = await start_worker(env, *args, stderr=log)
        # Somewhere in the middle of the work: after a random number of runs, then a bit.
        at_least = before + rng.randrange(5, 40)
        await wait_for(engine, DONE, lambda n, a=at_least: n >= a, 60)
        await asyncio.sleep(rng.uniform(0, 0.3))
        victim.send_signal(signal.SIGKILL)
        assert await victim.wait() == -signal.SIGKILL, f"kill {kill}: the worker was not running"
    left = await scalar(engine, "SELECT count(*) FROM ingest_queue WHERE state = 'running'")
    assert left, "the kills should have left leased runs behind"
    sim.latency_ms = 0
    survivor = await start_worker(env, "--drain", *args, stderr=log)
    rc = await asyncio.wait_for(survivor.wait(), 60)
    assert rc == 0, (tmp_path / "workers.log").read_text()[-3000:]
    assert await check_rows(engine) == []
    assert await scalar(engine, "SELECT count(*) FROM ingest_queue WHERE state = 'dead'") == 0
    assert await scalar(engine, "SELECT count(*) FROM run_payloads") == len(ids)


# -- PostgreSQL restarted ---------------------------------------------------------------------


@pytest_asyncio.fixture
async def throwaway_pg(tmp_path: Path) -> AsyncIterator[tuple[Path, str]]:
    """A PostgreSQL of this test's own (embedded), which it may stop and start at will."""
    data_dir = tmp_path / "pg"
    url = await asyncio.to_thread(embedded.start, data_dir)
    try:
        yield data_dir, url
    finally:
        for attempt in range(3):  # pg_ctl stop can fail once on a busy machine
            try:
                await asyncio.to_thread(embedded.remove, data_dir)
                break
            except subprocess.CalledProcessError:
                if attempt == 2:
                    raise
                await asyncio.sleep(1)


@pytest.mark.slow
async def test_postgres_restarted_mid_drain_the_worker_reconnects_and_finishes(
    throwaway_pg: tuple[Path, str], sim: Simulator, tmp_path: Path
) -> None:
    data_dir, url = throwaway_pg
    # A password the server does not ask for (trust), so that its absence from every line
    # the worker wrote through the outage can be checked.
    password = "pg-restart-Secret-7Hq"
    url = make_url(url).set(password=password).render_as_string(hide_password=False)
    settings = Settings(database_url=Secret(url), db_schema="faults", data_dir=tmp_path)
    engine = create_engine(settings, pool_size=2)
    try:
        await migrate.upgrade(engine)
        ids = sim.run_ids()
        await enqueue(engine, ids)
        sim.latency_ms = 60
        log_path = tmp_path / "worker.log"
        with log_path.open("wb") as log:
            proc = await start_worker(
                sim_env(cli_env(settings), sim, INGEST_CONCURRENCY="4"),
                "--drain",
                "--batch-size",
                "10",
                stderr=log,
            )
            await wait_for(engine, DONE, lambda n: n >= 30, 60)
            await engine.dispose()
            await asyncio.to_thread(embedded.stop, data_dir)
            await asyncio.sleep(2.0)  # long enough for every kind of statement to fail
            assert proc.returncode is None, "the worker died with the database"
            await asyncio.to_thread(embedded.start, data_dir)
            rc = await asyncio.wait_for(proc.wait(), 60)
        output = log_path.read_text()
        assert rc == 0, output[-3000:]
        assert "database unreachable" in output  # it did see the outage
        assert password not in output
        assert await check_rows(engine) == []
        assert await scalar(engine, "SELECT count(*) FROM ingest_queue WHERE state = 'dead'") == 0
        assert await scalar(engine, "SELECT count(*) FROM run_payloads") == len(ids)
    finally:
        await engine.dispose()


# -- the API misbehaving ----------------------------------------------------------------------


@pytest.mark.slow
async def test_timeouts_resets_5xx_and_429_bursts_all_end_done(
    settings: Settings, engine: AsyncEngine, sim: Simulator
) -> None:
    ids = sim.run_ids()[:120]
    injected: dict[str, int] = {}
    for i, run_id in enumerate(ids):
        kind, times = [
            ("timeout", 1),
            ("reset", 3),
            ("truncate", 2),
            ("500", 3),
            ("502", 2),
            ("503", 4),
            ("429", 3),
            (None, 0),
        ][i % 8]
        if kind == "429":
            # A burst: every request for this run refused, asking for no wait or a second.
            wait = "1" if i < 20 else "0"
            sim.set_status_override(
                run_id, 429, b'{"message": "slow down"}', headers={"Retry-After": wait}, times=times
            )
        elif kind is not None:
            sim.inject_fault(run_id, kind, times=times)
        if kind is not None:
            injected[kind] = injected.get(kind, 0) + times
    await enqueue(engine, ids)
    stats = await drain(
        helpers.api_settings(settings, sim), engine, read_timeout=0.3, max_backoff=0.05
    )
    assert stats.dead == 0
    assert await check_rows(engine) == []
    assert await scalar(engine, "SELECT count(*) FROM run_payloads") == len(ids)
    # Every fault really happened (none skipped by luck).
    assert {k: v for k, v in sim.stats.faults.items()} == {
        k: v for k, v in injected.items() if k != "429"
    }
    assert sim.stats.by_status[429] == injected["429"]
    assert stats.retried > 0  # some runs needed more than one attempt


# -- a batch the database refuses ------------------------------------------------------------


@pytest.mark.parametrize("errcode", ["P0001", "53100"], ids=["raise", "disk_full"])
async def test_a_statement_error_on_one_run_does_not_poison_its_batch(
    errcode: str, settings: Settings, engine: AsyncEngine, sim: Simulator
) -> None:
    ids = sim.run_ids()[:60]
    bad = ids[17]
    body = orjson.dumps(make_run_payload(random.Random(5), bad, events=4, issues=1))
    sim.set_payload(bad, body)
    async with engine.begin() as conn:
        await conn.execute(
            text(
                f"""
                CREATE FUNCTION refuse_one_run() RETURNS trigger LANGUAGE plpgsql AS $$
                BEGIN
                    IF NEW.id = '{bad}' THEN
                        RAISE EXCEPTION 'refusing run %', NEW.id USING ERRCODE = '{errcode}';
                    END IF;
                    RETURN NEW;
                END $$
                """
            )
        )
        await conn.execute(
            text(
                "CREATE TRIGGER refuse_one_run BEFORE INSERT OR UPDATE ON runs"
                " FOR EACH ROW EXECUTE FUNCTION refuse_one_run()"
            )
        )
    await enqueue(engine, ids)
    stats = await drain(helpers.api_settings(settings, sim, max_attempts=3), engine)
    assert stats.dead == 1
    assert await check_rows(engine) == []
    async with engine.connect() as conn:
        states = dict((await conn.execute(text("SELECT run_id, state FROM ingest_queue"))).all())
        letter = (
            await conn.execute(text("SELECT run_id, reason, body, attempts FROM dead_letters"))
        ).one()
    assert states.pop(bad) == "dead"
    assert set(states.values()) <= {"done", "pending"}  # pending: polled, not terminal yet
    assert letter.run_id == bad and letter.attempts == 3
    assert letter.reason.startswith("store error:") and "refusing run" in letter.reason
    assert letter.body == body
    assert await scalar(engine, "SELECT count(*) FROM run_payloads") == len(ids) - 1
