"""The summary `demo` prints: speed, rows per table, dead letters, a dashboard query."""

from __future__ import annotations

from typing import TYPE_CHECKING, cast

from sqlalchemy.ext.asyncio import AsyncEngine

from ingest import queue
from ingest.db.driver import driver_connection
from ingest.logs import scrub

if TYPE_CHECKING:
    from ingest.worker import WorkerStats

TABLES = (
    "runs",
    "versions",
    "run_events",
    "event_intermediates",
    "run_sessions",
    "session_messages",
    "message_tool_calls",
    "run_issues",
    "run_payloads",
    "use_cases",
    "usage",
)

# What a voice-agent dashboard opens with: per use case, how many calls connected, how long
# they talked, how soon the agent spoke, how slow its LLM was at the 95th percentile.
EXAMPLE_QUERY = """\
SELECT use_case_name, sum(calls) AS calls,
       round(100.0 * sum(connected) / sum(calls), 1) AS connected_pct,
       round(sum(talk_s) / nullif(sum(talks), 0))::int AS avg_talk_s,
       round((sum(first_word_s) / nullif(sum(first_words), 0))::numeric, 2) AS first_word_s,
       round(sum(latency_llm_p95_ms) / nullif(sum(latency_llm_p95s), 0))::int AS llm_p95_ms,
       sum(tool_calls) AS tool_calls
FROM bi_daily_calls
GROUP BY use_case_name
ORDER BY calls DESC"""


async def print_summary(engine: AsyncEngine, stats: WorkerStats) -> None:
    async with engine.connect() as conn:
        db = await driver_connection(conn)
        counts = {t: cast(int, await db.fetchval(f"SELECT count(*) FROM {t}")) for t in TABLES}
        states = (await queue.counts(conn)).states
        dead = await queue.latest_dead(conn, 5)
        records = await db.fetch(EXAMPLE_QUERY)
    headers = list(records[0].keys()) if records else []
    example = [list(r) for r in records]
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
    print("queue: " + ", ".join(f"{k} {v}" for k, v in sorted(states.items()) if v))
    print("rows per table:")
    for t, n in counts.items():
        print(f"  {t:<22}{n:>10,}")
    if dead:
        print("dead letters (latest 5):")
        for d in dead:
            print(f"  {d.run_id}  {scrub(d.reason)}")
    print(
        "\nan example dashboard query (the bi_* views are made for Metabase, Superset, Grafana):\n"
    )
    print("  " + EXAMPLE_QUERY.replace("\n", "\n  "))
    print()
    cells = [[("-" if v is None else str(v)) for v in row] for row in example]
    widths = [max(len(x) for x in col) for col in zip(headers, *cells, strict=False)]
    for row in [headers, *cells]:
        print("  " + "  ".join(v.ljust(w) for v, w in zip(row, widths, strict=False)).rstrip())
