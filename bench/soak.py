"""A bounded soak: minutes of work under faults, then every row checked. `make soak`.

Loopback only. The API simulator runs in a process of its own with faults at a fixed rate
(5xx, timeouts, truncated bodies, connection resets), a 429 burst every 20 s and a few hostile
payloads; two `hr-ingest worker` processes drain a queue that keeps growing (new runs and
refreshes of done ones) and are SIGKILLed at random, then restarted; at the end one
`worker --drain` finishes the work and the tables are checked against the raw payloads
(tests/oracle.py `check_rows`). Prints a summary table; exits 1 on any discrepancy.

    python bench/soak.py [--minutes 3] [--seed 1]

Database: DATABASE_URL (or INGEST_TEST_DATABASE_URL), in a schema of its own dropped at the
end; unset, an embedded PostgreSQL in a temporary directory.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import random
import shutil
import signal
import sys
import tempfile
import time
import uuid
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import orjson  # noqa: E402
from sqlalchemy import text  # noqa: E402

from ingest import queue, runtime  # noqa: E402
from ingest.config import Secret, Settings  # noqa: E402
from ingest.db import embedded, migrate  # noqa: E402
from ingest.db.engine import create_engine  # noqa: E402
from ingest.ops.status import collect  # noqa: E402
from ingest.ops.summary import TABLES  # noqa: E402
from tests.oracle import check_rows  # noqa: E402

API_KEY = "soak-key"
RUNS = 9000
ERROR_RATE = 0.03
RATE_LIMIT = 80  # requests/s across both workers
MAX_ATTEMPTS = 4
BURST_EVERY_S, BURST_FOR_S = 20.0, 1.5


# -- the simulator process -------------------------------------------------------------------


def _hostile(run_id: str, n: int) -> tuple[bytes, bool]:
    """A hostile body for `run_id` and whether it must end dead (else stored with a note)."""
    other = "7d2c3a1e-0b7f-4f51-9a57-2f4a3b6c1d00"
    cases: list[tuple[bytes, bool]] = [
        (b'{"id": "' + run_id.encode() + b'", "events": [', True),  # cut short
        (b"<html>502 Bad Gateway</html>", True),
        (orjson.dumps({"id": other, "status": "completed"}), True),  # another run's body
        (orjson.dumps({"id": run_id, "events": [{"intermediate": {"id": "x"}}]}), True),
        (orjson.dumps({"id": run_id, "version": [1]}), True),
        (orjson.dumps({"id": run_id, "status": "completed", "new": "\u0000x"}), False),
        (orjson.dumps({"id": run_id, "status": "completed", "annotation": "odd"}), False),
    ]
    return cases[n % len(cases)]


async def serve_simulator(args: argparse.Namespace) -> None:
    from ingest.simulator import Simulator

    sim = Simulator(
        runs=RUNS, seed=args.seed, error_rate=ERROR_RATE, api_key=API_KEY, prerender=True
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    bursts = 0
    async with sim:
        ids = [str(r) for r in sim.run_ids()]
        rng = random.Random(args.seed)
        hostile = rng.sample(ids, 14)
        expect_dead = []
        for n, run_id in enumerate(hostile):
            body, dead = _hostile(run_id, n)
            sim.set_payload(run_id, body)
            if dead:
                expect_dead.append(run_id)
        Path(args.info).write_text(
            json.dumps({"base_url": sim.base_url, "ids": ids, "expect_dead": expect_dead})
        )
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), BURST_EVERY_S)
            if stop.is_set():
                break
            # A 429 burst: for a moment the API allows 1 request/s.
            sim.rate_limit, bursts = 1, bursts + 1
            await asyncio.sleep(BURST_FOR_S)
            sim.rate_limit = None
        s = sim.stats
        Path(args.stats).write_text(
            json.dumps(
                {
                    "requests": s.total_requests,
                    "by_status": {str(k): v for k, v in s.by_status.items()},
                    "faults": dict(s.faults),
                    "rate_limited": s.rate_limited,
                    "bursts": bursts,
                    "hostile": len(hostile),
                }
            )
        )


# -- the driver ------------------------------------------------------------------------------


def _database() -> tuple[str, Path | None]:
    url = os.environ.get("DATABASE_URL") or os.environ.get("INGEST_TEST_DATABASE_URL")
    if url:
        return url, None
    data_dir = Path(tempfile.mkdtemp(prefix="hr-ingest-soak-"))
    return embedded.start(data_dir), data_dir


class Workers:
    def __init__(self, env: dict[str, str], logs: Path) -> None:
        self.env, self.logs = env, logs
        self.procs: list[asyncio.subprocess.Process] = []
        self.started = self.killed = 0

    async def start(self, *args: str) -> asyncio.subprocess.Process:
        log = (self.logs / f"worker-{self.started}.log").open("wb")
        self.started += 1
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "ingest",
            "worker",
            "--lease-seconds",
            "5",
            "--batch-size",
            "50",
            *args,
            env=self.env,
            stdout=log,
            stderr=log,
        )
        log.close()
        self.procs.append(proc)
        return proc

    def live(self) -> list[asyncio.subprocess.Process]:
        return [p for p in self.procs if p.returncode is None]


def _log_counts(logs: Path) -> Counter[str]:
    counts: Counter[str] = Counter()
    for path in logs.glob("worker-*.log"):
        for line in path.read_bytes().splitlines():
            with contextlib.suppress(orjson.JSONDecodeError):
                event = orjson.loads(line)
                if isinstance(event, dict):
                    counts[str(event.get("event"))] += 1
    return counts


async def soak(args: argparse.Namespace) -> int:
    rng = random.Random(args.seed)
    work = Path(tempfile.mkdtemp(prefix="hr-ingest-soak-logs-"))
    url, data_dir = _database()
    schema = f"soak_{uuid.uuid4().hex[:8]}"
    settings = Settings(database_url=Secret(url), db_schema=schema, data_dir=work)
    engine = create_engine(settings, pool_size=2)
    info, stats_file = work / "sim.json", work / "sim-stats.json"
    sim = await asyncio.create_subprocess_exec(
        sys.executable,
        __file__,
        "--serve-simulator",
        "--info",
        str(info),
        "--stats",
        str(stats_file),
        "--seed",
        str(args.seed),
        stdout=asyncio.subprocess.DEVNULL,
    )
    started = time.monotonic()
    try:
        await migrate.upgrade(engine)
        while not info.exists():
            await asyncio.sleep(0.1)
        await asyncio.sleep(0.2)
        sim_info = json.loads(info.read_text())
        ids = [uuid.UUID(i) for i in sim_info["ids"]]
        rng.shuffle(ids)
        env = {k: v for k, v in os.environ.items() if not k.startswith(("INGEST_", "HAPPYROBOT_"))}
        env.update(
            DATABASE_URL=url,
            INGEST_DB_SCHEMA=schema,
            INGEST_LOG_FORMAT="json",
            HAPPYROBOT_BASE_URL=sim_info["base_url"],
            HAPPYROBOT_API_KEY=API_KEY,
            INGEST_RATE_LIMIT=str(RATE_LIMIT),
            INGEST_CONCURRENCY="24",
            INGEST_MAX_ATTEMPTS=str(MAX_ATTEMPTS),
        )
        workers = Workers(env, work)
        for _ in range(2):
            await workers.start()

        deadline = started + args.minutes * 60
        waves = max(1, int(args.minutes * 60 // 15))
        per_wave = len(ids) // (waves + 1)
        enqueued, refreshed, wave = 0, 0, 0
        next_wave = next_kill = time.monotonic()
        next_kill += rng.uniform(8, 25)
        print(f"soak: {args.minutes:g} min, {len(ids)} runs, schema {schema}, logs in {work}")
        while time.monotonic() < deadline:
            now = time.monotonic()
            if now >= next_wave and enqueued < len(ids):
                batch = ids[enqueued : enqueued + (2 * per_wave if wave == 0 else per_wave)]
                enqueued += len(batch)
                async with engine.begin() as conn:
                    await queue.enqueue(conn, batch, source="soak")
                    # Refresh a sample of finished runs: their bodies have moved on.
                    done = [
                        r[0]
                        for r in await conn.execute(
                            text(
                                "SELECT run_id FROM ingest_queue WHERE state = 'done'"
                                " ORDER BY random() LIMIT 100"
                            )
                        )
                    ]
                    await queue.enqueue(conn, done, source="soak-refresh")
                refreshed += len(done)
                wave += 1
                next_wave = now + 15
            if now >= next_kill:
                live = workers.live()
                if live:
                    victim = rng.choice(live)
                    victim.send_signal(signal.SIGKILL)
                    await victim.wait()
                    workers.killed += 1
                await workers.start()
                next_kill = now + rng.uniform(8, 25)
            await asyncio.sleep(0.2)
        if enqueued < len(ids):
            async with engine.begin() as conn:
                await queue.enqueue(conn, ids[enqueued:], source="soak")
            enqueued = len(ids)
        for p in workers.live():
            p.send_signal(signal.SIGTERM)
        for p in workers.live():
            await asyncio.wait_for(p.wait(), 60)
        print("soak: time is up; final drain ...")
        final = await workers.start("--drain")
        drain_rc = await asyncio.wait_for(final.wait(), 1800)
    finally:
        sim.send_signal(signal.SIGTERM)
        await asyncio.wait_for(sim.wait(), 30)
    elapsed = time.monotonic() - started

    problems = await check_rows(engine)
    report = await collect(engine)
    states, polling = report.counts, report.polling
    async with engine.connect() as conn:
        dead = {str(r[0]) for r in await conn.execute(text("SELECT run_id FROM dead_letters"))}
        rows = 0
        for table in TABLES:
            rows += (await conn.execute(text(f"SELECT count(*) FROM {table}"))).scalar_one()
    expect_dead = set(sim_info["expect_dead"])
    if dead != expect_dead:
        problems.append(
            f"dead letters: {len(dead - expect_dead)} unexpected, {len(expect_dead - dead)} missing"
        )
    if drain_rc != 0:
        problems.append(f"final drain exited {drain_rc}")
    stats = json.loads(stats_file.read_text())
    logs = _log_counts(work)
    faults = dict(sorted(stats["faults"].items()))
    faults["429"] = stats["rate_limited"]
    faults["hostile payload"] = stats["hostile"]
    table = [
        ("machine", f"{platform.node()} ({os.cpu_count()} cores, {platform.system()})"),
        ("date", datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")),
        ("duration", f"{args.minutes:g} min of faults + final drain = {elapsed:.0f} s"),
        ("runs enqueued (+ refreshes)", f"{len(ids)} (+ {refreshed})"),
        (
            "runs processed",
            f"{states.get('done', 0) + states.get('dead', 0) + polling}"
            f" (done {states.get('done', 0)}, dead {states.get('dead', 0)},"
            f" polling {polling})",
        ),
        ("API requests", str(stats["requests"])),
        *((f"faults injected: {k}", str(v)) for k, v in faults.items()),
        ("429 bursts", str(stats["bursts"])),
        ("worker SIGKILLs / starts", f"{workers.killed} / {workers.started}"),
        ("retries in a call / of a run", f"{logs['api.retry']} / {logs['run will be retried']}"),
        ("dead letters (expected)", f"{len(dead)} ({len(expect_dead)})"),
        ("rows checked", str(rows)),
        ("discrepancies", str(len(problems))),
    ]
    width = max(len(k) for k, _ in table)
    print(f"| {'measure':{width}} | value |")
    print(f"|{'-' * (width + 2)}|---|")
    for k, v in table:
        print(f"| {k:{width}} | {v} |")
    for p in problems[:20]:
        print(f"  ! {p}")

    async with engine.begin() as conn:
        await conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
    await engine.dispose()
    if data_dir is not None:
        embedded.remove(data_dir)
    if not problems:
        shutil.rmtree(work, ignore_errors=True)
    return 1 if problems else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=3.0)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--serve-simulator", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--info", help=argparse.SUPPRESS)
    parser.add_argument("--stats", help=argparse.SUPPRESS)
    args = parser.parse_args()
    # Under production's policy, as `hr-ingest simulate` and the workers run.
    if args.serve_simulator:
        runtime.run(serve_simulator(args))
        return 0
    return runtime.run(soak(args))


if __name__ == "__main__":
    sys.exit(main())
