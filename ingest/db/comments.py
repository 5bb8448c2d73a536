"""What every table and column means, and its unit: `COMMENT ON` for the BI tools that import
them (Metabase, Superset, DataGrip, dbt docs). Attached to the Core tables (ingest.db.tables),
so Alembic sees a changed comment as drift; the views' are in migration 0007."""

from __future__ import annotations

from sqlalchemy import MetaData

_UUID_RUN = "The run (runs.id)."
_SEQ_EVENT = "Position of the session event in the run's events (run_events.seq)."

# (column, comment) of daily_call_counts' figures: sums, so that days and groups add up.
_CALL_FIGURES = (
    ("calls", "Calls added (negative: taken away)."),
    ("connected", "Of them connected."),
    ("duration_s", "Sum of their durations, as sent (seconds in practice)."),
    ("durations", "How many have a duration."),
    ("talk_s", "Sum of the durations of the connected ones."),
    ("talks", "How many connected ones have a duration."),
    ("first_word_s", "Sum of their times to first word, seconds."),
    ("first_words", "How many have one."),
    ("latency_llm_p95_ms", "Sum of their LLM latency p95s, ms."),
    ("latency_llm_p95s", "How many have one."),
    ("latency_turn_p95_ms", "Sum of their turn latency p95s, ms."),
    ("latency_turn_p95s", "How many have one."),
    ("messages", "Sum of their turns."),
    ("tool_calls", "Sum of their tool calls."),
    ("interruptions", "Sum of their interruptions."),
)

# (figure, what it is) of daily_call_percentiles, as bi_calls shows them.
_PERCENTILE_FIGURES = (
    ("duration_s", "duration, as sent (seconds in practice)"),
    ("first_word_s", "time to first word, seconds"),
    ("latency_llm_p50", "LLM latency p50, ms"),
    ("latency_llm_p95", "LLM latency p95, ms"),
    ("latency_turn_p50", "turn latency p50, ms"),
    ("latency_turn_p95", "turn latency p95, ms"),
)

