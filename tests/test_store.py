"""store_batch and reprocess against real PostgreSQL: what is read back is what the payload says."""

from __future__ import annotations

import asyncio
import copy
import dataclasses
import hashlib
import random
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from ingest import archive
from ingest.db import migrate, tables
from ingest.normalize import (
    EventRow,
    IntermediateRow,
    IssueRow,
    MessageRow,
    PayloadRow,
    RunRow,
    RunRows,
    SessionRow,
    ToolCallRow,
    VersionRow,
    normalize,
)
from ingest.store import StoreStats, read_payload, reprocess, store_batch
from tests.oracle import (
    ISSUE_FACTS,
    RUN_FACTS,
    SESSION_FACTS,
    recount_facts,
    stored_bodies,
    stored_facts,
)
from tests.payloads import make_run_payload, make_version, run_payloads

T0 = datetime(2025, 6, 1, tzinfo=UTC)
CALL_TABLES = ("run_sessions", "session_messages", "message_tool_calls")
CHILD_TABLES = ("run_events", "event_intermediates", *CALL_TABLES, "run_issues", "run_payloads")
ALL_TABLES = ("runs", "versions", *CHILD_TABLES)
JSON_COLUMNS = {
    "run_events": ["output"],
    "event_intermediates": ["data"],
    "run_sessions": ["actions"],
    "session_messages": ["tool_calls"],
}


def _rows(body: dict[str, Any], fetched_at: datetime = T0) -> RunRows:
    return normalize(orjson.dumps(body), uuid.UUID(body["id"]), fetched_at)


async def _store(engine: AsyncEngine, batch: Sequence[RunRows]) -> StoreStats:
    async with engine.begin() as conn:
        return await store_batch(conn, batch)


async def _table(engine: AsyncEngine, table: str) -> list[dict[str, Any]]:
    """Every row of a table, without the columns the database fills in itself."""
    async with engine.connect() as conn:
        result = await conn.execute(text(f"SELECT * FROM {table}"))
        rows = [dict(r._mapping) for r in result]
    # The stored figures are checked against SQL over the child rows (_assert_facts_agree).
    derived = {"runs": RUN_FACTS, "run_sessions": SESSION_FACTS, "run_issues": ISSUE_FACTS}
    derived = derived.get(table, "")
    for row in rows:
        if table == "runs":
            row.pop("updated_at")
        for column in filter(None, derived.split(", ")):
            row.pop(column)
        if table == "run_payloads":  # compared as received (test_payload_bodies_...)
            row["body"] = archive.unpack(row["body"], row.pop("encoding"))
        for column in JSON_COLUMNS.get(table, ()):
            row[column] = _canonical(row[column])
    return _sorted(rows)


