"""Commands as a user types them: enqueue, status, retry-dead, reprocess, demo."""

from __future__ import annotations

import uuid
from datetime import timedelta
from pathlib import Path

import orjson
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from ingest.config import Settings
from ingest.simulator import Simulator
from tests.helpers import API_KEY, api_settings, drain, run_cli


async def test_enqueue_reports_bad_lines_and_still_adds_the_good_ones(
    engine: AsyncEngine, subprocess_env: dict[str, str], tmp_path: Path
) -> None:
    good = [uuid.uuid4() for _ in range(3)]
    ids_file = tmp_path / "ids.txt"
    ids_file.write_text(
        f"{good[0]}\n# a comment\n\nnot-a-uuid\n{good[1]}\n../etc/passwd\n{good[2]}\n{good[0]}\n"
    )
    result = run_cli("enqueue", "--file", str(ids_file), env=subprocess_env)
    assert result.returncode == 1
    assert "line 4: not a run ID" in result.stderr
    assert "line 6: not a run ID" in result.stderr
    assert "enqueued: 3 new" in result.stdout and "2 invalid" in result.stdout
    async with engine.connect() as conn:
        queued = {r[0] for r in await conn.execute(text("SELECT run_id FROM ingest_queue"))}
    assert queued == set(good)
    again = run_cli("enqueue", "-", stdin=f"{good[1]}\n", env=subprocess_env)
    assert again.returncode == 0, again.stderr
    assert "0 new" in again.stdout and "1 already queued" in again.stdout


async def test_status_retry_dead_and_reprocess_after_a_drain(
    settings: Settings,
    engine: AsyncEngine,
    subprocess_env: dict[str, str],
) -> None:
    async with Simulator(runs=40, seed=3, api_key=API_KEY) as sim:
        ids = sim.run_ids()
        missing = uuid.uuid4()  # the API answers 404 for it
        enqueued = run_cli("enqueue", *map(str, [*ids, missing]), env=subprocess_env)
        assert enqueued.returncode == 0, enqueued.stderr
        await drain(api_settings(settings, sim), engine)

    status = run_cli("status", "--json", env=subprocess_env)
    assert status.returncode == 0, status.stderr
    report = orjson.loads(status.stdout)
    async with engine.connect() as conn:
        unfinished = (
            await conn.execute(
                text("SELECT count(*) FROM runs WHERE status IN ('scheduled', 'running')")
            )
        ).scalar_one()
    assert report["counts"] == {
        "pending": unfinished,
        "running": 0,
        "done": len(ids) - unfinished,
        "dead": 1,
    }
    assert report["polling"] == unfinished
    assert report["dead_reasons"] == [["HTTP 404", 1]]
    assert report["throughput"]["1"] == len(ids) - unfinished
    human = run_cli("status", env=subprocess_env)
    assert "HTTP 404" in human.stdout and "dead" in human.stdout

    retried = run_cli("retry-dead", env=subprocess_env)
    assert retried.returncode == 0 and "1 dead runs moved back" in retried.stdout
    async with engine.connect() as conn:
        state = (
            await conn.execute(
                text("SELECT state FROM ingest_queue WHERE run_id = :r"), {"r": missing}
            )
        ).scalar_one()
        before = (await conn.execute(text("SELECT count(*) FROM run_events"))).scalar_one()
        await conn.execute(text("DELETE FROM run_events"))
        await conn.commit()
    assert state == "pending"

    rebuilt = run_cli("reprocess", env=subprocess_env)
    assert rebuilt.returncode == 0, rebuilt.stdout + rebuilt.stderr
    assert f"reprocessed {len(ids)} runs" in rebuilt.stdout
    async with engine.connect() as conn:
        after = (await conn.execute(text("SELECT count(*) FROM run_events"))).scalar_one()
    assert after == before

    unknown = run_cli("reprocess", str(missing), env=subprocess_env)
    assert unknown.returncode == 1
    assert f"no stored payload: {missing}" in unknown.stdout


async def test_demo_ends_with_every_table_counted_and_a_calls_dashboard(
    engine: AsyncEngine, subprocess_env: dict[str, str]
) -> None:
    """What a new user sees first: the whole job, then the rows of every table (calls and the
    catalog included) and a dashboard query over bi_calls with the use cases' names."""
    result = run_cli("demo", "--runs", "300", env=subprocess_env)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    async with engine.connect() as conn:
        counts = {
            table: (await conn.execute(text(f"SELECT count(*) FROM {table}"))).scalar_one()
            for table in ("run_sessions", "session_messages", "message_tool_calls", "use_cases")
        }
        names = {r[0] for r in await conn.execute(text("SELECT name FROM use_cases"))}
    assert all(counts.values()), counts
    for table, count in counts.items():
        assert f"  {table:<22}{count:>10,}" in out
    assert "FROM bi_daily_calls" in out and "connected_pct" in out
    assert names and all(name in out for name in names)


