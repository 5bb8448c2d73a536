"""Each day's call percentiles, stored and refreshed for the days a write touched

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-04

Percentiles do not add up, so the daily counts (0011, 0012) cannot give a median: a week's
medians read every call of the week from bi_calls, ~0.6 s for 200,000 calls, and that grows
with the calls a day. daily_call_percentiles holds each UTC day's p50 and p95 per use case,
computed from that day's calls, so a percentile trend reads a few rows a day.

- A statement trigger on run_sessions adds the UTC days a statement wrote to
  stale_call_days (insert-only: concurrent writers never wait on each other).
- refresh_call_percentiles(max_days) recomputes the most recent stale days from run_sessions
  and takes them off the list; the worker calls it after each compaction (ingest.rollup).
  Refreshes take a lock on daily_call_percentiles that only other refreshes wait on, so two
  never write one day twice; readers never wait.
- Both run as the schema's owner, like the daily counts: a worker role needs no grant.
- bi_daily_call_percentiles shows them with use case names, and whether the day is up to date.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0013"
down_revision: str | None = "0012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_DAY = "(s.\"timestamp\" AT TIME ZONE 'UTC')::date"

# figure: (SQL over a run_sessions row s, what it is) — as bi_calls shows them.
FIGURES = {
    "duration_s": ("s.duration", "duration, as sent (seconds in practice)"),
    "first_word_s": (
        'EXTRACT(EPOCH FROM s.first_assistant_at - s."timestamp")::double precision',
        "time to first word, seconds",
    ),
    "latency_llm_p50": ("s.latency_llm_p50", "LLM latency p50, ms"),
    "latency_llm_p95": ("s.latency_llm_p95", "LLM latency p95, ms"),
    "latency_turn_p50": ("s.latency_turn_p50", "turn latency p50, ms"),
    "latency_turn_p95": ("s.latency_turn_p95", "turn latency p95, ms"),
}
# column: comment, in table order after day and use_case_id.
COLUMNS = {
    "calls": "Calls that day (run_sessions rows).",
    **{
        f"{figure}_{stat}": f"{label} of the calls' {what} (null when none has one)."
        for figure, (_, what) in FIGURES.items()
        for stat, label in (("median", "Median"), ("p95", "95th percentile"))
    },
    "refreshed_at": "When this row was computed (UTC).",
}

_SELECT = ", ".join(
    f"percentile_cont(ARRAY[0.5, 0.95]) WITHIN GROUP (ORDER BY {sql}) AS {figure}"
    for figure, (sql, _) in FIGURES.items()
)
_SPLIT = ", ".join(f"x.{f}[1], x.{f}[2]" for f in FIGURES)

# The most recent stale days first (dashboards look at the last days); the rest stay on the
# list for the next call. Days come from the index on run_sessions.timestamp, one at a time.
REFRESH = f"""
CREATE FUNCTION refresh_call_percentiles(max_days integer) RETURNS integer LANGUAGE plpgsql
SECURITY DEFINER SET search_path FROM CURRENT AS $$
DECLARE
    stale date[];
    days date[];
BEGIN
    LOCK TABLE daily_call_percentiles IN SHARE ROW EXCLUSIVE MODE;
    WITH gone AS (DELETE FROM stale_call_days RETURNING day)
    SELECT ARRAY(SELECT DISTINCT day FROM gone ORDER BY day DESC) INTO stale;
    days := stale[1:max_days];
    IF cardinality(stale) > max_days THEN
        INSERT INTO stale_call_days (day) SELECT unnest(stale[max_days + 1:]);
    END IF;
    DELETE FROM daily_call_percentiles WHERE day = ANY(days);
    INSERT INTO daily_call_percentiles (day, use_case_id, {", ".join(COLUMNS)})
    SELECT d.day, x.use_case_id, x.calls, {_SPLIT}, now()
    FROM unnest(days) AS d(day)
    CROSS JOIN LATERAL (
        SELECT s.use_case_id, count(*) AS calls, {_SELECT}
        FROM run_sessions AS s
        WHERE s."timestamp" >= d.day::timestamp AT TIME ZONE 'UTC'
          AND s."timestamp" < (d.day + 1)::timestamp AT TIME ZONE 'UTC'
        GROUP BY s.use_case_id
    ) AS x;
    RETURN cardinality(days);
END
$$"""

MARK = f"""
CREATE FUNCTION stale_call_days_add() RETURNS trigger LANGUAGE plpgsql
SECURITY DEFINER SET search_path FROM CURRENT AS $$
BEGIN
    IF TG_OP IN ('INSERT', 'UPDATE') THEN
        INSERT INTO stale_call_days (day)
        SELECT DISTINCT {_DAY} FROM new_rows AS s WHERE s."timestamp" IS NOT NULL;
    END IF;
    IF TG_OP IN ('UPDATE', 'DELETE') THEN
        INSERT INTO stale_call_days (day)
        SELECT DISTINCT {_DAY} FROM old_rows AS s WHERE s."timestamp" IS NOT NULL;
    END IF;
    IF TG_OP = 'TRUNCATE' THEN
        DELETE FROM daily_call_percentiles;
        DELETE FROM stale_call_days;
    END IF;
    RETURN NULL;