def _sorted(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Rows in key order: by id, else by run_id, then by their positions (and all else)."""
    return sorted(
        rows,
        key=lambda r: (
            str(r.get("id") or r.get("run_id")),
            *(r.get(k, 0) for k in ("session_seq", "message_seq", "seq")),
            repr(r),
        ),
    )


async def _snapshot(engine: AsyncEngine) -> dict[str, list[dict[str, Any]]]:
    return {table: await _table(engine, table) for table in ALL_TABLES}


async def _assert_facts_agree(engine: AsyncEngine) -> None:
    """The figures stored with each run and session are what SQL computes from their rows."""
    stored = await stored_facts(engine)
    await recount_facts(engine)
    assert await stored_facts(engine) == stored


def test_row_types_name_columns_of_their_tables() -> None:
    for row_type, table in [
        (RunRow, tables.runs),
        (VersionRow, tables.versions),
        (EventRow, tables.run_events),
        (IntermediateRow, tables.event_intermediates),
        (SessionRow, tables.run_sessions),
        (MessageRow, tables.session_messages),
        (ToolCallRow, tables.message_tool_calls),
        (IssueRow, tables.run_issues),
        (PayloadRow, tables.run_payloads),
    ]:
        names = [f.name for f in dataclasses.fields(row_type)]
        assert set(names) <= set(table.c.keys()), row_type
    # The fetch writes every column of these tables except what the database fills in.
    for row_type, table, own in [
        (VersionRow, tables.versions, set()),
        (EventRow, tables.run_events, set()),
        (IntermediateRow, tables.event_intermediates, set()),
        (SessionRow, tables.run_sessions, set()),
        (MessageRow, tables.session_messages, set()),
        (ToolCallRow, tables.message_tool_calls, set()),
        (IssueRow, tables.run_issues, set()),
        (PayloadRow, tables.run_payloads, set()),
        (RunRow, tables.runs, {"data", "listed_at", "updated_at"}),
    ]:
        assert {f.name for f in dataclasses.fields(row_type)} | own == set(table.c.keys())


# --- the property: normalize -> store -> read back gives every field of the payload -------------
# The expectation below is the policy (docs/payload-policy.md) restated independently of
# ingest.normalize: NUL removed, naive times in UTC, strings for numbers/booleans converted,
# non-strings in text columns as JSON text, the last of duplicate issues, issues under the run.


def _canonical(value: Any) -> Any:
    """JSON with numbers compared by value: jsonb keeps a float as the decimal it was sent as."""
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, float):
        return Decimal(repr(value))
    if isinstance(value, int):
        return Decimal(value)
    if isinstance(value, list):
        return [_canonical(v) for v in value]
    if isinstance(value, dict):
        return {k: _canonical(v) for k, v in value.items()}
    return value


def _clean(value: Any) -> Any:
    if isinstance(value, str):
        return value.replace("\x00", "")
    if isinstance(value, list):
        return [_clean(v) for v in value]
    if isinstance(value, dict):
        return {_clean(k): _clean(v) for k, v in value.items()}
    return value


def _expect(kind: str, value: Any) -> Any:
    if value is None:
        return None
    if kind == "uuid":
        return uuid.UUID(value)
    if kind == "time":
        moment = datetime.fromisoformat(value)
        return moment if moment.tzinfo else moment.replace(tzinfo=UTC)
    if kind == "text":
        return value if isinstance(value, str) else orjson.dumps(value).decode()
    if kind == "int":
        return int(value)
    if kind == "float":
        return float(value)
    if kind == "bool":
        return value if isinstance(value, bool) else str(value).lower() in ("true", "1")
    return _canonical(value)  # json


def _columns(obj: dict[str, Any], kinds: dict[str, str]) -> dict[str, Any]:
    return {name: _expect(kind, obj.get(name)) for name, kind in kinds.items()}


RUN = {"org_id": "uuid", "use_case_id": "uuid", "version_id": "uuid", "status": "text"} | {
    "annotation": "text",
    "timestamp": "time",
    "completed_at": "time",
}
VERSION = {"id": "uuid", "slug": "text", "org_id": "uuid", "use_case_id": "uuid"} | {
    "version_number": "int",
    "name": "text",
    "is_published": "bool",
    "is_live": "bool",
    "source_version_id": "uuid",
    "timestamp": "time",
    "published_at": "time",
    "is_deleted": "bool",
    "description": "text",
    "created_by": "uuid",
    "environment": "text",
}
EVENT = {"type": "text", "timestamp": "time", "integration_name": "text"} | {
    "event_name": "text",
    "node_id": "text",
    "output": "json",
}
INTERMEDIATE = {"id": "uuid", "node_id": "uuid", "event_id": "uuid", "session_id": "uuid"} | {
    "name": "text",
    "data": "json",
    "error": "text",
    "timestamp": "time",
    "data_deleted": "bool",
}
SESSION = {"id": "text", "timestamp": "time", "duration": "float", "sip_code": "text"} | {
    "sip_reason": "text",
    "actions": "json",
}
MESSAGE = {"id": "uuid", "session_id": "uuid", "chat_session_id": "uuid", "role": "text"} | {
    "content": "text",
    "name": "text",
    "is_filler": "bool",
    "is_interrupted": "bool",
    "is_natural_cut": "bool",
    "timestamp": "time",
    "data_deleted": "bool",
    "tool_calls": "json",
}
LATENCY = ("network", "initial_wait", "transcriber", "eos", "eos_wait", "llm", "tts")
ISSUE = {"id": "uuid", "use_case_id": "uuid", "org_id": "uuid", "run_version_id": "uuid"} | {
    "status": "text",
    "priority": "text",
    "created_at": "time",
    "type": "text",
    "updated_at": "time",
    "assignee": "uuid",
    "created_by": "uuid",
    "updated_by": "uuid",
    "message_id": "uuid",
    "correction": "text",
    "correction_reason": "text",
    "northstar_id": "uuid",
}


def _expected_tables(raw: bytes, fetched_at: datetime) -> dict[str, list[dict[str, Any]]]:
    body = _clean(orjson.loads(raw))
    run_id = uuid.UUID(body["id"])
    sha = hashlib.sha256(raw).hexdigest()
    run = {"id": run_id, **_columns(body, RUN)} | {
        "data": None,
        "fetched_at": fetched_at,
        "payload_sha256": sha,
        "listed_at": None,
    }
    version = body.get("version")
    versions = []
    if version and version.get("id"):
        versions = [_columns(version, VERSION) | {"fetched_at": fetched_at}]
    events, intermediates = [], []
    sessions, messages, calls = [], [], []
    for seq, event in enumerate(body.get("events") or []):
        if event and event.get("type") == "session":
            # The event row says only what and when; the call is in the session tables.
            events.append({"run_id": run_id, "seq": seq, **_columns({}, EVENT)})
            events[-1].update(type="session", timestamp=_expect("time", event.get("timestamp")))
            sessions.append({"run_id": run_id, "seq": seq, **_columns(event, SESSION)})
            for m_seq, message in enumerate(event.get("messages") or []):
                message = message or {}
                latency = message.get("latency_breakdown") or {}
                messages.append(
                    {"run_id": run_id, "session_seq": seq, "seq": m_seq}
                    | _columns(message, MESSAGE)
                    | {f"latency_{k}": _expect("float", latency.get(k)) for k in LATENCY}
                )
                for c_seq, call in enumerate(message.get("tool_calls") or []):
                    function = (call or {}).get("function") or {}
                    calls.append(
                        {"run_id": run_id, "session_seq": seq, "message_seq": m_seq, "seq": c_seq}
                        | _columns(function, {"name": "text", "arguments": "text"})
                    )
            continue
        events.append({"run_id": run_id, "seq": seq, **_columns(event or {}, EVENT)})
        if event and event.get("intermediate") is not None:
            inter = _columns(event["intermediate"], INTERMEDIATE)
            intermediates.append({"run_id": run_id, "seq": seq, **inter})
    issues: dict[uuid.UUID, dict[str, Any]] = {}
    for issue in body.get("issues") or []:
        if issue and issue.get("id"):
            issues[uuid.UUID(issue["id"])] = _columns(issue, ISSUE) | {"run_id": run_id}
    payload = {"run_id": run_id, "body": raw, "sha256": sha, "fetched_at": fetched_at}
    return {
        "runs": [run],
        "versions": versions,
        "run_events": events,
        "event_intermediates": intermediates,
        "run_sessions": sessions,
        "session_messages": messages,
        "message_tool_calls": calls,
        "run_issues": list(issues.values()),
        "run_payloads": [payload],
    }


@pytest.mark.slow
@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(body=run_payloads())
async def test_what_is_read_back_is_every_field_of_the_payload(
    engine: AsyncEngine, body: dict[str, Any]
) -> None:
    async with engine.begin() as conn:
        # run_events and event_intermediates have no foreign key: no cascade from runs.
        for table in (*CALL_TABLES, "event_intermediates", "run_events", "runs", "versions"):
            await conn.execute(text(f"DELETE FROM {table}"))
    raw = orjson.dumps(body)
    rows = normalize(raw, uuid.UUID(body["id"]), T0)
    stats = await _store(engine, [rows])

    stored = await _snapshot(engine)
    drift = [p.pop("drift") for p in stored["run_payloads"]]
    assert drift == [[{"kind": n.kind, "detail": n.detail} for n in rows.drift]]
    expected = _expected_tables(raw, T0)
    for table in ALL_TABLES:
        assert stored[table] == _sorted(expected[table]), table
    assert stats == StoreStats(runs=1, rows=rows.row_count, skipped_stale=0)
    await _assert_facts_agree(engine)


# --- re-ingest, staleness, concurrency ------------------------------------------------------------


async def test_reingesting_with_fewer_events_and_issues_leaves_no_stale_rows(
    engine: AsyncEngine,
) -> None:
    rng = random.Random(3)
    body = make_run_payload(rng, events=30, issues=3, status="running")
    await _store(engine, [_rows(body, T0)])

    body.update(status="completed", events=body["events"][:12], issues=body["issues"][1:])
    body["issues"][0]["status"] = "closed"
    await _store(engine, [_rows(body, T0 + timedelta(minutes=5))])

    stored = await _snapshot(engine)
    assert stored == {
        t: _sorted(rows)
        for t, rows in _expected_tables(orjson.dumps(body), T0 + timedelta(minutes=5)).items()
    } | {"run_payloads": stored["run_payloads"]}
    assert [r["seq"] for r in stored["run_events"]] == list(range(12))
    assert len(stored["event_intermediates"]) == 12
    assert [
        r["status"] for r in stored["run_issues"] if r["id"] == uuid.UUID(body["issues"][0]["id"])
    ] == ["closed"]
    assert stored["runs"][0]["status"] == "completed"
    [facts], _, _ = await stored_facts(engine)
    assert facts[1] == 12 and facts[4] == 2  # event_count, issue_count
    await _assert_facts_agree(engine)


async def test_a_run_deleted_by_hand_without_its_children_can_be_ingested_again(
    engine: AsyncEngine,
) -> None:
    """run_events/event_intermediates have no foreign key: leftovers must not block a re-fetch."""
    body = make_run_payload(random.Random(16), events=6, issues=1)
    await _store(engine, [_rows(body, T0)])
    async with engine.begin() as conn:
        await conn.execute(text("DELETE FROM runs"))  # cascades to issues and payloads only
    assert len(await _table(engine, "run_events")) == len(body["events"]) == 7  # 6 + its call
    assert len(await _table(engine, "session_messages")) == 20

    body["events"] = body["events"][:4]
    stats = await _store(engine, [_rows(body, T0 + timedelta(minutes=1))])

    assert stats.runs == 1
    expected = _expected_tables(orjson.dumps(body), T0 + timedelta(minutes=1))
    stored = await _snapshot(engine)
    stored["run_payloads"][0].pop("drift")
    assert stored == {t: _sorted(rows) for t, rows in expected.items()}


async def test_payload_bodies_are_stored_zstd_compressed_and_read_back_byte_for_byte(
    engine: AsyncEngine,
) -> None:
    body = make_run_payload(random.Random(17), events=30, issues=2)
    raw = orjson.dumps(body)
    await _store(engine, [_rows(body)])
    async with engine.connect() as conn:
        storage = await conn.scalar(
            text(
                "SELECT attstorage::text FROM pg_attribute"
                " WHERE attrelid = 'run_payloads'::regclass AND attname = 'body'"
            )
        )
        stored, stored_size, encoding = (
            await conn.execute(
                text("SELECT body, pg_column_size(body), encoding FROM run_payloads")
            )
        ).one()
    assert storage == "e"  # EXTERNAL: compressed once, by the worker, not again by PostgreSQL
    assert encoding == "zstd" and stored_size == len(stored) < len(raw) / 3
    assert archive.unpack(stored, encoding) == raw
    read = await read_payload(engine, uuid.UUID(body["id"]))
    assert read is not None and read.body == raw and read.intact


async def test_a_stale_payload_is_skipped_entirely(engine: AsyncEngine) -> None:
    rng = random.Random(4)
    old = make_run_payload(rng, events=5, status="running")
    new = dict(old, status="completed", events=old["events"][:2])
    new["version"] = dict(old["version"], name="renamed")
    await _store(engine, [_rows(new, T0 + timedelta(minutes=1))])
    before = await _snapshot(engine)

    stats = await _store(engine, [_rows(old, T0)])

    assert stats == StoreStats(runs=0, rows=0, skipped_stale=1)
    assert await _snapshot(engine) == before


async def test_within_one_batch_the_latest_fetch_of_a_run_wins(engine: AsyncEngine) -> None:
    body = make_run_payload(random.Random(5), events=4, status="running")
    later = dict(body, status="completed", events=body["events"][:1])
    stats = await _store(engine, [_rows(later, T0 + timedelta(seconds=1)), _rows(body, T0)])
    assert (stats.runs, stats.skipped_stale) == (1, 1)
    stored = await _snapshot(engine)
    assert stored["runs"][0]["status"] == "completed" and len(stored["run_events"]) == 1


@pytest.mark.parametrize("fetched_completed_at", ["2025-06-01T00:04:00Z", None])
async def test_fetching_keeps_what_discovery_wrote(
    engine: AsyncEngine, fetched_completed_at: str | None
) -> None:
    """`data` stays the listing's; completed_at is the fetch's own, the listing's while NULL."""
    body = make_run_payload(random.Random(6), events=2)
    body["completed_at"] = fetched_completed_at
    run_id = uuid.UUID(body["id"])
    listed_completed = T0 + timedelta(minutes=3)
    async with engine.begin() as conn:
        await conn.execute(
            tables.runs.insert().values(
                id=run_id,
                status="running",
                completed_at=listed_completed,
                data={"lane": "A"},
                listed_at=T0,
            )
        )
    await _store(engine, [_rows(body)])
    run = (await _table(engine, "runs"))[0]
    expected = T0 + timedelta(minutes=4) if fetched_completed_at else listed_completed
    assert (run["completed_at"], run["data"], run["listed_at"]) == (expected, {"lane": "A"}, T0)
    assert run["status"] == "completed" and run["fetched_at"] == T0


async def test_an_older_version_never_overwrites_a_newer_one(engine: AsyncEngine) -> None:
    rng = random.Random(8)
    version = make_version(rng)
    renamed = dict(version, name="renamed")
    run_a = make_run_payload(rng, version_pool=[renamed])
    run_b = make_run_payload(rng, version_pool=[version])
    await _store(engine, [_rows(run_a, T0 + timedelta(hours=1))])
    await _store(engine, [_rows(run_b, T0)])
    assert [v["name"] for v in await _table(engine, "versions")] == ["renamed"]
    assert len(await _table(engine, "runs")) == 2


async def test_an_issue_follows_the_run_fetched_last(engine: AsyncEngine) -> None:
    rng = random.Random(9)
    run_a = make_run_payload(rng, issues=1)
    run_b = make_run_payload(rng, issues=0)
    run_b["issues"] = [dict(run_a["issues"][0], run_id=run_b["id"], status="closed")]
    await _store(engine, [_rows(run_a, T0)])
    await _store(engine, [_rows(run_b, T0 + timedelta(minutes=1))])
    [issue] = await _table(engine, "run_issues")
    assert (issue["run_id"], issue["status"]) == (uuid.UUID(run_b["id"]), "closed")

    # A late write of run A's old payload (fetched between the two) cannot pull it back...
    await _store(engine, [_rows(run_a, T0 + timedelta(seconds=30))])
    [issue] = await _table(engine, "run_issues")
    assert issue["run_id"] == uuid.UUID(run_b["id"])
    # ...a newer fetch of run A that still lists it does.
    await _store(engine, [_rows(run_a, T0 + timedelta(minutes=2))])
    [issue] = await _table(engine, "run_issues")
    assert issue["run_id"] == uuid.UUID(run_a["id"])
    await _assert_facts_agree(engine)  # each run counts only the issues it holds


async def test_issue_counts_follow_an_issue_that_moves(engine: AsyncEngine) -> None:
    """runs.issue_count comes from the run's own body; an issue that moved from another run,
    stored or in the same batch, is counted where it ended up, and nowhere else."""
    rng = random.Random(19)
    run_a, run_b, run_c = (make_run_payload(rng, issues=2) for _ in range(3))
    moved = dict(run_a["issues"][0], run_id=run_b["id"])
    run_b["issues"].append(moved)
    await _store(engine, [_rows(run_a, T0)])
    await _store(engine, [_rows(run_b, T0 + timedelta(minutes=1))])  # moved from a stored run
    counts = {r["id"]: r["issue_count"] for r in await _table_facts(engine)}
    assert counts == {uuid.UUID(run_a["id"]): 1, uuid.UUID(run_b["id"]): 3}
    await _assert_facts_agree(engine)

    # Within one batch: both list the same issue; the later fetch (C) gets it.
    run_c["issues"].append(dict(moved, run_id=run_c["id"]))
    await _store(
        engine, [_rows(run_b, T0 + timedelta(minutes=2)), _rows(run_c, T0 + timedelta(minutes=3))]
    )
    counts = {r["id"]: r["issue_count"] for r in await _table_facts(engine)}
    assert counts[uuid.UUID(run_b["id"])] == 2 and counts[uuid.UUID(run_c["id"])] == 3
    await _assert_facts_agree(engine)


async def _table_facts(engine: AsyncEngine) -> list[dict[str, Any]]:
    async with engine.connect() as conn:
        result = await conn.execute(text("SELECT id, issue_count FROM runs"))
        return [dict(r._mapping) for r in result]


def _refetched(rows: RunRows, fetched_at: datetime) -> RunRows:
    return normalize(
        archive.unpack(rows.payload.body, rows.payload.encoding), rows.run.id, fetched_at
    )


async def test_eight_concurrent_writers_sharing_versions_never_deadlock(
    engine: AsyncEngine,
) -> None:
    rng = random.Random(10)
    versions = [make_version(rng) for _ in range(6)]
    writers = [
        [
            _rows(make_run_payload(rng, events=5, issues=1, version_pool=versions), T0)
            for _ in range(25)
        ]
        for _ in range(8)
    ]

    async def write(batches: list[RunRows], offset: int) -> int:
        written = 0
        for round_ in range(3):  # re-fetches too: deletes and upserts of the same rows
            fetched = T0 + timedelta(seconds=round_ * 10 + offset)
            batch = [_refetched(r, fetched) for r in batches]
            written += (await _store(engine, batch)).runs
        return written

    results = await asyncio.wait_for(
        asyncio.gather(*(write(batch, i) for i, batch in enumerate(writers))), timeout=60
    )
    assert results == [75] * 8
    stored = await _snapshot(engine)
    assert len(stored["runs"]) == 200 and len(stored["versions"]) == 6
    assert len(stored["run_events"]) == 200 * 6 and len(stored["run_issues"]) == 200
    assert len(stored["run_sessions"]) == 200 and len(stored["session_messages"]) == 200 * 20


# --- atomicity and odd payloads at the database -----------------------------------------------


async def test_a_failing_batch_writes_nothing(engine: AsyncEngine) -> None:
    rng = random.Random(11)
    good = _rows(make_run_payload(rng, events=3))
    poison = _rows(make_run_payload(rng, events=3))
    # A NUL that bypassed normalize: PostgreSQL refuses it, so the whole batch must roll back.
    bad_event = dataclasses.replace(poison.events[1], event_name="a\x00b")
    poison = dataclasses.replace(poison, events=[poison.events[0], bad_event, poison.events[2]])
    with pytest.raises(Exception, match="0x00"):
        await _store(engine, [good, poison])
    assert all(rows == [] for rows in (await _snapshot(engine)).values())


async def test_nul_characters_reach_the_raw_body_and_nowhere_else(engine: AsyncEngine) -> None:
    body = make_run_payload(random.Random(12), events=2)
    body["events"][0]["output"] = {"text": "he\x00llo"}
    raw = orjson.dumps(body)
    await _store(engine, [normalize(raw, uuid.UUID(body["id"]), T0)])
    [payload] = await _table(engine, "run_payloads")
    assert payload["body"] == raw
    assert payload["drift"] == [{"kind": "nul_removed", "detail": "events[].output.text"}]
    events = await _table(engine, "run_events")
    assert events[0]["output"] == {"text": "hello"}


async def test_store_batch_needs_a_transaction(engine: AsyncEngine) -> None:
    rows = _rows(make_run_payload(random.Random(13), events=1))
    async with engine.connect() as conn:
        autocommit = await conn.execution_options(isolation_level="AUTOCOMMIT")
        with pytest.raises(RuntimeError, match="transaction"):
            await store_batch(autocommit, [rows])


async def test_an_empty_batch_is_a_no_op(engine: AsyncEngine) -> None:
    assert await _store(engine, []) == StoreStats(runs=0, rows=0, skipped_stale=0)


# --- calls: the latest payload wins for sessions, messages and tool calls too -------------------


def _call(body: dict[str, Any]) -> dict[str, Any]:
    [session] = [e for e in body["events"] if e["type"] == "session"]
    return session


async def test_a_transcript_that_grew_leaves_exactly_the_latest_messages(
    engine: AsyncEngine,
) -> None:
    body = make_run_payload(random.Random(30), events=4, issues=0, status="running", messages=12)
    session = _call(body)
    full = session["messages"]
    session["messages"] = full[:5]
    await _store(engine, [_rows(body, T0)])
    assert len(await _table(engine, "session_messages")) == 5

    # Later: the call went on, one early turn vanished upstream, a tool call was renamed.
    session["messages"] = [m for i, m in enumerate(full) if i != 1]
    later = copy.deepcopy(body)
    turn = _call(later)["messages"][0]
    turn["tool_calls"] = [{"function": {"name": "book_load", "arguments": "{}"}}]
    later["status"] = "completed"
    fetched = T0 + timedelta(minutes=2)
    await _store(engine, [_rows(later, fetched)])

    stored = await _snapshot(engine)
    expected = _expected_tables(orjson.dumps(later), fetched)
    for table in ("run_sessions", "session_messages", "message_tool_calls"):
        assert stored[table] == _sorted(expected[table]), table
    assert [m["id"] for m in sorted(stored["session_messages"], key=lambda m: m["seq"])] == [
        uuid.UUID(m["id"]) for i, m in enumerate(full) if i != 1
    ]
    assert ("book_load", 0) in {(t["name"], t["message_seq"]) for t in stored["message_tool_calls"]}


async def test_retention_deleted_content_is_mirrored_on_refetch(engine: AsyncEngine) -> None:
    """The customer's retention is a privacy choice: what the platform deleted goes here too."""
    body = make_run_payload(random.Random(31), events=3, issues=0)
    await _store(engine, [_rows(body, T0)])
    secret_turn = _call(body)["messages"][0]["content"]
    assert secret_turn

    expired = copy.deepcopy(body)
    for message in _call(expired)["messages"]:
        message.update(content="", tool_calls=None, data_deleted=True)
    for event in expired["events"][:3]:
        event["output"] = {}
        event["intermediate"].update(data={}, data_deleted=True)
    await _store(engine, [_rows(expired, T0 + timedelta(days=8))])

    async with engine.connect() as conn:
        leftovers = await conn.scalar(
            text(
                "SELECT count(*) FROM session_messages WHERE content <> '' OR NOT data_deleted"
                " OR tool_calls IS NOT NULL"
            )
        )
        tools = await conn.scalar(text("SELECT count(*) FROM message_tool_calls"))
        inters = (
            await conn.execute(text("SELECT data, data_deleted FROM event_intermediates"))
        ).all()
    kept = [b for b in (await stored_bodies(engine)).values() if secret_turn.encode() in b]
    assert (leftovers, tools, kept) == (0, 0, [])
    assert inters == [({}, True)] * 3


# --- reprocess ------------------------------------------------------------------------------------


async def test_reprocess_reproduces_identical_rows(engine: AsyncEngine) -> None:
    rng = random.Random(14)
    versions = [make_version(rng) for _ in range(3)]
    bodies = [make_run_payload(rng, events=6, version_pool=versions) for _ in range(7)]
    await _store(engine, [_rows(b, T0 + timedelta(seconds=i)) for i, b in enumerate(bodies)])
    before, facts = await _snapshot(engine), await stored_facts(engine)
    async with engine.begin() as conn:
        for table in ("run_events", "run_issues", "versions"):
            await conn.execute(text(f"DELETE FROM {table}"))
        await conn.execute(text("UPDATE runs SET event_count = 0, issue_count = 0"))

    result = await reprocess(engine, batch_size=3)

    assert (result.runs, result.skipped_stale, result.refused, result.missing) == (7, 0, [], [])
    assert await _snapshot(engine) == before
    assert await stored_facts(engine) == facts
    await _assert_facts_agree(engine)


async def test_reprocess_of_chosen_runs_reports_missing_and_refused(engine: AsyncEngine) -> None:
    rng = random.Random(15)
    good, bad = make_run_payload(rng, events=2), make_run_payload(rng, events=2)
    await _store(engine, [_rows(good), _rows(bad)])
    # Rules change: today's normalize refuses what an earlier one stored.
    async with engine.begin() as conn:
        await conn.execute(
            text("UPDATE run_payloads SET body = :b, encoding = 'identity' WHERE run_id = :id"),
            {"b": b"{broken", "id": uuid.UUID(bad["id"])},  # as stored before 0010: as received
        )
    before = await _snapshot(engine)
    unknown = uuid.uuid4()

    result = await reprocess(engine, [uuid.UUID(good["id"]), uuid.UUID(bad["id"]), unknown])

    assert result.runs == 1 and result.missing == [unknown]
    assert [(run_id, reason.split(":")[0]) for run_id, reason in result.refused] == [
        (uuid.UUID(bad["id"]), "invalid JSON")
    ]
    assert await _snapshot(engine) == before  # the refused run's rows are left as they were


async def test_a_batch_finds_rows_by_key_before_the_tables_are_ever_analyzed(
    engine: AsyncEngine,
) -> None:
    # A fresh schema has no statistics: the planner takes `run_id = ANY(200 ids)` for every
    # row, and without care the children's DELETE scans whole tables on every batch.
    rng = random.Random(5)
    await _store(engine, [_rows(make_run_payload(rng, events=5, issues=1)) for _ in range(300)])
    async with engine.begin() as conn:
        await store_batch(
            conn, [_rows(make_run_payload(rng, events=5, issues=1)) for _ in range(200)]
        )
        result = await conn.execute(
            text(
                "SELECT relname, seq_scan FROM pg_stat_xact_user_tables"
                " WHERE schemaname = current_schema()"
            )
        )
        seq_scans = {row.relname: row.seq_scan for row in result}
    assert {table: seq_scans.get(table, 0) for table in ALL_TABLES} == dict.fromkeys(ALL_TABLES, 0)


async def test_reprocess_fills_the_call_tables_from_payloads_stored_before_they_existed(
    engine: AsyncEngine,
) -> None:
    """An existing deployment gets its history's calls without one API call."""
    await migrate.downgrade(engine, "0002")
    bodies = [make_run_payload(random.Random(40 + i), events=2, issues=1) for i in range(3)]
    async with engine.begin() as conn:
        # What the 0002 worker stored: the run and its raw body (calls only in the body).
        for body in bodies:
            await conn.execute(
                text("INSERT INTO runs (id, status, fetched_at) VALUES (:id, 'completed', :t)"),
                {"id": body["id"], "t": T0},
            )
            await conn.execute(
                text(
                    "INSERT INTO run_payloads (run_id, body, sha256, fetched_at)"
                    " VALUES (:id, :body, 'x', :t)"
                ),
                {"id": body["id"], "body": orjson.dumps(body), "t": T0},
            )
    await migrate.upgrade(engine)

    result = await reprocess(engine)

    assert (result.runs, result.refused) == (3, [])
    stored = await _snapshot(engine)
    for table in ("run_sessions", "session_messages", "message_tool_calls", "runs", "versions"):
        expected = [row for b in bodies for row in _expected_tables(orjson.dumps(b), T0)[table]]
        assert stored[table] == _sorted(expected), table
    assert len(stored["session_messages"]) == 3 * 20


@pytest.mark.parametrize("fetched_first", [True, False])
async def test_completed_at_is_the_fetched_runs_once_a_fetch_has_one(
    engine: AsyncEngine, fetched_first: bool
) -> None:
    """Discovery's listing and a fetch disagree: the fetch's own completed_at wins, whichever
    is written last; the listing's fills in while the fetch has none."""
    from ingest.discovery import ListedRun, store_listed

    body = make_run_payload(random.Random(50), events=2, issues=0)
    body["completed_at"] = "2025-06-01T00:04:00Z"
    run_id = uuid.UUID(body["id"])

    def listed(completed_at: datetime) -> ListedRun:
        return ListedRun(run_id, None, None, None, "completed", None, T0, completed_at, None)

    async def list_it(completed_at: datetime) -> None:
        async with engine.begin() as conn:
            await store_listed(conn, [listed(completed_at)])

    if not fetched_first:
        await list_it(T0 + timedelta(minutes=9))
    await _store(engine, [_rows(body)])
    await list_it(T0 + timedelta(minutes=7))
    [run] = await _table(engine, "runs")
    assert run["completed_at"] == T0 + timedelta(minutes=4)

    body["completed_at"] = None  # a later fetch without one keeps what the run had
    await _store(engine, [_rows(body, T0 + timedelta(minutes=1))])
    [run] = await _table(engine, "runs")
    assert run["completed_at"] == T0 + timedelta(minutes=4)
