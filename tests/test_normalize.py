"""normalize: one test per case of docs/payload-policy.md, plus the realistic shape."""

from __future__ import annotations

import random
import sys
import uuid
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import orjson
import pytest

from ingest import archive, jsontext
from ingest.normalize import DriftNote, PayloadRejected, RunRows, normalize
from tests.payloads import make_run_payload

FETCHED = datetime(2025, 6, 1, 12, 0, tzinfo=UTC)


def _payload(**changes: Any) -> dict[str, Any]:
    """Three action events and two issues; calls are tested on `_call_payload`."""
    body = make_run_payload(random.Random(7), events=3, issues=2, sessions=0)
    body.update(changes)
    return body


def _normalize(body: dict[str, Any] | bytes) -> RunRows:
    raw = body if isinstance(body, bytes) else orjson.dumps(body)
    run_id = uuid.UUID(jsontext.loads(raw)["id"])
    return normalize(raw, run_id, FETCHED)


def _value(json_text: str | None) -> Any:
    """A jsonb column's value, from the JSON text a row carries."""
    assert json_text is not None
    return orjson.loads(json_text)


def _raw(rows: RunRows) -> bytes:
    """The body the payload row keeps, as received."""
    return archive.unpack(rows.payload.body, rows.payload.encoding)


def _kinds(rows: RunRows) -> set[str]:
    return {note.kind for note in rows.drift}


def _rejected(body: dict[str, Any] | bytes, run_id: uuid.UUID | None = None) -> str:
    raw = body if isinstance(body, bytes) else orjson.dumps(body)
    with pytest.raises(PayloadRejected) as caught:
        normalize(raw, run_id or uuid.uuid4(), FETCHED)
    assert caught.value.reason == str(caught.value)
    assert "\n" not in caught.value.reason
    return caught.value.reason


def test_a_realistic_run_gives_every_row_and_no_drift() -> None:
    body = make_run_payload(random.Random(1), events=30, issues=2)
    raw = orjson.dumps(body)
    rows = normalize(raw, uuid.UUID(body["id"]), FETCHED)

    assert rows.drift == []
    assert rows.terminal
    calls = sum(len(m["tool_calls"] or []) for m in body["events"][30]["messages"])
    assert calls > 0
    # run, payload, 31 events (30 actions + the call), 30 intermediates, the session, its 20
    # messages and their tool calls, 2 issues, the version
    assert rows.row_count == 1 + 1 + 31 + 30 + 1 + 20 + calls + 2 + 1
    assert len(rows.messages) == 20 and len(rows.tool_calls) == calls
    assert rows.run.id == uuid.UUID(body["id"])
    assert rows.run.version_id == rows.version.id == uuid.UUID(body["version"]["id"])  # type: ignore[union-attr]
    assert rows.run.timestamp == datetime.fromisoformat(body["timestamp"])
    assert rows.run.fetched_at == FETCHED
    assert [e.seq for e in rows.events] == list(range(31))
    assert rows.run.completed_at == datetime.fromisoformat(body["completed_at"])
    assert rows.version.environment == body["version"]["environment"]  # type: ignore[union-attr]
    assert _value(rows.events[4].output) == body["events"][4]["output"]
    inter = body["events"][4]["intermediate"]
    assert rows.intermediates[4].session_id == uuid.UUID(inter["session_id"])
    assert _value(rows.intermediates[4].data) == inter["data"]
    assert rows.issues[1].correction == body["issues"][1]["correction"]
    assert _raw(rows) == raw
    assert len(rows.payload.sha256) == 64 and rows.run.payload_sha256 == rows.payload.sha256


@pytest.mark.parametrize("status", ["scheduled", "running"])
def test_a_run_in_progress_is_not_terminal(status: str) -> None:
    assert not _normalize(_payload(status=status)).terminal


@pytest.mark.parametrize("field", ["events", "issues", "version", "annotation"])
@pytest.mark.parametrize("how", ["null", "missing"])
def test_null_or_missing_parts_are_stored_as_absent(field: str, how: str) -> None:
    body = _payload(**{field: None})
    if how == "missing":
        del body[field]
    rows = _normalize(body)
    assert rows.drift == []
    if field == "events":
        assert rows.events == [] and rows.intermediates == []
    elif field == "issues":
        assert rows.issues == []
    elif field == "version":
        assert rows.version is None and rows.run.version_id is not None
    else:
        assert rows.run.annotation is None


