"""The daily views, rolled up at write time (migrations 0011-0013), against the same figures
computed from every row (bi_daily_runs: 0004's definition over bi_runs): after fetches,
re-fetches, listings, hand edits and deletes, under concurrent writers and compactions."""

from __future__ import annotations

import asyncio
import random
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from ingest import rollup
from ingest.db.driver import driver_connection
from ingest.discovery.listing import ListedRun
from ingest.discovery.state import store_listed
from ingest.normalize import normalize
from ingest.store import store_batch
from tests.helpers import scalar
from tests.oracle import _revision
from tests.payloads import make_run_payload, make_version

T0 = datetime(2026, 3, 1, tzinfo=UTC)
DAYS = [datetime(2026, 2, d, 23, 30, tzinfo=UTC) for d in (25, 26, 27)]
FIGURES = ("runs", "runs_with_issues", "issues", "events")


def _oracle() -> str:
    """bi_daily_runs as 0004 defined it: grouping every run of bi_runs on each query."""
    sql: str = _revision("0004").BI_DAILY_RUNS
    return sql.split(" AS\n", 1)[1]


# Each rollup view, and the same figures computed from every row on each query.
CALLS = """
SELECT ("timestamp" AT TIME ZONE 'UTC')::date AS day, use_case_id, version_id,
    count(*) AS calls, count(*) FILTER (WHERE connected) AS connected,
    sum(duration) AS duration_s, count(duration) AS durations,
    sum(duration) FILTER (WHERE connected) AS talk_s,
    count(duration) FILTER (WHERE connected) AS talks,
    sum(time_to_first_word_s) AS first_word_s, count(time_to_first_word_s) AS first_words,
    sum(latency_llm_p95) AS latency_llm_p95_ms, count(latency_llm_p95) AS latency_llm_p95s,
    sum(latency_turn_p95) AS latency_turn_p95_ms, count(latency_turn_p95) AS latency_turn_p95s,
    sum(messages) AS messages, sum(tool_calls) AS tool_calls,
    sum(interruptions) AS interruptions
FROM bi_calls GROUP BY 1, 2, 3
"""
TOOLS = """
SELECT (session_timestamp AT TIME ZONE 'UTC')::date AS day, use_case_id, tool_name,
    count(*) AS tool_calls, count(DISTINCT (run_id, session_seq)) AS calls_using_it
FROM bi_tool_calls GROUP BY 1, 2, 3
"""
ISSUES = """
SELECT (created_at AT TIME ZONE 'UTC')::date AS day, use_case_id, version_id, status,
    count(*) AS issues, sum(time_to_close_s) AS time_to_close_s,
    count(time_to_close_s) AS time_to_close_n
FROM bi_issues GROUP BY 1, 2, 3, 4
"""
# bi_daily_call_percentiles' figures: bi_calls' columns.
PERCENTILES = {
    "duration_s": "duration",
    "first_word_s": "time_to_first_word_s",
    **{
        f: f for f in ("latency_llm_p50", "latency_llm_p95", "latency_turn_p50", "latency_turn_p95")
    },
}
CALL_PERCENTILES = f"""
SELECT ("timestamp" AT TIME ZONE 'UTC')::date AS day, use_case_id, count(*) AS calls,
    {
    ", ".join(
        f"percentile_cont({p}) WITHIN GROUP (ORDER BY {column}) AS {figure}_{stat}"
        for figure, column in PERCENTILES.items()
        for stat, p in (("median", 0.5), ("p95", 0.95))
    )
}
FROM bi_calls WHERE "timestamp" IS NOT NULL GROUP BY 1, 2
"""
ROLLUPS = [
    # view, oracle, key, figures compared exactly, sums of doubles compared to 1e-9
    (
        "bi_daily_runs",
        None,
        ("day", "use_case_id", "status", "annotation"),
        FIGURES,
        ("avg_duration_s",),
    ),
    (
        "bi_daily_calls",
        CALLS,
        ("day", "use_case_id", "version_id"),
        (
            "calls",
            "connected",
            "durations",
            "talks",
            "first_words",
            "latency_llm_p95s",
            "latency_turn_p95s",
            "messages",
            "tool_calls",
            "interruptions",
        ),
        ("duration_s", "talk_s", "first_word_s", "latency_llm_p95_ms", "latency_turn_p95_ms"),
    ),
    (
        "bi_daily_tool_calls",
        TOOLS,
        ("day", "use_case_id", "tool_name"),
        ("tool_calls", "calls_using_it"),
        (),
    ),
    (
        "bi_daily_issues",
        ISSUES,
        ("day", "use_case_id", "version_id", "status"),
        ("issues", "time_to_close_n"),
        ("time_to_close_s",),
    ),
]


