"""Dashboards at scale: the README's dashboard queries and a single-run lookup, timed on
databases of growing size, with the bytes each run takes per table.

    .venv/bin/python bench/bench_scale.py [--sizes 250000,500000,1000000] [--base 15625]
        [--days 35] [--database-url URL] [--keep]

How the database is built (say so when quoting the figures): `--base` runs of the simulator's
shape (the demo's runs: 4 use cases, one call each, spread over `--days`) go through the
product's own path, normalize + store_batch, so their figures, compressed payloads and daily
counts are what the worker writes; each gets a `done` queue row. That base is then doubled in
SQL until the largest size, each copy under new run and issue ids (md5 of the old id and the
round), every row of every table; the daily counts follow through their triggers, as for any
writer of `runs`. The tables are UNLOGGED while built (a backfill's WAL is not what is
measured) and autovacuum is off for them, so the single-run lookup is timed on tables never
analyzed, as in a backfill's first hour. Then ANALYZE, and each dashboard query is timed warm:
the median of 5 runs after an untimed one. A million runs over 35 days is ~30,000 a day.

Checks free disk first: sizes that would not fit are refused before anything is built.
Uses its own schema and drops it (unless --keep).
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sqlalchemy.ext.asyncio import AsyncEngine

from ingest import rollup, runtime
from ingest.config import Secret, Settings
from ingest.db import migrate, tables
from ingest.db.driver import Db, driver_connection
from ingest.db.engine import create_engine
from ingest.normalize import normalize
from ingest.ops.summary import EXAMPLE_QUERY
from ingest.simulator.data import RunSet
from ingest.store import store_batch

ROOT = Path(__file__).resolve().parents[1]
# Every table that holds rows per run, children first (the order UNLOGGED must be set in).
RUN_TABLES = (
    "message_tool_calls",
    "session_messages",
    "run_sessions",
    "event_intermediates",
    "run_events",
    "run_issues",
    "run_payloads",
    "ingest_queue",
    "runs",
)
LOOKUPS = {
    "bi_runs, one run": "SELECT * FROM bi_runs WHERE run_id = $1",
    "bi_calls, one run": "SELECT * FROM bi_calls WHERE run_id = $1",
    "bi_issues, one run": "SELECT * FROM bi_issues WHERE run_id = $1",
}


def dashboard_queries() -> dict[str, str]:
    """The README's example and every query of docs/dashboards.md, as written there."""
    text = (ROOT / "docs" / "dashboards.md").read_text()
    found = {"README/demo example: calls per use case": EXAMPLE_QUERY}
    for sql in re.findall(r"```sql\n(.*?)```", text, flags=re.S):
        view = re.search(r"FROM (bi_\w+)", sql)
        if view and sql.lstrip().upper().startswith("SELECT"):
            found[f"dashboards.md: {view.group(1)}"] = sql
    return found


def _copy(table: str, round_: int) -> str:
    """INSERT ... SELECT of every row of `table` under new run (and issue) ids."""
    columns = list(tables.metadata.tables[table].c.keys())
    renamed = {"run_id"} | ({"id"} if table in ("runs", "run_issues") else set())
    select = [
        f"md5(\"{c}\"::text || ':{round_}')::uuid" if c in renamed else f'"{c}"' for c in columns
    ]
    names = ", ".join(f'"{c}"' for c in columns)
    return f"INSERT INTO {table} ({names}) SELECT {', '.join(select)} FROM {table}"


async def _base(engine: AsyncEngine, count: int, days: int) -> None:
    now = datetime.now(UTC).replace(microsecond=0)
    runs = RunSet(seed=7, now=now)
    added = runs.add(count, start=now - timedelta(days=days), end=now - timedelta(hours=2))
    async with engine.begin() as conn:
        db = await driver_connection(conn)
        for uc in runs.use_cases:
            await db.execute(
                "INSERT INTO use_cases (id, org_id, name, refreshed_at) VALUES ($1, $2, $3, now())",
                uuid.UUID(uc.id),
                uuid.UUID(uc.org_id),
                str(uc.details.get("name", "use case")),
            )
    fetched = datetime.now(UTC)
    for offset in range(0, len(added), 200):
        rows = [normalize(runs.body(r), r.id, fetched) for r in added[offset : offset + 200]]
        async with engine.begin() as conn:
            await store_batch(conn, rows)
    async with engine.begin() as conn:
        await (await driver_connection(conn)).execute(
            "INSERT INTO ingest_queue (run_id, state, attempts, source, finished_at)"
            " SELECT id, 'done', 1, 'backfill', now() FROM runs"
        )


