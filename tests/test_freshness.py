"""How fresh the tables are, where an operator looks: `status`, `/status.json` (the page) and
the metrics; a sync that keeps failing shows there, and a success clears it."""

from __future__ import annotations

from datetime import timedelta

import pytest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy.ext.asyncio import AsyncEngine

from ingest import discovery
from ingest.api.client import open_client
from ingest.api.errors import ApiError
from ingest.api.retry import RetryPolicy
from ingest.config import Settings
from ingest.discovery import Paging, SyncOptions
from ingest.ops import status
from ingest.ops.metrics import Metrics
from ingest.ops.server import OpsServer
from ingest.simulator import Simulator
from ingest.simulator.data import RUNNING
from tests.helpers import api_settings, free_port

pytestmark = pytest.mark.sim(runs=60, seed=41)
# No change capture, and no retries of a failed page: a failure fails the sync at once.
QUICK = SyncOptions(recheck=timedelta(0), paging=Paging(retry=RetryPolicy(retries=0)))


def _gauges(metrics: Metrics) -> dict[str, float]:
    return {
        s.name: s.value
        for family in text_string_to_metric_families(metrics.render().decode())
        for s in family.samples
        if not s.labels
    }


async def _sync(settings: Settings, engine: AsyncEngine) -> None:
    async with open_client(settings, engine) as client:
        await discovery.sync(engine, client, QUICK)


async def test_freshness_before_any_sync_says_never_and_exports_no_age(
    engine: AsyncEngine,
) -> None:
    report = await status.collect(engine)
    assert (report.last_sync, report.last_sync_age_s, report.sync_failures) == (None, None, 0)
    async with OpsServer(engine, port=0) as server:
        await server.poller.refresh()
        gauges = _gauges(server.metrics)
        doc = server.status_document()
    assert "hr_ingest_sync_watermark_age_seconds" not in gauges  # no age to alert on
    assert gauges["hr_ingest_sync_failures"] == 0
    assert doc["snapshot"]["freshness"]["last_sync"] is None


async def test_a_sync_that_fails_shows_everywhere_until_one_succeeds(
    settings: Settings, engine: AsyncEngine, sim: Simulator
) -> None:
    sim.change_run(sim.run_ids()[-1], stage=RUNNING)  # one run still running upstream
    good = api_settings(settings, sim)
    await _sync(good, engine)
    first = await status.collect(engine)
    assert first.last_sync is not None and first.last_sync_age_s is not None
    assert first.last_sync_age_s < 60 and first.sync_failures == 0

    # The API stops answering: two syncs fail in a row.
    down = good.with_overrides(base_url=f"http://127.0.0.1:{free_port()}/api/v1")
    for _ in range(2):
        with pytest.raises(ApiError):
            await _sync(down, engine)
    failing = await status.collect(engine)
    assert failing.sync_failures == 2
    assert failing.sync_error is not None and "ApiError" not in failing.sync_error
    assert "GET /runs" in failing.sync_error and "\n" not in failing.sync_error
    assert failing.last_sync == first.last_sync  # the watermark did not move
    async with OpsServer(engine, port=free_port()) as server:
        await server.poller.refresh()
        gauges = _gauges(server.metrics)
        fresh = server.status_document()["snapshot"]["freshness"]
    assert gauges["hr_ingest_sync_failures"] == 2
    assert gauges["hr_ingest_sync_watermark_age_seconds"] >= 0
    assert gauges["hr_ingest_oldest_non_terminal_run_age_seconds"] > 0
    assert fresh["sync_failures"] == 2 and fresh["sync_error"] == failing.sync_error

    await _sync(good, engine)
    recovered = await status.collect(engine)
    assert recovered.sync_failures == 0 and recovered.last_sync != first.last_sync
