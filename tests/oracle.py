"""The oracle: every row checked against the raw payload it came from, and the queue settled.

Read straight from the stored bodies' JSON, independently of `ingest.normalize`. Used by the
fault tests and `bench/soak.py`.
"""

from __future__ import annotations

import hashlib
import uuid
from dataclasses import dataclass
from typing import Any

import orjson
from alembic.script import ScriptDirectory
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from ingest import archive
from ingest.db import migrate

TERMINAL = ("completed", "canceled", "failed")


def _uuid_or_none(value: Any) -> uuid.UUID | None:
    try:
        return uuid.UUID(value) if isinstance(value, str) else None
    except ValueError:
        return None


@dataclass
class Described:
    """The row counts and issue ids a stored raw body describes, read straight from its JSON,
    independently of ingest.normalize."""

    events: int
    intermediates: int
    sessions: int
    messages: int
    tool_calls: int
    issues: set[uuid.UUID]

    @classmethod
    def of(cls, body: bytes) -> Described:
        doc = orjson.loads(body)
        events = [e if isinstance(e, dict) else {} for e in doc.get("events") or []]
        calls = [e for e in events if e.get("type") == "session"]
        messages = [m or {} for c in calls for m in c.get("messages") or []]
        return cls(
            events=len(events),
            intermediates=sum(
                1
                for e in events
                if e.get("type") != "session" and isinstance(e.get("intermediate"), dict)
            ),
            sessions=len(calls),
            messages=len(messages),
            tool_calls=sum(len(m.get("tool_calls") or []) for m in messages),
            issues={
                parsed
                for i in doc.get("issues") or []
                if isinstance(i, dict) and (parsed := _uuid_or_none(i.get("id"))) is not None
            },
        )


async def check_rows(engine: AsyncEngine) -> list[str]:
    """Every discrepancy between the tables, the queue and the stored raw payloads (empty
    when all is right): per run, its events, intermediates and issues are exactly what its
    stored body lists, nothing twice and nothing stale; the queue is settled."""
    problems: list[str] = []
    async with engine.connect() as conn:

        async def counts(sql: str) -> dict[uuid.UUID, int]:
            return {r[0]: r[1] for r in await conn.execute(text(sql))}

        payloads = {
            r.run_id: (archive.unpack(r.body, r.encoding), r.sha256)
            for r in await conn.execute(
                text("SELECT run_id, body, encoding, sha256 FROM run_payloads")
            )
        }
        runs = {
            r.id: r.payload_sha256
            for r in await conn.execute(
                text("SELECT id, payload_sha256 FROM runs WHERE fetched_at IS NOT NULL")
            )
        }
        events = await counts("SELECT run_id, count(*) FROM run_events GROUP BY 1")
        gaps = await counts(
            "SELECT run_id, count(*) FROM run_events GROUP BY 1 HAVING max(seq) + 1 <> count(*)"
        )
        inters = await counts("SELECT run_id, count(*) FROM event_intermediates GROUP BY 1")
        sessions = await counts("SELECT run_id, count(*) FROM run_sessions GROUP BY 1")
        messages = await counts("SELECT run_id, count(*) FROM session_messages GROUP BY 1")
        tool_calls = await counts("SELECT run_id, count(*) FROM message_tool_calls GROUP BY 1")
        issue_rows = {
            r[0]: r[1] for r in await conn.execute(text("SELECT id, run_id FROM run_issues"))
        }
        queue_rows = list(
            await conn.execute(
                text(
                    "SELECT q.run_id, q.state, q.awaiting_terminal, q.last_error, r.status,"
                    " d.run_id IS NOT NULL AS lettered, d.reason"
                    " FROM ingest_queue q LEFT JOIN runs r ON r.id = q.run_id"
                    " LEFT JOIN dead_letters d ON d.run_id = q.run_id"
                )
            )
        )
        orphan_letters = (
            await conn.execute(
                text(
                    "SELECT count(*) FROM dead_letters d JOIN ingest_queue q USING (run_id)"
                    " WHERE q.state <> 'dead'"
                )
            )
        ).scalar_one()
    if set(runs) != set(payloads):
        problems.append(
            f"runs fetched without a payload or vice versa: {set(runs) ^ set(payloads)}"
        )
    all_issues: set[uuid.UUID] = set()
    for run_id, (body, sha) in payloads.items():
        want = Described.of(body)
        all_issues |= want.issues
        if hashlib.sha256(body).hexdigest() != sha or runs.get(run_id) != sha:
            problems.append(f"{run_id}: payload hash does not match its body or its run")
        if run_id in gaps:
            problems.append(f"{run_id}: its events' seq have gaps")
        for name, stored, wanted in (
            ("events", events, want.events),
            ("intermediates", inters, want.intermediates),
            ("sessions", sessions, want.sessions),
            ("messages", messages, want.messages),
            ("tool calls", tool_calls, want.tool_calls),
        ):
            if stored.get(run_id, 0) != wanted:
                problems.append(f"{run_id}: {stored.get(run_id, 0)} {name}, body has {wanted}")
        # An issue listed by two runs is stored once, under one of them.
        if any(issue_rows.get(i) is None for i in want.issues):
            problems.append(f"{run_id}: an issue of its body is missing")
    if set(issue_rows) != all_issues:
        problems.append(f"{len(set(issue_rows) ^ all_issues)} issues differ from the bodies'")
    for child in (events, inters, sessions, messages, tool_calls):
        if set(child) - set(payloads):
            problems.append(f"rows of runs without a payload: {set(child) - set(payloads)}")
    for q in queue_rows:
        if q.state == "done" and q.run_id not in payloads:
            problems.append(f"{q.run_id}: done but nothing stored")
        elif q.state == "dead" and not (q.lettered and q.reason and q.last_error):
            problems.append(f"{q.run_id}: dead without a dead letter and a reason")
        elif q.state == "pending" and not (q.awaiting_terminal and q.status not in TERMINAL):
            problems.append(f"{q.run_id}: still pending ({q.last_error})")
        elif q.state == "running":
            problems.append(f"{q.run_id}: still running")
    if orphan_letters:
        problems.append(f"{orphan_letters} dead letters of runs that are not dead")
    return problems