async def _sizes(db: Db) -> list[tuple[str, int, int]]:
    rows = await db.fetch(
        "SELECT c.relname, pg_table_size(c.oid), pg_indexes_size(c.oid) FROM pg_class c"
        " WHERE c.relnamespace = current_schema()::regnamespace AND c.relkind = 'r'"
        " ORDER BY pg_total_relation_size(c.oid) DESC"
    )
    return [(r[0], r[1], r[2]) for r in rows]


async def _timed(db: Db, sql: str, *args: object, rounds: int = 5) -> float:
    await db.fetch(sql, *args)
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        await db.fetch(sql, *args)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


async def _forget_statistics(db: Db) -> bool:
    """Put the schema's tables back as never analyzed (no statistics, unknown row counts), as
    the previous size's ANALYZE left them otherwise. Needs a superuser; False if refused."""
    schema = "(SELECT oid FROM pg_class WHERE relnamespace = current_schema()::regnamespace)"
    try:
        async with db.transaction():  # type: ignore[attr-defined]
            await db.execute(f"DELETE FROM pg_statistic WHERE starelid IN {schema}")
            await db.execute(
                "UPDATE pg_class SET reltuples = -1, relpages = 0"
                " WHERE relnamespace = current_schema()::regnamespace AND relkind = 'r'"
            )
    except Exception as exc:  # not a superuser: the lookups run on stale statistics
        print(f"  (statistics kept: {type(exc).__name__})")
        return False
    return True


async def _measure(db: Db, runs: int) -> dict[str, float]:
    """Lookups first (tables never analyzed), then ANALYZE and the dashboards, warm."""
    assert await db.fetchval("SELECT count(*) FROM runs") == runs
    never = await _forget_statistics(db)
    ids = [r[0] for r in await db.fetch("SELECT id FROM runs TABLESAMPLE SYSTEM (1) LIMIT 20")]
    out: dict[str, float] = {}
    for name, sql in LOOKUPS.items():
        # The first lookup of each run is cold for that run: the worst of 20 is reported.
        times = []
        for run_id in ids:
            start = time.perf_counter()
            await db.fetch(sql, run_id)
            times.append(time.perf_counter() - start)
        label = f"{name} ({'never analyzed' if never else 'stale statistics'})"
        out[label] = max(times)
        LOOKUP_LABELS.add(label)
    # What autovacuum does to the small rollup tables after each compaction (it is off here
    # for the big ones, to keep them never analyzed for the lookups above).
    for table in rollup.TABLES:
        await db.execute(f"VACUUM {table}")
    await db.execute("ANALYZE")
    for name, sql in dashboard_queries().items():
        out[name] = await _timed(db, sql)
    out["bi_calls: a week's exact medians (off the page)"] = await _timed(db, WEEK_MEDIANS)
    out["the worker's refresh of a day's percentiles"] = await _refresh_a_day(db)
    return out


# Exact percentiles over a window read every call in it: dashboards.md shows them per day
# (bi_daily_call_percentiles) and only mentions this; timed to show what it costs.
WEEK_MEDIANS = """
SELECT use_case_name, count(*) AS calls,
    percentile_cont(0.5) WITHIN GROUP (ORDER BY time_to_first_word_s),
    percentile_cont(0.5) WITHIN GROUP (ORDER BY latency_llm_p95),
    percentile_cont(0.95) WITHIN GROUP (ORDER BY latency_turn_p95)
FROM bi_calls WHERE "timestamp" >= now() - interval '7 days'
GROUP BY use_case_id, use_case_name
"""


async def _refresh_a_day(db: Db, rounds: int = 3) -> float:
    """What the worker's refresh costs for yesterday's calls (rolled back)."""
    times = []
    for _ in range(rounds):
        tx = db.transaction()  # type: ignore[attr-defined]
        await tx.start()
        try:
            await db.execute("INSERT INTO stale_call_days (day) VALUES (current_date - 1)")
            start = time.perf_counter()
            assert await db.fetchval("SELECT refresh_call_percentiles(1)") == 1
            times.append(time.perf_counter() - start)
        finally:
            await tx.rollback()
    return statistics.median(times)


LOOKUP_LABELS: set[str] = set()


