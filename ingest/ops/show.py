"""One run's story for `hr-ingest show RUN_ID`: its queue row, dead letter, stored run, raw
payload, drift notes and rows per table, read in one transaction so that they agree."""

from __future__ import annotations

import hashlib
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, cast

import orjson
from sqlalchemy.ext.asyncio import AsyncEngine

from ingest.db.driver import connection, driver_connection

# The tables a fetch writes for a run, in the order of a run's path.
ROW_TABLES = (
    "run_events",
    "event_intermediates",
    "run_sessions",
    "session_messages",
    "message_tool_calls",
    "run_issues",
)


@dataclass
class RunStory:
    run_id: uuid.UUID
    queue: dict[str, Any] | None = None  # its ingest_queue row
    dead: dict[str, Any] | None = None  # its dead letter, the body as bytes
    run: dict[str, Any] | None = None  # its runs row (a few columns)
    payload: dict[str, Any] | None = None  # size, encoding, sha256, fetched_at, drift notes
    rows: dict[str, int] = field(default_factory=dict)

    @property
    def found(self) -> bool:
        return any(x is not None for x in (self.queue, self.dead, self.run, self.payload))

    @property
    def dead_body_sha256(self) -> str | None:
        body = None if self.dead is None else self.dead["body"]
        return None if body is None else hashlib.sha256(body).hexdigest()


async def read(engine: AsyncEngine, run_id: uuid.UUID) -> RunStory:
    story = RunStory(run_id)
    async with connection(engine) as conn:
        await conn.execution_options(isolation_level="REPEATABLE READ")  # one snapshot
        await conn.begin()
        db = await driver_connection(conn)

        async def one(sql: str) -> dict[str, Any] | None:
            row = await db.fetchrow(sql, run_id)
            # keys(): a Record iterates over its values.
            return None if row is None else {k: row[k] for k in row.keys()}  # noqa: SIM118

        story.queue = await one(
            "SELECT state, source, priority, attempts, last_error, available_at,"
            " lease_owner, lease_expires_at, created_at, updated_at, finished_at, polls,"
            " landed_at, freshness_s FROM ingest_queue WHERE run_id = $1"
        )
        story.dead = await one(
            "SELECT kind, reason, http_status, attempts, created_at, body FROM dead_letters"
            " WHERE run_id = $1"
        )
        story.run = await one(
            "SELECT status, annotation, use_case_id, timestamp, completed_at, listed_at,"
            " fetched_at, updated_at FROM runs WHERE id = $1"
        )
        story.payload = await one(
            "SELECT octet_length(body) AS stored_bytes, encoding, sha256, fetched_at, drift"
            " FROM run_payloads WHERE run_id = $1"
        )
        if story.payload is not None:
            drift = story.payload["drift"]
            story.payload["drift"] = orjson.loads(drift) if isinstance(drift, str) else drift
        counts = await db.fetchrow(
            "SELECT "
            + ", ".join(f"(SELECT count(*) FROM {t} WHERE run_id = $1) AS {t}" for t in ROW_TABLES),
            run_id,
        )
        assert counts is not None
        story.rows = {t: cast(int, counts[t]) for t in ROW_TABLES}
    return story


def _at(value: object) -> str:
    return value.isoformat(timespec="seconds") if isinstance(value, datetime) else "-"


def render(story: RunStory) -> list[str]:
    """The story as lines for a person."""
    lines = [f"run {story.run_id}"]
    q = story.queue
    if q is None:
        lines.append("queue: not in the queue")
    else:
        lines.append(
            f"queue: {q['state']} (enqueued by {q['source']}, priority {q['priority']}),"
            f" attempts this round {q['attempts']}"
        )
        lines.append(
            f"  enqueued {_at(q['created_at'])}, due {_at(q['available_at'])},"
            f" last change {_at(q['updated_at'])}, finished {_at(q['finished_at'])}"
        )
        if q["state"] == "running":
            lines.append(f"  held by {q['lease_owner']} until {_at(q['lease_expires_at'])}")
        if q["polls"]:
            lines.append(f"  polled {q['polls']} times so far: not finished upstream yet")
        if q["landed_at"] is not None:
            fresh = q["freshness_s"]
            after = "" if fresh is None else f", {fresh:.1f} s after it completed"
            lines.append(f"  first stored finished {_at(q['landed_at'])}{after}")
        if q["last_error"]:
            lines.append(f"  last error: {q['last_error']}")
    d = story.dead
    if d is not None:
        body = d["body"]
        size = "no body" if body is None else f"body {len(body):,} bytes"
        lines.append(
            f"dead letter: {d['kind']}, {d['reason']} (HTTP {d['http_status'] or '-'},"
            f" {d['attempts']} attempts, {_at(d['created_at'])})"
        )
        if body is not None:
            lines.append(f"  {size}, sha256 {story.dead_body_sha256} (`--body` prints it)")
    r = story.run
    if r is None:
        lines.append("run: not stored")
    else:
        lines.append(
            f"run: {r['status']}, annotation {r['annotation'] or '-'}, use case"
            f" {r['use_case_id'] or '-'}, started {_at(r['timestamp'])}, completed"
            f" {_at(r['completed_at'])}"
        )
        lines.append(
            f"  listed {_at(r['listed_at'])}, fetched {_at(r['fetched_at'])}, stored"
            f" {_at(r['updated_at'])}"
        )
    p = story.payload
    if p is None:
        lines.append("payload: none stored")
    else:
        lines.append(
            f"payload: {p['stored_bytes']:,} bytes stored ({p['encoding']}), sha256"
            f" {p['sha256']}, fetched {_at(p['fetched_at'])} (`hr-ingest payload` prints it)"
        )
        for note in p["drift"]:
            lines.append(f"  drift: {note.get('kind')}: {note.get('detail')}")
    lines.append("rows: " + ", ".join(f"{t} {n}" for t, n in story.rows.items()))
    return lines
