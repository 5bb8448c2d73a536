"""The BI views (migrations 0002 and 0004) against a small, hand-made set of rows with known
figures."""

from __future__ import annotations

import datetime as dt
import hashlib
import re
import uuid
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from ingest import rollup
from ingest.config import Settings
from ingest.db import migrate
from ingest.db.driver import driver_connection
from tests.oracle import recount_facts

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
    {"id": V1, "name": "Carrier sales", "version_number": 3, "environment": "production"},
    {"id": V2, "name": "Carrier sales", "version_number": 4, "environment": "staging"},
]
# U2 is not in use_cases: discover/sync has not refreshed the catalog since it appeared.
USE_CASES = [(U1, "Inbound carrier sales")]

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

# Sessions (calls). Their own run_events rows (type 'session') are left out: the views read
# sessions from run_sessions only, and the event figures above stay those of 0002's tests.
# (run, seq, id, timestamp, duration, sip_code, sip_reason)
SESSIONS = [
    # R1 calls twice: a call with a transcript, then a callback its carrier reports as 200 OK.
    (R1, 4, "call-1", "2026-03-01T10:00:05", 95.5, None, None),
    (R1, 5, "call-2", "2026-03-01T10:01:50", 30.0, "200", "OK"),
    # Busy: no transcript at all.
    (R2, 2, "call-3", "2026-03-01T23:30:10", 0.0, "486", "Busy Here"),
]
STAGES = ("network", "initial_wait", "transcriber", "eos", "eos_wait", "llm", "tts")
# Latency breakdowns (ms): every stage but llm and tts, which each turn sets: 200 ms.
FULL = {"network": 20, "initial_wait": 10, "transcriber": 50, "eos": 100, "eos_wait": 20}
# The greeting follows no user speech: no transcriber/eos stages. Turn: 420 ms.
GREETING = {"network": 20, "initial_wait": 0, "llm": 300, "tts": 100}
# All on March 1st: (run, session seq, seq, role, time, is_filler, is_interrupted,
# is_natural_cut, latency)
MESSAGES = [
    (R1, 4, 0, "event", "10:00:05", None, None, None, None),
    (R1, 4, 1, "assistant", "10:00:06.5", False, False, False, GREETING),
    (R1, 4, 2, "user", "10:00:09", False, False, True, None),
    # A filler: no LLM stage. Turn: 280 ms.
    (R1, 4, 3, "assistant", "10:00:10", True, False, False, dict(FULL, tts=80)),
    # Calls two tools. Turn: 800 ms.
    (R1, 4, 4, "assistant", "10:00:11", False, False, False, dict(FULL, llm=500, tts=100)),
    (R1, 4, 5, "tool", "10:00:11.5", None, None, None, None),
    # Interrupted, and no breakdown at all: no turn latency (not 0).
    (R1, 4, 6, "assistant", "10:00:13", False, True, False, None),
    (R1, 4, 7, "user", "10:00:14", None, None, None, None),
    # Calls one tool. Turn: 720 ms.
    (R1, 4, 8, "assistant", "10:00:16", False, False, True, dict(FULL, llm=400, tts=120)),
    # The callback's greeting. Turn: 340 ms.
    (R1, 5, 0, "assistant", "10:01:52", False, False, False, {"llm": 250, "tts": 90}),
    (R1, 5, 1, "user", "10:01:55", False, False, False, None),
]
# (run, session seq, message seq, seq, name, arguments)
TOOL_CALLS = [
    (R1, 4, 4, 0, "find_load", '{"reference": "L-1001"}'),
    (R1, 4, 4, 1, "check_rate", '{"lane": "DAL-ATL", "rate": 2100}'),
    (R1, 4, 8, 0, "find_load", '{"reference": "L-1002"}'),
]


