"""Per-run and per-call figures stored at write time; bi_runs and bi_calls read them

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-04

bi_runs counted every run's events, issues and sessions, and bi_calls every call's messages,
on each query: a daily chart over a million runs read some 60 million child rows. Normalize
now computes those figures once per fetch (ingest.normalize.facts) and the store writes them
with the run, in the same transaction. run_sessions also carries its run's use case and
version, so a calls chart reads run_sessions alone.

The upgrade fills the new columns for the runs already stored, set-based, with the expressions
of 0004 (so stored and formerly computed figures agree), then replaces the two views with
CREATE OR REPLACE: same columns, same types, grants kept. It rewrites every row of runs and
run_sessions once: on tens of millions of runs, plan minutes and the disk for one more copy
of those two tables (VACUUM returns it).
"""

from collections.abc import Sequence
from types import ModuleType

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_COUNTS = (
    "messages",
    "assistant_turns",
    "user_turns",
    "tool_turns",
    "event_turns",
    "interruptions",
    "fillers",
    "natural_cuts",
    "tool_calls",
)
_LATENCIES = tuple(f"latency_{s}_{p}" for s in ("llm", "tts", "turn") for p in ("p50", "p95"))

RUN_COLUMNS: list[tuple[str, sa.types.TypeEngine[object], str]] = [
    ("event_count", sa.Integer(), "Elements of the run's events (its run_events rows)."),
    ("first_event_at", sa.DateTime(timezone=True), "Time of its first event (UTC)."),
    ("last_event_at", sa.DateTime(timezone=True), "Time of its last event (UTC)."),
    ("issue_count", sa.Integer(), "Its issues (run_issues rows)."),
    ("session_count", sa.Integer(), "Its calls and chats (run_sessions rows)."),
    (
        "call_duration",
        sa.Double(),
        "Sum of its sessions' durations, as sent (seconds in practice).",
    ),
    ("any_connected", sa.Boolean(), "Whether any of its calls connected; null when it made none."),
]
SESSION_COLUMNS: list[tuple[str, sa.types.TypeEngine[object], str]] = [
    ("use_case_id", sa.UUID(), "The run's use case (runs.use_case_id)."),
    ("version_id", sa.UUID(), "The run's version (runs.version_id)."),
    ("messages", sa.Integer(), "Turns in its transcript (session_messages rows)."),
    ("assistant_turns", sa.Integer(), "Turns with role assistant."),
    ("user_turns", sa.Integer(), "Turns with role user."),
    ("tool_turns", sa.Integer(), "Turns with role tool."),
    ("event_turns", sa.Integer(), "Turns with role event."),
    ("interruptions", sa.Integer(), "Turns the caller interrupted."),
    ("fillers", sa.Integer(), "Filler turns."),
    ("natural_cuts", sa.Integer(), "Turns cut at a natural pause."),
    ("tool_calls", sa.Integer(), "Tools the agent called (message_tool_calls rows)."),
    ("first_assistant_at", sa.DateTime(timezone=True), "Time of the agent's first turn (UTC)."),
    ("latency_llm_p50", sa.Double(), "Median LLM latency of its turns (ms as sent)."),
    ("latency_llm_p95", sa.Double(), "95th percentile LLM latency of its turns (ms as sent)."),
    ("latency_tts_p50", sa.Double(), "Median text-to-speech latency of its turns (ms as sent)."),
    ("latency_tts_p95", sa.Double(), "95th percentile text-to-speech latency (ms as sent)."),
    (
        "latency_turn_p50",
        sa.Double(),
        "Median whole wait of a turn: the sum of its latency stages (ms).",
    ),
    ("latency_turn_p95", sa.Double(), "95th percentile whole wait of a turn (ms)."),
]


def _revision(name: str) -> ModuleType:
    """A revision as alembic loaded it: its frozen SQL is what this one builds on."""
    script = op.get_context().script
    assert script is not None, "alembic runs migrations with their script directory"
    return script.get_revision(name).module


