"""A `session` event (one call or chat) -> its run_sessions row, its transcript's
session_messages rows (latency_breakdown flattened) and their message_tool_calls rows."""

from __future__ import annotations

import uuid
from typing import Any

from ingest.normalize import facts
from ingest.normalize.fields import (
    UUID_CACHE,
    BadField,
    Notes,
    json_text,
    note_unknown_fields,
    prefixed,
    read_bool,
    read_enum,
    read_float,
    read_text,
    read_timestamp,
    read_unique_uuid,
    read_uuid,
    show,
)
from ingest.normalize.rows import MessageRow, SessionRow, ToolCallRow
from ingest.normalize.shape import (
    FUNCTION_FIELDS,
    LATENCY_KEYS,
    LATENCY_STAGES,
    MESSAGE_FIELDS,
    MESSAGE_ROLES,
    SESSION_FIELDS,
    TOOL_CALL_FIELDS,
)


def session_event_fields(doc: dict[str, Any]) -> dict[str, Any]:
    """The fields of a session event that its run_events row holds (the rest is the call's)."""
    return {"type": doc.get("type"), "timestamp": doc.get("timestamp")}


def session_rows(
    doc: dict[str, Any], run_id: uuid.UUID, seq: int, n: Notes
) -> tuple[SessionRow, list[MessageRow], list[ToolCallRow]]:
    """A `session` event's rows; its run_events row is made by `_event` like any event's."""
    w = "events[]."
    if not SESSION_FIELDS.issuperset(doc):
        note_unknown_fields(doc, SESSION_FIELDS, n, w)
    session = SessionRow(
        run_id=run_id,
        seq=seq,
        id=read_text(doc, "id", n, w),
        timestamp=read_timestamp(doc, "timestamp", n, w),
        duration=read_float(doc, "duration", n, w),
        sip_code=read_text(doc, "sip_code", n, w),
        sip_reason=read_text(doc, "sip_reason", n, w),
        actions=json_text(doc.get("actions")),
    )
    messages: list[MessageRow] = []
    tool_calls: list[ToolCallRow] = []
    raw = doc.get("messages")
    if raw is None:
        return session, messages, tool_calls
    if type(raw) is not list:
        raise BadField("messages", f"is not an array: {show(raw)}")
    for index, message_doc in enumerate(raw):
        if message_doc is None:
            # As for events: its position is its identity, so the slot stays, all NULL.
            n.add("null_message", f"events[{seq}].messages[{index}]")
            message_doc = {}
        elif type(message_doc) is not dict:
            raise BadField(f"messages[{index}]", f"is not an object: {show(message_doc)}")
        try:
            messages.append(_message(message_doc, run_id, seq, index, n))
            calls = message_doc.get("tool_calls")
            if calls is not None:
                tool_calls.extend(_tool_calls(calls, run_id, seq, index, n))
        except BadField as bad:
            raise prefixed(f"messages[{index}].", bad) from None
    facts.fill_session(session, messages, tool_calls)
    return session, messages, tool_calls


_NO_LATENCY = (None,) * len(LATENCY_STAGES)


def _latencies(doc: dict[str, Any], n: Notes) -> tuple[float | None, ...]:
    value = doc.get("latency_breakdown")
    if value is None:
        return _NO_LATENCY
    if type(value) is not dict:
        raise BadField("latency_breakdown", f"is not an object: {show(value)}")
    w = "events[].messages[].latency_breakdown."
    if not LATENCY_KEYS.issuperset(value):
        note_unknown_fields(value, LATENCY_KEYS, n, w)
    stages = list(map(value.get, LATENCY_STAGES))
    try:
        for index, number in enumerate(stages):
            # Seven per turn: a float as sent (the usual case) needs no conversion call.
            if type(number) is not float:
                stages[index] = read_float(value, LATENCY_STAGES[index], n, w)
    except BadField as bad:
        raise prefixed("latency_breakdown.", bad) from None
    return tuple(stages)


def _message(
    doc: dict[str, Any], run_id: uuid.UUID, session_seq: int, seq: int, n: Notes
) -> MessageRow:
    w = "events[].messages[]."
    if not MESSAGE_FIELDS.issuperset(doc):
        note_unknown_fields(doc, MESSAGE_FIELDS, n, w)
    get = doc.get
    role, content, name = get("role"), get("content"), get("name")
    if role is not None and (type(role) is not str or role not in MESSAGE_ROLES):
        role = read_enum(doc, "role", MESSAGE_ROLES, n, w)
    if content is not None and type(content) is not str:
        content = read_text(doc, "content", n, w)
    if name is not None and type(name) is not str:
        name = read_text(doc, "name", n, w)
    flags = []
    for key in ("is_filler", "is_interrupted", "is_natural_cut", "data_deleted"):
        flag = get(key)
        flags.append(flag if flag is None or type(flag) is bool else read_bool(doc, key, n, w))
    session = get("session_id")
    session_id = UUID_CACHE.get(session) if type(session) is str else None
    if session_id is None:
        session_id = read_uuid(doc, "session_id")
    network, initial_wait, transcriber, eos, eos_wait, llm, tts = _latencies(doc, n)
    return MessageRow(
        run_id,
        session_seq,
        seq,
        read_unique_uuid(doc, "id"),
        session_id,
        read_uuid(doc, "chat_session_id"),
        role,
        content,
        name,
        flags[0],
        flags[1],
        flags[2],
        read_timestamp(doc, "timestamp", n, w),
        flags[3],
        json_text(get("tool_calls")),
        network,
        initial_wait,
        transcriber,
        eos,
        eos_wait,
        llm,
        tts,
    )


def _tool_calls(
    calls: Any, run_id: uuid.UUID, session_seq: int, message_seq: int, n: Notes
) -> list[ToolCallRow]:
    w = "events[].messages[].tool_calls[]."
    if type(calls) is not list:
        raise BadField("tool_calls", f"is not an array: {show(calls)}")
    rows = []
    for seq, call in enumerate(calls):
        function: Any = None
        if call is None:
            n.add(
                "null_tool_call", f"events[{session_seq}].messages[{message_seq}].tool_calls[{seq}]"
            )
        elif type(call) is not dict:
            raise BadField(f"tool_calls[{seq}]", f"is not an object: {show(call)}")
        else:
            if not TOOL_CALL_FIELDS.issuperset(call):
                note_unknown_fields(call, TOOL_CALL_FIELDS, n, w)
            function = call.get("function")
        name = arguments = None
        if type(function) is dict:
            if not FUNCTION_FIELDS.issuperset(function):
                note_unknown_fields(function, FUNCTION_FIELDS, n, f"{w}function.")
            name = read_text(function, "name", n, f"{w}function.")
            arguments = read_text(function, "arguments", n, f"{w}function.")
        elif function is not None:
            raise BadField(f"tool_calls[{seq}].function", f"is not an object: {show(function)}")
        rows.append(ToolCallRow(run_id, session_seq, message_seq, seq, name, arguments))
    return rows