async def _grouped(engine: AsyncEngine, sql: str, key: tuple[str, ...]) -> dict[Any, Any]:
    async with engine.connect() as conn:
        rows = [dict(r._mapping) for r in await conn.execute(text(sql))]
    return {tuple(r[k] for k in key): r for r in rows}


async def _daily(engine: AsyncEngine, sql: str) -> dict[tuple[Any, ...], dict[str, Any]]:
    return await _grouped(engine, sql, ROLLUPS[0][2])


async def assert_daily_agrees(engine: AsyncEngine) -> None:
    for view, oracle, key, exact, approx in ROLLUPS:
        rolled = await _grouped(engine, f"SELECT * FROM {view}", key)
        computed = await _grouped(engine, oracle or _oracle(), key)
        assert rolled.keys() == computed.keys(), view
        for k, row in computed.items():
            got = rolled[k]
            assert {f: got[f] for f in exact} == {f: row[f] for f in exact}, (view, k)
            for f in approx:
                if row[f] is None:
                    assert got[f] in (None, 0), (view, k, f)
                else:
                    assert got[f] == pytest.approx(row[f], rel=1e-9), (view, k, f)
            if "use_case_name" in row:
                assert got["use_case_name"] == row["use_case_name"]


async def assert_percentiles_agree(engine: AsyncEngine) -> None:
    """After a refresh of every stale day: each day's percentiles as computed from its calls."""
    key = ("day", "use_case_id")
    stored = await _grouped(engine, "SELECT * FROM bi_daily_call_percentiles", key)
    computed = await _grouped(engine, CALL_PERCENTILES, key)
    assert stored.keys() == computed.keys()
    for k, row in computed.items():
        got = stored[k]
        assert got["up_to_date"] and got["calls"] == row["calls"], k
        for f in row.keys() - {"day", "use_case_id", "calls"}:
            assert got[f] == (None if row[f] is None else pytest.approx(row[f], rel=1e-12)), (k, f)


def _body(rng: random.Random, versions: list[dict[str, Any]]) -> dict[str, Any]:
    body = make_run_payload(
        rng,
        events=rng.randrange(0, 6),
        issues=rng.randrange(0, 3),
        version_pool=versions,
        status=rng.choice(["completed", "failed", "running"]),
        messages=3,
    )
    body["timestamp"] = (rng.choice(DAYS) + timedelta(minutes=rng.randrange(60))).isoformat()
    return body


async def _store(engine: AsyncEngine, bodies: list[dict[str, Any]], at: datetime) -> None:
    rows = [normalize(orjson.dumps(b), uuid.UUID(b["id"]), at) for b in bodies]
    async with engine.begin() as conn:
        await store_batch(conn, rows)


async def _compact(engine: AsyncEngine) -> None:
    async with engine.begin() as conn:
        await rollup.compact(await driver_connection(conn), rollup.EVERY_DAY)


async def test_daily_counts_follow_every_writer_of_runs(engine: AsyncEngine) -> None:
    rng = random.Random(21)
    versions = [make_version(rng) for _ in range(3)]
    async with engine.begin() as conn:
        await conn.execute(
            text("INSERT INTO use_cases (id, name, refreshed_at) VALUES (:u, 'named', now())"),
            {"u": uuid.UUID(versions[0]["use_case_id"])},
        )
    bodies = [_body(rng, versions) for _ in range(40)]

    # Listed by discovery first (no figures yet), for half of them.
    listed = [
        ListedRun(
            id=uuid.UUID(b["id"]),
            org_id=None,
            use_case_id=uuid.UUID(b["use_case_id"]),
            version_id=None,
            status="running",
            annotation=None,
            timestamp=datetime.fromisoformat(b["timestamp"]),
            completed_at=None,
            data='{"load": 1}',
        )
        for b in bodies[:20]
    ]
    async with engine.begin() as conn:
        await store_listed(conn, listed)
    await assert_daily_agrees(engine)

    await _store(engine, bodies[:25], T0)
    await _store(engine, bodies[25:], T0)
    await assert_daily_agrees(engine)

    # Re-fetched: other status, annotation, fewer events and issues; some stale (ignored).
    for b in bodies[::3]:
        b.update(status="completed", annotation="incorrect", events=b["events"][:1], issues=[])
    await _store(engine, bodies[::3], T0 + timedelta(minutes=5))
    await _store(engine, bodies[1::3], T0 - timedelta(minutes=5))
    # Listed again (change capture): an unchanged relisting adds no row at all.
    rows_before = await scalar(engine, "SELECT count(*) FROM daily_run_counts")
    async with engine.begin() as conn:
        await store_listed(conn, listed, known_only=True)
    assert await scalar(engine, "SELECT count(*) FROM daily_run_counts") == rows_before
    await assert_daily_agrees(engine)

    # By hand: an annotation changed, runs deleted (their children are gone or not).
    async with engine.begin() as conn:
        await conn.execute(text("UPDATE runs SET annotation = 'critical' WHERE status = 'failed'"))
        await conn.execute(
            text("DELETE FROM runs WHERE id = ANY(:ids)"),
            {"ids": [uuid.UUID(b["id"]) for b in bodies[:7]]},
        )
    await assert_daily_agrees(engine)

    groups = len(await _daily(engine, _oracle()))
    await _compact(engine)
    assert await scalar(engine, "SELECT count(*) FROM daily_run_counts") == groups
    await assert_daily_agrees(engine)
    await assert_percentiles_agree(engine)

    async with engine.begin() as conn:
        await conn.execute(text("TRUNCATE runs CASCADE"))
    assert await scalar(engine, "SELECT count(*) FROM bi_daily_runs") == 0
    await assert_daily_agrees(engine)
    await _compact(engine)
    await assert_percentiles_agree(engine)


