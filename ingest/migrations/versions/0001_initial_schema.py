"""initial schema

Revision ID: 0001
Revises:
Create Date: 2026-11-29

Every table of the product. Why each index exists is said beside it.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "dead_letters",
        sa.Column("run_id", sa.UUID(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("http_status", sa.Integer(), nullable=True),
        sa.Column("body", sa.LargeBinary(), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.PrimaryKeyConstraint("run_id", name=op.f("pk_dead_letters")),
    )
    op.create_table(
        "discovery_windows",
        sa.Column("scope", sa.Text(), nullable=False),
        sa.Column("window_start", sa.DateTime(timezone=True), nullable=False),
        sa.Column("window_end", sa.DateTime(timezone=True), nullable=False),
        sa.Column("runs_found", sa.Integer(), nullable=False),
        sa.Column(
            "finished_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.PrimaryKeyConstraint("scope", "window_start", name=op.f("pk_discovery_windows")),
    )
    op.create_table(
        "ingest_batches",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column(
            "at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False
        ),
        sa.Column("worker", sa.Text(), nullable=False),
        sa.Column("runs_done", sa.Integer(), nullable=False),
        sa.Column("runs_failed", sa.Integer(), nullable=False),
        sa.Column("rows_written", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_ingest_batches")),
    )
    # status and the status page read the last minutes/hour of batches.
    op.create_index("ix_ingest_batches_at", "ingest_batches", ["at"], unique=False)
    op.create_table(
        "ingest_queue",
        sa.Column("run_id", sa.UUID(), nullable=False),
        sa.Column("state", sa.Text(), server_default=sa.text("'pending'"), nullable=False),
        sa.Column("attempts", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column(
            "available_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column("lease_owner", sa.Text(), nullable=True),
        sa.Column("lease_expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("priority", sa.SmallInteger(), server_default=sa.text("0"), nullable=False),
        sa.Column("source", sa.Text(), server_default=sa.text("'manual'"), nullable=False),
        sa.Column(
            "refresh_requested", sa.Boolean(), server_default=sa.text("false"), nullable=False
        ),
        sa.Column(
            "awaiting_terminal", sa.Boolean(), server_default=sa.text("false"), nullable=False
        ),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column(
            "updated_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint(
            "state IN ('pending', 'running', 'done', 'dead')",
            name=op.f("ck_ingest_queue_state_known"),
        ),
        sa.PrimaryKeyConstraint("run_id", name=op.f("pk_ingest_queue")),
    )
    # The claim query: pending rows by priority then due time. Partial, so done rows
    # (nearly all of them after a backfill) never slow the claim down.
    op.create_index(
        "ix_ingest_queue_due",
        "ingest_queue",
        [sa.literal_column("priority DESC"), "available_at"],
        unique=False,
        postgresql_where=sa.text("state = 'pending'"),
    )
    # status: throughput over recent minutes counts rows finished since a time.
    op.create_index("ix_ingest_queue_finished_at", "ingest_queue", ["finished_at"], unique=False)
    # Reclaiming expired leases of crashed workers: only running rows, by expiry.
    op.create_index(
        "ix_ingest_queue_lease",
        "ingest_queue",
        ["lease_expires_at"],
        unique=False,
        postgresql_where=sa.text("state = 'running'"),
    )
    op.create_table(
        "rate_limits",
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("tokens", sa.Double(), nullable=False),
        sa.Column("rate", sa.Double(), nullable=False),
        sa.Column("burst", sa.Double(), nullable=False),
        sa.Column("factor", sa.Double(), server_default=sa.text("1.0"), nullable=False),
        sa.Column("paused_until", sa.DateTime(timezone=True), nullable=True),
        sa.Column(
            "refilled_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_rate_limits")),
    )
    op.create_table(
        "runs",
        sa.Column("id", sa.UUID(), nullable=False),
        sa.Column("org_id", sa.UUID(), nullable=True),
        sa.Column("use_case_id", sa.UUID(), nullable=True),
        sa.Column("version_id", sa.UUID(), nullable=True),
        sa.Column("status", sa.Text(), nullable=True),
        sa.Column("annotation", sa.Text(), nullable=True),
        sa.Column("timestamp", sa.DateTime(timezone=True), nullable=True),
        sa.Column("completed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("data", postgresql.JSONB(astext_type=sa.Text()), nullable=True),
        sa.Column("fetched_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("payload_sha256", sa.Text(), nullable=True),
        sa.Column("listed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column(
            "updated_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_runs")),
    )
    # Dashboards: runs by status over time; sync: runs not terminal yet.
    op.create_index("ix_runs_status_timestamp", "runs", ["status", "timestamp"], unique=False)
    # Dashboards and discovery: runs in a time window, across use cases.
    op.create_index("ix_runs_timestamp", "runs", ["timestamp"], unique=False)
    # Dashboards: one use case's runs over time (the most common filter).
    op.create_index(
        "ix_runs_use_case_id_timestamp", "runs", ["use_case_id", "timestamp"], unique=False
    )
    # Joining runs to versions (bi_runs) and comparing versions.
    op.create_index("ix_runs_version_id", "runs", ["version_id"], unique=False)
    op.create_table(
        "sync_state",
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("watermark", sa.DateTime(timezone=True), nullable=True),
        sa.Column(
            "updated_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_sync_state")),
    )
    op.create_table(
        "versions",
        sa.Column("id", sa.UUID(), nullable=False),
        sa.Column("slug", sa.Text(), nullable=True),
        sa.Column("org_id", sa.UUID(), nullable=True),
        sa.Column("use_case_id", sa.UUID(), nullable=True),
        sa.Column("version_number", sa.Integer(), nullable=True),
        sa.Column("name", sa.Text(), nullable=True),
        sa.Column("is_published", sa.Boolean(), nullable=True),
        sa.Column("is_live", sa.Boolean(), nullable=True),
        sa.Column("source_version_id", sa.UUID(), nullable=True),
        sa.Column("timestamp", sa.DateTime(timezone=True), nullable=True),
        sa.Column("published_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("is_deleted", sa.Boolean(), nullable=True),
        sa.Column("description", sa.Text(), nullable=True),
        sa.Column("created_by", sa.UUID(), nullable=True),
        sa.Column("fetched_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_versions")),
    )
    op.create_table(
        "run_events",
        sa.Column("run_id", sa.UUID(), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("type", sa.Text(), nullable=True),
        sa.Column("timestamp", sa.DateTime(timezone=True), nullable=True),
        sa.Column("integration_name", sa.Text(), nullable=True),
        sa.Column("event_name", sa.Text(), nullable=True),
        sa.Column("node_id", sa.Text(), nullable=True),
        sa.Column("output", postgresql.JSONB(astext_type=sa.Text()), nullable=True),
        # No foreign key to runs (nor from event_intermediates to run_events), on purpose:
        # ~30 rows per run each, and the per-row FK triggers halved the write rate. The store
        # writes them only in the transaction that upserts their run, and deletes them
        # explicitly before writing a run again (no ON DELETE CASCADE).
        sa.PrimaryKeyConstraint("run_id", "seq", name=op.f("pk_run_events")),
    )
    op.create_table(
        "run_issues",
        sa.Column("id", sa.UUID(), nullable=False),
        sa.Column("use_case_id", sa.UUID(), nullable=True),
        sa.Column("org_id", sa.UUID(), nullable=True),
        sa.Column("run_id", sa.UUID(), nullable=False),
        sa.Column("run_version_id", sa.UUID(), nullable=True),
        sa.Column("status", sa.Text(), nullable=True),
        sa.Column("priority", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("type", sa.Text(), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("assignee", sa.UUID(), nullable=True),
        sa.Column("created_by", sa.UUID(), nullable=True),
        sa.Column("updated_by", sa.UUID(), nullable=True),
        sa.Column("message_id", sa.UUID(), nullable=True),
        sa.Column("correction", sa.Text(), nullable=True),
        sa.Column("correction_reason", sa.Text(), nullable=True),
        sa.Column("northstar_id", sa.UUID(), nullable=True),
        sa.ForeignKeyConstraint(
            ["run_id"], ["runs.id"], name=op.f("fk_run_issues_run_id_runs"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_run_issues")),
    )
    # Replacing one run's issues on re-ingest, and issues of a run in dashboards.
    op.create_index("ix_run_issues_run_id", "run_issues", ["run_id"], unique=False)
    # Dashboards: open/high-priority issue queues.
    op.create_index(
        "ix_run_issues_status_priority", "run_issues", ["status", "priority"], unique=False
    )
    op.create_table(
        "run_payloads",
        sa.Column("run_id", sa.UUID(), nullable=False),
        sa.Column("body", sa.LargeBinary(), nullable=False),
        sa.Column("sha256", sa.Text(), nullable=False),
        sa.Column("fetched_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column(
            "drift",
            postgresql.JSONB(astext_type=sa.Text()),
            server_default=sa.text("'[]'::jsonb"),
            nullable=False,
        ),
        sa.ForeignKeyConstraint(
            ["run_id"], ["runs.id"], name=op.f("fk_run_payloads_run_id_runs"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("run_id", name=op.f("pk_run_payloads")),
    )
    # The ~27 KiB body is stored out of line but not compressed: pglz (the only TOAST codec
    # every server has) was ~2/3 of the cost of writing a payload (~0.1 s of server CPU per 200
    # runs), for ~3.3x less disk (~8.6 vs ~28.7 KiB per run). docs/payload-policy.md has the
    # figures and how to switch to pglz or lz4. Autogenerate does not compare storage.
    op.execute("ALTER TABLE run_payloads ALTER COLUMN body SET STORAGE EXTERNAL")
    op.create_table(
        "event_intermediates",
        sa.Column("run_id", sa.UUID(), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("id", sa.UUID(), nullable=True),
        sa.Column("node_id", sa.UUID(), nullable=True),
        sa.Column("event_id", sa.UUID(), nullable=True),
        sa.Column("session_id", sa.UUID(), nullable=True),
        sa.Column("name", sa.Text(), nullable=True),
        sa.Column("data", postgresql.JSONB(astext_type=sa.Text()), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("timestamp", sa.DateTime(timezone=True), nullable=True),
        # No foreign key to run_events: see run_events.
        sa.PrimaryKeyConstraint("run_id", "seq", name=op.f("pk_event_intermediates")),
    )


def downgrade() -> None:
    op.drop_table("event_intermediates")
    op.drop_table("run_payloads")
    op.drop_index("ix_run_issues_status_priority", table_name="run_issues")
    op.drop_index("ix_run_issues_run_id", table_name="run_issues")
    op.drop_table("run_issues")
    op.drop_table("run_events")
    op.drop_table("versions")
    op.drop_table("sync_state")
    op.drop_index("ix_runs_version_id", table_name="runs")
    op.drop_index("ix_runs_use_case_id_timestamp", table_name="runs")
    op.drop_index("ix_runs_timestamp", table_name="runs")
    op.drop_index("ix_runs_status_timestamp", table_name="runs")
    op.drop_table("runs")
    op.drop_table("rate_limits")
    op.drop_index(
        "ix_ingest_queue_lease",
        table_name="ingest_queue",
        postgresql_where=sa.text("state = 'running'"),
    )
    op.drop_index("ix_ingest_queue_finished_at", table_name="ingest_queue")
    op.drop_index(
        "ix_ingest_queue_due",
        table_name="ingest_queue",
        postgresql_where=sa.text("state = 'pending'"),
    )
    op.drop_table("ingest_queue")
    op.drop_index("ix_ingest_batches_at", table_name="ingest_batches")
    op.drop_table("ingest_batches")
    op.drop_table("discovery_windows")
    op.drop_table("dead_letters")
