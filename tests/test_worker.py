"""The main job, end to end: real worker (in-process or as OS processes), real HTTP to the
simulator, real PostgreSQL."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import signal

import orjson
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from ingest.api.client import open_client
from ingest.config import Secret, Settings
from ingest.simulator import Simulator
from ingest.worker import FatalApiError, Worker, WorkerOptions
from tests.helpers import (
    API_KEY,
    FAST,
    api_settings,
    drain,
    enqueue,
    scalar,
    sim_env,
    start_worker,
    until,
    wait_for,
)
from tests.oracle import stored_bodies

pytestmark = pytest.mark.sim(runs=300, seed=7)


async def queue_states(engine: AsyncEngine) -> dict[str, int]:
    async with engine.connect() as conn:
        rows = await conn.execute(text("SELECT state, count(*) FROM ingest_queue GROUP BY 1"))
        return {r[0]: r[1] for r in rows}


async def expected_rows(engine: AsyncEngine) -> tuple[int, int]:
    """Events and issues that the stored raw payloads describe, counted from the bytes."""
    events = issues = 0
    for body in (await stored_bodies(engine)).values():
        doc = orjson.loads(body)
        events += len(doc.get("events") or [])
        issues += len({i["id"] for i in doc.get("issues") or []})
    return events, issues


async def assert_rows_match_payloads(engine: AsyncEngine, runs: int) -> None:
    assert await scalar(engine, "SELECT count(*) FROM runs WHERE fetched_at IS NOT NULL") == runs
    assert await scalar(engine, "SELECT count(*) FROM run_payloads") == runs
    events, issues = await expected_rows(engine)
    assert await scalar(engine, "SELECT count(*) FROM run_events") == events
    assert await scalar(engine, "SELECT count(*) FROM run_issues") == issues


async def test_drain_stores_every_run_and_completes_the_queue(
    settings: Settings, engine: AsyncEngine, sim: Simulator
) -> None:
    ids = sim.run_ids()
    await enqueue(engine, ids)
    stats = await drain(api_settings(settings, sim), engine)
    await assert_rows_match_payloads(engine, len(ids))
    states = await queue_states(engine)
    unfinished = await scalar(
        engine, "SELECT count(*) FROM runs WHERE status IN ('scheduled', 'running')"
    )
    assert states.get("done", 0) == len(ids) - unfinished
    # Runs not terminal upstream wait for a later poll; drain did not wait for them.
    polling = await scalar(
        engine, "SELECT count(*) FROM ingest_queue WHERE state = 'pending' AND awaiting_terminal"
    )
    assert polling == unfinished == stats.polled
    assert stats.done + stats.polled == len(ids)
    assert all(sim.fetch_count(r) == 1 for r in ids)


async def test_a_drain_ends_when_the_queue_does_not_a_poll_later(
    settings: Settings, engine: AsyncEngine, sim: Simulator
) -> None:
    ids = sim.run_ids()[:150]
    await enqueue(engine, ids)
    slow_poll = dataclasses.replace(FAST, idle_poll_s=60.0)
    s = api_settings(settings, sim)
    # Two workers: the first to run out of work waits for runs the other still holds, and each
    # waits for its own last batch; neither may sleep out the poll.
    both = asyncio.gather(drain(s, engine, slow_poll), drain(s, engine, slow_poll))
    stats = await asyncio.wait_for(both, timeout=20)
    assert sum(x.done + x.polled for x in stats) == len(ids)


async def test_a_run_that_always_fails_ends_dead_with_its_reason(
    settings: Settings, engine: AsyncEngine, sim: Simulator
) -> None:
    bad, *good = sim.run_ids()[:5]
    sim.set_status_override(bad, 500, b'{"message": "boom"}')
    await enqueue(engine, [bad, *good])
    stats = await drain(api_settings(settings, sim, max_attempts=3), engine)
    assert stats.dead == 1
    async with engine.connect() as conn:
        state, attempts = (
            await conn.execute(
                text("SELECT state, attempts FROM ingest_queue WHERE run_id = :r"), {"r": bad}
            )
        ).one()
        kind, reason, status, body = (
            await conn.execute(text("SELECT kind, reason, http_status, body FROM dead_letters"))
        ).one()
    assert (state, attempts, kind) == ("dead", 3, "http_5xx")
    assert status == 500 and b"boom" in body
    assert "500" in reason and "after 3 attempts" in reason


async def test_a_payload_that_cannot_be_stored_is_dead_lettered_with_its_raw_body(
    settings: Settings, engine: AsyncEngine, sim: Simulator
) -> None:
    victim, other, *rest = sim.run_ids()[:6]
    body = orjson.dumps({"id": str(other), "status": "completed", "events": []})
    sim.set_payload(victim, body)
    await enqueue(engine, [victim, other, *rest])
    stats = await drain(api_settings(settings, sim), engine)
    assert stats.dead == 1
    async with engine.connect() as conn:
        row = (
            await conn.execute(text("SELECT run_id, kind, reason, body FROM dead_letters"))
        ).one()
    assert body not in (await stored_bodies(engine)).values()  # never stored under either key
    assert row.run_id == victim and row.body == body
    assert row.reason.startswith("payload rejected: id mismatch")
    assert row.kind == "payload_rejected"


@pytest.mark.parametrize("answer", [404, 500])
async def test_a_failure_whose_lease_was_lost_is_not_recorded_nor_counted(
    settings: Settings, engine: AsyncEngine, answer: int
) -> None:
    """Another worker took the run while this one was fetching it (its lease expired, say):
    this attempt's failure is not ours to record, neither as a dead letter nor as a retry."""
    async with Simulator(runs=1, seed=9, api_key=API_KEY, latency_ms=600) as sim:
        [run_id] = sim.run_ids()
        sim.set_status_override(run_id, answer, b'{"message": "no"}')
        await enqueue(engine, [run_id])
        limiter_settings = api_settings(settings, sim, max_attempts=1)
        async with open_client(limiter_settings, engine) as client:
            worker = Worker(
                limiter_settings, engine, client, dataclasses.replace(FAST, drain=False)
            )
            running = asyncio.create_task(worker.run())
            await wait_for(
                engine, "SELECT count(*) FROM ingest_queue WHERE state = 'running'", bool, 10
            )
            async with engine.begin() as conn:
                await conn.execute(
                    text(
                        "UPDATE ingest_queue SET lease_owner = 'another-worker',"
                        " lease_expires_at = now() + interval '1 hour'"
                    )
                )
            await until(lambda: worker.stats.lost > 0, within_s=10)
            worker.stop()
            stats = await running

    assert (stats.dead, stats.retried, stats.lost, stats.failures_by_kind) == (0, 0, 1, {})
    assert await scalar(engine, "SELECT count(*) FROM dead_letters") == 0
    assert await scalar(engine, "SELECT lease_owner FROM ingest_queue") == "another-worker"
    assert await scalar(engine, "SELECT count(*) FROM ingest_batches") == 0