TABLES: dict[str, tuple[str, dict[str, str]]] = {
    "runs": (
        "One row per HappyRobot run (a workflow execution): what the last fetch of GET /runs/{id}"
        " said, plus data from the GET /runs listing.",
        {
            "id": "Run id (UUID), as the API gives it.",
            "org_id": "Organization that owns the run.",
            "use_case_id": "Use case (workflow) the run belongs to (use_cases.id).",
            "version_id": "Version of the use case that ran (versions.id).",
            "status": "scheduled, running, completed, canceled or failed (a new value is kept as"
            " sent).",
            "annotation": "Reviewer's verdict on the run (e.g. correct, incorrect, critical);"
            " null when none.",
            "timestamp": "When the run started (UTC).",
            "completed_at": "Time of the run's last node output (UTC); null while it runs.",
            "data": "The organization's run-table variables (load id, rate, ...), as listed by"
            " GET /runs: a JSON object.",
            "fetched_at": "When the stored body was fetched (UTC); null: listed, not fetched yet.",
            "payload_sha256": "SHA-256 (hex) of the stored raw body (run_payloads.sha256).",
            "listed_at": "When discovery last saw the run in GET /runs (UTC).",
            "updated_at": "When this row last changed (UTC).",
            "event_count": "Elements of the run's events (its run_events rows).",
            "first_event_at": "Time of its first event (UTC).",
            "last_event_at": "Time of its last event (UTC).",
            "issue_count": "Its issues (run_issues rows).",
            "session_count": "Its calls and chats (run_sessions rows).",
            "call_duration": "Sum of its sessions' durations, as sent (seconds in practice).",
            "any_connected": "Whether any of its calls connected; null when it made none.",
        },
    ),
    "versions": (
        "Use case versions (a workflow's published revisions), shared by many runs.",
        {
            "id": "Version id (UUID).",
            "slug": "Short name of the version.",
            "org_id": "Organization that owns it.",
            "use_case_id": "Use case it is a version of (use_cases.id).",
            "version_number": "Its number within the use case (1, 2, ...).",
            "name": "Display name.",
            "is_published": "Whether it was published.",
            "is_live": "Whether it is the live version.",
            "source_version_id": "Version it was copied from, if any.",
            "timestamp": "When it was created (UTC).",
            "published_at": "When it was published (UTC).",
            "is_deleted": "Whether it was deleted upstream.",
            "description": "Free text description.",
            "created_by": "User who created it.",
            "environment": "staging or production.",
            "fetched_at": "When this row was last written from an API answer (UTC).",
        },
    ),
    "run_events": (
        "One row per element of a run's events array, whatever its type (action or session).",
        {
            "run_id": _UUID_RUN,
            "seq": "Position in the run's events array, from 0: the event's identity.",
            "type": "action or session (a new value is kept as sent).",
            "timestamp": "When the event happened (UTC).",
            "integration_name": "Integration that produced it (twilio, openai, ...).",
            "event_name": "Name of the event within the integration.",
            "node_id": "Workflow node that produced it.",
            "output": "The node's output, any JSON value.",
        },
    ),
    "event_intermediates": (
        "The intermediate of an action event (one per event that has one).",
        {
            "run_id": _UUID_RUN,
            "seq": "The event's position in the run's events (run_events.seq).",
            "id": "Intermediate id.",
            "node_id": "Workflow node.",
            "event_id": "Event id the intermediate belongs to, where the API links it.",
            "session_id": "Session (call or chat) it happened in.",
            "name": "Name of the step.",
            "data": "The step's data, any JSON value (emptied when retention deleted it).",
            "error": "Error message of the step, if it failed.",
            "timestamp": "When it happened (UTC).",
            "data_deleted": "True when the platform deleted its content (retention).",
        },
    ),
    "run_sessions": (
        "One row per session event: one phone call or chat of a run.",
        {
            "run_id": _UUID_RUN,
            "seq": "The session event's position in the run's events (run_events.seq).",
            "id": "Session id, as sent (text).",
            "timestamp": "When the session started (UTC).",
            "duration": "Length of the session, as sent (seconds in practice; unit not"
            " documented).",
            "sip_code": "SIP result code of a phone call that did not connect; null when it"
            " connected or for a chat.",
            "sip_reason": "SIP reason phrase for sip_code.",
            "actions": "The session's actions, any JSON value.",
            "use_case_id": "The run's use case (runs.use_case_id).",
            "version_id": "The run's version (runs.version_id).",
            "messages": "Turns in its transcript (session_messages rows).",
            "assistant_turns": "Turns with role assistant.",
            "user_turns": "Turns with role user.",
            "tool_turns": "Turns with role tool.",
            "event_turns": "Turns with role event.",
            "interruptions": "Turns the caller interrupted.",
            "fillers": "Filler turns.",
            "natural_cuts": "Turns cut at a natural pause.",
            "tool_calls": "Tools the agent called (message_tool_calls rows).",
            "first_assistant_at": "Time of the agent's first turn (UTC).",
            "latency_llm_p50": "Median LLM latency of its turns (ms as sent).",
            "latency_llm_p95": "95th percentile LLM latency of its turns (ms as sent).",
            "latency_tts_p50": "Median text-to-speech latency of its turns (ms as sent).",
            "latency_tts_p95": "95th percentile text-to-speech latency (ms as sent).",
            "latency_turn_p50": "Median whole wait of a turn: the sum of its latency stages (ms).",
            "latency_turn_p95": "95th percentile whole wait of a turn (ms).",
            "tools": "Its tool calls by tool name: a JSON array of [name, calls].",
        },
    ),
    "session_messages": (
        "One row per turn of a session's transcript, with the agent's latency split by stage.",
        {
            "run_id": _UUID_RUN,
            "session_seq": _SEQ_EVENT,
            "seq": "Position of the message in the session's messages, from 0.",
            "id": "Message id.",
            "session_id": "Session id the message belongs to.",
            "chat_session_id": "Chat session id, for chats.",
            "role": "assistant, user, tool or event.",
            "content": "What was said or written (emptied when retention deleted it).",
            "name": "Tool or speaker name, where given.",
            "is_filler": "True for a filler phrase the agent said while waiting.",
            "is_interrupted": "True when the caller interrupted this turn.",
            "is_natural_cut": "True when the turn ended at a natural pause.",
            "timestamp": "When the message started (UTC).",
            "data_deleted": "True when the platform deleted its content (retention).",
            "tool_calls": "The tool calls of the turn, as sent (JSON); one row each in"
            " message_tool_calls.",
            "latency_network": "Agent latency: network stage, as sent (milliseconds in"
            " practice; unit not documented).",
            "latency_initial_wait": "Agent latency: initial wait stage, as sent.",
            "latency_transcriber": "Agent latency: speech-to-text stage, as sent.",
            "latency_eos": "Agent latency: end-of-speech detection stage, as sent.",
            "latency_eos_wait": "Agent latency: wait after end of speech, as sent.",
            "latency_llm": "Agent latency: language model stage, as sent.",
            "latency_tts": "Agent latency: text-to-speech stage, as sent.",
        },
    ),
    "message_tool_calls": (
        "One row per tool the agent called in a turn.",
        {
            "run_id": _UUID_RUN,
            "session_seq": _SEQ_EVENT,
            "message_seq": "The message's position in the session (session_messages.seq).",
            "seq": "Position of the call in the turn's tool_calls, from 0.",
            "name": "Tool name.",
            "arguments": "Arguments, JSON text as sent (OpenAI's format).",
        },
    ),
    "run_issues": (
        "Issues raised on runs (reviewer findings); they change after the run ends.",
        {
            "id": "Issue id.",
            "use_case_id": "Use case of the issue.",
            "org_id": "Organization.",
            "run_id": "Run it is about (runs.id).",
            "run_version_id": "Version of the run it is about.",
            "status": "open, approved, closed, rejected (a new value is kept as sent).",
            "priority": "low, medium or high.",
            "created_at": "When it was raised (UTC).",
            "type": "What it is about: transcriber, message, tool_call, end_of_sentence, run,"
            " interruption.",
            "updated_at": "When it last changed (UTC).",
            "assignee": "User assigned to it.",
            "created_by": "User who raised it.",
            "updated_by": "User who last changed it.",
            "message_id": "Message it is about, if any.",
            "correction": "The correct text or behaviour, as the reviewer wrote it.",
            "correction_reason": "Why the correction was made.",
            "northstar_id": "Northstar reference, if any.",
            "counted_use_case_id": "Use case dashboards count it under: its own, else its run's.",
            "counted_version_id": "Version dashboards count it under: run_version_id, else its"
            " run's.",
        },
    ),
    "run_payloads": (
        "The last raw body fetched for each run, byte for byte: reprocess rebuilds every table"
        " from it without calling the API.",
        {
            "run_id": _UUID_RUN,
            "body": "The GET /runs/{id} response body, byte for byte, stored as encoding says"
            " (hr-ingest payload RUN_ID prints it).",
            "sha256": "SHA-256 (hex) of the body as received.",
            "fetched_at": "When it was fetched (UTC).",
            "encoding": "zstd (compressed by hr-ingest) or identity (as received; stored before"
            " migration 0010).",
            "drift": "Schema drift noticed in the body (unknown fields or values), a JSON array.",
        },
    ),
    "use_cases": (
        "Use cases (workflows) from GET /use-cases, refreshed at most hourly.",
        {
            "id": "Use case id.",
            "org_id": "Organization.",
            "name": "Display name.",
            "slug": "Short name.",
            "icon": "Icon name.",
            "source_use_case_version_id": "Version it was created from.",
            "run_columns": "The columns of the organization's runs table (the keys of"
            " runs.data), JSON.",
            "timestamp": "When it was created (UTC).",
            "data_retention_days": "Days the platform keeps run content; null: no limit.",
            "sort_order": "Display order (the API's order).",
            "refreshed_at": "When this row was last read from the API (UTC).",
        },
    ),
    "usage": (
        "Billed calls and minutes per use case and period, from GET /usage.",
        {
            "org_id": "Organization.",
            "use_case_id": "Use case.",
            "period_start": "Start of the billing period (UTC).",
            "period_end": "End of the billing period (UTC).",
            "calls": "Billed calls in the period.",
            "minutes": "Billed minutes in the period.",
            "refreshed_at": "When this row was last read from the API (UTC).",
        },
    ),
    "ingest_queue": (
        "hr-ingest's work queue: one row per run to fetch, its state and lease.",
        {
            "run_id": _UUID_RUN,
            "state": "pending, running, done or dead.",
            "attempts": "Fetch attempts of the current round.",
            "available_at": "When the run may be claimed (UTC); later after a failure"
            " (backoff) or for a poll.",
            "lease_owner": "Worker holding the run, while running.",
            "lease_expires_at": "When the lease runs out (UTC), unless renewed.",
            "last_error": "Reason of the last failed attempt.",
            "priority": "Higher is claimed first.",
            "source": "What enqueued it (last, when it was waiting or done): manual, backfill,"
            " sync, webhook.",
            "refresh_requested": "Enqueued again while running: fetch once more.",
            "awaiting_terminal": "Pending only to poll a run still scheduled/running upstream.",
            "created_at": "When it was first enqueued (UTC).",
            "updated_at": "When this row last changed (UTC).",
            "finished_at": "When it last became done or dead (UTC).",
            "polls": "Fetches in a row that found the run not finished upstream yet.",
            "landed_at": "When the run was first stored finished upstream (UTC); null before 0014.",
            "freshness_s": "landed_at - the run's completed_at, seconds: how long after the call"
            " ended it was in the tables.",
        },
    ),
    "dead_letters": (
        "Runs given up on, with why and the raw body that could not be stored.",
        {
            "run_id": _UUID_RUN,
            "kind": "Failure kind (stable, for grouping): not_found, http_5xx, invalid_body,"
            " payload_rejected, store_error, ...",
            "reason": "The failure in words.",
            "http_status": "HTTP status of the API's answer, if there was one.",
            "body": "The API's answer as received (bytes).",
            "attempts": "Attempts made.",
            "created_at": "When it was dead-lettered (UTC).",
        },
    ),
    "daily_run_counts": (
        "What bi_daily_runs sums: changes to runs per UTC day, use case, status and annotation,"
        " written by triggers on runs and compacted by the worker. Read bi_daily_runs instead.",
        {
            "id": "Row id.",
            "day": "UTC day of the runs' timestamp.",
            "use_case_id": "Use case (use_cases.id).",
            "status": "Run status.",
            "annotation": "Run annotation.",
            "runs": "Runs added (negative: taken away).",
            "duration_us": "Their durations (last event - first), microseconds.",
            "durations": "How many of them have a duration.",
            "runs_with_issues": "How many have an issue.",
            "issues": "Their issues.",
            "events": "Their events.",
        },
    ),
    "daily_call_counts": (
        "What bi_daily_calls sums: changes to run_sessions per UTC day, use case and version,"
        " written by triggers and compacted by the worker. Read bi_daily_calls instead.",
        {
            "id": "Row id.",
            "day": "UTC day of the calls' timestamp.",
            "use_case_id": "Use case (use_cases.id).",
            "version_id": "Version (versions.id).",
            **{name: text for name, text in _CALL_FIGURES},
        },
    ),
    "daily_tool_counts": (
        "What bi_daily_tool_calls sums: the agent's tool calls per UTC day of their call, use"
        " case and tool, written by triggers on run_sessions. Read bi_daily_tool_calls instead.",
        {
            "id": "Row id.",
            "day": "UTC day of the calls' timestamp.",
            "use_case_id": "Use case (use_cases.id).",
            "tool_name": "Tool (function) name.",
            "tool_calls": "Times it was called.",
            "calls_using_it": "Calls (sessions) that called it.",
        },
    ),
    "daily_issue_counts": (
        "What bi_daily_issues sums: changes to run_issues per UTC day created, use case,"
        " version and status, written by triggers. Read bi_daily_issues instead.",
        {
            "id": "Row id.",
            "day": "UTC day the issues were created.",
            "use_case_id": "Use case they are counted under (run_issues.counted_use_case_id).",
            "version_id": "Version they are counted under (run_issues.counted_version_id).",
            "status": "Issue status.",
            "issues": "Issues added (negative: taken away).",
            "time_to_close_s": "Sum of created_at to updated_at of the settled ones, seconds.",
            "time_to_close_n": "How many settled ones have both times.",
        },
    ),
    "stale_call_days": (
        "Days whose daily_call_percentiles wait for a refresh (the worker's, within a minute):"
        " added by triggers on run_sessions, taken off by refresh_call_percentiles().",
        {"id": "Row id.", "day": "UTC day to recompute."},
    ),
    "daily_call_percentiles": (
        "What bi_daily_call_percentiles shows: each UTC day's call percentiles per use case,"
        " recomputed from run_sessions for the days a write touched.",
        {
            "id": "Row id.",
            "day": "UTC day of the calls' timestamp.",
            "use_case_id": "Use case (use_cases.id).",
            "calls": "Calls that day (run_sessions rows).",
            **{
                f"{figure}_{stat}": f"{label} of the calls' {what} (null when none has one)."
                for figure, what in _PERCENTILE_FIGURES
                for stat, label in (("median", "Median"), ("p95", "95th percentile"))
            },
            "refreshed_at": "When this row was computed (UTC).",
        },
    ),
    "ingest_batches": (
        "Throughput history: one row per transaction that finished runs.",
        {
            "id": "Row id.",
            "at": "When the transaction committed (UTC).",
            "worker": "Worker id (host:pid:random).",
            "runs_done": "Runs stored in it.",
            "runs_failed": "Failed attempts recorded in it.",
            "rows_written": "Rows written to the run tables in it.",
        },
    ),
    "rate_limits": (
        "The token bucket every worker on this database shares (one row per limiter name).",
        {
            "name": "Limiter name.",
            "tokens": "Tokens in the bucket as of refilled_at (negative: reserved ahead).",
            "rate": "Configured requests per second.",
            "burst": "Largest number of tokens the bucket holds.",
            "factor": "Share of the rate in use, halved by a 429 and recovering to 1.",
            "paused_until": "No tokens before this time after a 429 (UTC).",
            "refilled_at": "When tokens was last brought up to date (UTC).",
        },
    ),
    "sync_state": (
        "Watermarks of sync, change capture and the catalog, and their failures.",
        {
            "name": "What the row tracks: sync, sync.recheck, catalog, catalog.usage.",
            "watermark": "Up to when it last succeeded (UTC).",
            "updated_at": "When this row last changed (UTC).",
            "failures": "Failures in a row since the watermark last moved.",
            "failed_at": "When it last failed (UTC).",
            "last_error": "Why it last failed, one line.",
        },
    ),
    "ingest_control": (
        "Operator controls: a pause of every worker's claims.",
        {
            "id": "Always 1: there is one row.",
            "paused_at": "Since when workers claim nothing (UTC); null: they claim.",
            "paused_by": "Who paused: user@host of the pause command.",
            "reason": "Why, as the pause command was given it.",
            "updated_at": "When the row last changed (UTC): the last pause or resume.",
        },
    ),
    "discovery_windows": (
        "Time windows discover has listed completely, so a rerun skips them.",
        {
            "scope": "The filters the window was listed under.",
            "window_start": "Start of the window, inclusive (UTC).",
            "window_end": "End of the window, exclusive (UTC).",
            "runs_found": "Runs listed in it.",
            "finished_at": "When it was finished (UTC).",
        },
    ),
}


def attach(metadata: MetaData) -> None:
    """Set every table's and column's comment; a table or column without one is an error."""
    for table in metadata.sorted_tables:
        comment, columns = TABLES[table.name]
        table.comment = comment
        for column in table.columns:
            column.comment = columns[column.name]
