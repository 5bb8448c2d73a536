"""Change capture: runs that change upstream after their fetch come back with the defaults,
and runs that did not change are not fetched again (the simulator counts every fetch)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from ingest import discovery
from ingest.api.client import open_client
from ingest.config import Settings
from ingest.discovery import SyncOptions
from ingest.simulator import Simulator
from ingest.simulator.data import REVIEWED, RUNNING
from tests.helpers import api_settings, drain, scalar

pytestmark = pytest.mark.sim(runs=150, seed=31)


def _older_than_a_day(sim: Simulator) -> list[uuid.UUID]:
    """Runs outside a first sync's own window (the last day): only the trailing window's
    listing and the issues can tell that they changed."""
    now = datetime.now(UTC)
    runs = sim.runs.by_key.values()
    return [r.id for r in runs if now - timedelta(days=6) < r.timestamp < now - timedelta(days=2)]


async def _load(settings: Settings, engine: AsyncEngine) -> None:
    """Every run listed by a backfill, then fetched once by a worker."""
    until = datetime.now(UTC)
    async with open_client(settings, engine) as client:
        await discovery.discover(engine, client, since=until - timedelta(days=8), until=until)
    await drain(settings, engine)


def _issue_like(template: dict[str, Any], run_id: uuid.UUID) -> dict[str, Any]:
    return {**template, "id": str(uuid.uuid4()), "run_id": str(run_id), "status": "open"}


async def test_changes_upstream_come_back_and_nothing_else_is_fetched(
    settings: Settings, engine: AsyncEngine, sim: Simulator
) -> None:
    s = api_settings(settings, sim)
    candidates = _older_than_a_day(sim)
    with_issues = [r for r in candidates if sim.run_issues(r)]
    annotated, edited = [r for r in candidates if r not in with_issues][:2]
    closed, added_to, removed_from = with_issues[:3]
    moving_on = next(r for r in candidates if r not in (annotated, edited, *with_issues[:3]))
    for run_id in sim.run_ids():
        sim.change_run(run_id, stage=RUNNING if run_id == moving_on else REVIEWED)
    await _load(s, engine)
    fetched_before = {r: sim.fetch_count(r) for r in sim.run_ids()}

    # Upstream, after the fetch: what users and the platform do to finished runs.
    sim.change_run(annotated, annotation="critical")
    sim.change_run(edited, data={"load_id": "L-changed", "rate_usd": 1234.5})
    issues = sim.run_issues(closed)
    issues[0] = {**issues[0], "status": "closed", "updated_at": datetime.now(UTC)}
    sim.change_run(closed, issues=issues)
    new_issue = _issue_like(sim.run_issues(added_to)[0], added_to)
    sim.change_run(added_to, issues=[*sim.run_issues(added_to), new_issue])
    gone = sim.run_issues(removed_from)[-1]["id"]
    sim.change_run(removed_from, issues=sim.run_issues(removed_from)[:-1])
    # `moving_on` was fetched while running; its fetch moved it on to finished upstream.

    async with open_client(s, engine) as client:
        result = await discovery.sync(engine, client, SyncOptions())
    assert result.rechecked and result.recheck_failed is None
    await drain(s, engine)

    fetched = {r for r in sim.run_ids() if sim.fetch_count(r) != fetched_before[r]}
    assert fetched == {annotated, closed, added_to, removed_from, moving_on}
    assert all(sim.fetch_count(r) == fetched_before[r] + 1 for r in fetched)
    row = "SELECT {} FROM runs WHERE id = :id"
    assert await scalar(engine, row.format("annotation"), id=annotated) == "critical"
    assert await scalar(engine, row.format("data->>'load_id'"), id=edited) == "L-changed"
    status = await scalar(engine, row.format("status"), id=moving_on)
    assert status in ("completed", "failed", "canceled")
    issue_status = "SELECT status FROM run_issues WHERE id = :id"
    assert await scalar(engine, issue_status, id=uuid.UUID(str(issues[0]["id"]))) == "closed"
    assert await scalar(engine, issue_status, id=uuid.UUID(new_issue["id"])) == "open"
    assert await scalar(engine, "SELECT count(*) FROM run_issues WHERE id = :id", id=gone) == 0


async def test_change_capture_runs_at_most_hourly_and_can_be_turned_off(
    settings: Settings, engine: AsyncEngine, sim: Simulator
) -> None:
    s = api_settings(settings, sim)
    for run_id in sim.run_ids():
        sim.change_run(run_id, stage=REVIEWED)
    await _load(s, engine)
    async with open_client(s, engine) as client:
        first = await discovery.sync(engine, client, SyncOptions())
        sim.stats.reset()
        second = await discovery.sync(engine, client, SyncOptions())
        off = await discovery.sync(engine, client, SyncOptions(recheck=timedelta(0)))
    assert first.rechecked and not second.rechecked and not off.rechecked
    # The later syncs listed their own window, and neither asked for the issues again.
    assert sim.stats.by_route["/api/v1/runs"] > 0
    assert sim.stats.by_route["/api/v1/issues"] == 0
    assert await scalar(engine, "SELECT count(*) FROM ingest_queue WHERE state = 'pending'") == 0


async def test_a_malformed_issue_is_skipped_and_the_rest_still_counts(
    settings: Settings, engine: AsyncEngine, sim: Simulator
) -> None:
    s = api_settings(settings, sim)
    for run_id in sim.run_ids():
        sim.change_run(run_id, stage=REVIEWED)
    await _load(s, engine)
    with_issues = [r for r in _older_than_a_day(sim) if sim.run_issues(r)]
    broken, added_to = with_issues[:2]
    bad = {**sim.run_issues(broken)[0], "id": "not-a-uuid"}
    sim.change_run(broken, issues=[*sim.run_issues(broken), bad])
    new_issue = _issue_like(sim.run_issues(added_to)[0], added_to)
    sim.change_run(added_to, issues=[*sim.run_issues(added_to), new_issue])
    fetched_before = {r: sim.fetch_count(r) for r in sim.run_ids()}

    async with open_client(s, engine) as client:
        result = await discovery.sync(engine, client, SyncOptions())
    await drain(s, engine)

    # The bad item is logged and left out; it neither fails the sync nor hides the good one.
    assert result.rechecked and result.recheck_failed is None and result.changed_issues == 1
    fetched = {r for r in sim.run_ids() if sim.fetch_count(r) != fetched_before[r]}
    assert fetched == {added_to}
