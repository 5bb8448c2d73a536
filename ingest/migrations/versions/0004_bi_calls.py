"""BI views over sessions: bi_calls, bi_tool_calls; use case names and call figures in bi_runs

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-03

bi_calls has one row per session (a call or a chat) with its run's use case name, version and
environment, its SIP outcome, its turns and its latencies; bi_tool_calls one row per tool the
agent called. bi_runs, bi_daily_runs and bi_issues gain `use_case_name` (and bi_runs its
sessions' figures).

The three 0002 views are changed with CREATE OR REPLACE, so their new columns come last: a
replaced view keeps the grants a BI role was given on it and the user views built on it, which
DROP would lose (or refuse, for the latter). A downgrade cannot take columns away that way, so
it drops them and runs 0002's own SQL again, which loses those grants.

As in 0002, the SQL is frozen here and names are unqualified (they land in the configured
schema). Joins to a parent row and per-session aggregates are LEFT JOINs (ON true for the
LATERAL ones) although every row has its parent: PostgreSQL then skips a join whose columns a
query does not read, so a connect-rate chart never reads a transcript.
"""

from collections.abc import Sequence
from types import ModuleType

from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _connected(session: str) -> str:
    """Whether a session connected: the API leaves sip_code null when a call connected.

    A 2xx code is SIP's own "answered" (200 OK to the INVITE), so it counts as connected too:
    reading it as a failure would understate the connect rate whenever a carrier reports it.
    An empty code is no code. A chat has no SIP at all: it connected.
    """
    return f"({session}.sip_code IS NULL OR btrim({session}.sip_code) ~ '^(2[0-9][0-9])?$')"


# The latency_breakdown stages, in milliseconds as sent (the unit is not documented).
_STAGES = [
    f"sm.latency_{s}"
    for s in ("network", "initial_wait", "transcriber", "eos", "eos_wait", "llm", "tts")
]
# A turn's whole latency is the sum of its stages. A turn without a breakdown (every stage
# null: user, tool and event turns, some assistant turns) has none, rather than 0 which would
# pull the percentiles down. A breakdown with some stages null (a greeting has no user speech
# to transcribe) counts those as 0: the stage did not happen, the rest is still the turn's wait.
_TURN_LATENCY = (
    f"CASE WHEN num_nonnulls({', '.join(_STAGES)}) > 0"
    f" THEN {' + '.join(f'coalesce({s}, 0)' for s in _STAGES)} END"
)


def _percentiles(column: str, name: str) -> str:
    """p50 and p95 of a column over a session's messages (nulls are left out)."""
    return f"percentile_cont(ARRAY[0.5, 0.95]) WITHIN GROUP (ORDER BY {column}) AS {name}"


def _p50_p95(name: str) -> str:
    return f"m.{name}[1] AS {name}_p50,\n    m.{name}[2] AS {name}_p95"


# Per-session aggregates keyed by (run_id, session_seq): a dashboard filtering calls by time or
# use case reads only those sessions' messages, through the primary keys of session_messages
# and message_tool_calls. Time to first word runs from the session's timestamp (for an outbound
# call that may include the ringing) to the agent's first message, filler or not: the caller
# hears either.
BI_CALLS = f"""
CREATE VIEW bi_calls AS
SELECT
    s.run_id,
    s.seq AS session_seq,
    s.id AS session_id,
    r.org_id,
    r.use_case_id,
    uc.name AS use_case_name,
    r.version_id,
    v.name AS version_name,
    v.version_number,
    v.environment,
    r.status AS run_status,
    r.annotation AS run_annotation,
    s."timestamp",
    s.duration,
    {_connected("s")} AS connected,
    s.sip_code,
    s.sip_reason,
    m.messages,
    m.assistant_turns,
    m.user_turns,
    m.tool_turns,
    m.event_turns,
    m.interruptions,
    m.fillers,
    m.natural_cuts,
    t.tool_calls,
    EXTRACT(EPOCH FROM m.first_assistant_at - s."timestamp")::double precision
        AS time_to_first_word_s,
    {_p50_p95("latency_llm")},
    {_p50_p95("latency_tts")},
    {_p50_p95("latency_turn")}
FROM run_sessions AS s
LEFT JOIN runs AS r ON r.id = s.run_id
LEFT JOIN use_cases AS uc ON uc.id = r.use_case_id
LEFT JOIN versions AS v ON v.id = r.version_id
LEFT JOIN LATERAL (
    SELECT
        count(*) AS messages,
        count(*) FILTER (WHERE sm.role = 'assistant') AS assistant_turns,
        count(*) FILTER (WHERE sm.role = 'user') AS user_turns,
        count(*) FILTER (WHERE sm.role = 'tool') AS tool_turns,
        count(*) FILTER (WHERE sm.role = 'event') AS event_turns,
        count(*) FILTER (WHERE sm.is_interrupted) AS interruptions,
        count(*) FILTER (WHERE sm.is_filler) AS fillers,
        count(*) FILTER (WHERE sm.is_natural_cut) AS natural_cuts,
        min(sm."timestamp") FILTER (WHERE sm.role = 'assistant') AS first_assistant_at,
        {_percentiles("sm.latency_llm", "latency_llm")},
        {_percentiles("sm.latency_tts", "latency_tts")},
        {_percentiles(_TURN_LATENCY, "latency_turn")}
    FROM session_messages AS sm
    WHERE sm.run_id = s.run_id AND sm.session_seq = s.seq
) AS m ON true
LEFT JOIN LATERAL (
    SELECT count(*) AS tool_calls
    FROM message_tool_calls AS tc
    WHERE tc.run_id = s.run_id AND tc.session_seq = s.seq
) AS t ON true
"""

