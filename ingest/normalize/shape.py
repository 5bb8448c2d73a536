"""What today's API description says a run body holds: its enumerations, and the fields of
each object. A value outside these is stored and noted as drift, never refused for it."""

from __future__ import annotations

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
LATENCY_KEYS = frozenset(LATENCY_STAGES)
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
