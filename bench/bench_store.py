"""Throughput of normalize alone and of normalize + store, on realistic runs.

    .venv/bin/python bench/bench_store.py [--runs N] [--batch B] [--database-url URL]

Runs have 30 action events with intermediates, one call of 20 turns and 2 issues
(tests/payloads.py), sharing a pool of versions as real runs do. The database is
DATABASE_URL/--database-url, else INGEST_TEST_DATABASE_URL, else an embedded server in a
temporary directory; the benchmark creates its own schema there and drops it at the end.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ingest import runtime
from ingest.config import Secret, Settings
from ingest.db import embedded, migrate
from ingest.db.engine import create_engine
from ingest.normalize import normalize
from ingest.store import store_batch
from tests.payloads import make_run_payload, make_version


def _bodies(count: int) -> list[tuple[bytes, uuid.UUID]]:
    rng = random.Random(42)
    versions = [make_version(rng) for _ in range(50)]
    out = []
    for _ in range(count):
        body = make_run_payload(rng, events=30, issues=2, version_pool=versions)
        out.append((orjson.dumps(body), uuid.UUID(body["id"])))
    return out


def _report(label: str, runs: int, rows: int, seconds: float) -> None:
    print(f"{label:<22} {runs / seconds:>9,.0f} runs/s {rows / seconds:>12,.0f} rows/s")


def bench_normalize(bodies: list[tuple[bytes, uuid.UUID]]) -> None:
    fetched_at = datetime.now(UTC)
    rows = 0
    start = time.perf_counter()
    for body, run_id in bodies:
        # Not kept: the worker holds one batch at a time, and a heap of millions of rows would
        # time the garbage collector instead.
        rows += normalize(body, run_id, fetched_at).row_count
    _report("normalize", len(bodies), rows, time.perf_counter() - start)


async def bench_store(url: str, bodies: list[tuple[bytes, uuid.UUID]], batch: int) -> None:
    schema = f"bench_{uuid.uuid4().hex[:10]}"
    settings = Settings(database_url=Secret(url), db_schema=schema)
    engine = create_engine(settings, pool_size=1)
    try:
        await migrate.upgrade(engine)
        for label in ("normalize+store (new)", "normalize+store (again)"):
            fetched_at = datetime.now(UTC)  # "again": every run re-fetched, children replaced
            runs = rows = 0
            start = time.perf_counter()
            for offset in range(0, len(bodies), batch):
                chunk = [normalize(b, i, fetched_at) for b, i in bodies[offset : offset + batch]]
                async with engine.begin() as conn:
                    stats = await store_batch(conn, chunk)
                runs, rows = runs + stats.runs, rows + stats.rows
            _report(label, runs, rows, time.perf_counter() - start)
    finally:
        async with engine.begin() as conn:
            await conn.exec_driver_sql(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        await engine.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=2000)
    parser.add_argument("--batch", type=int, default=200, help="runs per store transaction")
    parser.add_argument("--database-url")
    args = parser.parse_args()
    url = (
        args.database_url
        or os.environ.get("DATABASE_URL")
        or os.environ.get("INGEST_TEST_DATABASE_URL")
    )
    data_dir = None
    if not url:
        data_dir = Path(tempfile.mkdtemp(prefix="hr-ingest-bench-pg-"))
        url = embedded.start(data_dir)
    try:
        bodies = _bodies(args.runs)
        size = sum(len(b) for b, _ in bodies) / len(bodies)
        print(
            f"{args.runs} runs of 30 events + intermediates + 2 issues, {size / 1024:.0f} KiB each"
        )
        bench_normalize(bodies)
        runtime.run(bench_store(url, bodies, args.batch))
    finally:
        if data_dir is not None:
            embedded.remove(data_dir)
            shutil.rmtree(data_dir, ignore_errors=True)


if __name__ == "__main__":
    main()
