"""What many test modules need: the CLI as a process, its environment, a worker drain."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from ingest import queue
from ingest.api.client import ApiClient
from ingest.api.ratelimit import RateLimiter
from ingest.config import Secret, Settings
from ingest.simulator import Simulator
from ingest.worker import Worker, WorkerOptions, WorkerStats

FAST = WorkerOptions(drain=True, retry_base_s=0.05, flush_interval_s=0.05, idle_poll_s=0.5)


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


def api_settings(settings: Settings, sim: Simulator, api_key: str, **changes: Any) -> Settings:
    return settings.with_overrides(
        base_url=sim.base_url, api_key=Secret(api_key), rate_limit=5000.0, **changes
    )


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


async def enqueue(engine: AsyncEngine, run_ids: list[uuid.UUID]) -> None:
    async with engine.begin() as conn:
        await queue.enqueue(conn, run_ids)


async def scalar(engine: AsyncEngine, sql: str, **params: object) -> Any:
    async with engine.connect() as conn:
        return (await conn.execute(text(sql), params)).scalar()
