"""BI views for dashboards: bi_runs, bi_daily_runs, bi_issues

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-29

Plain views (not materialized): always current, nothing to refresh, and PostgreSQL pushes a
dashboard's filters on runs (time, use case, status) down through them to the runs indexes.

The SQL is frozen here on purpose, not imported from the package: a migration must create what
its revision meant even after a later revision redefines a view. Names are unqualified, so the
views land in the configured schema (the connection's search_path), beside the tables.

Trap for later migrations: PostgreSQL refuses to drop or change the type of a column a view
reads. A migration that alters such a column drops the views first and recreates them after.
Alembic autogenerate does not reflect views, so they never show up as drift.
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Statuses after which an issue is settled; its last update is when it was settled.
_CLOSED = "('approved', 'rejected', 'closed')"

# Per-run aggregates are LATERAL subqueries, not a GROUP BY over all events: a dashboard that
# filters bi_runs to a day or a use case then only reads that run's events, through the
# primary key of run_events and ix_run_issues_run_id.
BI_RUNS = """
CREATE VIEW bi_runs AS
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
    EXTRACT(EPOCH FROM e.last_event_at - e.first_event_at)::double precision AS duration_s
FROM runs AS r
LEFT JOIN versions AS v ON v.id = r.version_id
CROSS JOIN LATERAL (
    SELECT
        count(*) AS event_count,
        min(ev."timestamp") AS first_event_at,
        max(ev."timestamp") AS last_event_at
    FROM run_events AS ev
    WHERE ev.run_id = r.id
) AS e
CROSS JOIN LATERAL (
    SELECT count(*) AS issue_count FROM run_issues AS ri WHERE ri.run_id = r.id
) AS i
"""

# Days are UTC days of the run's own timestamp (when it started), whatever the session's zone.
BI_DAILY_RUNS = """
CREATE VIEW bi_daily_runs AS
SELECT
    (b."timestamp" AT TIME ZONE 'UTC')::date AS day,
    b.use_case_id,
    b.status,
    b.annotation,
    count(*) AS runs,
    avg(b.duration_s) AS avg_duration_s,
    count(*) FILTER (WHERE b.issue_count > 0) AS runs_with_issues,
    sum(b.issue_count)::bigint AS issues,
    sum(b.event_count)::bigint AS events
FROM bi_runs AS b
GROUP BY 1, 2, 3, 4
"""

# The version is the one the issue names (run_version_id), else the run's. The use case is the
# issue's own, else the run's. Time to close only for settled issues: an open issue's
# updated_at is its last edit, not a close.
BI_ISSUES = f"""
CREATE VIEW bi_issues AS
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
    END AS time_to_close_s
FROM run_issues AS ri
JOIN runs AS r ON r.id = ri.run_id
LEFT JOIN versions AS v ON v.id = coalesce(ri.run_version_id, r.version_id)
"""

# Dependents after what they read: bi_daily_runs reads bi_runs.
VIEWS = (("bi_runs", BI_RUNS), ("bi_daily_runs", BI_DAILY_RUNS), ("bi_issues", BI_ISSUES))


def upgrade() -> None:
    for _, sql in VIEWS:
        op.execute(sql)


def downgrade() -> None:
    for name, _ in reversed(VIEWS):
        op.execute(f"DROP VIEW {name}")
