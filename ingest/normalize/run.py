from __future__ import annotations

import hashlib
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import orjson

from ingest import archive, jsontext
from ingest.normalize import facts
from ingest.normalize.calls import session_event_fields, session_rows
from ingest.normalize.fields import (
    UUID_CACHE,
    BadField,
    Notes,
    json_text,
    note_unknown_fields,
    parse_uuid,
    prefixed,
    read_bool,
    read_enum,
    read_int,
    read_name,
    read_text,
    read_timestamp,
    read_unique_uuid,
    read_uuid,
    show,
    strip_nul,
)
from ingest.normalize.rows import (
    EventRow,
    IntermediateRow,
    IssueRow,
    MessageRow,
    PayloadRejected,
    PayloadRow,
    RunRow,
    RunRows,
    SessionRow,
    ToolCallRow,
    VersionRow,
)
from ingest.normalize.shape import (
    ANNOTATIONS,
    DOCUMENTED_MAX_LENGTH,
    EVENT_FIELDS,
    INTERMEDIATE_FIELDS,
    ISSUE_FIELDS,
    ISSUE_PRIORITIES,
    ISSUE_STATUSES,
    ISSUE_TYPES,
    RUN_FIELDS,
    RUN_STATUSES,
    VERSION_ENVIRONMENTS,
    VERSION_FIELDS,
)


def _run(
    doc: dict[str, Any], run_id: uuid.UUID, fetched_at: datetime, sha: str, n: Notes
) -> RunRow:
    return RunRow(
        id=run_id,
        org_id=read_uuid(doc, "org_id"),
        use_case_id=read_uuid(doc, "use_case_id"),
        version_id=read_uuid(doc, "version_id"),
        status=read_enum(doc, "status", RUN_STATUSES, n, ""),
        annotation=read_enum(doc, "annotation", ANNOTATIONS, n, ""),
        timestamp=read_timestamp(doc, "timestamp", n, ""),
        completed_at=read_timestamp(doc, "completed_at", n, ""),
        fetched_at=fetched_at,
        payload_sha256=sha,
    )


def version_row(doc: dict[str, Any], fetched_at: datetime, n: Notes) -> VersionRow | None:
    w = "version."
    note_unknown_fields(doc, VERSION_FIELDS, n, w)
    version_id = read_uuid(doc, "id")
    if version_id is None:
        n.add("version_without_id", "version is not stored: it has no id")
        return None
    return VersionRow(
        id=version_id,
        slug=read_name(doc, "slug", n, w),
        org_id=read_uuid(doc, "org_id"),
        use_case_id=read_uuid(doc, "use_case_id"),
        version_number=read_int(doc, "version_number", n, w),
        name=read_name(doc, "name", n, w),
        is_published=read_bool(doc, "is_published", n, w),
        is_live=read_bool(doc, "is_live", n, w),
        source_version_id=read_uuid(doc, "source_version_id"),
        timestamp=read_timestamp(doc, "timestamp", n, w),
        published_at=read_timestamp(doc, "published_at", n, w),
        is_deleted=read_bool(doc, "is_deleted", n, w),
        description=read_text(doc, "description", n, w),
        created_by=read_uuid(doc, "created_by"),
        environment=read_enum(doc, "environment", VERSION_ENVIRONMENTS, n, w),
        fetched_at=fetched_at,
    )


def _plain(value: Any) -> bool:
    """A text value needing no conversion and no note: None, or a string within 256."""
    return value is None or (type(value) is str and len(value) <= DOCUMENTED_MAX_LENGTH)


def _event(doc: dict[str, Any], run_id: uuid.UUID, seq: int, n: Notes) -> EventRow:
    w = "events[]."
    if not EVENT_FIELDS.issuperset(doc):
        note_unknown_fields(doc, EVENT_FIELDS, n, w)
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
        timestamp = read_timestamp(doc, "timestamp", n, w)
        return EventRow(
            run_id, seq, kind, timestamp, integration, name, node, json_text(get("output"))
        )
    return EventRow(
        run_id=run_id,
        seq=seq,
        type=read_text(doc, "type", n, w),
        timestamp=read_timestamp(doc, "timestamp", n, w),
        integration_name=read_name(doc, "integration_name", n, w),
        event_name=read_name(doc, "event_name", n, w),
        node_id=read_text(doc, "node_id", n, w),
        output=json_text(get("output")),
    )