@pytest.mark.parametrize("how", ["null", "missing"])
def test_an_event_without_intermediate_has_no_intermediate_row(how: str) -> None:
    body = _payload()
    if how == "null":
        body["events"][1]["intermediate"] = None
    else:
        del body["events"][1]["intermediate"]
    rows = _normalize(body)
    assert [i.seq for i in rows.intermediates] == [0, 2]
    assert len(rows.events) == 3 and rows.drift == []


def test_a_null_event_keeps_its_position_as_an_empty_row() -> None:
    body = _payload()
    body["events"][1] = None
    rows = _normalize(body)
    assert [e.seq for e in rows.events] == [0, 1, 2]
    assert rows.events[1].type is None and rows.events[1].output is None
    assert DriftNote("null_event", "events[1]") in rows.drift


def test_enumeration_values_outside_todays_lists_are_stored_as_they_are() -> None:
    body = _payload(status="paused", annotation="unsure")
    body["issues"][0].update(status="escalated", priority="urgent", type="latency")
    rows = _normalize(body)
    assert (rows.run.status, rows.run.annotation) == ("paused", "unsure")
    issue = rows.issues[0]
    assert (issue.status, issue.priority, issue.type) == ("escalated", "urgent", "latency")
    assert {n.detail for n in rows.drift if n.kind == "new_enum_value"} == {
        "status='paused'",
        "annotation='unsure'",
        "issues[].status='escalated'",
        "issues[].priority='urgent'",
        "issues[].type='latency'",
    }
    assert not rows.terminal


def test_unknown_fields_are_noted_once_per_place_and_kept_in_the_raw_body() -> None:
    body = _payload(region="eu")
    for event in body["events"]:
        event["latency_ms"] = 12
        event["intermediate"]["cost"] = 0.1
    body["version"]["language"] = "en"
    rows = _normalize(body)
    assert [n.detail for n in rows.drift if n.kind == "unknown_field"] == [
        "region",
        "version.language",
        "events[].latency_ms",
        "events[].intermediate.cost",
    ]
    assert b'"latency_ms":12' in _raw(rows)


def test_strings_longer_than_documented_are_kept_whole() -> None:
    long = "x" * 5000
    body = _payload()
    body["events"][0]["event_name"] = long
    body["version"]["slug"] = long
    rows = _normalize(body)
    assert rows.events[0].event_name == long and rows.version.slug == long  # type: ignore[union-attr]
    assert {n.detail for n in rows.drift if n.kind == "long_string"} == {
        "events[].event_name",
        "version.slug",
    }


def test_nul_characters_are_removed_from_rows_but_kept_in_the_raw_body() -> None:
    body = _payload(annotation="corr\x00ect")
    body["events"][0]["output"] = {"te\x00xt": "a\x00b", "list": ["\x00"], "n": 1}
    body["issues"][0]["correction"] = "fix\x00ed"
    raw = orjson.dumps(body)
    rows = _normalize(raw)
    assert rows.run.annotation == "correct"
    assert _value(rows.events[0].output) == {"text": "ab", "list": [""], "n": 1}
    assert rows.issues[0].correction == "fixed"
    assert _raw(rows) == raw and b"\\u0000" in _raw(rows)
    assert {n.detail for n in rows.drift if n.kind == "nul_removed"} == {
        "annotation",
        "events[].output.text (key)",
        "events[].output.text",
        "events[].output.list[]",
        "issues[].correction",
    }
    assert "new_enum_value" not in _kinds(rows)  # cleaned first, then checked


def test_timestamps_with_offsets_are_instants_and_without_zone_are_utc() -> None:
    body = _payload(timestamp="2025-03-01T10:00:00+02:00")
    body["events"][0]["timestamp"] = "2025-03-01T08:00:00.123456789"
    body["issues"][0]["created_at"] = "2025-03-01"
    rows = _normalize(body)
    assert rows.run.timestamp == datetime(2025, 3, 1, 8, 0, tzinfo=UTC)
    assert rows.run.timestamp.utcoffset() == timedelta(hours=2)  # type: ignore[union-attr]
    assert rows.events[0].timestamp == datetime(2025, 3, 1, 8, 0, 0, 123456, tzinfo=UTC)
    assert rows.issues[0].created_at == datetime(2025, 3, 1, tzinfo=UTC)
    assert {n.detail for n in rows.drift if n.kind == "naive_timestamp"} == {
        "events[].timestamp",
        "issues[].created_at",
    }


