"""The BI views (migration 0002) against a small, hand-made set of rows with known figures."""

from __future__ import annotations

import datetime as dt
import re
import uuid
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from ingest.config import Settings
from ingest.db import migrate

UTC = dt.UTC


def _id(n: int) -> uuid.UUID:
    return uuid.UUID(int=n)


def _t(s: str) -> dt.datetime:
    return dt.datetime.fromisoformat(s).replace(tzinfo=UTC)


U1, U2 = _id(0xA1), _id(0xA2)
V1, V2, V_MISSING = _id(0xB1), _id(0xB2), _id(0xB9)
R1, R2, R3, R4, R5 = (_id(0xC0 + n) for n in range(1, 6))
I1, I2, I3, I4 = (_id(0xD0 + n) for n in range(1, 5))

VERSIONS = [
    {"id": V1, "name": "Carrier sales", "version_number": 3},
    {"id": V2, "name": "Carrier sales", "version_number": 4},
]

# R4 was listed by discovery but not fetched: its version row does not exist yet, no events.
RUNS = [
    (R1, U1, V1, "completed", "correct", "2026-03-01T10:00:00"),
    (R2, U1, V2, "completed", "correct", "2026-03-01T23:30:00"),
    (R3, U1, V1, "failed", None, "2026-03-02T00:15:00"),
    (R4, U2, V_MISSING, "running", None, "2026-03-01T12:00:00"),
    (R5, U1, V1, "completed", "correct", "2026-03-01T15:00:00"),
]

# (run, seq, timestamp); R1's last event has no timestamp: counted, but not in first/last.
EVENTS = [
    (R1, 0, "2026-03-01T10:00:00"),
    (R1, 1, "2026-03-01T10:00:30"),
    (R1, 2, "2026-03-01T10:02:00"),
    (R1, 3, None),
    (R2, 0, "2026-03-01T23:30:00"),
    (R2, 1, "2026-03-01T23:31:00.5"),
    (R3, 0, "2026-03-02T00:15:00"),
    (R5, 0, "2026-03-01T15:00:00"),
    (R5, 1, "2026-03-01T15:00:59.5"),
]
# Intermediates hang off events; they must not multiply any count.
INTERMEDIATES = [(R1, 0), (R1, 1), (R1, 2), (R2, 0), (R5, 1)]

# (id, run, run_version_id, use_case_id, status, priority, created_at, updated_at)
ISSUES = [
    (I1, R1, V1, U1, "closed", "high", "2026-03-01T11:00:00", "2026-03-01T13:30:00"),
    (I2, R1, V1, U1, "open", "low", "2026-03-01T11:00:00", "2026-03-01T12:00:00"),
    # Names another version than its run's, and no use case of its own.
    (I3, R3, V2, None, "approved", "medium", "2026-03-02T00:20:00", "2026-03-02T00:21:00"),
    (I4, R5, None, U1, "rejected", "high", "2026-03-01T16:00:00", "2026-03-02T16:00:00"),
]


async def _seed(engine: AsyncEngine) -> None:
    fetched = _t("2026-03-03T00:00:00")
    async with engine.begin() as conn:
        await conn.execute(
            text(
                "INSERT INTO versions (id, name, version_number, use_case_id, fetched_at)"
                " VALUES (:id, :name, :version_number, :u, :f)"
            ),
            [dict(v, u=U1, f=fetched) for v in VERSIONS],
        )
        await conn.execute(
            text(
                'INSERT INTO runs (id, use_case_id, version_id, status, annotation, "timestamp",'
                " fetched_at) VALUES (:id, :u, :v, :s, :a, :t, :f)"
            ),
            [
                {
                    "id": r,
                    "u": u,
                    "v": v,
                    "s": s,
                    "a": a,
                    "t": _t(t),
                    "f": None if r == R4 else fetched,
                }
                for r, u, v, s, a, t in RUNS
            ],
        )
        await conn.execute(
            text(
                'INSERT INTO run_events (run_id, seq, type, "timestamp", event_name)'
                " VALUES (:r, :seq, 'action', :t, 'step')"
            ),
            [{"r": r, "seq": s, "t": t and _t(t)} for r, s, t in EVENTS],
        )
        await conn.execute(
            text(
                "INSERT INTO event_intermediates (run_id, seq, id, name, data)"
                " VALUES (:r, :seq, :id, 'node', '{}'::jsonb)"
            ),
            [{"r": r, "seq": s, "id": uuid.uuid4()} for r, s in INTERMEDIATES],
        )
        await conn.execute(
            text(
                "INSERT INTO run_issues (id, run_id, run_version_id, use_case_id, status,"
                " priority, type, created_at, updated_at)"
                " VALUES (:id, :r, :v, :u, :s, :p, 'message', :c, :up)"
            ),
            [
                {"id": i, "r": r, "v": v, "u": u, "s": s, "p": p, "c": _t(c), "up": _t(up)}
                for i, r, v, u, s, p, c, up in ISSUES
            ],
        )