def _intermediate(
    doc: dict[str, Any], run_id: uuid.UUID, run_text: str, seq: int, n: Notes
) -> IntermediateRow:
    w = "events[].intermediate."
    if not INTERMEDIATE_FIELDS.issuperset(doc):
        note_unknown_fields(doc, INTERMEDIATE_FIELDS, n, w)
    get = doc.get
    own_run = get("run_id")
    if own_run is not None and own_run != run_text and not _same_run(own_run, run_id, run_text):
        n.add("intermediate_run_id_mismatch", f"events[{seq}].intermediate.run_id={show(own_run)}")
    try:
        own_id = read_unique_uuid(doc, "id")
        # node and session ids repeat within a run: a cache hit costs no call.
        node = get("node_id")
        node_id = UUID_CACHE.get(node) if type(node) is str else None
        if node_id is None:
            node_id = read_uuid(doc, "node_id")
        event_id = read_unique_uuid(doc, "event_id")
        session = get("session_id")
        session_id = UUID_CACHE.get(session) if type(session) is str else None
        if session_id is None:
            session_id = read_uuid(doc, "session_id")
        name, error = get("name"), get("error")
        if name is not None and type(name) is not str:
            name = read_text(doc, "name", n, w)
        if error is not None and type(error) is not str:
            error = read_text(doc, "error", n, w)
        timestamp = read_timestamp(doc, "timestamp", n, w)
        deleted = get("data_deleted")
        if deleted is not None and type(deleted) is not bool:
            deleted = read_bool(doc, "data_deleted", n, w)
    except BadField as bad:
        raise BadField(f"intermediate.{bad.path}", bad.problem) from None
    return IntermediateRow(
        run_id,
        seq,
        own_id,
        node_id,
        event_id,
        session_id,
        name,
        json_text(get("data")),
        error,
        timestamp,
        deleted,
    )


def _same_run(value: Any, run_id: uuid.UUID, run_text: str) -> bool:
    """Whether value names the run; run_text is the body's own spelling of its id."""
    if value == run_text:
        return True
    if type(value) is not str:
        return False
    try:
        return parse_uuid(value) == run_id
    except ValueError:
        return False


def _issue(
    doc: dict[str, Any], run_id: uuid.UUID, run_text: str, issue_id: uuid.UUID, n: Notes
) -> IssueRow:
    w = "issues[]."
    note_unknown_fields(doc, ISSUE_FIELDS, n, w)
    claimed_run = doc.get("run_id")
    if claimed_run is None:
        n.add("issue_run_id_missing", f"issue {issue_id}")
    elif not _same_run(claimed_run, run_id, run_text):
        # Stored under the run being ingested: that is the run whose payload lists it.
        n.add("issue_run_id_mismatch", f"issue {issue_id} says run_id={show(claimed_run)}")
    return IssueRow(
        id=issue_id,
        use_case_id=read_uuid(doc, "use_case_id"),
        org_id=read_uuid(doc, "org_id"),
        run_id=run_id,
        run_version_id=read_uuid(doc, "run_version_id"),
        status=read_enum(doc, "status", ISSUE_STATUSES, n, w),
        priority=read_enum(doc, "priority", ISSUE_PRIORITIES, n, w),
        created_at=read_timestamp(doc, "created_at", n, w),
        type=read_enum(doc, "type", ISSUE_TYPES, n, w),
        updated_at=read_timestamp(doc, "updated_at", n, w),
        assignee=read_uuid(doc, "assignee"),
        created_by=read_uuid(doc, "created_by"),
        updated_by=read_uuid(doc, "updated_by"),
        message_id=read_unique_uuid(doc, "message_id"),
        correction=read_text(doc, "correction", n, w),
        correction_reason=read_text(doc, "correction_reason", n, w),
        northstar_id=read_uuid(doc, "northstar_id"),
    )


def _array(doc: dict[str, Any], key: str) -> list[Any]:
    value = doc.get(key)
    if value is None:
        return []
    if type(value) is not list:
        raise PayloadRejected(f"{key} is not an array: {show(value)}")
    return value


def _parse(body: bytes) -> dict[str, Any]:
    # Worded by jsontext, as the API client words a body it refuses: one way to say it.
    try:
        return jsontext.loads_object(body)
    except jsontext.JsonError as exc:
        raise PayloadRejected(exc.reason) from None


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
    notes = Notes()
    doc = document if type(document) is dict else _parse(body)
    # A NUL can only arrive escaped; its absence means no string needs cleaning.
    if b"\\u0000" in body:
        try:
            doc = strip_nul(doc, "", notes)
        except RecursionError:
            raise PayloadRejected(
                "NUL characters in values nested deeper than they can be removed from"
            ) from None
    try:
        return _rows(doc, body, run_id, fetched_at, notes)
    except BadField as bad:
        raise PayloadRejected(f"{bad.path} {bad.problem}") from None


