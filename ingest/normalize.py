"""One `GET /runs/{id}` body (bytes) -> typed rows, one row type per table.

Pure: no I/O, no database, no logging, so it can run anywhere (worker, reprocess, benchmarks)
and be tested exhaustively. What happens to every kind of odd payload is written down in
docs/payload-policy.md; in short, a payload is either stored (possibly with drift notes) or
refused with `PayloadRejected`, whose message is the dead letter's reason.

Speed matters (a backfill normalizes millions of runs): the body is parsed once with orjson,
each table has one hand-written builder (no per-field reflection), UUIDs of repeated values are
cached, and the rare repairs (NUL characters, type coercions) cost nothing when absent.
"""

from __future__ import annotations

import hashlib
import math
import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson
from asyncpg.pgproto import pgproto

from ingest import jsontext

TERMINAL_STATUSES = frozenset({"completed", "canceled", "failed"})
RUN_STATUSES = frozenset({"scheduled", "running", *TERMINAL_STATUSES})
ANNOTATIONS = frozenset({"correct", "incorrect", "critical"})
ISSUE_STATUSES = frozenset({"open", "approved", "rejected", "closed"})
ISSUE_PRIORITIES = frozenset({"low", "medium", "high"})
ISSUE_TYPES = frozenset(
    {"transcriber", "message", "tool_call", "end_of_sentence", "run", "interruption"}
)
VERSION_ENVIRONMENTS = frozenset({"staging", "production"})
MESSAGE_ROLES = frozenset({"assistant", "user", "tool", "event"})
DOCUMENTED_MAX_LENGTH = 256  # the API documents it for a few names; longer ones are kept whole

# Fields each object may carry. Anything else is kept in the raw payload and noted as drift.
# `data` is the listing's (GET /runs); discovery owns that column.
RUN_FIELDS = frozenset(
    {"id", "org_id", "use_case_id", "version_id", "status", "annotation", "timestamp"}
    | {"events", "issues", "version", "completed_at", "data"}
)
EVENT_FIELDS = frozenset(
    {"type", "timestamp", "integration_name", "event_name", "intermediate", "output", "node_id"}
)
SESSION_FIELDS = frozenset(
    {"type", "id", "timestamp", "duration", "sip_code", "sip_reason", "actions", "messages"}
)
INTERMEDIATE_FIELDS = frozenset(
    {"id", "run_id", "node_id", "event_id", "session_id", "name", "data", "error", "timestamp"}
    | {"data_deleted"}
)
MESSAGE_FIELDS = frozenset(
    {"id", "session_id", "chat_session_id", "role", "content", "tool_calls", "name"}
    | {"is_filler", "is_interrupted", "is_natural_cut", "latency_breakdown", "timestamp"}
    | {"data_deleted"}
)
# latency_breakdown's keys, in the order of the session_messages columns named after them.
LATENCY_STAGES = ("network", "initial_wait", "transcriber", "eos", "eos_wait", "llm", "tts")
_LATENCY_KEYS = frozenset(LATENCY_STAGES)
TOOL_CALL_FIELDS = frozenset({"function"})
FUNCTION_FIELDS = frozenset({"name", "arguments"})
ISSUE_FIELDS = frozenset(
    {"id", "use_case_id", "org_id", "run_id", "run_version_id", "status", "priority"}
    | {"created_at", "type", "updated_at", "assignee", "created_by", "updated_by"}
    | {"message_id", "correction", "correction_reason", "northstar_id"}
)
VERSION_FIELDS = frozenset(
    {"id", "slug", "org_id", "use_case_id", "version_number", "name", "is_published"}
    | {"is_live", "source_version_id", "timestamp", "published_at", "is_deleted"}
    | {"description", "created_by", "environment"}
)

_INT32_MIN, _INT32_MAX = -(2**31), 2**31 - 1
_INTEGER = re.compile(r"\s*[+-]?[0-9]+\s*")


# --- rows: one per table, fields named and ordered like the table's columns --------------------


@dataclass(frozen=True, slots=True)
class DriftNote:
    """Something the payload did that today's API description does not say; stored, counted."""

    kind: str
    detail: str


@dataclass(slots=True)
class RunRow:
    """The columns of `runs` a fetch owns; `data` and `listed_at` are discovery's."""

    id: uuid.UUID
    org_id: uuid.UUID | None
    use_case_id: uuid.UUID | None
    version_id: uuid.UUID | None
    status: str | None
    annotation: str | None
    timestamp: datetime | None
    completed_at: datetime | None  # NULL keeps the listing's (a run does not un-complete)
    fetched_at: datetime
    payload_sha256: str