def _add(table: str, columns: list[tuple[str, sa.types.TypeEngine[object], str]]) -> None:
    for name, type_, comment in columns:
        counted = isinstance(type_, sa.Integer)
        op.add_column(
            table,
            sa.Column(
                name,
                type_,
                nullable=not counted,
                server_default=sa.text("0") if counted else None,
                comment=comment,
            ),
        )


def _fill_sessions(v0004: ModuleType) -> str:
    """The figures of every stored session, with 0004's own expressions."""
    p = v0004._percentiles
    return f"""
UPDATE run_sessions AS s SET
    use_case_id = r.use_case_id,
    version_id = r.version_id,
    messages = coalesce(m.messages, 0),
    assistant_turns = coalesce(m.assistant_turns, 0),
    user_turns = coalesce(m.user_turns, 0),
    tool_turns = coalesce(m.tool_turns, 0),
    event_turns = coalesce(m.event_turns, 0),
    interruptions = coalesce(m.interruptions, 0),
    fillers = coalesce(m.fillers, 0),
    natural_cuts = coalesce(m.natural_cuts, 0),
    tool_calls = coalesce(t.tool_calls, 0),
    first_assistant_at = m.first_assistant_at,
    latency_llm_p50 = m.latency_llm[1], latency_llm_p95 = m.latency_llm[2],
    latency_tts_p50 = m.latency_tts[1], latency_tts_p95 = m.latency_tts[2],
    latency_turn_p50 = m.latency_turn[1], latency_turn_p95 = m.latency_turn[2]
FROM run_sessions AS k
LEFT JOIN runs AS r ON r.id = k.run_id
LEFT JOIN (
    SELECT
        sm.run_id,
        sm.session_seq,
        count(*) AS messages,
        count(*) FILTER (WHERE sm.role = 'assistant') AS assistant_turns,
        count(*) FILTER (WHERE sm.role = 'user') AS user_turns,
        count(*) FILTER (WHERE sm.role = 'tool') AS tool_turns,
        count(*) FILTER (WHERE sm.role = 'event') AS event_turns,
        count(*) FILTER (WHERE sm.is_interrupted) AS interruptions,
        count(*) FILTER (WHERE sm.is_filler) AS fillers,
        count(*) FILTER (WHERE sm.is_natural_cut) AS natural_cuts,
        min(sm."timestamp") FILTER (WHERE sm.role = 'assistant') AS first_assistant_at,
        {p("sm.latency_llm", "latency_llm")},
        {p("sm.latency_tts", "latency_tts")},
        {p(v0004._TURN_LATENCY, "latency_turn")}
    FROM session_messages AS sm
    GROUP BY sm.run_id, sm.session_seq
) AS m ON m.run_id = k.run_id AND m.session_seq = k.seq
LEFT JOIN (
    SELECT run_id, session_seq, count(*) AS tool_calls
    FROM message_tool_calls GROUP BY run_id, session_seq
) AS t ON t.run_id = k.run_id AND t.session_seq = k.seq
WHERE s.run_id = k.run_id AND s.seq = k.seq
"""


def _fill_runs(v0004: ModuleType) -> str:
    """The figures of every fetched run (one rewrite of each row), with 0004's expressions."""
    return f"""
UPDATE runs AS r SET
    event_count = coalesce(e.event_count, 0),
    first_event_at = e.first_event_at,
    last_event_at = e.last_event_at,
    issue_count = coalesce(i.issue_count, 0),
    session_count = coalesce(c.session_count, 0),
    call_duration = c.call_duration,
    any_connected = c.any_connected
FROM runs AS k
LEFT JOIN (
    SELECT run_id, count(*) AS event_count, min("timestamp") AS first_event_at,
        max("timestamp") AS last_event_at
    FROM run_events GROUP BY run_id
) AS e ON e.run_id = k.id
LEFT JOIN (
    SELECT run_id, count(*) AS issue_count FROM run_issues GROUP BY run_id
) AS i ON i.run_id = k.id
LEFT JOIN (
    SELECT rs.run_id, count(*) AS session_count, sum(rs.duration) AS call_duration,
        bool_or({v0004._connected("rs")}) AS any_connected
    FROM run_sessions AS rs GROUP BY rs.run_id
) AS c ON c.run_id = k.id
WHERE r.id = k.id AND k.fetched_at IS NOT NULL
"""


