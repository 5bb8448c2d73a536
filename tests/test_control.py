"""An operator's controls over the real CLI and database: `pause` / `resume` (the claim itself,
two workers with their metrics and page, pause twice, resume twice), `check` (each line's
failures: configuration, database, API key, rate limit) and a drain's progress and ETA
(`status`, and `worker --drain` on a terminal and off one)."""

from __future__ import annotations

import asyncio
import os
import pty
import uuid

import orjson
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from ingest import queue
from ingest.config import Settings
from ingest.db import migrate
from ingest.ops.drain import Estimate, brief, describe
from ingest.simulator import Simulator
from tests.helpers import (
    API_KEY,
    api_settings,
    enqueue,
    free_port,
    run_cli_async,
    scalar,
    sim_env,
    start_cli,
    until,
    wait_for,
)
from tests.ops_support import scrape, served_worker, status_json, value

DONE = "SELECT count(*) FROM ingest_queue WHERE state = 'done'"


# -- pause / resume -------------------------------------------------------------------------------


async def test_no_run_is_claimed_while_paused_and_a_second_pause_changes_nothing(
    engine: AsyncEngine,
) -> None:
    await enqueue(engine, [uuid.uuid4() for _ in range(3)])
    async with engine.begin() as conn:
        first, started = await queue.pause(conn, "ops@host", "vacuum")
    assert started and first.by == "ops@host" and first.reason == "vacuum"
    async with engine.begin() as conn:
        assert await queue.claim(conn, "w", 10, 60) == []
        again, started = await queue.pause(conn, "someone@else", "other")
    # Paused already: the first pause stands, as it was.
    assert not started and again == first
    async with engine.begin() as conn:
        assert await queue.resume(conn) == first
        assert await queue.resume(conn) is None
        assert len(await queue.claim(conn, "w", 10, 60)) == 3


async def test_pause_and_resume_twice_over_the_cli(
    engine: AsyncEngine, subprocess_env: dict[str, str]
) -> None:
    await enqueue(engine, [uuid.uuid4() for _ in range(2)])
    code, out, err = await run_cli_async(subprocess_env, "pause", "--reason", "db maintenance")
    assert code == 0, err
    assert out.startswith("paused at ") and "`hr-ingest resume` to go on" in out
    since = await scalar(engine, "SELECT paused_at FROM ingest_control")

    code, out, err = await run_cli_async(subprocess_env, "pause", "--reason", "another")
    assert code == 0, err
    assert out.startswith(f"already paused since {since.isoformat()} by ")
    assert out.rstrip().endswith("(db maintenance): nothing changed")
    assert await scalar(engine, "SELECT paused_at FROM ingest_control") == since

    code, out, _ = await run_cli_async(subprocess_env, "status")
    assert f"PAUSED since {since.isoformat()} by " in out
    assert "(db maintenance): workers claim nothing until `hr-ingest resume`" in out
    code, out, _ = await run_cli_async(subprocess_env, "status", "--json")
    doc = orjson.loads(out)
    assert doc["paused"] is True and doc["pause"]["reason"] == "db maintenance"

    code, out, err = await run_cli_async(subprocess_env, "resume")
    assert code == 0, err
    assert out.startswith("resumed: workers claim again (paused ")
    code, out, err = await run_cli_async(subprocess_env, "resume")
    assert (code, out) == (0, "not paused: nothing changed\n"), err
    code, out, _ = await run_cli_async(subprocess_env, "status", "--json")
    assert orjson.loads(out)["paused"] is False and "PAUSED" not in out