def _rows(
    doc: dict[str, Any], body: bytes, run_id: uuid.UUID, fetched_at: datetime, notes: Notes
) -> RunRows:
    if doc.get("id") is None:
        raise PayloadRejected("body has no id")
    body_id = read_uuid(doc, "id")
    if body_id != run_id:
        raise PayloadRejected(f"id mismatch: body id {body_id} is not the requested run {run_id}")
    run_text: str = doc["id"]
    note_unknown_fields(doc, RUN_FIELDS, notes, "")
    sha = hashlib.sha256(body).hexdigest()
    run = _run(doc, run_id, fetched_at, sha, notes)
    version = _run_version(doc, run, fetched_at, notes)
    children = _Children()
    for seq, event_doc in enumerate(_array(doc, "events")):
        children.add_event(event_doc, run_id, run_text, seq, notes)
    issues = _issues(doc, run_id, run_text, notes)
    facts.fill_run(run, children.events, children.sessions, issues)
    drift = notes.notes
    drift_json = orjson.dumps([{"kind": note.kind, "detail": note.detail} for note in drift])
    payload = PayloadRow(
        run_id=run_id,
        body=body,  # compressed by the store, off the event loop (ingest.archive)
        sha256=sha,
        fetched_at=fetched_at,
        drift=drift_json.decode(),
        encoding=archive.IDENTITY,
    )
    return RunRows(
        run=run,
        version=version,
        events=children.events,
        intermediates=children.intermediates,
        sessions=children.sessions,
        messages=children.messages,
        tool_calls=children.tool_calls,
        issues=issues,
        payload=payload,
        drift=drift,
    )


def _run_version(
    doc: dict[str, Any], run: RunRow, fetched_at: datetime, notes: Notes
) -> VersionRow | None:
    version_doc = doc.get("version")
    if version_doc is None:
        return None
    if type(version_doc) is not dict:
        raise PayloadRejected(f"version is not an object: {show(version_doc)}")
    try:
        version = version_row(version_doc, fetched_at, notes)
    except BadField as bad:
        raise prefixed("version.", bad) from None
    if version is not None and run.version_id is not None and version.id != run.version_id:
        notes.add("version_id_mismatch", f"version.id={version.id} version_id={run.version_id}")
    return version


@dataclass(slots=True)
class _Children:
    """The rows of a run's `events`, in their order: events (every one), the action events'
    intermediates, and the session events' calls, transcripts and tool calls."""

    events: list[EventRow] = field(default_factory=list)
    intermediates: list[IntermediateRow] = field(default_factory=list)
    sessions: list[SessionRow] = field(default_factory=list)
    messages: list[MessageRow] = field(default_factory=list)
    tool_calls: list[ToolCallRow] = field(default_factory=list)

    def add_event(
        self, event_doc: Any, run_id: uuid.UUID, run_text: str, seq: int, notes: Notes
    ) -> None:
        if event_doc is None:
            # Its position is its identity: keep the slot as an empty event.
            notes.add("null_event", f"events[{seq}]")
            event_doc = {}
        elif type(event_doc) is not dict:
            raise PayloadRejected(f"events[{seq}] is not an object: {show(event_doc)}")
        try:
            kind = event_doc.get("type")
            if kind == "session":
                self._add_session(event_doc, run_id, seq, notes)
                return
            if kind is not None and kind != "action":
                # A type nobody knows yet: its event row and raw payload, counted as drift.
                notes.add("unknown_event_type", f"events[].type={show(kind)}")
                event_doc = {k: v for k, v in event_doc.items() if k in EVENT_FIELDS}
            self.events.append(_event(event_doc, run_id, seq, notes))
            inter_doc = event_doc.get("intermediate")
            if inter_doc is not None:
                if type(inter_doc) is not dict:
                    raise BadField("intermediate", f"is not an object: {show(inter_doc)}")
                self.intermediates.append(_intermediate(inter_doc, run_id, run_text, seq, notes))
        except BadField as bad:
            raise prefixed(f"events[{seq}].", bad) from None

    def _add_session(
        self, event_doc: dict[str, Any], run_id: uuid.UUID, seq: int, notes: Notes
    ) -> None:
        # Its run_events row keeps seq the position in `events`; the call is its own.
        self.events.append(_event(session_event_fields(event_doc), run_id, seq, notes))
        session, messages, tool_calls = session_rows(event_doc, run_id, seq, notes)
        self.sessions.append(session)
        self.messages.extend(messages)
        self.tool_calls.extend(tool_calls)


def _issues(doc: dict[str, Any], run_id: uuid.UUID, run_text: str, notes: Notes) -> list[IssueRow]:
    issues: dict[uuid.UUID, IssueRow] = {}
    for index, issue_doc in enumerate(_array(doc, "issues")):
        if type(issue_doc) is not dict:
            if issue_doc is not None:
                raise PayloadRejected(f"issues[{index}] is not an object: {show(issue_doc)}")
            notes.add("null_issue", f"issues[{index}]")
            continue
        try:
            issue_id = read_unique_uuid(issue_doc, "id")
            if issue_id is None:
                notes.add("issue_without_id", f"issues[{index}] is not stored: it has no id")
                continue
            if issue_id in issues:
                notes.add("duplicate_issue_id", f"{issue_id}: the last one is stored")
                del issues[issue_id]  # the stored one takes the position of the last occurrence
            issues[issue_id] = _issue(issue_doc, run_id, run_text, issue_id, notes)
        except BadField as bad:
            raise prefixed(f"issues[{index}].", bad) from None
    return list(issues.values())
