"""How much of the configured rate the shared limiter really uses, with 1 and 2 processes.

    .venv/bin/python bench/bench_ratelimit.py [--rate 100] [--latency 100] [--seconds 10]

Starts the API simulator in this process (100 ms mean latency, 429 above the same rate R),
then 1 and then 2 worker processes, each an `ApiClient` + `RateLimiter` fetching runs as fast
as the limiter lets it, all starting at the same moment. Reports utilisation (requests the
simulator received in the window / (R x window)), the busiest sliding second, 429s, and the
limiter's database round trips. The database is DATABASE_URL (a throwaway schema in it), or
an embedded PostgreSQL when unset.

`worker` is the per-process half; tests/test_ratelimit.py uses `run_workers` for the acceptance
check.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
import uuid
from typing import Any

import asyncpg
from sqlalchemy.engine import make_url

from ingest import runtime
from ingest.api import ApiClient, ApiError, RateLimiter
from ingest.config import Secret, Settings, load_settings
from ingest.db import migrate
from ingest.db.engine import create_engine, resolve_url
from ingest.logs import configure_logging
from ingest.simulator import Simulator

API_KEY = "bench-key"


async def worker(args: argparse.Namespace) -> dict[str, Any]:
    """One process: says `ready` once set up, then fetches runs through the shared limiter
    from the time.monotonic() it reads on stdin, for `seconds` (the clock is system-wide)."""
    configure_logging("json")  # to stderr: stdout carries the handshake and the result
    settings = Settings(
        database_url=Secret(args.db_url),
        db_schema=args.schema,
        api_key=Secret(API_KEY),
        base_url=args.base_url,
        concurrency=args.concurrency,
    )
    engine = create_engine(settings, pool_size=1)
    limiter = RateLimiter(engine, args.rate, name=args.name)
    sent = errors = 0
    try:
        async with ApiClient(settings, limiter, in_claim_retries=0) as api:
            run_ids = [item["id"] for item in await api.list_runs(limit=2000)]
            print("ready", flush=True)
            start_at = float(await asyncio.to_thread(sys.stdin.readline))
            await asyncio.sleep(max(0.0, start_at - time.monotonic()))
            stop = start_at + args.seconds

            async def fetch_loop(offset: int) -> None:
                nonlocal sent, errors
                i = offset
                while time.monotonic() < stop:
                    try:
                        await api.get_run(run_ids[i % len(run_ids)])
                    except ApiError:
                        errors += 1
                    sent += 1
                    i += args.concurrency

            await asyncio.gather(*(fetch_loop(k) for k in range(args.concurrency)))
    finally:
        await limiter.close()
        await engine.dispose()
    return {
        "sent": sent,
        "errors": errors,
        "grants": limiter.grants,
        "slots_dropped": limiter.slots_dropped,
    }


async def run_workers(
    sim: Simulator,
    db_url: str,
    schema: str,
    rate: float,
    processes: int,
    seconds: float,
    concurrency: int = 16,
) -> dict[str, Any]:
    """Start `processes` workers on one fresh bucket, release them together, and report what
    the simulator received in the window."""
    name = f"bench-{uuid.uuid4().hex[:8]}"
    procs = [
        await asyncio.create_subprocess_exec(
            sys.executable,
            __file__,
            "worker",
            *("--base-url", sim.base_url, "--db-url", db_url, "--schema", schema),
            *("--rate", str(rate), "--name", name, "--seconds", str(seconds)),
            *("--concurrency", str(concurrency)),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        for _ in range(processes)
    ]
    for p in procs:
        assert p.stdout is not None
        line = await asyncio.wait_for(p.stdout.readline(), 60)
        if line.strip() != b"ready":
            raise RuntimeError(f"worker failed to start: {(await p.communicate())[1].decode()}")
    start_at = time.monotonic() + 0.2
    for p in procs:
        assert p.stdin is not None
        p.stdin.write(f"{start_at}\n".encode())
        await p.stdin.drain()
    results = await asyncio.gather(*(p.communicate() for p in procs))
    if any(p.returncode for p in procs):
        raise RuntimeError("a worker failed: " + " | ".join(e.decode()[-2000:] for _, e in results))
    outputs = [json.loads(out) for out, _ in results]
    end = start_at + seconds
    received = len(sim.stats.between(start_at, end))
    return {
        "processes": processes,
        "requests": received,
        "utilisation": received / (rate * seconds),
        "max_1s": sim.stats.max_in_window(1.0, start=start_at, end=end),
        "429s": sim.stats.rate_limited,
        "grants": sum(o["grants"] for o in outputs),
        "slots_dropped": sum(o["slots_dropped"] for o in outputs),
        "workers": outputs,
    }


async def bench(args: argparse.Namespace) -> int:
    settings = load_settings()
    db_url = resolve_url(settings)
    schema = f"bench_ratelimit_{os.getpid()}"
    engine = create_engine(settings.with_overrides(db_schema=schema), url=db_url, pool_size=1)
    results = []
    try:
        await migrate.upgrade(engine)
        for processes in (1, 2):
            async with Simulator(
                runs=2000,
                latency_ms=args.latency,
                rate_limit=args.rate,
                api_key=API_KEY,
                prerender=True,
            ) as sim:
                results.append(
                    await run_workers(sim, db_url, schema, args.rate, processes, args.seconds)
                )
    finally:
        await engine.dispose()
        dsn = make_url(db_url).set(drivername="postgresql").render_as_string(hide_password=False)
        conn = await asyncpg.connect(dsn)
        try:
            await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        finally:
            await conn.close()
    print(f"rate limit R={args.rate:g}/s, latency {args.latency:g} ms, {args.seconds:g} s window")
    print("processes  requests  utilisation  busiest 1 s  429s  limiter round trips  late slots")
    for r in results:
        print(
            f"{r['processes']:>9}  {r['requests']:>8}  {r['utilisation']:>11.1%}"
            f"  {r['max_1s']:>11}  {r['429s']:>4}  {r['grants']:>19}  {r['slots_dropped']:>10}"
        )
    worst = min(r["utilisation"] for r in results)
    return 0 if worst >= 0.95 and all(r["429s"] == 0 for r in results) else 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rate", type=float, default=100.0)
    parser.add_argument("--latency", type=float, default=100.0, help="simulated, ms")
    parser.add_argument("--seconds", type=float, default=10.0)
    sub = parser.add_subparsers(dest="mode")
    w = sub.add_parser("worker")
    for flag in ("--base-url", "--db-url", "--schema", "--name"):
        w.add_argument(flag, required=True)
    w.add_argument("--rate", type=float, required=True)
    w.add_argument("--seconds", type=float, required=True)
    w.add_argument("--concurrency", type=int, default=16)
    args = parser.parse_args()
    if args.mode == "worker":
        print(json.dumps(runtime.run(worker(args))))
        return 0
    return runtime.run(bench(args))


if __name__ == "__main__":
    raise SystemExit(main())