def _print_sizes(sizes: list[tuple[str, int, int]], runs: int) -> None:
    total = sum(t + i for _, t, i in sizes)
    print(f"\nbytes per run at {runs:,} runs: {total / runs:,.0f} (tables + indexes)")
    for name, table, index in sizes:
        if (table + index) / runs >= 1:
            print(f"  {name:<22} {table / runs:>9,.0f} + {index / runs:>7,.0f} indexes")


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="250000,500000,1000000")
    parser.add_argument("--base", type=int, default=15625)
    parser.add_argument("--days", type=int, default=35)
    parser.add_argument("--database-url", default=os.environ.get("DATABASE_URL"))
    parser.add_argument("--keep", action="store_true", help="keep the schema (printed)")
    parser.add_argument(
        "--bytes-per-run", type=int, default=40_000, help="for the disk check (default 40 KB)"
    )
    args = parser.parse_args()
    url = args.database_url or os.environ.get("INGEST_TEST_DATABASE_URL")
    if not url:
        sys.exit("bench_scale needs --database-url (a server on this machine, for df)")
    sizes = sorted(int(s) for s in args.sizes.split(","))
    free = shutil.disk_usage("/").free
    need = int(sizes[-1] * args.bytes_per_run * 1.3)
    if need > free:
        sys.exit(f"{sizes[-1]:,} runs need ~{need / 1e9:.0f} GB, {free / 1e9:.0f} GB free")
    print(f"free disk {free / 1e9:.0f} GB, largest size needs ~{need / 1e9:.0f} GB")

    schema = f"bench_scale_{uuid.uuid4().hex[:8]}"
    engine = create_engine(Settings(database_url=Secret(url), db_schema=schema), pool_size=2)
    results: dict[int, dict[str, float]] = {}
    try:
        await migrate.upgrade(engine)
        async with engine.begin() as conn:
            db = await driver_connection(conn)
            for table in RUN_TABLES:
                await db.execute(f"ALTER TABLE {table} SET (autovacuum_enabled = false)")
        start = time.perf_counter()
        await _base(engine, args.base, args.days)
        took = time.perf_counter() - start
        print(f"base: {args.base:,} runs through normalize + store in {took:,.0f} s")
        async with engine.connect() as conn:
            db = await driver_connection(conn)
            await db.execute("SET synchronous_commit = off")
            for table in RUN_TABLES:
                await db.execute(f"ALTER TABLE {table} SET UNLOGGED")
            runs, round_ = args.base, 0
            for target in sizes:
                while runs < target:
                    round_ += 1
                    start = time.perf_counter()
                    async with db.transaction():
                        for table in reversed(RUN_TABLES):  # parents first (foreign keys)
                            await db.execute(_copy(table, round_))
                        await rollup.compact(db, rollup.EVERY_DAY)
                    runs *= 2
                    print(f"  doubled to {runs:,} runs in {time.perf_counter() - start:,.0f} s")
                if runs != target:
                    print(f"  ({target:,} asked: measuring at {runs:,}, a power of 2 of --base)")
                results[runs] = await _measure(db, runs)
                _print_sizes(await _sizes(db), runs)
        _report(results)
        if args.keep:
            print(f"\nkept: schema {schema}")
    finally:
        if not args.keep:
            async with engine.begin() as conn:
                await conn.exec_driver_sql(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        await engine.dispose()


def _report(results: dict[int, dict[str, float]]) -> None:
    sizes = sorted(results)
    names = list(results[sizes[0]])
    head = "".join(f"{n:>12,}" for n in sizes)
    print(f"\nms (warm median of 5; lookups: worst of 20)  {head}   10M, projected")
    for name in names:
        values = [results[n][name] for n in sizes]
        # Linear in the rows read, from the two largest sizes: time = a + b * runs. A lookup by
        # key does not read more rows on a bigger table: its worst is kept.
        slope = (values[-1] - values[-2]) / (sizes[-1] - sizes[-2]) if len(sizes) > 1 else 0
        if name in LOOKUP_LABELS:
            projected = max(values)
        else:
            projected = values[-1] + max(slope, 0) * (10_000_000 - sizes[-1])
        cells = "".join(f"{_ms(v):>12}" for v in values)
        print(f"{name[:44]:<44}{cells}{_ms(projected):>12}")


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:,.1f}"


if __name__ == "__main__":
    runtime.run(main())
