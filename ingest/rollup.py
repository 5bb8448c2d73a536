"""The daily counts the bi_daily_* views sum (daily_run_counts, daily_call_counts,
daily_tool_counts, daily_issue_counts), compacted to one row per group, and the daily call
percentiles (daily_call_percentiles), recomputed for the days a write touched.

Triggers (migrations 0011, 0012) add a few rows per statement that writes runs, sessions or
issues; left alone, the tables would grow by thousands of rows a day and the views would slow
down with them. A compaction replaces the rows it sees by their sums, one statement per table:
rows added meanwhile by other transactions are not in its snapshot and stay as they are, so
nothing is counted twice or lost, and no lock is taken that a writer would wait on. Any number
of processes may run it.

Percentiles do not add up: triggers list the days whose calls changed (stale_call_days), and
refresh_call_percentiles (migration 0013) recomputes them from run_sessions, the most recent
days first. Refreshes wait on each other (never on writers), so a day is never written twice.
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


# Days of percentiles one refresh recomputes at most, the most recent first: a day of 30,000
# calls takes ~0.1 s, so a backfill that touches every day holds the writer < 1 s a minute;
# the older days follow in the next minutes.
REFRESH_DAYS = 7
EVERY_DAY = 2**31 - 1


async def compact(db: Db, refresh_days: int = REFRESH_DAYS) -> int:
    """Compact every daily counts table and refresh up to `refresh_days` days of percentiles
    (EVERY_DAY: all), in the caller's transaction; returns the counts rows left."""
    left = cast(int, await db.fetchval("SELECT compact_daily_counts()"))
    await db.fetchval("SELECT refresh_call_percentiles($1)", refresh_days)
    return left
