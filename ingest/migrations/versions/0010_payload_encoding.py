"""run_payloads.encoding: raw bodies compressed with zstd by the worker

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-04

New bodies are stored zstd-compressed (ingest.archive); the ones already stored stay as they
are, `identity`, and are rewritten compressed by `hr-ingest reprocess` (which writes every
payload again). No table rewrite here: adding a column with a constant default is instant.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_COMMENTS = {
    "body": "The GET /runs/{id} response body, byte for byte, stored as encoding says"
    " (hr-ingest payload RUN_ID prints it).",
    "sha256": "SHA-256 (hex) of the body as received.",
}
_OLD_COMMENTS = {
    "body": "The GET /runs/{id} response body as received (bytes).",
    "sha256": "SHA-256 (hex) of body.",
}


def _comment(comments: dict[str, str]) -> None:
    for column, text in comments.items():
        escaped = text.replace("'", "''")
        op.execute(f"COMMENT ON COLUMN run_payloads.{column} IS '{escaped}'")


def upgrade() -> None:
    op.add_column(
        "run_payloads",
        sa.Column(
            "encoding",
            sa.Text(),
            nullable=False,
            server_default=sa.text("'identity'"),
            comment="zstd (compressed by hr-ingest) or identity (as received; stored before"
            " migration 0010).",
        ),
    )
    _comment(_COMMENTS)


def downgrade() -> None:
    # Refused while compressed bodies are stored: a release before 0010 would read them as
    # JSON and refuse every one on reprocess.
    op.execute(
        "DO $$ BEGIN IF EXISTS (SELECT 1 FROM run_payloads WHERE encoding <> 'identity') THEN"
        " RAISE EXCEPTION 'run_payloads holds zstd-compressed bodies, which revisions before"
        " 0010 cannot read: delete them (hr-ingest prune --older-than 0) before downgrading';"
        " END IF; END $$"
    )
    op.drop_column("run_payloads", "encoding")
    _comment(_OLD_COMMENTS)
