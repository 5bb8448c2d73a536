"""The simulator over real HTTP, checked with plain aiohttp (not our client) against the API doc."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import orjson
import pytest
import pytest_asyncio

from ingest.simulator import Simulator

NOW = datetime(2025, 6, 1, tzinfo=UTC)
AUTH = {"Authorization": "Bearer test-key"}
OTHER_ORG = "00000000-0000-4000-8000-000000000001"


@pytest_asyncio.fixture
async def sim() -> AsyncIterator[Simulator]:
    async with Simulator(runs=500, seed=7, now=NOW) as s:
        yield s


@pytest_asyncio.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(headers=AUTH) as session:
        yield session


async def get(http: aiohttp.ClientSession, url: str, **kw: Any) -> tuple[int, Any, Any]:
    async with http.get(url, **kw) as resp:
        body = await resp.read()
        try:
            parsed = orjson.loads(body)
        except orjson.JSONDecodeError:
            parsed = body
        return resp.status, parsed, resp.headers


async def test_same_seed_same_runs_and_bytes(http: aiohttp.ClientSession) -> None:
    bodies = []
    for seed in (3, 3, 4):
        async with Simulator(runs=20, seed=seed, now=NOW) as s:
            ids = s.run_ids()
            async with http.get(f"{s.base_url}/runs/{ids[5]}") as resp:
                bodies.append((ids, await resp.read()))
    assert bodies[0] == bodies[1]
    assert bodies[0][0] != bodies[2][0]


async def test_auth_and_not_found_bodies(sim: Simulator, http: aiohttp.ClientSession) -> None:
    url = f"{sim.base_url}/runs/{sim.run_ids()[0]}"
    async with aiohttp.ClientSession() as anonymous:
        status, body, _ = await get(anonymous, url)
    assert status == 401 and isinstance(body["message"], str)
    status, body, _ = await get(http, url, headers={"Authorization": "Bearer wrong"})
    assert status == 401 and "message" in body
    status, body, _ = await get(http, url, headers={"x-organization-id": OTHER_ORG})
    assert status == 403 and "message" in body
    status, _, _ = await get(http, url, headers={"x-organization-id": str(sim.org_id)})
    assert status == 200
    status, body, _ = await get(http, f"{sim.base_url}/runs/00000000-0000-4000-8000-000000000000")
    assert status == 404 and "message" in body


async def test_runs_look_like_the_api(sim: Simulator, http: aiohttp.ClientSession) -> None:
    bodies = [(await get(http, f"{sim.base_url}/runs/{i}"))[1] for i in sim.run_ids()[:200]]
    finished = [b for b in bodies if b["status"] in ("completed", "failed", "canceled")]
    assert len(finished) > 150
    assert all(20 <= len(b["events"]) <= 40 for b in finished)
    assert all(0 <= len(b["issues"]) <= 4 for b in bodies)
    assert {len(b["issues"]) for b in finished} >= {0, 1, 2}
    assert {b["status"] for b in bodies} >= {"scheduled", "running", "completed", "failed"}
    events = [e for b in finished for e in b["events"]]
    with_intermediate = [e for e in events if e.get("intermediate")]
    assert 0.7 < len(with_intermediate) / len(events) < 0.95
    assert {"id", "run_id", "node_id", "event_id", "session_id", "name", "data"} <= set(
        with_intermediate[0]["intermediate"]
    )
    # Versions are shared: a pool of ~10 per use case, many runs each.
    versions = Counter(b["version"]["id"] for b in bodies if b.get("version"))
    use_cases = {b["use_case_id"] for b in bodies}
    assert len(versions) <= 10 * len(use_cases) and max(versions.values()) >= 10
    assert all(
        b["version"]["id"] == b["version_id"] and b["version"]["use_case_id"] == b["use_case_id"]
        for b in bodies
        if b.get("version")
    )


async def test_unfinished_runs_progress_on_later_fetches(
    sim: Simulator, http: aiohttp.ClientSession
) -> None:
    listed = (await get(http, f"{sim.base_url}/runs", params={"status": "scheduled"}))[1]
    run_id = listed[0]["id"]
    seen = [(await get(http, f"{sim.base_url}/runs/{run_id}"))[1] for _ in range(4)]
    assert [s["status"] for s in seen[:2]] == ["scheduled", "running"]
    assert seen[2]["status"] in ("completed", "failed", "canceled")
    counts = [len(s["events"]) for s in seen]
    assert counts[0] == 0 < counts[1] < counts[2] == counts[3]
    assert seen[2]["events"][: counts[1]] == seen[1]["events"]  # earlier events never change
    # Reviewed: issues keep their ids, open ones get a verdict.
    assert [i["id"] for i in seen[3]["issues"]] == [i["id"] for i in seen[2]["issues"]]
    assert all(i["status"] != "open" for i in seen[3]["issues"])
    assert sim.fetch_count(run_id) == 4
    relisted = (await get(http, f"{sim.base_url}/runs", params={"limit": 5000}))[1]
    item = next(i for i in relisted if i["id"] == run_id)
    assert item["status"] == seen[3]["status"] and item["completed_at"] is not None


async def test_list_paging_filters_and_sort(sim: Simulator, http: aiohttp.ClientSession) -> None:
    url = f"{sim.base_url}/runs"
    status, default, _ = await get(http, url)
    assert status == 200 and len(default) == 500
    stamps = [i["timestamp"] for i in default]
    assert stamps == sorted(stamps, reverse=True)  # default sort: desc
    assert set(default[0]) == {
        "id",
        "org_id",
        "use_case_id",
        "version_id",
        "status",
        "annotation",
        "timestamp",
        "completed_at",
        "data",
    }
    paged: list[str] = []
    for offset in range(0, 600, 120):
        page = (await get(http, url, params={"limit": 120, "offset": offset, "sort": "asc"}))[1]
        paged += [i["id"] for i in page]
    assert paged == [str(i) for i in sim.run_ids()]
    assert (await get(http, url, params={"limit": 5001}))[0] == 400
    assert (await get(http, url, params={"start": "yesterday"}))[0] == 400

    use_case = default[0]["use_case_id"]
    only = (await get(http, url, params={"use_case_id": use_case, "status": "completed"}))[1]
    assert only and all(i["use_case_id"] == use_case and i["status"] == "completed" for i in only)
    lo, hi = sorted([stamps[100], stamps[50]])
    window = (await get(http, url, params={"start": lo, "end": hi}))[1]
    assert len(window) == 51  # both bounds inclusive
    cutoff = (NOW - timedelta(days=3)).isoformat()
    done = (await get(http, url, params={"completed_start": cutoff}))[1]
    assert done and all(i["completed_at"] >= cutoff.replace("+00:00", "") for i in done)


async def test_runs_added_while_serving(sim: Simulator, http: aiohttp.ClientSession) -> None:
    later = NOW + timedelta(hours=1)
    new = sim.add_runs(3, at=later)
    listed = (await get(http, f"{sim.base_url}/runs", params={"start": later.isoformat()}))[1]
    assert {i["id"] for i in listed} == {str(i) for i in new}
    assert (await get(http, f"{sim.base_url}/runs/{new[0]}"))[0] == 200
    assert len(sim.run_ids()) == 503


async def test_rate_limit_sends_429_with_retry_after(http: aiohttp.ClientSession) -> None:
    async with Simulator(runs=10, rate_limit=20) as s:
        url = f"{s.base_url}/runs/{s.run_ids()[0]}"
        results = await asyncio.gather(*(get(http, url) for _ in range(50)))
    statuses = Counter(r[0] for r in results)
    assert statuses == {200: 20, 429: 30}
    assert s.stats.rate_limited == 30 and s.stats.by_status[429] == 30
    assert all(int(r[2]["Retry-After"]) >= 1 for r in results if r[0] == 429)


async def test_random_faults_are_mixed(http: aiohttp.ClientSession) -> None:
    async with Simulator(runs=10, error_rate=1.0, stall_seconds=0.05) as s:
        url = f"{s.base_url}/runs/{s.run_ids()[0]}"
        for _ in range(60):
            with contextlib.suppress(aiohttp.ClientError):  # the resets
                await get(http, url)
    assert set(s.stats.faults) == {"500", "502", "503", "timeout", "truncate", "reset"}
    assert s.stats.by_status[200] == s.stats.faults["truncate"]


async def test_latency_is_jittered_around_the_mean(http: aiohttp.ClientSession) -> None:
    async with Simulator(runs=5, latency_ms=40) as s:
        url = f"{s.base_url}/runs/{s.run_ids()[0]}"
        took = []
        for _ in range(10):
            t = time.monotonic()
            await get(http, url)
            took.append(time.monotonic() - t)
    assert min(took) >= 0.019 and max(took) < 0.2 and max(took) - min(took) > 0.005


def test_stats_windows() -> None:
    s = Simulator(runs=0)
    s.stats.request_times = [0.0, 0.1, 0.5, 0.99, 1.0, 1.05, 2.5]
    assert s.stats.per_second() == [4, 2, 1]
    assert s.stats.max_in_window(1.0) == 5  # (0.05, 1.05]
    assert s.stats.max_in_window(1.0, start=1.0) == 2


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
async def test_simulate_command_serves_until_interrupted() -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        *("-m", "ingest", "simulate", "--port", "0", "--runs", "5", "--rate-limit", "50"),
        stdout=asyncio.subprocess.PIPE,
        env={k: v for k, v in os.environ.items() if not k.startswith("HAPPYROBOT_")},
    )
    assert proc.stdout is not None
    lines = {}
    while len(lines) < 3:
        line = (await asyncio.wait_for(proc.stdout.readline(), 20)).decode().strip()
        assert line, "simulate exited early"
        if "=" in line:
            name, _, value = line.partition("=")
            lines[name] = value
    headers = {"Authorization": f"Bearer {lines['HAPPYROBOT_API_KEY']}"}
    async with aiohttp.ClientSession(headers=headers) as http:
        status, page, _ = await get(http, f"{lines['HAPPYROBOT_BASE_URL']}/runs")
    assert status == 200 and len(page) == 5
    proc.send_signal(signal.SIGINT)
    assert await asyncio.wait_for(proc.wait(), 10) == 0