# -- stored figures ----------------------------------------------------------------------------

RUN_FACTS = (
    "event_count, first_event_at, last_event_at, issue_count, session_count, call_duration,"
    " any_connected"
)
SESSION_FACTS = (
    "use_case_id, version_id, messages, assistant_turns, user_turns, tool_turns, event_turns,"
    " interruptions, fillers, natural_cuts, tool_calls, first_assistant_at, latency_llm_p50,"
    " latency_llm_p95, latency_tts_p50, latency_tts_p95, latency_turn_p50, latency_turn_p95,"
    " tools"
)
ISSUE_FACTS = "counted_use_case_id, counted_version_id"


def _revision(name: str) -> Any:
    return ScriptDirectory.from_config(migrate.alembic_config()).get_revision(name).module


async def stored_bodies(engine: AsyncEngine) -> dict[uuid.UUID, bytes]:
    """Every stored raw body, as received."""
    async with engine.connect() as conn:
        rows = await conn.execute(text("SELECT run_id, body, encoding FROM run_payloads"))
        return {r.run_id: archive.unpack(r.body, r.encoding) for r in rows}


async def recount_facts(engine: AsyncEngine) -> None:
    """Store every run's and session's figures as SQL computes them from the child rows: the
    backfill of migration 0009, with the expressions the views used before (0004). What a
    hand-seeded test writes instead of a fetch, and what stored figures are checked against."""
    v0004, v0009 = _revision("0004"), _revision("0009")
    async with engine.begin() as conn:
        await conn.exec_driver_sql(v0009._fill_sessions(v0004))
        await conn.exec_driver_sql(v0009._fill_runs(v0004))
        await conn.exec_driver_sql("UPDATE run_sessions SET tools = '[]'")
        for sql in _revision("0012")._FILL:
            await conn.exec_driver_sql(sql)


async def stored_facts(engine: AsyncEngine) -> tuple[list[tuple[Any, ...]], ...]:
    """Every run's, session's and issue's stored figures, in key order."""
    async with engine.connect() as conn:
        runs = await conn.execute(text(f"SELECT id, {RUN_FACTS} FROM runs ORDER BY id"))
        sessions = await conn.execute(
            text(f"SELECT run_id, seq, {SESSION_FACTS} FROM run_sessions ORDER BY run_id, seq")
        )
        issues = await conn.execute(text(f"SELECT id, {ISSUE_FACTS} FROM run_issues ORDER BY id"))
        return [tuple(r) for r in runs], [tuple(s) for s in sessions], [tuple(i) for i in issues]