async def test_failed_attempts_are_counted_in_ingest_batches(
    settings: Settings, engine: AsyncEngine, sim: Simulator
) -> None:
    ids = sim.run_ids()[:3]
    sim.set_status_override(ids[0], 404, b'{"message": "gone"}')
    sim.set_status_override(ids[1], 500, b'{"message": "down"}')
    await enqueue(engine, ids)
    await drain(api_settings(settings, sim, max_attempts=2), engine)
    # 404: one failed attempt (dead); 500: two (retried, then dead); the third run stored.
    assert await scalar(engine, "SELECT sum(runs_failed) FROM ingest_batches") == 3
    assert await scalar(engine, "SELECT sum(runs_done) FROM ingest_batches") == 1


async def test_wrong_api_key_stops_the_worker_and_leaves_the_queue_untouched(
    settings: Settings, engine: AsyncEngine, sim: Simulator
) -> None:
    ids = sim.run_ids()[:50]
    await enqueue(engine, ids)
    wrong = api_settings(settings, sim).with_overrides(api_key=Secret("not-the-key"))
    with pytest.raises(FatalApiError, match="HAPPYROBOT_API_KEY"):
        await drain(wrong, engine)
    assert await queue_states(engine) == {"pending": len(ids)}
    assert await scalar(engine, "SELECT max(attempts) FROM ingest_queue") == 0
    assert await scalar(engine, "SELECT count(*) FROM runs") == 0


# -- as real processes -----------------------------------------------------------------------


@pytest.mark.parametrize("processes", [2, 4])
async def test_worker_processes_share_the_queue_without_overlap(
    processes: int,
    settings: Settings,
    engine: AsyncEngine,
    sim: Simulator,
    subprocess_env: dict[str, str],
) -> None:
    ids = sim.run_ids()
    await enqueue(engine, ids)
    # Slow enough (8 in flight x 40 ms: ~200 runs/s a worker) that the queue outlasts the
    # start of the last process, even on a loaded machine: the work is then always shared.
    sim.latency_ms = 40
    env = sim_env(subprocess_env, sim, INGEST_CONCURRENCY="8")
    procs = [await start_worker(env, "--drain", "--batch-size", "20") for _ in range(processes)]
    results = await asyncio.gather(*(asyncio.wait_for(p.communicate(), 120) for p in procs))
    for p, (_, err) in zip(procs, results, strict=True):
        assert p.returncode == 0, err.decode()[-2000:]
    # Each run fetched exactly once overall: no two workers ever held the same run.
    assert [r for r in ids if sim.fetch_count(r) != 1] == []
    await assert_rows_match_payloads(engine, len(ids))
    assert await scalar(engine, "SELECT count(*) FROM ingest_queue WHERE state = 'running'") == 0
    # The work was shared (a late starter may still find the queue already empty).
    workers = await scalar(engine, "SELECT count(DISTINCT worker) FROM ingest_batches")
    assert 2 <= workers <= processes