async def test_retry_dead_by_reason_and_time_with_a_dry_run(
    engine: AsyncEngine, subprocess_env: dict[str, str]
) -> None:
    # Dead runs as the worker leaves them: five 5xx (three from last night, two older), two 404.
    dead = [
        (uuid.uuid4(), kind, age)
        for kind, age in [("http_5xx", timedelta(hours=2))] * 3
        + [("http_5xx", timedelta(days=3))] * 2
        + [("not_found", timedelta(hours=1))] * 2
    ]
    async with engine.begin() as conn:
        for run_id, kind, age in dead:
            await conn.execute(
                text(
                    "INSERT INTO ingest_queue (run_id, state, attempts, finished_at)"
                    " VALUES (:r, 'dead', 8, now())"
                ),
                {"r": run_id},
            )
            await conn.execute(
                text(
                    "INSERT INTO dead_letters (run_id, kind, reason, attempts, created_at)"
                    " VALUES (:r, :k, 'x', 8, now() - CAST(:a AS interval))"
                ),
                {"r": run_id, "k": kind, "a": age},
            )

    async def states() -> dict[str, int]:
        async with engine.connect() as conn:
            rows = await conn.execute(text("SELECT state, count(*) FROM ingest_queue GROUP BY 1"))
            return dict(rows.all())

    dry = run_cli("retry-dead", "--reason", "http_5xx", "--dry-run", env=subprocess_env)
    assert dry.returncode == 0, dry.stderr
    assert dry.stdout.splitlines()[0] == "5 dead runs would be moved back to pending"
    assert await states() == {"dead": 7}

    since = run_cli("retry-dead", "--reason", "http_5xx", "--since", "1d", env=subprocess_env)
    assert since.returncode == 0, since.stderr
    assert since.stdout.splitlines()[0] == "3 dead runs moved back to pending"
    assert await states() == {"dead": 4, "pending": 3}
    async with engine.connect() as conn:
        left = dict(
            (await conn.execute(text("SELECT kind, count(*) FROM dead_letters GROUP BY 1"))).all()
        )
    assert left == {"http_5xx": 2, "not_found": 2}

    none = run_cli("retry-dead", "--reason", "timeout", env=subprocess_env)
    assert (none.returncode, none.stdout) == (0, "no dead run matches: nothing to retry\n")
    bad = run_cli("retry-dead", "--reason", "flaky", env=subprocess_env)
    assert bad.returncode == 2
    assert bad.stderr.startswith(
        "hr-ingest retry-dead: error: argument --reason: 'flaky' is not a failure kind"
        " (one of: not_found, http_4xx,"
    )
    assert await states() == {"dead": 4, "pending": 3}


async def test_show_tells_a_runs_story_and_prints_its_dead_letters_body(
    settings: Settings, engine: AsyncEngine, subprocess_env: dict[str, str]
) -> None:
    async with Simulator(runs=10, seed=4, api_key=API_KEY) as sim:
        stored = sim.run_ids()[0]
        dead = uuid.uuid4()  # the API answers 404 for it
        sim.set_status_override(str(dead), 404, b'{"message": "no such run"}')
        run_cli("enqueue", str(stored), str(dead), env=subprocess_env)
        await drain(api_settings(settings, sim, max_attempts=1), engine)

    shown = run_cli("show", str(stored), env=subprocess_env)
    assert shown.returncode == 0, shown.stderr
    out = shown.stdout
    assert out.startswith(f"run {stored}\nqueue: done (enqueued by manual, priority 0)")
    async with engine.connect() as conn:
        events = (
            await conn.execute(
                text("SELECT count(*) FROM run_events WHERE run_id = :r"), {"r": stored}
            )
        ).scalar_one()
        sha = (
            await conn.execute(
                text("SELECT sha256 FROM run_payloads WHERE run_id = :r"), {"r": stored}
            )
        ).scalar_one()
    assert f"rows: run_events {events}, event_intermediates " in out
    assert f"sha256 {sha}" in out and "(zstd)" in out
    assert "dead letter" not in out

    shown = run_cli("show", str(dead), env=subprocess_env)
    assert shown.returncode == 0, shown.stderr
    assert "queue: dead" in shown.stdout
    assert "dead letter: not_found, HTTP 404" in shown.stdout
    assert "run: not stored" in shown.stdout and "rows: run_events 0" in shown.stdout
    body = subprocess_run_bytes("show", str(dead), "--body", env=subprocess_env)
    assert body == b'{"message": "no such run"}'

    unknown = run_cli("show", str(uuid.uuid4()), env=subprocess_env)
    assert unknown.returncode == 1
    assert unknown.stderr.endswith("is in neither the queue nor the tables\n")
    bad = run_cli("show", "not-a-run", env=subprocess_env)
    assert bad.returncode == 2 and "'not-a-run' is not a UUID" in bad.stderr
    no_body = run_cli("show", str(stored), "--body", env=subprocess_env)
    assert no_body.returncode == 1 and "has no dead letter with a body" in no_body.stderr


def subprocess_run_bytes(*args: str, env: dict[str, str]) -> bytes:
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, "-m", "ingest", *args], env=env, capture_output=True, check=True
    )
    return done.stdout
