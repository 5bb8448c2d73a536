"""sync_state.failures, failed_at, last_error: a sync that keeps failing is visible

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-04

`status`, the status page and the metrics show how fresh the tables are: the last successful
sync (its watermark) and, when syncs fail, how many times in a row, since when and why.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column(
        "sync_state",
        sa.Column("failures", sa.Integer(), server_default=sa.text("0"), nullable=False),
    )
    op.add_column("sync_state", sa.Column("failed_at", sa.DateTime(timezone=True)))
    op.add_column("sync_state", sa.Column("last_error", sa.Text()))


def downgrade() -> None:
    op.drop_column("sync_state", "last_error")
    op.drop_column("sync_state", "failed_at")
    op.drop_column("sync_state", "failures")
