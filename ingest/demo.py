"""`hr-ingest demo`: the whole job offline, as a new user first sees it.

The simulator, the database (embedded unless DATABASE_URL), discovery through `GET /runs`,
`worker --drain`, then a summary and the next commands to try.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine

from ingest import discovery
from ingest.api.client import open_client
from ingest.config import Secret, Settings
from ingest.db import migrate
from ingest.db.engine import create_engine, resolve_url
from ingest.ops.summary import print_summary
from ingest.runtime import run_worker
from ingest.simulator import Simulator
from ingest.worker import WorkerOptions

API_KEY = "demo-key"
RATE_LIMIT = 2000.0  # the demo's default: the simulator is local
# Wider than the simulator's history (its runs span the 7 days before it starts).
HISTORY = timedelta(days=30)


async def demo(settings: Settings, runs: int, rate_limit: float) -> None:
    print(f"database: {settings.database_url_redacted} (schema {settings.db_schema})")
    engine = create_engine(settings, pool_size=4)
    try:
        await migrate.upgrade(engine)
        async with Simulator(runs=runs, seed=42, api_key=API_KEY) as sim:
            local = settings.with_overrides(
                base_url=sim.base_url,
                api_key=Secret(API_KEY),
                org_id=str(sim.org_id),  # a real org id from the environment would get 403s
                rate_limit=rate_limit,
            )
            print(f"API simulator: {sim.base_url} with {runs} runs; rate limit {rate_limit:g}/s")
            found = await _discover(local, engine)
            print(f"discovered {found} runs; draining the queue ...")
            stats = await run_worker(local, engine, WorkerOptions(drain=True))
        await print_summary(engine, stats)
    finally:
        await engine.dispose()
    _print_next_steps(settings)


async def _discover(settings: Settings, engine: AsyncEngine) -> int:
    """Find the simulator's runs the way a user finds real ones: through GET /runs."""
    until = datetime.now(UTC)
    async with open_client(settings, engine) as client:
        tally = await discovery.discover(
            engine,
            client,
            since=until - HISTORY,
            until=until,
            # A data dir reused by an earlier demo holds its finished windows, but this
            # simulator's runs are new: list everything again.
            relist=True,
            catalog=True,  # use case names and usage, as a user's first discover gets them
        )
    return tally.runs


def _print_next_steps(settings: Settings) -> None:
    # A libpq URL (psql, Metabase, DBeaver) without the password: the user has it already.
    url = make_url(resolve_url(settings)).set(drivername="postgresql", password=None)
    where = url.render_as_string(hide_password=True)
    print("\nnext:")
    print(f"  psql '{where}' -c 'SELECT * FROM {settings.db_schema}.bi_runs LIMIT 5'")
    print("  hr-ingest status        # the queue, throughput and dead letters")
    print("  hr-ingest simulate      # an API to point a long-running `hr-ingest worker` at")
    if settings.database_url is None:
        print("  INGEST_EMBEDDED_PORT=5433 hr-ingest db url   # connect Metabase, Superset, ...")
        print("  hr-ingest db stop       # stop the embedded PostgreSQL")
