"""Where the CPU goes: per run, the CPU time of the workers, the simulator and PostgreSQL.

    .venv/bin/python bench/bench_cpu.py --database-url URL [--runs 20000] [--workers 1,2]

Drains `--runs` runs with each number of worker processes (the simulator in its own process,
no latency, no rate limit, as in bench_pipeline.py) and prints wall time, runs/s, CPU
milliseconds per run of each party, and the cores they kept busy. PostgreSQL's share is read
from its processes (and its postmaster's reaped children), so the database must run on this
machine and its processes be readable (root, or the same user); other load on the machine
counts in none of the figures, but does slow them.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import subprocess
import sys
import time
import uuid

import psutil

# bench/ is on sys.path when this script runs: its neighbour's helpers, not copies.
from bench_pipeline import HR, Schema, checkpoint, list_ids, start_simulator

from ingest import queue


def postgres_cpu() -> float:
    """CPU seconds of every postgres process so far, ended backends included."""
    total = 0.0
    for proc in psutil.process_iter(["name"]):
        if proc.info["name"] != "postgres":
            continue
        with contextlib.suppress(psutil.Error):
            t = proc.cpu_times()
            # Children: the postmaster's reaped backends (the others have none).
            total += t.user + t.system + t.children_user + t.children_system
    return total


def cpu(pid: int) -> float:
    t = psutil.Process(pid).cpu_times()
    return t.user + t.system


async def drain(url: str, base_url: str, sim_pid: int, ids: list[uuid.UUID], workers: int) -> str:
    async with Schema(url) as s:
        async with s.engine.begin() as conn:
            await queue.enqueue(conn, ids)
        await checkpoint(url)
        sim0, pg0, start = cpu(sim_pid), postgres_cpu(), time.perf_counter()
        procs = [
            subprocess.Popen(
                [*HR, "worker", "--drain"],
                env=s.env(base_url),
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            for _ in range(workers)
        ]
        used = [0.0] * workers
        while any(p.poll() is None for p in procs):
            for i, p in enumerate(procs):
                with contextlib.suppress(psutil.Error):
                    used[i] = cpu(p.pid)
            time.sleep(0.05)
        wall = time.perf_counter() - start
        sim, pg = cpu(sim_pid) - sim0, postgres_cpu() - pg0
        runs = await s.count("run_payloads")
    per_run = [sum(used), sim, pg]
    ms = ", ".join(f"{x / runs * 1e3:.3f}" for x in per_run)
    return (
        f"| {workers} | {runs:,} | {wall:.1f} s | {runs / wall:,.0f} | {ms} |"
        f" {sum(per_run) / wall:.2f} |"
    )


async def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--database-url", default=os.environ.get("DATABASE_URL"))
    p.add_argument("--runs", type=int, default=20000)
    p.add_argument("--workers", default="1,2", help="comma-separated process counts")
    args = p.parse_args()
    if not args.database_url:
        sys.exit("bench_cpu.py needs --database-url (or DATABASE_URL) of a local PostgreSQL")
    counts = [int(n) for n in args.workers.split(",")]
    # Fresh runs for every drain: a run fetched again is rendered again (simulator setup).
    sim, base_url = start_simulator(args.runs * len(counts))
    try:
        ids = await list_ids(base_url)
        lines = [
            await drain(args.database_url, base_url, sim.pid, ids[i * args.runs :][: args.runs], n)
            for i, n in enumerate(counts)
        ]
    finally:
        sim.terminate()
        sim.wait()
    print(
        "| workers | runs | wall | runs/s"
        " | CPU ms per run: workers, simulator, PostgreSQL | cores busy |"
    )
    print("|---|---|---|---|---|---|")
    print("\n".join(lines))


if __name__ == "__main__":
    asyncio.run(main())
