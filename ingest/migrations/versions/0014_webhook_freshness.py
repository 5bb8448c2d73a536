"""Freshness of each landed run, and faster polls of runs a webhook announced

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-04

- ingest_queue.landed_at / freshness_s: when the worker first stored the run finished upstream,
  and how long after its completed_at that was; `status` shows their p50/p95 over the last
  hour by `source`, and the worker's /metrics a histogram. A re-fetch of a run stored finished
  before (a refresh, change capture) is not a landing. Rows from before stay null.
- ingest_queue.polls: how many times in a row the run was stored still unfinished, so that a
  run announced by a webhook is polled again after 5 s, 10 s, 20 s, ... up to the usual minute.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0014"
down_revision: str | None = "0013"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column(
        "ingest_queue",
        sa.Column(
            "polls",
            sa.SmallInteger(),
            nullable=False,
            server_default=sa.text("0"),
            comment="Fetches in a row that found the run not finished upstream yet.",
        ),
    )
    op.add_column(
        "ingest_queue",
        sa.Column(
            "landed_at",
            sa.DateTime(timezone=True),
            comment="When the run was first stored finished upstream (UTC); null before 0014.",
        ),
    )
    op.add_column(
        "ingest_queue",
        sa.Column(
            "freshness_s",
            sa.Double(),
            comment="landed_at - the run's completed_at, seconds: how long after the call ended"
            " it was in the tables.",
        ),
    )
    op.alter_column(
        "ingest_queue",
        "source",
        comment="What enqueued it (last, when it was waiting or done): manual, backfill,"
        " sync, webhook.",
        existing_comment="What enqueued it: manual, backfill, sync.",
        existing_type=sa.Text(),
        existing_nullable=False,
    )
    op.create_index(
        "ix_ingest_queue_landed_at",
        "ingest_queue",
        ["landed_at"],
        postgresql_where=sa.text("landed_at IS NOT NULL"),
    )


def downgrade() -> None:
    op.alter_column(
        "ingest_queue",
        "source",
        comment="What enqueued it: manual, backfill, sync.",
        existing_type=sa.Text(),
        existing_nullable=False,
    )
    op.drop_index("ix_ingest_queue_landed_at", "ingest_queue")
    op.drop_column("ingest_queue", "freshness_s")
    op.drop_column("ingest_queue", "landed_at")
    op.drop_column("ingest_queue", "polls")
