"""Bodies that are odd as bytes, through the simulator's real HTTP, the worker and PostgreSQL:
nesting deeper than orjson goes is stored; beyond jsontext's cap, and a body that arrived whole
but is not a JSON object, is dead-lettered after one request with its byte offset and raw
body; a transfer cut short is still retried."""

from __future__ import annotations

import random
import uuid
from types import SimpleNamespace
from typing import Any

import orjson
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from ingest import archive, jsontext
from ingest.config import Settings
from ingest.jsontext import MAX_DEPTH
from ingest.simulator import Simulator
from tests.helpers import api_settings, drain, enqueue
from tests.oracle import check_rows
from tests.payloads import make_run_payload

pytestmark = pytest.mark.sim(runs=0, seed=5)


def deep_array(levels: int) -> Any:
    value: Any = {"at": "the bottom", "nu": [1, 2.5]}  # in jsonb's key order
    for _ in range(levels - 1):
        value = [value]
    return value


def deep_object(levels: int) -> Any:
    value: Any = ["the bottom"]
    for i in range(levels - 1):
        value = {f"k{i % 7}": value}
    return value


def run_doc(run_id: uuid.UUID) -> dict[str, Any]:
    return make_run_payload(random.Random(2), run_id, events=3, issues=1, sessions=0)


async def ingest_one(
    settings: Settings, engine: AsyncEngine, sim: Simulator, run_id: uuid.UUID
) -> tuple[Any, int]:
    """Drain a queue holding only `run_id`: its queue row and dead letter, and the requests
    the worker made."""
    before = sim.stats.total_requests
    await enqueue(engine, [run_id])
    await drain(api_settings(settings, sim), engine, max_backoff=0.05)
    async with engine.connect() as conn:
        row = (
            await conn.execute(
                text(
                    "SELECT q.state, q.attempts, d.reason, d.body AS dead_body,"
                    " d.http_status, p.body AS stored_body, p.encoding FROM ingest_queue q"
                    " LEFT JOIN dead_letters d USING (run_id)"
                    " LEFT JOIN run_payloads p USING (run_id) WHERE q.run_id = :id"
                ),
                {"id": run_id},
            )
        ).one()
    stored = row.stored_body and archive.unpack(row.stored_body, row.encoding)
    requests = sim.stats.total_requests - before
    return SimpleNamespace(**row._asdict() | {"stored_body": stored}), requests


async def stored_json(engine: AsyncEngine, sql: str, run_id: uuid.UUID, expected: Any) -> str:
    """The jsonb value `sql` selects, as compact text, after checking PostgreSQL finds it
    equal to `expected` (jsonb equality: structure and values)."""
    async with engine.connect() as conn:
        got, equal = (
            await conn.execute(
                text(f"SELECT v::text, v = CAST(:expected AS jsonb) FROM ({sql}) AS t(v)"),
                {"id": run_id, "expected": jsontext.dumps(expected)},
            )
        ).one()
    assert equal
    return jsontext.dumps(jsontext.loads(got.encode()))


@pytest.mark.parametrize("levels", [300, 1_000, 10_000])
async def test_deeply_nested_output_and_data_are_stored_and_read_back_equal(
    settings: Settings, engine: AsyncEngine, sim: Simulator, levels: int
) -> None:
    run_id = uuid.uuid4()
    doc = run_doc(run_id)
    output, data = deep_array(levels), deep_object(levels)
    doc["events"][0]["output"] = output
    doc["events"][1]["intermediate"]["data"] = data
    body = jsontext.dumps(doc).encode()  # deeper than orjson.dumps goes
    sim.set_payload(run_id, body)

    row, requests = await ingest_one(settings, engine, sim, run_id)

    assert (row.state, row.reason, requests) == ("done", None, 1)
    assert row.stored_body == body
    events = "SELECT output FROM run_events WHERE run_id = :id AND seq = 0"
    assert await stored_json(engine, events, run_id, output) == jsontext.dumps(output)
    data_sql = "SELECT data FROM event_intermediates WHERE run_id = :id AND seq = 1"
    assert await stored_json(engine, data_sql, run_id, data) == jsontext.dumps(data)
    if levels <= 1_000:  # the oracle reads bodies with orjson
        assert await check_rows(engine) == []