def test_numbers_and_booleans_sent_as_strings_are_converted_and_noted() -> None:
    body = _payload()
    body["version"].update(version_number="3", is_live="true", is_published="False", is_deleted=0)
    rows = _normalize(body)
    version = rows.version
    assert version is not None
    assert (version.version_number, version.is_live, version.is_published, version.is_deleted) == (
        3,
        True,
        False,
        False,
    )
    assert {n.kind for n in rows.drift} == {"coerced_to_integer", "coerced_to_boolean"}


def test_non_string_values_in_text_columns_are_stored_as_their_json_text() -> None:
    body = _payload()
    body["events"][0]["node_id"] = 42
    body["events"][0]["intermediate"]["error"] = {"code": 7}
    rows = _normalize(body)
    assert rows.events[0].node_id == "42"
    assert rows.intermediates[0].error == '{"code":7}'
    assert _kinds(rows) == {"coerced_to_text"}


@pytest.mark.parametrize(
    ("field", "value", "reason"),
    [
        ("version_number", "three", "version.version_number is not an integer: 'three'"),
        ("version_number", 2**40, "version.version_number is out of integer range"),
        ("is_live", "yes please", "version.is_live is not a boolean: 'yes please'"),
    ],
)
def test_values_that_no_conversion_fits_are_refused(field: str, value: Any, reason: str) -> None:
    body = _payload()
    body["version"][field] = value
    assert _rejected(body, uuid.UUID(body["id"])).startswith(reason)


def test_duplicate_issue_ids_keep_the_last_one() -> None:
    body = _payload()
    first, second = body["issues"]
    body["issues"].append(dict(first, status="closed"))
    rows = _normalize(body)
    assert [(i.id, i.status) for i in rows.issues] == [
        (uuid.UUID(second["id"]), second["status"]),
        (uuid.UUID(first["id"]), "closed"),
    ]
    assert DriftNote("duplicate_issue_id", f"{first['id']}: the last one is stored") in rows.drift


def test_an_issue_claiming_another_run_is_stored_under_the_run_that_lists_it() -> None:
    other = str(uuid.uuid4())
    body = _payload()
    body["issues"][0]["run_id"] = other
    body["issues"][1]["run_id"] = None
    rows = _normalize(body)
    assert {i.run_id for i in rows.issues} == {rows.run.id}
    details = {n.kind: n.detail for n in rows.drift}
    assert (
        details["issue_run_id_mismatch"] == f"issue {body['issues'][0]['id']} says run_id='{other}'"
    )
    assert "issue_run_id_missing" in details


def test_issues_and_versions_without_id_are_skipped_and_noted() -> None:
    body = _payload()
    del body["issues"][0]["id"]
    body["issues"].append(None)
    body["version"]["id"] = None
    rows = _normalize(body)
    assert len(rows.issues) == 1 and rows.version is None
    assert {"issue_without_id", "null_issue", "version_without_id"} <= _kinds(rows)


def test_an_intermediate_naming_another_run_is_noted() -> None:
    body = _payload()
    body["events"][2]["intermediate"]["run_id"] = str(uuid.uuid4()).upper()
    body["events"][1]["intermediate"]["run_id"] = body["id"].upper()  # same run, other spelling
    rows = _normalize(body)
    assert [n.detail.split("=")[0] for n in rows.drift] == ["events[2].intermediate.run_id"]


@pytest.mark.parametrize("data", [[1, 2], "text", 3.5, True, {"nested": {"a": [None]}}])
def test_data_and_output_that_are_not_objects_are_stored_as_they_are(data: Any) -> None:
    body = _payload()
    body["events"][0]["output"] = data
    body["events"][0]["intermediate"]["data"] = data
    rows = _normalize(body)
    assert _value(rows.events[0].output) == data and _value(rows.intermediates[0].data) == data
    assert rows.drift == []


