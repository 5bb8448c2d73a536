"""The daily counts the bi_daily_* views sum (daily_run_counts, daily_call_counts,
daily_tool_counts, daily_issue_counts): compacted to one row per group.

Triggers (migrations 0011, 0012) add a few rows per statement that writes runs, sessions or
issues; left alone, the tables would grow by thousands of rows a day and the views would slow
down with them. A compaction replaces the rows it sees by their sums, one statement per table:
rows added meanwhile by other transactions are not in its snapshot and stay as they are, so
nothing is counted twice or lost, and no lock is taken that a writer would wait on. Any number
of processes may run it.
"""

from __future__ import annotations

from typing import cast

from ingest.db.driver import Db

# The daily counts tables; their compaction is the database function compact_daily_counts
# (migration 0012), which runs as the schema's owner: a worker role needs no grant on them.
TABLES = ("daily_run_counts", "daily_call_counts", "daily_tool_counts", "daily_issue_counts")

# Often enough that the table stays at a few thousand rows during a backfill; a compaction of
# that many takes a few ms.
EVERY_S = 60.0


async def compact(db: Db) -> int:
    """Compact every daily counts table (in the caller's transaction); returns the rows left."""
    return cast(int, await db.fetchval("SELECT compact_daily_counts()"))