@pytest.mark.slow
async def test_a_pause_stops_every_worker_within_seconds_and_resume_lets_them_finish(
    settings: Settings, engine: AsyncEngine, subprocess_env: dict[str, str]
) -> None:
    async with Simulator(runs=600, seed=5, latency_ms=20, api_key=API_KEY) as sim:
        s = api_settings(settings, sim).with_overrides(rate_limit=150.0)
        await enqueue(engine, sim.run_ids())
        async with served_worker(s, engine) as a, served_worker(s, engine) as b:
            tasks = [asyncio.create_task(x.worker.run()) for x in (a, b)]
            await wait_for(engine, DONE, lambda n: n >= 60, 30)

            # --wait returns once the runs in flight are finished: every one stored or handed
            # back, nothing running.
            code, out, err = await run_cli_async(
                subprocess_env, "pause", "--reason", "maintenance", "--wait"
            )
            assert code == 0, err
            assert out.rstrip().endswith("nothing in flight")
            assert (
                await scalar(engine, "SELECT count(*) FROM ingest_queue WHERE state = 'running'")
                == 0
            )
            await until(lambda: a.worker.paused is not None and b.worker.paused is not None, 3)

            done = await scalar(engine, DONE)
            attempts = await scalar(engine, "SELECT sum(attempts) FROM ingest_queue")
            await asyncio.sleep(2.5)  # more than two of the workers' looks at the pause
            assert await scalar(engine, DONE) == done < 600
            assert await scalar(engine, "SELECT sum(attempts) FROM ingest_queue") == attempts
            assert not any(t.done() for t in tasks)  # a drain waits out a pause

            for x in (a, b):
                assert value(await scrape(x.server), "hr_ingest_paused") == 1
            await a.server.poller.refresh()
            snap = (await status_json(a.server))["snapshot"]
            assert isinstance(snap, dict) and snap["paused"]["reason"] == "maintenance"
            worker_doc = (await status_json(b.server))["worker"]
            assert isinstance(worker_doc, dict) and worker_doc["paused"] is True

            code, _, err = await run_cli_async(subprocess_env, "resume")
            assert code == 0, err
            await asyncio.wait_for(asyncio.gather(*tasks), 60)
            for x in (a, b):
                assert value(await scrape(x.server), "hr_ingest_paused") == 0
    assert await queue_outstanding(engine) == 0
    assert await scalar(engine, "SELECT count(*) FROM ingest_queue WHERE state = 'dead'") == 0
    assert await scalar(engine, "SELECT count(*) FROM run_payloads") == 600


async def queue_outstanding(engine: AsyncEngine) -> int:
    async with engine.connect() as conn:
        return await queue.outstanding(conn)


# -- check ----------------------------------------------------------------------------------------


def lines(out: str) -> dict[str, tuple[str, str]]:
    """`check`'s output by what was checked: (verdict, detail)."""
    found = {}
    for line in out.splitlines():
        what, verdict, detail = line[:11].strip(), line[12:16].strip(), line[18:]
        found[what] = (verdict, detail)
    return found


async def test_check_says_ok_for_a_ready_setup(
    sim: Simulator, subprocess_env: dict[str, str]
) -> None:
    env = sim_env(subprocess_env, sim, INGEST_RATE_LIMIT="10")
    code, out, err = await run_cli_async(env, "check")
    assert (code, err) == (0, "")
    got = lines(out)
    assert list(got) == ["config", "database", "api key", "rate limit"]
    assert all(verdict == "ok" for verdict, _ in got.values()), out
    assert got["database"][1].endswith("at revision 0015 (head)")
    assert got["api key"][1].startswith("accepted: GET /runs?limit=1 answered in ")


async def test_check_fails_a_refused_key_without_showing_it(
    sim: Simulator, subprocess_env: dict[str, str]
) -> None:
    env = sim_env(subprocess_env, sim, HAPPYROBOT_API_KEY="sk-wrong-0123456789")
    code, out, err = await run_cli_async(env, "check")
    assert code == 1, err
    verdict, detail = lines(out)["api key"]
    assert verdict == "FAIL" and "(HTTP 401): check HAPPYROBOT_API_KEY" in detail
    assert "sk-wrong" not in out + err
    assert lines(out)["database"][0] == "ok"


