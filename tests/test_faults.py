"""Faults: the worker killed, PostgreSQL restarted, the API misbehaving, a batch the database
refuses. Each test ends with every run `done` or `dead` with a reason, and the rows checked
against the raw payloads stored (`check_rows`, also used by `bench/soak.py`)."""

from __future__ import annotations

import asyncio
import hashlib
import os
import random
import signal
import subprocess
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest
import pytest_asyncio
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine

from ingest.config import Secret, Settings
from ingest.db import embedded, migrate
from ingest.db.engine import create_engine
from ingest.simulator import Simulator
from ingest.worker import WorkerOptions, WorkerStats
from tests import helpers
from tests.helpers import cli_env, enqueue, scalar
from tests.payloads import make_run_payload

API_KEY = "fault-test-key"
FAST = WorkerOptions(
    drain=True, retry_base_s=0.05, flush_interval_s=0.05, idle_poll_s=0.3, batch_size=20
)
TERMINAL = ("completed", "canceled", "failed")


# -- the oracle: rows against the raw payloads they came from ---------------------------------


def _uuid_or_none(value: Any) -> uuid.UUID | None:
    try:
        return uuid.UUID(value) if isinstance(value, str) else None
    except ValueError:
        return None


@dataclass
class Described:
    """The row counts and issue ids a stored raw body describes, read straight from its JSON,
    independently of ingest.normalize."""

    events: int
    intermediates: int
    sessions: int
    messages: int
    tool_calls: int
    issues: set[uuid.UUID]

    @classmethod
    def of(cls, body: bytes) -> Described:
        doc = orjson.loads(body)
        events = [e if isinstance(e, dict) else {} for e in doc.get("events") or []]
        calls = [e for e in events if e.get("type") == "session"]
        messages = [m or {} for c in calls for m in c.get("messages") or []]
        return cls(
            events=len(events),
            intermediates=sum(
                1
                for e in events
                if e.get("type") != "session" and isinstance(e.get("intermediate"), dict)
            ),
            sessions=len(calls),
            messages=len(messages),
            tool_calls=sum(len(m.get("tool_calls") or []) for m in messages),
            issues={
                parsed
                for i in doc.get("issues") or []
                if isinstance(i, dict) and (parsed := _uuid_or_none(i.get("id"))) is not None
            },
        )