def test_a_body_for_another_run_is_refused() -> None:
    body = _payload()
    requested = uuid.uuid4()
    assert _rejected(body, requested) == (
        f"id mismatch: body id {body['id']} is not the requested run {requested}"
    )


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"{not json", "invalid JSON: "),
        (b"", "invalid JSON: "),
        (b'[{"id": "x"}]', "body is not a JSON object but list"),
        (b'"run"', "body is not a JSON object but str"),
        (b'{"status": "completed"}', "body has no id"),
        (b'{"id": null}', "body has no id"),
        (b'{"id": "abc"}', "id is not a UUID: 'abc'"),
        (b'{"id": 12}', "id is not a UUID: 12"),
    ],
)
def test_bodies_that_are_not_a_run_are_refused(raw: bytes, reason: str) -> None:
    assert _rejected(raw).startswith(reason)


@pytest.mark.parametrize(
    ("place", "reason"),
    [
        (("events", 2, "intermediate", "session_id"), "events[2].intermediate.session_id"),
        (("issues", 1, "assignee"), "issues[1].assignee"),
        (("version", "created_by"), "version.created_by"),
        (("org_id",), "org_id"),
    ],
)
def test_a_malformed_uuid_is_refused_with_its_path(place: tuple[Any, ...], reason: str) -> None:
    body = _payload()
    target = body
    for step in place[:-1]:
        target = target[step]
    target[place[-1]] = "abc"
    assert _rejected(body, uuid.UUID(body["id"])) == f"{reason} is not a UUID: 'abc'"


@pytest.mark.parametrize("value", ["yesterday", "2025-13-01T00:00:00Z", 1700000000])
def test_an_unparsable_timestamp_is_refused_with_its_path(value: Any) -> None:
    body = _payload()
    body["events"][1]["timestamp"] = value
    assert (
        _rejected(body, uuid.UUID(body["id"]))
        == f"events[1].timestamp is not a timestamp: {value!r}"
    )


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"events": {"a": 1}}, "events is not an array"),
        ({"issues": "none"}, "issues is not an array"),
        ({"events": [1]}, "events[0] is not an object"),
        ({"issues": [[]]}, "issues[0] is not an object"),
        ({"version": "v1"}, "version is not an object"),
        ({"events": [{"intermediate": 5}]}, "events[0].intermediate is not an object"),
    ],
)
def test_parts_of_the_wrong_shape_are_refused(change: dict[str, Any], reason: str) -> None:
    body = _payload(**change)
    assert _rejected(body, uuid.UUID(body["id"])).startswith(reason)


def test_an_offset_pushing_a_timestamp_out_of_range_is_refused() -> None:
    body = _payload(timestamp="0001-01-01T00:00:00+05:00")
    assert "timestamp is out of range" in _rejected(body, uuid.UUID(body["id"]))


def test_uuids_in_other_spellings_are_accepted() -> None:
    org = uuid.uuid4()
    rows = _normalize(_payload(org_id=org.hex.upper()))
    assert rows.run.org_id == org
    rows = _normalize(_payload(org_id="{" + str(org) + "}"))
    assert rows.run.org_id == org


def test_fetched_at_must_carry_a_zone() -> None:
    body = _payload()
    with pytest.raises(ValueError):
        normalize(orjson.dumps(body), uuid.UUID(body["id"]), datetime(2025, 1, 1))


def test_offsets_in_fetched_at_are_kept_as_instants() -> None:
    body = _payload()
    at = datetime(2025, 1, 1, 9, tzinfo=timezone(timedelta(hours=9)))
    rows = normalize(orjson.dumps(body), uuid.UUID(body["id"]), at)
    assert rows.run.fetched_at == datetime(2025, 1, 1, tzinfo=UTC)


def test_rows_hold_their_json_text_at_its_own_size() -> None:
    # Rows wait in memory until their batch is written: a few hundred runs of ~50 values.
    # orjson's bytes keep ~4 KiB of spare room each, which doubled a worker's memory.
    rows = _normalize(_payload())
    values = [e.output for e in rows.events] + [i.data for i in rows.intermediates]
    assert all(v is not None and sys.getsizeof(v) < len(v) + 100 for v in values)


# --- calls: session events, their messages and tool calls ---------------------------------------


def _call_payload(**changes: Any) -> dict[str, Any]:
    """One action event, then one call of 6 turns (events[1]); its first turn calls a tool."""
    body = make_run_payload(random.Random(11), events=1, issues=0, sessions=1, messages=6)
    first = body["events"][1]["messages"][0]
    first["tool_calls"] = [{"function": {"name": "find_load", "arguments": '{"ref": "7"}'}}]
    body["events"][1].update(changes)
    return body