async def test_check_fails_an_unset_key_and_an_unreachable_api(
    subprocess_env: dict[str, str],
) -> None:
    code, out, _ = await run_cli_async(subprocess_env, "check")
    assert code == 1 and lines(out)["api key"] == ("FAIL", "HAPPYROBOT_API_KEY is not set")
    env = {
        **subprocess_env,
        "HAPPYROBOT_API_KEY": API_KEY,
        "HAPPYROBOT_BASE_URL": f"http://127.0.0.1:{free_port()}/api/v1",
    }
    code, out, _ = await run_cli_async(env, "check")
    assert code == 1 and lines(out)["api key"][0] == "FAIL"
    assert lines(out)["rate limit"] == ("ok", "10/s (not compared: the API was not reached)")


async def test_check_fails_a_schema_behind_the_head_revision_or_without_tables(
    settings: Settings, engine: AsyncEngine, sim: Simulator, subprocess_env: dict[str, str]
) -> None:
    await migrate.downgrade(engine, "0014")
    code, out, _ = await run_cli_async(sim_env(subprocess_env, sim), "check")
    verdict, detail = lines(out)["database"]
    assert code == 1 and verdict == "FAIL"
    assert f"schema {settings.db_schema} at revision 0014, this version's head is 0015" in detail
    assert "run `hr-ingest db upgrade`" in detail
    env = sim_env(subprocess_env, sim, INGEST_DB_SCHEMA=f"never_{uuid.uuid4().hex[:8]}")
    code, out, _ = await run_cli_async(env, "check")
    assert code == 1 and lines(out)["database"][1].endswith(
        "has no tables: run `hr-ingest db upgrade`"
    )


async def test_check_fails_an_unreachable_database_without_its_password(
    sim: Simulator, subprocess_env: dict[str, str]
) -> None:
    url = f"postgresql://ingest:pw-s3cret-42@127.0.0.1:{free_port()}/nowhere"
    code, out, err = await run_cli_async(sim_env(subprocess_env, sim, DATABASE_URL=url), "check")
    assert code == 1
    verdict, detail = lines(out)["database"]
    assert verdict == "FAIL" and "cannot connect" in detail
    assert "pw-s3cret-42" not in out + err and "Traceback" not in err
    assert lines(out)["api key"][0] == "ok"  # the other lines are still checked


async def test_check_fails_a_bad_configuration_in_one_line(subprocess_env: dict[str, str]) -> None:
    env = {**subprocess_env, "INGEST_RATE_LIMIT": "fast"}
    code, out, err = await run_cli_async(env, "check")
    assert (code, err) == (1, "")
    assert out.startswith("config      FAIL  INGEST_RATE_LIMIT") and out.count("\n") == 1


async def test_check_warns_of_a_rate_limit_the_workers_do_not_share(
    engine: AsyncEngine, sim: Simulator, subprocess_env: dict[str, str]
) -> None:
    async with engine.begin() as conn:
        await conn.execute(
            text("INSERT INTO rate_limits (name, tokens, rate, burst) VALUES ('api', 1, 20, 1)")
        )
    code, out, _ = await run_cli_async(sim_env(subprocess_env, sim), "check")
    verdict, detail = lines(out)["rate limit"]
    assert code == 0 and verdict == "warn"  # a warning, not a failure
    assert detail.startswith("5000/s here, but the workers last set 20/s")


@pytest.mark.sim(latency_ms=100)
async def test_check_warns_when_one_worker_cannot_reach_the_rate_limit(
    sim: Simulator, subprocess_env: dict[str, str]
) -> None:
    env = sim_env(subprocess_env, sim, INGEST_CONCURRENCY="1", INGEST_RATE_LIMIT="50")
    code, out, _ = await run_cli_async(env, "check")
    verdict, detail = lines(out)["rate limit"]
    assert code == 0 and verdict == "warn", out
    assert detail.startswith("50/s, but one worker reaches ~") and "workers or raise it" in detail


# -- a drain's progress and ETA -------------------------------------------------------------------