async def test_nesting_beyond_the_cap_is_dead_lettered_at_once_with_its_place(
    settings: Settings, engine: AsyncEngine, sim: Simulator
) -> None:
    run_id = uuid.uuid4()
    doc = run_doc(run_id)
    doc["events"][2]["output"] = "placeholder"
    head, tail = jsontext.dumps(doc).encode().split(b'"placeholder"')
    # `output` is 3 levels down: nesting MAX_DEPTH of its own, the body is 3 beyond the cap.
    body = head + b"[" * MAX_DEPTH + b"]" * MAX_DEPTH + tail
    sim.set_payload(run_id, body)

    row, requests = await ingest_one(settings, engine, sim, run_id)

    opened = len(head) + MAX_DEPTH - 3  # the bracket that opens level MAX_DEPTH + 1
    assert (row.state, row.attempts, requests) == ("dead", 1, 1)
    assert row.reason == (
        f"payload rejected: JSON nests deeper than {MAX_DEPTH} levels at byte {opened}"
        " (in events[2].output)"
    )
    assert row.dead_body == body and row.stored_body is None


async def test_nesting_beyond_what_postgresql_holds_is_dead_lettered_after_one_attempt(
    settings: Settings, engine: AsyncEngine, sim: Simulator
) -> None:
    """Parsed (under the cap) but refused by jsonb's stack: the same body would fail the same
    way on every attempt, so it is not retried."""
    run_id = uuid.uuid4()
    doc = run_doc(run_id)
    doc["events"][2]["output"] = deep_array(16_000)  # PostgreSQL 15 holds ~14,500 of arrays
    body = jsontext.dumps(doc).encode()
    sim.set_payload(run_id, body)

    row, requests = await ingest_one(settings, engine, sim, run_id)

    assert (row.state, row.attempts, requests) == ("dead", 1, 1)
    assert row.reason.startswith("store error: ") and "stack depth limit" in row.reason
    assert row.dead_body == body and row.stored_body is None


def _broken_at(doc: dict[str, Any], offset_of: bytes, replacement: bytes) -> tuple[bytes, int]:
    body = orjson.dumps(doc)
    at = body.index(offset_of)
    return body[:at] + replacement + body[at + len(offset_of) :], at


@pytest.mark.parametrize(
    "case",
    ["invalid JSON", "invalid UTF-8", "a JSON array", "cut off, but whole by its framing"],
)
async def test_a_complete_but_invalid_body_is_dead_lettered_after_one_request(
    settings: Settings, engine: AsyncEngine, sim: Simulator, case: str
) -> None:
    run_id = uuid.uuid4()
    doc = run_doc(run_id)
    doc["annotation"] = "MARK"
    if case == "invalid JSON":
        body, at = _broken_at(doc, b'"MARK"', b"MARK")
        reason = f"invalid JSON: unexpected character, expected a JSON value at byte {at}"
    elif case == "invalid UTF-8":
        body, at = _broken_at(doc, b"MARK", b"MA\xffK")
        reason = f"invalid UTF-8: 0xff at byte {at + 2} (invalid start byte)"
    elif case == "a JSON array":
        body = orjson.dumps([doc])
        reason = "body is not a JSON object but list"
    else:
        # Half the body with a Content-Length saying half is all there is (a server's bug,
        # not the network's): the transfer is whole, the JSON is not.
        whole = orjson.dumps(doc)
        body = whole[: len(whole) // 2]
        with pytest.raises(jsontext.JsonError) as caught:
            jsontext.loads(body)
        reason = caught.value.reason
        assert reason.startswith("invalid JSON: ") and reason.endswith(f" at byte {len(body)}")
    sim.set_payload(run_id, body)

    row, requests = await ingest_one(settings, engine, sim, run_id)

    assert (row.state, row.attempts, requests) == ("dead", 1, 1)
    assert row.reason == f"payload rejected: {reason}"
    assert (row.dead_body, row.http_status, row.stored_body) == (body, 200, None)


@pytest.mark.parametrize("fault", ["reset", "truncate"])
async def test_a_transfer_cut_short_is_still_retried(
    settings: Settings, engine: AsyncEngine, sim: Simulator, fault: str
) -> None:
    run_id = uuid.uuid4()
    body = orjson.dumps(run_doc(run_id))
    sim.set_payload(run_id, body)
    # Half arrives, then the connection drops before the Content-Length ("reset") or the
    # closing chunk ("truncate") says the body is complete.
    sim.inject_fault(run_id, fault, times=2)

    row, requests = await ingest_one(settings, engine, sim, run_id)

    assert sim.stats.faults[fault] == 2
    assert (row.state, row.reason, requests) == ("done", None, 3)
    assert row.stored_body == body
