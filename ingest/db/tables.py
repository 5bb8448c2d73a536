"""SQLAlchemy Core tables: the schema's only source. Alembic migrations are checked against it.

Tables carry no schema name: every connection sets `search_path` to INGEST_DB_SCHEMA, so the
same definitions serve any schema a user picks (see `ingest.db.engine`).
Columns keep the API's field names; enumerations are `text` so a new API value is stored.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Column,
    Date,
    DateTime,
    Double,
    ForeignKeyConstraint,
    Identity,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    Numeric,
    SmallInteger,
    Table,
    Text,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB, UUID
from sqlalchemy.types import TypeEngine

from ingest.db import comments

metadata = MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "ck": "ck_%(table_name)s_%(constraint_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)


def _ts(name: str, **kw: object) -> Column[object]:
    return Column(name, DateTime(timezone=True), **kw)  # type: ignore[arg-type]


def _uuid(name: str, **kw: object) -> Column[object]:
    return Column(name, UUID(as_uuid=True), **kw)  # type: ignore[arg-type]


versions = Table(
    "versions",
    metadata,
    _uuid("id", primary_key=True),
    Column("slug", Text),
    _uuid("org_id"),
    _uuid("use_case_id"),
    Column("version_number", Integer),
    Column("name", Text),
    Column("is_published", Boolean),
    Column("is_live", Boolean),
    _uuid("source_version_id"),
    _ts("timestamp"),
    _ts("published_at"),
    Column("is_deleted", Boolean),
    Column("description", Text),
    _uuid("created_by"),
    Column("environment", Text),  # staging | production (text: a new value is stored)
    # When the payload that last wrote this row was fetched: an older fetch never overwrites.
    _ts("fetched_at", nullable=False),
)

runs = Table(
    "runs",
    metadata,
    _uuid("id", primary_key=True),
    _uuid("org_id"),
    _uuid("use_case_id"),
    # No foreign key to versions: discovery lists a run (with its version_id) before the
    # version itself has been fetched.
    _uuid("version_id"),
    Column("status", Text),
    Column("annotation", Text),
    _ts("timestamp"),
    # The fetched run's own completed_at; the listing's (GET /runs) until a fetch has one.
    _ts("completed_at"),
    # Only GET /runs gives `data`; discovery writes it, fetches keep it.
    Column("data", JSONB),
    # When and what was fetched (NULL: listed by discovery, not fetched yet).
    _ts("fetched_at"),
    Column("payload_sha256", Text),
    _ts("listed_at"),
    _ts("updated_at", nullable=False, server_default=text("now()")),
    # Figures of the run's children, computed by normalize and written with them, so that no
    # view scans child tables to describe a run (0 and NULL until the run is fetched).
    Column("event_count", Integer, nullable=False, server_default=text("0")),
    _ts("first_event_at"),
    _ts("last_event_at"),
    Column("issue_count", Integer, nullable=False, server_default=text("0")),
    Column("session_count", Integer, nullable=False, server_default=text("0")),
    Column("call_duration", Double),
    Column("any_connected", Boolean),
)
Index("ix_runs_use_case_id_timestamp", runs.c.use_case_id, runs.c.timestamp)
Index("ix_runs_timestamp", runs.c.timestamp)
Index("ix_runs_status_timestamp", runs.c.status, runs.c.timestamp)
Index("ix_runs_version_id", runs.c.version_id)

run_events = Table(
    "run_events",
    metadata,
    _uuid("run_id", primary_key=True),
    Column("seq", Integer, primary_key=True),
    Column("type", Text),
    _ts("timestamp"),
    Column("integration_name", Text),
    Column("event_name", Text),
    Column("node_id", Text),
    Column("output", JSONB),
    # No foreign key to runs here nor from event_intermediates to run_events, on purpose:
    # these two tables get ~30 rows per run each, and the per-row FK triggers halved the write
    # rate of a batch. Nothing is lost: ingest.store writes a run's events and intermediates
    # only in the transaction that upserts the run itself, and deletes them explicitly (no
    # ON DELETE CASCADE) before writing a run again. Whoever deletes runs by hand deletes
    # their run_events and event_intermediates too (store also clears leftovers on re-ingest).
)

event_intermediates = Table(
    "event_intermediates",
    metadata,
    _uuid("run_id", primary_key=True),
    Column("seq", Integer, primary_key=True),
    _uuid("id"),
    _uuid("node_id"),
    _uuid("event_id"),
    _uuid("session_id"),
    Column("name", Text),
    Column("data", JSONB),
    Column("error", Text),
    _ts("timestamp"),
    # True once the platform's retention deleted the content (`data` is then emptied).
    Column("data_deleted", Boolean),
    # No foreign key to run_events: see run_events.
)

# A `session` event: one phone call or chat. Its run_events row (type 'session') stays too, so
# `seq` is the event's position in `events` in both tables. No foreign keys, as for run_events.
run_sessions = Table(
    "run_sessions",
    metadata,
    _uuid("run_id", primary_key=True),
    Column("seq", Integer, primary_key=True),
    Column("id", Text),  # as sent: the API does not promise a UUID
    _ts("timestamp"),
    Column("duration", Double),  # as sent; the API does not document the unit (seconds seen)
    Column("sip_code", Text),  # NULL when the call connected
    Column("sip_reason", Text),
    Column("actions", JSONB),
    # The run's use case and version (they never change for a run), so that a calls dashboard
    # reads this table alone; then the figures of the session's transcript, computed by
    # normalize (see runs).
    _uuid("use_case_id"),
    _uuid("version_id"),
    *(
        Column(name, Integer, nullable=False, server_default=text("0"))
        for name in (
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
    ),
    _ts("first_assistant_at"),
    *(
        Column(f"latency_{stage}_{p}", Double)
        for stage in ("llm", "tts", "turn")
        for p in ("p50", "p95")
    ),
    # [[tool name, calls], ...]: what daily_tool_counts counts without reading tool calls.
    Column("tools", JSONB, nullable=False, server_default=text("'[]'::jsonb")),
)
# Dashboards ask for "calls in this period" far more often than for one run's calls.
Index("ix_run_sessions_timestamp", run_sessions.c.timestamp)

# One turn of a session's transcript. latency_breakdown is flattened into columns (NULL when
# the turn has none) so that percentiles are plain SQL; units as sent (milliseconds seen).
session_messages = Table(
    "session_messages",
    metadata,
    _uuid("run_id", primary_key=True),
    Column("session_seq", Integer, primary_key=True),
    Column("seq", Integer, primary_key=True),
    _uuid("id"),
    _uuid("session_id"),
    _uuid("chat_session_id"),
    Column("role", Text),
    Column("content", Text),
    Column("name", Text),
    Column("is_filler", Boolean),
    Column("is_interrupted", Boolean),
    Column("is_natural_cut", Boolean),
    _ts("timestamp"),
    Column("data_deleted", Boolean),
    Column("tool_calls", JSONB),  # as sent; message_tool_calls has them as rows
    Column("latency_network", Double),
    Column("latency_initial_wait", Double),
    Column("latency_transcriber", Double),
    Column("latency_eos", Double),
    Column("latency_eos_wait", Double),
    Column("latency_llm", Double),
    Column("latency_tts", Double),
)

# A message's tool_calls[seq].function. arguments is JSON text as the API sends it (OpenAI's
# format), kept as text: it is not always valid JSON.
message_tool_calls = Table(
    "message_tool_calls",
    metadata,
    _uuid("run_id", primary_key=True),
    Column("session_seq", Integer, primary_key=True),
    Column("message_seq", Integer, primary_key=True),
    Column("seq", Integer, primary_key=True),
    Column("name", Text),
    Column("arguments", Text),
)

run_issues = Table(
    "run_issues",
    metadata,
    _uuid("id", primary_key=True),
    _uuid("use_case_id"),
    _uuid("org_id"),
    _uuid("run_id", nullable=False),
    _uuid("run_version_id"),
    Column("status", Text),
    Column("priority", Text),
    _ts("created_at"),
    Column("type", Text),
    _ts("updated_at"),
    _uuid("assignee"),
    _uuid("created_by"),
    _uuid("updated_by"),
    _uuid("message_id"),
    Column("correction", Text),
    Column("correction_reason", Text),
    _uuid("northstar_id"),
    # Facts (normalize): the use case and version dashboards count it under.
    _uuid("counted_use_case_id"),
    _uuid("counted_version_id"),
    ForeignKeyConstraint(["run_id"], ["runs.id"], ondelete="CASCADE"),
)
Index("ix_run_issues_run_id", run_issues.c.run_id)
Index("ix_run_issues_status_priority", run_issues.c.status, run_issues.c.priority)

run_payloads = Table(
    "run_payloads",
    metadata,
    _uuid("run_id", primary_key=True),
    # The body exactly as received (bytes, not jsonb): reprocess must see what the API sent,
    # including what jsonb cannot hold (NUL characters, duplicate keys). zstd-compressed by
    # the worker (ingest.archive), so STORAGE EXTERNAL (set by migration 0001; SQLAlchemy
    # cannot say it): PostgreSQL does not compress it again.
    Column("body", LargeBinary, nullable=False),
    Column("sha256", Text, nullable=False),
    _ts("fetched_at", nullable=False),
    # Drift notes from normalisation: unknown fields, new enumeration values, repairs made.
    Column("drift", JSONB, nullable=False, server_default=text("'[]'::jsonb")),
    # How body is stored: zstd, or identity (as received, written before 0010).
    Column("encoding", Text, nullable=False, server_default=text("'identity'")),
    ForeignKeyConstraint(["run_id"], ["runs.id"], ondelete="CASCADE"),
)

# From GET /use-cases, refreshed by discover/sync. Never `webhooks`: it can carry credentials.
use_cases = Table(
    "use_cases",
    metadata,
    _uuid("id", primary_key=True),
    _uuid("org_id"),
    Column("name", Text),
    Column("slug", Text),
    Column("icon", Text),
    _uuid("source_use_case_version_id"),
    Column("run_columns", JSONB),  # [{group_id, variable_id, name}]: the keys of runs.data
    _ts("timestamp"),
    Column("data_retention_days", Integer),
    Column("sort_order", Integer),  # the API's `order` (a reserved word in SQL)
    _ts("refreshed_at", nullable=False),
)

# From GET /usage: billed calls and minutes per use case and period (start/end renamed:
# END is reserved in SQL).
usage = Table(
    "usage",
    metadata,
    _uuid("org_id", primary_key=True),
    _uuid("use_case_id", primary_key=True),
    _ts("period_start", primary_key=True),
    _ts("period_end", primary_key=True),
    Column("calls", Integer),
    Column("minutes", Double),
    _ts("refreshed_at", nullable=False),
)

QUEUE_STATES = ("pending", "running", "done", "dead")

ingest_queue = Table(
    "ingest_queue",
    metadata,
    _uuid("run_id", primary_key=True),
    Column("state", Text, nullable=False, server_default=text("'pending'")),
    Column("attempts", Integer, nullable=False, server_default=text("0")),
    _ts("available_at", nullable=False, server_default=text("now()")),
    Column("lease_owner", Text),
    _ts("lease_expires_at"),
    Column("last_error", Text),
    Column("priority", SmallInteger, nullable=False, server_default=text("0")),
    Column("source", Text, nullable=False, server_default=text("'manual'")),
    # Set when a run is enqueued again while running: fetch it once more after this attempt.
    Column("refresh_requested", Boolean, nullable=False, server_default=text("false")),
    # Pending only to poll a run that is not terminal yet (scheduled/running upstream):
    # `worker --drain` does not wait for these.
    Column("awaiting_terminal", Boolean, nullable=False, server_default=text("false")),
    _ts("created_at", nullable=False, server_default=text("now()")),
    _ts("updated_at", nullable=False, server_default=text("now()")),
    _ts("finished_at"),
    # Fetches in a row that found the run unfinished upstream: a webhook's run is polled again
    # after 5 s, 10 s, 20 s, ... (ingest.queue.work.complete).
    Column("polls", SmallInteger, nullable=False, server_default=text("0")),
    # When the run was first stored finished upstream, and how long after its completed_at:
    # the freshness `status` and /metrics report (migration 0014).
    _ts("landed_at"),
    Column("freshness_s", Double),
    CheckConstraint("state IN ('pending', 'running', 'done', 'dead')", name="state_known"),
)
Index(
    "ix_ingest_queue_due",
    ingest_queue.c.priority.desc(),
    ingest_queue.c.available_at,
    postgresql_where=text("state = 'pending'"),
)
Index(
    "ix_ingest_queue_lease",
    ingest_queue.c.lease_expires_at,
    postgresql_where=text("state = 'running'"),
)
Index("ix_ingest_queue_finished_at", ingest_queue.c.finished_at)
Index(
    "ix_ingest_queue_landed_at",
    ingest_queue.c.landed_at,
    postgresql_where=text("landed_at IS NOT NULL"),
)

dead_letters = Table(
    "dead_letters",
    metadata,
    _uuid("run_id", primary_key=True),
    # A FailureKind value (ingest.failures): what status and the page group by. No CHECK of
    # the known values, so that a new kind needs no migration.
    Column("kind", Text, nullable=False),
    Column("reason", Text, nullable=False),  # the same failure, worded for a person
    Column("http_status", Integer),
    # The raw body that could not be stored (or the API's error body), exactly as received.
    Column("body", LargeBinary),
    Column("attempts", Integer, nullable=False),
    _ts("created_at", nullable=False, server_default=text("now()")),
)

rate_limits = Table(
    "rate_limits",
    metadata,
    Column("name", Text, primary_key=True),
    # A token bucket shared by every process on this database; workers take tokens in
    # small grants, so the row is touched a few times a second, not once per request.
    Column("tokens", Double, nullable=False),
    Column("rate", Double, nullable=False),
    Column("burst", Double, nullable=False),
    # After a 429 the effective rate drops to rate * factor and climbs back gradually.
    Column("factor", Double, nullable=False, server_default=text("1.0")),
    _ts("paused_until"),
    _ts("refilled_at", nullable=False, server_default=text("now()")),
)

sync_state = Table(
    "sync_state",
    metadata,
    Column("name", Text, primary_key=True),
    _ts("watermark"),
    _ts("updated_at", nullable=False, server_default=text("now()")),
    # Failures since the last success (a watermark moved): what freshness alerts watch.
    Column("failures", Integer, nullable=False, server_default=text("0")),
    _ts("failed_at"),
    Column("last_error", Text),
)

discovery_windows = Table(
    "discovery_windows",
    metadata,
    # One row per finished sub-window of a backfill, so an interrupted backfill resumes.
    Column("scope", Text, primary_key=True),
    _ts("window_start", primary_key=True),
    _ts("window_end", nullable=False),
    Column("runs_found", Integer, nullable=False),
    _ts("finished_at", nullable=False, server_default=text("now()")),
)

# bi_daily_runs, rolled up at write time: triggers on runs (migration 0011) add one row per
# (day, use case, status, annotation) a statement changed, +1 for a run as it is now and -1 as
# it was; ingest.rollup compacts them. Insert-only, so concurrent writers never wait on each
# other; the view sums. The key is a plain id so that the table can be replicated (logical
# replication needs one for the compaction's DELETE).
daily_run_counts = Table(
    "daily_run_counts",
    metadata,
    Column("id", BigInteger, Identity(always=True), primary_key=True),
    Column("day", Date),  # UTC day of the run's timestamp
    _uuid("use_case_id"),
    Column("status", Text),
    Column("annotation", Text),
    Column("runs", BigInteger, nullable=False),
    Column("duration_us", BigInteger, nullable=False),  # exact: no rounding left behind
    Column("durations", BigInteger, nullable=False),
    Column("runs_with_issues", BigInteger, nullable=False),
    Column("issues", BigInteger, nullable=False),
    Column("events", BigInteger, nullable=False),
)
Index("ix_daily_run_counts_day", daily_run_counts.c.day)


def _counts(
    name: str, keys: list[Column[object]], figures: dict[str, type[TypeEngine[Any]]]
) -> Table:
    """A rollup like daily_run_counts, of other rows (migration 0012): sums are numeric where
    the summed values are doubles, so that adding and taking away leaves nothing behind."""
    table = Table(
        name,
        metadata,
        Column("id", BigInteger, Identity(always=True), primary_key=True),
        *keys,
        *(Column(f, t, nullable=False) for f, t in figures.items()),
    )
    Index(f"ix_{name}_day", table.c.day)
    return table


daily_call_counts = _counts(
    "daily_call_counts",
    [Column("day", Date), _uuid("use_case_id"), _uuid("version_id")],
    {
        "calls": BigInteger,
        "connected": BigInteger,
        "duration_s": Numeric,
        "durations": BigInteger,
        "talk_s": Numeric,
        "talks": BigInteger,
        "first_word_s": Numeric,
        "first_words": BigInteger,
        "latency_llm_p95_ms": Numeric,
        "latency_llm_p95s": BigInteger,
        "latency_turn_p95_ms": Numeric,
        "latency_turn_p95s": BigInteger,
        "messages": BigInteger,
        "tool_calls": BigInteger,
        "interruptions": BigInteger,
    },
)
daily_tool_counts = _counts(
    "daily_tool_counts",
    [Column("day", Date), _uuid("use_case_id"), Column("tool_name", Text)],
    {"tool_calls": BigInteger, "calls_using_it": BigInteger},
)
daily_issue_counts = _counts(
    "daily_issue_counts",
    [Column("day", Date), _uuid("use_case_id"), _uuid("version_id"), Column("status", Text)],
    {"issues": BigInteger, "time_to_close_s": Numeric, "time_to_close_n": BigInteger},
)

# Percentiles do not add up, so they are not daily counts: each UTC day's are recomputed from
# run_sessions for the days a write touched (migration 0013). Triggers on run_sessions list
# those days in stale_call_days (insert-only, as the counts); the worker's
# refresh_call_percentiles() takes them off. bi_daily_call_percentiles reads both.
CALL_PERCENTILE_FIGURES = (
    "duration_s",
    "first_word_s",
    "latency_llm_p50",
    "latency_llm_p95",
    "latency_turn_p50",
    "latency_turn_p95",
)
stale_call_days = Table(
    "stale_call_days",
    metadata,
    Column("id", BigInteger, Identity(always=True), primary_key=True),
    Column("day", Date, nullable=False),
)
Index("ix_stale_call_days_day", stale_call_days.c.day)
daily_call_percentiles = Table(
    "daily_call_percentiles",
    metadata,
    Column("id", BigInteger, Identity(always=True), primary_key=True),
    Column("day", Date, nullable=False),
    _uuid("use_case_id"),
    Column("calls", BigInteger, nullable=False),
    *(
        Column(f"{figure}_{stat}", Double)
        for figure in CALL_PERCENTILE_FIGURES
        for stat in ("median", "p95")
    ),
    _ts("refreshed_at", nullable=False),
)
Index("ix_daily_call_percentiles_day", daily_call_percentiles.c.day)

ingest_batches = Table(
    "ingest_batches",
    metadata,
    # One row per completed batch, for `status` throughput and the status page.
    Column("id", Integer, primary_key=True, autoincrement=True),
    _ts("at", nullable=False, server_default=text("now()")),
    Column("worker", Text, nullable=False),
    Column("runs_done", Integer, nullable=False),
    Column("runs_failed", Integer, nullable=False),
    Column("rows_written", Integer, nullable=False),
)
Index("ix_ingest_batches_at", ingest_batches.c.at)

ingest_control = Table(
    "ingest_control",
    metadata,
    # One row: a pause stops every worker's claims (ingest.queue.control).
    Column("id", SmallInteger, primary_key=True, server_default=text("1")),
    _ts("paused_at"),
    Column("paused_by", Text),
    Column("reason", Text),
    _ts("updated_at", nullable=False, server_default=text("now()")),
    CheckConstraint("id = 1", name="one_row"),
)

# What each table and column means (COMMENT ON), kept apart so the shapes above stay readable.
comments.attach(metadata)
