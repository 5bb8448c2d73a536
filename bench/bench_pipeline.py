"""The whole job against the simulator on this machine, and the ceilings it runs under.

    .venv/bin/python bench/bench_pipeline.py [--runs 20000] [--memory-runs 100000]
        [--enqueue-ids 1000000] [--database-url URL]

Prints, for 1 and 2 worker processes with no latency and no rate limit: runs/s, rows/s, peak
RSS per worker, and the CPU each party spent per run (the workers, the simulator, and
PostgreSQL when its processes run on this machine and can be read); the ceilings (raw COPY
of the same rows into the same tables with nothing else running, and the simulator's serve
rate alone) and end-to-end throughput as a fraction of the lower; bulk enqueue speed
(IDs/s). Uses its own schemas and drops them.
Without --database-url (or DATABASE_URL) it uses a throwaway embedded PostgreSQL.

Each measurement starts after a CHECKPOINT (when permitted), so that none pays for the WAL
of the one before; the COPY ceiling is the best of three rounds, end to end one run each.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import aiohttp
import psutil
from sqlalchemy import text

from ingest import runtime
from ingest.config import Secret, Settings
from ingest.db import embedded, migrate
from ingest.db.driver import driver_connection
from ingest.db.engine import create_engine
from ingest.normalize import normalize
from ingest.ops.summary import TABLES

KEY = "bench-key"
HR = [sys.executable, "-m", "ingest"]


def start_simulator(runs: int, seed: int = 1) -> tuple[subprocess.Popen[str], str]:
    env = dict(os.environ, HAPPYROBOT_API_KEY=KEY)
    proc = subprocess.Popen(
        [*HR, "simulate", "--port", "0", "--runs", str(runs), "--seed", str(seed)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    assert proc.stdout is not None
    for line in proc.stdout:
        if line.startswith("HAPPYROBOT_BASE_URL="):
            wait_until_idle(proc.pid)
            return proc, line.strip().split("=", 1)[1]
    raise RuntimeError("simulator did not start")


def wait_until_idle(pid: int, timeout: float = 600.0) -> None:
    """Until the simulator has rendered every body (it does once, at start, ~0.3 ms each):
    that is the simulator's own setup, not serving, and must not run during a measurement."""
    proc = psutil.Process(pid)
    deadline = time.monotonic() + timeout
    while proc.cpu_percent(0.5) > 5.0 and time.monotonic() < deadline:
        pass


async def list_ids(base_url: str) -> list[uuid.UUID]:
    out: list[uuid.UUID] = []
    headers = {"authorization": f"Bearer {KEY}"}
    async with aiohttp.ClientSession(headers=headers) as http:
        offset = 0
        while True:
            params = {"limit": "5000", "offset": str(offset), "sort": "asc"}
            async with http.get(f"{base_url}/runs", params=params) as r:
                page = await r.json()
            out += [uuid.UUID(item["id"]) for item in page]
            if len(page) < 5000:
                return out
            offset += 5000


async def serve_rate(base_url: str, ids: list[uuid.UUID], concurrency: int = 64) -> float:
    """Requests/s the simulator answers with nothing else running (bodies read fully)."""
    headers = {"authorization": f"Bearer {KEY}"}
    todo = iter(ids)
    conn = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(headers=headers, connector=conn) as http:

        async def one() -> None:
            for run_id in todo:
                async with http.get(f"{base_url}/runs/{run_id}") as r:
                    await r.read()

        start = time.perf_counter()
        await asyncio.gather(*(one() for _ in range(concurrency)))
        return len(ids) / (time.perf_counter() - start)


class Schema:
    """A fresh migrated schema for one measurement, dropped afterwards."""

    def __init__(self, url: str) -> None:
        self.settings = Settings(
            database_url=Secret(url), db_schema=f"bench_{uuid.uuid4().hex[:8]}"
        )
        self.engine = create_engine(self.settings, pool_size=2)

    async def __aenter__(self) -> Schema:
        await migrate.upgrade(self.engine)
        return self

    async def __aexit__(self, *_: object) -> None:
        async with self.engine.begin() as conn:
            await conn.execute(text(f'DROP SCHEMA "{self.settings.db_schema}" CASCADE'))
        await self.engine.dispose()

    def env(self, base_url: str) -> dict[str, str]:
        assert self.settings.database_url is not None
        return dict(
            os.environ,
            DATABASE_URL=self.settings.database_url.reveal(),
            INGEST_DB_SCHEMA=self.settings.db_schema,
            HAPPYROBOT_BASE_URL=base_url,
            HAPPYROBOT_API_KEY=KEY,
            INGEST_RATE_LIMIT="1000000",
            INGEST_CONCURRENCY="32",
            INGEST_LOG_FORMAT="json",
        )

    async def count(self, table: str) -> int:
        async with self.engine.connect() as conn:
            return int((await conn.execute(text(f"SELECT count(*) FROM {table}"))).scalar_one())