def test_a_session_event_gives_its_call_messages_and_tool_calls() -> None:
    body = _call_payload()
    session = body["events"][1]
    rows = _normalize(body)
    assert rows.drift == []
    # The event row stays, so seq is the position in `events` in both tables.
    assert [(e.seq, e.type) for e in rows.events] == [(0, "action"), (1, "session")]
    assert rows.events[1].output is None and rows.events[1].integration_name is None
    [call] = rows.sessions
    assert (call.seq, call.id, call.duration) == (1, session["id"], session["duration"])
    assert call.timestamp == datetime.fromisoformat(session["timestamp"])
    assert [(m.session_seq, m.seq) for m in rows.messages] == [(1, i) for i in range(6)]
    first = rows.messages[0]
    assert first.role == "assistant" and first.content == session["messages"][0]["content"]
    assert first.latency_llm == session["messages"][0]["latency_breakdown"]["llm"]
    assert _value(first.tool_calls) == session["messages"][0]["tool_calls"]
    assert rows.messages[1].latency_llm is None  # a user turn: no breakdown
    tool = rows.tool_calls[0]
    assert (tool.session_seq, tool.message_seq, tool.seq, tool.name) == (1, 0, 0, "find_load")
    assert rows.tool_calls[0].arguments == '{"ref": "7"}'


def test_a_failed_call_has_its_sip_outcome_and_no_messages() -> None:
    body = _call_payload(sip_code="486", sip_reason="Busy Here", duration=0, messages=[])
    rows = _normalize(body)
    [call] = rows.sessions
    assert (call.sip_code, call.sip_reason, call.duration) == ("486", "Busy Here", 0.0)
    assert rows.messages == [] and rows.tool_calls == [] and rows.drift == []


def test_an_unknown_event_type_keeps_its_row_and_counts_as_drift() -> None:
    body = _payload()
    body["events"][1] = {"type": "sms", "timestamp": "2025-01-01T00:00:00Z", "to": "+1555"}
    rows = _normalize(body)
    assert [(e.seq, e.type) for e in rows.events] == [(0, "action"), (1, "sms"), (2, "action")]
    assert rows.events[1].timestamp == datetime(2025, 1, 1, tzinfo=UTC)
    assert rows.drift == [DriftNote("unknown_event_type", "events[].type='sms'")]
    assert rows.sessions == [] and b'"to":"+1555"' in _raw(rows)


@pytest.mark.parametrize("how", ["null", "missing"])
def test_null_messages_tool_calls_and_latency_breakdown_are_just_absent(how: str) -> None:
    body = _call_payload()
    session = body["events"][1]
    message = session["messages"][0]
    for obj, key in ((message, "tool_calls"), (message, "latency_breakdown")):
        if how == "null":
            obj[key] = None
        else:
            del obj[key]
    rows = _normalize(body)
    assert rows.tool_calls == [] and rows.messages[0].tool_calls is None
    assert rows.messages[0].latency_network is None and rows.messages[0].latency_tts is None
    assert rows.drift == []
    if how == "null":
        session["messages"] = None
    else:
        del session["messages"]
    rows = _normalize(body)
    assert len(rows.sessions) == 1 and rows.messages == [] and rows.drift == []


def test_a_new_role_is_stored_and_noted() -> None:
    body = _call_payload()
    body["events"][1]["messages"][2]["role"] = "supervisor"
    rows = _normalize(body)
    assert rows.messages[2].role == "supervisor"
    assert rows.drift == [DriftNote("new_enum_value", "events[].messages[].role='supervisor'")]


def test_a_session_id_that_is_not_a_uuid_is_kept_as_sent() -> None:
    rows = _normalize(_call_payload(id="CA0123456789abcdef0123456789abcdef"))
    assert rows.sessions[0].id == "CA0123456789abcdef0123456789abcdef" and rows.drift == []


def test_retention_deleted_content_is_stored_as_the_platform_sends_it() -> None:
    body = _call_payload()
    for message in body["events"][1]["messages"]:
        message.update(content="", tool_calls=None, data_deleted=True)
    body["events"][0]["intermediate"].update(data={}, data_deleted=True)
    rows = _normalize(body)
    assert {(m.content, m.data_deleted, m.tool_calls) for m in rows.messages} == {("", True, None)}
    assert rows.tool_calls == [] and rows.drift == []
    assert (_value(rows.intermediates[0].data), rows.intermediates[0].data_deleted) == ({}, True)


