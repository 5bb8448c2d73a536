"""COMMENT ON every table, view and column: what it means, its unit

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-04

For BI tools that import comments (Metabase, Superset, DataGrip, dbt docs). The tables'
comments are also on the Core tables (ingest.db.comments), which Alembic compares; the views'
live here, with the views. Frozen like every migration: a later change of wording is a later
migration.
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

COMMENTS: list[tuple[str, str]] = [
    ("TABLE alembic_version", "The schema's migration revision (Alembic's; hr-ingest db upgrade)."),
    ("COLUMN alembic_version.version_num", "The revision applied last (e.g. 0007)."),
    ("TABLE dead_letters", "Runs given up on, with why and the raw body that could not be stored."),
    ("COLUMN dead_letters.run_id", "The run (runs.id)."),
    (
        "COLUMN dead_letters.kind",
        (
            "Failure kind (stable, for grouping): not_found, http_5xx, invalid_body, "
            "payload_rejected, store_error, ..."
        ),
    ),
    ("COLUMN dead_letters.reason", "The failure in words."),
    ("COLUMN dead_letters.http_status", "HTTP status of the API's answer, if there was one."),
    ("COLUMN dead_letters.body", "The API's answer as received (bytes)."),
    ("COLUMN dead_letters.attempts", "Attempts made."),
    ("COLUMN dead_letters.created_at", "When it was dead-lettered (UTC)."),
    (
        "TABLE discovery_windows",
        ("Time windows discover has listed completely, so a rerun skips them."),
    ),
    ("COLUMN discovery_windows.scope", "The filters the window was listed under."),
    ("COLUMN discovery_windows.window_start", "Start of the window, inclusive (UTC)."),
    ("COLUMN discovery_windows.window_end", "End of the window, exclusive (UTC)."),
    ("COLUMN discovery_windows.runs_found", "Runs listed in it."),
    ("COLUMN discovery_windows.finished_at", "When it was finished (UTC)."),
    (
        "TABLE event_intermediates",
        ("The intermediate of an action event (one per event that has one)."),
    ),
    ("COLUMN event_intermediates.run_id", "The run (runs.id)."),
    (
        "COLUMN event_intermediates.seq",
        ("The event's position in the run's events (run_events.seq)."),
    ),
    ("COLUMN event_intermediates.id", "Intermediate id."),
    ("COLUMN event_intermediates.node_id", "Workflow node."),
    (
        "COLUMN event_intermediates.event_id",
        ("Event id the intermediate belongs to, where the API links it."),
    ),
    ("COLUMN event_intermediates.session_id", "Session (call or chat) it happened in."),
    ("COLUMN event_intermediates.name", "Name of the step."),
    (
        "COLUMN event_intermediates.data",
        ("The step's data, any JSON value (emptied when retention deleted it)."),
    ),
    ("COLUMN event_intermediates.error", "Error message of the step, if it failed."),
    ('COLUMN event_intermediates."timestamp"', "When it happened (UTC)."),
    (
        "COLUMN event_intermediates.data_deleted",
        ("True when the platform deleted its content (retention)."),
    ),
    ("TABLE ingest_batches", "Throughput history: one row per transaction that finished runs."),
    ("COLUMN ingest_batches.id", "Row id."),
    ("COLUMN ingest_batches.at", "When the transaction committed (UTC)."),
    ("COLUMN ingest_batches.worker", "Worker id (host:pid:random)."),
    ("COLUMN ingest_batches.runs_done", "Runs stored in it."),
    ("COLUMN ingest_batches.runs_failed", "Failed attempts recorded in it."),
    ("COLUMN ingest_batches.rows_written", "Rows written to the run tables in it."),
    (
        "TABLE ingest_queue",
        ("hr-ingest's work queue: one row per run to fetch, its state and lease."),
    ),
    ("COLUMN ingest_queue.run_id", "The run (runs.id)."),
    ("COLUMN ingest_queue.state", "pending, running, done or dead."),
    ("COLUMN ingest_queue.attempts", "Fetch attempts of the current round."),
    (
        "COLUMN ingest_queue.available_at",
        ("When the run may be claimed (UTC); later after a failure (backoff) or for a poll."),
    ),
    ("COLUMN ingest_queue.lease_owner", "Worker holding the run, while running."),
    ("COLUMN ingest_queue.lease_expires_at", "When the lease runs out (UTC), unless renewed."),
    ("COLUMN ingest_queue.last_error", "Reason of the last failed attempt."),
    ("COLUMN ingest_queue.priority", "Higher is claimed first."),
    ("COLUMN ingest_queue.source", "What enqueued it: manual, backfill, sync."),
    ("COLUMN ingest_queue.refresh_requested", "Enqueued again while running: fetch once more."),
    (
        "COLUMN ingest_queue.awaiting_terminal",
        ("Pending only to poll a run still scheduled/running upstream."),
    ),
    ("COLUMN ingest_queue.created_at", "When it was first enqueued (UTC)."),
    ("COLUMN ingest_queue.updated_at", "When this row last changed (UTC)."),
    ("COLUMN ingest_queue.finished_at", "When it last became done or dead (UTC)."),
    ("TABLE message_tool_calls", "One row per tool the agent called in a turn."),
    ("COLUMN message_tool_calls.run_id", "The run (runs.id)."),
    (
        "COLUMN message_tool_calls.session_seq",
        ("Position of the session event in the run's events (run_events.seq)."),
    ),
    (
        "COLUMN message_tool_calls.message_seq",
        ("The message's position in the session (session_messages.seq)."),
    ),
    ("COLUMN message_tool_calls.seq", "Position of the call in the turn's tool_calls, from 0."),
    ("COLUMN message_tool_calls.name", "Tool name."),
    ("COLUMN message_tool_calls.arguments", "Arguments, JSON text as sent (OpenAI's format)."),
    (
        "TABLE rate_limits",
        ("The token bucket every worker on this database shares (one row per limiter name)."),
    ),
    ("COLUMN rate_limits.name", "Limiter name."),
    (
        "COLUMN rate_limits.tokens",
        ("Tokens in the bucket as of refilled_at (negative: reserved ahead)."),
    ),
    ("COLUMN rate_limits.rate", "Configured requests per second."),
    ("COLUMN rate_limits.burst", "Largest number of tokens the bucket holds."),
    ("COLUMN rate_limits.factor", "Share of the rate in use, halved by a 429 and recovering to 1."),
    ("COLUMN rate_limits.paused_until", "No tokens before this time after a 429 (UTC)."),
    ("COLUMN rate_limits.refilled_at", "When tokens was last brought up to date (UTC)."),
    (
        "TABLE run_events",
        ("One row per element of a run's events array, whatever its type (action or session)."),
    ),
    ("COLUMN run_events.run_id", "The run (runs.id)."),
    ("COLUMN run_events.seq", "Position in the run's events array, from 0: the event's identity."),
    ("COLUMN run_events.type", "action or session (a new value is kept as sent)."),
    ('COLUMN run_events."timestamp"', "When the event happened (UTC)."),
    ("COLUMN run_events.integration_name", "Integration that produced it (twilio, openai, ...)."),
    ("COLUMN run_events.event_name", "Name of the event within the integration."),
    ("COLUMN run_events.node_id", "Workflow node that produced it."),
    ("COLUMN run_events.output", "The node's output, any JSON value."),
    ("TABLE run_sessions", "One row per session event: one phone call or chat of a run."),
    ("COLUMN run_sessions.run_id", "The run (runs.id)."),
    (
        "COLUMN run_sessions.seq",
        ("The session event's position in the run's events (run_events.seq)."),
    ),
    ("COLUMN run_sessions.id", "Session id, as sent (text)."),
    ('COLUMN run_sessions."timestamp"', "When the session started (UTC)."),
    (
        "COLUMN run_sessions.duration",
        ("Length of the session, as sent (seconds in practice; unit not documented)."),
    ),
    (
        "COLUMN run_sessions.sip_code",
        (
            "SIP result code of a phone call that did not connect; null when it connected"
            " or for a chat."
        ),
    ),
    ("COLUMN run_sessions.sip_reason", "SIP reason phrase for sip_code."),
    ("COLUMN run_sessions.actions", "The session's actions, any JSON value."),
    (
        "TABLE runs",
        (
            "One row per HappyRobot run (a workflow execution): what the last fetch of "
            "GET /runs/{id} said, plus data from the GET /runs listing."
        ),
    ),
    ("COLUMN runs.id", "Run id (UUID), as the API gives it."),
    ("COLUMN runs.org_id", "Organization that owns the run."),
    ("COLUMN runs.use_case_id", "Use case (workflow) the run belongs to (use_cases.id)."),
    ("COLUMN runs.version_id", "Version of the use case that ran (versions.id)."),
    (
        "COLUMN runs.status",
        ("scheduled, running, completed, canceled or failed (a new value is kept as sent)."),
    ),
    (
        "COLUMN runs.annotation",
        ("Reviewer's verdict on the run (e.g. correct, incorrect, critical); null when none."),
    ),
    ('COLUMN runs."timestamp"', "When the run started (UTC)."),
    ("COLUMN runs.completed_at", "Time of the run's last node output (UTC); null while it runs."),
    (
        "COLUMN runs.data",
        (
            "The organization's run-table variables (load id, rate, ...), as listed by "
            "GET /runs: a JSON object."
        ),
    ),
    (
        "COLUMN runs.fetched_at",
        ("When the stored body was fetched (UTC); null: listed, not fetched yet."),
    ),
    ("COLUMN runs.payload_sha256", "SHA-256 (hex) of the stored raw body (run_payloads.sha256)."),
    ("COLUMN runs.listed_at", "When discovery last saw the run in GET /runs (UTC)."),
    ("COLUMN runs.updated_at", "When this row last changed (UTC)."),
    (
        "TABLE session_messages",
        ("One row per turn of a session's transcript, with the agent's latency split by stage."),
    ),
    ("COLUMN session_messages.run_id", "The run (runs.id)."),
    (
        "COLUMN session_messages.session_seq",
        ("Position of the session event in the run's events (run_events.seq)."),
    ),
    ("COLUMN session_messages.seq", "Position of the message in the session's messages, from 0."),
    ("COLUMN session_messages.id", "Message id."),
    ("COLUMN session_messages.session_id", "Session id the message belongs to."),
    ("COLUMN session_messages.chat_session_id", "Chat session id, for chats."),
    ("COLUMN session_messages.role", "assistant, user, tool or event."),
    (
        "COLUMN session_messages.content",
        ("What was said or written (emptied when retention deleted it)."),
    ),
    ("COLUMN session_messages.name", "Tool or speaker name, where given."),
    ("COLUMN session_messages.is_filler", "True for a filler phrase the agent said while waiting."),
    ("COLUMN session_messages.is_interrupted", "True when the caller interrupted this turn."),
    ("COLUMN session_messages.is_natural_cut", "True when the turn ended at a natural pause."),
    ('COLUMN session_messages."timestamp"', "When the message started (UTC)."),
    (
        "COLUMN session_messages.data_deleted",
        ("True when the platform deleted its content (retention)."),
    ),
    (
        "COLUMN session_messages.tool_calls",
        ("The tool calls of the turn, as sent (JSON); one row each in message_tool_calls."),
    ),
    (
        "COLUMN session_messages.latency_network",
        ("Agent latency: network stage, as sent (milliseconds in practice; unit not documented)."),
    ),
    ("COLUMN session_messages.latency_initial_wait", "Agent latency: initial wait stage, as sent."),
    (
        "COLUMN session_messages.latency_transcriber",
        ("Agent latency: speech-to-text stage, as sent."),
    ),
    (
        "COLUMN session_messages.latency_eos",
        ("Agent latency: end-of-speech detection stage, as sent."),
    ),
    (
        "COLUMN session_messages.latency_eos_wait",
        ("Agent latency: wait after end of speech, as sent."),
    ),
    ("COLUMN session_messages.latency_llm", "Agent latency: language model stage, as sent."),
    ("COLUMN session_messages.latency_tts", "Agent latency: text-to-speech stage, as sent."),
    ("TABLE sync_state", "Watermarks of sync, change capture and the catalog, and their failures."),
    ("COLUMN sync_state.name", "What the row tracks: sync, sync.recheck, catalog, catalog.usage."),
    ("COLUMN sync_state.watermark", "Up to when it last succeeded (UTC)."),
    ("COLUMN sync_state.updated_at", "When this row last changed (UTC)."),
    ("COLUMN sync_state.failures", "Failures in a row since the watermark last moved."),
    ("COLUMN sync_state.failed_at", "When it last failed (UTC)."),
    ("COLUMN sync_state.last_error", "Why it last failed, one line."),
    ("TABLE usage", "Billed calls and minutes per use case and period, from GET /usage."),
    ("COLUMN usage.org_id", "Organization."),
    ("COLUMN usage.use_case_id", "Use case."),
    ("COLUMN usage.period_start", "Start of the billing period (UTC)."),
    ("COLUMN usage.period_end", "End of the billing period (UTC)."),
    ("COLUMN usage.calls", "Billed calls in the period."),
    ("COLUMN usage.minutes", "Billed minutes in the period."),
    ("COLUMN usage.refreshed_at", "When this row was last read from the API (UTC)."),
    ("TABLE use_cases", "Use cases (workflows) from GET /use-cases, refreshed at most hourly."),
    ("COLUMN use_cases.id", "Use case id."),
    ("COLUMN use_cases.org_id", "Organization."),
    ("COLUMN use_cases.name", "Display name."),
    ("COLUMN use_cases.slug", "Short name."),
    ("COLUMN use_cases.icon", "Icon name."),
    ("COLUMN use_cases.source_use_case_version_id", "Version it was created from."),
    (
        "COLUMN use_cases.run_columns",
        ("The columns of the organization's runs table (the keys of runs.data), JSON."),
    ),
    ('COLUMN use_cases."timestamp"', "When it was created (UTC)."),
    (
        "COLUMN use_cases.data_retention_days",
        ("Days the platform keeps run content; null: no limit."),
    ),
    ("COLUMN use_cases.sort_order", "Display order (the API's order)."),
    ("COLUMN use_cases.refreshed_at", "When this row was last read from the API (UTC)."),
    (
        "TABLE versions",
        ("Use case versions (a workflow's published revisions), shared by many runs."),
    ),
    ("COLUMN versions.id", "Version id (UUID)."),
    ("COLUMN versions.slug", "Short name of the version."),
    ("COLUMN versions.org_id", "Organization that owns it."),
    ("COLUMN versions.use_case_id", "Use case it is a version of (use_cases.id)."),
    ("COLUMN versions.version_number", "Its number within the use case (1, 2, ...)."),
    ("COLUMN versions.name", "Display name."),
    ("COLUMN versions.is_published", "Whether it was published."),
    ("COLUMN versions.is_live", "Whether it is the live version."),
    ("COLUMN versions.source_version_id", "Version it was copied from, if any."),
    ('COLUMN versions."timestamp"', "When it was created (UTC)."),
    ("COLUMN versions.published_at", "When it was published (UTC)."),
    ("COLUMN versions.is_deleted", "Whether it was deleted upstream."),
    ("COLUMN versions.description", "Free text description."),
    ("COLUMN versions.created_by", "User who created it."),
    ("COLUMN versions.environment", "staging or production."),
    ("COLUMN versions.fetched_at", "When this row was last written from an API answer (UTC)."),
    (
        "TABLE run_issues",
        ("Issues raised on runs (reviewer findings); they change after the run ends."),
    ),
    ("COLUMN run_issues.id", "Issue id."),
    ("COLUMN run_issues.use_case_id", "Use case of the issue."),
    ("COLUMN run_issues.org_id", "Organization."),
    ("COLUMN run_issues.run_id", "Run it is about (runs.id)."),
    ("COLUMN run_issues.run_version_id", "Version of the run it is about."),
    ("COLUMN run_issues.status", "open, approved, closed, rejected (a new value is kept as sent)."),
    ("COLUMN run_issues.priority", "low, medium or high."),
    ("COLUMN run_issues.created_at", "When it was raised (UTC)."),
    (
        "COLUMN run_issues.type",
        ("What it is about: transcriber, message, tool_call, end_of_sentence, run, interruption."),
    ),
    ("COLUMN run_issues.updated_at", "When it last changed (UTC)."),
    ("COLUMN run_issues.assignee", "User assigned to it."),
    ("COLUMN run_issues.created_by", "User who raised it."),
    ("COLUMN run_issues.updated_by", "User who last changed it."),
    ("COLUMN run_issues.message_id", "Message it is about, if any."),
    ("COLUMN run_issues.correction", "The correct text or behaviour, as the reviewer wrote it."),
    ("COLUMN run_issues.correction_reason", "Why the correction was made."),
    ("COLUMN run_issues.northstar_id", "Northstar reference, if any."),
    (
        "TABLE run_payloads",
        (
            "The last raw body fetched for each run, byte for byte: reprocess rebuilds "
            "every table from it without calling the API."
        ),
    ),
    ("COLUMN run_payloads.run_id", "The run (runs.id)."),
    ("COLUMN run_payloads.body", "The GET /runs/{id} response body as received (bytes)."),
    ("COLUMN run_payloads.sha256", "SHA-256 (hex) of body."),
    ("COLUMN run_payloads.fetched_at", "When it was fetched (UTC)."),
    (
        "COLUMN run_payloads.drift",
        ("Schema drift noticed in the body (unknown fields or values), a JSON array."),
    ),
    (
        "VIEW bi_runs",
        (
            "One row per run, for dashboards: its version and use case by name, how many "
            "events and issues, how long it took, and its calls."
        ),
    ),
    ("COLUMN bi_runs.run_id", "The run (runs.id)."),
    ("COLUMN bi_runs.org_id", "Organization."),
    ("COLUMN bi_runs.use_case_id", "Use case (workflow) id."),
    ("COLUMN bi_runs.version_id", "Version that ran."),
    ("COLUMN bi_runs.version_name", "Name of that version."),
    ("COLUMN bi_runs.version_number", "Number of that version within its use case."),
    ("COLUMN bi_runs.status", "scheduled, running, completed, canceled or failed."),
    (
        "COLUMN bi_runs.annotation",
        ("Reviewer's verdict (correct, incorrect, critical, ...); null when none."),
    ),
    ('COLUMN bi_runs."timestamp"', "When the run started (UTC)."),
    ("COLUMN bi_runs.completed_at", "Time of the run's last node output (UTC)."),
    ("COLUMN bi_runs.fetched_at", "When hr-ingest last fetched it (UTC)."),
    ("COLUMN bi_runs.event_count", "Events in the run."),
    ("COLUMN bi_runs.issue_count", "Issues raised on the run."),
    ("COLUMN bi_runs.first_event_at", "Time of its first event (UTC)."),
    ("COLUMN bi_runs.last_event_at", "Time of its last event (UTC)."),
    ("COLUMN bi_runs.duration_s", "Seconds from its first to its last event."),
    ("COLUMN bi_runs.use_case_name", "Name of the use case."),
    ("COLUMN bi_runs.session_count", "Calls and chats in the run."),
    (
        "COLUMN bi_runs.call_duration",
        ("Total duration of its sessions, as sent (seconds in practice)."),
    ),
    (
        "COLUMN bi_runs.any_connected",
        ("Whether any of its calls connected; null for a run without one."),
    ),
    ("VIEW bi_daily_runs", "Runs per day (UTC), use case, status and annotation."),
    ("COLUMN bi_daily_runs.day", "Day the runs started (UTC)."),
    ("COLUMN bi_daily_runs.use_case_id", "Use case id."),
    ("COLUMN bi_daily_runs.status", "Run status."),
    ("COLUMN bi_daily_runs.annotation", "Reviewer's verdict; null when none."),
    ("COLUMN bi_daily_runs.runs", "Runs."),
    ("COLUMN bi_daily_runs.avg_duration_s", "Average seconds from first to last event."),
    ("COLUMN bi_daily_runs.runs_with_issues", "Runs with at least one issue."),
    ("COLUMN bi_daily_runs.issues", "Issues raised on those runs."),
    ("COLUMN bi_daily_runs.events", "Events of those runs."),
    ("COLUMN bi_daily_runs.use_case_name", "Name of the use case."),
    ("VIEW bi_issues", "One row per issue, with its run, version and use case, and time to close."),
    ("COLUMN bi_issues.issue_id", "Issue id."),
    ("COLUMN bi_issues.run_id", "Run it is about."),
    ("COLUMN bi_issues.org_id", "Organization."),
    ("COLUMN bi_issues.use_case_id", "Use case: the issue's own, else its run's."),
    ("COLUMN bi_issues.status", "open, approved, closed, rejected."),
    ("COLUMN bi_issues.priority", "low, medium or high."),
    ("COLUMN bi_issues.type", "What it is about (transcriber, message, tool_call, ...)."),
    ("COLUMN bi_issues.created_at", "When it was raised (UTC)."),
    ("COLUMN bi_issues.updated_at", "When it last changed (UTC)."),
    ("COLUMN bi_issues.assignee", "User assigned to it."),
    ("COLUMN bi_issues.created_by", "User who raised it."),
    ("COLUMN bi_issues.updated_by", "User who last changed it."),
    ("COLUMN bi_issues.message_id", "Message it is about, if any."),
    ("COLUMN bi_issues.correction", "The correct text or behaviour, as the reviewer wrote it."),
    ("COLUMN bi_issues.correction_reason", "Why the correction was made."),
    ("COLUMN bi_issues.northstar_id", "Northstar reference, if any."),
    ("COLUMN bi_issues.run_status", "Status of its run."),
    ("COLUMN bi_issues.run_annotation", "Annotation of its run."),
    ("COLUMN bi_issues.run_timestamp", "When its run started (UTC)."),
    ("COLUMN bi_issues.version_id", "Version: the issue's run version, else the run's."),
    ("COLUMN bi_issues.version_name", "Name of that version."),
    ("COLUMN bi_issues.version_number", "Number of that version."),
    (
        "COLUMN bi_issues.closed_at",
        ("When it was settled (approved, rejected or closed); null while open."),
    ),
    ("COLUMN bi_issues.time_to_close_s", "Seconds from raised to settled; null while open."),
    ("COLUMN bi_issues.use_case_name", "Name of the use case."),
    (
        "VIEW bi_calls",
        (
            "One row per call or chat (session), with its run's use case and version, its"
            " outcome, turns, tools and latency percentiles."
        ),
    ),
    ("COLUMN bi_calls.run_id", "The run (runs.id)."),
    ("COLUMN bi_calls.session_seq", "Position of the session event in the run's events."),
    ("COLUMN bi_calls.session_id", "Session id, as sent."),
    ("COLUMN bi_calls.org_id", "Organization."),
    ("COLUMN bi_calls.use_case_id", "Use case id."),
    ("COLUMN bi_calls.use_case_name", "Name of the use case."),
    ("COLUMN bi_calls.version_id", "Version that ran."),
    ("COLUMN bi_calls.version_name", "Name of that version."),
    ("COLUMN bi_calls.version_number", "Number of that version."),
    ("COLUMN bi_calls.environment", "staging or production (the version's)."),
    ("COLUMN bi_calls.run_status", "Status of the run."),
    ("COLUMN bi_calls.run_annotation", "Annotation of the run."),
    ('COLUMN bi_calls."timestamp"', "When the session started (UTC)."),
    ("COLUMN bi_calls.duration", "Duration, as sent (seconds in practice)."),
    (
        "COLUMN bi_calls.connected",
        ("Whether the call connected: no SIP code, or a 2xx one; a chat counts as connected."),
    ),
    ("COLUMN bi_calls.sip_code", "SIP result code of a call that did not connect."),
    ("COLUMN bi_calls.sip_reason", "SIP reason phrase."),
    ("COLUMN bi_calls.messages", "Turns in the transcript."),
    ("COLUMN bi_calls.assistant_turns", "Turns of the agent."),
    ("COLUMN bi_calls.user_turns", "Turns of the caller."),
    ("COLUMN bi_calls.tool_turns", "Tool turns."),
    ("COLUMN bi_calls.event_turns", "Event turns."),
    ("COLUMN bi_calls.interruptions", "Agent turns the caller interrupted."),
    ("COLUMN bi_calls.fillers", "Filler phrases the agent said."),
    ("COLUMN bi_calls.natural_cuts", "Turns that ended at a natural pause."),
    ("COLUMN bi_calls.tool_calls", "Tools the agent called."),
    (
        "COLUMN bi_calls.time_to_first_word_s",
        (
            "Seconds from the session's start to the agent's first message (ringing "
            "included for an outbound call)."
        ),
    ),
    (
        "COLUMN bi_calls.latency_llm_p50",
        ("Median language model latency of the agent's turns, as sent (milliseconds in practice)."),
    ),
    ("COLUMN bi_calls.latency_llm_p95", "95th percentile of the language model latency, as sent."),
    ("COLUMN bi_calls.latency_tts_p50", "Median text-to-speech latency, as sent."),
    ("COLUMN bi_calls.latency_tts_p95", "95th percentile of the text-to-speech latency, as sent."),
    (
        "COLUMN bi_calls.latency_turn_p50",
        ("Median of a turn's whole latency (the sum of its stages), as sent."),
    ),
    ("COLUMN bi_calls.latency_turn_p95", "95th percentile of a turn's whole latency, as sent."),
    ("VIEW bi_tool_calls", "One row per tool call, with its run's use case."),
    ("COLUMN bi_tool_calls.run_id", "The run (runs.id)."),
    ("COLUMN bi_tool_calls.session_seq", "Position of the session event in the run's events."),
    ("COLUMN bi_tool_calls.message_seq", "Position of the message in the session."),
    ("COLUMN bi_tool_calls.tool_call_seq", "Position of the call in the message's tool calls."),
    ("COLUMN bi_tool_calls.use_case_id", "Use case id."),
    ("COLUMN bi_tool_calls.use_case_name", "Name of the use case."),
    ("COLUMN bi_tool_calls.tool_name", "Tool name."),
    ("COLUMN bi_tool_calls.arguments", "Arguments, JSON text as sent."),
    ('COLUMN bi_tool_calls."timestamp"', "When the message that called it started (UTC)."),
    (
        "COLUMN bi_tool_calls.session_timestamp",
        ("When its session started (UTC): indexed, filter on this one."),
    ),
]


def _quoted(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _all(statements: list[str]) -> None:
    """One round trip for all of them (a DO block), not one per comment: this migration runs
    for every test schema."""
    op.execute("DO $comments$ BEGIN " + " ".join(s + ";" for s in statements) + " END $comments$")


def upgrade() -> None:
    _all([f"COMMENT ON {target} IS {_quoted(text)}" for target, text in COMMENTS])


def downgrade() -> None:
    _all([f"COMMENT ON {target} IS NULL" for target, _ in COMMENTS])
