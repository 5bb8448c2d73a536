"""The webhook receiver: calls/s it sustains with their response times, and freshness (from a
call's end to its rows) with webhooks against `sync` every minute alone.

    .venv/bin/python bench/bench_webhook.py [--database-url URL] [--calls-seconds 15]
        [--rate 20] [--latency 100] [--webhook-seconds 60] [--sync-seconds 240]

1. Calls: an `hr-ingest webhook` process on a fresh schema; this process posts one new run id
   per call, first at `--offered` calls/s on schedule (open loop: a slow answer does not slow
   the sending), then from `--connections` senders as fast as they are answered, each for
   `--calls-seconds`; it reports calls/s, status codes and p50/p99 response times (the load
   generator shares the machine).
2. Freshness: the API simulator in this process, `--latency` ms per request; every 1/rate s a
   run finishes (it appears in the API finished, its completed_at now). One `hr-ingest worker`
   process (rate limit 50 requests/s). With webhooks: each run is announced by a call to an
   `hr-ingest webhook` process as it finishes. With sync alone: the worker's own
   `--sync-every 1m`, no webhook. Reported: p50/p95/max of the stored freshness
   (`ingest_queue.freshness_s`) over the runs that finished in the window.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import statistics
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiohttp
import orjson
from sqlalchemy import text

from ingest import runtime
from ingest.config import Secret, Settings
from ingest.db import embedded, migrate
from ingest.db.engine import create_engine
from ingest.simulator import Simulator
from ingest.simulator.data import FINISHED

KEY = "bench-key"
SECRET = "bench-webhook-secret"
HR = [sys.executable, "-m", "ingest"]


class Schema:
    """A fresh migrated schema, dropped afterwards."""

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

    def env(self, **extra: str) -> dict[str, str]:
        assert self.settings.database_url is not None
        return {
            **os.environ,
            "DATABASE_URL": self.settings.database_url.reveal(),
            "INGEST_DB_SCHEMA": self.settings.db_schema,
            "INGEST_WEBHOOK_SECRET": SECRET,
            "HAPPYROBOT_API_KEY": KEY,
            "INGEST_LOG_FORMAT": "json",
            "INGEST_LOG_LEVEL": "warning",
            **extra,
        }

    async def scalar(self, sql: str) -> object:
        async with self.engine.connect() as conn:
            return (await conn.execute(text(sql))).scalar()


async def start(
    env: dict[str, str], *args: str, log: Path | None = None
) -> asyncio.subprocess.Process:
    stderr = asyncio.subprocess.DEVNULL if log is None else log.open("wb")
    return await asyncio.create_subprocess_exec(
        *HR, *args, env=env, stdout=asyncio.subprocess.DEVNULL, stderr=stderr
    )


async def stop(proc: asyncio.subprocess.Process) -> None:
    if proc.returncode is None:
        proc.send_signal(signal.SIGTERM)
        await asyncio.wait_for(proc.wait(), 60)


async def webhook_up(port: int) -> str:
    url = f"http://127.0.0.1:{port}"
    async with aiohttp.ClientSession() as session:
        for _ in range(200):
            try:
                async with session.get(url + "/readyz") as r:
                    if r.status == 200:
                        return url + "/"
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.05)
    raise RuntimeError("the webhook did not come up")


def _port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


# -- 1. calls/s ---------------------------------------------------------------------------------


async def calls(url: str, offered: float, connections: int, seconds: float) -> None:
    """At `offered` calls/s (open loop: each call sent on schedule, whatever the answers
    before it), then as many as `connections` closed-loop senders get through."""
    async with Schema(url) as s:
        port = _port()
        # Its log at info: one line per call with the time it took inside the receiver.
        log = Path(tempfile.mkdtemp(prefix="hr-bench-")) / "webhook.log"
        env = s.env(INGEST_LOG_LEVEL="info")
        proc = await start(env, "webhook", "--port", str(port), "--host", "127.0.0.1", log=log)
        try:
            target = await webhook_up(port)
            headers = {"Authorization": f"Bearer {SECRET}", "Content-Type": "application/json"}
            connector = aiohttp.TCPConnector(limit=0)
            async with aiohttp.ClientSession(connector=connector) as session:
                codes: dict[int, int] = {}

                async def one() -> float:
                    body = b'{"run_id": "%s"}' % str(uuid.uuid4()).encode()
                    t = time.perf_counter()
                    async with session.post(target, data=body, headers=headers) as r:
                        await r.read()
                        codes[r.status] = codes.get(r.status, 0) + 1
                    return time.perf_counter() - t

                # Open loop: the offered rate, sent on time.
                tasks: list[asyncio.Task[float]] = []
                began = time.perf_counter()
                n = 0
                while (elapsed := time.perf_counter() - began) < seconds:
                    due = int(elapsed * offered) + 1
                    while n < due:
                        tasks.append(asyncio.create_task(one()))
                        n += 1
                    await asyncio.sleep(0.002)
                latencies = await asyncio.gather(*tasks)
                took = time.perf_counter() - began
                _report(f"{offered:g} calls/s offered, {seconds:g} s", latencies, took, codes)
                inside = [
                    float(orjson.loads(line)["ms"]) / 1000
                    for line in log.read_bytes().splitlines()
                    if b'"event": "webhook"' in line or b'"event":"webhook"' in line
                ]
                print(
                    f"| the same, inside the receiver (its log) | p50"
                    f" {statistics.median(inside) * 1000:.1f} ms, p99"
                    f" {_pct(inside, 0.99) * 1000:.1f} ms, max {max(inside) * 1000:.0f} ms |",
                    flush=True,
                )

                # Good calls at a fifth of that rate while `connections` senders flood it with
                # calls that present a wrong secret, as fast as they are answered.
                codes = {}
                flood_codes: dict[int, int] = {}
                wrong = {"Authorization": "Bearer wrong", "Content-Type": "application/json"}
                stop_at = time.perf_counter() + seconds

                async def flooder() -> None:
                    while time.perf_counter() < stop_at:
                        async with session.post(target, data=b"{}", headers=wrong) as r:
                            await r.read()
                            flood_codes[r.status] = flood_codes.get(r.status, 0) + 1

                flooding = [asyncio.create_task(flooder()) for _ in range(connections)]
                tasks = []
                began, n = time.perf_counter(), 0
                while (elapsed := time.perf_counter() - began) < seconds:
                    while n < int(elapsed * offered / 5) + 1:
                        tasks.append(asyncio.create_task(one()))
                        n += 1
                    await asyncio.sleep(0.002)
                good = await asyncio.gather(*tasks)
                await asyncio.gather(*flooding)
                took = time.perf_counter() - began
                _report(
                    f"{offered / 5:g} calls/s offered during a flood of wrong secrets"
                    f" ({sum(flood_codes.values()) / took:,.0f}/s, {dict(flood_codes)})",
                    good,
                    took,
                    codes,
                )

                # Closed loop: what `connections` senders get through.
                codes = {}
                closed: list[float] = []
                deadline = time.perf_counter() + seconds

                async def sender() -> None:
                    while time.perf_counter() < deadline:
                        closed.append(await one())

                began = time.perf_counter()
                await asyncio.gather(*(sender() for _ in range(connections)))
                took = time.perf_counter() - began
                _report(f"{connections} senders, as fast as answered", closed, took, codes)
        finally:
            await stop(proc)
        queued = await s.scalar("SELECT count(*) FROM ingest_queue")
    print(f"| queue rows written | {queued:,} (one per call) |", flush=True)


def _report(label: str, latencies: list[float], took: float, codes: dict[int, int]) -> None:
    print(
        f"| webhook calls, {label} | {len(latencies) / took:,.0f} calls/s answered;"
        f" p50 {statistics.median(latencies) * 1000:.1f} ms, p99"
        f" {_pct(latencies, 0.99) * 1000:.1f} ms, max {max(latencies) * 1000:.0f} ms;"
        f" answers {dict(sorted(codes.items()))} |",
        flush=True,
    )


# -- 2. freshness -------------------------------------------------------------------------------


async def freshness(url: str, mode: str, rate: float, latency_ms: float, seconds: float) -> None:
    async with (
        Schema(url) as s,
        Simulator(runs=50, seed=3, api_key=KEY, latency_ms=latency_ms) as sim,
    ):
        env = s.env(HAPPYROBOT_BASE_URL=sim.base_url, INGEST_RATE_LIMIT="50")
        procs = []
        target = None
        if mode == "webhook":
            port = _port()
            procs.append(await start(env, "webhook", "--port", str(port), "--host", "127.0.0.1"))
            target = await webhook_up(port)
            procs.append(await start(env, "worker"))
        else:
            # The watermark first (as a deployment that has been syncing), then the worker's own
            # sync every minute.
            first = await start(env, "sync", "--since", "1h")
            await first.wait()
            procs.append(await start(env, "worker", "--sync-every", "1m"))
        await asyncio.sleep(2.0)  # the worker up and idle
        finished: list[uuid.UUID] = []
        headers = {"Authorization": f"Bearer {SECRET}"}
        try:
            async with aiohttp.ClientSession() as session:
                began = time.perf_counter()
                n = 0
                while time.perf_counter() - began < seconds:
                    # A call ends now: its run appears finished, its completed_at this instant.
                    duration = 60.0 + (n % 240)
                    now = datetime.now(UTC)
                    start_at = now - timedelta(seconds=duration)
                    (run,) = sim.runs.add(1, start=start_at, end=start_at)
                    run.duration_s = duration
                    sim.runs.change(run, stage=FINISHED)
                    finished.append(run.id)
                    if target is not None:
                        async with session.post(
                            target, json={"run_id": str(run.id)}, headers=headers
                        ) as r:
                            assert r.status == 202, r.status
                    n += 1
                    await asyncio.sleep(max(0.0, began + n / rate - time.perf_counter()))
            # Until every run has landed (sync alone: its next minute at most).
            ids = "','".join(str(i) for i in finished)
            for _ in range(900):
                landed = await s.scalar(
                    f"SELECT count(*) FROM ingest_queue WHERE run_id IN ('{ids}')"
                    " AND landed_at IS NOT NULL"
                )
                if landed == len(finished):
                    break
                await asyncio.sleep(0.2)
            async with s.engine.connect() as conn:
                rows = (
                    await conn.execute(
                        text(
                            "SELECT source, freshness_s FROM ingest_queue"
                            f" WHERE run_id IN ('{ids}') AND freshness_s IS NOT NULL"
                        )
                    )
                ).all()
        finally:
            for proc in procs:
                await stop(proc)
    values = [float(r[1]) for r in rows]
    sources = sorted({r[0] for r in rows})
    print(
        f"| freshness, {mode}, {len(finished)} runs finishing at {rate:g}/s, API {latency_ms:g} ms"
        f" | p50 {statistics.median(values):.2f} s, p95 {_pct(values, 0.95):.2f} s,"
        f" max {max(values):.2f} s over {len(values)} landed (came by {', '.join(sources)}) |",
        flush=True,
    )


async def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--database-url", default=os.environ.get("DATABASE_URL"))
    p.add_argument("--offered", type=float, default=500.0, help="calls/s, open loop")
    p.add_argument("--connections", type=int, default=32, help="closed-loop senders")
    p.add_argument("--calls-seconds", type=float, default=15.0)
    p.add_argument("--rate", type=float, default=20.0, help="runs finishing per second")
    p.add_argument("--latency", type=float, default=100.0, help="API latency, ms")
    p.add_argument("--webhook-seconds", type=float, default=60.0)
    p.add_argument("--sync-seconds", type=float, default=240.0)
    p.add_argument("--only", choices=["calls", "webhook", "sync"], action="append")
    args = p.parse_args()
    data_dir = None
    url = args.database_url
    if not url:
        data_dir = Path(tempfile.mkdtemp(prefix="hr-bench-"))
        url = embedded.start(data_dir)
    only = set(args.only or ["calls", "webhook", "sync"])
    print(f"{os.uname().nodename}: {os.cpu_count()} cores, {datetime.now(UTC):%Y-%m-%d}")
    print("| measurement | result |\n|---|---|")
    try:
        if "calls" in only:
            await calls(url, args.offered, args.connections, args.calls_seconds)
        if "webhook" in only:
            await freshness(url, "webhook", args.rate, args.latency, args.webhook_seconds)
        if "sync" in only:
            await freshness(url, "sync", args.rate, args.latency, args.sync_seconds)
    finally:
        if data_dir is not None:
            embedded.remove(data_dir)


if __name__ == "__main__":
    runtime.run(main())
