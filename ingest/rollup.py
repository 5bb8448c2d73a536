"""daily_run_counts, the rows bi_daily_runs sums: compacted to one row per group.

Triggers on `runs` (migration 0011) add a few rows per statement that writes runs; left alone,
the table would grow by thousands of rows a day and the view would slow down with it. A
compaction replaces the rows it sees by their sums, in one statement: rows added meanwhile by
other transactions are not in its snapshot and stay as they are, so nothing is counted twice
or lost, and no lock is taken that a writer would wait on. Any number of processes may run it.
"""

from __future__ import annotations

from ingest.db.driver import Db

_KEY = "day, use_case_id, status, annotation"
_FIGURES = ("runs", "duration_us", "durations", "runs_with_issues", "issues", "events")

COMPACT = f"""
WITH gone AS (DELETE FROM daily_run_counts RETURNING *)
INSERT INTO daily_run_counts ({_KEY}, {", ".join(_FIGURES)})
SELECT {_KEY}, {", ".join(f"sum({f})" for f in _FIGURES)} FROM gone
GROUP BY {_KEY}
HAVING {" OR ".join(f"sum({f}) <> 0" for f in _FIGURES)}
"""

# Often enough that the table stays at a few thousand rows during a backfill; a compaction of
# that many takes a few ms.
EVERY_S = 60.0


async def compact(db: Db) -> int:
    """Compact daily_run_counts (in the caller's transaction); returns the rows it left."""
    status = await db.execute(COMPACT)
    return int(status.split()[-1])
