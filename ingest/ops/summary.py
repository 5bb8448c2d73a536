"""The summary `demo` prints: speed, rows per table, dead letters, a dashboard query."""

from __future__ import annotations

from typing import TYPE_CHECKING

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

if TYPE_CHECKING:
    from ingest.worker import WorkerStats

TABLES = ("runs", "versions", "run_events", "event_intermediates", "run_issues", "run_payloads")

EXAMPLE_QUERY = """\
SELECT status, count(*) AS runs,
       round(avg(n_events), 1) AS avg_events
FROM runs
JOIN (SELECT run_id, count(*) AS n_events FROM run_events GROUP BY run_id) e
  ON e.run_id = runs.id
GROUP BY status ORDER BY runs DESC"""


async def print_summary(engine: AsyncEngine, stats: WorkerStats) -> None:
    async with engine.connect() as conn:
        counts = {
            t: (await conn.execute(text(f"SELECT count(*) FROM {t}"))).scalar_one() for t in TABLES
        }
        states: dict[str, int] = dict(
            (await conn.execute(text("SELECT state, count(*) FROM ingest_queue GROUP BY 1"))).all()
        )
        dead = (
            await conn.execute(
                text("SELECT run_id, reason FROM dead_letters ORDER BY created_at LIMIT 5")
            )
        ).all()
        example = (await conn.execute(text(EXAMPLE_QUERY))).all()
    elapsed = max(stats.elapsed, 1e-9)
    print()
    print(
        f"ingested {stats.done} runs in {elapsed:.1f}s: {stats.done / elapsed:,.0f} runs/s,"
        f" {stats.rows / elapsed:,.0f} rows/s"
    )
    print(
        f"retries: {stats.retried}, dead letters: {stats.dead},"
        f" runs still in progress upstream (polled again later): {stats.polled}"
    )
    print("queue: " + ", ".join(f"{k} {v}" for k, v in sorted(states.items())))
    print("rows per table:")
    for t, n in counts.items():
        print(f"  {t:<22}{n:>10,}")
    if dead:
        print("dead letters (first 5):")
        for run_id, reason in dead:
            print(f"  {run_id}  {reason}")
    print("\nan example dashboard query:\n")
    print("  " + EXAMPLE_QUERY.replace("\n", "\n  "))
    print()
    for row in example:
        print("  " + "  ".join(str(v) for v in row))