async def test_sigkill_mid_batch_loses_nothing(
    settings: Settings, engine: AsyncEngine, sim: Simulator, subprocess_env: dict[str, str]
) -> None:
    ids = sim.run_ids()
    await enqueue(engine, ids)
    sim.latency_ms = 30
    env = sim_env(subprocess_env, sim, INGEST_CONCURRENCY="4")
    victim = await start_worker(env, "--lease-seconds", "1.5", "--batch-size", "10")
    await wait_for(
        engine, "SELECT count(*) FROM ingest_queue WHERE state = 'done'", lambda n: n >= 20, 60
    )
    victim.send_signal(signal.SIGKILL)
    await victim.wait()
    held = await scalar(engine, "SELECT count(*) FROM ingest_queue WHERE state = 'running'")
    assert held, "the kill should have left leased runs behind"
    sim.latency_ms = 0
    survivor = await start_worker(env, "--drain", "--lease-seconds", "1.5")
    _, err = await asyncio.wait_for(survivor.communicate(), 120)
    assert survivor.returncode == 0, err.decode()[-2000:]
    assert await scalar(engine, "SELECT count(*) FROM ingest_queue WHERE state = 'running'") == 0
    await assert_rows_match_payloads(engine, len(ids))


async def test_sigterm_finishes_in_flight_runs_and_returns_the_rest(
    settings: Settings, engine: AsyncEngine, sim: Simulator, subprocess_env: dict[str, str]
) -> None:
    ids = sim.run_ids()
    await enqueue(engine, ids)
    sim.latency_ms = 100
    env = sim_env(subprocess_env, sim, INGEST_CONCURRENCY="8")
    proc = await start_worker(env, "--batch-size", "10")
    await wait_for(
        engine, "SELECT count(*) FROM ingest_queue WHERE state = 'done'", lambda n: n >= 10, 60
    )
    proc.send_signal(signal.SIGTERM)
    out, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 0, err.decode()[-2000:]
    assert b"done" in out
    # Nothing left leased: in-flight runs were finished and stored, unstarted ones returned.
    assert await scalar(engine, "SELECT count(*) FROM ingest_queue WHERE state = 'running'") == 0
    assert (
        await scalar(
            engine, "SELECT count(*) FROM ingest_queue WHERE state = 'pending' AND attempts > 0"
        )
        == 0
    )
    stored = await scalar(engine, "SELECT count(*) FROM runs")
    fetched = sum(sim.fetch_count(r) for r in ids)
    assert stored == fetched  # every run fetched was stored before exit
    await assert_rows_match_payloads(engine, stored)  # type: ignore[arg-type]


async def test_cli_worker_with_a_wrong_key_says_so_and_exits_1(
    settings: Settings, engine: AsyncEngine, sim: Simulator, subprocess_env: dict[str, str]
) -> None:
    await enqueue(engine, sim.run_ids()[:10])
    env = sim_env(subprocess_env, sim, HAPPYROBOT_API_KEY="sk-wrong-secret-value")
    proc = await start_worker(env, "--drain")
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 1
    assert b"HAPPYROBOT_API_KEY" in err
    assert b"sk-wrong-secret-value" not in out + err
    assert await queue_states(engine) == {"pending": 10}


def test_environment_has_no_real_api_key() -> None:
    # The suite must never talk to the real API, whatever the developer's shell holds.
    assert "platform.happyrobot.ai" not in os.environ.get("HAPPYROBOT_BASE_URL", "")


@pytest.mark.slow
async def test_listen_is_opened_again_after_its_connection_dies(
    settings: Settings, engine: AsyncEngine, sim: Simulator
) -> None:
    """New work wakes an idle worker through NOTIFY, also after the database dropped the
    LISTEN connection (as a restart does), without waiting for the slow poll."""
    first, second = sim.run_ids()[:2]
    options = WorkerOptions(idle_poll_s=5.0, flush_interval_s=0.05)
    async with open_client(api_settings(settings, sim), engine) as client:
        worker = Worker(api_settings(settings, sim), engine, client, options)
        task = asyncio.create_task(worker.run())
        try:
            await enqueue(engine, [first])
            await wait_for(engine, "SELECT count(*) FROM runs", lambda n: n == 1, 10)
            killed = await scalar(
                engine,
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
                " WHERE query LIKE 'LISTEN%' AND pid <> pg_backend_pid()"
                " AND datname = current_database()",
            )
            assert killed >= 1
            await asyncio.sleep(5.5)  # one slow poll: the worker notices and listens again
            started = asyncio.get_running_loop().time()
            await enqueue(engine, [second])
            await wait_for(engine, "SELECT count(*) FROM runs", lambda n: n == 2, 10)
            assert asyncio.get_running_loop().time() - started < 2.0
        finally:
            worker.stop()
            await asyncio.wait_for(task, 30)