async def check_rows(engine: AsyncEngine) -> list[str]:
    """Every discrepancy between the tables, the queue and the stored raw payloads (empty
    when all is right): per run, its events, intermediates and issues are exactly what its
    stored body lists, nothing twice and nothing stale; the queue is settled."""
    problems: list[str] = []
    async with engine.connect() as conn:

        async def counts(sql: str) -> dict[uuid.UUID, int]:
            return {r[0]: r[1] for r in await conn.execute(text(sql))}

        payloads = {
            r.run_id: (r.body, r.sha256)
            for r in await conn.execute(text("SELECT run_id, body, sha256 FROM run_payloads"))
        }
        runs = {
            r.id: r.payload_sha256
            for r in await conn.execute(
                text("SELECT id, payload_sha256 FROM runs WHERE fetched_at IS NOT NULL")
            )
        }
        events = await counts("SELECT run_id, count(*) FROM run_events GROUP BY 1")
        gaps = await counts(
            "SELECT run_id, count(*) FROM run_events GROUP BY 1 HAVING max(seq) + 1 <> count(*)"
        )
        inters = await counts("SELECT run_id, count(*) FROM event_intermediates GROUP BY 1")
        sessions = await counts("SELECT run_id, count(*) FROM run_sessions GROUP BY 1")
        messages = await counts("SELECT run_id, count(*) FROM session_messages GROUP BY 1")
        tool_calls = await counts("SELECT run_id, count(*) FROM message_tool_calls GROUP BY 1")
        issue_rows = {
            r[0]: r[1] for r in await conn.execute(text("SELECT id, run_id FROM run_issues"))
        }
        queue_rows = list(
            await conn.execute(
                text(
                    "SELECT q.run_id, q.state, q.awaiting_terminal, q.last_error, r.status,"
                    " d.run_id IS NOT NULL AS lettered, d.reason"
                    " FROM ingest_queue q LEFT JOIN runs r ON r.id = q.run_id"
                    " LEFT JOIN dead_letters d ON d.run_id = q.run_id"
                )
            )
        )
        orphan_letters = (
            await conn.execute(
                text(
                    "SELECT count(*) FROM dead_letters d JOIN ingest_queue q USING (run_id)"
                    " WHERE q.state <> 'dead'"
                )
            )
        ).scalar_one()
    if set(runs) != set(payloads):
        problems.append(
            f"runs fetched without a payload or vice versa: {set(runs) ^ set(payloads)}"
        )
    all_issues: set[uuid.UUID] = set()
    for run_id, (body, sha) in payloads.items():
        want = Described.of(body)
        all_issues |= want.issues
        if hashlib.sha256(body).hexdigest() != sha or runs.get(run_id) != sha:
            problems.append(f"{run_id}: payload hash does not match its body or its run")
        if run_id in gaps:
            problems.append(f"{run_id}: its events' seq have gaps")
        for name, stored, wanted in (
            ("events", events, want.events),
            ("intermediates", inters, want.intermediates),
            ("sessions", sessions, want.sessions),
            ("messages", messages, want.messages),
            ("tool calls", tool_calls, want.tool_calls),
        ):
            if stored.get(run_id, 0) != wanted:
                problems.append(f"{run_id}: {stored.get(run_id, 0)} {name}, body has {wanted}")
        # An issue listed by two runs is stored once, under one of them.
        if any(issue_rows.get(i) is None for i in want.issues):
            problems.append(f"{run_id}: an issue of its body is missing")
    if set(issue_rows) != all_issues:
        problems.append(f"{len(set(issue_rows) ^ all_issues)} issues differ from the bodies'")
    for child in (events, inters, sessions, messages, tool_calls):
        if set(child) - set(payloads):
            problems.append(f"rows of runs without a payload: {set(child) - set(payloads)}")
    for q in queue_rows:
        if q.state == "done" and q.run_id not in payloads:
            problems.append(f"{q.run_id}: done but nothing stored")
        elif q.state == "dead" and not (q.lettered and q.reason and q.last_error):
            problems.append(f"{q.run_id}: dead without a dead letter and a reason")
        elif q.state == "pending" and not (q.awaiting_terminal and q.status not in TERMINAL):
            problems.append(f"{q.run_id}: still pending ({q.last_error})")
        elif q.state == "running":
            problems.append(f"{q.run_id}: still running")
    if orphan_letters:
        problems.append(f"{orphan_letters} dead letters of runs that are not dead")
    return problems


# -- helpers --------------------------------------------------------------------------------


def api_settings(settings: Settings, sim: Simulator, **changes: Any) -> Settings:
    return helpers.api_settings(settings, sim, API_KEY, **changes)


async def drain(settings: Settings, engine: AsyncEngine, **client_options: Any) -> WorkerStats:
    return await helpers.drain(settings, engine, FAST, **client_options)


def worker_env(settings: Settings, sim: Simulator, **extra: str) -> dict[str, str]:
    env = cli_env(
        settings,
        HAPPYROBOT_BASE_URL=sim.base_url,
        HAPPYROBOT_API_KEY=API_KEY,
        INGEST_RATE_LIMIT="5000",
        INGEST_CONCURRENCY="4",
    )
    env.update(extra)
    return env


async def start_worker(env: dict[str, str], *args: str, stderr: Any) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        os.sys.executable,  # type: ignore[attr-defined]
        "-m",
        "ingest",
        "worker",
        *args,
        env=env,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=stderr,
    )


async def wait_for(engine: AsyncEngine, sql: str, predicate: Any, within_s: float) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within_s
    while True:
        try:
            value = await scalar(engine, sql)
        except OSError:
            value = None
        if value is not None and predicate(value):
            return
        assert loop.time() < deadline, f"timed out: {sql} -> {value}"
        await asyncio.sleep(0.05)


DONE = "SELECT count(*) FROM ingest_queue WHERE state IN ('done', 'dead') OR awaiting_terminal"


