"""the whole run: sessions, messages, tool calls, use cases, usage

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-03

What the API's current shape adds (happyrobot-api.md): `session` events (one per call or chat)
with their transcript and the tools each turn called, `versions.environment`,
`event_intermediates.data_deleted`, and the catalog endpoints' use cases and usage.

Adds columns and tables only, so it upgrades a populated database in place without touching
the views (which read none of the new columns). Existing runs get their sessions from the
payloads they already stored: `hr-ingest reprocess`, no API call.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _ts(name: str, nullable: bool = True) -> sa.Column:  # type: ignore[type-arg]
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def upgrade() -> None:
    op.add_column("versions", sa.Column("environment", sa.Text(), nullable=True))
    op.add_column("event_intermediates", sa.Column("data_deleted", sa.Boolean(), nullable=True))
    op.create_table(
        "run_sessions",
        sa.Column("run_id", sa.UUID(), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("id", sa.Text(), nullable=True),
        _ts("timestamp"),
        sa.Column("duration", sa.Double(), nullable=True),
        sa.Column("sip_code", sa.Text(), nullable=True),
        sa.Column("sip_reason", sa.Text(), nullable=True),
        sa.Column("actions", postgresql.JSONB(astext_type=sa.Text()), nullable=True),
        sa.PrimaryKeyConstraint("run_id", "seq", name=op.f("pk_run_sessions")),
    )
    # Dashboards ask for "calls in this period" far more often than for one run's calls.
    op.create_index("ix_run_sessions_timestamp", "run_sessions", ["timestamp"], unique=False)
    op.create_table(
        "session_messages",
        sa.Column("run_id", sa.UUID(), nullable=False),
        sa.Column("session_seq", sa.Integer(), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("id", sa.UUID(), nullable=True),
        sa.Column("session_id", sa.UUID(), nullable=True),
        sa.Column("chat_session_id", sa.UUID(), nullable=True),
        sa.Column("role", sa.Text(), nullable=True),
        sa.Column("content", sa.Text(), nullable=True),
        sa.Column("name", sa.Text(), nullable=True),
        sa.Column("is_filler", sa.Boolean(), nullable=True),
        sa.Column("is_interrupted", sa.Boolean(), nullable=True),
        sa.Column("is_natural_cut", sa.Boolean(), nullable=True),
        _ts("timestamp"),
        sa.Column("data_deleted", sa.Boolean(), nullable=True),
        sa.Column("tool_calls", postgresql.JSONB(astext_type=sa.Text()), nullable=True),
        *(
            sa.Column(f"latency_{stage}", sa.Double(), nullable=True)
            for stage in ("network", "initial_wait", "transcriber", "eos", "eos_wait", "llm", "tts")
        ),
        sa.PrimaryKeyConstraint("run_id", "session_seq", "seq", name=op.f("pk_session_messages")),
    )
    op.create_table(
        "message_tool_calls",
        sa.Column("run_id", sa.UUID(), nullable=False),
        sa.Column("session_seq", sa.Integer(), nullable=False),
        sa.Column("message_seq", sa.Integer(), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("name", sa.Text(), nullable=True),
        sa.Column("arguments", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint(
            "run_id", "session_seq", "message_seq", "seq", name=op.f("pk_message_tool_calls")
        ),
    )
    op.create_table(
        "use_cases",
        sa.Column("id", sa.UUID(), nullable=False),
        sa.Column("org_id", sa.UUID(), nullable=True),
        sa.Column("name", sa.Text(), nullable=True),
        sa.Column("slug", sa.Text(), nullable=True),
        sa.Column("icon", sa.Text(), nullable=True),
        sa.Column("source_use_case_version_id", sa.UUID(), nullable=True),
        sa.Column("run_columns", postgresql.JSONB(astext_type=sa.Text()), nullable=True),
        _ts("timestamp"),
        sa.Column("data_retention_days", sa.Integer(), nullable=True),
        sa.Column("sort_order", sa.Integer(), nullable=True),
        _ts("refreshed_at", nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_use_cases")),
    )
    op.create_table(
        "usage",
        sa.Column("org_id", sa.UUID(), nullable=False),
        sa.Column("use_case_id", sa.UUID(), nullable=False),
        _ts("period_start", nullable=False),
        _ts("period_end", nullable=False),
        sa.Column("calls", sa.Integer(), nullable=True),
        sa.Column("minutes", sa.Double(), nullable=True),
        _ts("refreshed_at", nullable=False),
        sa.PrimaryKeyConstraint(
            "org_id", "use_case_id", "period_start", "period_end", name=op.f("pk_usage")
        ),
    )


def downgrade() -> None:
    op.drop_table("usage")
    op.drop_table("use_cases")
    op.drop_table("message_tool_calls")
    op.drop_table("session_messages")
    op.drop_index("ix_run_sessions_timestamp", table_name="run_sessions")
    op.drop_table("run_sessions")
    op.drop_column("event_intermediates", "data_deleted")
    op.drop_column("versions", "environment")
