"""daily_run_counts: bi_daily_runs rolled up at write time

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-04

With the figures stored per run (0009), bi_daily_runs still grouped every run on every query:
~0.5 s at a million runs on 2 cores, ~5 s at ten million. Now each statement that writes
`runs` adds its effect to daily_run_counts, one row per (day, use case, status, annotation)
it changed: +1 for a run as it is now, -1 for it as it was. Statement-level triggers with
transition tables, so a batch of 200 runs adds a few rows in one INSERT, and only INSERTs:
concurrent writers never wait on each other's counts. The rows are summed by the view and
compacted (ingest.rollup) from time to time by the worker and sync.

Every writer of `runs` is counted: fetches, discovery, reprocess, and hand edits or deletes;
TRUNCATE empties the counts. Durations are summed in microseconds (bigint) so that adding and
taking away a run leaves no rounding behind.

The trigger function runs as the schema's owner (SECURITY DEFINER, its search_path pinned to
this schema), so a worker role granted before this migration added the table writes its
counts without a new grant.

bi_daily_runs keeps its columns, their types, its grants and its comments (CREATE OR REPLACE).
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_TABLE_COMMENT = (
    "What bi_daily_runs sums: changes to runs per UTC day, use case, status and annotation,"
    " written by triggers on runs and compacted by the worker. Read bi_daily_runs instead."
)
_FIGURE_COMMENTS = (
    ("runs", "Runs added (negative: taken away)."),
    ("duration_us", "Their durations (last event - first), microseconds."),
    ("durations", "How many of them have a duration."),
    ("runs_with_issues", "How many have an issue."),
    ("issues", "Their issues."),
    ("events", "Their events."),
)

# A run's contribution, the `sign` (+1 now, -1 before) applied to each figure.
_CONTRIBUTION = """
    SELECT
        ("timestamp" AT TIME ZONE 'UTC')::date AS day, use_case_id, status, annotation,
        {sign} AS runs,
        {sign} * (EXTRACT(EPOCH FROM last_event_at - first_event_at) * 1000000)::bigint
            AS duration_us,
        {sign} * (last_event_at - first_event_at IS NOT NULL)::int AS durations,
        {sign} * (issue_count > 0)::int AS runs_with_issues,
        {sign} * issue_count AS issues,
        {sign} * event_count AS events
    FROM {rows}"""
_SUMS = (
    "sum(runs), coalesce(sum(duration_us), 0), sum(durations), sum(runs_with_issues),"
    " sum(issues), sum(events)"
)
_KEY = "day, use_case_id, status, annotation"
_FIGURES = "runs, duration_us, durations, runs_with_issues, issues, events"
# A group whose every figure nets to zero (a relisted run, an unchanged refetch) adds no row.
_CHANGED = (
    "HAVING sum(runs) <> 0 OR sum(duration_us) <> 0 OR sum(durations) <> 0"
    " OR sum(runs_with_issues) <> 0 OR sum(issues) <> 0 OR sum(events) <> 0"
)


def _add(*parts: str) -> str:
    union = "\n    UNION ALL".join(parts)
    return (
        f"INSERT INTO daily_run_counts ({_KEY}, {_FIGURES})\n"
        f"    SELECT {_KEY}, {_SUMS} FROM ({union}\n    ) AS d\n"
        f"    GROUP BY {_KEY} {_CHANGED};"
    )


NOW = _CONTRIBUTION.format(sign=1, rows="new_rows")
BEFORE = _CONTRIBUTION.format(sign=-1, rows="old_rows")

FUNCTION = f"""
CREATE FUNCTION daily_run_counts_add() RETURNS trigger LANGUAGE plpgsql
SECURITY DEFINER SET search_path FROM CURRENT AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        {_add(NOW)}
    ELSIF TG_OP = 'UPDATE' THEN
        {_add(NOW, BEFORE)}
    ELSIF TG_OP = 'DELETE' THEN
        {_add(BEFORE)}
    ELSE
        DELETE FROM daily_run_counts;
    END IF;
    RETURN NULL;
END
$$
"""

TRIGGERS = (
    ("runs_count_insert", "AFTER INSERT ON runs REFERENCING NEW TABLE AS new_rows"),
    (
        "runs_count_update",
        "AFTER UPDATE ON runs REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows",
    ),
    ("runs_count_delete", "AFTER DELETE ON runs REFERENCING OLD TABLE AS old_rows"),
    ("runs_count_truncate", "AFTER TRUNCATE ON runs"),
)

BI_DAILY_RUNS = """
CREATE OR REPLACE VIEW bi_daily_runs AS
SELECT
    d.day,
    d.use_case_id,
    d.status,
    d.annotation,
    sum(d.runs)::bigint AS runs,
    (sum(d.duration_us)::double precision / nullif(sum(d.durations), 0) / 1e6)
        AS avg_duration_s,
    sum(d.runs_with_issues)::bigint AS runs_with_issues,
    sum(d.issues)::bigint AS issues,
    sum(d.events)::bigint AS events,
    uc.name AS use_case_name
FROM daily_run_counts AS d
LEFT JOIN use_cases AS uc ON uc.id = d.use_case_id
GROUP BY d.day, d.use_case_id, d.status, d.annotation, uc.name
HAVING sum(d.runs) <> 0
"""


def upgrade() -> None:
    op.create_table(
        "daily_run_counts",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=True), nullable=False),
        sa.Column("day", sa.Date(), comment="UTC day of the runs' timestamp."),
        sa.Column("use_case_id", sa.UUID(), comment="Use case (use_cases.id)."),
        sa.Column("status", sa.Text(), comment="Run status."),
        sa.Column("annotation", sa.Text(), comment="Run annotation."),
        *(
            sa.Column(name, sa.BigInteger(), nullable=False, comment=comment)
            for name, comment in _FIGURE_COMMENTS
        ),
        sa.PrimaryKeyConstraint("id", name="pk_daily_run_counts"),
        comment=_TABLE_COMMENT,
    )
    op.execute("COMMENT ON COLUMN daily_run_counts.id IS 'Row id.'")
    op.create_index("ix_daily_run_counts_day", "daily_run_counts", ["day"])
    op.execute(FUNCTION)
    for name, when in TRIGGERS:
        op.execute(
            f"CREATE TRIGGER {name} {when} FOR EACH STATEMENT"
            " EXECUTE FUNCTION daily_run_counts_add()"
        )
    # The runs stored so far, counted once: one row per group.
    op.execute(_add(_CONTRIBUTION.format(sign=1, rows="runs")))
    op.execute(BI_DAILY_RUNS)


def downgrade() -> None:
    script = op.get_context().script
    assert script is not None
    op.execute(script.get_revision("0004").module.BI_DAILY_RUNS)
    for name, _ in reversed(TRIGGERS):
        op.execute(f"DROP TRIGGER {name} ON runs")
    op.execute("DROP FUNCTION daily_run_counts_add()")
    op.execute("DROP TABLE daily_run_counts")