# 0008's bi_runs, its columns and their types unchanged, the figures read from the run.
BI_RUNS = """
CREATE OR REPLACE VIEW bi_runs AS
SELECT
    r.id AS run_id,
    r.org_id,
    r.use_case_id,
    r.version_id,
    v.name AS version_name,
    v.version_number,
    r.status,
    r.annotation,
    r."timestamp",
    r.completed_at,
    r.fetched_at,
    r.event_count::bigint AS event_count,
    r.issue_count::bigint AS issue_count,
    r.first_event_at,
    r.last_event_at,
    EXTRACT(EPOCH FROM r.last_event_at - r.first_event_at)::double precision AS duration_s,
    uc.name AS use_case_name,
    r.session_count::bigint AS session_count,
    r.call_duration,
    r.any_connected,
    r.data
FROM runs AS r
LEFT JOIN versions AS v ON v.id = r.version_id
LEFT JOIN use_cases AS uc ON uc.id = r.use_case_id
"""


def _bi_calls(v0004: ModuleType) -> str:
    """0004's bi_calls, its columns and their types unchanged, read from run_sessions; runs
    is joined only for org, status and annotation (a chart not showing them skips the join)."""
    figures = ",\n    ".join(f"s.{name}::bigint AS {name}" for name in _COUNTS[:8])
    latencies = ",\n    ".join(f"s.{name}" for name in _LATENCIES)
    return f"""
CREATE OR REPLACE VIEW bi_calls AS
SELECT
    s.run_id,
    s.seq AS session_seq,
    s.id AS session_id,
    r.org_id,
    s.use_case_id,
    uc.name AS use_case_name,
    s.version_id,
    v.name AS version_name,
    v.version_number,
    v.environment,
    r.status AS run_status,
    r.annotation AS run_annotation,
    s."timestamp",
    s.duration,
    {v0004._connected("s")} AS connected,
    s.sip_code,
    s.sip_reason,
    {figures},
    s.tool_calls::bigint AS tool_calls,
    EXTRACT(EPOCH FROM s.first_assistant_at - s."timestamp")::double precision
        AS time_to_first_word_s,
    {latencies}
FROM run_sessions AS s
LEFT JOIN runs AS r ON r.id = s.run_id
LEFT JOIN use_cases AS uc ON uc.id = s.use_case_id
LEFT JOIN versions AS v ON v.id = s.version_id
"""


def upgrade() -> None:
    v0004 = _revision("0004")
    _add("runs", RUN_COLUMNS)
    _add("run_sessions", SESSION_COLUMNS)
    op.execute(_fill_sessions(v0004))
    op.execute(_fill_runs(v0004))
    op.execute(BI_RUNS)
    op.execute(_bi_calls(v0004))


def downgrade() -> None:
    v0004 = _revision("0004")
    bi_runs = v0004.BI_RUNS
    op.execute(bi_runs.replace("\nFROM runs AS r\n", ",\n    r.data\nFROM runs AS r\n", 1))
    op.execute(v0004.BI_CALLS.replace("CREATE VIEW", "CREATE OR REPLACE VIEW", 1))
    for name, _, _ in reversed(SESSION_COLUMNS):
        op.drop_column("run_sessions", name)
    for name, _, _ in reversed(RUN_COLUMNS):
        op.drop_column("runs", name)