@pytest_asyncio.fixture
async def sim() -> AsyncIterator[Simulator]:
    async with Simulator(runs=240, seed=11, api_key=API_KEY, stall_seconds=1.0) as s:
        yield s


# -- the worker process killed ----------------------------------------------------------------


async def test_sigkill_at_random_points_repeatedly_then_a_drain_loses_and_duplicates_nothing(
    settings: Settings, engine: AsyncEngine, sim: Simulator, tmp_path: Path
) -> None:
    rng = random.Random(int.from_bytes(os.urandom(4)))
    ids = sim.run_ids()
    await enqueue(engine, ids)
    sim.latency_ms = 40
    env = worker_env(settings, sim)
    args = ("--lease-seconds", "1", "--batch-size", "10")
    log = (tmp_path / "workers.log").open("wb")
    for kill in range(3):
        before = await scalar(engine, DONE)
        victim = await start_worker(env, *args, stderr=log)
        # Somewhere in the middle of the work: after a random number of runs, then a bit.
        at_least = before + rng.randrange(5, 40)
        await wait_for(engine, DONE, lambda n, a=at_least: n >= a, 60)
        await asyncio.sleep(rng.uniform(0, 0.3))
        victim.send_signal(signal.SIGKILL)
        assert await victim.wait() == -signal.SIGKILL, f"kill {kill}: the worker was not running"
    left = await scalar(engine, "SELECT count(*) FROM ingest_queue WHERE state = 'running'")
    assert left, "the kills should have left leased runs behind"
    sim.latency_ms = 0
    survivor = await start_worker(env, "--drain", *args, stderr=log)
    rc = await asyncio.wait_for(survivor.wait(), 60)
    assert rc == 0, (tmp_path / "workers.log").read_text()[-3000:]
    assert await check_rows(engine) == []
    assert await scalar(engine, "SELECT count(*) FROM ingest_queue WHERE state = 'dead'") == 0
    assert await scalar(engine, "SELECT count(*) FROM run_payloads") == len(ids)


# -- PostgreSQL restarted ---------------------------------------------------------------------


@pytest_asyncio.fixture
async def throwaway_pg(tmp_path: Path) -> AsyncIterator[tuple[Path, str]]:
    """A PostgreSQL of this test's own (embedded), which it may stop and start at will."""
    data_dir = tmp_path / "pg"
    url = await asyncio.to_thread(embedded.start, data_dir)
    try:
        yield data_dir, url
    finally:
        for attempt in range(3):  # pg_ctl stop can fail once on a busy machine
            try:
                await asyncio.to_thread(embedded.remove, data_dir)
                break
            except subprocess.CalledProcessError:
                if attempt == 2:
                    raise
                await asyncio.sleep(1)


async def test_postgres_restarted_mid_drain_the_worker_reconnects_and_finishes(
    throwaway_pg: tuple[Path, str], sim: Simulator, tmp_path: Path
) -> None:
    data_dir, url = throwaway_pg
    # A password the server does not ask for (trust), so that its absence from every line
    # the worker wrote through the outage can be checked.
    password = "pg-restart-Secret-7Hq"
    url = make_url(url).set(password=password).render_as_string(hide_password=False)
    settings = Settings(database_url=Secret(url), db_schema="faults", data_dir=tmp_path)
    engine = create_engine(settings, pool_size=2)
    try:
        await migrate.upgrade(engine)
        ids = sim.run_ids()
        await enqueue(engine, ids)
        sim.latency_ms = 60
        log_path = tmp_path / "worker.log"
        with log_path.open("wb") as log:
            proc = await start_worker(
                worker_env(settings, sim), "--drain", "--batch-size", "10", stderr=log
            )
            await wait_for(engine, DONE, lambda n: n >= 30, 60)
            await engine.dispose()
            await asyncio.to_thread(embedded.stop, data_dir)
            await asyncio.sleep(2.0)  # long enough for every kind of statement to fail
            assert proc.returncode is None, "the worker died with the database"
            await asyncio.to_thread(embedded.start, data_dir)
            rc = await asyncio.wait_for(proc.wait(), 60)
        output = log_path.read_text()
        assert rc == 0, output[-3000:]
        assert "database unreachable" in output  # it did see the outage
        assert password not in output
        assert await check_rows(engine) == []
        assert await scalar(engine, "SELECT count(*) FROM ingest_queue WHERE state = 'dead'") == 0
        assert await scalar(engine, "SELECT count(*) FROM run_payloads") == len(ids)
    finally:
        await engine.dispose()


