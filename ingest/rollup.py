"""The daily counts the bi_daily_* views sum (daily_run_counts, daily_call_counts,
daily_tool_counts, daily_issue_counts): compacted to one row per group.

Triggers (migrations 0011, 0012) add a few rows per statement that writes runs, sessions or
issues; left alone,
the table would grow by thousands of rows a day and the view would slow down with it. A
compaction replaces the rows it sees by their sums, in one statement: rows added meanwhile by
other transactions are not in its snapshot and stay as they are, so nothing is counted twice
or lost, and no lock is taken that a writer would wait on. Any number of processes may run it.
"""

from __future__ import annotations

from ingest.db import tables
from ingest.db.driver import Db

# Each rollup table (ingest.db.tables) by its key columns; the rest but `id` are its sums.
KEYS = {
    "daily_run_counts": ("day", "use_case_id", "status", "annotation"),
    "daily_call_counts": ("day", "use_case_id", "version_id"),
    "daily_tool_counts": ("day", "use_case_id", "tool_name"),
    "daily_issue_counts": ("day", "use_case_id", "version_id", "status"),
}


def _compact(table: str) -> str:
    keys = ", ".join(KEYS[table])
    figures = [
        c.name for c in tables.metadata.tables[table].c if c.name not in ("id", *KEYS[table])
    ]
    return f"""
WITH gone AS (DELETE FROM {table} RETURNING *)
INSERT INTO {table} ({keys}, {", ".join(figures)})
SELECT {keys}, {", ".join(f"sum({f})" for f in figures)} FROM gone
GROUP BY {keys}
HAVING {" OR ".join(f"sum({f}) <> 0" for f in figures)}
"""


COMPACT = {table: _compact(table) for table in KEYS}

# Often enough that the table stays at a few thousand rows during a backfill; a compaction of
# that many takes a few ms.
EVERY_S = 60.0


async def compact(db: Db) -> int:
    """Compact every rollup (in the caller's transaction); returns the rows they hold."""
    left = 0
    for statement in COMPACT.values():
        status = await db.execute(statement)
        left += int(status.split()[-1])
    return left
