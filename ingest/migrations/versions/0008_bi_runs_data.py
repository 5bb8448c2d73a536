"""bi_runs.data: the organization's run-table variables, for dashboards

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-04

`data` (load id, rate, booked, ... as the use case's `run_columns` name them) was in `runs` but
not in the view dashboards read. Added last with CREATE OR REPLACE, which keeps the grants a
BI role has on bi_runs and the views built on it. A downgrade cannot take a column away that
way: it drops bi_daily_runs and bi_runs and makes them again as 0004 left them, with 0007's
comments (grants given on them since are lost, as in 0004's downgrade).
"""

from collections.abc import Sequence
from types import ModuleType

from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_FROM = "\nFROM runs AS r\n"
DATA_COMMENT = (
    "The organization's run-table variables (load id, rate, ...), a JSON object keyed by the"
    " names in use_cases.run_columns; bi_runs.data->>'name' reads one."
)


def _revision(name: str) -> ModuleType:
    """A revision as alembic loaded it: its frozen SQL is what this one builds on."""
    script = op.get_context().script
    assert script is not None, "alembic runs migrations with their script directory"
    return script.get_revision(name).module


def upgrade() -> None:
    bi_runs = _revision("0004").BI_RUNS
    assert bi_runs.count(_FROM) == 1
    op.execute(bi_runs.replace(_FROM, ",\n    r.data" + _FROM))
    op.execute("COMMENT ON COLUMN bi_runs.data IS '" + DATA_COMMENT.replace("'", "''") + "'")


def downgrade() -> None:
    op.execute("DROP VIEW bi_daily_runs")
    op.execute("DROP VIEW bi_runs")
    v0004 = _revision("0004")
    op.execute(v0004.BI_RUNS)
    op.execute(v0004.BI_DAILY_RUNS)
    for target, text in _revision("0007").COMMENTS:
        if target.split()[1].split(".")[0] in ("bi_runs", "bi_daily_runs"):
            op.execute(f"COMMENT ON {target} IS '" + text.replace("'", "''") + "'")