def postgres_cpu() -> float | None:
    """CPU seconds of every postgres process on this machine so far (the postmaster's reaped
    backends included); None when none can be seen (a database elsewhere, other users')."""
    total, seen = 0.0, False
    for proc in psutil.process_iter(["name"]):
        if proc.info["name"] != "postgres":
            continue
        with contextlib.suppress(psutil.Error):
            t = proc.cpu_times()
            total += t.user + t.system + t.children_user + t.children_system
            seen = True
    return total if seen else None


def cpu_seconds(pid: int) -> float:
    t = psutil.Process(pid).cpu_times()
    return t.user + t.system


def run_workers(env: dict[str, str], processes: int) -> tuple[float, list[int], list[float]]:
    """Start `processes` workers with --drain; wall time until all exit, and the peak RSS and
    CPU seconds of each."""
    start = time.perf_counter()
    procs = [
        subprocess.Popen(
            [*HR, "worker", "--drain"],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for _ in range(processes)
    ]
    peaks = [0] * processes
    used = [0.0] * processes
    handles = [psutil.Process(p.pid) for p in procs]
    while any(p.poll() is None for p in procs):
        for i, h in enumerate(handles):
            with contextlib.suppress(psutil.NoSuchProcess):
                peaks[i] = max(peaks[i], h.memory_info().rss)
                used[i] = cpu_seconds(h.pid)
        time.sleep(0.05)
    elapsed = time.perf_counter() - start
    for p in procs:
        if p.returncode != 0:
            raise RuntimeError(f"worker exited {p.returncode}")
    return elapsed, peaks, used


async def end_to_end(
    url: str, base_url: str, sim_pid: int, ids: list[uuid.UUID], processes: int
) -> dict[str, float]:
    """Drain `ids` with `processes` workers; throughput, peak RSS, and CPU ms per run of the
    workers, the simulator and (when its processes are visible here) PostgreSQL."""
    from ingest import queue

    async with Schema(url) as s:
        async with s.engine.begin() as conn:
            await queue.enqueue(conn, ids)
        await checkpoint(s)
        sim0, pg0 = cpu_seconds(sim_pid), postgres_cpu()
        elapsed, peaks, used = run_workers(s.env(base_url), processes)
        sim, pg = cpu_seconds(sim_pid) - sim0, postgres_cpu()
        rows = sum([await s.count(t) for t in TABLES])
        stored = await s.count("run_payloads")
    return {
        "runs": stored,
        "seconds": elapsed,
        "runs_per_s": stored / elapsed,
        "rows_per_s": rows / elapsed,
        "peak_rss_mb": max(peaks) / 2**20,
        "workers_ms": sum(used) / stored * 1e3,
        "simulator_ms": sim / stored * 1e3,
        "postgres_ms": (pg - pg0) / stored * 1e3 if pg is not None and pg0 is not None else -1,
    }


async def checkpoint(s: Schema) -> None:
    """Flush what earlier measurements left in the WAL, so that no checkpoint they triggered
    runs into the next one (it can halve a COPY). Skipped without the privilege."""
    async with s.engine.connect() as conn:
        with contextlib.suppress(Exception):
            await conn.execute(text("CHECKPOINT"))


async def copy_ceiling(url: str, base_url: str, ids: list[uuid.UUID], rounds: int = 3) -> float:
    """Runs/s when the same rows are COPYed straight into the same tables (nothing else);
    the best of `rounds`, each into fresh tables after a checkpoint."""
    headers = {"authorization": f"Bearer {KEY}"}
    bodies: list[tuple[uuid.UUID, bytes]] = []
    async with aiohttp.ClientSession(headers=headers) as http:
        for run_id in ids:
            async with http.get(f"{base_url}/runs/{run_id}") as r:
                bodies.append((run_id, await r.read()))
    now = datetime.now(UTC)
    normalized = [normalize(body, run_id, now) for run_id, body in bodies]
    # The store's own column lists and encoders, so the rows are exactly the ones it writes.
    from ingest.store import (
        _EVENTS,
        _INTERMEDIATES,
        _ISSUES,
        _MESSAGES,
        _PAYLOADS,
        _RUNS,
        _SESSIONS,
        _TOOL_CALLS,
        _VERSIONS,
    )

    versions = {r.version.id: r.version for r in normalized if r.version is not None}
    issues = {i.id: i for r in normalized for i in r.issues}
    work = [
        (_RUNS, [r.run for r in normalized]),
        (_VERSIONS, list(versions.values())),
        (_EVENTS, [e for r in normalized for e in r.events]),
        (_INTERMEDIATES, [i for r in normalized for i in r.intermediates]),
        (_SESSIONS, [c for r in normalized for c in r.sessions]),
        (_MESSAGES, [m for r in normalized for m in r.messages]),
        (_TOOL_CALLS, [t for r in normalized for t in r.tool_calls]),
        (_ISSUES, list(issues.values())),
        (_PAYLOADS, [r.payload for r in normalized]),
    ]
    prepared = [(t, [t.record(row) for row in rows]) for t, rows in work]
    best = 0.0
    for _ in range(rounds):
        async with Schema(url) as s:
            await checkpoint(s)
            async with s.engine.begin() as conn:
                db = await driver_connection(conn)
                start = time.perf_counter()
                for target, records in prepared:
                    await db.copy_records_to_table(
                        target.table, records=records, columns=target.columns
                    )
                best = max(best, len(ids) / (time.perf_counter() - start))
    return best


async def enqueue_rate(url: str, n: int) -> float:
    with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False) as f:
        f.write("\n".join(str(uuid.uuid4()) for _ in range(n)))
        path = f.name
    try:
        async with Schema(url) as s:
            start = time.perf_counter()
            subprocess.run(
                [*HR, "enqueue", "--file", path],
                env=s.env("http://127.0.0.1:1/api/v1"),
                check=True,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            elapsed = time.perf_counter() - start
            assert await s.count("ingest_queue") == n
    finally:
        os.unlink(path)
    return n / elapsed


async def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--runs", type=int, default=20000)
    p.add_argument(
        "--memory-runs",
        type=int,
        default=0,
        help="also drain this many (e.g. 100000) for peak memory",
    )
    p.add_argument("--enqueue-ids", type=int, default=1_000_000)
    p.add_argument("--ceiling-runs", type=int, default=5000)
    p.add_argument("--database-url", default=os.environ.get("DATABASE_URL"))
    args = p.parse_args()

    data_dir = None
    url = args.database_url
    if not url:
        data_dir = Path(tempfile.mkdtemp(prefix="hr-bench-"))
        url = embedded.start(data_dir)
    # Every measurement fetches runs the simulator has not served yet: a run moves on a stage
    # with each fetch, and rendering its next body (~0.3 ms) is not what serving costs.
    sizes = [args.runs, args.runs, args.ceiling_runs, args.ceiling_runs, args.memory_runs]
    sim, base_url = start_simulator(sum(sizes))
    try:
        listed = await list_ids(base_url)
        one, two, served_sample, copied_sample, drained = (
            listed[sum(sizes[:i]) : sum(sizes[: i + 1])] for i in range(len(sizes))
        )
        rows = []
        best = 0.0
        for processes, work in ((1, one), (2, two)):
            r = await end_to_end(url, base_url, sim.pid, work, processes)
            pg = f"{r['postgres_ms']:.3f}" if r["postgres_ms"] >= 0 else "not visible"
            rows.append(
                (
                    f"end to end, {processes} worker process(es), {r['runs']:,} runs",
                    f"{r['runs_per_s']:,.0f} runs/s, {r['rows_per_s']:,.0f} rows/s,"
                    f" peak RSS {r['peak_rss_mb']:.0f} MB/worker; CPU ms per run: workers"
                    f" {r['workers_ms']:.3f}, simulator {r['simulator_ms']:.3f}, PostgreSQL {pg}",
                )
            )
            best = max(best, r["runs_per_s"])
        served = await serve_rate(base_url, served_sample)
        copied = await copy_ceiling(url, base_url, copied_sample)
        ceiling = min(served, copied)
        rows.append(("ceiling: simulator serve rate alone", f"{served:,.0f} runs/s"))
        rows.append(("ceiling: raw COPY of the same rows", f"{copied:,.0f} runs/s"))
        rows.append(("end to end / lower ceiling", f"{best / ceiling:.0%}"))
        if args.memory_runs:
            r = await end_to_end(url, base_url, sim.pid, drained, 1)
            rows.append(
                (
                    f"drain of {r['runs']:,} runs, 1 worker",
                    f"{r['runs_per_s']:,.0f} runs/s, peak RSS {r['peak_rss_mb']:.0f} MB",
                )
            )
        if args.enqueue_ids:
            rate = await enqueue_rate(url, args.enqueue_ids)
            rows.append((f"enqueue --file of {args.enqueue_ids:,} IDs", f"{rate:,.0f} IDs/s"))
    finally:
        sim.terminate()
        sim.wait()
        if data_dir is not None:
            embedded.remove(data_dir)
            shutil.rmtree(data_dir, ignore_errors=True)
    print(
        f"\n{platform.node()}: {os.cpu_count()} cores, Python {platform.python_version()},"
        f" {datetime.now(UTC):%Y-%m-%d}"
    )
    print("| measurement | result |\n|---|---|")
    for name, value in rows:
        print(f"| {name} | {value} |")


if __name__ == "__main__":
    # The workers are `hr-ingest worker` processes, so they run under the CLI's policy; the
    # ceilings measured in this process run under the same one, or the ratio would compare
    # a tuned collector and uvloop against the defaults.
    runtime.run(main())