def test_odd_values_in_calls_are_converted_and_noted() -> None:
    body = _call_payload(duration="187.4", sip_code=486)
    message = body["events"][1]["messages"][0]
    message["latency_breakdown"].update(llm="412.5", gpu=3)
    message["is_filler"] = "true"
    message["tool_calls"] = [
        {"id": "call_1", "type": "function", "function": {"name": "f", "arguments": {"a": 1}}},
        None,
        {"function": None},
    ]
    body["events"][1]["messages"][1] = None
    rows = _normalize(body)
    assert (rows.sessions[0].duration, rows.sessions[0].sip_code) == (187.4, "486")
    first = rows.messages[0]
    assert (first.latency_llm, first.is_filler) == (412.5, True)
    assert [(t.seq, t.name, t.arguments) for t in rows.tool_calls] == [
        (0, "f", '{"a":1}'),
        (1, None, None),
        (2, None, None),
    ]
    assert rows.messages[1].id is None and rows.messages[1].seq == 1  # a null turn keeps its slot
    assert {(n.kind, n.detail) for n in rows.drift} == {
        ("coerced_to_number", "events[].duration"),
        ("coerced_to_text", "events[].sip_code"),
        ("coerced_to_number", "events[].messages[].latency_breakdown.llm"),
        ("unknown_field", "events[].messages[].latency_breakdown.gpu"),
        ("coerced_to_boolean", "events[].messages[].is_filler"),
        ("unknown_field", "events[].messages[].tool_calls[].id"),
        ("unknown_field", "events[].messages[].tool_calls[].type"),
        ("coerced_to_text", "events[].messages[].tool_calls[].function.arguments"),
        ("null_tool_call", "events[1].messages[0].tool_calls[1]"),
        ("null_message", "events[1].messages[1]"),
    }


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"messages": {"0": {}}}, "events[1].messages is not an array: {'0': {}}"),
        ({"messages": ["hello"]}, "events[1].messages[0] is not an object: 'hello'"),
        ({"duration": "long"}, "events[1].duration is not a number: 'long'"),
        ({"duration": True}, "events[1].duration is not a number: True"),
    ],
)
def test_calls_of_the_wrong_shape_are_refused_with_their_path(
    change: dict[str, Any], reason: str
) -> None:
    with pytest.raises(PayloadRejected) as refused:
        _normalize(_call_payload(**change))
    assert refused.value.reason == reason


@pytest.mark.parametrize(
    ("place", "value", "reason"),
    [
        ("latency_breakdown", [1, 2], "latency_breakdown is not an object: [1, 2]"),
        ("tool_calls", "find_load", "tool_calls is not an array: 'find_load'"),
        ("id", "not-a-uuid", "id is not a UUID: 'not-a-uuid'"),
    ],
)
def test_messages_of_the_wrong_shape_are_refused_with_their_path(
    place: str, value: Any, reason: str
) -> None:
    body = _call_payload()
    body["events"][1]["messages"][3][place] = value
    with pytest.raises(PayloadRejected) as refused:
        _normalize(body)
    assert refused.value.reason == f"events[1].messages[3].{reason}"


def _nested(depth: int, leaf: Any = 1) -> Any:
    value = leaf
    for _ in range(depth):
        value = {"a": value}
    return value


def test_a_deeply_nested_value_in_a_text_column_is_its_json_text() -> None:
    body = _payload()
    body["issues"][0]["correction"] = _nested(300)
    rows = _normalize(jsontext.dumps(body).encode())  # orjson writes at most 254 levels
    assert jsontext.loads(rows.issues[0].correction or "") == _nested(300)
    assert DriftNote("coerced_to_text", "issues[].correction") in rows.drift


def test_nul_characters_nested_too_deep_to_clean_are_refused_in_one_line() -> None:
    body = _payload()
    body["events"][0]["output"] = _nested(5000, "a\x00b")
    with pytest.raises(PayloadRejected) as refused:
        _normalize(jsontext.dumps(body).encode())
    assert refused.value.reason == (
        "NUL characters in values nested deeper than they can be removed from"
    )