async def _rows(
    engine: AsyncEngine, sql: str, tz: str = "UTC", **params: object
) -> list[dict[str, Any]]:
    async with engine.connect() as conn:
        await conn.execute(text(f"SET TIME ZONE '{tz}'"))
        result = await conn.execute(text(sql), params)
        return [dict(r._mapping) for r in result]


@pytest.fixture
async def seeded(engine: AsyncEngine) -> AsyncEngine:
    await _seed(engine)
    return engine


async def test_bi_runs_has_one_row_per_run_with_counts_times_and_version(
    seeded: AsyncEngine,
) -> None:
    rows = await _rows(
        seeded,
        "SELECT run_id, version_name, version_number, status, annotation, event_count,"
        " issue_count, first_event_at, last_event_at, duration_s FROM bi_runs ORDER BY run_id",
    )
    assert rows == [
        {
            "run_id": R1,
            "version_name": "Carrier sales",
            "version_number": 3,
            "status": "completed",
            "annotation": "correct",
            "event_count": 4,
            "issue_count": 2,
            "first_event_at": _t("2026-03-01T10:00:00"),
            "last_event_at": _t("2026-03-01T10:02:00"),
            "duration_s": 120.0,
        },
        {
            "run_id": R2,
            "version_name": "Carrier sales",
            "version_number": 4,
            "status": "completed",
            "annotation": "correct",
            "event_count": 2,
            "issue_count": 0,
            "first_event_at": _t("2026-03-01T23:30:00"),
            "last_event_at": _t("2026-03-01T23:31:00.5"),
            "duration_s": 60.5,
        },
        {
            "run_id": R3,
            "version_name": "Carrier sales",
            "version_number": 3,
            "status": "failed",
            "annotation": None,
            "event_count": 1,
            "issue_count": 1,
            "first_event_at": _t("2026-03-02T00:15:00"),
            "last_event_at": _t("2026-03-02T00:15:00"),
            "duration_s": 0.0,
        },
        {
            "run_id": R4,
            "version_name": None,
            "version_number": None,
            "status": "running",
            "annotation": None,
            "event_count": 0,
            "issue_count": 0,
            "first_event_at": None,
            "last_event_at": None,
            "duration_s": None,
        },
        {
            "run_id": R5,
            "version_name": "Carrier sales",
            "version_number": 3,
            "status": "completed",
            "annotation": "correct",
            "event_count": 2,
            "issue_count": 1,
            "first_event_at": _t("2026-03-01T15:00:00"),
            "last_event_at": _t("2026-03-01T15:00:59.5"),
            "duration_s": 59.5,
        },
    ]


async def test_bi_runs_carries_run_columns_for_filtering(seeded: AsyncEngine) -> None:
    rows = await _rows(
        seeded,
        'SELECT run_id, use_case_id, version_id, "timestamp", fetched_at FROM bi_runs'
        " WHERE use_case_id = :u",
        u=U2,
    )
    assert rows == [
        {
            "run_id": R4,
            "use_case_id": U2,
            "version_id": V_MISSING,
            "timestamp": _t("2026-03-01T12:00:00"),
            "fetched_at": None,
        }
    ]


@pytest.mark.parametrize("session_tz", ["UTC", "America/Los_Angeles", "Asia/Tokyo"])
async def test_bi_daily_runs_groups_by_utc_day_use_case_status_annotation(
    seeded: AsyncEngine, session_tz: str
) -> None:
    rows = await _rows(
        seeded,
        "SELECT day, use_case_id, status, annotation, runs, avg_duration_s, runs_with_issues,"
        " issues, events FROM bi_daily_runs ORDER BY day, use_case_id, status",
        tz=session_tz,
    )
    day1, day2 = dt.date(2026, 3, 1), dt.date(2026, 3, 2)
    assert rows == [
        # R1 (120 s), R2 (60.5 s, 23:30 UTC: still March 1st) and R5 (59.5 s).
        {
            "day": day1,
            "use_case_id": U1,
            "status": "completed",
            "annotation": "correct",
            "runs": 3,
            "avg_duration_s": 80.0,
            "runs_with_issues": 2,
            "issues": 3,
            "events": 8,
        },
        {
            "day": day1,
            "use_case_id": U2,
            "status": "running",
            "annotation": None,
            "runs": 1,
            "avg_duration_s": None,
            "runs_with_issues": 0,
            "issues": 0,
            "events": 0,
        },
        # R3 at 00:15 UTC: March 2nd in UTC, though March 1st in Los Angeles.
        {
            "day": day2,
            "use_case_id": U1,
            "status": "failed",
            "annotation": None,
            "runs": 1,
            "avg_duration_s": 0.0,
            "runs_with_issues": 1,
            "issues": 1,
            "events": 1,
        },
    ]


