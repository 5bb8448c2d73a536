"""dead_letters.kind: what went wrong, as a stable kind (ingest.failures.FailureKind)

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-04

`status` and the status page group dead letters by this column instead of cutting the reason
text apart. Rows written before it get a kind guessed from their reason, as the worker worded
reasons up to this revision (best effort: a reason that matches nothing below is counted as a
connection failure, the one kind whose wording was the exception's own). New rows get their
kind from the worker, which knows it.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Frozen here, like every migration's SQL: the kinds as they are named at this revision. The
# first match wins; reasons then began with "HTTP <status>: " for any API answer, with a fixed
# prefix for the other failures, or with the client's own words for a transfer fault.
_BACKFILL = r"""
UPDATE dead_letters SET kind = CASE
    WHEN reason ~ ('^payload rejected: (invalid JSON|invalid UTF-8|body is not a JSON object'
        || '|value nests deeper|JSON nests deeper)') THEN 'invalid_body'
    WHEN reason LIKE 'payload rejected:%' THEN 'payload_rejected'
    WHEN reason LIKE 'normalize error:%' THEN 'normalize_error'
    WHEN reason LIKE 'store error:%' THEN 'store_error'
    WHEN reason LIKE 'invalid run id:%' THEN 'invalid_run_id'
    WHEN reason LIKE 'unexpected:%' THEN 'unexpected'
    WHEN reason LIKE 'HTTP 404:%' THEN 'not_found'
    WHEN reason LIKE 'HTTP 408:%' THEN 'timeout'
    WHEN reason LIKE 'HTTP 429:%' THEN 'rate_limited'
    WHEN reason ~ '^HTTP 4[0-9][0-9]:' THEN 'http_4xx'
    WHEN reason ~ '^HTTP 5[0-9][0-9]:' THEN 'http_5xx'
    WHEN reason ~ '^HTTP 2[0-9][0-9]:' THEN 'cut_transfer'
    WHEN reason ~ '^HTTP [0-9]+:' THEN 'unexpected_status'
    WHEN reason LIKE 'timed out%' THEN 'timeout'
    WHEN reason LIKE 'ClientPayloadError:%' THEN 'cut_transfer'
    ELSE 'connection'
END
"""


def upgrade() -> None:
    op.add_column("dead_letters", sa.Column("kind", sa.Text(), nullable=True))
    op.execute(_BACKFILL)
    op.alter_column("dead_letters", "kind", nullable=False)


def downgrade() -> None:
    op.drop_column("dead_letters", "kind")