END
$$"""

TRIGGERS = (
    ("stale_call_days_insert", "AFTER INSERT ON run_sessions REFERENCING NEW TABLE AS new_rows"),
    (
        "stale_call_days_update",
        "AFTER UPDATE ON run_sessions REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows",
    ),
    ("stale_call_days_delete", "AFTER DELETE ON run_sessions REFERENCING OLD TABLE AS old_rows"),
    ("stale_call_days_truncate", "AFTER TRUNCATE ON run_sessions"),
)

VIEW = f"""
CREATE VIEW bi_daily_call_percentiles AS
SELECT
    p.day, p.use_case_id, uc.name AS use_case_name,
    {", ".join(f"p.{c}" for c in COLUMNS if c != "refreshed_at")},
    NOT EXISTS (SELECT FROM stale_call_days AS t WHERE t.day = p.day) AS up_to_date
FROM daily_call_percentiles AS p
LEFT JOIN use_cases AS uc ON uc.id = p.use_case_id
"""
VIEW_COMMENT = (
    "Percentiles of calls per UTC day and use case (a median does not add up: do not average"
    " these across days or use cases; for a longer window use bi_calls)."
)
VIEW_COLUMNS = {
    "day": "UTC day of the calls' timestamp.",
    "use_case_id": "Use case (use_cases.id).",
    "use_case_name": "Use case name (use_cases.name).",
    **{c: text for c, text in COLUMNS.items() if c != "refreshed_at"},
    "up_to_date": "False while calls written that day wait for the worker's next refresh"
    " (within a minute or so).",
}


def _comment(target: str, text: str) -> str:
    return f"COMMENT ON {target} IS '" + text.replace("'", "''") + "';"


def upgrade() -> None:
    op.create_table(
        "stale_call_days",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=True), nullable=False),
        sa.Column("day", sa.Date(), nullable=False, comment="UTC day to recompute."),
        sa.PrimaryKeyConstraint("id", name="pk_stale_call_days"),
        comment="Days whose daily_call_percentiles wait for a refresh (the worker's, within a"
        " minute): added by triggers on run_sessions, taken off by refresh_call_percentiles().",
    )
    op.create_index("ix_stale_call_days_day", "stale_call_days", ["day"])
    op.create_table(
        "daily_call_percentiles",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=True), nullable=False),
        sa.Column("day", sa.Date(), nullable=False, comment="UTC day of the calls' timestamp."),
        sa.Column("use_case_id", sa.UUID(), comment="Use case (use_cases.id)."),
        sa.Column("calls", sa.BigInteger(), nullable=False, comment=COLUMNS["calls"]),
        *(
            sa.Column(c, sa.Double(), comment=text)
            for c, text in COLUMNS.items()
            if c not in ("calls", "refreshed_at")
        ),
        sa.Column(
            "refreshed_at",
            sa.DateTime(timezone=True),
            nullable=False,
            comment=COLUMNS["refreshed_at"],
        ),
        sa.PrimaryKeyConstraint("id", name="pk_daily_call_percentiles"),
        comment="What bi_daily_call_percentiles shows: each UTC day's call percentiles per use"
        " case, recomputed from run_sessions for the days a write touched.",
    )
    op.create_index("ix_daily_call_percentiles_day", "daily_call_percentiles", ["day"])
    op.execute(MARK)
    for name, when in TRIGGERS:
        op.execute(
            f"CREATE TRIGGER {name} {when} FOR EACH STATEMENT EXECUTE FUNCTION"
            " stale_call_days_add()"
        )
    op.execute(REFRESH)
    op.execute(
        "COMMENT ON FUNCTION refresh_call_percentiles(integer) IS 'Recomputes the most recent"
        " max_days days of stale_call_days; returns how many. Run by the worker every minute.'"
    )
    # The calls stored so far.
    op.execute(
        f"INSERT INTO stale_call_days (day) SELECT DISTINCT {_DAY} FROM run_sessions AS s"
        ' WHERE s."timestamp" IS NOT NULL'
    )
    op.execute("SELECT refresh_call_percentiles(2147483647)")
    op.execute(VIEW)
    comments = [_comment("VIEW bi_daily_call_percentiles", VIEW_COMMENT)]
    comments += [
        _comment(f"COLUMN bi_daily_call_percentiles.{c}", text) for c, text in VIEW_COLUMNS.items()
    ]
    comments += [
        _comment("COLUMN stale_call_days.id", "Row id."),
        _comment("COLUMN daily_call_percentiles.id", "Row id."),
    ]
    op.execute("DO $c$ BEGIN " + " ".join(comments) + " END $c$")


def downgrade() -> None:
    op.execute("DROP VIEW bi_daily_call_percentiles")
    op.execute("DROP FUNCTION refresh_call_percentiles(integer)")
    for name, _ in reversed(TRIGGERS):
        op.execute(f"DROP TRIGGER {name} ON run_sessions")
    op.execute("DROP FUNCTION stale_call_days_add()")
    op.drop_table("daily_call_percentiles")
    op.drop_table("stale_call_days")