# session_timestamp is there to filter on: it is indexed, the message's timestamp is not.
BI_TOOL_CALLS = """
CREATE VIEW bi_tool_calls AS
SELECT
    tc.run_id,
    tc.session_seq,
    tc.message_seq,
    tc.seq AS tool_call_seq,
    r.use_case_id,
    uc.name AS use_case_name,
    tc.name AS tool_name,
    tc.arguments,
    sm."timestamp",
    s."timestamp" AS session_timestamp
FROM message_tool_calls AS tc
LEFT JOIN session_messages AS sm
    ON sm.run_id = tc.run_id AND sm.session_seq = tc.session_seq AND sm.seq = tc.message_seq
LEFT JOIN run_sessions AS s ON s.run_id = tc.run_id AND s.seq = tc.session_seq
LEFT JOIN runs AS r ON r.id = tc.run_id
LEFT JOIN use_cases AS uc ON uc.id = r.use_case_id
"""

# 0002's bi_runs, its columns first and unchanged, then the use case name and the run's calls:
# how many, their total duration (as sent: seconds seen) and whether any connected (null for a
# run without a session: no call was made, which is not a failed call).
BI_RUNS = f"""
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
    e.event_count,
    i.issue_count,
    e.first_event_at,
    e.last_event_at,
    EXTRACT(EPOCH FROM e.last_event_at - e.first_event_at)::double precision AS duration_s,
    uc.name AS use_case_name,
    c.session_count,
    c.call_duration,
    c.any_connected
FROM runs AS r
LEFT JOIN versions AS v ON v.id = r.version_id
LEFT JOIN use_cases AS uc ON uc.id = r.use_case_id
LEFT JOIN LATERAL (
    SELECT
        count(*) AS event_count,
        min(ev."timestamp") AS first_event_at,
        max(ev."timestamp") AS last_event_at
    FROM run_events AS ev
    WHERE ev.run_id = r.id
) AS e ON true
LEFT JOIN LATERAL (
    SELECT count(*) AS issue_count FROM run_issues AS ri WHERE ri.run_id = r.id
) AS i ON true
LEFT JOIN LATERAL (
    SELECT
        count(*) AS session_count,
        sum(rs.duration) AS call_duration,
        bool_or({_connected("rs")}) AS any_connected
    FROM run_sessions AS rs
    WHERE rs.run_id = r.id
) AS c ON true
"""

# The name follows use_case_id, on which the groups already are: it splits no group.
BI_DAILY_RUNS = """
CREATE OR REPLACE VIEW bi_daily_runs AS
SELECT
    (b."timestamp" AT TIME ZONE 'UTC')::date AS day,
    b.use_case_id,
    b.status,
    b.annotation,
    count(*) AS runs,
    avg(b.duration_s) AS avg_duration_s,
    count(*) FILTER (WHERE b.issue_count > 0) AS runs_with_issues,
    sum(b.issue_count)::bigint AS issues,
    sum(b.event_count)::bigint AS events,
    b.use_case_name
FROM bi_runs AS b
GROUP BY 1, 2, 3, 4, b.use_case_name
"""

# Statuses after which an issue is settled, as in 0002.
_CLOSED = "('approved', 'rejected', 'closed')"

# The use case named is the one bi_issues already reports: the issue's own, else the run's.
BI_ISSUES = f"""
CREATE OR REPLACE VIEW bi_issues AS
SELECT
    ri.id AS issue_id,
    ri.run_id,
    ri.org_id,
    coalesce(ri.use_case_id, r.use_case_id) AS use_case_id,
    ri.status,
    ri.priority,
    ri.type,
    ri.created_at,
    ri.updated_at,
    ri.assignee,
    ri.created_by,
    ri.updated_by,
    ri.message_id,
    ri.correction,
    ri.correction_reason,
    ri.northstar_id,
    r.status AS run_status,
    r.annotation AS run_annotation,
    r."timestamp" AS run_timestamp,
    coalesce(ri.run_version_id, r.version_id) AS version_id,
    v.name AS version_name,
    v.version_number,
    CASE WHEN ri.status IN {_CLOSED} THEN ri.updated_at END AS closed_at,
    CASE
        WHEN ri.status IN {_CLOSED}
        THEN EXTRACT(EPOCH FROM ri.updated_at - ri.created_at)::double precision
    END AS time_to_close_s,
    uc.name AS use_case_name
FROM run_issues AS ri
JOIN runs AS r ON r.id = ri.run_id
LEFT JOIN versions AS v ON v.id = coalesce(ri.run_version_id, r.version_id)
LEFT JOIN use_cases AS uc ON uc.id = coalesce(ri.use_case_id, r.use_case_id)
"""

# In the order they are created: bi_daily_runs reads bi_runs.
NEW_VIEWS = (("bi_calls", BI_CALLS), ("bi_tool_calls", BI_TOOL_CALLS))
REPLACED = (BI_RUNS, BI_DAILY_RUNS, BI_ISSUES)


def _revision_0002() -> ModuleType:
    """0002 as alembic loaded it: its frozen SQL is what a downgrade must bring back."""
    script = op.get_context().script
    assert script is not None, "alembic runs migrations with their script directory"
    return script.get_revision("0002").module


def upgrade() -> None:
    for sql in REPLACED:
        op.execute(sql)
    for _, sql in NEW_VIEWS:
        op.execute(sql)


def downgrade() -> None:
    for name, _ in reversed(NEW_VIEWS):
        op.execute(f"DROP VIEW {name}")
    views = _revision_0002().VIEWS
    for name, _ in reversed(views):
        op.execute(f"DROP VIEW {name}")
    for _, sql in views:
        op.execute(sql)