async def test_compactions_running_beside_writers_lose_and_double_nothing(
    engine: AsyncEngine,
) -> None:
    rng = random.Random(22)
    versions = [make_version(rng) for _ in range(4)]
    batches = [[_body(rng, versions) for _ in range(15)] for _ in range(12)]

    async def write(batch: list[dict[str, Any]], n: int) -> None:
        await _store(engine, batch, T0 + timedelta(seconds=n))
        for b in batch[:5]:  # and again, changed
            b.update(status="failed", issues=[])
        await _store(engine, batch[:5], T0 + timedelta(seconds=n, milliseconds=1))

    async def compact_often() -> None:
        for _ in range(15):
            await _compact(engine)
            await asyncio.sleep(0.005)

    await asyncio.gather(
        *(write(b, n) for n, b in enumerate(batches)), compact_often(), compact_often()
    )
    await assert_daily_agrees(engine)
    await _compact(engine)
    await assert_daily_agrees(engine)
    await assert_percentiles_agree(engine)
    assert await scalar(engine, "SELECT count(*) FROM daily_run_counts") == len(
        await _daily(engine, _oracle())
    )


async def test_percentiles_wait_for_a_refresh_and_it_takes_the_latest_days_first(
    engine: AsyncEngine,
) -> None:
    rng = random.Random(24)
    versions = [make_version(rng) for _ in range(2)]
    bodies = [_body(rng, versions) for _ in range(45)]
    await _store(engine, bodies, T0)
    async with engine.connect() as conn:
        days = list(
            (
                await conn.execute(text("SELECT DISTINCT day FROM stale_call_days ORDER BY 1"))
            ).scalars()
        )
    assert len(days) >= 3
    assert await scalar(engine, "SELECT count(*) FROM bi_daily_call_percentiles") == 0

    async def up_to_date() -> dict[Any, bool]:
        async with engine.connect() as conn:
            rows = await conn.execute(
                text("SELECT DISTINCT day, up_to_date FROM bi_daily_call_percentiles")
            )
            return dict(rows.all())

    async with engine.begin() as conn:
        assert await rollup.compact(await driver_connection(conn), refresh_days=1) > 0
    assert await up_to_date() == {days[-1]: True}
    async with engine.begin() as conn:
        await rollup.compact(await driver_connection(conn), refresh_days=1)
    assert await up_to_date() == {days[-1]: True, days[-2]: True}

    # A call changed by hand: its day waits, with the figures as they were, until refreshed.
    async with engine.begin() as conn:
        await conn.execute(text("UPDATE run_sessions SET latency_llm_p50 = latency_llm_p50 + 1"))
    assert await up_to_date() == {days[-1]: False, days[-2]: False}
    await _compact(engine)
    await assert_percentiles_agree(engine)
    assert await scalar(engine, "SELECT count(*) FROM stale_call_days") == 0

    # Every call of a day deleted: its rows go at the next refresh.
    async with engine.begin() as conn:
        await conn.execute(
            text("""DELETE FROM run_sessions WHERE ("timestamp" AT TIME ZONE 'UTC')::date = :d"""),
            {"d": days[0]},
        )
    await _compact(engine)
    await assert_percentiles_agree(engine)
    assert days[0] not in await up_to_date()


async def test_a_dashboard_filter_reads_only_its_days(engine: AsyncEngine) -> None:
    rng = random.Random(23)
    versions = [make_version(rng)]
    await _store(engine, [_body(rng, versions) for _ in range(30)], T0)
    await _compact(engine)
    async with engine.begin() as conn:
        await conn.execute(text("SET enable_seqscan = off"))  # a tiny table: ask for the index
        plan = await conn.scalar(
            text(
                "EXPLAIN (FORMAT JSON) SELECT * FROM bi_daily_runs"
                " WHERE day >= '2026-02-26' AND day < '2026-02-27'"
            )
        )
    assert "ix_daily_run_counts_day" in str(plan) and '"runs"' not in str(plan)