def test_the_estimate_takes_the_slower_of_the_pace_and_the_rate_limit() -> None:
    at_limit = Estimate(to_do=6000, per_s=9.8, limit_per_s=10.0)
    assert at_limit.eta_s == pytest.approx(6000 / 9.8) and at_limit.floor_s == 600
    assert describe(at_limit) == (
        "6,000 runs to go at 9.8 runs/s: through in about 10m12s, at the rate limit (10/s):"
        " more workers would not be faster"
    )
    slow = Estimate(to_do=6000, per_s=2.0, limit_per_s=10.0)
    assert describe(slow) == (
        "6,000 runs to go at 2.0 runs/s: through in about 50m00s; the rate limit (10/s)"
        " allows no less than 10m00s"
    )
    # A pace above the limit (a burst of retries finishing) does not promise a faster end.
    assert Estimate(to_do=100, per_s=50.0, limit_per_s=10.0).eta_s == 10
    idle = Estimate(to_do=7200, per_s=0.0, limit_per_s=10.0)
    assert idle.eta_s is None
    assert describe(idle) == (
        "7,200 runs to go; none finished lately: the rate limit (10/s) allows no less than 12m00s"
    )
    assert brief(idle) == "0.0 of 10 runs/s · ETA >12m00s"
    assert describe(slow, paused=True).startswith("6,000 runs to go; paused, so no end in sight")
    assert describe(Estimate(0, 0.0, 10.0)) == "nothing to do"


async def test_status_shows_what_is_left_and_the_rate_limits_bound(
    engine: AsyncEngine, subprocess_env: dict[str, str]
) -> None:
    await enqueue(engine, [uuid.uuid4() for _ in range(120)])
    env = {**subprocess_env, "INGEST_RATE_LIMIT": "4"}
    code, out, _ = await run_cli_async(env, "status")
    assert code == 0
    assert (
        "drain: 120 runs to go; none finished lately: the rate limit (4/s) allows no less"
        " than 30s\n" in out
    )
    # The workers' shared limit wins over this process's setting; the pace is the last 5 min.
    async with engine.begin() as conn:
        await conn.execute(
            text("INSERT INTO rate_limits (name, tokens, rate, burst) VALUES ('api', 1, 2, 1)")
        )
        await conn.execute(
            text(
                "UPDATE ingest_queue SET state = 'done', finished_at = now() - interval '1 minute'"
                " WHERE run_id IN (SELECT run_id FROM ingest_queue LIMIT 60)"
            )
        )
    code, out, _ = await run_cli_async(env, "status", "--json")
    doc = orjson.loads(out)
    assert (doc["to_do"], doc["rate_limit"], doc["eta_at_limit_s"]) == (60, 2.0, 30.0)
    assert doc["pace_per_s"] == pytest.approx(60 / 300)
    assert doc["eta_s"] == pytest.approx(60 / 0.2)


@pytest.mark.slow
@pytest.mark.sim(runs=300)
async def test_worker_drain_shows_a_bar_on_a_terminal_and_logs_progress_off_one(
    sim: Simulator, engine: AsyncEngine, subprocess_env: dict[str, str]
) -> None:
    env = sim_env(subprocess_env, sim, INGEST_RATE_LIMIT="150")
    await enqueue(engine, sim.run_ids())
    # stderr on a pseudo-terminal: the bar, over the whole queue, with the limit and an ETA.
    leader, follower = pty.openpty()
    proc = await start_cli(env, "worker", "--drain", stderr=follower)
    os.close(follower)
    seen = bytearray()
    loop = asyncio.get_running_loop()
    while True:
        try:
            chunk = await loop.run_in_executor(None, os.read, leader, 65536)
        except OSError:  # the terminal's other end closed: the process is gone
            break
        if not chunk:
            break
        seen += chunk
    os.close(leader)
    assert await asyncio.wait_for(proc.wait(), 30) == 0
    shown = seen.decode(errors="replace")
    assert "draining" in shown and "/300" in shown and "of 150 runs/s" in shown
    assert "ETA " in shown

    # Off a terminal: a structured line, the first at the start (a run the API does not know).
    await enqueue(engine, [uuid.uuid4()])
    code, _, err = await run_cli_async(env, "worker", "--drain")
    assert code == 0
    progress = [
        orjson.loads(line)
        for line in err.splitlines()
        if line.startswith("{") and '"drain progress"' in line
    ]
    assert progress and progress[0]["to_do"] >= 1 and progress[0]["limit_per_s"] == 150