@dataclass(slots=True)
class VersionRow:
    id: uuid.UUID
    slug: str | None
    org_id: uuid.UUID | None
    use_case_id: uuid.UUID | None
    version_number: int | None
    name: str | None
    is_published: bool | None
    is_live: bool | None
    source_version_id: uuid.UUID | None
    timestamp: datetime | None
    published_at: datetime | None
    is_deleted: bool | None
    description: str | None
    created_by: uuid.UUID | None
    environment: str | None
    fetched_at: datetime


@dataclass(slots=True)
class EventRow:
    run_id: uuid.UUID
    seq: int
    type: str | None
    timestamp: datetime | None
    integration_name: str | None
    event_name: str | None
    node_id: str | None
    output: str | None  # any JSON value, as JSON text; None is SQL NULL


@dataclass(slots=True)
class IntermediateRow:
    run_id: uuid.UUID
    seq: int
    id: uuid.UUID | None
    node_id: uuid.UUID | None
    event_id: uuid.UUID | None
    session_id: uuid.UUID | None
    name: str | None
    data: str | None  # any JSON value, as JSON text; None is SQL NULL
    error: str | None
    timestamp: datetime | None
    data_deleted: bool | None


@dataclass(slots=True)
class SessionRow:
    """A `session` event (one call or chat); `seq` is its position in `events`."""

    run_id: uuid.UUID
    seq: int
    id: str | None
    timestamp: datetime | None
    duration: float | None
    sip_code: str | None
    sip_reason: str | None
    actions: str | None  # any JSON value, as JSON text; None is SQL NULL


@dataclass(slots=True)
class MessageRow:
    """`messages[seq]` of the session at `events[session_seq]`."""

    run_id: uuid.UUID
    session_seq: int
    seq: int
    id: uuid.UUID | None
    session_id: uuid.UUID | None
    chat_session_id: uuid.UUID | None
    role: str | None
    content: str | None
    name: str | None
    is_filler: bool | None
    is_interrupted: bool | None
    is_natural_cut: bool | None
    timestamp: datetime | None
    data_deleted: bool | None
    tool_calls: str | None  # as sent, as JSON text; None is SQL NULL
    latency_network: float | None
    latency_initial_wait: float | None
    latency_transcriber: float | None
    latency_eos: float | None
    latency_eos_wait: float | None
    latency_llm: float | None
    latency_tts: float | None


@dataclass(slots=True)
class ToolCallRow:
    """`tool_calls[seq].function` of a message."""

    run_id: uuid.UUID
    session_seq: int
    message_seq: int
    seq: int
    name: str | None
    arguments: str | None  # JSON text as the API sends it (not parsed: it may not be JSON)


@dataclass(slots=True)
class IssueRow:
    id: uuid.UUID
    use_case_id: uuid.UUID | None
    org_id: uuid.UUID | None
    run_id: uuid.UUID
    run_version_id: uuid.UUID | None
    status: str | None
    priority: str | None
    created_at: datetime | None
    type: str | None
    updated_at: datetime | None
    assignee: uuid.UUID | None
    created_by: uuid.UUID | None
    updated_by: uuid.UUID | None
    message_id: uuid.UUID | None
    correction: str | None
    correction_reason: str | None
    northstar_id: uuid.UUID | None


@dataclass(slots=True)
class PayloadRow:
    run_id: uuid.UUID
    body: bytes
    sha256: str
    fetched_at: datetime
    drift: str  # the run's drift notes as a JSON array of {"kind", "detail"}


@dataclass(slots=True)
class RunRows:
    """Everything one fetched run writes, in one transaction."""

    run: RunRow
    version: VersionRow | None
    events: list[EventRow]
    intermediates: list[IntermediateRow]
    sessions: list[SessionRow]
    messages: list[MessageRow]
    tool_calls: list[ToolCallRow]
    issues: list[IssueRow]
    payload: PayloadRow
    drift: list[DriftNote]

    @property
    def terminal(self) -> bool:
        """The run will not change any more, except its issues (no refresh poll needed)."""
        return self.run.status in TERMINAL_STATUSES

    @property
    def row_count(self) -> int:
        """Rows this run writes across all tables (its version included)."""
        return (
            2  # runs + run_payloads
            + (self.version is not None)
            + len(self.events)
            + len(self.intermediates)
            + len(self.sessions)
            + len(self.messages)
            + len(self.tool_calls)
            + len(self.issues)
        )