async def test_bi_issues_joins_run_and_version_context_and_time_to_close(
    seeded: AsyncEngine,
) -> None:
    rows = await _rows(
        seeded,
        "SELECT issue_id, run_id, use_case_id, status, priority, run_status, run_annotation,"
        " run_timestamp, version_id, version_name, version_number, closed_at, time_to_close_s"
        " FROM bi_issues ORDER BY issue_id",
    )
    assert rows == [
        {
            "issue_id": I1,
            "run_id": R1,
            "use_case_id": U1,
            "status": "closed",
            "priority": "high",
            "run_status": "completed",
            "run_annotation": "correct",
            "run_timestamp": _t("2026-03-01T10:00:00"),
            "version_id": V1,
            "version_name": "Carrier sales",
            "version_number": 3,
            "closed_at": _t("2026-03-01T13:30:00"),
            "time_to_close_s": 9000.0,
        },
        # Open: its updated_at is an edit, not a close.
        {
            "issue_id": I2,
            "run_id": R1,
            "use_case_id": U1,
            "status": "open",
            "priority": "low",
            "run_status": "completed",
            "run_annotation": "correct",
            "run_timestamp": _t("2026-03-01T10:00:00"),
            "version_id": V1,
            "version_name": "Carrier sales",
            "version_number": 3,
            "closed_at": None,
            "time_to_close_s": None,
        },
        # The issue's own run_version_id (V2) wins over its run's (V1); use case from the run.
        {
            "issue_id": I3,
            "run_id": R3,
            "use_case_id": U1,
            "status": "approved",
            "priority": "medium",
            "run_status": "failed",
            "run_annotation": None,
            "run_timestamp": _t("2026-03-02T00:15:00"),
            "version_id": V2,
            "version_name": "Carrier sales",
            "version_number": 4,
            "closed_at": _t("2026-03-02T00:21:00"),
            "time_to_close_s": 60.0,
        },
        # No run_version_id: the run's version.
        {
            "issue_id": I4,
            "run_id": R5,
            "use_case_id": U1,
            "status": "rejected",
            "priority": "high",
            "run_status": "completed",
            "run_annotation": "correct",
            "run_timestamp": _t("2026-03-01T15:00:00"),
            "version_id": V1,
            "version_name": "Carrier sales",
            "version_number": 3,
            "closed_at": _t("2026-03-02T16:00:00"),
            "time_to_close_s": 86400.0,
        },
    ]


async def test_views_follow_reingest_of_a_run(seeded: AsyncEngine) -> None:
    """Plain views: a run re-ingested with fewer events and no issues shows at once."""
    async with seeded.begin() as conn:
        await conn.execute(text("DELETE FROM run_issues WHERE run_id = :r"), {"r": R1})
        await conn.execute(text("DELETE FROM run_events WHERE run_id = :r AND seq > 0"), {"r": R1})
    rows = await _rows(
        seeded,
        "SELECT event_count, issue_count, duration_s FROM bi_runs WHERE run_id = :r",
        r=R1,
    )
    assert rows == [{"event_count": 1, "issue_count": 0, "duration_s": 0.0}]
    issues = await _rows(seeded, "SELECT issue_id FROM bi_issues ORDER BY issue_id")
    assert [r["issue_id"] for r in issues] == [I3, I4]


async def test_views_live_in_the_configured_schema_and_downgrade_drops_them(
    engine: AsyncEngine, settings: Settings
) -> None:
    sql = (
        "SELECT table_name FROM information_schema.views"
        " WHERE table_schema = :s ORDER BY table_name"
    )
    names = ["bi_daily_runs", "bi_issues", "bi_runs"]
    assert [r["table_name"] for r in await _rows(engine, sql, s=settings.db_schema)] == names
    await migrate.downgrade(engine, "0001")
    assert await _rows(engine, sql, s=settings.db_schema) == []
    assert await migrate.current_revision(engine) == "0001"
    await migrate.upgrade(engine)
    assert [r["table_name"] for r in await _rows(engine, sql, s=settings.db_schema)] == names
    assert await migrate.drift(engine) == []


def _readme_dashboard_queries() -> list[str]:
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    section = readme.split("## Dashboards (BI views)", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```sql\n(.*?)```", section, flags=re.S)
    return [b for b in blocks if b.lstrip().upper().startswith("SELECT")]


async def test_readme_dashboard_queries_run_and_give_the_known_figures(
    seeded: AsyncEngine,
) -> None:
    daily, per_version = _readme_dashboard_queries()
    assert await _rows(seeded, daily) == [
        {
            "day": dt.date(2026, 3, 1),
            "runs": 4,
            "completed": 3,
            "failed": 0,
            "flagged": 0,
            "pct_with_issues": Decimal("50.0"),
        },
        {
            "day": dt.date(2026, 3, 2),
            "runs": 1,
            "completed": 0,
            "failed": 1,
            "flagged": 0,
            "pct_with_issues": Decimal("100.0"),
        },
    ]
    # Version 3: I1 (2.5 h) and I4 (24 h) settled, I2 open; version 4: I3 (1 min).
    assert await _rows(seeded, per_version) == [
        {
            "version_name": "Carrier sales",
            "version_number": 4,
            "open_issues": 0,
            "settled_issues": 1,
            "median_hours_to_settle": Decimal("0.02"),
        },
        {
            "version_name": "Carrier sales",
            "version_number": 3,
            "open_issues": 1,
            "settled_issues": 2,
            "median_hours_to_settle": Decimal("13.25"),
        },
    ]