async def _seed(engine: AsyncEngine) -> None:
    fetched = _t("2026-03-03T00:00:00")
    async with engine.begin() as conn:
        await conn.execute(
            text(
                "INSERT INTO versions (id, name, version_number, environment, use_case_id,"
                " fetched_at) VALUES (:id, :name, :version_number, :environment, :u, :f)"
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
        await conn.execute(
            text("INSERT INTO use_cases (id, name, refreshed_at) VALUES (:id, :name, :f)"),
            [{"id": u, "name": n, "f": fetched} for u, n in USE_CASES],
        )
        await conn.execute(
            text(
                'INSERT INTO run_sessions (run_id, seq, id, "timestamp", duration, sip_code,'
                " sip_reason) VALUES (:r, :seq, :id, :t, :d, :code, :reason)"
            ),
            [
                {"r": r, "seq": q, "id": i, "t": _t(t), "d": d, "code": c, "reason": why}
                for r, q, i, t, d, c, why in SESSIONS
            ],
        )
        stages = ", ".join(f"latency_{s}" for s in STAGES)
        await conn.execute(
            text(
                "INSERT INTO session_messages (run_id, session_seq, seq, id, role, content,"
                f' "timestamp", is_filler, is_interrupted, is_natural_cut, {stages})'
                " VALUES (:r, :ss, :seq, :id, :role, 'text', :t, :f, :i, :n, "
                + ", ".join(f":{s}" for s in STAGES)
                + ")"
            ),
            [
                {
                    "r": r,
                    "ss": ss,
                    "seq": q,
                    "id": uuid.uuid4(),
                    "role": role,
                    "t": _t(f"2026-03-01T{t}"),
                    "f": f,
                    "i": i,
                    "n": n,
                    **{s: (lat or {}).get(s) for s in STAGES},
                }
                for r, ss, q, role, t, f, i, n, lat in MESSAGES
            ],
        )
        await conn.execute(
            text(
                "INSERT INTO message_tool_calls (run_id, session_seq, message_seq, seq, name,"
                " arguments) VALUES (:r, :ss, :ms, :seq, :name, :a)"
            ),
            [
                {"r": r, "ss": ss, "ms": ms, "seq": q, "name": n, "a": a}
                for r, ss, ms, q, n, a in TOOL_CALLS
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
    await recount_facts(engine)  # what a fetch stores with the rows (tests/test_facts.py)
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


def _call(**figures: object) -> dict[str, object]:
    """A bi_calls row of R1/R2 (use case U1): its run's context, then the given figures."""
    return {
        "org_id": None,
        "use_case_id": U1,
        "use_case_name": "Inbound carrier sales",
        "run_status": "completed",
        "run_annotation": "correct",
        **figures,
    }


_NO_TURNS = dict.fromkeys(
    (
        "messages",
        "assistant_turns",
        "user_turns",
        "tool_turns",
        "event_turns",
        "interruptions",
        "fillers",
        "natural_cuts",
        "tool_calls",
    ),
    0,
)


async def test_bi_calls_has_one_row_per_session_with_turns_and_latencies(
    seeded: AsyncEngine,
) -> None:
    rows = await _rows(seeded, "SELECT * FROM bi_calls ORDER BY run_id, session_seq")
    # Percentiles interpolate in floating point: 489.99999999999994 for 490.
    rounded = [{k: round(v, 9) if isinstance(v, float) else v for k, v in r.items()} for r in rows]
    assert rounded == [
        _call(
            run_id=R1,
            session_seq=4,
            session_id="call-1",
            version_id=V1,
            version_name="Carrier sales",
            version_number=3,
            environment="production",
            timestamp=_t("2026-03-01T10:00:05"),
            duration=95.5,
            connected=True,
            sip_code=None,
            sip_reason=None,
            messages=9,
            assistant_turns=5,
            user_turns=2,
            tool_turns=1,
            event_turns=1,
            interruptions=1,
            fillers=1,
            natural_cuts=2,
            tool_calls=3,
            time_to_first_word_s=1.5,
            # llm 300, 500, 400 (the filler and the turn without breakdown have none).
            latency_llm_p50=400.0,
            latency_llm_p95=490.0,
            # tts 100, 80, 100, 120.
            latency_tts_p50=100.0,
            latency_tts_p95=117.0,
            # Turns 420, 280, 800, 720: the interrupted turn without breakdown is left
            # out, the greeting's missing stages count 0.
            latency_turn_p50=570.0,
            latency_turn_p95=788.0,
        ),
        # SIP 200 OK: connected.
        _call(
            run_id=R1,
            session_seq=5,
            session_id="call-2",
            version_id=V1,
            version_name="Carrier sales",
            version_number=3,
            environment="production",
            timestamp=_t("2026-03-01T10:01:50"),
            duration=30.0,
            connected=True,
            sip_code="200",
            sip_reason="OK",
            **dict(_NO_TURNS, messages=2, assistant_turns=1, user_turns=1),
            time_to_first_word_s=2.0,
            latency_llm_p50=250.0,
            latency_llm_p95=250.0,
            latency_tts_p50=90.0,
            latency_tts_p95=90.0,
            latency_turn_p50=340.0,
            latency_turn_p95=340.0,
        ),
        # Busy: not connected, no transcript, so no figures but zero counts.
        _call(
            run_id=R2,
            session_seq=2,
            session_id="call-3",
            version_id=V2,
            version_name="Carrier sales",
            version_number=4,
            environment="staging",
            timestamp=_t("2026-03-01T23:30:10"),
            duration=0.0,
            connected=False,
            sip_code="486",
            sip_reason="Busy Here",
            **_NO_TURNS,
            time_to_first_word_s=None,
            latency_llm_p50=None,
            latency_llm_p95=None,
            latency_tts_p50=None,
            latency_tts_p95=None,
            latency_turn_p50=None,
            latency_turn_p95=None,
        ),
    ]


@pytest.mark.parametrize(
    ("sip_code", "connected"),
    [(None, True), ("", True), ("200", True), (" 202 ", True), ("486", False), ("2000", False)],
)
async def test_bi_calls_connected_is_no_sip_code_or_a_2xx(
    seeded: AsyncEngine, sip_code: str | None, connected: bool
) -> None:
    async with seeded.begin() as conn:
        await conn.execute(
            text("UPDATE run_sessions SET sip_code = :c WHERE run_id = :r"),
            {"c": sip_code, "r": R2},
        )
    rows = await _rows(seeded, "SELECT connected FROM bi_calls WHERE run_id = :r", r=R2)
    assert rows == [{"connected": connected}]


async def test_bi_tool_calls_has_one_row_per_tool_call(seeded: AsyncEngine) -> None:
    rows = await _rows(
        seeded,
        "SELECT * FROM bi_tool_calls ORDER BY run_id, session_seq, message_seq, tool_call_seq",
    )
    context = {
        "run_id": R1,
        "session_seq": 4,
        "use_case_id": U1,
        "use_case_name": "Inbound carrier sales",
        "session_timestamp": _t("2026-03-01T10:00:05"),
    }
    assert rows == [
        dict(
            context,
            message_seq=4,
            tool_call_seq=0,
            tool_name="find_load",
            arguments='{"reference": "L-1001"}',
            timestamp=_t("2026-03-01T10:00:11"),
        ),
        dict(
            context,
            message_seq=4,
            tool_call_seq=1,
            tool_name="check_rate",
            arguments='{"lane": "DAL-ATL", "rate": 2100}',
            timestamp=_t("2026-03-01T10:00:11"),
        ),
        dict(
            context,
            message_seq=8,
            tool_call_seq=0,
            tool_name="find_load",
            arguments='{"reference": "L-1002"}',
            timestamp=_t("2026-03-01T10:00:16"),
        ),
    ]


async def test_run_views_carry_the_use_case_name_and_bi_runs_its_calls(
    seeded: AsyncEngine,
) -> None:
    runs = await _rows(
        seeded,
        "SELECT run_id, use_case_name, session_count, call_duration, any_connected FROM bi_runs"
        " ORDER BY run_id",
    )
    name = "Inbound carrier sales"
    no_call = {"session_count": 0, "call_duration": None, "any_connected": None}
    assert runs == [
        {
            "run_id": R1,
            "use_case_name": name,
            "session_count": 2,
            "call_duration": 125.5,
            "any_connected": True,
        },
        {
            "run_id": R2,
            "use_case_name": name,
            "session_count": 1,
            "call_duration": 0.0,
            "any_connected": False,
        },
        {"run_id": R3, "use_case_name": name, **no_call},
        # U2 is not in use_cases yet.
        {"run_id": R4, "use_case_name": None, **no_call},
        {"run_id": R5, "use_case_name": name, **no_call},
    ]
    daily = await _rows(
        seeded,
        "SELECT day, use_case_id, status, use_case_name FROM bi_daily_runs"
        " ORDER BY day, use_case_id, status",
    )
    day1, day2 = dt.date(2026, 3, 1), dt.date(2026, 3, 2)
    assert daily == [
        {"day": day1, "use_case_id": U1, "status": "completed", "use_case_name": name},
        {"day": day1, "use_case_id": U2, "status": "running", "use_case_name": None},
        {"day": day2, "use_case_id": U1, "status": "failed", "use_case_name": name},
    ]
    # I3 has no use case of its own: its run's names it.
    issues = await _rows(seeded, "SELECT issue_id, use_case_name FROM bi_issues ORDER BY issue_id")
    assert issues == [{"issue_id": i, "use_case_name": name} for i in (I1, I2, I3, I4)]


async def test_calls_stay_when_their_use_case_is_not_in_the_catalog(seeded: AsyncEngine) -> None:
    async with seeded.begin() as conn:
        await conn.execute(text("DELETE FROM use_cases"))
    calls = await _rows(seeded, "SELECT run_id, use_case_id, use_case_name FROM bi_calls")
    assert sorted(calls, key=lambda r: r["run_id"]) == [
        {"run_id": r, "use_case_id": U1, "use_case_name": None} for r in (R1, R1, R2)
    ]
    tools = await _rows(seeded, "SELECT use_case_name FROM bi_tool_calls")
    assert tools == [{"use_case_name": None}] * 3


async def _plan(engine: AsyncEngine, sql: str) -> list[dict[str, Any]]:
    """The nodes of the executed plan of `sql` (EXPLAIN ANALYZE), flattened."""
    async with engine.connect() as conn:
        plan = (await conn.execute(text(f"EXPLAIN (ANALYZE, FORMAT JSON) {sql}"))).scalar_one()
    nodes, todo = [], [plan[0]["Plan"]]
    while todo:
        node = todo.pop()
        nodes.append(node)
        todo.extend(node.get("Plans", []))
    return nodes


def _reads(nodes: list[dict[str, Any]], table: str) -> int:
    """Rows the plan took from `table`, every loop counted."""
    return sum(
        round(n["Actual Rows"] * n["Actual Loops"])
        for n in nodes
        if n.get("Relation Name") == table
    )


async def test_call_views_read_stored_figures_and_filters_only_the_matching_sessions(
    engine: AsyncEngine,
) -> None:
    """3,000 calls of ten turns, one every 2 hours over 250 days, in 10 use cases."""
    async with engine.begin() as conn:
        for sql in (
            "INSERT INTO use_cases (id, name, refreshed_at)"
            " SELECT md5('uc' || g)::uuid, 'use case ' || g, now() FROM generate_series(0, 9) g",
            'INSERT INTO runs (id, use_case_id, status, "timestamp", fetched_at)'
            " SELECT md5('run' || g)::uuid, md5('uc' || g % 10)::uuid, 'completed',"
            " '2026-01-01'::timestamptz + g * interval '2 hours', now()"
            " FROM generate_series(1, 3000) g",
            'INSERT INTO run_sessions (run_id, seq, "timestamp", duration, sip_code)'
            ' SELECT id, 1, "timestamp", 60, NULL FROM runs',
            'INSERT INTO session_messages (run_id, session_seq, seq, role, "timestamp",'
            " latency_llm, latency_tts)"
            " SELECT s.run_id, 1, m, CASE WHEN m % 2 = 0 THEN 'assistant' ELSE 'user' END,"
            " s.\"timestamp\" + m * interval '3 seconds', 300 + m, 90 + m"
            " FROM run_sessions AS s, generate_series(0, 9) AS m",
            "INSERT INTO message_tool_calls (run_id, session_seq, message_seq, seq, name)"
            " SELECT run_id, 1, 2, 0, 'find_load' FROM run_sessions",
        ):
            await conn.execute(text(sql))
    await recount_facts(engine)
    async with engine.begin() as conn:
        await conn.execute(text("ANALYZE"))
    transcripts = {"session_messages", "message_tool_calls"}

    # One run: through the primary key, and no transcript read: its figures are stored.
    nodes = await _plan(engine, f"SELECT * FROM bi_calls WHERE run_id = '{_md5_uuid('run7')}'")
    assert "pk_run_sessions" in {n.get("Index Name") for n in nodes}
    assert not transcripts & {n.get("Relation Name") for n in nodes}
    assert await _rows(
        engine,
        "SELECT messages, assistant_turns, tool_calls, latency_llm_p50 FROM bi_calls"
        " WHERE run_id = :r",
        r=_md5_uuid("run7"),
    ) == [{"messages": 10, "assistant_turns": 5, "tool_calls": 1, "latency_llm_p50": 304.5}]

    # One day (12 calls): by the session timestamp index, no table scanned whole.
    day = "\"timestamp\" >= '2026-03-01' AND \"timestamp\" < '2026-03-02'"
    nodes = await _plan(engine, f"SELECT * FROM bi_calls WHERE {day}")
    assert "ix_run_sessions_timestamp" in {n.get("Index Name") for n in nodes}
    assert _reads(nodes, "run_sessions") == 12
    big = {"runs", "run_sessions", *transcripts}
    assert not [n for n in nodes if n.get("Relation Name") in big and n["Node Type"] == "Seq Scan"]

    # A calls chart by use case (the dashboards page's) reads run_sessions and the names only:
    # the use case is stored on the session, and runs is joined only for status or org.
    nodes = await _plan(
        engine,
        "SELECT use_case_name, count(*), count(*) FILTER (WHERE connected),"
        " avg(time_to_first_word_s), avg(latency_llm_p95) FROM bi_calls"
        f" WHERE {day} GROUP BY use_case_id, use_case_name",
    )
    assert {n.get("Relation Name") for n in nodes} - {None} == {"run_sessions", "use_cases"}

    # bi_daily_runs reads its rollup, no run at all (tests/test_rollup.py).
    nodes = await _plan(engine, "SELECT * FROM bi_daily_runs")
    assert {n.get("Relation Name") for n in nodes} - {None} == {"daily_run_counts", "use_cases"}


def _md5_uuid(s: str) -> uuid.UUID:
    """PostgreSQL's md5(s)::uuid."""
    return uuid.UUID(hashlib.md5(s.encode()).hexdigest())


async def _view_definitions(engine: AsyncEngine, schema: str) -> dict[str, str]:
    rows = await _rows(
        engine,
        "SELECT table_name, view_definition FROM information_schema.views WHERE table_schema = :s",
        s=schema,
    )
    return {r["table_name"]: r["view_definition"] for r in rows}


_RUN_FIGURES = (
    "SELECT run_id, use_case_id, version_name, status, event_count, issue_count, duration_s"
    " FROM bi_runs ORDER BY run_id"
)


async def test_downgrade_restores_0002_views_on_a_populated_schema_and_upgrade_again(
    seeded: AsyncEngine, settings: Settings
) -> None:
    runs = await _rows(seeded, _RUN_FIGURES)
    calls = await _rows(seeded, "SELECT * FROM bi_calls ORDER BY run_id, session_seq")
    assert len(runs) == 5 and len(calls) == 3

    # Down to 0003: the views are 0002's again, the sessions are still in their tables.
    await migrate.downgrade(seeded, "0003")
    restored = await _view_definitions(seeded, settings.db_schema)
    assert sorted(restored) == ["bi_daily_runs", "bi_issues", "bi_runs"]
    assert await _rows(seeded, _RUN_FIGURES) == runs
    await migrate.upgrade(seeded)
    assert await _rows(seeded, "SELECT * FROM bi_calls ORDER BY run_id, session_seq") == calls

    # What 0002 itself creates, for comparison: down to 0001 (drops the views, and 0003's
    # tables with the sessions), then up to 0002.
    await migrate.downgrade(seeded, "0001")
    await migrate.upgrade(seeded, "0002")
    assert await _view_definitions(seeded, settings.db_schema) == restored

    await migrate.upgrade(seeded)
    assert await _rows(seeded, _RUN_FIGURES) == runs
    assert await _rows(seeded, "SELECT * FROM bi_calls") == []
    assert await migrate.drift(seeded) == []


async def test_views_follow_reingest_of_a_run(seeded: AsyncEngine) -> None:
    """Plain views: a run re-ingested with fewer events and no issues shows at once."""
    async with seeded.begin() as conn:
        await conn.execute(text("DELETE FROM run_issues WHERE run_id = :r"), {"r": R1})
        await conn.execute(text("DELETE FROM run_events WHERE run_id = :r AND seq > 0"), {"r": R1})
    await recount_facts(seeded)
    rows = await _rows(
        seeded,
        "SELECT event_count, issue_count, duration_s FROM bi_runs WHERE run_id = :r",
        r=R1,
    )
    assert rows == [{"event_count": 1, "issue_count": 0, "duration_s": 0.0}]
    issues = await _rows(seeded, "SELECT issue_id FROM bi_issues ORDER BY issue_id")
    assert [r["issue_id"] for r in issues] == [I3, I4]


async def test_call_views_follow_reingest_of_a_run(seeded: AsyncEngine) -> None:
    """R1 re-ingested: its callback is gone and its first call kept only the greeting."""
    async with seeded.begin() as conn:
        for table, seq in (
            ("message_tool_calls", "session_seq"),
            ("session_messages", "session_seq"),
            ("run_sessions", "seq"),
        ):
            await conn.execute(
                text(f"DELETE FROM {table} WHERE run_id = :r AND {seq} = 5"), {"r": R1}
            )
        await conn.execute(text("DELETE FROM message_tool_calls WHERE run_id = :r"), {"r": R1})
        await conn.execute(
            text("DELETE FROM session_messages WHERE run_id = :r AND seq > 1"), {"r": R1}
        )
    await recount_facts(seeded)
    calls = await _rows(
        seeded,
        "SELECT session_seq, messages, tool_calls, latency_turn_p95 FROM bi_calls"
        " WHERE run_id = :r",
        r=R1,
    )
    assert calls == [{"session_seq": 4, "messages": 2, "tool_calls": 0, "latency_turn_p95": 420.0}]
    runs = await _rows(
        seeded,
        "SELECT session_count, call_duration, any_connected FROM bi_runs WHERE run_id = :r",
        r=R1,
    )
    assert runs == [{"session_count": 1, "call_duration": 95.5, "any_connected": True}]
    assert await _rows(seeded, "SELECT run_id FROM bi_tool_calls") == []


async def test_views_live_in_the_configured_schema_and_downgrade_drops_them(
    engine: AsyncEngine, settings: Settings
) -> None:
    sql = (
        "SELECT table_name FROM information_schema.views"
        " WHERE table_schema = :s ORDER BY table_name"
    )
    # bi_run_data too: db upgrade makes it after the migrations (ingest.db.run_data).
    names = [
        "bi_calls",
        "bi_daily_call_percentiles",
        "bi_daily_calls",
        "bi_daily_issues",
        "bi_daily_runs",
        "bi_daily_tool_calls",
        "bi_issues",
        "bi_run_data",
        "bi_runs",
        "bi_tool_calls",
    ]
    assert [r["table_name"] for r in await _rows(engine, sql, s=settings.db_schema)] == names
    await migrate.downgrade(engine, "0001")
    assert await _rows(engine, sql, s=settings.db_schema) == []
    assert await migrate.current_revision(engine) == "0001"
    await migrate.upgrade(engine)
    assert [r["table_name"] for r in await _rows(engine, sql, s=settings.db_schema)] == names
    assert await migrate.drift(engine) == []


def _dashboard_page_queries() -> list[str]:
    """The queries of the dashboards page (docs/dashboards.md, linked from the README)."""
    page = (Path(__file__).resolve().parents[1] / "docs" / "dashboards.md").read_text()
    blocks = re.findall(r"```sql\n(.*?)```", page, flags=re.S)
    return [b for b in blocks if b.lstrip().upper().startswith("SELECT")]


async def test_dashboard_page_queries_run_and_give_the_known_figures(
    seeded: AsyncEngine,
) -> None:
    daily, per_version, _, _, _ = _dashboard_page_queries()
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
            "mean_hours_to_settle": Decimal("0.02"),
        },
        {
            "version_name": "Carrier sales",
            "version_number": 3,
            "open_issues": 1,
            "settled_issues": 2,
            "mean_hours_to_settle": Decimal("13.25"),
        },
    ]


async def test_the_call_dashboard_queries_run_and_give_the_known_figures(
    seeded: AsyncEngine,
) -> None:
    _, _, per_day, medians, tools = _dashboard_page_queries()
    # R1's two calls and R2's busy one (23:30 UTC: still March 1st), from the daily counts.
    # Talk: 95.5 s and 30 s connected; first words after 1.5 s and 2 s; the calls' LLM p95:
    # 490 and 250 ms (the busy call has none).
    assert await _rows(seeded, per_day) == [
        {
            "day": dt.date(2026, 3, 1),
            "use_case_name": "Inbound carrier sales",
            "calls": 3,
            "pct_connected": Decimal("66.7"),
            "mean_talk_s": Decimal("63"),
            "mean_first_word_s": Decimal("1.75"),
            "mean_call_llm_p95_ms": Decimal("370"),
        }
    ]
    # The medians of March 1st, once the worker's refresh has run (the seed writes by hand).
    # The calls' turn p95: 788 ms (turns of 280, 420, 720, 800 ms) and 340 ms; their p95: 765.6.
    week = medians.replace("current_date - 7", "'2026-02-24'")
    assert week != medians
    assert await _rows(seeded, week) == []
    async with seeded.begin() as conn:
        await rollup.compact(await driver_connection(conn), rollup.EVERY_DAY)
    assert await _rows(seeded, week) == [
        {
            "day": dt.date(2026, 3, 1),
            "use_case_name": "Inbound carrier sales",
            "calls": 3,
            "median_first_word_s": Decimal("1.75"),
            "typical_call_llm_p95_ms": Decimal("370"),
            "slow_call_turn_p95_ms": Decimal("766"),
        }
    ]
    assert await _rows(seeded, tools) == [
        {
            "use_case_name": "Inbound carrier sales",
            "tool_name": "find_load",
            "tool_calls": 2,
            "calls_using_it": 1,
        },
        {
            "use_case_name": "Inbound carrier sales",
            "tool_name": "check_rate",
            "tool_calls": 1,
            "calls_using_it": 1,
        },
    ]
