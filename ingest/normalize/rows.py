"""The rows one run body becomes: one dataclass per table, fields named and ordered like the
table's columns (ingest.store writes them by those names)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime

from ingest.normalize.shape import TERMINAL_STATUSES

__all__ = [
    "DriftNote",
    "EventRow",
    "IntermediateRow",
    "IssueRow",
    "MessageRow",
    "PayloadRejected",
    "PayloadRow",
    "RunHead",
    "RunRow",
    "RunRows",
    "SessionRow",
    "ToolCallRow",
    "VersionRow",
]


@dataclass(frozen=True, slots=True)
class DriftNote:
    """Something the payload did that today's API description does not say; stored, counted."""

    kind: str
    detail: str


@dataclass(slots=True)
class RunHead:
    """The `runs` columns that a listing item and a fetched body both carry."""

    id: uuid.UUID
    org_id: uuid.UUID | None
    use_case_id: uuid.UUID | None
    version_id: uuid.UUID | None
    status: str | None
    annotation: str | None
    timestamp: datetime | None
    completed_at: datetime | None  # NULL keeps what is stored (a run does not un-complete)


@dataclass(slots=True)
class RunRow(RunHead):
    """The columns of `runs` a fetch owns; `data` and `listed_at` are discovery's."""

    fetched_at: datetime
    payload_sha256: str
    # Figures of its children, set by ingest.normalize.facts (what bi_runs shows).
    event_count: int = 0
    first_event_at: datetime | None = None
    last_event_at: datetime | None = None
    issue_count: int = 0
    session_count: int = 0
    call_duration: float | None = None
    any_connected: bool | None = None  # None: no session (no call made)


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
    # The run's, and figures of its transcript: set by ingest.normalize.facts (bi_calls).
    use_case_id: uuid.UUID | None = None
    version_id: uuid.UUID | None = None
    messages: int = 0
    assistant_turns: int = 0
    user_turns: int = 0
    tool_turns: int = 0
    event_turns: int = 0
    interruptions: int = 0
    fillers: int = 0
    natural_cuts: int = 0
    tool_calls: int = 0
    first_assistant_at: datetime | None = None
    latency_llm_p50: float | None = None
    latency_llm_p95: float | None = None
    latency_tts_p50: float | None = None
    latency_tts_p95: float | None = None
    latency_turn_p50: float | None = None
    latency_turn_p95: float | None = None
    tools: str = "[]"  # JSON [[name, calls], ...] of its tool calls, by name (null sorts first)


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
    # What dashboards count it under: its own use case and version, else its run's (facts).
    counted_use_case_id: uuid.UUID | None = None
    counted_version_id: uuid.UUID | None = None


@dataclass(slots=True)
class PayloadRow:
    run_id: uuid.UUID
    body: bytes  # ingest.archive.unpack(body, encoding) is the raw body (identity until stored)
    sha256: str  # of the raw body
    fetched_at: datetime
    drift: str  # the run's drift notes as a JSON array of {"kind", "detail"}
    encoding: str


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
