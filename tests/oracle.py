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
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

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
            r.run_id: (r.body, r.sha256)
            for r in await conn.execute(text("SELECT run_id, body, sha256 FROM run_payloads"))
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