# -- the API misbehaving ----------------------------------------------------------------------


async def test_timeouts_resets_5xx_and_429_bursts_all_end_done(
    settings: Settings, engine: AsyncEngine, sim: Simulator
) -> None:
    ids = sim.run_ids()[:120]
    injected: dict[str, int] = {}
    for i, run_id in enumerate(ids):
        kind, times = [
            ("timeout", 1),
            ("reset", 3),
            ("truncate", 2),
            ("500", 3),
            ("502", 2),
            ("503", 4),
            ("429", 3),
            (None, 0),
        ][i % 8]
        if kind == "429":
            # A burst: every request for this run refused, asking for no wait or a second.
            wait = "1" if i < 20 else "0"
            sim.set_status_override(
                run_id, 429, b'{"message": "slow down"}', headers={"Retry-After": wait}, times=times
            )
        elif kind is not None:
            sim.inject_fault(run_id, kind, times=times)
        if kind is not None:
            injected[kind] = injected.get(kind, 0) + times
    await enqueue(engine, ids)
    stats = await drain(api_settings(settings, sim), engine, read_timeout=0.3, max_backoff=0.05)
    assert stats.dead == 0
    assert await check_rows(engine) == []
    assert await scalar(engine, "SELECT count(*) FROM run_payloads") == len(ids)
    # Every fault really happened (none skipped by luck).
    assert {k: v for k, v in sim.stats.faults.items()} == {
        k: v for k, v in injected.items() if k != "429"
    }
    assert sim.stats.by_status[429] == injected["429"]
    assert stats.retried > 0  # some runs needed more than one attempt


# -- a batch the database refuses ------------------------------------------------------------


@pytest.mark.parametrize("errcode", ["P0001", "53100"], ids=["raise", "disk_full"])
async def test_a_statement_error_on_one_run_does_not_poison_its_batch(
    errcode: str, settings: Settings, engine: AsyncEngine, sim: Simulator
) -> None:
    ids = sim.run_ids()[:60]
    bad = ids[17]
    body = orjson.dumps(make_run_payload(random.Random(5), bad, events=4, issues=1))
    sim.set_payload(bad, body)
    async with engine.begin() as conn:
        await conn.execute(
            text(
                f"""
                CREATE FUNCTION refuse_one_run() RETURNS trigger LANGUAGE plpgsql AS $$
                BEGIN
                    IF NEW.id = '{bad}' THEN
                        RAISE EXCEPTION 'refusing run %', NEW.id USING ERRCODE = '{errcode}';
                    END IF;
                    RETURN NEW;
                END $$
                """
            )
        )
        await conn.execute(
            text(
                "CREATE TRIGGER refuse_one_run BEFORE INSERT OR UPDATE ON runs"
                " FOR EACH ROW EXECUTE FUNCTION refuse_one_run()"
            )
        )
    await enqueue(engine, ids)
    stats = await drain(api_settings(settings, sim, max_attempts=3), engine)
    assert stats.dead == 1
    assert await check_rows(engine) == []
    async with engine.connect() as conn:
        states = dict((await conn.execute(text("SELECT run_id, state FROM ingest_queue"))).all())
        letter = (
            await conn.execute(text("SELECT run_id, reason, body, attempts FROM dead_letters"))
        ).one()
    assert states.pop(bad) == "dead"
    assert set(states.values()) <= {"done", "pending"}  # pending: polled, not terminal yet
    assert letter.run_id == bad and letter.attempts == 3
    assert letter.reason.startswith("store error:") and "refusing run" in letter.reason
    assert letter.body == body
    assert await scalar(engine, "SELECT count(*) FROM run_payloads") == len(ids) - 1