class PayloadRejected(Exception):
    """The body cannot be stored; `reason` (also `str(exc)`) is one readable line."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


# --- field conversions ----------------------------------------------------------------------
# Each reads obj[key] and returns the column value, or raises _BadField naming `key`; the
# object's builder prefixes the path ("events[3].intermediate."), so the happy path builds no
# strings. `where` is the path pattern used in drift notes ("events[]"), a constant.


class _BadField(Exception):
    def __init__(self, path: str, problem: str) -> None:
        self.path = path
        self.problem = problem


def _show(value: Any) -> str:
    try:
        text = repr(value)
    except RecursionError:  # a value nested deeper than repr goes: say what it is
        text = f"a {type(value).__name__} nested too deep to show"
    return text if len(text) <= 80 else text[:77] + "..."


class _Notes:
    """Drift notes of one run, each (kind, detail) once, in the order first seen."""

    __slots__ = ("notes", "seen")

    def __init__(self) -> None:
        self.notes: list[DriftNote] = []
        self.seen: set[tuple[str, str]] = set()

    def add(self, kind: str, detail: str) -> None:
        if (kind, detail) not in self.seen:
            self.seen.add((kind, detail))
            self.notes.append(DriftNote(kind, detail))


# Repeated values (org, use case, version, node, session ids) dominate; a bounded cache of
# parsed UUIDs skips parsing them again, within a run and across runs. Cleared, not LRU.
_UUID_CACHE: dict[str, uuid.UUID] = {}
_UUID_CACHE_MAX = 50_000
_FastUUID: Callable[[str], uuid.UUID] = pgproto.UUID


def _parse_uuid(value: str) -> uuid.UUID:
    try:
        # asyncpg's UUID is a uuid.UUID subclass parsed in C (~0.13 µs, against ~1 µs for
        # uuid.UUID's pure Python): two per event are never repeated (intermediate id,
        # event_id), so this is the hot spot of a backfill. It takes 32 hex digits with any
        # dashes, as uuid.UUID does, and the driver sends it without converting it again.
        return _FastUUID(value)
    except ValueError:
        return uuid.UUID(value)  # braces, urn:uuid:, more dashes, and the errors


def _uuid(obj: dict[str, Any], key: str) -> uuid.UUID | None:
    """A UUID that recurs across runs (org, use case, version, node, session, user ids)."""
    value = obj.get(key)
    if value is None:
        return None
    if type(value) is str:
        cached = _UUID_CACHE.get(value)
        if cached is not None:
            return cached
        try:
            parsed = _parse_uuid(value)
        except ValueError:
            pass
        else:
            if len(_UUID_CACHE) >= _UUID_CACHE_MAX:
                _UUID_CACHE.clear()
            _UUID_CACHE[value] = parsed
            return parsed
    raise _BadField(key, f"is not a UUID: {_show(value)}")


def _unique_uuid(obj: dict[str, Any], key: str) -> uuid.UUID | None:
    """A UUID seen once (an event's or issue's own id): caching it would only evict others."""
    value = obj.get(key)
    if value is None:
        return None
    if type(value) is str:
        try:
            return _parse_uuid(value)
        except ValueError:
            pass
    raise _BadField(key, f"is not a UUID: {_show(value)}")


def _timestamp(obj: dict[str, Any], key: str, notes: _Notes, where: str) -> datetime | None:
    value = obj.get(key)
    if value is None:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except (TypeError, ValueError):
        raise _BadField(key, f"is not a timestamp: {_show(value)}") from None
    if parsed.tzinfo is None:
        notes.add("naive_timestamp", f"{where}{key}")
        return parsed.replace(tzinfo=UTC)
    if parsed.year in (1, 9999):
        # An offset can push the instant outside what Python (and so the driver) can hold.
        try:
            parsed.astimezone(UTC)
        except OverflowError:
            raise _BadField(key, f"is out of range: {_show(value)}") from None
    return parsed


def _text(obj: dict[str, Any], key: str, notes: _Notes, where: str) -> str | None:
    value = obj.get(key)
    if value is None or type(value) is str:
        return value
    # A text column can hold any JSON value as its JSON text: nothing is lost.
    notes.add("coerced_to_text", f"{where}{key}")
    return jsontext.dumps(value)


def _name(obj: dict[str, Any], key: str, notes: _Notes, where: str) -> str | None:
    """A text field the API documents as at most 256 characters."""
    value = _text(obj, key, notes, where)
    if value is not None and len(value) > DOCUMENTED_MAX_LENGTH:
        notes.add("long_string", f"{where}{key}")
    return value


def _enum(
    obj: dict[str, Any], key: str, known: frozenset[str], notes: _Notes, where: str
) -> str | None:
    value = _text(obj, key, notes, where)
    if value is not None and value not in known:
        notes.add("new_enum_value", f"{where}{key}={value[:80]!r}")
    return value


def _int(obj: dict[str, Any], key: str, notes: _Notes, where: str) -> int | None:
    value = obj.get(key)
    if value is None:
        return None
    if type(value) is int:
        number = value
    elif (type(value) is str and _INTEGER.fullmatch(value)) or (
        type(value) is float and value.is_integer()
    ):
        number = int(value)
        notes.add("coerced_to_integer", f"{where}{key}")
    else:
        raise _BadField(key, f"is not an integer: {_show(value)}")
    if not _INT32_MIN <= number <= _INT32_MAX:
        raise _BadField(key, f"is out of integer range: {_show(value)}")
    return number


def _float(obj: dict[str, Any], key: str, notes: _Notes, where: str) -> float | None:
    """A number stored as sent (double precision); a numeric string is read as its number."""
    value = obj.get(key)
    if value is None:
        return None
    kind = type(value)
    if kind is float or kind is int:
        if kind is int and not -_DOUBLE_EXACT <= value <= _DOUBLE_EXACT:
            notes.add("rounded_to_double", f"{where}{key}")
        return float(value)
    if kind is str:
        try:
            number = float(value)
        except ValueError:
            pass
        else:
            if math.isfinite(number):
                notes.add("coerced_to_number", f"{where}{key}")
                return number
    raise _BadField(key, f"is not a number: {_show(value)}")


_DOUBLE_EXACT = 2**53  # beyond it a double cannot hold every integer: say it was rounded
_BOOLEANS = {"true": True, "false": False, "1": True, "0": False}


def _bool(obj: dict[str, Any], key: str, notes: _Notes, where: str) -> bool | None:
    value = obj.get(key)
    if value is None or type(value) is bool:
        return value
    if type(value) is str:
        parsed = _BOOLEANS.get(value.strip().lower())
    elif type(value) is int:
        parsed = _BOOLEANS.get(str(value))
    else:
        parsed = None
    if parsed is None:
        raise _BadField(key, f"is not a boolean: {_show(value)}")
    notes.add("coerced_to_boolean", f"{where}{key}")
    return parsed


def _unknown_fields(obj: dict[str, Any], known: frozenset[str], notes: _Notes, where: str) -> None:
    if not known.issuperset(obj):
        for key in sorted(obj.keys() - known):
            notes.add("unknown_field", f"{where}{key}"[:200])


def _strip_nul(value: Any, path: str, notes: _Notes) -> Any:
    """The value without NUL characters, which PostgreSQL text and jsonb cannot hold."""
    if type(value) is str:
        if "\x00" in value:
            notes.add("nul_removed", path or "(root)")
            return value.replace("\x00", "")
        return value
    if type(value) is list:
        return [_strip_nul(item, f"{path}[]", notes) for item in value]
    if type(value) is dict:
        cleaned: dict[str, Any] = {}
        for key, item in value.items():
            clean_key = key.replace("\x00", "")
            key_path = f"{path}.{clean_key}" if path else clean_key
            if clean_key != key:
                notes.add("nul_removed", f"{key_path} (key)")
            # Two keys equal once cleaned: the later one wins, as with duplicate JSON keys.
            cleaned[clean_key] = _strip_nul(item, key_path, notes)
        return cleaned
    return value


# --- builders, one per table ------------------------------------------------------------------


def _run(
    doc: dict[str, Any], run_id: uuid.UUID, fetched_at: datetime, sha: str, n: _Notes
) -> RunRow:
    return RunRow(
        id=run_id,
        org_id=_uuid(doc, "org_id"),
        use_case_id=_uuid(doc, "use_case_id"),
        version_id=_uuid(doc, "version_id"),
        status=_enum(doc, "status", RUN_STATUSES, n, ""),
        annotation=_enum(doc, "annotation", ANNOTATIONS, n, ""),
        timestamp=_timestamp(doc, "timestamp", n, ""),
        completed_at=_timestamp(doc, "completed_at", n, ""),
        fetched_at=fetched_at,
        payload_sha256=sha,
    )


def _version(doc: dict[str, Any], fetched_at: datetime, n: _Notes) -> VersionRow | None:
    w = "version."
    _unknown_fields(doc, VERSION_FIELDS, n, w)
    version_id = _uuid(doc, "id")
    if version_id is None:
        n.add("version_without_id", "version is not stored: it has no id")
        return None
    return VersionRow(
        id=version_id,
        slug=_name(doc, "slug", n, w),
        org_id=_uuid(doc, "org_id"),
        use_case_id=_uuid(doc, "use_case_id"),
        version_number=_int(doc, "version_number", n, w),
        name=_name(doc, "name", n, w),
        is_published=_bool(doc, "is_published", n, w),
        is_live=_bool(doc, "is_live", n, w),
        source_version_id=_uuid(doc, "source_version_id"),
        timestamp=_timestamp(doc, "timestamp", n, w),
        published_at=_timestamp(doc, "published_at", n, w),
        is_deleted=_bool(doc, "is_deleted", n, w),
        description=_text(doc, "description", n, w),
        created_by=_uuid(doc, "created_by"),
        environment=_enum(doc, "environment", VERSION_ENVIRONMENTS, n, w),
        fetched_at=fetched_at,
    )


def _json(value: Any) -> str | None:
    """A jsonb value as JSON text, made here so that the parsed tree dies with the payload:
    held until its batch is written, its thousands of objects would each be walked by the
    cycle collector, and encoded then it costs the same. A str, not orjson's bytes, which
    keep 4 KiB of spare room each: 50 per run, held until written, doubled a worker's RSS.
    """
    return None if value is None else jsontext.dumps(value)


def _plain(value: Any) -> bool:
    """A text value needing no conversion and no note: None, or a string within 256."""
    return value is None or (type(value) is str and len(value) <= DOCUMENTED_MAX_LENGTH)


def _event(doc: dict[str, Any], run_id: uuid.UUID, seq: int, n: _Notes) -> EventRow:
    w = "events[]."
    if not EVENT_FIELDS.issuperset(doc):
        _unknown_fields(doc, EVENT_FIELDS, n, w)
    get = doc.get
    kind, integration, name, node = (
        get("type"),
        get("integration_name"),
        get("event_name"),
        get("node_id"),
    )
    # ~30 per run: the usual event (text fields plain strings) costs no per-field call; any
    # other goes through the field conversions, in the same order (so the same notes).
    plain_ids = (kind is None or type(kind) is str) and (node is None or type(node) is str)
    if plain_ids and _plain(integration) and _plain(name):
        timestamp = _timestamp(doc, "timestamp", n, w)
        return EventRow(run_id, seq, kind, timestamp, integration, name, node, _json(get("output")))
    return EventRow(
        run_id=run_id,
        seq=seq,
        type=_text(doc, "type", n, w),
        timestamp=_timestamp(doc, "timestamp", n, w),
        integration_name=_name(doc, "integration_name", n, w),
        event_name=_name(doc, "event_name", n, w),
        node_id=_text(doc, "node_id", n, w),
        output=_json(get("output")),
    )


def _intermediate(
    doc: dict[str, Any], run_id: uuid.UUID, run_text: str, seq: int, n: _Notes
) -> IntermediateRow:
    w = "events[].intermediate."
    if not INTERMEDIATE_FIELDS.issuperset(doc):
        _unknown_fields(doc, INTERMEDIATE_FIELDS, n, w)
    get = doc.get
    own_run = get("run_id")
    if own_run is not None and own_run != run_text and not _same_run(own_run, run_id, run_text):
        n.add("intermediate_run_id_mismatch", f"events[{seq}].intermediate.run_id={_show(own_run)}")
    try:
        own_id = _unique_uuid(doc, "id")
        # node and session ids repeat within a run: a cache hit costs no call.
        node = get("node_id")
        node_id = _UUID_CACHE.get(node) if type(node) is str else None
        if node_id is None:
            node_id = _uuid(doc, "node_id")
        event_id = _unique_uuid(doc, "event_id")
        session = get("session_id")
        session_id = _UUID_CACHE.get(session) if type(session) is str else None
        if session_id is None:
            session_id = _uuid(doc, "session_id")
        name, error = get("name"), get("error")
        if name is not None and type(name) is not str:
            name = _text(doc, "name", n, w)
        if error is not None and type(error) is not str:
            error = _text(doc, "error", n, w)
        timestamp = _timestamp(doc, "timestamp", n, w)
        deleted = get("data_deleted")
        if deleted is not None and type(deleted) is not bool:
            deleted = _bool(doc, "data_deleted", n, w)
    except _BadField as bad:
        raise _BadField(f"intermediate.{bad.path}", bad.problem) from None
    return IntermediateRow(
        run_id,
        seq,
        own_id,
        node_id,
        event_id,
        session_id,
        name,
        _json(get("data")),
        error,
        timestamp,
        deleted,
    )


def _session(
    doc: dict[str, Any], run_id: uuid.UUID, seq: int, n: _Notes
) -> tuple[SessionRow, list[MessageRow], list[ToolCallRow]]:
    """A `session` event's rows; its run_events row is made by `_event` like any event's."""
    w = "events[]."
    if not SESSION_FIELDS.issuperset(doc):
        _unknown_fields(doc, SESSION_FIELDS, n, w)
    session = SessionRow(
        run_id=run_id,
        seq=seq,
        id=_text(doc, "id", n, w),
        timestamp=_timestamp(doc, "timestamp", n, w),
        duration=_float(doc, "duration", n, w),
        sip_code=_text(doc, "sip_code", n, w),
        sip_reason=_text(doc, "sip_reason", n, w),
        actions=_json(doc.get("actions")),
    )
    messages: list[MessageRow] = []
    tool_calls: list[ToolCallRow] = []
    raw = doc.get("messages")
    if raw is None:
        return session, messages, tool_calls
    if type(raw) is not list:
        raise _BadField("messages", f"is not an array: {_show(raw)}")
    for index, message_doc in enumerate(raw):
        if message_doc is None:
            # As for events: its position is its identity, so the slot stays, all NULL.
            n.add("null_message", f"events[{seq}].messages[{index}]")
            message_doc = {}
        elif type(message_doc) is not dict:
            raise _BadField(f"messages[{index}]", f"is not an object: {_show(message_doc)}")
        try:
            messages.append(_message(message_doc, run_id, seq, index, n))
            calls = message_doc.get("tool_calls")
            if calls is not None:
                tool_calls.extend(_tool_calls(calls, run_id, seq, index, n))
        except _BadField as bad:
            raise _prefixed(f"messages[{index}].", bad) from None
    return session, messages, tool_calls


_NO_LATENCY = (None,) * len(LATENCY_STAGES)


def _latencies(doc: dict[str, Any], n: _Notes) -> tuple[float | None, ...]:
    value = doc.get("latency_breakdown")
    if value is None:
        return _NO_LATENCY
    if type(value) is not dict:
        raise _BadField("latency_breakdown", f"is not an object: {_show(value)}")
    w = "events[].messages[].latency_breakdown."
    if not _LATENCY_KEYS.issuperset(value):
        _unknown_fields(value, _LATENCY_KEYS, n, w)
    stages = list(map(value.get, LATENCY_STAGES))
    try:
        for index, number in enumerate(stages):
            # Seven per turn: a float as sent (the usual case) needs no conversion call.
            if type(number) is not float:
                stages[index] = _float(value, LATENCY_STAGES[index], n, w)
    except _BadField as bad:
        raise _prefixed("latency_breakdown.", bad) from None
    return tuple(stages)


def _message(
    doc: dict[str, Any], run_id: uuid.UUID, session_seq: int, seq: int, n: _Notes
) -> MessageRow:
    w = "events[].messages[]."
    if not MESSAGE_FIELDS.issuperset(doc):
        _unknown_fields(doc, MESSAGE_FIELDS, n, w)
    get = doc.get
    role, content, name = get("role"), get("content"), get("name")
    if role is not None and (type(role) is not str or role not in MESSAGE_ROLES):
        role = _enum(doc, "role", MESSAGE_ROLES, n, w)
    if content is not None and type(content) is not str:
        content = _text(doc, "content", n, w)
    if name is not None and type(name) is not str:
        name = _text(doc, "name", n, w)
    flags = []
    for key in ("is_filler", "is_interrupted", "is_natural_cut", "data_deleted"):
        flag = get(key)
        flags.append(flag if flag is None or type(flag) is bool else _bool(doc, key, n, w))
    session = get("session_id")
    session_id = _UUID_CACHE.get(session) if type(session) is str else None
    if session_id is None:
        session_id = _uuid(doc, "session_id")
    network, initial_wait, transcriber, eos, eos_wait, llm, tts = _latencies(doc, n)
    return MessageRow(
        run_id,
        session_seq,
        seq,
        _unique_uuid(doc, "id"),
        session_id,
        _uuid(doc, "chat_session_id"),
        role,
        content,
        name,
        flags[0],
        flags[1],
        flags[2],
        _timestamp(doc, "timestamp", n, w),
        flags[3],
        _json(get("tool_calls")),
        network,
        initial_wait,
        transcriber,
        eos,
        eos_wait,
        llm,
        tts,
    )


def _tool_calls(
    calls: Any, run_id: uuid.UUID, session_seq: int, message_seq: int, n: _Notes
) -> list[ToolCallRow]:
    w = "events[].messages[].tool_calls[]."
    if type(calls) is not list:
        raise _BadField("tool_calls", f"is not an array: {_show(calls)}")
    rows = []
    for seq, call in enumerate(calls):
        function: Any = None
        if call is None:
            n.add(
                "null_tool_call", f"events[{session_seq}].messages[{message_seq}].tool_calls[{seq}]"
            )
        elif type(call) is not dict:
            raise _BadField(f"tool_calls[{seq}]", f"is not an object: {_show(call)}")
        else:
            if not TOOL_CALL_FIELDS.issuperset(call):
                _unknown_fields(call, TOOL_CALL_FIELDS, n, w)
            function = call.get("function")
        name = arguments = None
        if type(function) is dict:
            if not FUNCTION_FIELDS.issuperset(function):
                _unknown_fields(function, FUNCTION_FIELDS, n, f"{w}function.")
            name = _text(function, "name", n, f"{w}function.")
            arguments = _text(function, "arguments", n, f"{w}function.")
        elif function is not None:
            raise _BadField(f"tool_calls[{seq}].function", f"is not an object: {_show(function)}")
        rows.append(ToolCallRow(run_id, session_seq, message_seq, seq, name, arguments))
    return rows


def _session_event_fields(doc: dict[str, Any]) -> dict[str, Any]:
    """The fields of a session event that its run_events row holds (the rest is the call's)."""
    return {"type": doc.get("type"), "timestamp": doc.get("timestamp")}


def _same_run(value: Any, run_id: uuid.UUID, run_text: str) -> bool:
    """Whether value names the run; run_text is the body's own spelling of its id."""
    if value == run_text:
        return True
    if type(value) is not str:
        return False
    try:
        return _parse_uuid(value) == run_id
    except ValueError:
        return False


def _issue(
    doc: dict[str, Any], run_id: uuid.UUID, run_text: str, issue_id: uuid.UUID, n: _Notes
) -> IssueRow:
    w = "issues[]."
    _unknown_fields(doc, ISSUE_FIELDS, n, w)
    claimed_run = doc.get("run_id")
    if claimed_run is None:
        n.add("issue_run_id_missing", f"issue {issue_id}")
    elif not _same_run(claimed_run, run_id, run_text):
        # Stored under the run being ingested: that is the run whose payload lists it.
        n.add("issue_run_id_mismatch", f"issue {issue_id} says run_id={_show(claimed_run)}")
    return IssueRow(
        id=issue_id,
        use_case_id=_uuid(doc, "use_case_id"),
        org_id=_uuid(doc, "org_id"),
        run_id=run_id,
        run_version_id=_uuid(doc, "run_version_id"),
        status=_enum(doc, "status", ISSUE_STATUSES, n, w),
        priority=_enum(doc, "priority", ISSUE_PRIORITIES, n, w),
        created_at=_timestamp(doc, "created_at", n, w),
        type=_enum(doc, "type", ISSUE_TYPES, n, w),
        updated_at=_timestamp(doc, "updated_at", n, w),
        assignee=_uuid(doc, "assignee"),
        created_by=_uuid(doc, "created_by"),
        updated_by=_uuid(doc, "updated_by"),
        message_id=_unique_uuid(doc, "message_id"),
        correction=_text(doc, "correction", n, w),
        correction_reason=_text(doc, "correction_reason", n, w),
        northstar_id=_uuid(doc, "northstar_id"),
    )


def _array(doc: dict[str, Any], key: str) -> list[Any]:
    value = doc.get(key)
    if value is None:
        return []
    if type(value) is not list:
        raise PayloadRejected(f"{key} is not an array: {_show(value)}")
    return value


def _parse(body: bytes) -> dict[str, Any]:
    # Worded by jsontext, as the API client words a body it refuses: one way to say it.
    try:
        return jsontext.loads_object(body)
    except jsontext.JsonError as exc:
        raise PayloadRejected(exc.reason) from None


def _prefixed(prefix: str, bad: _BadField) -> _BadField:
    return _BadField(f"{prefix}{bad.path}", bad.problem)


def normalize(
    body: bytes,
    run_id: uuid.UUID,
    fetched_at: datetime,
    *,
    document: dict[str, Any] | None = None,
) -> RunRows:
    """Rows for every table from one fetched body; raises PayloadRejected if it cannot be stored.

    `fetched_at` must be timezone-aware: it decides which of two payloads is newer.
    `document` is `body` already parsed by orjson (the API client parses it to check it);
    it is consumed: normalize may change it.
    """
    if fetched_at.tzinfo is None:
        raise ValueError("fetched_at must be timezone-aware")
    notes = _Notes()
    doc = document if type(document) is dict else _parse(body)
    # A NUL can only arrive escaped; its absence means no string needs cleaning.
    if b"\\u0000" in body:
        try:
            doc = _strip_nul(doc, "", notes)
        except RecursionError:
            raise PayloadRejected(
                "NUL characters in values nested deeper than they can be removed from"
            ) from None
    try:
        return _rows(doc, body, run_id, fetched_at, notes)
    except _BadField as bad:
        raise PayloadRejected(f"{bad.path} {bad.problem}") from None


def _rows(
    doc: dict[str, Any], body: bytes, run_id: uuid.UUID, fetched_at: datetime, notes: _Notes
) -> RunRows:
    if doc.get("id") is None:
        raise PayloadRejected("body has no id")
    body_id = _uuid(doc, "id")
    if body_id != run_id:
        raise PayloadRejected(f"id mismatch: body id {body_id} is not the requested run {run_id}")
    run_text: str = doc["id"]
    _unknown_fields(doc, RUN_FIELDS, notes, "")
    sha = hashlib.sha256(body).hexdigest()
    run = _run(doc, run_id, fetched_at, sha, notes)

    version = None
    version_doc = doc.get("version")
    if version_doc is not None:
        if type(version_doc) is not dict:
            raise PayloadRejected(f"version is not an object: {_show(version_doc)}")
        try:
            version = _version(version_doc, fetched_at, notes)
        except _BadField as bad:
            raise _prefixed("version.", bad) from None
        if version is not None and run.version_id is not None and version.id != run.version_id:
            notes.add("version_id_mismatch", f"version.id={version.id} version_id={run.version_id}")

    events: list[EventRow] = []
    intermediates: list[IntermediateRow] = []
    sessions: list[SessionRow] = []
    messages: list[MessageRow] = []
    tool_calls: list[ToolCallRow] = []
    for seq, event_doc in enumerate(_array(doc, "events")):
        if event_doc is None:
            # Its position is its identity: keep the slot as an empty event.
            notes.add("null_event", f"events[{seq}]")
            event_doc = {}
        elif type(event_doc) is not dict:
            raise PayloadRejected(f"events[{seq}] is not an object: {_show(event_doc)}")
        try:
            kind = event_doc.get("type")
            if kind == "session":
                # Its run_events row keeps seq the position in `events`; the call is its own.
                events.append(_event(_session_event_fields(event_doc), run_id, seq, notes))
                session, session_messages, session_calls = _session(event_doc, run_id, seq, notes)
                sessions.append(session)
                messages.extend(session_messages)
                tool_calls.extend(session_calls)
                continue
            if kind is not None and kind != "action":
                # A type nobody knows yet: its event row and raw payload, counted as drift.
                notes.add("unknown_event_type", f"events[].type={_show(kind)}")
                event_doc = {k: v for k, v in event_doc.items() if k in EVENT_FIELDS}
            events.append(_event(event_doc, run_id, seq, notes))
            inter_doc = event_doc.get("intermediate")
            if inter_doc is not None:
                if type(inter_doc) is not dict:
                    raise _BadField("intermediate", f"is not an object: {_show(inter_doc)}")
                intermediates.append(_intermediate(inter_doc, run_id, run_text, seq, notes))
        except _BadField as bad:
            raise _prefixed(f"events[{seq}].", bad) from None

    issues: dict[uuid.UUID, IssueRow] = {}
    for index, issue_doc in enumerate(_array(doc, "issues")):
        if type(issue_doc) is not dict:
            if issue_doc is not None:
                raise PayloadRejected(f"issues[{index}] is not an object: {_show(issue_doc)}")
            notes.add("null_issue", f"issues[{index}]")
            continue
        try:
            issue_id = _unique_uuid(issue_doc, "id")
            if issue_id is None:
                notes.add("issue_without_id", f"issues[{index}] is not stored: it has no id")
                continue
            if issue_id in issues:
                notes.add("duplicate_issue_id", f"{issue_id}: the last one is stored")
                del issues[issue_id]  # the stored one takes the position of the last occurrence
            issues[issue_id] = _issue(issue_doc, run_id, run_text, issue_id, notes)
        except _BadField as bad:
            raise _prefixed(f"issues[{index}].", bad) from None

    drift = notes.notes
    drift_json = orjson.dumps([{"kind": note.kind, "detail": note.detail} for note in drift])
    payload = PayloadRow(
        run_id=run_id,
        body=bytes(body),
        sha256=sha,
        fetched_at=fetched_at,
        drift=drift_json.decode(),
    )
    return RunRows(
        run=run,
        version=version,
        events=events,
        intermediates=intermediates,
        sessions=sessions,
        messages=messages,
        tool_calls=tool_calls,
        issues=list(issues.values()),
        payload=payload,
        drift=drift,
    )
