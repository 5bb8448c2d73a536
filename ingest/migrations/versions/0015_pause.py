"""Pause and resume: one row every worker reads before it claims

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-04

- ingest_control: a single row; `paused_at` set means no worker claims a run (`hr-ingest
  pause`), cleared by `hr-ingest resume`. Enqueueing (sync, webhook, discover) goes on.
- ingest_paused(): the pause, if any, read with the owner's rights: workers call it in every
  claim, and a worker role granted before this table existed must not start failing its claims.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0015"
down_revision: str | None = "0014"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

PAUSED = """
CREATE FUNCTION ingest_paused()
RETURNS TABLE (paused_at timestamptz, paused_by text, reason text)
LANGUAGE sql STABLE SECURITY DEFINER SET search_path FROM CURRENT AS $$
    SELECT c.paused_at, c.paused_by, c.reason FROM ingest_control c
    WHERE c.id = 1 AND c.paused_at IS NOT NULL
$$"""


def upgrade() -> None:
    op.create_table(
        "ingest_control",
        sa.Column(
            "id",
            sa.SmallInteger(),
            nullable=False,
            server_default=sa.text("1"),
            comment="Always 1: there is one row.",
        ),
        sa.Column(
            "paused_at",
            sa.DateTime(timezone=True),
            comment="Since when workers claim nothing (UTC); null: they claim.",
        ),
        sa.Column("paused_by", sa.Text(), comment="Who paused: user@host of the pause command."),
        sa.Column("reason", sa.Text(), comment="Why, as the pause command was given it."),
        sa.Column(
            "updated_at",
            sa.DateTime(timezone=True),
            nullable=False,
            server_default=sa.text("now()"),
            comment="When the row last changed (UTC): the last pause or resume.",
        ),
        sa.CheckConstraint("id = 1", name=op.f("ck_ingest_control_one_row")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_ingest_control")),
        comment="Operator controls: a pause of every worker's claims.",
    )
    op.execute(PAUSED)


def downgrade() -> None:
    op.execute("DROP FUNCTION ingest_paused()")
    op.drop_table("ingest_control")
