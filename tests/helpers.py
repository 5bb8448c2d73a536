"""What many test modules need, defined once: the API key the simulator fixture expects,
settings pointing at the simulator, a worker drained in this process or run as a process,
the CLI as a process, and waiting on the database."""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import subprocess
import sys
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine

from ingest import queue
from ingest.api.client import ApiClient
from ingest.api.ratelimit import RateLimiter
from ingest.config import Secret, Settings
from ingest.simulator import Simulator
from ingest.worker import Worker, WorkerOptions, WorkerStats

API_KEY = "sk-test-key-3f9a"  # the `sim` fixture's (tests/conftest.py)
FAST = WorkerOptions(drain=True, retry_base_s=0.05, flush_interval_s=0.05, idle_poll_s=0.5)


# -- settings and environments ----------------------------------------------------------------


def api_settings(
    settings: Settings, sim: Simulator, api_key: str = API_KEY, **changes: Any
) -> Settings:
    """`settings` pointed at the simulator, with a rate limit that never slows a test."""
    return settings.with_overrides(
        base_url=sim.base_url, api_key=Secret(api_key), rate_limit=5000.0, **changes
    )


def cli_env(settings: Settings, **extra: str) -> dict[str, str]:
    """The environment of an `hr-ingest` process on the test's schema, and nothing from the
    developer's shell (no real API key, no other database)."""
    assert settings.database_url is not None
    env = {k: v for k, v in os.environ.items() if not k.startswith(("INGEST_", "HAPPYROBOT_"))}
    env.pop("DATABASE_URL", None)
    env.update(
        DATABASE_URL=settings.database_url.reveal(),
        INGEST_DB_SCHEMA=settings.db_schema,
        INGEST_LOG_FORMAT="json",
    )
    env.update(extra)
    return env


def sim_env(base: dict[str, str], sim: Simulator, **extra: str) -> dict[str, str]:
    """`base` (a `cli_env`) plus the simulator's address and key: a process that talks to it."""
    return {
        **base,
        "HAPPYROBOT_BASE_URL": sim.base_url,
        "HAPPYROBOT_API_KEY": API_KEY,
        "INGEST_RATE_LIMIT": "5000",
        **extra,
    }


def dsn(url: str) -> str:
    """A plain libpq-style DSN for asyncpg from any SQLAlchemy-style URL."""
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


def free_port() -> int:
    """A TCP port nothing listens on (once the probing socket closes)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def hr_ingest_bin() -> str:
    found = shutil.which("hr-ingest", path=str(Path(sys.executable).parent))
    assert found, "hr-ingest console script not installed in this environment"
    return found


# -- processes ----------------------------------------------------------------------------------


def run_cli(
    *args: str, env: dict[str, str] | None, stdin: str | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ingest", *args],
        env=env,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


async def start_cli(
    env: dict[str, str], *args: str, stdout: Any = None, stderr: Any = None
) -> asyncio.subprocess.Process:
    """`hr-ingest ARGS` as a process (output piped unless said otherwise). Tests that serve
    the simulator in-process must not block their loop on it: this, or `run_cli_async`."""
    pipe = asyncio.subprocess.PIPE
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "ingest",
        *args,
        env=env,
        stdout=pipe if stdout is None else stdout,
        stderr=pipe if stderr is None else stderr,
    )


async def start_worker(
    env: dict[str, str], *args: str, stdout: Any = None, stderr: Any = None
) -> asyncio.subprocess.Process:
    return await start_cli(env, "worker", *args, stdout=stdout, stderr=stderr)


async def run_cli_async(env: dict[str, str], *args: str) -> tuple[int, str, str]:
    """`run_cli` without blocking the event loop: (exit code, stdout, stderr)."""
    proc = await start_cli(env, *args)
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


# -- a worker in this process ---------------------------------------------------------------------


async def drain(
    settings: Settings,
    engine: AsyncEngine,
    options: WorkerOptions = FAST,
    **client_options: Any,
) -> WorkerStats:
    """A real worker, in this process, until the queue is drained."""
    limiter = RateLimiter(engine, settings.rate_limit)
    try:
        async with ApiClient(settings, limiter, **client_options) as client:
            return await Worker(settings, engine, client, options).run()
    finally:
        await limiter.close()


# -- the database -------------------------------------------------------------------------------


async def enqueue(engine: AsyncEngine, run_ids: list[uuid.UUID]) -> None:
    async with engine.begin() as conn:
        await queue.enqueue(conn, run_ids)


async def scalar(engine: AsyncEngine, sql: str, **params: object) -> Any:
    async with engine.connect() as conn:
        return (await conn.execute(text(sql), params)).scalar()


async def until(predicate: Callable[[], bool], within_s: float) -> None:
    deadline = asyncio.get_running_loop().time() + within_s
    while not predicate():
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(0.02)


async def wait_for(
    engine: AsyncEngine, sql: str, predicate: Callable[[Any], bool], within_s: float
) -> None:
    """Until `predicate(scalar(sql))` holds; a database that is down (restarting) meanwhile
    is waited out."""
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
